"""Named status codes of SGP.22 (section 5.6 for ES9+, 5.3 for ES2+, 5.7 for ES10 enums).

Each role raises ``StatusCodeError(status.X, "message")`` or ``Es10Error`` with the enum values here,
so the same pair is never typed twice.
"""

from __future__ import annotations

from rsp import messages as m
from rsp.errors import StatusCode

# --- ES9+ / ES2+ subjectCode/reasonCode pairs (SGP.22 sections 5.3 and 5.6) -----------------------
INVALID_SMDP_ADDRESS = StatusCode("8.8.1", "3.8")
SECURITY_CONFIG_UNSUPPORTED = StatusCode("8.8.2", "3.1")
SVN_UNSUPPORTED = StatusCode("8.8.3", "3.1")
CI_PK_UNKNOWN = StatusCode("8.11.1", "3.9")
TRANSACTION_ID_UNKNOWN = StatusCode("8.10.1", "3.9")
EUM_CERT_INVALID = StatusCode("8.1.2", "6.1")
EUM_CERT_EXPIRED = StatusCode("8.1.2", "6.3")
EUICC_CERT_INVALID = StatusCode("8.1.3", "6.1")
EUICC_CERT_EXPIRED = StatusCode("8.1.3", "6.3")
EUICC_SIGNATURE_INVALID = StatusCode("8.1", "6.1")
MATCHING_ID_REFUSED = StatusCode("8.2.6", "3.8")
EID_MISMATCH = StatusCode("8.1.1", "3.10")
EID_UNKNOWN = StatusCode("8.1.1", "3.9")
EID_MISSING = StatusCode("8.1.1", "2.2")
PROFILE_UNAVAILABLE = StatusCode("8.2", "3.7")
DOWNLOAD_ORDER_EXPIRED = StatusCode("8.8.5", "4.10")
DOWNLOAD_ATTEMPTS_EXCEEDED = StatusCode("8.8.5", "6.4")
CC_MISSING = StatusCode("8.2.7", "2.2")
CC_REFUSED = StatusCode("8.2.7", "3.8")
CC_RETRIES_EXCEEDED = StatusCode("8.2.7", "6.4")
BPP_REBINDING_REFUSED = StatusCode("8.2.10", "3.8")
# CancelSession reasons as statusCodeData (SGP.22 5.6.5 / 5.3.5 HandleDownloadProgressInfo)
CANCEL_END_USER_REJECTION = StatusCode("8.8.5", "3.8")
CANCEL_POSTPONED = StatusCode("8.8.5", "4.2")  # download postponed by the end user
CANCEL_TIMEOUT = StatusCode("8.8.5", "4.10")
CANCEL_PPR_NOT_ALLOWED = StatusCode("8.2.8", "1.2")
CANCEL_UNDEFINED = StatusCode("8", "4.2")
# ES2+
ICCID_UNKNOWN = StatusCode("8.2.1", "3.9")
ICCID_ALREADY_IN_USE = StatusCode("8.2.1", "3.3")
ICCID_INVALID_TRANSITION = StatusCode("8.2.1", "3.5")
ICCID_EID_MISMATCH = StatusCode("8.2.1", "3.10")
ICCID_NOT_ALLOWED = StatusCode("8.2.1", "1.2")
ICCID_OR_STATUS_MISSING = StatusCode("8.2.1", "2.2")
PROFILE_TYPE_UNKNOWN = StatusCode("8.2.5", "3.9")
PROFILE_TYPE_UNAVAILABLE = StatusCode("8.2.5", "3.7")
MATCHING_ID_INVALID = StatusCode("8.2.6", "2.1")
MATCHING_ID_CONFLICT = StatusCode("8.2.6", "3.3")
MATCHING_ID_MISMATCH = StatusCode("8.2.6", "3.10")
SMDS_INACCESSIBLE = StatusCode("8.9", "5.1")
SMDS_EXECUTION_ERROR = StatusCode("8.9", "4.2")
EVENT_RECORD_UNKNOWN = StatusCode("8.9.5", "3.9")
# Generic (SGP.22 5.2.6 / 6.5.1.4)
FUNCTION_REQUESTER_UNKNOWN = StatusCode("1.1", "1.1")
FUNCTION_REQUESTER_NOT_ALLOWED = StatusCode("1.1", "1.2")
INVALID_REQUEST = StatusCode("1.3.1", "2.1")
MANDATORY_ELEMENT_MISSING = StatusCode("1.3.1", "2.2")
UNSUPPORTED_PROTOCOL_VERSION = StatusCode("1.3.2", "3.1")
FUNCTION_UNKNOWN = StatusCode("1.6", "3.9")
EXECUTION_ERROR = StatusCode("1.2", "4.2")

# SM-DP+ (5.6) codes beyond the table above
EID_REFUSED = StatusCode("8.1.1", "3.8")  # AuthenticateClient: EID does not match the order
EID_INVALID = StatusCode("8.1.1", "2.1")  # DownloadOrder/ConfirmOrder/RegisterEvent: malformed EID
PROFILE_NOT_RELEASED = StatusCode("8.2", "1.2")  # AuthenticateClient: the profile is not released yet
DPAUTH_UNAVAILABLE = StatusCode("8.8.4", "3.7")  # InitiateAuthentication: no CERT.DPauth for the eUICC's CIs
SMDP_OID_INVALID = StatusCode("8.8", "3.10")  # CancelSession: smdpOid is not ours
EUICC_REPORTED_ERROR = StatusCode("8.1", "4.2")  # the eUICC answered with an error alternative (kinsim choice)
INSTALLATION_FAILED = StatusCode("8.2", "4.2")  # HandleDownloadProgressInfo of an errorResult (kinsim choice)
CONDITIONAL_ELEMENT_MISSING = StatusCode("1.3.1", "2.3")  # DownloadOrder: neither iccid nor profileType
PROFILE_TYPE_MISMATCH = StatusCode("8.2.5", "3.10")  # the ICCID is not of the requested profileType
# v3 Remote Profile Management (kinsim choices where v3 names no code)
RPM_UNSUPPORTED = StatusCode("8.1", "3.1")  # RpmOrder / AuthenticateClient: the eUICC lacks rpmSupport
# SM-DS (5.8, 5.9)
INVALID_SMDS_ADDRESS = StatusCode("8.9.1", "3.8")
EVENT_RECORD_ALREADY_EXISTS = StatusCode("8.9.5", "3.3")
EVENT_ID_INVALID = StatusCode("8.9.5", "2.1")

# --- ES10 result enums (SGP.22 section 5.7): those declared as ASN.1 types come from rsp.messages ---------------------------
AUTHENTICATE_ERROR = dict(m.AuthenticateErrorCode._map)
DOWNLOAD_ERROR = dict(m.DownloadErrorCode._map)
CANCEL_SESSION_REASON = dict(m.CancelSessionReason._map)
CANCEL_SESSION_ERROR = {5: "invalidTransactionId", 127: "undefinedError"}
ENABLE_RESULT = {0: "ok", 1: "iccidOrAidNotFound", 2: "profileNotInDisabledState", 3: "disallowedByPolicy",
                 4: "wrongProfileReenabling", 5: "catBusy", 127: "undefinedError"}
DISABLE_RESULT = {0: "ok", 1: "iccidOrAidNotFound", 2: "profileNotInEnabledState", 3: "disallowedByPolicy",
                  5: "catBusy", 127: "undefinedError"}
DELETE_RESULT = {0: "ok", 1: "iccidOrAidNotFound", 2: "profileNotInDisabledState", 3: "disallowedByPolicy",
                 127: "undefinedError"}
SET_NICKNAME_RESULT = {0: "ok", 1: "iccidNotFound", 127: "undefinedError"}
MEMORY_RESET_RESULT = {0: "ok", 1: "nothingToDelete", 127: "undefinedError"}
NOTIFICATION_SENT_RESULT = {0: "ok", 1: "nothingToDelete", 127: "undefinedError"}
SET_DEFAULT_DP_RESULT = {0: "ok", 127: "undefinedError"}
PROFILE_INFO_LIST_ERROR = {1: "incorrectInputValues", 127: "undefinedError"}

# --- ProfileInstallationResult (SGP.22 5.7.6) ------------------------------------------------------
BPP_COMMAND_ID = dict(m.BppCommandId._map)
BPP_ERROR_REASON = dict(m.ErrorReason._map)
# Sentences for people, keyed by errorReason.
BPP_ERROR_SENTENCE = {
    1: "the card found incorrect input values in the package",
    2: "the SM-DP+ signature over the secure channel set-up did not verify",
    3: "the package belongs to a different transaction",
    4: "the card does not support the requested key agreement parameters",
    5: "the card does not support the requested remote operation",
    6: "the card does not accept this profile class",
    7: "a protected segment was malformed (SCP03t structure error)",
    8: "a protected segment failed its integrity check (SCP03t MAC error)",
    9: "a profile with the same ICCID is already installed",
    10: "the card does not have enough free memory for this profile",
    11: "the installation was interrupted",
    12: "the card could not process a profile element",
    13: "the ICCID in the profile does not match its metadata",
    14: "the test profile carries an invalid network access key",
    15: "a profile policy rule forbids this profile",
    127: "the card failed for an unknown reason",
}


def describe_bpp_error(bpp_command_id: int, error_reason: int, detail: str = "") -> str:
    command = BPP_COMMAND_ID.get(bpp_command_id, f"command {bpp_command_id}")
    reason = BPP_ERROR_REASON.get(error_reason, f"reason {error_reason}")
    sentence = BPP_ERROR_SENTENCE.get(error_reason, "the card rejected the package")
    text = f"Profile installation failed at {command}: {sentence} ({reason}, errorReason {error_reason})"
    return f"{text}: {detail}" if detail else text
