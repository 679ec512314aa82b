"""Every GSMA SGP.26 test certificate validates for its role under our SGP.22 validator (pinned clocks)."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import pkid
from certs.sgp26 import load_sgp26, sgp26_certificates, sgp26_cis, sgp26_eums
from certs.validate import Role, check_name_constraints, eum_name_constraints, name_within, validate_chain
from rsp.errors import CertificateError

SGP26 = sgp26_certificates()
SGP26_EID = "89049032123451234512345678901235"


def validate(entry, now):
    return validate_chain(
        entry.cert, entry.role, intermediates=sgp26_eums(), trusted_cis=sgp26_cis(), now=now
    )


def test_inventory_covers_every_certificate_file_with_its_role():
    roles = Counter(entry.role for entry in SGP26)
    assert roles == {Role.CI: 4, Role.EUM: 2, Role.EUICC: 2, Role.DP_AUTH: 4, Role.DP_PB: 4, Role.DP_TLS: 29}
    names = {entry.name for entry in SGP26}
    for variant in ("DP2", "DP4", "DP8", "DP_VARO"):
        assert any(f"CERT_S_SM_{variant}_TLS" in name for name in names), variant
    assert sum(name.startswith("DPtls/old/expired-") for name in names) == 20


@pytest.mark.parametrize("entry", SGP26, ids=lambda entry: entry.name)
def test_every_sgp26_certificate_validates_for_its_role(entry):
    # One day into the certificate's own validity: superseded TLS certificates validate in their time.
    chain = validate(entry, entry.cert.not_valid_before_utc + timedelta(days=1))
    assert chain.role is entry.role
    assert chain.public_key.public_numbers() == entry.cert.public_key().public_numbers()
    assert chain.ci.public_key().curve.name == {"nist": "secp256r1", "brp": "brainpoolP256r1"}[entry.curve]
    if entry.role is Role.EUICC:
        assert chain.eid == SGP26_EID
        assert (
            chain.eum is not None and chain.eum.subject.rfc4514_string() == "CN=EUM Test,O=RSP Test EUM,C=ES"
        )
    if entry.role in (Role.DP_AUTH, Role.DP_PB, Role.DP_TLS):
        assert chain.oid in {"2.999.10", "2.999.12", "2.999.14", "2.999.18"}
    if entry.role is Role.DP_TLS:
        assert chain.dns_names and chain.dns_names[0].endswith(".example.com")


@pytest.mark.parametrize("entry", SGP26, ids=lambda entry: entry.name)
def test_every_sgp26_certificate_comes_with_its_private_key(entry):
    key = entry.credential.key
    assert key is not None
    signature = key.sign(b"kinsim", ec.ECDSA(hashes.SHA256()))
    entry.cert.public_key().verify(signature, b"kinsim", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("curve", ["nist", "brp"])
def test_current_tls_certificate_expires_on_2026_08_02(curve):
    tls = load_sgp26(curve).dp_tls.cert
    trust = {"trusted_cis": sgp26_cis()}
    validate_chain(tls, Role.DP_TLS, now=datetime(2026, 8, 2, 13, 0, tzinfo=UTC), **trust)
    with pytest.raises(CertificateError, match=r"expired on 2026-08-02 13:14:38Z") as caught:
        validate_chain(tls, Role.DP_TLS, now=datetime(2026, 8, 3, tzinfo=UTC), **trust)
    assert caught.value.expired


def test_superseded_tls_certificate_is_expired_after_its_window():
    entry = next(e for e in SGP26 if e.name == "DPtls/old/expired-2024/CERT_S_SM_DP_TLS_NIST.der")
    with pytest.raises(CertificateError, match="expired on 2024-07-11") as caught:
        validate(entry, datetime(2024, 7, 12, tzinfo=UTC))
    assert caught.value.expired


def test_varo_tls_certificate_is_not_yet_valid_before_2026_07_21():
    entry = next(e for e in SGP26 if e.name == "DPtls/CERT_S_SM_DP_VARO_TLS_NIST.der")
    with pytest.raises(CertificateError, match="not valid before 2026-07-21") as caught:
        validate(entry, datetime(2026, 7, 1, tzinfo=UTC))
    assert not caught.value.expired


def test_ci_pkids_are_the_published_subject_key_identifiers():
    assert pkid(load_sgp26("nist").ci.cert).hex() == "f54172bdf98a95d65cbeb88a38a1c11d800a85c3"
    assert pkid(load_sgp26("brp").ci.cert).hex() == "c0bc70ba36929d43b467ff57570530e57ab8fcd8"


@pytest.mark.parametrize("curve", ["nist", "brp"])
def test_load_sgp26_gives_one_curve_hierarchy_with_keys(curve):
    pki = load_sgp26(curve)
    assert pki.curve == curve
    assert pki.eid == SGP26_EID
    assert pki.ds_auth is None and pki.ds_tls is None
    assert all(credential.key is not None for credential in pki.credentials().values())
    assert pki.dp_auth.cert.issuer == pki.ci.cert.subject
    chain = validate_chain(
        pki.euicc.cert,
        Role.EUICC,
        intermediates=[pki.eum.cert],
        trusted_cis=[pki.ci.cert],
        now=datetime(2026, 1, 15, tzinfo=UTC),
    )
    assert chain.ci_pkid == pki.ci.pkid


def test_nist_and_brainpool_cis_share_a_name_and_are_told_apart_by_key_identifier():
    nist, brp = load_sgp26("nist"), load_sgp26("brp")
    assert nist.ci.cert.subject == brp.ci.cert.subject
    now = datetime(2026, 1, 15, tzinfo=UTC)
    with pytest.raises(CertificateError, match=r"authority key identifier .*\(wrong issuer\)"):
        validate_chain(brp.dp_auth.cert, Role.DP_AUTH, trusted_cis=[nist.ci.cert], now=now)
    with pytest.raises(CertificateError, match="authority key identifier"):
        validate_chain(
            nist.euicc.cert, Role.EUICC, intermediates=[brp.eum.cert], trusted_cis=sgp26_cis(), now=now
        )


def test_sgp26_eum_constraint_is_an_eid_prefix_not_an_exact_name():
    pki = load_sgp26("nist")
    permitted, excluded = eum_name_constraints(pki.eum.cert)
    assert [c.rfc4514_string() for c in permitted] == ["2.5.4.5=89049032,O=RSP Test EUM"]
    assert excluded == []
    # RFC 5280 would need serialNumber equal to "89049032"; SGP.22 needs it to start with it.
    assert name_within(pki.euicc.cert.subject, permitted[0])
    check_name_constraints(pki.eum.cert, pki.euicc.cert.subject)


def test_missing_test_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KINSIM_TESTDATA", str(tmp_path))
    with pytest.raises(CertificateError, match="SGP.26 test certificates not found"):
        load_sgp26("nist")
