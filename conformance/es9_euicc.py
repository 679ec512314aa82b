"""The eUICC (and LPA) the runner plays against an SM-DP+ under test, written from SGP.22 5.7.

It signs what an eUICC signs (euiccSigned1, euiccSigned2, the ProfileInstallationResult, cancel and
other notifications) with a test identity, checks everything the SM-DP+ signs the way a card does,
and opens the Bound Profile Package with the session keys. Keyword arguments of each step change one
thing on purpose, for the negative cases. Checks raise ``CaseFailed`` naming what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from certs.validate import Role, ValidatedChain, pkid, validate_chain
from conformance.identity import EuiccMaterial
from conformance.runner import CaseFailed, require
from rsp import bpp, crypto
from rsp import messages as m
from rsp.activation import hash_confirmation_code
from rsp.bsp import BspError, replace_session_keys, unprotect_segments
from rsp.errors import CertificateError, DecodeError
from rsp.ids import eid_to_bytes, iccid_from_bcd, iccid_to_bcd
from rsp.saip import ProfilePackage

Rng = Callable[[int], bytes]
Clock = Callable[[], datetime]

SVN = b"\x02\x05\x00"  # v2.5.0
DEVICE_INFO = {"tac": bytes.fromhex("35000011"), "deviceCapabilities": {"eutranSupportedRelease": b"\x0f\x00\x00"}}
POSTPONED = 1  # CancelSessionReason postponed(1)
ISDP_AID = bytes.fromhex("A0000005591010FFFFFFFF8900001000")


@dataclass
class Session:
    """What the eUICC remembers of one RSP session (and what the LPA received)."""

    challenge: bytes
    transaction_id: bytes | None = None
    init: dict | None = None  # InitiateAuthentication response
    dp_auth: ValidatedChain | None = None
    euicc_signature1: core.OctetString | None = None  # the '5F37' data object the eUICC sent
    auth: dict | None = None  # AuthenticateClient response
    dp_pb: ValidatedChain | None = None
    otsk: ec.EllipticCurvePrivateKey | None = None
    bound: m.BoundProfilePackage | None = None

    @property
    def cc_required(self) -> bool:
        return bool(self.auth and self.auth["smdpSigned2"]["ccRequiredFlag"].native)

    @property
    def iccid(self) -> str:
        return iccid_from_bcd(self.auth["profileMetadata"]["iccid"].native)


class RunnerEuicc:
    def __init__(self, material: EuiccMaterial, server_ci: x509.Certificate, *, rng: Rng, clock: Clock):
        self.material = material
        self.server_ci = server_ci
        self.rng = rng
        self.clock = clock
        self.seq = 0

    @property
    def server_ci_pkid(self) -> bytes:
        return pkid(self.server_ci)

    # --- InitiateAuthentication (5.6.1) -------------------------------------------------------------

    def info1(self, *, svn: bytes = SVN, verification: list[bytes] | None = None,
              signing: list[bytes] | None = None) -> m.EUICCInfo1:
        return m.EUICCInfo1({"svn": svn, "euiccCiPKIdListForVerification": verification or [self.server_ci_pkid],
                             "euiccCiPKIdListForSigning": signing or [self.material.signing_ci_pkid]})

    def info2(self) -> m.EUICCInfo2:
        return m.EUICCInfo2({
            "profileVersion": b"\x02\x03\x01", "svn": SVN, "euiccFirmwareVer": b"\x01\x00\x00",
            "extCardResource": bytes.fromhex("8101008204001000008304000100"),
            "uiccCapability": {"usimSupport", "isimSupport", "csimSupport", "akaMilenage"},
            "rspCapability": {"additionalProfile", "testProfileSupport"},
            "euiccCiPKIdListForVerification": [self.server_ci_pkid],
            "euiccCiPKIdListForSigning": [self.material.signing_ci_pkid],
            "ppVersion": b"\x00\x00\x00", "sasAcreditationNumber": "KINSIM-CONFORMANCE",
        })

    def initiate_values(self, session: Session, address: str, **info1) -> dict:
        return {"euiccChallenge": session.challenge, "euiccInfo1": self.info1(**info1), "smdpAddress": address}

    def check_initiate(self, session: Session, init: dict, address: str) -> None:
        """What the LPA and eUICC check of InitiateAuthentication (3.1.2, 5.7.13)."""
        signed1 = init["serverSigned1"]
        require(init["transactionId"] == signed1["transactionId"].native,
                 "transactionId differs from serverSigned1.transactionId")
        require(signed1["euiccChallenge"].native == session.challenge, "serverSigned1 carries another euiccChallenge")
        require(signed1["serverAddress"].native.lower() == address.lower(),
                 f"serverSigned1.serverAddress is {signed1['serverAddress'].native!r}, not {address!r}")
        require(init["euiccCiPKIdToBeUsed"].native == self.material.signing_ci_pkid,
                 "euiccCiPKIdToBeUsed is not the CI of the eUICC's certificate")
        chain = self._server_chain(init["serverCertificate"], Role.DP_AUTH)
        require(crypto.verify(chain.public_key, signed1.dump(), init["serverSignature1"].native),
                 "serverSignature1 does not verify with CERT.DPauth")
        session.transaction_id, session.init, session.dp_auth = init["transactionId"], init, chain

    # --- AuthenticateServer (5.7.13) on the eUICC side -----------------------------------------------

    def authenticate_server(self, session: Session, matching_id: str | None, *, transaction_id: bytes | None = None,
                            server_challenge: bytes | None = None, key: ec.EllipticCurvePrivateKey | None = None,
                            euicc_cert: x509.Certificate | None = None, eum_cert: x509.Certificate | None = None,
                            bad_signature: bool = False) -> m.AuthenticateServerResponse:
        signed1 = session.init["serverSigned1"]
        params = {"deviceInfo": DEVICE_INFO}
        if matching_id is not None:
            params["matchingId"] = matching_id
        euicc_signed1 = m.EuiccSigned1({
            "transactionId": transaction_id or signed1["transactionId"].native,
            "serverAddress": signed1["serverAddress"].native,
            "serverChallenge": server_challenge or signed1["serverChallenge"].native,
            "euiccInfo2": self.info2(),
            "ctxParams1": m.CtxParams1(name="ctxParamsForCommonAuthentication", value=params),
        })
        signed = euicc_signed1.dump() + (b"\x00" if bad_signature else b"")
        ok = m.AuthenticateResponseOk({
            "euiccSigned1": euicc_signed1,
            "euiccSignature1": crypto.sign(key or self.material.euicc.signing_key(), signed),
            "euiccCertificate": _asn1(euicc_cert or self.material.euicc.cert),
            "eumCertificate": _asn1(eum_cert or self.material.eum.cert),
        })
        response = m.decode(m.AuthenticateServerResponse,
                            m.AuthenticateServerResponse(name="authenticateResponseOk", value=ok).dump())
        session.euicc_signature1 = response.chosen["euiccSignature1"]
        return response

    def check_authenticate_client(self, session: Session, auth: dict) -> None:
        """The LPA's checks and PrepareDownload's verification of smdpSigned2 (5.7.5)."""
        signed2 = auth["smdpSigned2"]
        require(auth["transactionId"] == session.transaction_id, "AuthenticateClient answered another transactionId")
        require(signed2["transactionId"].native == session.transaction_id, "smdpSigned2 is for another transactionId")
        chain = self._server_chain(auth["smdpCertificate"], Role.DP_PB)
        require(chain.oid == session.dp_auth.oid,
                 f"CERT.DPpb belongs to SM-DP+ {chain.oid}, CERT.DPauth to {session.dp_auth.oid}")
        signed = signed2.dump() + session.euicc_signature1.dump()
        require(crypto.verify(chain.public_key, signed, auth["smdpSignature2"].native),
                 "smdpSignature2 does not verify over smdpSigned2 || euiccSignature1")
        session.auth, session.dp_pb = auth, chain

    # --- PrepareDownload (5.7.5) --------------------------------------------------------------------

    def prepare_download(self, session: Session, code: str | None = None, *,
                         otsk: ec.EllipticCurvePrivateKey | None = None, transaction_id: bytes | None = None,
                         bad_signature: bool = False, smdp_signature2: bytes | None = None) -> m.PrepareDownloadResponse:
        session.otsk = otsk or crypto.generate_private_key(self._dp_pb_curve(session), self.rng)
        value = {"transactionId": transaction_id or session.transaction_id,
                 "euiccOtpk": crypto.public_key_bytes(session.otsk)}
        if code is not None:
            value["hashCc"] = hash_confirmation_code(code, session.transaction_id)
        signed2 = m.EUICCSigned2(value)
        smdp_signature = smdp_signature2 or session.auth["smdpSignature2"].dump()
        data = signed2.dump() + smdp_signature + (b"\x00" if bad_signature else b"")
        ok = m.PrepareDownloadResponseOk({"euiccSigned2": signed2,
                                          "euiccSignature2": crypto.sign(self.material.euicc.signing_key(), data)})
        return m.decode(m.PrepareDownloadResponse, m.PrepareDownloadResponse(name="downloadResponseOk", value=ok).dump())

    def _dp_pb_curve(self, session: Session) -> str:
        return crypto.curve_name(session.dp_pb.public_key) if session.dp_pb else self.material.curve

    # --- the Bound Profile Package (5.5, 2.5.4) ------------------------------------------------------

    def open_bpp(self, session: Session, bound: m.BoundProfilePackage) -> tuple[bytes, bytes]:
        """(metadata DER, profile package DER), after every check the card makes."""
        isc = bound["initialiseSecureChannelRequest"]
        require(isc["transactionId"].native == session.transaction_id,
                 "InitialiseSecureChannel is for another transactionId")
        otpk = crypto.public_key_bytes(session.otsk)
        require(bpp.verify_smdp_sign(isc, otpk, session.dp_pb.public_key), "smdpSign does not verify with CERT.DPpb")
        try:
            ctx = bpp.open_secure_channel(isc, session.otsk, eid_to_bytes(self.material.eid))
            unprotect_segments(ctx, [e.dump() for e in bound["firstSequenceOf87"]], tag=0x87, encrypted=True)
            metadata = unprotect_segments(ctx, [e.dump() for e in bound["sequenceOf88"]], tag=0x88, encrypted=False)
            if bound["secondSequenceOf87"].native is not None:
                keys = m.decode(m.ReplaceSessionKeysRequest, unprotect_segments(
                    ctx, [e.dump() for e in bound["secondSequenceOf87"]], tag=0x87, encrypted=True))
                ctx = replace_session_keys(keys["ppkEnc"].native, keys["ppkCmac"].native,
                                           keys["initialMacChainingValue"].native)
            upp = unprotect_segments(ctx, [e.dump() for e in bound["sequenceOf86"]], tag=0x86, encrypted=True)
            package = ProfilePackage.decode(upp)
        except (BspError, DecodeError) as exc:
            raise CaseFailed(f"the Bound Profile Package does not open: {exc}") from None
        require(metadata == session.auth["profileMetadata"].dump(),
                 "the metadata inside the BPP differs from AuthenticateClient's profileMetadata")
        require(package.iccid == session.iccid,
                 f"the profile holds ICCID {package.iccid}, the metadata {session.iccid}")
        session.bound = bound
        return metadata, upp

    # --- notifications and cancellation (5.7.6, 5.7.14, 3.5) ----------------------------------------

    def installation_result(self, session: Session, address: str) -> m.PendingNotification:
        self.seq += 1
        data = m.ProfileInstallationResultData({
            "transactionId": session.transaction_id,
            "notificationMetadata": {"seqNumber": self.seq, "profileManagementOperation": {"notificationInstall"},
                                     "notificationAddress": address, "iccid": iccid_to_bcd(session.iccid)},
            "smdpOid": session.dp_pb.oid,
            "finalResult": {"successResult": {"aid": ISDP_AID, "simaResponse": b"\x30\x00"}},
        })
        pir = m.ProfileInstallationResult({"profileInstallationResultData": data,
                                           "euiccSignPIR": crypto.sign(self.material.euicc.signing_key(), data.dump())})
        return m.decode(m.PendingNotification, pir.dump())

    def other_notification(self, iccid: str, address: str, operation: str = "notificationDelete") -> m.PendingNotification:
        self.seq += 1
        tbs = m.NotificationMetadata({"seqNumber": self.seq, "profileManagementOperation": {operation},
                                      "notificationAddress": address, "iccid": iccid_to_bcd(iccid)})
        value = m.OtherSignedNotification({
            "tbsOtherNotification": tbs,
            "euiccNotificationSignature": crypto.sign(self.material.euicc.signing_key(), tbs.dump()),
            "euiccCertificate": _asn1(self.material.euicc.cert), "eumCertificate": _asn1(self.material.eum.cert),
        })
        return m.decode(m.PendingNotification, m.PendingNotification(name="otherSignedNotification", value=value).dump())

    def cancel(self, transaction_id: bytes, smdp_oid: str, reason: int = POSTPONED, *,
               bad_signature: bool = False) -> m.CancelSessionResponse:
        signed = m.EuiccCancelSessionSigned({"transactionId": transaction_id, "smdpOid": smdp_oid, "reason": reason})
        data = signed.dump() + (b"\x00" if bad_signature else b"")
        ok = m.CancelSessionResponseOk({"euiccCancelSessionSigned": signed,
                                        "euiccCancelSessionSignature": crypto.sign(self.material.euicc.signing_key(), data)})
        return m.decode(m.CancelSessionResponse, m.CancelSessionResponse(name="cancelSessionResponseOk", value=ok).dump())

    # --- helpers ------------------------------------------------------------------------------------

    def _server_chain(self, value: asn1_x509.Certificate, role: Role) -> ValidatedChain:
        try:
            cert = x509.load_der_x509_certificate(value.dump())
            return validate_chain(cert, role, trusted_cis=[self.server_ci], now=self.clock())
        except (CertificateError, ValueError) as exc:
            raise CaseFailed(f"the SM-DP+'s {role.label} certificate is not acceptable: {exc}") from None


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
