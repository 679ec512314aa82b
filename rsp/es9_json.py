"""The HTTP/JSON binding of ES9+ and ES11 (SGP.22 section 6.5 and 6.6), shared by server and client.

Binary fields travel as base64 of the complete DER data object, tag and length included
(serverSignature1 is base64('5F37 40 <r||s>'), euiccCiPKIdToBeUsed is base64('04 14 <keyId>'));
euiccChallenge is base64 of the raw 16 bytes; transactionId is upper-case hex. Responses carry
``header.functionExecutionStatus``; a failure carries ``statusCodeData`` (6.5.1.4).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from asn1crypto import core, x509

from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.errors import DecodeError, StatusCode, StatusCodeError

ADMIN_PROTOCOL = "gsma/rsp/v2.5.0"  # X-Admin-Protocol value we send (6.5.1)
CONTENT_TYPE = "application/json;charset=UTF-8"
USER_AGENT = "gsma-rsp-lpad"  # 6.5.1: the LPA's User-Agent
STATUS_SUCCESS = "Executed-Success"
STATUS_FAILED = "Failed"


class Signature(core.OctetString):
    """A signature data object as it travels in JSON: [APPLICATION 55] '5F37'."""

    class_, tag = 1, 55


# Field kinds: how a value travels in JSON.
TLV = "tlv"  # base64 of a DER data object, decoded into an ASN.1 type
RAW = "raw"  # base64 of raw bytes
HEX = "hex"  # upper-case hex string of raw bytes (transactionId)
TEXT = "text"  # a JSON string


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    spec: type | None = None
    optional: bool = False


@dataclass(frozen=True)
class Function:
    name: str
    path: str
    request: tuple[Field, ...]
    response: tuple[Field, ...]
    empty_response_status: int | None = None  # HandleNotification answers 204 with no body


ES9 = "/gsma/rsp2/es9plus/"
ES11 = "/gsma/rsp2/es11/"

_TID = Field("transactionId", HEX)

INITIATE_AUTHENTICATION = Function(
    "initiateAuthentication", ES9 + "initiateAuthentication",
    request=(Field("euiccChallenge", RAW), Field("euiccInfo1", TLV, m.EUICCInfo1), Field("smdpAddress", TEXT)),
    response=(_TID, Field("serverSigned1", TLV, m.ServerSigned1), Field("serverSignature1", TLV, Signature),
              Field("euiccCiPKIdToBeUsed", TLV, core.OctetString), Field("serverCertificate", TLV, x509.Certificate)),
)
AUTHENTICATE_CLIENT = Function(
    "authenticateClient", ES9 + "authenticateClient",
    request=(_TID, Field("authenticateServerResponse", TLV, m.AuthenticateServerResponse)),
    response=(_TID, Field("profileMetadata", TLV, m.StoreMetadataRequest), Field("smdpSigned2", TLV, m.SmdpSigned2),
              Field("smdpSignature2", TLV, Signature), Field("smdpCertificate", TLV, x509.Certificate)),
)
# v3 (5.6.3): AuthenticateClient answered with an RPM package instead of profile metadata.
AUTHENTICATE_CLIENT_RPM = Function(
    "authenticateClient", ES9 + "authenticateClient",
    request=AUTHENTICATE_CLIENT.request,
    response=(_TID, Field("smdpSigned3", TLV, v3.SmdpSigned3), Field("smdpSignature3", TLV, Signature)),
)


def authenticate_client_answer(values: dict[str, Any]) -> Function:
    """The binding of an AuthenticateClient answer (values or JSON document): v3 RPM or download."""
    return AUTHENTICATE_CLIENT_RPM if "smdpSigned3" in values else AUTHENTICATE_CLIENT


GET_BOUND_PROFILE_PACKAGE = Function(
    "getBoundProfilePackage", ES9 + "getBoundProfilePackage",
    request=(_TID, Field("prepareDownloadResponse", TLV, m.PrepareDownloadResponse)),
    response=(_TID, Field("boundProfilePackage", TLV, m.BoundProfilePackage)),
)
HANDLE_NOTIFICATION = Function(
    "handleNotification", ES9 + "handleNotification",
    request=(Field("pendingNotification", TLV, v3.PendingNotification),),  # v2 alternatives + v3 RPM result
    response=(),
    empty_response_status=204,
)
CANCEL_SESSION = Function(
    "cancelSession", ES9 + "cancelSession",
    request=(_TID, Field("cancelSessionResponse", TLV, m.CancelSessionResponse)),
    response=(),
)
ES11_INITIATE_AUTHENTICATION = Function(
    "es11.initiateAuthentication", ES11 + "initiateAuthentication",
    request=INITIATE_AUTHENTICATION.request, response=INITIATE_AUTHENTICATION.response,
)
ES11_AUTHENTICATE_CLIENT = Function(
    "es11.authenticateClient", ES11 + "authenticateClient",
    request=(_TID, Field("authenticateServerResponse", TLV, m.AuthenticateServerResponse)),
    response=(_TID, Field("eventEntries", TLV, m.EventEntriesList)),
)

ES9_FUNCTIONS = {f.path: f for f in (INITIATE_AUTHENTICATION, AUTHENTICATE_CLIENT, GET_BOUND_PROFILE_PACKAGE,
                                     HANDLE_NOTIFICATION, CANCEL_SESSION)}
ES11_FUNCTIONS = {f.path: f for f in (ES11_INITIATE_AUTHENTICATION, ES11_AUTHENTICATE_CLIENT)}


# --- encoding ---------------------------------------------------------------------------------------


def _encode_field(field: Field, value: Any) -> Any:
    if field.kind == TLV:
        data = value if isinstance(value, bytes | bytearray) else value.dump()
        return base64.b64encode(data).decode("ascii")
    if field.kind == RAW:
        return base64.b64encode(value).decode("ascii")
    if field.kind == HEX:
        return bytes(value).hex().upper()
    return str(value)


def _encode_fields(fields: tuple[Field, ...], values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for field in fields:
        value = values.get(field.name)
        if value is None:
            if not field.optional:
                raise ValueError(f"{field.name} is required")  # programming error, not input
            continue
        out[field.name] = _encode_field(field, value)
    return out


def encode_request(function: Function, values: dict[str, Any]) -> dict[str, Any]:
    return _encode_fields(function.request, values)


def success_header() -> dict[str, Any]:
    return {"functionExecutionStatus": {"status": STATUS_SUCCESS}}


def encode_response(function: Function, values: dict[str, Any]) -> dict[str, Any]:
    return {"header": success_header(), **_encode_fields(function.response, values)}


def encode_error(error: StatusCodeError) -> dict[str, Any]:
    status_code_data = {"subjectCode": error.subject_code, "reasonCode": error.reason_code,
                        "message": error.message}
    if error.subject_identifier:
        status_code_data["subjectIdentifier"] = error.subject_identifier
    return {"header": {"functionExecutionStatus": {"status": STATUS_FAILED, "statusCodeData": status_code_data}}}


# --- decoding ---------------------------------------------------------------------------------------


def _decode_field(field: Field, raw: Any) -> Any:
    if field.kind == TEXT:
        if not isinstance(raw, str):
            raise DecodeError(f"{field.name} must be a JSON string")
        return raw
    if not isinstance(raw, str):
        raise DecodeError(f"{field.name} must be a JSON string")
    if field.kind == HEX:
        try:
            data = bytes.fromhex(raw)
        except ValueError:
            raise DecodeError(f"{field.name} is not a hex string") from None
        if not 1 <= len(data) <= 16:
            raise DecodeError(f"{field.name} must be 1..16 bytes")
        return data
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{field.name} is not valid base64") from None
    if field.kind == RAW:
        return data
    return m.decode(field.spec, data)


def _decode_fields(fields: tuple[Field, ...], body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise DecodeError("the JSON body must be an object")
    out = {}
    for field in fields:
        if field.name not in body:
            if field.optional:
                continue
            raise MissingField(field.name)
        try:
            out[field.name] = _decode_field(field, body[field.name])
        except DecodeError as exc:
            raise DecodeError(f"{field.name}: {exc}") from None
    return out


class MissingField(DecodeError):
    def __init__(self, name: str):
        super().__init__(f"mandatory field {name} is missing")
        self.field = name


def decode_request(function: Function, body: Any) -> dict[str, Any]:
    """Decode a request body; DecodeError (MissingField for an absent field) on bad input."""
    return _decode_fields(function.request, body)


def check_header(body: Any) -> None:
    """Raise StatusCodeError if a response header reports failure (DecodeError if malformed)."""
    if not isinstance(body, dict) or not isinstance(body.get("header"), dict):
        raise DecodeError("response has no header")
    status = body["header"].get("functionExecutionStatus")
    if not isinstance(status, dict) or not isinstance(status.get("status"), str):
        raise DecodeError("response header has no functionExecutionStatus.status")
    if status["status"] == STATUS_FAILED:
        data = status.get("statusCodeData") or {}
        code = StatusCode(str(data.get("subjectCode", "")), str(data.get("reasonCode", "")))
        raise StatusCodeError(code, str(data.get("message") or "the server reported a failure"),
                              data.get("subjectIdentifier"))
    if not status["status"].startswith("Executed"):
        raise DecodeError(f"unknown functionExecutionStatus {status['status']!r}")


def decode_response(function: Function, body: Any) -> dict[str, Any]:
    check_header(body)
    return _decode_fields(function.response, body)
