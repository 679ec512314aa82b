"""The profile download procedure of SGP.22 3.1.3, against an ES9+ peer and an ES10 client.

Common mutual authentication (3.1.2 / 3.0.1), download confirmation (3.1.3.2), profile installation
(3.1.3.3), then notification processing (3.5). Once ES10b.AuthenticateServer has opened a session on
the card, any failure up to the end of LoadBoundProfilePackage cancels it on both sides with the
reason of 5.7.14 (endUserRejection, postponed, timeout, pprNotAllowed, otherwise undefinedReason).

User interaction is injected: ``confirm(metadata) -> bool`` and ``confirmation_code() -> str`` (either
may be a coroutine function); raising DownloadPostponed from them postpones the download.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509 as cx509

from certs.validate import registered_id
from lpa.es9_client import Es9ConnectionError
from lpa.es10 import Es10Client
from lpa.notifications import Delivery, PeerFactory, process_notifications
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.activation import hash_confirmation_code
from rsp.errors import BppError, DecodeError, Es10Error, KinsimError, StatusCodeError
from rsp.ids import iccid_from_bcd

_log = logging.getLogger(__name__)

# CancelSessionReason (5.7.14)
END_USER_REJECTION, POSTPONED, TIMEOUT, PPR_NOT_ALLOWED, UNDEFINED_REASON = 0, 1, 2, 3, 127

DEFAULT_TAC = bytes.fromhex("35000000")  # placeholder Type Allocation Code (8 BCD digits)
DEFAULT_CAPABILITIES = {"gsmSupportedRelease": "15.0.0", "utranSupportedRelease": "15.0.0",
                        "eutranSupportedRelease": "15.0.0"}


class Es9Peer(Protocol):
    """The five ES9+ functions (SGP.22 5.6); results are rsp.es9_json.decode_response dicts."""

    async def initiate_authentication(self, *, euicc_challenge: bytes, euicc_info1, smdp_address: str) -> dict: ...

    async def authenticate_client(self, *, transaction_id: bytes, authenticate_server_response) -> dict: ...

    async def get_bound_profile_package(self, *, transaction_id: bytes, prepare_download_response) -> dict: ...

    async def handle_notification(self, *, pending_notification) -> None: ...

    async def cancel_session(self, *, transaction_id: bytes, cancel_session_response) -> None: ...


class UserRejected(KinsimError):
    """The end user declined the download."""


class DownloadPostponed(KinsimError):
    """The end user postponed the download (or had no confirmation code at hand)."""


class PprNotAllowed(KinsimError):
    """The profile's policy rules are not allowed by the eUICC's Rules Authorisation Table."""


class DownloadProtocolError(KinsimError):
    """The SM-DP+ answered inconsistently (other transactionId, other address, other OID)."""


@dataclass(frozen=True)
class DeviceInfo:
    """The deviceInfo of ctxParams1 (5.7.13): TAC, capabilities (release per radio), optional IMEI."""

    tac: bytes = DEFAULT_TAC
    capabilities: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CAPABILITIES))
    imei: bytes | None = None

    def to_asn1(self) -> dict:
        value: dict[str, Any] = {
            "tac": self.tac,
            "deviceCapabilities": {name: _version_bytes(text) for name, text in self.capabilities.items()},
        }
        if self.imei is not None:
            value["imei"] = self.imei
        return value


def _version_bytes(text: str) -> bytes:
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise DecodeError(f"a release version is major.minor.revision (0-255 each), got {text!r}")
    return bytes(int(p) for p in parts)


@dataclass(frozen=True)
class ProfileMetadata:
    """StoreMetadataRequest (SGP.22 2.4.3) as the user sees it before confirming."""

    iccid: str
    service_provider_name: str
    profile_name: str
    profile_class: str
    icon_type: str | None = None
    icon: bytes | None = None
    profile_owner: dict | None = None
    profile_policy_rules: tuple[str, ...] = ()
    notification_addresses: tuple[tuple[str, str], ...] = ()  # (operation, address)
    ppr_consent_required: bool = False

    @classmethod
    def from_asn1(cls, value: m.StoreMetadataRequest, ppr_consent_required: bool = False) -> ProfileMetadata:
        native = value.native
        notifications = tuple(
            (",".join(sorted(info["profileManagementOperation"])), info["notificationAddress"])
            for info in native.get("notificationConfigurationInfo") or ()
        )
        return cls(
            iccid=iccid_from_bcd(native["iccid"]),
            service_provider_name=native["serviceProviderName"],
            profile_name=native["profileName"],
            profile_class=native.get("profileClass") or "operational",
            icon_type=native.get("iconType"),
            icon=native.get("icon"),
            profile_owner=operator_view(native.get("profileOwner")),
            profile_policy_rules=tuple(sorted(native.get("profilePolicyRules") or ())),
            notification_addresses=notifications,
            ppr_consent_required=ppr_consent_required,
        )

    def as_dict(self) -> dict:
        return {
            "iccid": self.iccid, "serviceProviderName": self.service_provider_name, "profileName": self.profile_name,
            "profileClass": self.profile_class, "iconType": self.icon_type, "icon": icon_text(self.icon),
            "profileOwner": self.profile_owner, "profilePolicyRules": list(self.profile_policy_rules),
            "notificationConfigurationInfo": [{"profileManagementOperation": o, "notificationAddress": a}
                                              for o, a in self.notification_addresses],
            "pprConsentRequired": self.ppr_consent_required,
        }


def icon_text(icon: bytes | None) -> str | None:
    """Icons travel as base64 in JSON output (as lpac prints them)."""
    return base64.b64encode(icon).decode("ascii") if icon else None


def operator_view(owner: dict | None) -> dict | None:
    """OperatorID with mccMnc decoded (3GPP TS 24.008 10.5.1.3 nibble order) to MCC and MNC."""
    if not owner:
        return None
    mcc, mnc = plmn_digits(owner["mccMnc"])
    view = {"mcc": mcc, "mnc": mnc}
    for name in ("gid1", "gid2"):
        if owner.get(name) is not None:
            view[name] = owner[name].hex().upper()
    return view


def plmn_digits(mcc_mnc: bytes) -> tuple[str, str]:
    """MCC and MNC from the 3 bytes of TS 24.008 (MCC2 MCC1 | MNC3 MCC3 | MNC2 MNC1; MNC3 'F' if absent)."""
    if len(mcc_mnc) != 3:
        return mcc_mnc.hex().upper(), ""
    n = [(b & 0x0F, b >> 4) for b in mcc_mnc]
    mcc = f"{n[0][0]:X}{n[0][1]:X}{n[1][0]:X}"
    mnc = f"{n[2][0]:X}{n[2][1]:X}" + ("" if n[1][1] == 0xF else f"{n[1][1]:X}")
    return mcc, mnc


# --- Profile Policy Rules against the Rules Authorisation Table (SGP.22 2.9.2) -------------------


def _nibbles_match(rule: bytes, owner: bytes) -> bool:
    """mccMnc comparison where an 'E' nibble in the rule matches any digit."""
    if len(rule) != len(owner):
        return False
    for r, o in zip(rule, owner, strict=True):
        for shift in (0, 4):
            rn, on = (r >> shift) & 0x0F, (o >> shift) & 0x0F
            if rn != 0x0E and rn != on:
                return False
    return True


def operator_allowed(allowed: dict, owner: dict) -> bool:
    if not _nibbles_match(allowed["mccMnc"], owner["mccMnc"]):
        return False
    return all(allowed.get(g) is None or allowed.get(g) == owner.get(g) for g in ("gid1", "gid2"))


def ppr_decision(pprs: set[str], owner: dict | None, rat: list[dict]) -> tuple[bool, bool]:
    """(allowed, consent required) for a profile's PPRs: each PPR needs a rule of the RAT listing it
    whose allowedOperators match the profile owner; the first such rule decides about consent."""
    needed = set(pprs) - {"pprUpdateControl"}
    consent = False
    for ppr in sorted(needed):
        rule = next((r for r in rat if ppr in (r["pprIds"] or set()) and owner is not None
                     and any(operator_allowed(op, owner) for op in r["allowedOperators"])), None)
        if rule is None:
            return False, False
        consent |= "consentRequired" in (rule["pprFlags"] or set())
    return True, consent


# --- the procedure ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadResult:
    iccid: str
    isdp_aid: str
    metadata: ProfileMetadata
    transaction_id: bytes
    notifications: list[Delivery]

    def as_dict(self) -> dict:
        return {"iccid": self.iccid, "isdpAid": self.isdp_aid, "transactionId": self.transaction_id.hex().upper(),
                "metadata": self.metadata.as_dict(), "notifications": [d.as_dict() for d in self.notifications]}


def cancel_reason(error: BaseException) -> int:
    """The CancelSessionReason (5.7.14) that describes why a download stopped."""
    chosen = getattr(error, "cancel_session_reason", None)  # an error that names its own (v3 RPM)
    if isinstance(chosen, int):
        return chosen
    if isinstance(error, UserRejected):
        return END_USER_REJECTION
    if isinstance(error, DownloadPostponed | KeyboardInterrupt | asyncio.CancelledError):
        return POSTPONED
    if isinstance(error, TimeoutError) or (isinstance(error, Es9ConnectionError) and error.kind == "timeout"):
        return TIMEOUT
    if isinstance(error, PprNotAllowed):
        return PPR_NOT_ALLOWED
    return UNDEFINED_REASON


async def _call_user(callback: Callable, *args):
    result = callback(*args)
    return await result if inspect.isawaitable(result) else result


async def download_profile(
    es10: Es10Client,
    es9: Es9Peer,
    *,
    smdp_address: str,
    matching_id: str | None = "",
    smdp_oid: str | None = None,
    device: DeviceInfo | None = None,
    confirm: Callable[[ProfileMetadata], Any] | None = None,
    confirmation_code: Callable[[], Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    peers: PeerFactory | None = None,
    operation_types: set[str] | None = None,
    on_rpm: Callable[[bytes, dict], Awaitable[Any]] | None = None,
) -> DownloadResult | Any:
    """Download and install one profile; deliver the notifications it (and earlier runs) left.

    ``confirm`` None accepts (the caller already has the user's consent, e.g. ``--yes``).
    ``peers(address)`` gives the ES9+ peer for notification addresses other than ``smdp_address``.
    ``operation_types`` (SGP.22 v3 ctxParams1.operationType, e.g. {"profileDownload", "rpm"}) announces
    what the LPA expects; when the SM-DP+ answers AuthenticateClient with an RPM package, ``on_rpm(
    transactionId, answer)`` handles it and its result is returned (see lpa.rpm).
    Raises BppError when the card refused the package (after delivering its result), Es10Error,
    StatusCodeError, Es9ConnectionError, UserRejected, DownloadPostponed, PprNotAllowed.
    """
    challenge = es10.get_euicc_challenge()
    info1 = es10.get_euicc_info1()
    auth = await es9.initiate_authentication(euicc_challenge=challenge, euicc_info1=info1, smdp_address=smdp_address)
    transaction_id = auth["transactionId"]
    _check_initiate_authentication(auth, smdp_address, smdp_oid)
    ctx_params1 = _ctx_params1(device, matching_id, operation_types)
    try:
        server_response = es10.authenticate_server(
            server_signed1=auth["serverSigned1"], server_signature1=auth["serverSignature1"].native,
            euicc_ci_pkid_to_be_used=auth["euiccCiPKIdToBeUsed"], server_certificate=auth["serverCertificate"],
            ctx_params1=ctx_params1,
        )
    except BaseException as exc:  # the answer was lost: the card may hold a session all the same
        await _cancel_session(es10, None, transaction_id, cancel_reason(exc))
        raise
    if server_response.name != "authenticateResponseOk":
        await _relay_quietly(es9.authenticate_client(transaction_id=transaction_id,
                                                     authenticate_server_response=server_response))
        code = server_response.chosen["authenticateErrorCode"]
        raise Es10Error("AuthenticateServer", int(code), str(code.native), "the eUICC did not accept the SM-DP+")
    try:
        client = await es9.authenticate_client(transaction_id=transaction_id,
                                               authenticate_server_response=server_response)
        if "smdpSigned3" in client:
            if on_rpm is None:
                raise DownloadProtocolError("the SM-DP+ answered with an RPM package, which this download "
                                            "did not announce")
            return await on_rpm(transaction_id, client)
        result = await _after_authentication(es10, es9, transaction_id, client, confirm, confirmation_code,
                                             progress)
    except BaseException as exc:
        # A function that failed at the SM-DP+ already ended its session there (SGP.22 5.6): only the
        # card's session is left to cancel.
        await _cancel_session(es10, es9 if not isinstance(exc, StatusCodeError) else None, transaction_id,
                              cancel_reason(exc))
        raise
    return await _finish(es10, es9, smdp_address, peers, transaction_id, *result)


def _check_initiate_authentication(auth: dict, smdp_address: str, smdp_oid: str | None) -> None:
    signed = auth["serverSigned1"]
    if signed["transactionId"].native != auth["transactionId"]:
        raise DownloadProtocolError("the SM-DP+ answered InitiateAuthentication with two different transactionIds")
    if signed["serverAddress"].native.lower() != smdp_address.lower():  # FQDNs compare case-insensitively
        raise DownloadProtocolError(f"the SM-DP+ signed serverAddress {signed['serverAddress'].native!r}, "
                                    f"not the address the LPA contacted ({smdp_address!r})")
    if smdp_oid is not None:
        certificate = cx509.load_der_x509_certificate(auth["serverCertificate"].dump())
        found = registered_id(certificate)
        if found != smdp_oid:
            raise DownloadProtocolError(f"the SM-DP+ certificate carries OID {found}, the activation code {smdp_oid}")


def _ctx_params1(device: DeviceInfo | None, matching_id: str | None, operation_types: set[str] | None):
    """ctxParams1 of AuthenticateServer (5.7.13); with ``operation_types`` the v3 form announcing them."""
    context: dict[str, Any] = {"deviceInfo": (device or DeviceInfo()).to_asn1()}
    if matching_id is not None:
        context["matchingId"] = matching_id
    if operation_types is None:
        return {"ctxParamsForCommonAuthentication": context}
    context["operationType"] = set(operation_types)
    return v3.CtxParams1(name="ctxParamsForCommonAuthentication", value=context)


async def _after_authentication(es10, es9, transaction_id, client, confirm, confirmation_code, progress):
    signed2 = client["smdpSigned2"]
    if client["transactionId"] != transaction_id or signed2["transactionId"].native != transaction_id:
        raise DownloadProtocolError("the SM-DP+ answered AuthenticateClient for another transaction")
    metadata = ProfileMetadata.from_asn1(client["profileMetadata"],
                                         ppr_consent_required=_check_pprs(es10, client["profileMetadata"]))
    if confirm is not None and not await _call_user(confirm, metadata):
        raise UserRejected("the download was declined")
    hash_cc = None
    if signed2["ccRequiredFlag"].native:
        code = await _call_user(confirmation_code) if confirmation_code is not None else None
        if not code:
            raise DownloadPostponed("this download needs a confirmation code and none was given")
        hash_cc = hash_confirmation_code(code, transaction_id)
    prepared = es10.prepare_download(smdp_signed2=signed2, smdp_signature2=client["smdpSignature2"].native,
                                     smdp_certificate=client["smdpCertificate"], hash_cc=hash_cc)
    if prepared.name != "downloadResponseOk":
        await _relay_quietly(es9.get_bound_profile_package(transaction_id=transaction_id,
                                                           prepare_download_response=prepared))
        code = prepared.chosen["downloadErrorCode"]
        raise Es10Error("PrepareDownload", int(code), str(code.native), "the eUICC refused to prepare the download")
    package = await es9.get_bound_profile_package(transaction_id=transaction_id, prepare_download_response=prepared)
    if package["transactionId"] != transaction_id:
        raise DownloadProtocolError("the SM-DP+ sent a Bound Profile Package for another transaction")
    result = es10.load_bound_profile_package(package["boundProfilePackage"].dump(), progress)
    return metadata, result


def _check_pprs(es10: Es10Client, metadata: m.StoreMetadataRequest) -> bool:
    """Raise PprNotAllowed unless the RAT allows the profile's PPRs; True if the user must consent."""
    pprs = set(metadata["profilePolicyRules"].native or ())
    if not pprs - {"pprUpdateControl"}:
        return False
    rat = [rule.native for rule in es10.get_rat()]
    owner = metadata["profileOwner"].native
    allowed, consent = ppr_decision(pprs, owner, rat)
    if not allowed:
        raise PprNotAllowed(f"the profile's policy rules ({', '.join(sorted(pprs))}) are not allowed on this eUICC")
    return consent


async def _finish(es10, es9, smdp_address, peers, transaction_id, metadata: ProfileMetadata,
                  result: m.ProfileInstallationResult) -> DownloadResult:
    """Deliver the installation result (and any older notification), then report the outcome."""
    def peer_for(address: str):
        return es9 if address == smdp_address or peers is None else peers(address)

    pending = m.PendingNotification(name="profileInstallationResult", value=result)
    deliveries = await process_notifications(es10, peer_for, extra=[pending])
    final = result["profileInstallationResultData"]["finalResult"]
    if final.name == "errorResult":
        error = final.chosen
        raise BppError(int(error["bppCommandId"]), int(error["errorReason"]))
    return DownloadResult(iccid=metadata.iccid, isdp_aid=final.chosen["aid"].native.hex().upper(), metadata=metadata,
                          transaction_id=transaction_id, notifications=deliveries)


async def _relay_quietly(call) -> None:
    """Tell the SM-DP+ about a card-side error; its own failure answer is expected and not news."""
    try:
        await call
    except (KinsimError, OSError) as exc:
        _log.info("the SM-DP+ answered the relayed error with: %s", exc)


async def _cancel_session(es10: Es10Client, es9: Es9Peer | None, transaction_id: bytes, reason: int) -> None:
    """ES10b.CancelSession, then ES9+.CancelSession with the card's signed answer; best effort both
    (the error that stopped the download is what the caller reports)."""
    try:
        response = es10.cancel_session(transaction_id, reason)
    except KinsimError as exc:
        _log.info("the eUICC did not cancel the session: %s", exc)
        return
    if es9 is None:
        return
    try:
        await es9.cancel_session(transaction_id=transaction_id, cancel_session_response=response)
    except (KinsimError, OSError) as exc:
        _log.info("the SM-DP+ did not take the cancellation: %s", exc)

