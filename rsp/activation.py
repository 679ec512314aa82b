"""Activation Codes (SGP.22 v2.5 section 4.1) and the Confirmation Code hash.

An Activation Code is ``AC_Format $ SM-DP+ Address $ AC_Token [$ SM-DP+ OID [$ CC Required Flag]]``:

- AC_Format is "1"; the delimiter is "$".
- SM-DP+ Address is the FQDN of the SM-DP+ (no scheme). kinsim extension, for servers on loopback
  test ports: an optional ":port" suffix and the host name "localhost" are accepted (as lpac and
  osmo-smdpp deployments use them); a strictly conformant code never needs either.
- AC_Token is the Matching ID: upper-case alphanumerics and "-" only; it may be empty.
- The third delimiter is present only if an OID or the CC flag follows; the fourth only if the CC flag
  follows. So the OID may be empty only when the flag is present.
- SM-DP+ OID is the OID of the SM-DP+ in CERT.DPauth.ECDSA, in dotted decimal notation.
- The Confirmation Code Required Flag is "1" when present; it is absent otherwise.
- The whole Activation Code is at most 255 characters.
Section 4.1.1: carried in a QR code (ISO/IEC 18004) it is prefixed with "LPA:".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rsp.errors import DecodeError

AC_FORMAT = "1"
DELIMITER = "$"
QR_PREFIX = "LPA:"
MAX_LENGTH = 255  # characters of the Activation Code, prefix not counted
MAX_FIELDS = 5

# RFC 1035 2.3.1 / RFC 1123 2.1 host name labels: letters, digits, hyphens, not at either end.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_FQDN = 253  # RFC 1035 2.3.4: 255 octets on the wire, i.e. 253 characters written out
_MATCHING_ID = re.compile(r"[0-9A-Z-]*")
_ARC = re.compile(r"0|[1-9][0-9]*")


class ActivationCodeError(DecodeError):
    """An Activation Code breaks a rule of SGP.22 4.1; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"Activation Code {field}: {message}")
        self.field = field


LOOPBACK_NAME = "localhost"


def _check_address(address: str) -> None:
    field = "SM-DP+ Address"
    if not address:
        raise ActivationCodeError(field, "is mandatory and must not be empty")
    host, colon, port = address.partition(":")
    if colon:
        if not (port.isdigit() and not port.startswith("0") and 1 <= int(port) <= 65535):
            raise ActivationCodeError(field, f"port {port!r} of {address!r} is not a number from 1 to 65535")
        address = host
    if address == LOOPBACK_NAME:
        return
    if len(address) > _MAX_FQDN:
        raise ActivationCodeError(field, f"is {len(address)} characters; an FQDN has at most {_MAX_FQDN}")
    labels = address.split(".")
    if len(labels) < 2:
        raise ActivationCodeError(field, f"{address!r} is not a fully qualified domain name (needs a dot)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ActivationCodeError(
                field,
                f"label {label!r} of {address!r} is not 1-63 letters, digits or inner hyphens (RFC 1123)",
            )
    if labels[-1].isdigit():
        raise ActivationCodeError(field, f"{address!r} has an all-numeric top-level label; IP addresses are not FQDNs")


def _check_matching_id(matching_id: str) -> None:
    if not _MATCHING_ID.fullmatch(matching_id):
        bad = sorted({ch for ch in matching_id if not _MATCHING_ID.fullmatch(ch)})
        raise ActivationCodeError(
            "AC_Token (Matching ID)", f"may hold only 0-9, A-Z and '-'; found {''.join(bad)!r}"
        )


def _check_oid(oid: str) -> None:
    field = "SM-DP+ OID"
    arcs = oid.split(".")
    if len(arcs) < 2 or not all(_ARC.fullmatch(arc) for arc in arcs):
        raise ActivationCodeError(
            field, f"{oid!r} is not dotted decimal with at least two arcs and no leading zeros"
        )
    first, second = int(arcs[0]), int(arcs[1])
    if first > 2:
        raise ActivationCodeError(field, f"{oid!r}: the first arc must be 0, 1 or 2 (X.660)")
    if first < 2 and second > 39:
        raise ActivationCodeError(field, f"{oid!r}: under arc {first} the second arc must be 0-39 (X.660)")


@dataclass(frozen=True)
class ActivationCode:
    smdp_address: str
    matching_id: str = ""
    smdp_oid: str | None = None
    cc_required: bool = False

    def __post_init__(self) -> None:
        _check_address(self.smdp_address)
        _check_matching_id(self.matching_id)
        if self.smdp_oid is not None:
            _check_oid(self.smdp_oid)
        text = self.to_text(prefix=False)
        if len(text) > MAX_LENGTH:
            raise ActivationCodeError("length", f"is {len(text)} characters; the maximum is {MAX_LENGTH}")

    def to_text(self, prefix: bool = True) -> str:
        """The Activation Code string; with ``prefix`` the "LPA:" form for QR codes (4.1.1)."""
        fields = [AC_FORMAT, self.smdp_address, self.matching_id]
        if self.smdp_oid is not None or self.cc_required:
            fields.append(self.smdp_oid or "")
        if self.cc_required:
            fields.append("1")
        text = DELIMITER.join(fields)
        return QR_PREFIX + text if prefix else text

    def __str__(self) -> str:
        return self.to_text(prefix=True)


def parse_activation_code(text: str) -> ActivationCode:
    """Parse an Activation Code with or without the "LPA:" prefix; ActivationCodeError if invalid."""
    body = text[len(QR_PREFIX) :] if text.startswith(QR_PREFIX) else text
    if len(body) > MAX_LENGTH:
        raise ActivationCodeError("length", f"is {len(body)} characters; the maximum is {MAX_LENGTH}")
    fields = body.split(DELIMITER)
    if fields[0] != AC_FORMAT:
        raise ActivationCodeError("AC_Format", f"must be {AC_FORMAT!r}, found {fields[0]!r}")
    if len(fields) < 3:
        missing = "SM-DP+ Address" if len(fields) < 2 else "AC_Token (Matching ID)"
        raise ActivationCodeError(missing, "is mandatory, with the '$' delimiter before it, but is missing")
    if len(fields) > MAX_FIELDS:
        raise ActivationCodeError(
            "structure", f"has {len(fields)} '$'-separated fields; SGP.22 v2.5 defines at most {MAX_FIELDS}"
        )
    oid = fields[3] if len(fields) > 3 else None
    flag = fields[4] if len(fields) > 4 else None
    if flag is not None and flag != "1":
        raise ActivationCodeError("Confirmation Code Required Flag", f"must be '1' when present, found {flag!r}")
    if oid == "" and flag is None:
        raise ActivationCodeError(
            "SM-DP+ OID", "is empty although no Confirmation Code Required Flag follows (stray '$')"
        )
    return ActivationCode(
        smdp_address=fields[1], matching_id=fields[2], smdp_oid=oid or None, cc_required=flag == "1"
    )


def hash_confirmation_code(code: str, transaction_id: bytes) -> bytes:
    """Hashed Confirmation Code = SHA-256(SHA-256(Confirmation Code) | TransactionID) (SGP.22 3.1.3)."""
    if not 1 <= len(transaction_id) <= 16:
        raise DecodeError(f"transactionId must be 1 to 16 bytes, got {len(transaction_id)}")
    inner = hashlib.sha256(code.encode("utf-8")).digest()
    return hashlib.sha256(inner + transaction_id).digest()
