"""The SM-DP+ ES9+ functions as a sans-IO session state machine (SGP.22 3.1.2, 3.1.3, 5.6).

Each method takes the decoded request (``rsp.es9_json.decode_request``: ASN.1 values that keep
their received bytes) and returns the response values for ``rsp.es9_json.encode_response``, or
raises ``StatusCodeError`` with the spec's subjectCode/reasonCode. One SQLite transaction per call:
a refused request changes nothing, except where the spec counts or blocks (confirmation code
attempts, download attempts), which is committed before the error is raised.

Session states move forward once each: initiated -> authenticated -> delivered -> closed. An
unknown, closed, out-of-order or timed-out transactionId is "TransactionId - Unknown". The
installation result may arrive long after the interactive steps, so it is accepted for any session
that delivered a BPP, whatever the timeout.

SGP.22 v3 Remote Profile Management: when the matching ID an eUICC presents names an RPM order
(ES2+.RpmOrder) and its EUICCInfo2 announces rpmSupport and its LPA announced rpm in
ctxParams1.operationType, AuthenticateClient answers with the signed RPM package (smdpSigned3,
smdpSignature3 by CERT.DPauth) and HandleNotification later takes the eUICC's signed
LoadRpmPackageResult: deleted profiles become Unavailable and the operator gets the result.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from asn1crypto import core as asn1
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import load_certificate
from certs.validate import Role, ValidatedChain, authority_key_id, validate_chain
from rsp import crypto, es9_json, rpm, status
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.bpp import build_bound_profile_package
from rsp.errors import CertificateError, DecodeError, StatusCode, StatusCodeError
from rsp.ids import eid_to_bytes, iccid_from_bcd, iccid_to_bcd
from rsp.status import (
    DPAUTH_UNAVAILABLE,
    EID_REFUSED,
    EUICC_REPORTED_ERROR,
    INSTALLATION_FAILED,
    PROFILE_NOT_RELEASED,
    SMDP_OID_INVALID,
)
from smdp.config import SUPPORTED_SVN_MAJOR, ServerCredentials, SmdpConfig
from smdp.orders import (
    POINT_BPP_DOWNLOAD,
    POINT_BPP_INSTALLATION,
    POINT_CONFIRMATION_FAILURE,
    POINT_ELIGIBILITY,
    POINT_PROFILE_NOTIFICATION,
    OrderHooks,
    Orders,
    expected_hash_cc,
)
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

log = logging.getLogger("kinsim.smdp")

Clock = Callable[[], datetime]
Rng = Callable[[int], bytes]

# ES9+ codes of SGP.22 5.6 that rsp.status does not name (yet).
BPP_NOT_AVAILABLE = status.PROFILE_UNAVAILABLE  # 8.2 3.7: BPP is not available for a new binding
# Our choice where the spec names no code: the eUICC answered with its error alternative
# (authenticateResponseError, downloadResponseError), reported as "eUICC - Execution Error".

# ProfileInstallationResult errorReasons after which retrying on the same eUICC cannot succeed.
FINAL_INSTALL_ERRORS = frozenset({
    6,  # unsupportedProfileClass
    9,  # installFailedDueToIccidAlreadyExistsOnEuicc
    13,  # installFailedDueToIccidMismatch
    14,  # testProfileInstallFailedDueToInvalidNaaKey
    15,  # pprNotAllowed
})
# CancelSession reasons that end the order (a decision, not a transient failure).
FINAL_CANCEL_REASONS = frozenset({"endUserRejection", "pprNotAllowed"})
CANCEL_STATUS = {
    "endUserRejection": status.CANCEL_END_USER_REJECTION,
    "postponed": status.CANCEL_POSTPONED,
    "timeout": status.CANCEL_TIMEOUT,
    "pprNotAllowed": status.CANCEL_PPR_NOT_ALLOWED,
}
DOWNLOADABLE = (ProfileState.RELEASED, ProfileState.DOWNLOADED)
RPM_TYPES = ("enable", "disable", "delete")  # what the managing SM-DP+ may do to its profiles (v3 RpmType)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SmdpCore:
    """ES9+ InitiateAuthentication, AuthenticateClient, GetBoundProfilePackage, HandleNotification,
    CancelSession over one store."""

    def __init__(self, config: SmdpConfig, store: Store, clock: Clock = _utc_now, rng: Rng = os.urandom,
                 hooks: OrderHooks | None = None):
        self.config = config
        self.store = store
        self.clock = clock
        self.rng = rng
        self.orders = Orders(config.order_settings, store, clock, rng, hooks)
        self._handlers = {
            es9_json.INITIATE_AUTHENTICATION.name: self.initiate_authentication,
            es9_json.AUTHENTICATE_CLIENT.name: self.authenticate_client,
            es9_json.GET_BOUND_PROFILE_PACKAGE.name: self.get_bound_profile_package,
            es9_json.HANDLE_NOTIFICATION.name: self.handle_notification,
            es9_json.CANCEL_SESSION.name: self.cancel_session,
        }


    def serve_at(self, address: str) -> None:
        """Use ``address`` (HOST:PORT once an ephemeral port is known) in answers and orders alike."""
        self.config = replace(self.config, address=address)
        self.orders.config = self.config.order_settings
    def handle(self, function: es9_json.Function, request: dict) -> dict:
        """Dispatch a decoded ES9+ request to its function."""
        return self._handlers[function.name](request)

    # --- the five ES9+ functions ------------------------------------------------------------------

    def initiate_authentication(self, request: dict) -> dict:
        """ES9+.InitiateAuthentication (5.6.1, 3.1.2): checks, new transaction, serverSigned1."""
        return self._in_transaction(self._initiate_authentication, request)

    def authenticate_client(self, request: dict) -> dict:
        """ES9+.AuthenticateClient (5.6.3, 3.1.2/3.1.3): eUICC authentication, order, smdpSigned2."""
        return self._in_transaction(self._authenticate_client, request)

    def get_bound_profile_package(self, request: dict) -> dict:
        """ES9+.GetBoundProfilePackage (5.6.2, 3.1.3): confirmation code, one-time keys, BPP."""
        return self._in_transaction(self._get_bound_profile_package, request)

    def handle_notification(self, request: dict) -> dict:
        """ES9+.HandleNotification (5.6.4): always acknowledged; only verified notifications act."""
        return self._in_transaction(self._handle_notification, request)

    def cancel_session(self, request: dict) -> dict:
        """ES9+.CancelSession (5.6.5): verified cancellation ends the session, reason -> order state."""
        return self._in_transaction(self._cancel_session, request)

    def _in_transaction(self, step: Callable[[dict], dict], request: dict) -> dict:
        try:
            with self.store.transaction():
                return step(request)
        except CommitAndRaise as kept:
            raise kept.error from None

    # --- InitiateAuthentication -------------------------------------------------------------------

    def _initiate_authentication(self, request: dict) -> dict:
        address = request["smdpAddress"]
        server_address = self._server_address(address)
        if server_address is None:
            raise StatusCodeError(status.INVALID_SMDP_ADDRESS, f"this SM-DP+ is {self.config.address}, not {address!r}")
        euicc_challenge = request["euiccChallenge"]
        if len(euicc_challenge) != 16:
            raise StatusCodeError(status.INVALID_REQUEST, f"euiccChallenge must be 16 bytes, got {len(euicc_challenge)}")
        info1 = request["euiccInfo1"]
        svn = info1["svn"].native
        if svn[0] != SUPPORTED_SVN_MAJOR:
            raise StatusCodeError(status.SVN_UNSUPPORTED,
                                  f"eUICC SVN {'.'.join(map(str, svn))} is not supported (v{SUPPORTED_SVN_MAJOR}.x only)")
        creds, ci_pkid = self._choose_credentials(info1["euiccCiPKIdListForVerification"].native,
                                                  info1["euiccCiPKIdListForSigning"].native)
        now = self.clock()
        transaction_id = self._new_transaction_id()
        server_challenge = self.rng(16)
        signed1 = m.ServerSigned1({"transactionId": transaction_id, "euiccChallenge": euicc_challenge,
                                   "serverAddress": server_address, "serverChallenge": server_challenge})
        signature1 = crypto.sign(creds.dp_auth.signing_key(), signed1.dump())
        self.store.add_session(Session(
            transaction_id=transaction_id, state=SessionState.INITIATED, expires_at=now + self.config.session_timeout,
            created_at=now, euicc_challenge=euicc_challenge, server_challenge=server_challenge, ci_pkid=ci_pkid,
            credentials_pkid=creds.ci_pkid))
        return {"transactionId": transaction_id, "serverSigned1": signed1,
                "serverSignature1": es9_json.Signature(signature1),
                "euiccCiPKIdToBeUsed": asn1.OctetString(ci_pkid), "serverCertificate": creds.dp_auth_der}

    def _server_address(self, address: str) -> str | None:
        """Our address if ``address`` names us (case-insensitively, SGP.22 5.6.1), else None.

        A loopback set-up may reach us with or without the port; the address the LPA used is kept,
        since it is what the LPA checks serverSigned1.serverAddress against.
        """
        given, ours = address.strip(), self.config.address
        if given.lower() == ours.lower():
            return ours
        given_host, given_sep, given_port = given.partition(":")
        our_host, our_sep, _ = ours.partition(":")
        if given_host.lower() != our_host.lower() or (given_sep and not given_port.isdigit()):
            return None
        # one side names a port the other leaves out (a loopback set-up); two different ports do not match
        return given if not (given_sep and our_sep) else None

    def _choose_credentials(self, for_verification: list[bytes],
                            for_signing: list[bytes]) -> tuple[ServerCredentials, bytes]:
        """Our DPauth/DPpb set under a CI the eUICC verifies with, and the CI it shall sign under."""
        signing = [p for p in for_signing if p in self.config.trusted_cis_by_pkid]
        if not signing:
            raise StatusCodeError(status.SECURITY_CONFIG_UNSUPPORTED,
                                  "none of the CI public keys in euiccCiPKIdListForSigning is trusted by this SM-DP+")
        verifiable = [p for p in for_verification if p in self.config.credentials_by_ci]
        if not verifiable:
            raise StatusCodeError(DPAUTH_UNAVAILABLE, "this SM-DP+ has no CERT.DPauth.ECDSA signed by a CI in "
                                                      "euiccCiPKIdListForVerification")
        chosen = next((p for p in verifiable if p in signing), verifiable[0])
        return self.config.credentials_by_ci[chosen], chosen if chosen in signing else signing[0]

    def _new_transaction_id(self) -> bytes:
        while True:
            candidate = self.rng(16)
            if not self.store.transaction_id_exists(candidate):
                return candidate

    # --- AuthenticateClient -----------------------------------------------------------------------

    def _authenticate_client(self, request: dict) -> dict:
        session = self._live_session(request["transactionId"], (SessionState.INITIATED,), "AuthenticateClient")
        response = request["authenticateServerResponse"]
        if response.name == "authenticateResponseError":
            reason = response.chosen["authenticateErrorCode"].native
            self.orders.close_session(session, f"eUICC refused the SM-DP+: {reason}")
            raise CommitAndRaise(StatusCodeError(EUICC_REPORTED_ERROR,
                                                 f"the eUICC could not authenticate the SM-DP+: {reason}"))
        ok = response.chosen
        chain = self._verify_euicc_chain(ok["eumCertificate"], ok["euiccCertificate"], session.ci_pkid)
        signed1 = ok["euiccSigned1"]
        if not crypto.verify(chain.public_key, signed1.dump(), ok["euiccSignature1"].native):
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID, "euiccSignature1 does not verify over euiccSigned1")
        if signed1["transactionId"].native != session.transaction_id:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "euiccSigned1 is for another transactionId")
        if signed1["serverChallenge"].native != session.server_challenge:
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID, "euiccSigned1 carries another serverChallenge")
        eid = chain.eid or ""
        rpm_support = "rpmSupport" in (signed1["euiccInfo2"]["rspCapability"].native or set())
        self.store.note_euicc(eid, rpm_support, self.clock())
        matching_id = signed1["ctxParams1"].chosen["matchingId"].native or ""
        rpm_order = self.store.rpm_order(matching_id) if matching_id else None
        if rpm_order is not None:
            return self._authenticate_client_rpm(session, ok, eid, rpm_order, rpm_support)
        profile = self._eligible_order(matching_id, eid)
        metadata = self._profile_metadata(profile, rpm_support).dump()
        # No bppEuiccOtpk: the SM-DP+ may re-offer a BPP bound earlier (3.1.3), but here every session
        # gets a freshly bound one, so a one-time key is never used twice.
        signed2 = m.SmdpSigned2({"transactionId": session.transaction_id, "ccRequiredFlag": profile.cc_required})
        creds = self.config.credentials_by_ci[session.credentials_pkid]
        signature2 = es9_json.Signature(crypto.sign(creds.dp_pb.signing_key(), signed2.dump() + ok["euiccSignature1"].dump()))
        self.orders.end_sessions(profile, "superseded by a newer session", keep=session.transaction_id)
        profile = self.orders.update(profile, replace(profile, download_attempts=profile.download_attempts + 1,
                                                      current_tid=session.transaction_id))
        self.store.save_session(replace(
            session, state=SessionState.AUTHENTICATED, expires_at=self.clock() + self.config.session_timeout, eid=eid,
            euicc_cert=ok["euiccCertificate"].dump(), iccid=profile.iccid, metadata=metadata,
            smdp_signature2=signature2.dump(), cc_required=profile.cc_required))
        self.orders.report(profile, POINT_ELIGIBILITY, eid=eid)
        return {"transactionId": session.transaction_id, "profileMetadata": metadata, "smdpSigned2": signed2,
                "smdpSignature2": signature2, "smdpCertificate": creds.dp_pb_der}

    def _authenticate_client_rpm(self, session: Session, ok, eid: str, order: RpmOrder, rpm_support: bool) -> dict:
        """v3 3.7.1: the matching ID is an RPM order: answer with the signed RPM package (smdpSigned3)."""
        if order.state not in (RpmState.PENDING, RpmState.DELIVERED):
            raise StatusCodeError(status.MATCHING_ID_REFUSED, f"the RPM order for this matching ID is {order.state}")
        if order.eid != eid:
            raise StatusCodeError(EID_REFUSED, "the RPM order is for another eUICC")
        if not rpm_support:
            raise StatusCodeError(status.RPM_UNSUPPORTED, "the eUICC does not announce rpmSupport")
        if "rpm" not in v3.operation_types(ok["euiccSigned1"]["ctxParams1"]):
            raise StatusCodeError(status.MATCHING_ID_REFUSED, "this matching ID names an RPM order, and the LPA did "
                                                              "not announce rpm in ctxParams1.operationType")
        signed3 = v3.SmdpSigned3({"transactionId": session.transaction_id,
                                  "rpmPackage": v3.RpmPackage.load(order.package)})
        creds = self.config.credentials_by_ci[session.credentials_pkid]
        signature3 = crypto.sign(creds.dp_auth.signing_key(),
                                 rpm.signed3_data(signed3.dump(), ok["euiccSignature1"].native))
        now = self.clock()
        if order.current_tid is not None:  # an earlier contact that never reported: this one replaces it
            earlier = self.store.session(order.current_tid)
            if earlier is not None and earlier.state is not SessionState.CLOSED:
                self.orders.close_session(earlier, "superseded by a newer RPM session")
        self.store.save_rpm_order(replace(order, state=RpmState.DELIVERED, current_tid=session.transaction_id), now)
        self.store.save_session(replace(
            session, state=SessionState.DELIVERED, expires_at=now + self.config.session_timeout, eid=eid,
            euicc_cert=ok["euiccCertificate"].dump(), delivered_at=now))
        return {"transactionId": session.transaction_id, "smdpSigned3": signed3,
                "smdpSignature3": es9_json.Signature(signature3)}

    def _verify_euicc_chain(self, eum_value, euicc_value, ci_pkid: bytes) -> ValidatedChain:
        """EUM and eUICC certificates up to the CI the session chose (SGP.22 5.6.3 checks, in order)."""
        eum = _load_certificate(eum_value, status.EUM_CERT_INVALID, "EUM")
        euicc = _load_certificate(euicc_value, status.EUICC_CERT_INVALID, "eUICC")
        try:
            issuer = authority_key_id(eum)
        except CertificateError as exc:
            raise StatusCodeError(status.EUM_CERT_INVALID, f"EUM certificate: {exc}") from None
        ci = self.config.trusted_cis_by_pkid.get(issuer or b"")
        if ci is None or issuer != ci_pkid:
            raise StatusCodeError(status.CI_PK_UNKNOWN, "the EUM certificate is not issued by the CI of "
                                                        "euiccCiPKIdToBeUsed, or that CI is not trusted")
        now = self.clock()
        try:
            validate_chain(eum, Role.EUM, trusted_cis=[ci], now=now)
        except CertificateError as exc:
            code = status.EUM_CERT_EXPIRED if exc.expired else status.EUM_CERT_INVALID
            raise StatusCodeError(code, f"EUM certificate: {exc}") from None
        try:
            return validate_chain(euicc, Role.EUICC, intermediates=[eum], trusted_cis=[ci], now=now)
        except CertificateError as exc:
            code = status.EUICC_CERT_EXPIRED if exc.expired else status.EUICC_CERT_INVALID
            raise StatusCodeError(code, f"eUICC certificate: {exc}") from None

    def _eligible_order(self, matching_id: str, eid: str) -> Profile:
        """The download order for this matching ID (or, without one, for this EID) and its checks."""
        if matching_id:
            profile = self.store.profile_by_matching_id(matching_id)
            if profile is None:
                raise StatusCodeError(status.MATCHING_ID_REFUSED, f"no download order has matching ID {matching_id}")
        else:  # default SM-DP+ address use case: an order bound to the EID, without matching ID
            candidates = [p for p in self.store.profiles(eid=eid) if p.matching_id is None
                          and p.state in (*DOWNLOADABLE, ProfileState.CONFIRMED)]
            if not candidates:
                raise StatusCodeError(status.MATCHING_ID_REFUSED, "no pending download order for this EID")
            profile = candidates[0]
        refusal = self._eligibility_refusal(profile, eid)
        if refusal is not None:  # the operator learns why its order was not downloaded (point 1)
            self.orders.report(profile, POINT_ELIGIBILITY, eid=eid, error=refusal)
            raise CommitAndRaise(refusal)
        if profile.download_attempts >= self.config.max_download_attempts:
            error = StatusCodeError(status.DOWNLOAD_ATTEMPTS_EXCEEDED,
                                    f"the order allows {self.config.max_download_attempts} download attempts")
            self.orders.report(self.orders.block(profile, "download attempts exceeded"), POINT_ELIGIBILITY,
                               eid=eid, error=error)
            raise CommitAndRaise(error)
        return profile

    def _eligibility_refusal(self, profile: Profile, eid: str) -> StatusCodeError | None:
        if profile.state is ProfileState.CONFIRMED:
            return StatusCodeError(PROFILE_NOT_RELEASED, "the operator has not released this profile yet")
        if profile.state not in DOWNLOADABLE:
            return StatusCodeError(status.MATCHING_ID_REFUSED, f"the order is {profile.state}: no download is possible")
        if profile.expires_at is not None and self.clock() > profile.expires_at:
            return StatusCodeError(status.DOWNLOAD_ORDER_EXPIRED, "the download order has expired")
        if profile.eid is not None and profile.eid != eid:
            return StatusCodeError(EID_REFUSED, "the order is for another eUICC")
        if profile.state is ProfileState.DOWNLOADED and profile.download_eid != eid:
            return StatusCodeError(EID_REFUSED, "the profile was already bound to another eUICC")
        return None

    def _profile_metadata(self, profile: Profile, rpm_support: bool = False) -> m.StoreMetadataRequest:
        """StoreMetadataRequest from the inventory entry and its profile type (SGP.22 5.5.3); for an
        eUICC with rpmSupport, the v3 rpmConfiguration naming this SM-DP+ as managing SM-DP+."""
        ptype = self.store.profile_type(profile.profile_type) or ProfileType(profile.profile_type)
        value = {"iccid": iccid_to_bcd(profile.iccid), "serviceProviderName": ptype.service_provider_name,
                 "profileName": ptype.profile_name or ptype.name, "profileClass": ptype.profile_class}
        by_address: dict[str, set[str]] = {}
        for event, address in ptype.notifications:  # "" stands for this SM-DP+
            by_address.setdefault(address or self.config.address, set()).add(event)
        if by_address:
            value["notificationConfigurationInfo"] = [
                {"profileManagementOperation": events, "notificationAddress": address}
                for address, events in by_address.items()]
        if ptype.ppr:
            value["profilePolicyRules"] = set(ptype.ppr)
        if rpm_support and self.config.rpm_configuration:
            value["rpmConfiguration"] = {
                "managingDpList": [{"managingDpOid": self.config.smdp_oid, "rpmType": set(RPM_TYPES)}],
                "profileOwnerOid": self.config.smdp_oid}  # no operator OID is known: ours stands in
            return v3.StoreMetadataRequest(value)
        return m.StoreMetadataRequest(value)

    # --- GetBoundProfilePackage -------------------------------------------------------------------

    def _get_bound_profile_package(self, request: dict) -> dict:
        session = self._live_session(request["transactionId"], (SessionState.AUTHENTICATED,), "GetBoundProfilePackage")
        profile = self.store.profile(session.iccid or "")
        response = request["prepareDownloadResponse"]
        if response.name == "downloadResponseError":
            reason = response.chosen["downloadErrorCode"].native
            error = StatusCodeError(EUICC_REPORTED_ERROR, f"PrepareDownload failed on the eUICC: {reason}")
            self.orders.close_session(session, f"eUICC PrepareDownload error: {reason}")
            if profile is not None:
                self.orders.report(profile, POINT_BPP_DOWNLOAD, eid=session.eid, error=error)
            raise CommitAndRaise(error)
        ok = response.chosen
        signed2 = ok["euiccSigned2"]
        if not crypto.verify(_euicc_key(session), signed2.dump() + session.smdp_signature2, ok["euiccSignature2"].native):
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID,
                                  "euiccSignature2 does not verify over euiccSigned2 and smdpSignature2")
        if signed2["transactionId"].native != session.transaction_id:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "euiccSigned2 is for another transactionId")
        if profile is None or profile.current_tid != session.transaction_id or profile.state not in DOWNLOADABLE:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "the download order no longer belongs to this session")
        if session.cc_required:
            self._check_confirmation_code(profile, session, signed2["hashCc"].native)
        creds = self.config.credentials_by_ci[session.credentials_pkid]
        curve = crypto.curve_name(creds.dp_pb.signing_key())
        euicc_otpk = signed2["euiccOtpk"].native
        try:
            crypto.load_public_point(curve, euicc_otpk)
        except DecodeError as exc:
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID, f"euiccOtpk: {exc}") from None
        if self.store.otpk_used(euicc_otpk):
            raise StatusCodeError(BPP_NOT_AVAILABLE, "otPK.EUICC.ECKA was used for a binding before; "
                                                     "a new one-time key is required")
        smdp_otsk = self._fresh_one_time_key(curve)
        bpp = build_bound_profile_package(
            transaction_id=session.transaction_id, eid=eid_to_bytes(session.eid), euicc_otpk=euicc_otpk,
            smdp_otsk=smdp_otsk, dp_pb_key=creds.dp_pb.signing_key(), metadata=session.metadata,
            upp=self.store.upp(profile.iccid), dp_oid=self.config.smdp_oid, host_id=self.config.host_id)
        now = self.clock()
        self.store.mark_otpk(euicc_otpk, "euicc", session.transaction_id, now)
        self.store.mark_otpk(crypto.public_key_bytes(smdp_otsk), "smdp", session.transaction_id, now)
        profile = self.orders.update(profile, replace(profile, state=ProfileState.DOWNLOADED, download_eid=session.eid))
        self.store.save_session(replace(session, state=SessionState.DELIVERED, delivered_at=now))
        self.orders.report(profile, POINT_BPP_DOWNLOAD, eid=session.eid)
        return {"transactionId": session.transaction_id, "boundProfilePackage": bpp}

    def _check_confirmation_code(self, profile: Profile, session: Session, hash_cc: bytes | None) -> None:
        """hashCc against SHA-256(SHA-256(code) | transactionId); wrong codes count up to the limit."""
        if hash_cc is None:
            raise StatusCodeError(status.CC_MISSING, "this order requires a confirmation code")
        if hmac.compare_digest(hash_cc, expected_hash_cc(profile.cc_hash, session.transaction_id)):
            return
        attempts = profile.cc_attempts + 1
        if attempts >= self.config.max_cc_attempts:
            error = StatusCodeError(status.CC_RETRIES_EXCEEDED,
                                    f"wrong confirmation code {attempts} times: the order is blocked")
            profile = self.orders.block(replace(profile, cc_attempts=attempts), "confirmation code attempts exceeded")
        else:
            error = StatusCodeError(status.CC_REFUSED, f"wrong confirmation code ({attempts} of "
                                                       f"{self.config.max_cc_attempts} attempts used)")
            profile = self.orders.update(profile, replace(profile, cc_attempts=attempts))
        self.orders.report(profile, POINT_CONFIRMATION_FAILURE, eid=session.eid, error=error)
        raise CommitAndRaise(error)

    def _fresh_one_time_key(self, curve: str) -> ec.EllipticCurvePrivateKey:
        while True:  # a repeated rng (a replayed seed) must never make us reuse otSK.DP.ECKA
            key = crypto.generate_private_key(curve, self.rng)
            if not self.store.otpk_used(crypto.public_key_bytes(key)):
                return key

    # --- HandleNotification -----------------------------------------------------------------------

    def _handle_notification(self, request: dict) -> dict:
        pending = request["pendingNotification"]
        if pending.name == "profileInstallationResult":
            outcome = self._installation_result(pending.chosen)
        elif pending.name == "loadRpmPackageResultSigned":
            outcome = self._rpm_result(pending)
        else:
            outcome = self._other_notification(pending.chosen)
        # The outcome names the EID and ICCID: operational detail, not for logs kept at INFO.
        log.debug("HandleNotification: %s", outcome)
        return {}

    def _installation_result(self, pir: m.ProfileInstallationResult) -> str:
        data = pir["profileInstallationResultData"]
        transaction_id = data["transactionId"].native
        session = self.store.session(transaction_id)
        if session is None or session.delivered_at is None:
            return "installation result for a session without a delivered BPP: ignored"
        if session.state is SessionState.CLOSED and (session.result or "").startswith("install"):
            return "installation result already handled: acknowledged again"
        if not crypto.verify(_euicc_key(session), data.dump(), pir["euiccSignPIR"].native):
            return "euiccSignPIR does not verify: ignored"
        metadata = data["notificationMetadata"]
        iccid = _iccid_of(metadata)
        if iccid is not None and iccid != session.iccid:
            return f"installation result names ICCID {iccid}, the session bound {session.iccid}: ignored"
        self.store.record_notification(session.eid, metadata["seqNumber"].native, "notificationInstall",
                                       session.iccid, transaction_id, self.clock())
        final = data["finalResult"]
        profile = self.store.profile(session.iccid)
        if final.name == "successResult":
            self.orders.close_session(session, "installed")
            if profile is not None and profile.state in DOWNLOADABLE:
                self.orders.end_sessions(profile, "profile installed by another session")
                profile = self.orders.update(profile, replace(profile, state=ProfileState.INSTALLED, error=None))
            outcome, error = "installed", None
        else:
            reason = int(final.chosen["errorReason"])
            command = int(final.chosen["bppCommandId"])
            error = StatusCodeError(INSTALLATION_FAILED, status.describe_bpp_error(command, reason))
            self.orders.close_session(session, f"installation failed: {final.chosen['errorReason'].native}")
            if profile is not None and profile.current_tid == transaction_id and profile.state is ProfileState.DOWNLOADED:
                if reason in FINAL_INSTALL_ERRORS:
                    profile = self.orders.block(profile, error.message)
                else:
                    profile = self.orders.update(profile, replace(profile, state=ProfileState.RELEASED, download_eid=None))
            outcome = f"installation failed: {error.message}"
        if profile is not None:
            self.orders.report(profile, POINT_BPP_INSTALLATION, eid=session.eid, error=error, result_data=pir.dump())
        return outcome

    def _other_notification(self, notification: m.OtherSignedNotification) -> str:
        """Enable/disable/delete notifications carry their own certificates (SGP.22 3.5, 5.6.4)."""
        try:
            eum = _load_certificate(notification["eumCertificate"], status.EUM_CERT_INVALID, "EUM")
            chain = self._verify_euicc_chain(notification["eumCertificate"], notification["euiccCertificate"],
                                             authority_key_id(eum) or b"")
        except (StatusCodeError, CertificateError) as exc:
            return f"notification with invalid certificates ({exc}): ignored"
        tbs = notification["tbsOtherNotification"]
        if not crypto.verify(chain.public_key, tbs.dump(), notification["euiccNotificationSignature"].native):
            return "euiccNotificationSignature does not verify: ignored"
        operations = frozenset(tbs["profileManagementOperation"].native)
        iccid = _iccid_of(tbs)
        if not self.store.record_notification(chain.eid, tbs["seqNumber"].native, ",".join(sorted(operations)),
                                              iccid, None, self.clock()):
            return "notification already handled: acknowledged again"
        self.orders.hooks.notification_received(chain.eid, operations, iccid)
        profile = self.store.profile(iccid) if iccid else None
        if profile is not None:
            self.orders.report(profile, POINT_PROFILE_NOTIFICATION, eid=chain.eid, result_data=notification.dump())
        return f"{','.join(sorted(operations))} notification from {chain.eid} for {iccid}"

    def _rpm_result(self, pending: v3.PendingNotification) -> str:
        """v3: the signed LoadRpmPackageResult of an RPM order; deleted profiles become Unavailable."""
        signed = pending.chosen
        data = signed["loadRpmPackageResultDataSigned"]
        transaction_id = data["transactionId"].native
        session, order = self.store.session(transaction_id), self.store.rpm_order_by_tid(transaction_id)
        if session is None or order is None or session.euicc_cert is None:
            return "RPM result for an unknown RPM session: ignored"
        if not crypto.verify(_euicc_key(session), data.dump(), signed["euiccSignRPR"].native):
            return "euiccSignRPR does not verify: ignored"
        if data["smdpOid"].native != self.config.smdp_oid:
            return f"RPM result for SM-DP+ {data['smdpOid'].native}: ignored"
        seq = data["notificationMetadata"]["seqNumber"].native
        if not self.store.record_notification(session.eid, seq, "loadRpmPackageResult", order.iccid, transaction_id,
                                              self.clock()):
            return "RPM result already handled: acknowledged again"
        failures = _rpm_failures(order, data)
        for iccid in rpm.deleted_iccids(data):
            profile = self.store.profile(iccid)
            if profile is not None and profile.download_eid == session.eid:
                self.orders.update(profile, replace(profile, state=ProfileState.UNAVAILABLE))
        state = RpmState.FAILED if failures else RpmState.DONE
        self.store.save_rpm_order(replace(order, state=state, result="; ".join(failures) or "executed"), self.clock())
        self.orders.close_session(session, f"RPM package {state}")
        profile = self.store.profile(order.iccid or "")
        if profile is not None:
            error = StatusCodeError(EUICC_REPORTED_ERROR, "; ".join(failures)) if failures else None
            self.orders.report(profile, POINT_PROFILE_NOTIFICATION, eid=session.eid, error=error,
                               result_data=pending.dump())
        return f"RPM order {order.matching_id} {state}: {'; '.join(failures) or 'every command succeeded'}"

    # --- CancelSession ----------------------------------------------------------------------------

    def _cancel_session(self, request: dict) -> dict:
        session = self._live_session(request["transactionId"], (SessionState.INITIATED, SessionState.AUTHENTICATED,
                                                                SessionState.DELIVERED), "CancelSession")
        if session.euicc_cert is None:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN,
                                  "no eUICC is authenticated in this session yet, so it cannot be cancelled")
        response = request["cancelSessionResponse"]
        if response.name == "cancelSessionResponseError":
            self.orders.close_session(session, f"cancelled; the eUICC reported {response.chosen.native}")
            return {}
        ok = response.chosen
        signed = ok["euiccCancelSessionSigned"]
        if not crypto.verify(_euicc_key(session), signed.dump(), ok["euiccCancelSessionSignature"].native):
            raise StatusCodeError(status.EUICC_SIGNATURE_INVALID,
                                  "euiccCancelSessionSignature does not verify over euiccCancelSessionSigned")
        if signed["transactionId"].native != session.transaction_id:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "euiccCancelSessionSigned is for another transactionId")
        if signed["smdpOid"].native != self.config.smdp_oid:
            raise StatusCodeError(SMDP_OID_INVALID, f"smdpOid {signed['smdpOid'].native} is not this SM-DP+'s OID")
        reason = signed["reason"].native
        reason = reason if isinstance(reason, str) else "undefinedReason"
        self.orders.close_session(session, f"cancelled: {reason}")
        order = self.store.rpm_order_by_tid(session.transaction_id)
        if order is not None:  # an RPM session: the order waits for the next contact
            self.store.save_rpm_order(replace(order, state=RpmState.PENDING, current_tid=None), self.clock())
            return {}
        profile = self.store.profile(session.iccid or "")
        if profile is None:
            return {}
        if profile.current_tid == session.transaction_id and profile.state in DOWNLOADABLE:
            if reason in FINAL_CANCEL_REASONS:
                profile = self.orders.block(profile, f"download cancelled: {reason}")
            else:
                profile = self.orders.update(profile, replace(profile, state=ProfileState.RELEASED, download_eid=None))
        point = POINT_BPP_DOWNLOAD if session.state is SessionState.DELIVERED else POINT_ELIGIBILITY
        error = StatusCodeError(CANCEL_STATUS.get(reason, status.CANCEL_UNDEFINED), f"session cancelled: {reason}")
        self.orders.report(profile, point, eid=session.eid, error=error)
        return {}

    # --- sessions ---------------------------------------------------------------------------------

    def _live_session(self, transaction_id: bytes, states: tuple[SessionState, ...], step: str) -> Session:
        session = self.store.session(transaction_id)
        if session is None:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "the RSP session identified by the transactionId is unknown")
        if session.state not in states:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN,
                                  f"the RSP session is {session.state.value}; {step} is not its next step")
        if session.state is not SessionState.DELIVERED and self.clock() > session.expires_at:
            raise StatusCodeError(status.TRANSACTION_ID_UNKNOWN, "the RSP session has timed out")
        return session


def _rpm_failures(order: RpmOrder, data: v3.LoadRpmPackageResultDataSigned) -> list[str]:
    """Why an RPM order did not fully succeed ([] if it did): a refused package, a failed command
    without continueOnFailure, commands that never ran."""
    final = data["finalResult"]
    if final.name != "rpmPackageExecutionResult":
        return [f"the eUICC refused the package: {final.chosen.native}"]
    commands = rpm.package_commands(v3.RpmPackage.load(order.package))
    outcomes = rpm.outcomes(data)
    failures = [f"{c.action} {c.iccid}: {o.result} {o.code}" for c, o in zip(commands, outcomes, strict=False)
                if not o.ok and not c.continue_on_failure]
    if len(outcomes) < len(commands):
        failures.append(f"{len(commands) - len(outcomes)} command(s) did not run")
    return failures


def _load_certificate(value, code: StatusCode, what: str) -> x509.Certificate:
    try:
        return load_certificate(value.dump())
    except DecodeError as exc:
        raise StatusCodeError(code, f"{what} certificate cannot be parsed: {exc}") from None


def _euicc_key(session: Session) -> ec.EllipticCurvePublicKey:
    return x509.load_der_x509_certificate(session.euicc_cert).public_key()


def _iccid_of(metadata) -> str | None:
    value = metadata["iccid"].native
    if value is None:
        return None
    try:
        return iccid_from_bcd(value)
    except DecodeError:
        return value.hex()
