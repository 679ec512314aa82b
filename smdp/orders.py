"""Profile inventory and download orders: the ES2+ functions (SGP.22 5.3) and the bookkeeping the
ES9+ core shares with them (state changes, ending sessions, progress reports to the operator).

Profile states at the SM-DP+ (SGP.22 5.3, names as the spec gives them)::

    Available --DownloadOrder--> Allocated (no EID) | Linked (EID)
    Allocated/Linked --ConfirmOrder--> Confirmed | Released (releaseFlag)
    Confirmed --ReleaseProfile--> Released
    Released --GetBoundProfilePackage--> Downloaded --installation result ok--> Installed
    Downloaded --installation error / cancelled session--> Released (retry) | Error (final)
    any order state but Installed --CancelOrder--> Available | Unavailable

Sans-IO: every method takes plain values and returns plain values; one SQLite transaction each.
``requester`` is the ES2+ function requester (the authenticated operator); ``None`` is the local
administrator (the CLI), who may act on every order.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from rsp import messages_v3 as v3
from rsp import rpm, status
from rsp.errors import DecodeError, StatusCodeError
from rsp.ids import validate_eid, validate_iccid
from rsp.messages import decode
from rsp.saip import ProfilePackage
from rsp.status import CONDITIONAL_ELEMENT_MISSING, EID_INVALID, PROFILE_TYPE_MISMATCH
from smdp import es2_json
from smdp.store import (
    CommitAndRaise,
    Profile,
    ProfileState,
    ProfileType,
    RpmOrder,
    RpmState,
    Session,
    SessionState,
    Store,
)

Clock = Callable[[], datetime]
Rng = Callable[[int], bytes]

# SM-DP+-specific ES2+ codes not (yet) in rsp.status.

# ES2+.HandleDownloadProgressInfo notificationPointId values (SGP.22 5.3.5)
POINT_ELIGIBILITY = 1  # Eligibility and Retry Limit Check (AuthenticateClient)
POINT_CONFIRMATION_FAILURE = 2  # ConfirmationFailure (confirmation code)
POINT_BPP_DOWNLOAD = 3  # BPP Download (GetBoundProfilePackage)
POINT_BPP_INSTALLATION = 4  # BPP Installation (ProfileInstallationResult)
# Our choice, not named by SGP.22 v2.5: a verified enable/disable/delete notification (or the v3
# LoadRpmPackageResult of an RPM order) forwarded to the operator that owns the profile; resultData
# carries the signed notification, which names the operation.
POINT_PROFILE_NOTIFICATION = 5

ORDER_STATES = (ProfileState.ALLOCATED, ProfileState.LINKED, ProfileState.CONFIRMED, ProfileState.RELEASED,
                ProfileState.DOWNLOADED, ProfileState.ERROR)
LIVE_SESSION_STATES = (SessionState.INITIATED, SessionState.AUTHENTICATED)
_MATCHING_ID = re.compile(r"[0-9A-Z-]{1,64}")  # the AC_Token alphabet (SGP.22 4.1)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def confirmation_code_digest(code: str) -> bytes:
    """What the SM-DP+ keeps of a confirmation code: SHA-256(code), the inner hash of 3.1.3."""
    return hashlib.sha256(code.encode("utf-8")).digest()


def expected_hash_cc(cc_digest: bytes, transaction_id: bytes) -> bytes:
    """Hashed Confirmation Code = SHA-256(SHA-256(code) | transactionId) (SGP.22 3.1.3)."""
    return hashlib.sha256(cc_digest + transaction_id).digest()


class OrderHooks:
    """Extension points for what other features attach to orders (all no-ops here).

    They run inside the store transaction of the change. (SM-DS events are registered and deleted by
    smdp.smds_link from the ES2+ handlers, since ES12 is a network call; v3 RPM orders have their own
    table and ``rpm_order``.)
    """

    def order_confirmed(self, profile: Profile) -> None:
        """ConfirmOrder succeeded; ``profile.smds_address`` is set when the operator asked for an SM-DS."""

    def order_changed(self, profile: Profile, previous: ProfileState) -> None:
        """The profile moved from ``previous`` to ``profile.state``."""

    def notification_received(self, eid: str, operations: frozenset[str], iccid: str | None) -> None:
        """A verified enable/disable/delete notification arrived from an eUICC."""


@dataclass(frozen=True)
class OrderSettings:
    """What order management needs to know about the SM-DP+ deployment."""

    address: str  # returned by ConfirmOrder, used in activation codes
    smdp_oid: str  # our functionRequesterIdentifier towards operators
    order_ttl: timedelta | None = None
    operators: Mapping[str, str] = field(default_factory=dict)  # requester -> callback base URL


class Orders:
    """The SM-DP+ side of ES2+ and the order bookkeeping of the ES9+ core."""

    def __init__(self, settings: OrderSettings, store: Store, clock: Clock = _utc_now, rng: Rng = os.urandom,
                 hooks: OrderHooks | None = None):
        self.config = settings
        self.store = store
        self.clock = clock
        self.rng = rng
        self.hooks = hooks or OrderHooks()

    # --- ES2+ functions (SGP.22 5.3.1 - 5.3.4) ----------------------------------------------------

    def download_order(self, requester: str | None, *, eid: str | None = None, iccid: str | None = None,
                       profile_type: str | None = None) -> str:
        """ES2+.DownloadOrder: reserve a profile (by ICCID or from a profile type); returns its ICCID."""
        with self.store.transaction():
            if eid is not None:
                _check_eid(eid)
            if iccid is not None:
                profile = self._profile(iccid)
                if profile_type is not None and profile.profile_type != profile_type:
                    raise StatusCodeError(PROFILE_TYPE_MISMATCH,
                                          f"profile {iccid} is of type {profile.profile_type!r}, not {profile_type!r}")
                if profile.state is not ProfileState.AVAILABLE:
                    raise StatusCodeError(status.ICCID_ALREADY_IN_USE, f"profile {iccid} is {profile.state}, not Available")
            elif profile_type is not None:
                profile = self._available_of_type(profile_type)
            else:
                raise StatusCodeError(CONDITIONAL_ELEMENT_MISSING, "DownloadOrder needs an iccid or a profileType")
            now = self.clock()
            expires = now + self.config.order_ttl if self.config.order_ttl else None
            new = replace(profile, state=ProfileState.LINKED if eid else ProfileState.ALLOCATED,
                          requester=requester, eid=eid, expires_at=expires)
            return self.update(profile, new).iccid

    def confirm_order(self, requester: str | None, *, iccid: str, eid: str | None = None,
                      matching_id: str | None = None, confirmation_code: str | None = None,
                      smds_address: str | None = None, release_flag: bool = False) -> dict:
        """ES2+.ConfirmOrder: fix the matching ID, the EID and the confirmation code, optionally release.

        An absent ``matching_id`` is generated; an empty one means the order is found by EID alone
        (the default SM-DP+ address case), which needs an EID. Returns eid, matchingId, smdpAddress.
        """
        with self.store.transaction():
            profile = self._owned(requester, iccid)
            if profile.state not in (ProfileState.ALLOCATED, ProfileState.LINKED):
                raise StatusCodeError(status.ICCID_INVALID_TRANSITION,
                                      f"profile {iccid} is {profile.state}; only an Allocated or Linked order can be confirmed")
            if eid is not None:
                _check_eid(eid)
                if profile.eid is not None and profile.eid != eid:
                    raise StatusCodeError(status.EID_MISMATCH, f"the order for {iccid} is linked to another EID")
            eid = eid or profile.eid
            matching_id = self._choose_matching_id(matching_id, eid)
            if smds_address is not None and eid is None:
                raise StatusCodeError(status.EID_MISSING, "an SM-DS event needs the EID of the order")
            if smds_address is not None and not matching_id:
                raise StatusCodeError(status.MATCHING_ID_INVALID, "an SM-DS event needs a matching ID (its EventID)")
            if confirmation_code is not None and not confirmation_code:
                raise StatusCodeError(status.INVALID_REQUEST, "the confirmation code must not be empty")
            new = replace(profile, state=ProfileState.RELEASED if release_flag else ProfileState.CONFIRMED, eid=eid,
                          matching_id=matching_id, smds_address=smds_address,
                          cc_hash=confirmation_code_digest(confirmation_code) if confirmation_code else None)
            new = self.update(profile, new)
            self.hooks.order_confirmed(new)
            return {"eid": eid, "matchingId": matching_id or "", "smdpAddress": self.config.address}

    def cancel_order(self, requester: str | None, *, iccid: str, eid: str | None = None,
                     matching_id: str | None = None, final_status: str = "Available") -> Profile:
        """ES2+.CancelOrder: end the order; the profile becomes Available or Unavailable."""
        with self.store.transaction():
            final = {"Available": ProfileState.AVAILABLE, "Unavailable": ProfileState.UNAVAILABLE}.get(final_status)
            if final is None:
                raise StatusCodeError(status.INVALID_REQUEST,
                                      f"finalProfileStatusIndicator must be Available or Unavailable, got {final_status!r}")
            profile = self._owned(requester, iccid)
            if eid is not None and eid not in (profile.eid, profile.download_eid):
                raise StatusCodeError(status.EID_MISMATCH, f"the order for {iccid} is not for EID {eid}")
            if matching_id is not None and matching_id != (profile.matching_id or ""):
                raise StatusCodeError(status.MATCHING_ID_MISMATCH, f"the order for {iccid} has another matching ID")
            if profile.state not in ORDER_STATES:
                raise StatusCodeError(status.ICCID_INVALID_TRANSITION,
                                      f"profile {iccid} is {profile.state}: there is no order to cancel")
            self.end_sessions(profile, "order cancelled")
            return self.update(profile, Profile(profile.iccid, profile.profile_type, final,
                                                created_at=profile.created_at))

    def release_profile(self, requester: str | None, *, iccid: str) -> Profile:
        """ES2+.ReleaseProfile: a Confirmed order becomes downloadable."""
        with self.store.transaction():
            profile = self._owned(requester, iccid)
            if profile.state is not ProfileState.CONFIRMED:
                raise StatusCodeError(status.ICCID_INVALID_TRANSITION,
                                      f"profile {iccid} is {profile.state}; only a Confirmed order can be released")
            return self.update(profile, replace(profile, state=ProfileState.RELEASED))

    def restore(self, previous: Profile) -> Profile:
        """Put an order back as it was (ConfirmOrder whose SM-DS registration failed)."""
        with self.store.transaction():
            return self.update(self._profile(previous.iccid), previous)

    # --- kinsim extension: profile hand-over (SGP.22 leaves it out of ES2+) -----------------------

    def upload_profile(self, requester: str | None, *, package: bytes, profile_type: str,
                       service_provider_name: str = "", profile_name: str = "") -> Profile:
        """Add an operator's personalised profile package to the inventory (Available), with the
        metadata its type shows on devices. The ICCID comes from the package header."""
        if not profile_type or len(profile_type) > 64:
            raise StatusCodeError(status.INVALID_REQUEST, "profileType must be 1 to 64 characters")
        try:
            decoded = ProfilePackage.decode(package)
            iccid = validate_iccid(decoded.iccid)
        except DecodeError as exc:
            raise StatusCodeError(status.INVALID_REQUEST, f"profilePackage is not a SAIP profile package: {exc}") \
                from None
        with self.store.transaction():
            if self.store.profile(iccid) is not None:
                raise StatusCodeError(status.ICCID_ALREADY_IN_USE, f"a profile with ICCID {iccid} is already here", iccid)
            self.store.put_profile_type(ProfileType(profile_type, service_provider_name, profile_name))
            return self.store.add_profile(iccid, profile_type, decoded.encode(), self.clock())

    # --- SGP.22 v3 ES2+.RpmOrder ------------------------------------------------------------------

    def rpm_order(self, requester: str | None, *, eid: str, rpm_script: bytes, iccid: str | None = None,
                  matching_id: str | None = None, smds_address: str | None = None) -> RpmOrder:
        """Queue an RPM package for the eUICC's next contact (v3 3.7.1). Every command must name one of
        the requester's profiles installed on that eUICC; a Delete marks the profile Revoked at once.

        An eUICC that did not announce rpmSupport gets no package: its profiles are marked Revoked and
        the order is refused (RPM_UNSUPPORTED) so the operator knows no deletion will follow.
        """
        try:
            with self.store.transaction():
                return self._rpm_order(requester, eid, rpm_script, iccid, matching_id, smds_address)
        except CommitAndRaise as kept:
            raise kept.error from None

    def _rpm_order(self, requester, eid, rpm_script, iccid, matching_id, smds_address) -> RpmOrder:
        _check_eid(eid)
        try:
            commands = rpm.package_commands(decode(v3.RpmPackage, rpm_script))
        except DecodeError as exc:
            raise StatusCodeError(status.INVALID_REQUEST, f"rpmScript: {exc}") from None
        if not commands:
            raise StatusCodeError(status.INVALID_REQUEST, "rpmScript holds no command")
        targets = {c.iccid: self._rpm_target(requester, c.iccid, eid) for c in commands}
        if iccid is not None and iccid not in targets:
            raise StatusCodeError(status.INVALID_REQUEST, f"the rpmScript does not act on profile {iccid}")
        if matching_id == "":
            raise StatusCodeError(status.MATCHING_ID_INVALID, "an RPM order needs a matching ID (its EventID)")
        matching_id = self._choose_matching_id(matching_id, eid)
        for command in commands:
            if command.action == "delete" and targets[command.iccid].state is not ProfileState.REVOKED:
                targets[command.iccid] = self.update(targets[command.iccid],
                                                     replace(targets[command.iccid], state=ProfileState.REVOKED))
        if not self.store.euicc_rpm_support(eid):
            raise CommitAndRaise(StatusCodeError(status.RPM_UNSUPPORTED, "the eUICC does not support remote profile "
                                                 "management (v3 RPM): its profile is marked revoked only", eid))
        now = self.clock()
        order = RpmOrder(matching_id, eid, rpm_script, RpmState.PENDING, iccid or commands[0].iccid, requester,
                         smds_address, created_at=now, updated_at=now)
        self.store.add_rpm_order(order)
        return order

    def _rpm_target(self, requester: str | None, iccid: str, eid: str) -> Profile:
        profile = self._owned(requester, iccid)
        if profile.state not in (ProfileState.INSTALLED, ProfileState.REVOKED):
            raise StatusCodeError(status.ICCID_INVALID_TRANSITION,
                                  f"profile {iccid} is {profile.state}: only an installed profile can be managed", iccid)
        if profile.download_eid != eid:
            raise StatusCodeError(status.ICCID_EID_MISMATCH, f"profile {iccid} is not installed on EID {eid}", iccid)
        return profile

    def withdraw_rpm_order(self, matching_id: str) -> None:
        """Forget an RPM order whose SM-DS registration failed (the Revoked marks stay)."""
        with self.store.transaction():
            self.store.remove_rpm_order(matching_id)

    def create_order(self, *, iccid: str | None = None, profile_type: str | None = None, eid: str | None = None,
                     matching_id: str | None = None, confirmation_code: str | None = None,
                     release: bool = True) -> tuple[Profile, dict]:
        """DownloadOrder and ConfirmOrder in one transaction, for the local administrator."""
        with self.store.transaction():
            chosen = self.download_order(None, eid=eid, iccid=iccid, profile_type=profile_type)
            result = self.confirm_order(None, iccid=chosen, matching_id=matching_id,
                                        confirmation_code=confirmation_code, release_flag=release)
            return self.store.profile(chosen), result

    # --- bookkeeping shared with the ES9+ core ----------------------------------------------------

    def update(self, old: Profile, new: Profile) -> Profile:
        saved = self.store.save_profile(new, self.clock())
        if saved.state is not old.state:
            self.hooks.order_changed(saved, old.state)
        return saved

    def block(self, profile: Profile, reason: str) -> Profile:
        """Put the order in Error (a limit was reached or the download was refused for good)."""
        self.end_sessions(profile, f"order blocked: {reason}")
        return self.update(profile, replace(profile, state=ProfileState.ERROR, error=reason))

    def end_sessions(self, profile: Profile, result: str, keep: bytes | None = None) -> None:
        """Close the order's sessions that have not delivered a BPP yet (except ``keep``)."""
        for session in self.store.sessions_for(profile.iccid, LIVE_SESSION_STATES):
            if session.transaction_id != keep:
                self.close_session(session, result)

    def close_session(self, session: Session, result: str) -> Session:
        return self.store.save_session(replace(session, state=SessionState.CLOSED, result=result))

    def report(self, profile: Profile, point: int, *, eid: str | None, error: StatusCodeError | None = None,
               result_data: bytes | None = None) -> None:
        """Queue ES2+.HandleDownloadProgressInfo for the operator that owns the order (if it has a URL)."""
        if profile.requester is None or profile.requester not in self.config.operators:
            return
        now = self.clock()
        payload = es2_json.progress_info(
            requester_id=self.config.smdp_oid, call_id=self.rng(8).hex(), iccid=profile.iccid,
            profile_type=profile.profile_type, eid=eid or profile.eid, timestamp=now, point=point, error=error,
            result_data=result_data)
        self.store.outbox_add(profile.requester, payload, now)

    # --- helpers ----------------------------------------------------------------------------------

    def _profile(self, iccid: str) -> Profile:
        profile = self.store.profile(iccid)
        if profile is None:
            raise StatusCodeError(status.ICCID_UNKNOWN, f"no profile with ICCID {iccid}", iccid)
        return profile

    def _owned(self, requester: str | None, iccid: str) -> Profile:
        profile = self._profile(iccid)
        if requester is not None and profile.state is not ProfileState.AVAILABLE and profile.requester != requester:
            raise StatusCodeError(status.ICCID_NOT_ALLOWED, f"the order for {iccid} belongs to another operator", iccid)
        return profile

    def _available_of_type(self, profile_type: str) -> Profile:
        found = self.store.profiles([ProfileState.AVAILABLE], profile_type=profile_type, limit=1)
        if found:
            return found[0]
        if self.store.profile_type(profile_type) is None and not self.store.profiles(profile_type=profile_type, limit=1):
            raise StatusCodeError(status.PROFILE_TYPE_UNKNOWN, f"unknown profile type {profile_type!r}", profile_type)
        raise StatusCodeError(status.PROFILE_TYPE_UNAVAILABLE, f"no Available profile of type {profile_type!r}",
                              profile_type)

    def _choose_matching_id(self, matching_id: str | None, eid: str | None) -> str | None:
        if matching_id is None:
            return self._new_matching_id()
        if matching_id == "":
            if eid is None:
                raise StatusCodeError(status.EID_MISSING, "an order without matching ID is found by EID, so it needs one")
            return None
        if not _MATCHING_ID.fullmatch(matching_id):
            raise StatusCodeError(status.MATCHING_ID_INVALID,
                                  "a matching ID is 1 to 64 characters of 0-9, A-Z and '-' (SGP.22 4.1)")
        if self.store.matching_id_taken(matching_id):
            raise StatusCodeError(status.MATCHING_ID_CONFLICT, f"matching ID {matching_id} is already in use")
        return matching_id

    def _new_matching_id(self) -> str:
        while True:  # 100 random bits in base32: collisions are practically impossible, but checked
            text = base64.b32encode(self.rng(13)).decode("ascii")[:20]
            candidate = "-".join(text[i:i + 5] for i in range(0, 20, 5))
            if not self.store.matching_id_taken(candidate):
                return candidate


def import_profile(store: Store, upp: bytes, now: datetime, profile_type: str | None = None) -> Profile:
    """Add a SAIP profile package to the inventory as Available; the ICCID comes from its header.

    The type is ``profile_type``, else the header's profileType, else "default". Raises DecodeError
    for a package that does not decode and StoreError for an ICCID already in the inventory.
    """
    package = ProfilePackage.decode(upp)
    iccid = package.iccid
    validate_iccid(iccid)
    with store.transaction():
        return store.add_profile(iccid, profile_type or package.profile_type or "default", package.encode(), now)


def _check_eid(eid: str) -> None:
    try:
        validate_eid(eid)
    except DecodeError as exc:
        raise StatusCodeError(EID_INVALID, str(exc), eid) from None


def describe_profiles(profiles: Iterable[Profile]) -> list[dict]:
    """Plain dicts for the CLI and JSON output."""
    return [
        {"iccid": p.iccid, "profileType": p.profile_type, "state": p.state.value, "eid": p.eid,
         "matchingId": p.matching_id, "ccRequired": p.cc_required, "ccAttempts": p.cc_attempts,
         "downloadAttempts": p.download_attempts, "requester": p.requester, "error": p.error}
        for p in profiles
    ]
