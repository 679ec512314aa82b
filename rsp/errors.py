"""One error vocabulary for every role (SGP.22 section 5.2.6 status codes, ES10 result enums).

Cores raise these; each edge maps them to its wire form (statusCodeData in ES9+/ES2+ JSON, an ES10
response enum, an ISO 7816 status word) and to a sentence for people via ``str(error)``.
"""

from __future__ import annotations

from dataclasses import dataclass

# SGP.22 section 5.2.6.1 subject codes and 5.2.6.2 reason codes (names as the spec gives them).
SUBJECT_CODES = {
    "1": "Generic",
    "1.1": "Function Requester",
    "1.2": "Function Provider",
    "1.3": "Protocol",
    "1.3.1": "Protocol Format",
    "1.3.2": "Protocol Version",
    "1.6": "Function",
    "8": "eUICC Remote Provisioning",
    "8.1": "eUICC",
    "8.1.1": "EID",
    "8.1.2": "EUM Certificate",
    "8.1.3": "eUICC Certificate",
    "8.2": "Profile",
    "8.2.1": "Profile ICCID",
    "8.2.5": "Profile Type",
    "8.2.6": "Matching ID",
    "8.2.7": "Confirmation Code",
    "8.2.8": "PPR",
    "8.2.9": "Profile Metadata",
    "8.2.10": "Bound Profile Package",
    "8.8": "SM-DP+",
    "8.8.1": "SM-DP+ Address",
    "8.8.2": "Security configuration",
    "8.8.3": "Specification Version Number (SVN)",
    "8.8.4": "SM-DP+ Certificate",
    "8.8.5": "Download order",
    "8.9": "SM-DS",
    "8.9.1": "SM-DS Address",
    "8.9.5": "Event Record",
    "8.10": "RSP Operation",
    "8.10.1": "TransactionId",
    "8.11": "eSIM CA",
    "8.11.1": "Public Key (PK)",
}

REASON_CODES = {
    "1.1": "Unknown (Identification or Authentication)",
    "1.2": "Not Allowed (Authorisation)",
    "2.1": "Invalid",
    "2.2": "Mandatory Element Missing",
    "2.3": "Conditional Element Missing",
    "3.1": "Unsupported",
    "3.3": "Already in Use (Uniqueness)",
    "3.5": "Invalid transition",
    "3.7": "Unavailable",
    "3.8": "Refused",
    "3.9": "Unknown",
    "3.10": "Invalid Association",
    "4.2": "Execution Error",
    "4.8": "Insufficient Memory",
    "4.10": "Time to Live Expired",
    "5.1": "Inaccessible",
    "6.1": "Verification Failed",
    "6.3": "Expired",
    "6.4": "Maximum number of attempts exceeded",
}


class KinsimError(Exception):
    """Base of every error kinsim raises on purpose; ``str()`` is a sentence for people."""


class DecodeError(KinsimError, ValueError):
    """Input that is not a well-formed encoding of the expected type (ASN.1, TLV, JSON, SAIP)."""


@dataclass(frozen=True)
class StatusCode:
    """A subjectCode/reasonCode pair of SGP.22 section 5.2.6."""

    subject: str
    reason: str

    def describe(self) -> str:
        subject = SUBJECT_CODES.get(self.subject, "unknown subject")
        reason = REASON_CODES.get(self.reason, "unknown reason")
        return f"{self.subject} {subject} / {self.reason} {reason}"


class StatusCodeError(KinsimError):
    """An ES9+/ES2+/ES11/ES12 function failed with a statusCodeData (SGP.22 section 6.5.1.4)."""

    def __init__(self, code: StatusCode, message: str, subject_identifier: str | None = None):
        super().__init__(f"{message} [{code.describe()}]")
        self.code = code
        self.message = message
        self.subject_identifier = subject_identifier

    @property
    def subject_code(self) -> str:
        return self.code.subject

    @property
    def reason_code(self) -> str:
        return self.code.reason


class Es10Error(KinsimError):
    """An ES10 function answered with one of its error enums (SGP.22 section 5.7)."""

    def __init__(self, function: str, code: int, name: str, detail: str = ""):
        text = f"{function} failed: {name} ({code})"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.function = function
        self.code = code
        self.name = name
        self.detail = detail


class BppError(KinsimError):
    """Installing a Bound Profile Package failed: ProfileInstallationResult errorResult (5.7.6)."""

    def __init__(self, bpp_command_id: int, error_reason: int, detail: str = ""):
        from rsp.status import describe_bpp_error  # local: status imports this module

        super().__init__(describe_bpp_error(bpp_command_id, error_reason, detail))
        self.bpp_command_id = bpp_command_id
        self.error_reason = error_reason
        self.detail = detail


class CertificateError(KinsimError):
    """A certificate or chain does not satisfy the SGP.22 certificate profile (section 4.5)."""

    def __init__(self, reason: str, expired: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


class ApduError(KinsimError):
    """A card answered an APDU with an unexpected status word."""

    def __init__(self, sw: int, message: str):
        super().__init__(f"{message} (SW {sw:04X})")
        self.sw = sw
