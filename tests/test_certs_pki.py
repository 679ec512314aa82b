"""The generated test PKI mirrors the SGP.26 certificate profile, saves and loads, and serves TLS."""

import ipaddress
import random
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pki import (
    EUICC_NOT_AFTER,
    Credential,
    Pki,
    generate_pki,
    issue_euicc,
    issue_tls,
    pkid,
    random_eid,
    tls_names,
)
from certs.sgp26 import load_sgp26
from certs.validate import Role, validate_chain
from rsp.errors import CertificateError, DecodeError
from rsp.ids import make_eid

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
EID = "89049032000000000000000000000123"
NAMES = ("ci", "eum", "euicc", "dp_auth", "dp_pb", "dp_tls")


def seeded(seed):
    return random.Random(seed).randbytes


@pytest.fixture(scope="module", params=["nist", "brp"])
def pki(request):
    return generate_pki(request.param, eid=make_eid(EID[:30]), now=NOW, rng=seeded(3))


def extension_shape(cert):
    return {(ext.oid.dotted_string, ext.critical) for ext in cert.extensions}


@pytest.mark.parametrize("name", NAMES)
def test_extensions_and_critical_flags_mirror_sgp26(pki, name):
    ours, theirs = getattr(pki, name).cert, getattr(load_sgp26(pki.curve), name).cert
    assert extension_shape(ours) == extension_shape(theirs)
    for kind in (x509.KeyUsage, x509.BasicConstraints, x509.ExtendedKeyUsage, x509.CertificatePolicies):
        mine = [e.value for e in ours.extensions if isinstance(e.value, kind)]
        sgp26 = [e.value for e in theirs.extensions if isinstance(e.value, kind)]
        assert mine == sgp26, kind.__name__
    assert ours.signature_algorithm_oid == theirs.signature_algorithm_oid


def test_eum_name_constraint_permits_o_and_the_ein(pki):
    constraint = pki.eum.cert.extensions.get_extension_for_class(x509.NameConstraints)
    (permitted,) = constraint.value.permitted_subtrees
    assert constraint.critical
    assert permitted.value.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == EID[:8]
    assert permitted.value.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "kinsim Test EUM"


def test_euicc_subject_carries_the_eid_and_never_expires(pki):
    cert = pki.euicc.cert
    assert pki.eid == make_eid(EID[:30])
    assert [a.oid for a in cert.subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.COMMON_NAME,
    ]
    assert cert.not_valid_after_utc == EUICC_NOT_AFTER
    assert b"\x18\x0f99991231235959Z" in pki.euicc.cert_der  # GeneralizedTime, as RFC 5280 4.1.2.5 says


def test_validity_periods(pki):
    def span(name):
        cert = getattr(pki, name).cert
        return cert.not_valid_before_utc, cert.not_valid_after_utc

    start = NOW - timedelta(hours=1)
    assert span("ci") == (start, NOW.replace(year=2061))
    assert span("eum") == (start, NOW.replace(year=2060))
    assert span("dp_auth") == (start, NOW.replace(year=2036))
    assert span("dp_tls") == (start, NOW + timedelta(days=398))
    assert span("ds_tls") == (start, NOW + timedelta(days=398))


def test_key_identifiers_chain(pki):
    for name in ("eum", "dp_auth", "dp_pb", "dp_tls", "ds_auth", "ds_tls"):
        aki = getattr(pki, name).cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == pki.ci.pkid and aki.authority_cert_issuer is None
    euicc_aki = pki.euicc.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert euicc_aki.key_identifier == pki.eum.pkid
    # PKId = SHA-1 of the subjectPublicKey (RFC 5280 4.2.1.2 method 1), like the SGP.26 CIs.
    assert pkid(pki.ci.cert) == x509.SubjectKeyIdentifier.from_public_key(pki.ci.cert.public_key()).digest


def test_curves_and_the_tls_key_default(pki):
    expected = {"nist": "secp256r1", "brp": "brainpoolP256r1"}[pki.curve]
    for name in ("ci", "eum", "euicc", "dp_auth", "dp_pb", "ds_auth"):
        assert getattr(pki, name).cert.public_key().curve.name == expected
    assert pki.dp_tls.cert.public_key().curve.name == "secp256r1"  # see certs.pki module doc
    brp_tls = issue_tls(pki.ci, "localhost", curve="brp", now=NOW, rng=seeded(4))
    assert brp_tls.cert.public_key().curve.name == "brainpoolP256r1"


def test_same_seed_same_pki():
    first = generate_pki("brp", now=NOW, rng=seeded(9))
    second = generate_pki("brp", now=NOW, rng=seeded(9))
    for name, credential in first.credentials().items():
        # ECDSA signatures are randomised; everything signed is identical.
        assert credential.cert.tbs_certificate_bytes == second.credentials()[name].cert.tbs_certificate_bytes
    assert first.eid == second.eid


def test_random_eid_is_valid_and_in_the_prefix():
    eid = random_eid("89049032", seeded(5))
    assert eid.startswith("89049032") and len(eid) == 32 and int(eid) % 97 == 1


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]),
        ("smdp.example.com", ["DNS:smdp.example.com"]),
        ("SMDP.Example.com", ["DNS:smdp.example.com"]),
        ("192.0.2.7", ["IP:192.0.2.7"]),
        ("127.0.0.1", ["IP:127.0.0.1", "DNS:localhost", "IP:::1"]),
    ],
)
def test_tls_names(address, expected):
    def text(name):
        return f"DNS:{name.value}" if isinstance(name, x509.DNSName) else f"IP:{name.value}"

    assert [text(n) for n in tls_names(address)] == expected


@pytest.mark.parametrize(
    "address", ["https://smdp.example.com", "smdp.example.com:8443", "", "bad_host.example"]
)
def test_tls_address_must_be_a_host(address):
    with pytest.raises(CertificateError, match="server address .* is not a host name or IP address"):
        tls_names(address)


def test_tls_certificate_content(pki):
    cert = pki.dp_tls.cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert [o.dotted_string for o in san.get_values_for_type(x509.RegisteredID)] == ["2.999.10"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku.value and eku.critical
    ds_san = pki.ds_tls.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [o.dotted_string for o in ds_san.get_values_for_type(x509.RegisteredID)] == ["2.999.20"]


def test_issue_euicc_for_a_new_eid(pki):
    eid = make_eid("890490320000000000000000000777")
    euicc = issue_euicc(pki.eum, eid, now=NOW, rng=seeded(6))
    chain = validate_chain(
        euicc.cert, Role.EUICC, intermediates=[pki.eum.cert], trusted_cis=[pki.ci.cert], now=NOW
    )
    assert chain.eid == eid
    assert euicc.cert.public_key().curve.name == pki.eum.cert.public_key().curve.name
    with pytest.raises(DecodeError, match="wrong check digits"):
        issue_euicc(pki.eum, eid[:-1] + ("0" if eid[-1] != "0" else "1"), now=NOW)
    with pytest.raises(CertificateError, match="no private key"):
        issue_euicc(Credential(pki.eum.cert), eid, now=NOW)


def test_save_and_load_round_trip(pki, tmp_path):
    written = pki.save(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(
        [f"{n}.der" for n in pki.credentials()] + [f"{n}.key.pem" for n in pki.credentials()]
    )
    assert stat.S_IMODE((tmp_path / "ci.key.pem").stat().st_mode) == 0o600
    loaded = Pki.load(tmp_path)
    assert loaded.curve == pki.curve and loaded.eid == pki.eid
    for name, credential in pki.credentials().items():
        again = loaded.credentials()[name]
        assert again.cert == credential.cert
        assert again.key.private_numbers() == credential.key.private_numbers()


def test_load_without_sm_ds_and_keys(tmp_path):
    sgp26 = load_sgp26("nist")
    for name, credential in sgp26.credentials().items():
        (tmp_path / f"{name}.der").write_bytes(credential.cert_der)
    loaded = Pki.load(tmp_path)
    assert loaded.ds_auth is None and loaded.ci.key is None and loaded.eid == sgp26.eid
    (tmp_path / "eum.der").unlink()
    with pytest.raises(CertificateError, match="eum.der is missing"):
        Pki.load(tmp_path)


def test_key_pem_needs_a_key(pki):
    with pytest.raises(CertificateError, match="no private key"):
        _ = Credential(pki.ci.cert).key_pem


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_python_ssl_serves_the_dp_tls_certificate(pki, tmp_path, version):
    """The SM-DP+ TLS credential works with Python's ssl on loopback, the client trusting only the CI."""
    (tmp_path / "tls.pem").write_bytes(pki.dp_tls.cert_pem + pki.dp_tls.key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=pki.ci.cert_der)
    for context in (server, client):
        context.minimum_version = context.maximum_version = version
    assert handshake(server, client, "localhost") == pki.dp_tls.cert_der


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> bytes:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        failures = []

        def serve():
            connection, _ = listener.accept()
            try:
                with server.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError) as exc:
                failures.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=30) as raw,
                client.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.sendall(b"x")
                return tls.getpeercert(binary_form=True)
        finally:
            thread.join(timeout=30)
            assert not failures, failures


def test_bad_oid_is_a_clear_error(pki):
    with pytest.raises(CertificateError, match="'2.x' is not an object identifier"):
        issue_tls(pki.ci, "localhost", oid="2.x", now=NOW)
