"""Test helpers for the software eUICC: a reader that speaks ES10 in STORE DATA APDUs, and the
"SM-DP+ side" (signing serverSigned1 / smdpSigned2, binding packages) that the card checks.

Everything reaches the card through ``Card.transmit``, as a reader would (SGP.22 5.7.2).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import Credential, Pki, generate_pki
from euicc_sim.apdu import ISD_R_AID, Card
from euicc_sim.card import SoftEuicc, create_euicc, open_euicc
from euicc_sim.identity import EuiccConfig, issue_identity
from rsp import bpp, crypto
from rsp import messages as m
from rsp.bsp import SessionKeys
from rsp.errors import ApduError
from rsp.ids import eid_to_bytes, iccid_to_bcd, luhn_check_digit
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from rsp.tlv import encode_tlv

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)  # the card's clock in tests: certificates stay valid
SMDP_ADDRESS = "smdp.example.com"
SMDP_OID = "2.999.10"
DEVICE_INFO = {
    "tac": bytes.fromhex("35290611"),
    "deviceCapabilities": {"eutranSupportedRelease": b"\x0f\x00\x00"},
}
ENABLE_ADDRESS = "enable.example.com"
DISABLE_ADDRESS = "disable.example.com"
DELETE_ADDRESS = "delete.example.com"
OWNER = {"mccMnc": bytes.fromhex("00f110")}  # MCC 001, MNC 01 (TS 24.008 coding)


def pki_for(curve: str = "nist", oid: str = SMDP_OID) -> Pki:
    """One generated SGP.22 hierarchy per curve and SM-DP+ OID (CI, EUM with key, DPauth, DPpb)."""
    return _pki(curve, oid)


@cache
def _pki(curve: str, oid: str) -> Pki:
    return generate_pki(curve, smdp_address="localhost", smdp_oid=oid, now=NOW - timedelta(days=1))


def clock() -> datetime:
    return NOW


def iccid(number: int) -> str:
    body = f"89882{number:013d}"
    return body + luhn_check_digit(body)


@cache
def profile_package(iccid_digits: str) -> bytes:
    """The TS.48 v7 test profile personalized with this ICCID."""
    return personalize(
        ts48_profile(), iccid=iccid_digits, imsi="001010123456789", ki=bytes(range(16)), opc=bytes(16)
    )


def metadata(
    iccid_digits: str,
    *,
    profile_class: str | None = None,
    pprs: set[str] | None = None,
    owner: dict | None = None,
    notify: dict[str, str] | None = None,
    name: str = "Family plan",
) -> bytes:
    """StoreMetadataRequest DER. ``notify`` maps NotificationEvent names to addresses."""
    value = {"iccid": iccid_to_bcd(iccid_digits), "serviceProviderName": "Kinsim Mobile", "profileName": name}
    if profile_class is not None:
        value["profileClass"] = profile_class
    if pprs:
        value["profilePolicyRules"] = pprs
    if owner is not None:
        value["profileOwner"] = owner
    if notify:
        value["notificationConfigurationInfo"] = [
            {"profileManagementOperation": {event}, "notificationAddress": address}
            for event, address in notify.items()
        ]
    return m.StoreMetadataRequest(value).dump()


def default_notify() -> dict[str, str]:
    return {
        "notificationEnable": ENABLE_ADDRESS,
        "notificationDisable": DISABLE_ADDRESS,
        "notificationDelete": DELETE_ADDRESS,
    }


# --- the card ---------------------------------------------------------------------------------


def make_euicc_dir(directory: Path, *, curve: str = "nist", config: EuiccConfig | None = None) -> Path:
    pki = pki_for(curve)
    identity = issue_identity(
        pki.eum, [pki.ci.cert], config=config or EuiccConfig(), now=NOW - timedelta(hours=1)
    )
    create_euicc(directory, identity)
    return directory


def open_test_euicc(directory: Path, **kwargs) -> SoftEuicc:
    return open_euicc(directory, clock=clock, **kwargs)


class Reader:
    """ES10 over APDUs: SELECT the ISD-R, STORE DATA blocks of 255 bytes, GET RESPONSE (SGP.22 5.7.2)."""

    def __init__(self, card: Card, channel_cla: int = 0x00):
        self.card = card
        self.cla = channel_cla
        data, sw = self.transmit(bytes([self.cla, 0xA4, 0x04, 0x00, len(ISD_R_AID)]) + ISD_R_AID)
        assert sw == 0x9000, f"SELECT ISD-R answered {sw:04X}"

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        response = self.card.transmit(apdu)
        data, sw = response[:-2], int.from_bytes(response[-2:], "big")
        while sw & 0xFF00 == 0x6100:
            response = self.card.transmit(bytes([self.cla | 0x80, 0xC0, 0x00, 0x00, sw & 0xFF]))
            data, sw = data + response[:-2], int.from_bytes(response[-2:], "big")
        return data, sw

    def store_data(self, request: bytes) -> tuple[bytes, int]:
        blocks = [request[i : i + 255] for i in range(0, len(request), 255)]
        for number, block in enumerate(blocks):
            last = number == len(blocks) - 1
            apdu = bytes([self.cla | 0x80, 0xE2, 0x91 if last else 0x11, number, len(block)]) + block
            data, sw = self.transmit(apdu)
            if not last and sw != 0x9000:
                return data, sw
        return data, sw

    def es10(self, request: bytes) -> bytes:
        data, sw = self.store_data(request)
        if sw != 0x9000:
            raise ApduError(sw, f"ES10 request {request[:2].hex().upper()}")
        return data

    def call(self, request, response_type):
        """Send an rsp.messages request value, decode the answer as ``response_type``."""
        return m.decode(response_type, self.es10(request.dump()))

    def challenge(self) -> bytes:
        return self.call(m.GetEuiccChallengeRequest({}), m.GetEuiccChallengeResponse)["euiccChallenge"].native

    def profiles(self) -> list[dict]:
        return self.call(m.ProfileInfoListRequest({}), m.ProfileInfoListResponse).chosen.native

    def notifications(self) -> list[dict]:
        return self.call(m.ListNotificationRequest({}), m.ListNotificationResponse).chosen.native

    def enable(self, iccid_digits: str) -> int:
        request = m.EnableProfileRequest(
            {
                "profileIdentifier": m.ProfileIdentifier(name="iccid", value=iccid_to_bcd(iccid_digits)),
                "refreshFlag": False,
            }
        )
        return self.call(request, m.EnableProfileResponse)["enableResult"].native

    def disable(self, iccid_digits: str) -> int:
        request = m.DisableProfileRequest(
            {
                "profileIdentifier": m.ProfileIdentifier(name="iccid", value=iccid_to_bcd(iccid_digits)),
                "refreshFlag": False,
            }
        )
        return self.call(request, m.DisableProfileResponse)["disableResult"].native

    def delete(self, iccid_digits: str) -> int:
        request = m.DeleteProfileRequest(name="iccid", value=iccid_to_bcd(iccid_digits))
        return self.call(request, m.DeleteProfileResponse)["deleteResult"].native


# --- the SM-DP+ side --------------------------------------------------------------------------


def reissue(
    template: Credential,
    issuer: Credential,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    drop_alt_name: bool = False,
    not_after: datetime | None = None,
) -> Credential:
    """``template`` signed again by ``issuer``, with another key, without its OID, or expiring earlier."""
    cert = template.cert
    key = key or template.signing_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(not_after or cert.not_valid_after_utc)
    )
    for extension in cert.extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName) and drop_alt_name:
            continue
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, extension.critical)
    return Credential(builder.sign(issuer.signing_key(), hashes.SHA256()), key)


def _cert(credential: Credential) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(credential.cert_der)


def _sign(credential: Credential, data: bytes) -> bytes:
    """r || s; a key off the SGP.22 curves cannot make one, so it gets filler the card must not reach."""
    key = credential.signing_key()
    return crypto.sign(key, data) if key.curve.key_size == 256 else bytes(range(1, 65))


@dataclass
class SmdpSide:
    """Signs what an SM-DP+ signs, with a generated PKI (outside the unit under test)."""

    pki: Pki = field(default_factory=pki_for)
    address: str = SMDP_ADDRESS
    transaction_id: bytes = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")
    server_challenge: bytes = bytes(range(16, 32))
    euicc_signature1: bytes | None = None
    smdp_signature2: bytes | None = None

    def authenticate_server(
        self,
        euicc_challenge: bytes,
        *,
        auth: Credential | None = None,
        pkid: bytes | None = None,
        transaction_id: bytes | None = None,
        matching_id: str = "KINSIM-1",
    ) -> m.AuthenticateServerRequest:
        auth = auth or self.pki.dp_auth
        signed1 = m.ServerSigned1(
            {
                "transactionId": transaction_id or self.transaction_id,
                "euiccChallenge": euicc_challenge,
                "serverAddress": self.address,
                "serverChallenge": self.server_challenge,
            }
        )
        return m.AuthenticateServerRequest(
            {
                "serverSigned1": signed1,
                "serverSignature1": _sign(auth, signed1.dump()),
                "euiccCiPKIdToBeUsed": pkid or self.pki.ci.pkid,
                "serverCertificate": _cert(auth),
                "ctxParams1": m.CtxParams1(
                    name="ctxParamsForCommonAuthentication",
                    value={"matchingId": matching_id, "deviceInfo": DEVICE_INFO},
                ),
            }
        )

    def prepare_download(
        self,
        authenticate_response: m.AuthenticateServerResponse,
        *,
        pb: Credential | None = None,
        transaction_id: bytes | None = None,
        bpp_euicc_otpk: bytes | None = None,
        cc_required: bool = False,
        hash_cc: bytes | None = None,
    ) -> m.PrepareDownloadRequest:
        """What AuthenticateClient returns: smdpSigned2 signed over smdpSigned2 || '5F37' euiccSignature1."""
        ok = authenticate_response.chosen
        self.euicc_signature1 = ok["euiccSignature1"].native
        pb = pb or self.pki.dp_pb
        signed2 = m.SmdpSigned2(
            {"transactionId": transaction_id or self.transaction_id, "ccRequiredFlag": cc_required}
        )
        if bpp_euicc_otpk is not None:
            signed2["bppEuiccOtpk"] = bpp_euicc_otpk
        signature2 = _sign(pb, signed2.dump() + encode_tlv(0x5F37, self.euicc_signature1))
        self.smdp_signature2 = signature2
        request = m.PrepareDownloadRequest(
            {"smdpSigned2": signed2, "smdpSignature2": signature2, "smdpCertificate": _cert(pb)}
        )
        if hash_cc is not None:
            request["hashCc"] = hash_cc
        return request

    def bind(
        self,
        prepare_response: m.PrepareDownloadResponse,
        eid: str,
        metadata_der: bytes,
        upp: bytes,
        *,
        ppk: SessionKeys | None = None,
        transaction_id: bytes | None = None,
        pb_key=None,
    ) -> bytes:
        """GetBoundProfilePackage: the BPP for the card's otPK (rsp.bpp, the SM-DP+'s code)."""
        euicc_otpk = prepare_response.chosen["euiccSigned2"]["euiccOtpk"].native
        curve = crypto.curve_name(self.pki.dp_pb.cert.public_key())
        return bpp.build_bound_profile_package(
            transaction_id=transaction_id or self.transaction_id,
            eid=eid_to_bytes(eid),
            euicc_otpk=euicc_otpk,
            smdp_otsk=crypto.generate_private_key(curve),
            dp_pb_key=pb_key or self.pki.dp_pb.signing_key(),
            metadata=metadata_der,
            upp=upp,
            dp_oid=SMDP_OID,
            ppk=ppk,
        )


@dataclass
class Download:
    """One download's artefacts, for tests that tamper with a step."""

    challenge: bytes
    authenticate: m.AuthenticateServerResponse
    prepare: m.PrepareDownloadResponse
    package: bytes  # the Bound Profile Package
    segments: list[bytes]


def prepare(
    reader: Reader,
    smdp: SmdpSide,
    eid: str,
    iccid_digits: str,
    *,
    metadata_der: bytes | None = None,
    upp: bytes | None = None,
    ppk: SessionKeys | None = None,
) -> Download:
    """Everything up to LoadBoundProfilePackage: challenge, AuthenticateServer, PrepareDownload, binding."""
    challenge = reader.challenge()
    authenticate = reader.call(smdp.authenticate_server(challenge), m.AuthenticateServerResponse)
    assert authenticate.name == "authenticateResponseOk", authenticate.native
    prepared = reader.call(smdp.prepare_download(authenticate), m.PrepareDownloadResponse)
    assert prepared.name == "downloadResponseOk", prepared.native
    package = smdp.bind(
        prepared, eid, metadata_der or metadata(iccid_digits), upp or profile_package(iccid_digits), ppk=ppk
    )
    return Download(challenge, authenticate, prepared, package, bpp.segments(package))


def load(reader: Reader, segments: list[bytes]) -> m.ProfileInstallationResult:
    """LoadBoundProfilePackage segment by segment; every segment but the last answers no data."""
    for segment in segments[:-1]:
        assert reader.es10(segment) == b""
    return m.decode(m.ProfileInstallationResult, reader.es10(segments[-1]))


def install(
    reader: Reader, smdp: SmdpSide, eid: str, iccid_digits: str, **kwargs
) -> m.ProfileInstallationResult:
    result = load(reader, prepare(reader, smdp, eid, iccid_digits, **kwargs).segments)
    final = result["profileInstallationResultData"]["finalResult"]
    assert final.name == "successResult", final.native
    return result


@dataclass
class Bench:
    """An open card, a reader on it and an SM-DP+ side: what most tests need."""

    euicc: SoftEuicc
    reader: Reader
    smdp: SmdpSide
    directory: Path

    @property
    def eid(self) -> str:
        return self.euicc.eid

    def install(self, iccid_digits: str, **kwargs) -> m.ProfileInstallationResult:
        return install(self.reader, self.smdp, self.eid, iccid_digits, **kwargs)

    def prepare(self, iccid_digits: str, **kwargs) -> Download:
        return prepare(self.reader, self.smdp, self.eid, iccid_digits, **kwargs)


@contextlib.contextmanager
def card_at(directory: Path, *, rng=None, **config):
    """An opened card with a Reader on it; ``config`` overrides EuiccConfig fields."""
    make_euicc_dir(directory, config=EuiccConfig(**config))
    with open_test_euicc(directory, rng=rng) as euicc:
        yield Bench(euicc, Reader(euicc.card), SmdpSide(), directory)
