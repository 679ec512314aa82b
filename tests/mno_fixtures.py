"""Shared pieces of the family-plan tests: a settable clock and seeded randomness (from the SM-DP+
fixtures), PostgreSQL schemas per test, an in-process SM-DP+ stand-in for the service, a software USIM
for AKA challenges, and an operator CA for ES2+ client certificates."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mno.authenticator import Authenticator, InMemoryAuthenticatorStore
from mno.es2_client import ConfirmedOrder
from mno.plans import OPERATOR, InMemoryPlanStore, OperatorConfig, PlanBook, token_hash
from mno.service import FamilyService, ProfileMetadata, ServiceConfig
from rsp import aka, status
from rsp.errors import ApduError, StatusCodeError
from rsp.saip import ProfilePackage
from tests.smdp_fixtures import Clock, seeded_rng

__all__ = ["Clock", "seeded_rng"]

START = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
OPERATOR_TOKEN = "kst_operator-test-token"
SMDP_ADDRESS = "smdp.kinsim.test"
EID_A = "89049032123451234512345678901235"
EID_B = "89049032000000000000000000000066"
POOL = {"data": 10_000, "voice": 600, "sms": 100}


# --- PostgreSQL ----------------------------------------------------------------------------------------


def pg_dsn() -> str:
    return os.environ.get("KINSIM_PG_DSN", "postgresql://127.0.0.1:5432/test")


def pg_reachable() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(pg_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {pg_dsn()} is not reachable: {str(exc).strip().splitlines()[0]}"
    return None


def temporary_pg_store():
    """A PgStore in a schema of its own, dropped afterwards (tests run in parallel on one database);
    skips the test when PostgreSQL is not reachable. Use with ``yield from`` in a fixture."""
    reason = pg_reachable()
    if reason:
        pytest.skip(reason)
    from mno.store import PgStore

    store = PgStore(pg_dsn(), schema=f"kinsim_test_{uuid.uuid4().hex[:12]}")
    store.migrate()
    try:
        yield store
    finally:
        store.drop_schema()


# --- the SM-DP+ as the service sees it -----------------------------------------------------------------


@dataclass
class FakeSmdp:
    """Stands in for the ES2+ client, the profile hand-over and the remote manager, recording calls."""

    address: str = SMDP_ADDRESS
    uploads: dict[str, tuple[bytes, ProfileMetadata]] = field(default_factory=dict)
    orders: dict[str, dict] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)
    revoked: list[tuple[str, str | None]] = field(default_factory=list)
    fail_confirm: StatusCodeError | None = None

    async def upload(self, package: bytes, metadata: ProfileMetadata) -> None:
        self.uploads[ProfilePackage.decode(package).iccid] = (package, metadata)

    async def download_order(self, *, iccid=None, eid=None, profile_type=None) -> str:
        self.calls.append(("downloadOrder", {"iccid": iccid, "eid": eid}))
        if iccid not in self.uploads:
            raise StatusCodeError(status.ICCID_UNKNOWN, "no such profile")
        self.orders[iccid] = {"state": "linked" if eid else "allocated", "eid": eid}
        return iccid

    async def confirm_order(self, *, iccid, matching_id=None, eid=None, confirmation_code=None, smds_address=None,
                            release_flag=True) -> ConfirmedOrder:
        self.calls.append(("confirmOrder", {"iccid": iccid, "matching_id": matching_id, "eid": eid,
                                            "confirmation_code": confirmation_code, "smds_address": smds_address,
                                            "release_flag": release_flag}))
        if self.fail_confirm is not None:
            raise self.fail_confirm
        self.orders[iccid].update(state="released", matching_id=matching_id, cc=confirmation_code)
        return ConfirmedOrder(matching_id, self.address, eid)

    async def cancel_order(self, *, iccid, final_status="Unavailable", eid=None, matching_id=None) -> None:
        self.calls.append(("cancelOrder", {"iccid": iccid, "final_status": final_status}))
        if iccid not in self.orders:
            raise StatusCodeError(status.ICCID_UNKNOWN, "no such order")
        self.orders[iccid]["state"] = final_status

    async def revoke_profile(self, iccid: str, eid: str | None) -> None:
        self.revoked.append((iccid, eid))

    async def close(self) -> None:
        pass

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class Rig:
    book: PlanBook
    service: FamilyService
    smdp: FakeSmdp
    authenticator: Authenticator
    clock: Clock


def make_rig(store=None, *, clock: Clock | None = None, auth_store=None, smds_address: str | None = None,
             seed: bytes = b"mno") -> Rig:
    clock = clock or Clock(START)
    config = OperatorConfig(operator_token_hashes=(token_hash(OPERATOR_TOKEN),))
    book = PlanBook(store or InMemoryPlanStore(), config, clock=clock, rng=seeded_rng(seed))
    authenticator = Authenticator(auth_store or InMemoryAuthenticatorStore(), rng=seeded_rng(seed + b"-auc"))
    smdp = FakeSmdp()
    service = FamilyService(book, authenticator, es2=smdp, sink=smdp, remote=smdp,
                            config=ServiceConfig(smds_address=smds_address))
    return Rig(book, service, smdp, authenticator, clock)


def new_plan(book: PlanBook, policy: str = "shared", pool=None, max_members: int = 5, **kwargs):
    """(plan, owner principal, owner token)."""
    plan, owner, token = book.create_plan(OPERATOR, "Family", "Olivia Owner", max_members, pool or POOL,
                                          policy=policy, **kwargs)
    return plan, book.authenticate(token), token


# --- the card side of AKA -------------------------------------------------------------------------------


class SoftUsim:
    """AUTHENTICATE on a USIM holding the profile's Ki/OPc (TS 31.102 7.1.2 via rsp.aka)."""

    def __init__(self, k: bytes, opc: bytes):
        self.alg = aka.algorithm_for(aka.MILENAGE, k, opc=opc)
        self.sqn_state = aka.initial_sqn_state()

    @classmethod
    def from_package(cls, der: bytes) -> SoftUsim:
        usim = next(p for p in ProfilePackage.decode(der).aka_parameters if p.application == "usim")
        return cls(usim.key, usim.opc)

    def __call__(self, rand: bytes, autn: bytes) -> bytes:
        result = aka.usim_authenticate(self.alg, rand, autn, self.sqn_state)
        if isinstance(result, aka.MacFailure):
            raise ApduError(aka.SW_MAC_FAILURE, "AUTHENTICATE: incorrect MAC")
        if isinstance(result, aka.SyncFailure):
            return aka.encode_sync_failure(result.auts)
        self.sqn_state = result.sqn_state
        return aka.encode_authenticate_success(result.res, result.ck, result.ik)


# --- an operator CA for ES2+ client certificates -----------------------------------------------------------


@dataclass
class OperatorPki:
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> OperatorPki:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kinsim test operator CA")])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def issue(self, common_name: str, dns: str | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A TLS certificate usable as client and (with ``dns``) as server certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=7))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                         ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                                  critical=False))
        if dns:
            import ipaddress

            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(dns), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(self.ca_key, hashes.SHA256()), key

    def write(self, directory, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return str(cert_path), str(key_path)

    def write_ca(self, directory) -> str:
        path = directory / "operator-ca.pem"
        path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        return str(path)
