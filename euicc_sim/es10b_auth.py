"""The eUICC side of common mutual authentication and download preparation (SGP.22 3.1.2, 3.1.3):
ES10b.GetEUICCChallenge (5.7.7), AuthenticateServer (5.7.13), PrepareDownload (5.7.5) and
CancelSession (5.7.14), around one RSP session context.

Signature inputs (verified over the bytes received, never re-encoded):
- serverSignature1 covers serverSigned1 (5.7.13);
- euiccSignature1 covers euiccSigned1 (5.7.13);
- smdpSignature2 covers smdpSigned2 || the euiccSignature1 data object '5F37' (5.7.5, 5.6.3);
- euiccSignature2 covers euiccSigned2 || the smdpSignature2 data object '5F37' (5.7.5, 5.6.2);
- euiccCancelSessionSignature covers euiccCancelSessionSigned (5.7.14).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import load_certificate
from certs.validate import Role, authority_key_id, pkid, registered_id, role_of, validate_chain
from euicc_sim.identity import EuiccIdentity
from rsp import crypto
from rsp import messages as m
from rsp.errors import CertificateError
from rsp.tlv import encode_tlv

TAG_SIGNATURE = 0x5F37
CHALLENGE_LENGTH = 16

# AuthenticateErrorCode / DownloadErrorCode / CancelSession error values (RSPDefinitions).
INVALID_CERTIFICATE, INVALID_SIGNATURE, UNSUPPORTED_CURVE, NO_SESSION_CONTEXT = 1, 2, 3, 4
INVALID_OID, EUICC_CHALLENGE_MISMATCH, CI_PK_UNKNOWN = 5, 6, 7
INVALID_TRANSACTION_ID = 5  # DownloadErrorCode and cancelSessionResponseError

AUTH_ROLES = (Role.DP_AUTH, Role.DS_AUTH)  # CERT.XXauth.ECDSA: an SM-DP+ or an SM-DS
SUPPORTED_CURVES = frozenset(curve.name for curve in crypto.CURVES.values())  # P-256, brainpoolP256r1

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """The RSP session context: opened by GetEUICCChallenge, bound to a transaction by
    AuthenticateServer, given a one-time key by PrepareDownload; ended by the download's end,
    CancelSession, a new challenge or a card reset."""

    euicc_challenge: bytes
    transaction_id: bytes | None = None
    server_address: str | None = None
    smdp_oid: str | None = None  # SM-DP+ OID from CERT.DPauth.ECDSA (CancelSession)
    euicc_signature1: bytes | None = None
    smdp_auth_key: ec.EllipticCurvePublicKey | None = None  # CERT.DPauth key: verifies smdpSignature3 (v3 RPM)
    dp_pb_key: ec.EllipticCurvePublicKey | None = None  # from CERT.DPpb.ECDSA, verifies smdpSign
    dp_pb_oid: str | None = None  # smdpOid of the ProfileInstallationResult
    euicc_otsk: ec.EllipticCurvePrivateKey | None = None  # otSK.EUICC.ECKA

    @property
    def authenticated(self) -> bool:
        return self.transaction_id is not None

    @property
    def prepared(self) -> bool:
        return self.euicc_otsk is not None


class _Refused(Exception):
    def __init__(self, code: int, detail: str):
        super().__init__(detail)
        self.code = code


# --- GetEUICCChallenge (5.7.7) ----------------------------------------------------------------


def new_session(rng: Callable[[int], bytes]) -> tuple[bytes, Session]:
    challenge = rng(CHALLENGE_LENGTH)
    response = m.GetEuiccChallengeResponse({"euiccChallenge": challenge})
    return response.dump(), Session(euicc_challenge=challenge)


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Server:
    key: ec.EllipticCurvePublicKey
    oid: str
    role: Role


def _check_server_certificate(
    value: asn1_x509.Certificate,
    roles: Sequence[Role],
    cis: Sequence[x509.Certificate],
    now: datetime,
    *,
    unknown_ci: int,
    invalid_oid: int,
) -> _Server:
    """Verify an RSP server certificate against the CIs the card trusts (SGP.22 4.5.2.2)."""
    try:
        cert = load_certificate(value.dump())
        try:
            key = cert.public_key()
        except UnsupportedAlgorithm:  # a curve cryptography does not even know
            raise _Refused(UNSUPPORTED_CURVE, "the server key is on an unknown curve") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
            raise _Refused(UNSUPPORTED_CURVE, "the server key is not on NIST P-256 or brainpoolP256r1")
        oid = registered_id(cert)
        if oid is None:
            raise _Refused(invalid_oid, "the server certificate carries no OID (subjectAltName registeredID)")
        issuer = authority_key_id(cert)
        trusted = [ci for ci in cis if pkid(ci) == issuer]
        if not trusted:
            raise _Refused(
                unknown_ci,
                f"the server certificate chains to CI {issuer.hex() if issuer else '-'}, "
                "which the eUICC does not trust",
            )
        role = role_of(cert)
        if role not in roles:
            raise _Refused(
                INVALID_CERTIFICATE, f"the server certificate is not a {' or '.join(r.label for r in roles)}"
            )
        chain = validate_chain(cert, role, trusted_cis=trusted, now=now)
    except CertificateError as exc:
        raise _Refused(INVALID_CERTIFICATE, str(exc)) from None
    except ValueError as exc:  # DecodeError (unparsable certificate) or an unreadable key
        raise _Refused(INVALID_CERTIFICATE, f"unreadable server certificate: {exc}") from None
    return _Server(key=chain.public_key, oid=oid, role=role)


def _cert_value(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


# --- AuthenticateServer (5.7.13) --------------------------------------------------------------


def authenticate_server(
    identity: EuiccIdentity,
    session: Session | None,
    request: m.AuthenticateServerRequest,
    euicc_info2: m.EUICCInfo2,
    now: datetime,
) -> tuple[bytes, Session | None]:
    """(response DER, the session afterwards); a failure ends the session (a new challenge is needed)."""
    signed1 = request["serverSigned1"]
    transaction_id = signed1["transactionId"].native
    try:
        server = _authenticate(identity, session, request, now)
    except _Refused as refused:
        _log.info("AuthenticateServer refused (%s): %s", refused.code, refused)
        error = m.AuthenticateServerResponse(
            name="authenticateResponseError",
            value={"transactionId": transaction_id, "authenticateErrorCode": refused.code},
        )
        return error.dump(), None
    euicc_signed1 = m.EuiccSigned1(
        {
            "transactionId": transaction_id,
            "serverAddress": signed1["serverAddress"].native,
            "serverChallenge": signed1["serverChallenge"].native,
            "euiccInfo2": euicc_info2,
            "ctxParams1": m.CtxParams1.load(request["ctxParams1"].dump()),  # as the LPA sent it
        }
    )
    signature1 = crypto.sign(identity.euicc.signing_key(), euicc_signed1.dump())
    response = m.AuthenticateServerResponse(
        name="authenticateResponseOk",
        value={
            "euiccSigned1": euicc_signed1,
            "euiccSignature1": signature1,
            "euiccCertificate": _cert_value(identity.euicc.cert),
            "eumCertificate": _cert_value(identity.eum),
        },
    )
    bound = replace(
        session,
        transaction_id=transaction_id,
        server_address=signed1["serverAddress"].native,
        smdp_oid=server.oid,
        euicc_signature1=signature1,
        smdp_auth_key=server.key if server.role is Role.DP_AUTH else None,  # an SM-DS sends no RPM package
    )
    return response.dump(), bound


def _authenticate(
    identity: EuiccIdentity, session: Session | None, request: m.AuthenticateServerRequest, now: datetime
) -> _Server:
    if session is None or session.authenticated:
        raise _Refused(NO_SESSION_CONTEXT, "no GetEUICCChallenge preceded AuthenticateServer")
    if request["euiccCiPKIdToBeUsed"].native not in identity.signing_pkids:
        raise _Refused(CI_PK_UNKNOWN, "euiccCiPKIdToBeUsed names a CI the eUICC has no certificate chain for")
    server = _check_server_certificate(
        request["serverCertificate"],
        AUTH_ROLES,
        identity.cis,
        now,
        unknown_ci=CI_PK_UNKNOWN,
        invalid_oid=INVALID_OID,
    )
    signed1 = request["serverSigned1"]
    if not crypto.verify(server.key, signed1.dump(), request["serverSignature1"].native):
        raise _Refused(INVALID_SIGNATURE, "serverSignature1 does not verify")
    if signed1["euiccChallenge"].native != session.euicc_challenge:
        raise _Refused(EUICC_CHALLENGE_MISMATCH, "serverSigned1 carries another euiccChallenge")
    return server


# --- PrepareDownload (5.7.5) ------------------------------------------------------------------


def prepare_download(
    identity: EuiccIdentity,
    session: Session | None,
    request: m.PrepareDownloadRequest,
    now: datetime,
    retained_otsk: ec.EllipticCurvePrivateKey | None,
    rng: Callable[[int], bytes],
) -> tuple[bytes, Session | None]:
    """(response DER, session afterwards). On failure the authenticated session stays (so the LPA can
    still cancel it); on success it holds otSK.EUICC.ECKA for the Bound Profile Package."""
    signed2 = request["smdpSigned2"]
    transaction_id = signed2["transactionId"].native
    try:
        server = _check_prepare(identity, session, request, now)
    except _Refused as refused:
        _log.info("PrepareDownload refused (%s): %s", refused.code, refused)
        error = m.PrepareDownloadResponse(
            name="downloadResponseError",
            value={"transactionId": transaction_id, "downloadErrorCode": refused.code},
        )
        return error.dump(), session
    otsk = _one_time_key(signed2["bppEuiccOtpk"].native, retained_otsk, crypto.curve_name(server.key), rng)
    euicc_signed2 = m.EUICCSigned2(
        {"transactionId": transaction_id, "euiccOtpk": crypto.public_key_bytes(otsk.public_key())}
    )
    if request["hashCc"].native is not None:  # passed on under the signature; the SM-DP+ checks it
        euicc_signed2["hashCc"] = request["hashCc"].native
    signature2 = crypto.sign(
        identity.euicc.signing_key(), euicc_signed2.dump() + request["smdpSignature2"].dump()
    )
    response = m.PrepareDownloadResponse(
        name="downloadResponseOk", value={"euiccSigned2": euicc_signed2, "euiccSignature2": signature2}
    )
    return response.dump(), replace(session, dp_pb_key=server.key, dp_pb_oid=server.oid, euicc_otsk=otsk)


def _check_prepare(
    identity: EuiccIdentity, session: Session | None, request: m.PrepareDownloadRequest, now: datetime
) -> _Server:
    if session is None or not session.authenticated or session.prepared:
        raise _Refused(
            NO_SESSION_CONTEXT, "PrepareDownload needs a session just authenticated by AuthenticateServer"
        )
    server = _check_server_certificate(
        request["smdpCertificate"],
        (Role.DP_PB,),
        identity.cis,
        now,
        unknown_ci=INVALID_CERTIFICATE,
        invalid_oid=INVALID_CERTIFICATE,
    )
    if server.oid != session.smdp_oid:
        raise _Refused(
            INVALID_CERTIFICATE,
            f"CERT.DPpb belongs to SM-DP+ {server.oid}, the session to {session.smdp_oid}",
        )
    signed2 = request["smdpSigned2"]
    signed_data = signed2.dump() + encode_tlv(TAG_SIGNATURE, session.euicc_signature1)
    if not crypto.verify(server.key, signed_data, request["smdpSignature2"].native):
        raise _Refused(INVALID_SIGNATURE, "smdpSignature2 does not verify")
    if signed2["transactionId"].native != session.transaction_id:
        raise _Refused(INVALID_TRANSACTION_ID, "smdpSigned2 belongs to another transaction")
    return server


def _one_time_key(
    bpp_euicc_otpk: bytes | None,
    retained: ec.EllipticCurvePrivateKey | None,
    curve: str,
    rng: Callable[[int], bytes],
) -> ec.EllipticCurvePrivateKey:
    """5.7.5: reuse the retained otSK when the SM-DP+ already bound a package to its public key (a
    retried download), otherwise generate a fresh pair on the DPpb curve."""
    if (
        bpp_euicc_otpk is not None
        and retained is not None
        and crypto.public_key_bytes(retained.public_key()) == bpp_euicc_otpk
    ):
        return retained
    return crypto.generate_private_key(curve, rng)


# --- CancelSession (5.7.14) -------------------------------------------------------------------


def cancel_session(
    identity: EuiccIdentity, session: Session | None, request: m.CancelSessionRequest
) -> tuple[bytes, Session | None]:
    transaction_id = request["transactionId"].native
    if session is None or not session.authenticated or session.transaction_id != transaction_id:
        error = m.CancelSessionResponse(name="cancelSessionResponseError", value=INVALID_TRANSACTION_ID)
        return error.dump(), session
    signed = m.EuiccCancelSessionSigned(
        {"transactionId": transaction_id, "smdpOid": session.smdp_oid, "reason": request["reason"].native}
    )
    signature = crypto.sign(identity.euicc.signing_key(), signed.dump())
    response = m.CancelSessionResponse(
        name="cancelSessionResponseOk",
        value={"euiccCancelSessionSigned": signed, "euiccCancelSessionSignature": signature},
    )
    return response.dump(), None
