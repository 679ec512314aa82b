"""ES10b.LoadRpmPackage on the software eUICC: SGP.22 v3 Remote Profile Management (v3 3.7, 5.7.x).

After common mutual authentication with an SM-DP+ (ES10b.AuthenticateServer with CERT.DPauth), the
LPA hands the card the RPM package the SM-DP+ signed. The card

1. needs that authenticated session (else LoadRpmPackageResultNotSigned, noSession);
2. verifies smdpSignature3 over smdpSigned3 || euiccSignature1 with the CERT.DPauth key, and the
   transactionId (else a signed result with invalidSignature / invalidTransactionId);
3. runs the commands in order: Enable, Disable and Delete of one profile each, each only if the
   authenticated SM-DP+ (its DPauth OID) is a managing SM-DP+ of that profile for that command (the
   managingDpList of the rpmConfiguration in the profile's metadata, v3 5.4.1); a failed command stops
   the package unless it carries continueOnFailure;
4. answers a signed LoadRpmPackageResult, also kept as a pending notification (NotificationEvent
   loadRpmPackageResult) addressed to the SM-DP+, so the result reaches it even if the LPA loses it.

Sans-IO: takes the card state and returns the state to commit (profiles and the notification at once).
kinsim choices where v3 leaves room: a Delete by an SM-DP+ that does not manage the profile answers
disallowedByPolicy (Enable/Disable answer v3's disallowedForRpm); ListProfileInfo, UpdateMetadata and
ContactPcmp are not supported and end the package with rpmProcessingTerminated unknownOrDamagedCommand;
RPM commands send no per-profile notifications (notificationRpmEnable/Disable/Delete).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from euicc_sim.es10b_auth import Session
from euicc_sim.identity import EuiccIdentity
from euicc_sim.state import CardState, Notification, Profile
from rsp import crypto, rpm
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.errors import DecodeError
from rsp.ids import iccid_from_bcd

# LoadRpmPackageErrorCode(Not)Signed and ES10c result values (v3 RSPDefinitions).
INVALID_SIGNATURE, NO_SESSION, INVALID_TRANSACTION_ID = 2, 4, 5
OK, NOT_FOUND, WRONG_STATE, DISALLOWED_BY_POLICY, DISALLOWED_FOR_RPM = 0, 1, 2, 3, 9
UNKNOWN_OR_DAMAGED_COMMAND = 2  # rpmProcessingTerminated
LOAD_RPM_PACKAGE_RESULT = "loadRpmPackageResult"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RpmOutcome:
    response: bytes  # LoadRpmPackageResult DER ('BF44')
    state: CardState | None  # to commit; None when nothing changes (an unsigned error)


def load_rpm_package(identity: EuiccIdentity, session: Session | None, request: v3.LoadRpmPackageRequest,
                     state: CardState) -> RpmOutcome:
    signed3 = request["smdpSigned3"]
    transaction_id = signed3["transactionId"].native
    if session is None or not session.authenticated or session.prepared or session.smdp_auth_key is None:
        _log.info("LoadRpmPackage without an SM-DP+ session authenticated for it")
        return RpmOutcome(_not_signed(transaction_id, NO_SESSION), None)
    covered = rpm.signed3_data(signed3.dump(), session.euicc_signature1)
    if not crypto.verify(session.smdp_auth_key, covered, request["smdpSignature3"].native):
        final = v3.RpmFinalResult(name="loadRpmPackageErrorCodeSigned", value=INVALID_SIGNATURE)
    elif transaction_id != session.transaction_id:
        final = v3.RpmFinalResult(name="loadRpmPackageErrorCodeSigned", value=INVALID_TRANSACTION_ID)
    else:
        state, results = _execute(signed3["rpmPackage"], state, session.smdp_oid)
        final = v3.RpmFinalResult(name="rpmPackageExecutionResult", value=results)
    return _signed(identity, session, state, final)


def _not_signed(transaction_id: bytes, code: int) -> bytes:
    value = {"transactionId": transaction_id, "loadRpmPackageErrorCodeNotSigned": code}
    return v3.LoadRpmPackageResult(name="loadRpmPackageResultNotSigned", value=value).dump()


def _signed(identity: EuiccIdentity, session: Session, state: CardState, final: v3.RpmFinalResult) -> RpmOutcome:
    """The signed result, returned and kept as pending notification number ``state.next_seq``."""
    seq = state.next_seq
    metadata = v3.NotificationMetadata({"seqNumber": seq, "profileManagementOperation": {LOAD_RPM_PACKAGE_RESULT},
                                        "notificationAddress": session.server_address})
    data = v3.LoadRpmPackageResultDataSigned({"transactionId": session.transaction_id,
                                              "notificationMetadata": metadata, "smdpOid": session.smdp_oid,
                                              "finalResult": final})
    signed = v3.LoadRpmPackageResultSigned({"loadRpmPackageResultDataSigned": data, "euiccSignRPR": b""})
    signed["euiccSignRPR"] = crypto.sign(identity.euicc.signing_key(),
                                         signed["loadRpmPackageResultDataSigned"].dump())
    pending = v3.PendingNotification(name="loadRpmPackageResultSigned", value=signed)
    notification = Notification(seq, LOAD_RPM_PACKAGE_RESULT, session.server_address, None, pending.dump())
    response = v3.LoadRpmPackageResult(name="loadRpmPackageResultSigned", value=signed).dump()
    return RpmOutcome(response, state.with_notification(notification))


# --- the commands ---------------------------------------------------------------------------------


def _execute(package: v3.RpmPackage, state: CardState, smdp_oid: str) -> tuple[CardState, list]:
    results = []
    for item in package:
        details = item["rpmCommandDetails"]
        if details.name not in rpm.PROFILE_COMMANDS:
            results.append({"rpmCommandResultData": v3.RpmCommandResultData(
                name="rpmProcessingTerminated", value=UNKNOWN_OR_DAMAGED_COMMAND)})
            break
        iccid_bcd = details.chosen["iccid"].native
        state, code = _ACTIONS[details.name](state, _profile(state, iccid_bcd), smdp_oid)
        field = rpm.RESULT_OF[details.name]
        results.append({"iccid": iccid_bcd, "rpmCommandResultData": v3.RpmCommandResultData(
            name=field, value={field: code})})
        if code != OK and not rpm.continue_on_failure(item):
            break
    return state, results


def _profile(state: CardState, iccid_bcd: bytes) -> Profile | None:
    try:
        return state.find(iccid=iccid_from_bcd(iccid_bcd))
    except DecodeError:  # not BCD digits: no profile has it
        return None


def managing(profile: Profile, smdp_oid: str, action: str) -> bool:
    """Is ``smdp_oid`` a managing SM-DP+ of ``profile`` for ``action`` (rpmConfiguration, v3 5.4.1)?"""
    try:
        configuration = m.decode(v3.StoreMetadataRequest, profile.metadata)["rpmConfiguration"]
    except DecodeError:
        return False
    if configuration.native is None:
        return False
    for entry in configuration["managingDpList"]:
        allowed = entry["rpmType"].native
        if entry["managingDpOid"].native == smdp_oid and (allowed is None or action in allowed):
            return True
    return False


def _enable(state: CardState, target: Profile | None, smdp_oid: str) -> tuple[CardState, int]:
    current = state.enabled
    if target is None:
        return state, NOT_FOUND
    if not managing(target, smdp_oid, "enable"):
        return state, DISALLOWED_FOR_RPM
    if target.enabled:
        return state, WRONG_STATE
    if current is not None and "ppr1" in current.pprs:  # enabling would disable it
        return state, DISALLOWED_BY_POLICY
    if current is not None:
        state = state.with_profile(replace(current, enabled=False))
    return state.with_profile(replace(target, enabled=True)), OK


def _disable(state: CardState, target: Profile | None, smdp_oid: str) -> tuple[CardState, int]:
    if target is None:
        return state, NOT_FOUND
    if not managing(target, smdp_oid, "disable"):
        return state, DISALLOWED_FOR_RPM
    if not target.enabled:
        return state, WRONG_STATE
    if "ppr1" in target.pprs:
        return state, DISALLOWED_BY_POLICY
    return state.with_profile(replace(target, enabled=False)), OK


def _delete(state: CardState, target: Profile | None, smdp_oid: str) -> tuple[CardState, int]:
    if target is None:
        return state, NOT_FOUND
    if not managing(target, smdp_oid, "delete") or "ppr2" in target.pprs:
        return state, DISALLOWED_BY_POLICY
    if target.enabled:
        return state, WRONG_STATE
    return state.without_profile(target.aid), OK


_ACTIONS = {"enable": _enable, "disable": _disable, "delete": _delete}
