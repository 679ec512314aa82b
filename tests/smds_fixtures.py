"""Test helpers for the SM-DS: a PKI, an eUICC stand-in that signs euiccSigned1 itself, a running
HTTPS SM-DS (ES11 and ES12 listeners) and the clients of both sides."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from certs.pki import Credential, Pki, generate_pki, issue_euicc, issue_tls, random_eid
from certs.validate import Role, authority_key_id, eid_of, pkid, validate_chain
from lpa.discovery import Es11Client
from lpa.es9_client import tls_context as lpa_tls_context
from rsp import crypto
from rsp import messages as m
from smdp.es12_client import Es12Client
from smdp.es12_client import tls_context as es12_tls_context
from smds.core import Smds, SmdsConfig
from smds.server import RunningServer, start
from smds.store import Store

# TLS checks certificates against the real clock, so the PKI is made for now; the core's clock is a
# Clock that starts at the same moment and only moves when a test moves it.
NOW = datetime.now(UTC).replace(microsecond=0)
EIN = "89049032"
DEVICE_INFO = {"tac": bytes.fromhex("35290611"), "deviceCapabilities": {"eutranSupportedRelease": b"\x0f\x00\x00"}}


class Clock:
    def __init__(self, start: datetime = NOW):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def pki(name: str = "main", curve: str = "nist") -> Pki:
    """A generated hierarchy (CI, EUM, eUICC, DP*, DS*) for "localhost"; ``name`` gives independent ones."""
    return _pki(name, curve)


@cache
def _pki(name: str, curve: str) -> Pki:
    return generate_pki(curve, smdp_address="localhost", now=NOW)


def second_euicc(name: str = "main") -> Credential:
    """Another eUICC of the same EUM: a different EID."""
    return _second_euicc(name)


@cache
def _second_euicc(name: str) -> Credential:
    return issue_euicc(pki(name).eum, random_eid(EIN), now=NOW)


@cache
def other_host_tls() -> Credential:
    """An SM-DP+ TLS certificate (also good for TLS clients) for another host, under the main CI."""
    return issue_tls(pki().ci, "smdp.other.example", Role.DP_TLS, oid="2.999.11", now=NOW)


def certificate_value(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(Credential(cert).cert_der)


def euicc_info2(signing: list[bytes], verification: list[bytes]) -> m.EUICCInfo2:
    return m.EUICCInfo2({
        "profileVersion": b"\x02\x03\x01", "svn": b"\x02\x05\x00", "euiccFirmwareVer": b"\x01\x00\x00",
        "extCardResource": bytes.fromhex("810100820400010000830200ff"),
        "uiccCapability": {"usimSupport", "akaMilenage"}, "rspCapability": {"additionalProfile"},
        "euiccCiPKIdListForVerification": verification, "euiccCiPKIdListForSigning": signing,
        "ppVersion": b"\x01\x00\x00", "sasAcreditationNumber": "KINSIM-TEST",
    })


def euicc_response(euicc: Credential, eum: x509.Certificate, *, transaction_id: bytes, server_address: str,
                   server_challenge: bytes, matching_id: str | None = None, info2: m.EUICCInfo2 | None = None,
                   signer: Credential | None = None, corrupt_signature: bool = False,
                   certificate: x509.Certificate | None = None) -> m.AuthenticateServerResponse:
    """An authenticateResponseOk as a card would build it, decoded from its bytes like a received one.

    ``signer`` signs instead of ``euicc`` (a key that does not match the certificate);
    ``corrupt_signature`` flips one bit of euiccSignature1; ``certificate`` is sent instead of euicc's.
    """
    context: dict = {"deviceInfo": DEVICE_INFO}
    if matching_id is not None:
        context["matchingId"] = matching_id
    issuer = authority_key_id(eum)
    signed1 = m.EuiccSigned1({
        "transactionId": transaction_id, "serverAddress": server_address, "serverChallenge": server_challenge,
        "euiccInfo2": info2 or euicc_info2([issuer], [issuer]),
        "ctxParams1": {"ctxParamsForCommonAuthentication": context},
    })
    signature = bytearray(crypto.sign((signer or euicc).signing_key(), signed1.dump()))
    if corrupt_signature:
        signature[5] ^= 0x01
    response = m.AuthenticateServerResponse(name="authenticateResponseOk", value={
        "euiccSigned1": signed1, "euiccSignature1": bytes(signature),
        "euiccCertificate": certificate_value(certificate or euicc.cert), "eumCertificate": certificate_value(eum),
    })
    return m.decode(m.AuthenticateServerResponse, response.dump())


@dataclass
class FixtureEuicc:
    """The ES10 surface lpa.discovery uses, played by test code: it checks the SM-DS like a card would
    (DSauth chain to a trusted CI, serverSignature1, euiccChallenge) and signs euiccSigned1."""

    euicc: Credential
    eum: x509.Certificate
    cis: tuple[x509.Certificate, ...]
    root_ds: str = "localhost"
    svn: bytes = b"\x02\x05\x00"
    challenge: bytes | None = None
    server_checks: list[str] = field(default_factory=list)

    @property
    def eid(self) -> str:
        return eid_of(self.euicc.cert) or ""

    @property
    def signing_pkids(self) -> list[bytes]:
        return [authority_key_id(self.eum)]

    def get_euicc_configured_addresses(self) -> tuple[str | None, str]:
        return None, self.root_ds

    def get_euicc_challenge(self) -> bytes:
        self.challenge = os.urandom(16)
        return self.challenge

    def get_euicc_info1(self) -> m.EUICCInfo1:
        return m.EUICCInfo1({"svn": self.svn, "euiccCiPKIdListForVerification": [pkid(c) for c in self.cis],
                             "euiccCiPKIdListForSigning": self.signing_pkids})

    def authenticate_server(self, *, server_signed1, server_signature1: bytes, euicc_ci_pkid_to_be_used,
                            server_certificate, ctx_params1) -> m.AuthenticateServerResponse:
        cert = x509.load_der_x509_certificate(server_certificate.dump())
        chain = validate_chain(cert, Role.DS_AUTH, trusted_cis=list(self.cis), now=datetime.now(UTC))
        assert crypto.verify(chain.public_key, server_signed1.dump(), server_signature1), "serverSignature1"
        assert server_signed1["euiccChallenge"].native == self.challenge
        assert euicc_ci_pkid_to_be_used.native in self.signing_pkids
        self.server_checks.append(server_signed1["serverAddress"].native)
        return euicc_response(self.euicc, self.eum, transaction_id=server_signed1["transactionId"].native,
                              server_address=server_signed1["serverAddress"].native,
                              server_challenge=server_signed1["serverChallenge"].native,
                              matching_id=ctx_params1["ctxParamsForCommonAuthentication"].get("matchingId"))


def fixture_euicc(name: str = "main", *, second: bool = False, **kwargs) -> FixtureEuicc:
    hierarchy = pki(name)
    euicc = second_euicc(name) if second else hierarchy.euicc
    return FixtureEuicc(euicc, hierarchy.eum.cert, (hierarchy.ci.cert,), **kwargs)


def open_session(core: Smds, card: FixtureEuicc) -> dict:
    """ES11.InitiateAuthentication for ``card`` straight at the core."""
    return core.initiate_authentication(euicc_challenge=card.get_euicc_challenge(), euicc_info1=card.get_euicc_info1(),
                                        smds_address=core.config.address)


def answer(card: FixtureEuicc, auth: dict, **kwargs) -> m.AuthenticateServerResponse:
    """The card's authenticateResponseOk to an InitiateAuthentication result (kwargs: euicc_response's)."""
    signed1 = auth["serverSigned1"]
    values = {"transaction_id": signed1["transactionId"].native, "server_address": signed1["serverAddress"].native,
              "server_challenge": signed1["serverChallenge"].native, **kwargs}
    return euicc_response(card.euicc, card.eum, **values)


def make_core(store: Store, *, address: str = "localhost", clock: Clock | None = None, name: str = "main") -> Smds:
    config = SmdsConfig.from_pkis([pki(name)], address=address, now=NOW)
    return Smds(store, config, clock=clock or Clock())


# --- the HTTPS SM-DS ----------------------------------------------------------------------------


@dataclass
class RunningSmds:
    core: Smds
    server: RunningServer
    clock: Clock

    @property
    def address(self) -> str:
        return self.core.config.address

    @property
    def es12_address(self) -> str:
        return f"localhost:{self.server.es12_port}"

    def lpa_client(self, cis: list[x509.Certificate] | None = None) -> Es11Client:
        return Es11Client(self.address, lpa_tls_context(cis or [pki().ci.cert]))

    def es12_client(self, client: Credential | None = None, cis: list[x509.Certificate] | None = None) -> Es12Client:
        context = es12_tls_context(cis or [pki().ci.cert], client or pki().dp_tls)
        return Es12Client(self.es12_address, context, requester_id="smdp.kinsim.test")


def _loopback() -> socket.socket:
    return socket.create_server(("127.0.0.1", 0))


@contextlib.asynccontextmanager
async def running_smds(directory: Path, *, es12_client_cas: list[x509.Certificate] | None = None) -> AsyncIterator[RunningSmds]:
    """An SM-DS on loopback: ES11 at localhost:<port> (its address), ES12 on another port."""
    es11_sock, es12_sock = _loopback(), _loopback()
    clock = Clock()
    store = Store.open(directory)
    core = make_core(store, address=f"localhost:{es11_sock.getsockname()[1]}", clock=clock)
    server = await start(core, pki().ds_tls, es11=es11_sock, es12=es12_sock,
                         es12_client_cas=es12_client_cas or [pki().ci.cert])
    try:
        yield RunningSmds(core, server, clock)
    finally:
        await server.close()
        store.close()
