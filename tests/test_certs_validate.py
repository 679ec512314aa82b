"""The SGP.22 chain validator: each rule fails with a reason naming the certificate and the rule."""

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs.pki import Credential, generate_pki, issue_euicc, load_certificate
from certs.sgp26 import load_sgp26
from certs.validate import Role, name_within, validate_chain
from rsp.errors import CertificateError, DecodeError
from rsp.ids import make_eid

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ROLE_FILES = {
    Role.CI: "ci",
    Role.EUM: "eum",
    Role.EUICC: "euicc",
    Role.DP_AUTH: "dp_auth",
    Role.DP_PB: "dp_pb",
    Role.DP_TLS: "dp_tls",
    Role.DS_AUTH: "ds_auth",
    Role.DS_TLS: "ds_tls",
}


@pytest.fixture(scope="module", params=["nist", "brp"])
def pki(request):
    return generate_pki(
        request.param, smdp_address="smdp.example.com", now=NOW, rng=random.Random(1).randbytes
    )


@pytest.fixture(scope="module")
def other_pki():
    """A second hierarchy with the same names but other keys."""
    return generate_pki("nist", smdp_address="smdp.example.com", now=NOW, rng=random.Random(2).randbytes)


def check(pki, cert, role, *, now=NOW, intermediates=None, trusted_cis=None):
    return validate_chain(
        cert,
        role,
        intermediates=[pki.eum.cert] if intermediates is None else intermediates,
        trusted_cis=[pki.ci.cert] if trusted_cis is None else trusted_cis,
        now=now,
    )


def resign(cert, key, *, subject=None, drop=(), add=(), hash_algorithm=None, public_key=None, issuer=None):
    """A copy of ``cert`` with changed fields, signed by ``key`` (so only the changed rule can fail)."""
    kept = [ext for ext in cert.extensions if ext.oid not in drop and ext.oid not in {e.oid for e, _ in add}]
    builder = x509.CertificateBuilder(
        issuer_name=issuer or cert.issuer,
        subject_name=subject or cert.subject,
        public_key=public_key or cert.public_key(),
        serial_number=cert.serial_number,
        not_valid_before=cert.not_valid_before_utc,
        not_valid_after=cert.not_valid_after_utc,
        extensions=kept,
    )
    for extension, critical in add:
        builder = builder.add_extension(
            extension.value if isinstance(extension, x509.Extension) else extension, critical
        )
    return builder.sign(key, hash_algorithm or hashes.SHA256())


# --- generated chains ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.cli_name)
def test_generated_chain_validates_for_every_role(pki, role):
    chain = check(pki, getattr(pki, ROLE_FILES[role]).cert, role)
    assert chain.role is role
    assert chain.ci_pkid == pki.ci.pkid
    if role is Role.EUICC:
        assert chain.eid == pki.eid and chain.eum == pki.eum.cert
    if role in (Role.DP_AUTH, Role.DP_PB, Role.DP_TLS):
        assert chain.oid == "2.999.10"
    if role in (Role.DS_AUTH, Role.DS_TLS):
        assert chain.oid == "2.999.20"
    if role in (Role.DP_TLS, Role.DS_TLS):
        assert chain.dns_names == ("smdp.example.com",)


# --- one changed byte ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role", "text"),
    [("euicc", Role.EUICC, b"kinsim Test eUICC"), ("dp_auth", Role.DP_AUTH, b"kinsim Test SM-DP+")],
)
def test_one_changed_byte_breaks_the_signature(pki, name, role, text):
    der = bytearray(getattr(pki, name).cert_der)
    der[der.index(text) + len(text) - 1] ^= 0x01  # still well-formed: only the subject's CN changes
    with pytest.raises(CertificateError, match="signature does not verify with the key of") as caught:
        check(pki, load_certificate(bytes(der)), role)
    assert not caught.value.expired


def test_one_changed_byte_in_an_sgp26_euicc_breaks_the_signature():
    sgp26 = load_sgp26("nist")
    der = bytearray(sgp26.euicc.cert_der)
    der[der.index(b"Test eUICC")] ^= 0x01
    with pytest.raises(
        CertificateError, match=r"eUICC certificate .* signature does not verify with the key of EUM"
    ):
        check(sgp26, load_certificate(bytes(der)), Role.EUICC, now=NOW)


SGP26_EUICC = load_sgp26("nist")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(SGP26_EUICC.euicc.cert_der) - 1), flip=st.integers(1, 255)
)
def test_no_single_byte_change_of_an_euicc_certificate_validates(index, flip):
    der = bytearray(SGP26_EUICC.euicc.cert_der)
    der[index] ^= flip
    with pytest.raises((DecodeError, CertificateError)):
        check(SGP26_EUICC, load_certificate(bytes(der)), Role.EUICC)


# --- wrong role, wrong issuer, time -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role", "found"),
    [
        ("dp_pb", Role.DP_AUTH, "SM-DP+ profile binding"),
        ("dp_auth", Role.DP_PB, "SM-DP+ authentication"),
        ("ds_auth", Role.DP_AUTH, "SM-DS authentication"),
        ("dp_tls", Role.DS_TLS, "SM-DP+ TLS"),
        ("eum", Role.EUICC, "EUM"),
        ("euicc", Role.EUM, "eUICC"),
        ("ci", Role.EUM, "CI"),
    ],
)
def test_wrong_role_fails_naming_both_roles(pki, name, role, found):
    with pytest.raises(
        CertificateError,
        match=f"carries the certificate policy of {re.escape(found)}.*not {re.escape(role.label)}",
    ):
        check(pki, getattr(pki, name).cert, role)


def test_wrong_issuer_with_the_same_name_is_caught_by_key_identifier(pki, other_pki):
    with pytest.raises(CertificateError, match=r"authority key identifier .*\(wrong issuer\)"):
        check(pki, other_pki.dp_auth.cert, Role.DP_AUTH)
    with pytest.raises(CertificateError, match=r"eUICC certificate .*authority key identifier"):
        check(pki, pki.euicc.cert, Role.EUICC, intermediates=[other_pki.eum.cert])


def test_wrong_issuer_name_is_reported(pki):
    sgp26 = load_sgp26(pki.curve)
    with pytest.raises(
        CertificateError, match=r"issuer 'C=DE,O=kinsim,OU=TESTCERT,CN=kinsim Test CI' is not the subject"
    ):
        check(pki, pki.dp_tls.cert, Role.DP_TLS, trusted_cis=[sgp26.ci.cert])


def test_forged_signature_under_the_right_name_and_key_identifier(pki, other_pki):
    forged = resign(
        pki.dp_auth.cert,
        other_pki.ci.key if pki.curve == "nist" else ec.generate_private_key(ec.BrainpoolP256R1()),
    )
    with pytest.raises(CertificateError, match="signature does not verify with the key of CI certificate"):
        check(pki, forged, Role.DP_AUTH)


def test_untrusted_ci(pki, other_pki):
    with pytest.raises(CertificateError, match="is not one of the trusted CIs"):
        check(pki, pki.ci.cert, Role.CI, trusted_cis=[other_pki.ci.cert])


def test_expired_tls_certificate_has_the_expired_flag(pki):
    later = pki.dp_tls.cert.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(CertificateError, match=r"SM-DP\+ TLS certificate .*: expired on") as caught:
        check(pki, pki.dp_tls.cert, Role.DP_TLS, now=later)
    assert caught.value.expired
    check(pki, pki.dp_tls.cert, Role.DP_TLS, now=later - timedelta(seconds=1))


def test_not_yet_valid_is_not_expired(pki):
    with pytest.raises(CertificateError, match="not valid before") as caught:
        check(pki, pki.dp_auth.cert, Role.DP_AUTH, now=NOW - timedelta(days=1))
    assert not caught.value.expired


def test_euicc_outlives_its_eum_but_the_chain_does_not(pki):
    much_later = pki.eum.cert.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(CertificateError, match=r"EUM certificate .*: expired on") as caught:
        check(pki, pki.euicc.cert, Role.EUICC, now=much_later)
    assert caught.value.expired


def test_time_must_be_timezone_aware(pki):
    with pytest.raises(ValueError, match="timezone-aware"):
        check(pki, pki.dp_auth.cert, Role.DP_AUTH, now=NOW.replace(tzinfo=None))


def test_missing_inputs(pki):
    with pytest.raises(CertificateError, match="its EUM certificate is needed"):
        check(pki, pki.euicc.cert, Role.EUICC, intermediates=[])
    with pytest.raises(CertificateError, match="no trusted CI"):
        check(pki, pki.dp_auth.cert, Role.DP_AUTH, trusted_cis=[])


# --- profile rules, each broken alone under a valid signature -----------------------------------

KU = x509.oid.ExtensionOID.KEY_USAGE


def _key_usage(**bits):
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{name: bits.get(name, False) for name in names})


def test_profile_rules(pki):
    ci_key, eum_key = pki.ci.key, pki.eum.key
    ext = x509.oid.ExtensionOID
    cases = [
        (
            resign(pki.dp_auth.cert, ci_key, drop={KU}, add=[(_key_usage(digital_signature=True), False)]),
            Role.DP_AUTH,
            "keyUsage must be present and critical",
        ),
        (
            resign(
                pki.dp_pb.cert, ci_key, add=[(_key_usage(digital_signature=True, key_cert_sign=True), True)]
            ),
            Role.DP_PB,
            "keyUsage allows certificate or CRL signing, but it is not a CA",
        ),
        (
            resign(pki.euicc.cert, eum_key, add=[(_key_usage(key_agreement=True), True)]),
            Role.EUICC,
            "keyUsage lacks digital_signature",
        ),
        (
            resign(pki.eum.cert, ci_key, drop={ext.BASIC_CONSTRAINTS}),
            Role.EUM,
            "basicConstraints must be critical with cA TRUE",
        ),
        (
            resign(pki.dp_auth.cert, ci_key, add=[(x509.BasicConstraints(ca=True, path_length=None), True)]),
            Role.DP_AUTH,
            "basicConstraints says cA TRUE",
        ),
        (
            resign(pki.dp_auth.cert, ci_key, drop={ext.SUBJECT_ALTERNATIVE_NAME}),
            Role.DP_AUTH,
            "subjectAltName has no registeredID",
        ),
        (
            resign(
                pki.dp_tls.cert,
                ci_key,
                add=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True)],
            ),
            Role.DP_TLS,
            "extendedKeyUsage lacks serverAuth",
        ),
        (
            resign(
                pki.dp_tls.cert,
                ci_key,
                add=[
                    (
                        x509.SubjectAlternativeName([x509.RegisteredID(x509.ObjectIdentifier("2.999.10"))]),
                        False,
                    )
                ],
            ),
            Role.DP_TLS,
            "subjectAltName has no dNSName",
        ),
        (
            resign(pki.eum.cert, ci_key, drop={ext.NAME_CONSTRAINTS}),
            Role.EUM,
            "nameConstraints must be present and critical",
        ),
        (
            resign(pki.dp_auth.cert, ci_key, drop={ext.SUBJECT_KEY_IDENTIFIER}),
            Role.DP_AUTH,
            "no subject key identifier",
        ),
        (
            resign(pki.dp_auth.cert, ci_key, drop={ext.AUTHORITY_KEY_IDENTIFIER}),
            Role.DP_AUTH,
            "no authority key identifier",
        ),
        (
            resign(
                pki.dp_auth.cert,
                ci_key,
                add=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.999.77"), b"\x05\x00"), True)],
            ),
            Role.DP_AUTH,
            "unrecognised critical extension 2.999.77",
        ),
        (
            resign(pki.dp_auth.cert, ci_key, hash_algorithm=hashes.SHA384()),
            Role.DP_AUTH,
            "signature algorithm 1.2.840.10045.4.3.3 is not ecdsa-with-SHA256",
        ),
        (
            resign(pki.dp_auth.cert, ci_key, public_key=ec.generate_private_key(ec.SECP384R1()).public_key()),
            Role.DP_AUTH,
            "curve secp384r1 is not one SGP.22 allows",
        ),
    ]
    for cert, role, reason in cases:
        with pytest.raises(CertificateError, match=re.escape(reason)):
            check(pki, cert, role)


def test_two_role_policies_are_refused(pki):
    policies = x509.CertificatePolicies(
        [
            x509.PolicyInformation(Role.DP_AUTH.policy_oid, None),
            x509.PolicyInformation(Role.DP_PB.policy_oid, None),
        ]
    )
    cert = resign(pki.dp_auth.cert, pki.ci.key, add=[(policies, True)])
    with pytest.raises(CertificateError, match="the certificate policy of SM-DP.* and SM-DP"):
        check(pki, cert, Role.DP_AUTH)


def test_euicc_serial_number_must_be_a_valid_eid(pki):
    eid = pki.eid
    bad = eid[:-1] + str((int(eid[-1]) + 1) % 10)  # wrong check digit, still in the prefix
    subject = x509.Name(
        [
            x if x.oid != NameOID.SERIAL_NUMBER else x509.NameAttribute(NameOID.SERIAL_NUMBER, bad)
            for x in pki.euicc.cert.subject
        ]
    )
    cert = resign(pki.euicc.cert, pki.eum.key, subject=subject)
    with pytest.raises(CertificateError, match="subject serialNumber is not a valid EID"):
        check(pki, cert, Role.EUICC)


# --- the EID-prefix name constraint -------------------------------------------------------------


def _euicc_with(pki, eid, organization=None):
    attributes = []
    for attribute in pki.euicc.cert.subject:
        if attribute.oid == NameOID.SERIAL_NUMBER:
            attribute = x509.NameAttribute(NameOID.SERIAL_NUMBER, eid)
        if attribute.oid == NameOID.ORGANIZATION_NAME and organization:
            attribute = x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)
        attributes.append(attribute)
    return resign(pki.euicc.cert, pki.eum.key, subject=x509.Name(attributes))


def test_euicc_outside_the_eum_eid_prefix_fails(pki):
    outside = make_eid("89049033" + "0" * 22)
    with pytest.raises(CertificateError, match=rf"EID {outside}\) is outside the EUM's name constraints"):
        check(pki, _euicc_with(pki, outside), Role.EUICC)
    with pytest.raises(CertificateError, match="outside the EUM's permitted EID prefix"):
        issue_euicc(pki.eum, outside, now=NOW)


def test_euicc_with_another_organisation_fails(pki):
    with pytest.raises(CertificateError, match="outside the EUM's name constraints"):
        check(pki, _euicc_with(pki, pki.eid, organization="Someone Else"), Role.EUICC)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.from_regex(r"\A8904903[0-9]{23}\Z"))
def test_issue_and_validate_agree_on_the_prefix(pki, body):
    eid = make_eid(body)
    inside = eid.startswith(pki.eid[:8])
    try:
        euicc = issue_euicc(pki.eum, eid, now=NOW)
    except CertificateError:
        assert not inside
        with pytest.raises(CertificateError, match="name constraints"):
            check(pki, _euicc_with(pki, eid), Role.EUICC)
    else:
        assert inside
        assert check(pki, euicc.cert, Role.EUICC).eid == eid


def test_name_within_is_prefix_on_serial_number_and_equality_elsewhere():
    constraint = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EUM"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "8904"),
        ]
    )

    def subject(org, serial):
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
            ]
        )

    assert name_within(subject("EUM", "89049032"), constraint)
    assert not name_within(subject("EUM", "89039032"), constraint)
    assert not name_within(subject("EUMX", "89049032"), constraint)
    assert not name_within(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EUM")]), constraint)


def test_credential_key_must_match(pki, other_pki):
    with pytest.raises(CertificateError, match="private key does not belong"):
        Credential(pki.dp_auth.cert, other_pki.dp_auth.key)
