"""The operator side of family plans, wired: the plan core (``mno.plans``), its store, the network
authenticator (``mno.authenticator``), profile personalisation (``rsp.saip.personalize``) and the
SM-DP+ (ES2+ through ``mno.es2_client``, plus two small non-ES2+ hooks described below).

The core decides; this layer carries out what it decided, in this order, so that a failure half-way
never leaves a usable profile nobody accounts for:

Invitation: core reserves ICCID/IMSI and draws Ki/OPc -> personalise the plan's template -> provision
the authenticator (Milenage) -> hand the package to the SM-DP+ (``ProfileSink``) -> ES2+ DownloadOrder
(with the EID when the invitation is bound) -> ES2+ ConfirmOrder (our one-time matching ID, the
confirmation code, the SM-DS address for a bound invitation, releaseFlag) -> core marks it pending
with the activation code. Any failure: core marks the invitation failed and the IMSI is barred.

Revocation: core revokes -> bar every IMSI at the authenticator (AKA fails from now on) -> ES2+
CancelOrder for orders never installed -> ``RemoteManager.revoke_profile`` for installed profiles
(the SM-DP+ marks them revoked and deletes them remotely at the eUICC's next contact, SGP.22 v3
RPM); the deletion notification later reconciles the state.

Profiles reach the SM-DP+ outside ES2+ (SGP.22 assumes they are already there); ``ProfileSink`` is
that hand-over (``HttpProfileSink``: kinsim's uploadProfile next to ES2+). The metadata named with it
is the operator's name and a plan code: no personal data. ``Es2RemoteManager`` asks for the remote
deletion with the v3 ES2+.RpmOrder.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from mno import plans
from mno.authenticator import Authenticator, Subscriber, UnknownSubscriber
from mno.es2_client import FINAL_UNAVAILABLE, Es2Client, Es2Unavailable
from mno.plans import (
    ClosedInvitation,
    IssuedOrder,
    PlanBook,
    Principal,
    ProgressEvent,
    Revocation,
)
from rsp import rpm
from rsp.activation import ActivationCode
from rsp.errors import DecodeError, KinsimError, StatusCodeError
from rsp.saip import ProfilePackage
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile

log = logging.getLogger("kinsim.mno")


class TemplateError(KinsimError):
    """The plan's template profile is missing or cannot take a subscriber's values."""


@dataclass(frozen=True)
class ProfileMetadata:
    """What the SM-DP+ shows on the device (StoreMetadataRequest): the operator and the plan only."""

    profile_type: str
    service_provider_name: str
    profile_name: str


class ProfileSink(Protocol):
    async def upload(self, package: bytes, metadata: ProfileMetadata) -> None:
        """Put one personalised package into the SM-DP+'s inventory (state Available)."""
        ...


class RemoteManager(Protocol):
    async def revoke_profile(self, iccid: str, eid: str | None) -> None:
        """Mark the installed profile revoked at the SM-DP+ and queue its deletion on the eUICC for the
        next LPA contact (SGP.22 v3 remote profile management)."""
        ...


class HttpProfileSink:
    """The ProfileSink of a separate SM-DP+: kinsim's uploadProfile on its ES2+ listener (mutual TLS,
    the operator's client certificate), next to the GSMA ES2+ functions."""

    def __init__(self, es2: Es2Client):
        self.es2 = es2

    async def upload(self, package: bytes, metadata: ProfileMetadata) -> None:
        await self.es2.upload_profile(package=package, profile_type=metadata.profile_type,
                                      service_provider_name=metadata.service_provider_name,
                                      profile_name=metadata.profile_name)


class Es2RemoteManager:
    """RemoteManager over SGP.22 v3 ES2+.RpmOrder: an RPM package disabling then deleting the profile,
    delivered at the eUICC's next contact; the event is registered at ``smds_address`` (the SM-DS the
    eUICC's LPA asks). A refusal (e.g. an eUICC without rpmSupport: the SM-DP+ only marks the profile
    revoked) raises StatusCodeError and the profile stays pending."""

    def __init__(self, es2: Es2Client, smds_address: str | None):
        self.es2 = es2
        self.smds_address = smds_address

    async def revoke_profile(self, iccid: str, eid: str | None) -> None:
        if eid is None:
            raise KinsimError("the profile's eUICC is unknown: no remote deletion is possible")
        await self.es2.rpm_order(eid=eid, iccid=iccid, rpm_script=rpm.revocation_package(iccid).dump(),
                                 smds_address=self.smds_address)


class CallableSink:
    """A ProfileSink from a function (sync or async): for in-process wiring and tests."""

    def __init__(self, fn: Callable[[bytes, ProfileMetadata], Any]):
        self._fn = fn

    async def upload(self, package: bytes, metadata: ProfileMetadata) -> None:
        result = self._fn(package, metadata)
        if isinstance(result, Awaitable):
            await result


class DirectorySink:
    """A ProfileSink that drops each package (ICCID.der) and its metadata (ICCID.json) into a directory
    the SM-DP+ operator imports from; files appear atomically (write, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    async def upload(self, package: bytes, metadata: ProfileMetadata) -> None:
        iccid = ProfilePackage.decode(package).iccid
        meta = json.dumps(dataclasses.asdict(metadata), indent=2).encode("utf-8")
        await asyncio.to_thread(self._write, f"{iccid}.json", meta)
        await asyncio.to_thread(self._write, f"{iccid}.der", package)

    def _write(self, name: str, data: bytes) -> None:
        temp = self.directory / f".{name}.tmp"
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.directory / name)


@dataclass(frozen=True)
class ServiceConfig:
    smdp_address: str | None = None  # for activation codes; else what ConfirmOrder answers
    smdp_oid: str | None = None  # put into activation codes when set (SGP.22 4.1)
    smds_address: str | None = None  # EID-bound invitations: the SM-DP+ registers an event there
    smdp_requester_id: str | None = None  # expected functionRequesterIdentifier of progress callbacks
    template_loader: Callable[[str], bytes] = ts48_profile

    def __post_init__(self) -> None:
        if self.smdp_address:  # fail at start-up, not after an order was placed
            ActivationCode(self.smdp_address, "", self.smdp_oid)


@dataclass(frozen=True)
class Invite:
    """What the owner hands on: the activation code and, by another channel, the confirmation code."""

    order: IssuedOrder
    invitation: plans.Invitation

    @property
    def activation_code(self) -> str:
        return self.invitation.activation_code or ""


def metadata_for(plan: plans.Plan, operator_name: str) -> ProfileMetadata:
    code = plan.plan_id.rsplit("-", 1)[-1][:6].upper()
    return ProfileMetadata(f"family-{plan.plan_id}", operator_name, f"{operator_name} family plan {code}")


class FamilyService:
    def __init__(self, book: PlanBook, authenticator: Authenticator, es2: Es2Client | None = None,
                 sink: ProfileSink | None = None, remote: RemoteManager | None = None,
                 config: ServiceConfig | None = None):
        self.book = book
        self.authenticator = authenticator
        self.es2 = es2
        self.sink = sink
        self.remote = remote
        self.config = config or ServiceConfig()

    async def _core(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Core and store calls block (PostgreSQL): keep them off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # --- invitations ------------------------------------------------------------------------

    async def invite(self, actor: Principal, plan_id: str, display_name: str, role: str = "adult",
                     eid: str | None = None, cc_required: bool | None = None,
                     ttl: timedelta | None = None) -> Invite:
        self._need_smdp()
        order = await self._core(self.book.invite, actor, plan_id, display_name, role, eid, cc_required, ttl)
        return await self._place(order)

    async def issue_profile(self, actor: Principal, plan_id: str, member_id: str, eid: str | None = None,
                            cc_required: bool | None = None, ttl: timedelta | None = None) -> Invite:
        """A fresh profile for an existing member (first line, new device); the old one is revoked first."""
        self._need_smdp()
        order = await self._core(self.book.issue_profile, actor, plan_id, member_id, eid, cc_required, ttl)
        if order.replaced is not None:
            await self._apply_revocation(order.replaced)
        return await self._place(order)

    def _need_smdp(self) -> None:
        if self.es2 is None or self.sink is None:
            raise KinsimError("this service has no SM-DP+ configured (ES2+ URL and profile hand-over)")

    async def _place(self, order: IssuedOrder) -> Invite:
        inv = order.invitation
        try:
            package = await self._core(self._personalize, order)
            await self._core(self.authenticator.provision, Subscriber(
                imsi=order.profile.imsi, iccid=order.profile.iccid, algorithm="milenage", k=order.ki, opc=order.opc))
            await self.sink.upload(package, metadata_for(order.plan, self.book.config.service_provider_name))
            await self.es2.download_order(iccid=order.profile.iccid, eid=inv.eid)
            confirmed = await self.es2.confirm_order(
                iccid=order.profile.iccid, eid=inv.eid, matching_id=inv.matching_id,
                confirmation_code=order.confirmation_code, release_flag=True,
                smds_address=self.config.smds_address if inv.eid else None)
        except KinsimError as exc:
            await self._order_failed(order, exc)
            raise
        address = self.config.smdp_address or confirmed.smdp_address or ""
        try:
            ActivationCode(address, inv.matching_id, self.config.smdp_oid, inv.cc_required)
        except DecodeError as exc:
            await self._cancel_order(order.profile.iccid)
            await self._order_failed(order, exc)
            raise Es2Unavailable(f"no usable SM-DP+ address for the activation code: {exc}") from None
        try:
            placed = await self._core(self.book.order_placed, inv.invitation_id, address, self.config.smdp_oid)
        except plans.Conflict:
            # withdrawn while we were ordering: take the order back
            await self._cancel_order(order.profile.iccid)
            await self._bar(order.profile.imsi)
            raise
        log.info("invitation %s released", inv.invitation_id)
        return Invite(order, placed)

    def _personalize(self, order: IssuedOrder) -> bytes:
        numbering = order.plan.numbering
        try:
            return personalize(self.config.template_loader(order.plan.template), iccid=order.profile.iccid,
                               imsi=order.profile.imsi, ki=order.ki, opc=order.opc, algorithm="milenage",
                               mnc_length=len(numbering.mnc))
        except (DecodeError, OSError) as exc:  # the operator's template, not the caller's request
            raise TemplateError(f"the plan's template {order.plan.template!r} cannot be personalised: {exc}") from None

    async def _order_failed(self, order: IssuedOrder, error: Exception) -> None:
        reason = f"{error.code.subject}/{error.code.reason}" if isinstance(error, StatusCodeError) else type(error).__name__
        log.warning("invitation %s failed: %s", order.invitation.invitation_id, reason)
        await self._core(self.book.order_failed, order.invitation.invitation_id, reason)
        await self._bar(order.profile.imsi)

    async def cancel_invitation(self, actor: Principal, plan_id: str, invitation_id: str) -> ClosedInvitation:
        closed = await self._core(self.book.cancel_invitation, actor, plan_id, invitation_id)
        await self._close_effects(closed)
        return closed

    async def expire_invitations(self) -> list[ClosedInvitation]:
        expired = await self._core(self.book.expire_invitations)
        for closed in expired:
            await self._close_effects(closed)
        return expired

    async def _close_effects(self, closed: ClosedInvitation) -> None:
        await self._bar(closed.imsi)
        await self._cancel_order(closed.invitation.iccid)

    # --- revocation, suspension -----------------------------------------------------------------

    async def revoke_member(self, actor: Principal, plan_id: str, member_id: str) -> Revocation:
        revocation = await self._core(self.book.revoke_member, actor, plan_id, member_id)
        await self._apply_revocation(revocation)
        return revocation

    async def _apply_revocation(self, revocation: Revocation) -> None:
        for imsi in revocation.bar_imsis:  # first: from here on the network refuses the profile
            await self._bar(imsi)
        for iccid in revocation.cancel_orders:
            await self._cancel_order(iccid)
        for iccid, eid in revocation.remote_deletes:
            await self._remote_delete(iccid, eid)

    async def set_suspended(self, actor: Principal, plan_id: str, member_id: str, suspended: bool) -> plans.Member:
        barring = await self._core(self.book.set_suspended, actor, plan_id, member_id, suspended)
        for imsi in barring.imsis:
            action = self.authenticator.bar if suspended else self.authenticator.unbar
            with contextlib.suppress(UnknownSubscriber):  # still being ordered: its installation bars it
                await self._core(action, imsi)
        return barring.member

    async def retry_remote_deletes(self) -> int:
        """Ask again for every revoked profile whose remote deletion the SM-DP+ has not accepted yet."""
        pending = await self._core(self.book.pending_remote_deletes)
        for profile in pending:
            await self._remote_delete(profile.iccid, profile.eid)
        return len(pending)

    async def _bar(self, imsi: str) -> None:
        if not imsi:
            return
        with contextlib.suppress(UnknownSubscriber):  # never provisioned: nothing can authenticate
            await self._core(self.authenticator.bar, imsi)

    async def _cancel_order(self, iccid: str) -> None:
        if self.es2 is None:
            return
        try:
            await self.es2.cancel_order(iccid=iccid, final_status=FINAL_UNAVAILABLE)
        except (StatusCodeError, Es2Unavailable) as exc:
            # already gone (installed, cancelled) or unreachable: the barred IMSI keeps it useless
            log.warning("CancelOrder for an invitation was not accepted: %s", type(exc).__name__)

    async def _remote_delete(self, iccid: str, eid: str | None) -> None:
        if self.remote is None:
            return
        try:
            await self.remote.revoke_profile(iccid, eid)
        except KinsimError as exc:
            log.warning("remote deletion request failed (%s); it stays pending", type(exc).__name__)
            return
        await self._core(self.book.remote_delete_ordered, iccid)

    # --- ES2+ HandleDownloadProgressInfo ----------------------------------------------------------

    async def handle_progress(self, requester: str, event: ProgressEvent) -> plans.ProgressOutcome:
        if self.config.smdp_requester_id and requester != self.config.smdp_requester_id:
            raise plans.Forbidden("progress information from an unexpected function requester")
        outcome = await self._core(self.book.download_progress, event)
        if outcome.bar_imsi:
            await self._bar(outcome.bar_imsi)
        if outcome.cancel_order:
            await self._cancel_order(outcome.cancel_order)
        if outcome.remote_delete:
            await self._remote_delete(*outcome.remote_delete)
        return outcome


__all__ = ["CallableSink", "DirectorySink", "Es2RemoteManager", "FamilyService", "HttpProfileSink", "Invite",
           "ProfileMetadata", "ProfileSink", "RemoteManager", "ServiceConfig", "TemplateError", "metadata_for"]
