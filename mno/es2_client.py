"""The operator's side of ES2+ (SGP.22 5.3, JSON binding of section 6): a client for the SM-DP+'s
DownloadOrder, ConfirmOrder, CancelOrder and ReleaseProfile, and the parser for the
HandleDownloadProgressInfo requests the SM-DP+ sends back.

ES2+ runs over HTTPS with mutual authentication: the SM-DP+ knows the operator by its TLS client
certificate, whose subject matches the ``functionRequesterIdentifier`` we put in each request header.
Every request is a POST of a JSON object with ``header.functionRequesterIdentifier`` and
``header.functionCallIdentifier``; every response carries ``header.functionExecutionStatus``, and a
failure its ``statusCodeData`` (raised here as ``StatusCodeError`` with the spec's codes).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from mno.plans import ProgressEvent
from rsp import messages as m
from rsp import messages_v3 as v3_m
from rsp import rpm
from rsp.errors import DecodeError, KinsimError, StatusCodeError
from rsp.es9_json import ADMIN_PROTOCOL, CONTENT_TYPE, STATUS_SUCCESS, check_header
from rsp.ids import validate_eid, validate_iccid

ES2_PREFIX = "/gsma/rsp2/es2plus/"
DOWNLOAD_ORDER = ES2_PREFIX + "downloadOrder"  # 5.3.1
CONFIRM_ORDER = ES2_PREFIX + "confirmOrder"  # 5.3.2
CANCEL_ORDER = ES2_PREFIX + "cancelOrder"  # 5.3.3
RELEASE_PROFILE = ES2_PREFIX + "releaseProfile"  # 5.3.4
HANDLE_DOWNLOAD_PROGRESS_INFO = ES2_PREFIX + "handleDownloadProgressInfo"  # 5.3.5
RPM_ORDER = ES2_PREFIX + "rpmOrder"  # SGP.22 v3 remote profile management
UPLOAD_PROFILE = "/kinsim/es2plus/uploadProfile"  # kinsim extension: the profile hand-over
FINAL_AVAILABLE, FINAL_UNAVAILABLE = "Available", "Unavailable"  # finalProfileStatusIndicator
Rng = Callable[[int], bytes]


class Es2Unavailable(KinsimError):
    """The SM-DP+ could not be reached or answered with something that is not an ES2+ response."""


@dataclass(frozen=True)
class ConfirmedOrder:
    matching_id: str
    smdp_address: str | None
    eid: str | None


def client_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """TLS for ES2+: our client certificate, and only the given CA(s) for the SM-DP+'s certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    return context


class Es2Client:
    def __init__(self, base_url: str, requester_id: str, *, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = 30.0, rng: Rng = os.urandom):
        self.base_url = base_url.rstrip("/")
        self.requester_id = requester_id
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._rng = rng
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Es2Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, path: str, fields: dict[str, Any]) -> dict[str, Any]:
        body = {"header": {"functionRequesterIdentifier": self.requester_id,
                           "functionCallIdentifier": self._rng(8).hex()}}
        body.update({k: v for k, v in fields.items() if v is not None})
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Content-Type": CONTENT_TYPE, "X-Admin-Protocol": ADMIN_PROTOCOL}
        try:
            async with self._session.post(self.base_url + path, json=body, headers=headers,
                                          ssl=self._ssl if self._ssl is not None else True) as response:
                if response.status == 204:
                    return {}
                if response.status != 200:
                    raise Es2Unavailable(f"ES2+ {path.rsplit('/', 1)[-1]}: HTTP {response.status} from the SM-DP+")
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    raise Es2Unavailable(f"ES2+ {path.rsplit('/', 1)[-1]}: the SM-DP+ did not answer JSON") from None
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise Es2Unavailable(f"ES2+ {path.rsplit('/', 1)[-1]}: cannot reach the SM-DP+: {exc}") from None
        try:
            check_header(answer)
        except DecodeError as exc:
            raise Es2Unavailable(f"ES2+ {path.rsplit('/', 1)[-1]}: malformed response: {exc}") from None
        return answer

    async def download_order(self, *, iccid: str | None = None, eid: str | None = None,
                             profile_type: str | None = None) -> str:
        """5.3.1: reserve the profile (by ICCID or type), linked to ``eid`` when given; returns its ICCID."""
        answer = await self._call(DOWNLOAD_ORDER, {"eid": eid, "iccid": iccid, "profileType": profile_type})
        return _text(answer, "iccid")

    async def confirm_order(self, *, iccid: str, matching_id: str | None = None, eid: str | None = None,
                            confirmation_code: str | None = None, smds_address: str | None = None,
                            release_flag: bool = True) -> ConfirmedOrder:
        """5.3.2: fix the matching ID and confirmation code; ``smds_address`` asks the SM-DP+ to register
        an event for ``eid`` there (ES12); ``release_flag`` makes it downloadable at once."""
        answer = await self._call(CONFIRM_ORDER, {
            "iccid": iccid, "eid": eid, "matchingId": matching_id, "confirmationCode": confirmation_code,
            "smdsAddress": smds_address, "releaseFlag": release_flag})  # fmt: skip
        return ConfirmedOrder(_text(answer, "matchingId"), _optional_text(answer, "smdpAddress"),
                              _optional_text(answer, "eid"))

    async def cancel_order(self, *, iccid: str, final_status: str = FINAL_UNAVAILABLE, eid: str | None = None,
                           matching_id: str | None = None) -> None:
        """5.3.3: end the order; "Unavailable" keeps the ICCID from ever being ordered again."""
        await self._call(CANCEL_ORDER, {"iccid": iccid, "eid": eid, "matchingId": matching_id,
                                        "finalProfileStatusIndicator": final_status})

    async def release_profile(self, *, iccid: str) -> None:
        """5.3.4: a confirmed order becomes downloadable."""
        await self._call(RELEASE_PROFILE, {"iccid": iccid})

    async def rpm_order(self, *, eid: str, rpm_script: bytes, iccid: str | None = None,
                        matching_id: str | None = None, smds_address: str | None = None) -> str:
        """v3 RpmOrder: the RPM package (RpmPackage DER) for the eUICC's next contact; with
        ``smds_address`` the SM-DP+ registers the event there. Returns the matching ID (EventID)."""
        answer = await self._call(RPM_ORDER, {
            "eid": eid, "iccid": iccid, "rpmScript": base64.b64encode(rpm_script).decode("ascii"),
            "matchingId": matching_id, "rootSmdsAddress": smds_address})  # fmt: skip
        return _text(answer, "matchingId")

    async def upload_profile(self, *, package: bytes, profile_type: str, service_provider_name: str,
                             profile_name: str) -> str:
        """kinsim's hand-over on the ES2+ listener: a personalised package into the SM-DP+'s inventory."""
        answer = await self._call(UPLOAD_PROFILE, {
            "profileType": profile_type, "serviceProviderName": service_provider_name, "profileName": profile_name,
            "profilePackage": base64.b64encode(package).decode("ascii")})  # fmt: skip
        return _text(answer, "iccid")


def _text(answer: dict, name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str):
        raise Es2Unavailable(f"ES2+ response lacks {name}")
    return value


def _optional_text(answer: dict, name: str) -> str | None:
    return _text(answer, name) if answer.get(name) is not None else None


# --- HandleDownloadProgressInfo, received from the SM-DP+ (5.3.5) -----------------------------------

_OPERATIONS = {"notificationInstall": "install", "notificationEnable": "enable", "notificationDisable": "disable",
               "notificationDelete": "delete", "notificationRpmEnable": "enable", "notificationRpmDisable": "disable",
               "notificationRpmDelete": "delete"}


def parse_progress_info(body: Any) -> tuple[str, ProgressEvent]:
    """The requester identifier and the event of a HandleDownloadProgressInfo request.

    Raises DecodeError for malformed input. ``resultData`` (base64 of a
    ProfileInstallationResult, or of the eUICC's signed enable/disable/delete notification or v3
    LoadRpmPackageResult when the SM-DP+ forwards one) tells which profile operation happened; the
    SM-DP+ has verified its signature.
    """
    if not isinstance(body, dict) or not isinstance(body.get("header"), dict):
        raise DecodeError("the request has no header")
    requester = body["header"].get("functionRequesterIdentifier")
    if not isinstance(requester, str) or not requester:
        raise DecodeError("header.functionRequesterIdentifier is missing")
    iccid = _field(body, "iccid", str)
    iccid = iccid[:-1] if len(iccid) == 20 and iccid[-1] in "fF" else iccid
    try:
        validate_iccid(iccid)
    except DecodeError as exc:
        raise DecodeError(f"iccid: {exc}") from None
    _field(body, "profileType", str)
    _field(body, "timestamp", str)
    point = _field(body, "notificationPointId", int)
    success, reason = _point_status(_field(body, "notificationPointStatus", dict))
    eid = body.get("eid")
    if eid is not None:
        if not isinstance(eid, str):
            raise DecodeError("eid must be a JSON string")
        validate_eid(eid)
    operation, install_ok = _result_data(body.get("resultData"), iccid)
    return requester, ProgressEvent(iccid, point, success, eid, reason, operation, install_ok)


def _field(body: dict, name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        raise DecodeError(f"mandatory field {name} is missing")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(f"{name} has the wrong JSON type")
    return value


_STATUS_CODE = re.compile(r"[0-9.]{0,16}")


def _point_status(status: dict) -> tuple[bool, str | None]:
    value = status.get("status")
    if not isinstance(value, str):
        raise DecodeError("notificationPointStatus.status is missing")
    if value.startswith("Executed"):
        return True, None
    data = status.get("statusCodeData") or {}
    if not isinstance(data, dict):
        raise DecodeError("notificationPointStatus.statusCodeData must be an object")
    codes = [data.get(name, "") for name in ("subjectCode", "reasonCode")]
    if not all(isinstance(code, str) and _STATUS_CODE.fullmatch(code) for code in codes):
        raise DecodeError("subjectCode and reasonCode are dotted numbers (SGP.22 5.2.6)")  # they reach the audit log
    return False, "/".join(codes)


def _result_data(raw: Any, iccid: str) -> tuple[str | None, bool | None]:
    """(operation, installation ok) from resultData; (None, None) when absent. A v3 LoadRpmPackageResult
    reads as "delete" when the eUICC reports ``iccid`` deleted, else "rpm"."""
    if raw is None:
        return None, None
    if not isinstance(raw, str):
        raise DecodeError("resultData must be a base64 string")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("resultData is not valid base64") from None
    if data[:2] == b"\xbf\x37":
        pir = m.decode(m.ProfileInstallationResult, data)["profileInstallationResultData"]
        return "install", pir["finalResult"].name == "successResult"
    if data[:1] == b"\x30":
        tbs = m.decode(m.OtherSignedNotification, data)["tbsOtherNotification"]
    else:
        pending = m.decode(v3_m.PendingNotification, data)
        if pending.name == "profileInstallationResult":
            return "install", pending.chosen["profileInstallationResultData"]["finalResult"].name == "successResult"
        if pending.name == "loadRpmPackageResultSigned":  # v3: an RPM package the eUICC ran for us
            data_signed = pending.chosen["loadRpmPackageResultDataSigned"]
            return ("delete" if iccid in rpm.deleted_iccids(data_signed) else "rpm"), None
        tbs = v3_m.notification_metadata(pending)
    tbs = m.decode(v3_m.NotificationMetadata, tbs.dump())
    operations = [op for op in tbs["profileManagementOperation"].native if op in _OPERATIONS]
    if len(operations) != 1:
        raise DecodeError("a notification names exactly one profile management operation")
    return _OPERATIONS[operations[0]], None


def success_body() -> dict[str, Any]:
    return {"header": {"functionExecutionStatus": {"status": STATUS_SUCCESS}}}


__all__ = [
    "CANCEL_ORDER", "CONFIRM_ORDER", "ConfirmedOrder", "DOWNLOAD_ORDER", "Es2Client", "Es2Unavailable",
    "FINAL_AVAILABLE", "FINAL_UNAVAILABLE", "HANDLE_DOWNLOAD_PROGRESS_INFO", "RELEASE_PROFILE", "StatusCodeError",
    "client_ssl_context", "parse_progress_info", "success_body",
]
