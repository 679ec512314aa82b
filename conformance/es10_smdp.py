"""The SM-DP+ the runner plays against an eUICC under test (ES10 cases), written from SGP.22 5.6/5.5.

It signs serverSigned1 and smdpSigned2 with its DPauth/DPpb keys, binds TS.48 test profiles for the
card's one-time key (``rsp.bpp``), and checks what the card signs: euiccSigned1 under a CERT.EUICC
that chains through CERT.EUM to a known CI, euiccSigned2, the ProfileInstallationResult and the
cancel response. Keyword arguments change one thing on purpose, for the negative cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import Credential, Pki
from certs.validate import Role, ValidatedChain, pkid, registered_id, validate_chain
from conformance.runner import CaseBlocked, CaseFailed, require
from rsp import bpp, crypto
from rsp import messages as m
from rsp.errors import CertificateError
from rsp.ids import eid_to_bytes, iccid_to_bcd, luhn_check_digit
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from rsp.tlv import encode_tlv

Rng = Callable[[int], bytes]
Clock = Callable[[], datetime]

RUNNER_ADDRESS = "conformance.kinsim.test"  # serverAddress; the card's notifications name it
MATCHING_ID = "KINSIM-CONFORMANCE"
DEVICE_INFO = {"tac": bytes.fromhex("35000011"), "deviceCapabilities": {"eutranSupportedRelease": b"\x0f\x00\x00"}}
TAG_SIGNATURE = 0x5F37


@dataclass
class CardSession:
    """One RSP session with the card, as the runner's SM-DP+ sees it."""

    challenge: bytes
    transaction_id: bytes
    ci_pkid: bytes | None = None
    request: m.AuthenticateServerRequest | None = None
    ok: m.AuthenticateResponseOk | None = None  # the card's authenticateResponseOk
    euicc: ValidatedChain | None = None
    smdp_signature2: bytes | None = None  # r || s
    euicc_otpk: bytes | None = None


class RunnerSmdp:
    def __init__(self, pki: Pki, *, rng: Rng, clock: Clock, address: str = RUNNER_ADDRESS):
        self.pki = pki
        self.rng = rng
        self.clock = clock
        self.address = address

    @property
    def oid(self) -> str:
        return registered_id(self.pki.dp_auth.cert) or ""

    @property
    def curve(self) -> str:
        return crypto.curve_name(self.pki.dp_pb.cert.public_key())

    # --- AuthenticateServer (5.7.13) ----------------------------------------------------------------

    def authenticate_server(self, session: CardSession, *, auth: Credential | None = None,
                            signing_key: ec.EllipticCurvePrivateKey | None = None, ci_pkid: bytes | None = None,
                            euicc_challenge: bytes | None = None, transaction_id: bytes | None = None,
                            certificate_der: bytes | None = None) -> m.AuthenticateServerRequest:
        auth = auth or self.pki.dp_auth
        signed1 = m.ServerSigned1({
            "transactionId": transaction_id or session.transaction_id,
            "euiccChallenge": euicc_challenge or session.challenge,
            "serverAddress": self.address,
            "serverChallenge": self.rng(16),
        })
        request = m.AuthenticateServerRequest({
            "serverSigned1": signed1,
            "serverSignature1": crypto.sign(signing_key or auth.signing_key(), signed1.dump()),
            "euiccCiPKIdToBeUsed": ci_pkid or session.ci_pkid,
            "serverCertificate": asn1_x509.Certificate.load(certificate_der) if certificate_der else _asn1(auth.cert),
            "ctxParams1": m.CtxParams1(name="ctxParamsForCommonAuthentication",
                                       value={"matchingId": MATCHING_ID, "deviceInfo": DEVICE_INFO}),
        })
        session.request = request
        return request

    def check_authenticated(self, session: CardSession, response: m.AuthenticateServerResponse,
                            cis: list[x509.Certificate], eid: str) -> None:
        """SGP.22 5.6.3 seen from the SM-DP+: echoes, eUICC chain, euiccSignature1, EID."""
        require(response.name == "authenticateResponseOk",
                f"AuthenticateServer answered {response.name} {response.chosen.native}")
        ok = response.chosen
        signed1, sent = ok["euiccSigned1"], session.request["serverSigned1"]
        require(signed1["transactionId"].native == session.transaction_id, "euiccSigned1 has another transactionId")
        require(signed1["serverAddress"].native == sent["serverAddress"].native, "euiccSigned1 has another serverAddress")
        require(signed1["serverChallenge"].native == sent["serverChallenge"].native,
                "euiccSigned1 has another serverChallenge")
        require(signed1["ctxParams1"].dump() == session.request["ctxParams1"].dump(),
                "euiccSigned1.ctxParams1 differs from what the LPA sent")
        chain = self.euicc_chain(ok, cis)
        require(crypto.verify(chain.public_key, signed1.dump(), ok["euiccSignature1"].native),
                "euiccSignature1 does not verify with CERT.EUICC")
        require(chain.eid == eid, f"CERT.EUICC is for EID {chain.eid}, GetEID says {eid}")
        session.ok, session.euicc = ok, chain

    def euicc_chain(self, ok: m.AuthenticateResponseOk, cis: list[x509.Certificate]) -> ValidatedChain:
        try:
            euicc = x509.load_der_x509_certificate(ok["euiccCertificate"].dump())
            eum = x509.load_der_x509_certificate(ok["eumCertificate"].dump())
            return validate_chain(euicc, Role.EUICC, intermediates=[eum], trusted_cis=cis, now=self.clock())
        except (CertificateError, ValueError) as exc:
            raise CaseFailed(f"the card's eUICC certificate chain is not acceptable: {exc}") from None

    # --- PrepareDownload (5.7.5) --------------------------------------------------------------------

    def prepare_download(self, session: CardSession, *, pb: Credential | None = None,
                         signing_key: ec.EllipticCurvePrivateKey | None = None,
                         transaction_id: bytes | None = None) -> m.PrepareDownloadRequest:
        pb = pb or self.pki.dp_pb
        signed2 = m.SmdpSigned2({"transactionId": transaction_id or session.transaction_id, "ccRequiredFlag": False})
        signature1 = encode_tlv(TAG_SIGNATURE, session.ok["euiccSignature1"].native)
        signature2 = crypto.sign(signing_key or pb.signing_key(), signed2.dump() + signature1)
        session.smdp_signature2 = signature2
        return m.PrepareDownloadRequest({"smdpSigned2": signed2, "smdpSignature2": signature2,
                                         "smdpCertificate": _asn1(pb.cert)})

    def check_prepared(self, session: CardSession, response: m.PrepareDownloadResponse) -> None:
        require(response.name == "downloadResponseOk",
                f"PrepareDownload answered {response.name} {response.chosen.native}")
        signed2 = response.chosen["euiccSigned2"]
        require(signed2["transactionId"].native == session.transaction_id, "euiccSigned2 has another transactionId")
        otpk = signed2["euiccOtpk"].native
        try:
            crypto.load_public_point(self.curve, otpk)
        except Exception as exc:
            raise CaseFailed(f"euiccOtpk is not a point of the DPpb curve: {exc}") from None
        data = signed2.dump() + encode_tlv(TAG_SIGNATURE, session.smdp_signature2)
        require(crypto.verify(session.euicc.public_key, data, response.chosen["euiccSignature2"].native),
                "euiccSignature2 does not verify over euiccSigned2 || smdpSignature2")
        session.euicc_otpk = otpk

    # --- binding (5.5, 2.5.4) -----------------------------------------------------------------------

    def bind(self, session: CardSession, metadata: bytes, upp: bytes, *, transaction_id: bytes | None = None,
             pb_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        return bpp.build_bound_profile_package(
            transaction_id=transaction_id or session.transaction_id, eid=eid_to_bytes(session.euicc.eid),
            euicc_otpk=session.euicc_otpk, smdp_otsk=crypto.generate_private_key(self.curve, self.rng),
            dp_pb_key=pb_key or self.pki.dp_pb.signing_key(), metadata=metadata, upp=upp,
            dp_oid=registered_id(self.pki.dp_pb.cert))

    def new_iccid(self) -> str:
        body = "8999" + str(int.from_bytes(self.rng(8), "big") % 10**14).zfill(14)
        return body + luhn_check_digit(body)

    def profile(self, iccid: str, *, package_iccid: str | None = None) -> tuple[bytes, bytes]:
        """(StoreMetadataRequest DER, TS.48 v7 personalized) for ``iccid`` (the package may say otherwise)."""
        metadata = m.StoreMetadataRequest({"iccid": iccid_to_bcd(iccid), "serviceProviderName": "kinsim",
                                           "profileName": "conformance test profile"}).dump()
        upp = personalize(ts48_profile(), iccid=package_iccid or iccid, imsi="001010000000001", ki=bytes(range(16)),
                          opc=bytes(16))
        return metadata, upp

    # --- results the card signs ---------------------------------------------------------------------

    def check_installed(self, session: CardSession, result: m.ProfileInstallationResult, iccid: str) -> bytes:
        """The successful ProfileInstallationResult (5.7.6); returns the ISD-P AID."""
        data = result["profileInstallationResultData"]
        final = data["finalResult"]
        require(final.name == "successResult", f"installation failed: {final.chosen.native}")
        self.check_result_data(session, result, iccid)
        return final.chosen["aid"].native

    def check_result_data(self, session: CardSession, result: m.ProfileInstallationResult, iccid: str | None) -> None:
        data = result["profileInstallationResultData"]
        metadata = data["notificationMetadata"]
        require(data["transactionId"].native == session.transaction_id, "the installation result has another transactionId")
        require(crypto.verify(session.euicc.public_key, data.dump(), result["euiccSignPIR"].native),
                "euiccSignPIR does not verify with CERT.EUICC")
        require(metadata["profileManagementOperation"].native == {"notificationInstall"},
                "the installation result's notification is not notificationInstall")
        require(metadata["notificationAddress"].native == self.address,
                "the installation result's notificationAddress is not the SM-DP+ address")
        if iccid is not None and metadata["iccid"].native is not None:
            require(metadata["iccid"].native == iccid_to_bcd(iccid), "the installation result names another ICCID")

    def check_cancelled(self, session: CardSession, response: m.CancelSessionResponse, reason: int) -> None:
        require(response.name == "cancelSessionResponseOk", f"CancelSession answered {response.chosen.native}")
        signed = response.chosen["euiccCancelSessionSigned"]
        require(signed["transactionId"].native == session.transaction_id, "the cancellation has another transactionId")
        require(signed["smdpOid"].native == self.oid, f"the cancellation names SM-DP+ OID {signed['smdpOid'].native}")
        require(int(signed["reason"]) == reason, f"the cancellation gives reason {signed['reason'].native}")
        require(crypto.verify(session.euicc.public_key, signed.dump(),
                              response.chosen["euiccCancelSessionSignature"].native),
                "euiccCancelSessionSignature does not verify")

    def choose_ci(self, info1: m.EUICCInfo1, cis: list[x509.Certificate]) -> bytes:
        """The CI the card shall sign under: one it offers for signing that the runner can validate."""
        require(pkid(self.pki.ci.cert) in info1["euiccCiPKIdListForVerification"].native,
                "the card does not trust the runner's CI (euiccCiPKIdListForVerification)")
        known = {pkid(ci) for ci in cis}
        offered = list(info1["euiccCiPKIdListForSigning"].native)
        chosen = next((p for p in offered if p in known), None)
        if chosen is None:
            raise CaseBlocked("the card signs under no CI the runner knows: give its CI with --card-ci")
        return chosen


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(Credential(cert).cert_der)
