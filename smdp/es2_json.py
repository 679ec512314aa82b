"""The HTTP/JSON binding of ES2+ (SGP.22 5.3 functions over the section 6 binding).

Requests carry ``header.functionRequesterIdentifier`` and ``header.functionCallIdentifier``;
responses carry ``header.functionExecutionStatus`` exactly as in ES9+ (``rsp.es9_json``), with
``statusCodeData`` on failure. The SM-DP+ serves DownloadOrder, ConfirmOrder, CancelOrder and
ReleaseProfile, the v3 RpmOrder and the kinsim uploadProfile hand-over, and calls the operator's
HandleDownloadProgressInfo.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rsp.errors import DecodeError, StatusCodeError
from rsp.es9_json import MissingField, check_header, success_header

ES2 = "/gsma/rsp2/es2plus/"

TEXT, BOOL, INT, OBJECT = str, bool, int, dict


@dataclass(frozen=True)
class Es2Field:
    name: str  # JSON member name
    arg: str  # keyword of the Python function it feeds
    kind: type = TEXT
    optional: bool = False


@dataclass(frozen=True)
class Es2Function:
    name: str
    path: str
    request: tuple[Es2Field, ...]
    response: tuple[Es2Field, ...] = ()


@dataclass(frozen=True)
class RequestHeader:
    function_requester_identifier: str
    function_call_identifier: str


_ICCID = Es2Field("iccid", "iccid")
_EID = Es2Field("eid", "eid", optional=True)

DOWNLOAD_ORDER = Es2Function(
    "downloadOrder", ES2 + "downloadOrder",
    request=(_EID, Es2Field("iccid", "iccid", optional=True), Es2Field("profileType", "profile_type", optional=True)),
    response=(_ICCID,),
)
CONFIRM_ORDER = Es2Function(
    "confirmOrder", ES2 + "confirmOrder",
    request=(_ICCID, _EID, Es2Field("matchingId", "matching_id", optional=True),
             Es2Field("confirmationCode", "confirmation_code", optional=True),
             Es2Field("smdsAddress", "smds_address", optional=True), Es2Field("releaseFlag", "release_flag", BOOL)),
    response=(_EID, Es2Field("matchingId", "matching_id"), Es2Field("smdpAddress", "smdp_address", optional=True)),
)
CANCEL_ORDER = Es2Function(
    "cancelOrder", ES2 + "cancelOrder",
    request=(_ICCID, _EID, Es2Field("matchingId", "matching_id", optional=True),
             Es2Field("finalProfileStatusIndicator", "final_status")),
)
RELEASE_PROFILE = Es2Function("releaseProfile", ES2 + "releaseProfile", request=(_ICCID,))
HANDLE_DOWNLOAD_PROGRESS_INFO = Es2Function(
    "handleDownloadProgressInfo", ES2 + "handleDownloadProgressInfo",
    request=(_EID, _ICCID, Es2Field("profileType", "profile_type"), Es2Field("timestamp", "timestamp"),
             Es2Field("notificationPointId", "point", INT), Es2Field("notificationPointStatus", "status", OBJECT),
             Es2Field("resultData", "result_data", optional=True), Es2Field("imei", "imei", optional=True)),
)

# SGP.22 v3 ES2+.RpmOrder: rpmScript is base64 of an RpmPackage (DER); the answer names the matching ID
# (the EventID the eUICC's LPA presents). Member names as kinsim reads v3; not checked against its text.
RPM_ORDER = Es2Function(
    "rpmOrder", ES2 + "rpmOrder",
    request=(Es2Field("eid", "eid"), Es2Field("iccid", "iccid", optional=True), Es2Field("rpmScript", "rpm_script"),
             Es2Field("matchingId", "matching_id", optional=True),
             Es2Field("rootSmdsAddress", "smds_address", optional=True)),
    response=(Es2Field("matchingId", "matching_id"),),
)
# kinsim extension, outside the GSMA paths: an operator hands a personalised profile package (base64
# of the SAIP DER) to the SM-DP+'s inventory; SGP.22 assumes profiles are already there.
UPLOAD_PROFILE = Es2Function(
    "uploadProfile", "/kinsim/es2plus/uploadProfile",
    request=(Es2Field("profileType", "profile_type"), Es2Field("profilePackage", "package"),
             Es2Field("serviceProviderName", "service_provider_name", optional=True),
             Es2Field("profileName", "profile_name", optional=True)),
    response=(_ICCID,),
)

SMDP_FUNCTIONS = {f.path: f for f in (DOWNLOAD_ORDER, CONFIRM_ORDER, CANCEL_ORDER, RELEASE_PROFILE, RPM_ORDER,
                                      UPLOAD_PROFILE)}


_KIND_NAMES = {TEXT: "string", BOOL: "boolean", INT: "number", OBJECT: "object"}


def _check_kind(field: Es2Field, value: Any) -> Any:
    # bool is a subclass of int in Python: a JSON true must not pass as a number.
    if not isinstance(value, field.kind) or (field.kind is INT and isinstance(value, bool)):
        raise DecodeError(f"{field.name} must be a JSON {_KIND_NAMES[field.kind]}")
    return value


def decode_header(body: Any) -> RequestHeader:
    if not isinstance(body, dict):
        raise DecodeError("the JSON body must be an object")
    header = body.get("header")
    if not isinstance(header, dict):
        raise MissingField("header")
    values = []
    for name in ("functionRequesterIdentifier", "functionCallIdentifier"):
        if name not in header:
            raise MissingField(f"header.{name}")
        if not isinstance(header[name], str) or not header[name]:
            raise DecodeError(f"header.{name} must be a non-empty JSON string")
        values.append(header[name])
    return RequestHeader(*values)


def decode_request(function: Es2Function, body: Any) -> tuple[RequestHeader, dict[str, Any]]:
    """The request header and the function's arguments by Python keyword; DecodeError on bad input."""
    header = decode_header(body)
    args = {}
    for field in function.request:
        if field.name not in body or body[field.name] is None:
            if not field.optional:
                raise MissingField(field.name)
            continue
        args[field.arg] = _check_kind(field, body[field.name])
    return header, args


def encode_request(function: Es2Function, header: RequestHeader, args: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"header": {"functionRequesterIdentifier": header.function_requester_identifier,
                                       "functionCallIdentifier": header.function_call_identifier}}
    for field in function.request:
        if args.get(field.arg) is not None:
            body[field.name] = args[field.arg]
        elif not field.optional:
            raise ValueError(f"{field.name} is required")  # programming error, not input
    return body


def encode_response(function: Es2Function, values: dict[str, Any]) -> dict[str, Any]:
    """Success response; ``values`` are keyed by JSON member name, None members are left out."""
    body: dict[str, Any] = {"header": success_header()}
    for field in function.response:
        if values.get(field.name) is not None:
            body[field.name] = values[field.name]
    return body


def decode_response(function: Es2Function, body: Any) -> dict[str, Any]:
    """Raise StatusCodeError for a failure header; else the response members by JSON name."""
    check_header(body)
    out = {}
    for field in function.response:
        if field.name in body:
            out[field.name] = _check_kind(field, body[field.name])
        elif not field.optional:
            raise MissingField(field.name)
    return out


def base64_field(name: str, text: str) -> bytes:
    """A binary member (rpmScript, profilePackage): base64 of the DER."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{name} is not valid base64") from None


def format_timestamp(moment: datetime) -> str:
    """SGP.22 time format: YYYY-MM-DDThh:mm:ssZ in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def progress_info(*, requester_id: str, call_id: str, iccid: str, profile_type: str, eid: str | None,
                  timestamp: datetime, point: int, error: StatusCodeError | None = None,
                  result_data: bytes | None = None) -> dict[str, Any]:
    """The body of ES2+.HandleDownloadProgressInfo (SGP.22 5.3.5) as the SM-DP+ sends it."""
    if error is None:
        point_status: dict[str, Any] = {"status": "Executed-Success"}
    else:
        point_status = {"status": "Failed", "statusCodeData": {
            "subjectCode": error.subject_code, "reasonCode": error.reason_code, "message": error.message}}
    args = {"eid": eid, "iccid": iccid, "profile_type": profile_type, "timestamp": format_timestamp(timestamp),
            "point": point, "status": point_status,
            "result_data": base64.b64encode(result_data).decode("ascii") if result_data else None}
    return encode_request(HANDLE_DOWNLOAD_PROGRESS_INFO, RequestHeader(requester_id, call_id), args)

