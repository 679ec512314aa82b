"""SGP.22 certificate chain validation with each role's rules (section 4.5.2), not just signatures.

A generic X.509 validator is not enough here: SGP.22 4.5.2.1.0.3 gives the EUM certificate's name
constraints an EID-prefix meaning (the eUICC's subject serialNumber, its EID, must *start with* the
permitted serialNumber), which RFC 5280 directoryName matching rejects (``openssl verify`` fails the
SGP.26 eUICC with "permitted subtree violation"). So this module walks the short SGP.22 v2 chains itself:
eUICC -> EUM -> CI, and SM-DP+/SM-DS certificates -> CI.

Every failure raises ``CertificateError`` with a reason naming the certificate and the rule it broke.
The clock is a parameter, so tests pin it and certificates that expire later never break them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from itertools import pairwise

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, SignatureAlgorithmOID

from rsp.errors import CertificateError, DecodeError
from rsp.ids import validate_eid

RSP_ROLE_ARC = "2.23.146.1.2.1"  # id-rspRole (SGP.22 Annex A/H, RSPDefinitions)

# Curve names as the project spells them ("nist", "brp") for the curves SGP.22 2.6.5 allows here.
CURVE_NAMES = {"secp256r1": "nist", "brainpoolP256r1": "brp"}

# Extensions this validator understands; any other extension marked critical fails (RFC 5280 4.2).
KNOWN_EXTENSIONS = {
    ExtensionOID.KEY_USAGE,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
}


class Role(Enum):
    """An RSP role; the value is its certificate policy OID (id-rspRole-*)."""

    CI = "2.23.146.1.2.1.0"
    EUICC = "2.23.146.1.2.1.1"
    EUM = "2.23.146.1.2.1.2"
    DP_TLS = "2.23.146.1.2.1.3"
    DP_AUTH = "2.23.146.1.2.1.4"
    DP_PB = "2.23.146.1.2.1.5"
    DS_TLS = "2.23.146.1.2.1.6"
    DS_AUTH = "2.23.146.1.2.1.7"

    @property
    def policy_oid(self) -> x509.ObjectIdentifier:
        return x509.ObjectIdentifier(self.value)

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def cli_name(self) -> str:
        """The spelling used on the command line: ``dp-auth``, ``euicc``, ..."""
        return self.name.lower().replace("_", "-")

    @property
    def rules(self) -> RoleRules:
        return _RULES[self]

    @classmethod
    def parse(cls, text: str) -> Role:
        """A role from its command-line name (``dp-tls``), enum name (``DP_TLS``) or policy OID."""
        key = text.strip().upper().replace("-", "_")
        for role in cls:
            if key == role.name or text.strip() == role.value:
                return role
        names = ", ".join(r.cli_name for r in cls)
        raise CertificateError(f"unknown role {text!r} (one of: {names})")


_LABELS = {
    Role.CI: "CI",
    Role.EUICC: "eUICC",
    Role.EUM: "EUM",
    Role.DP_TLS: "SM-DP+ TLS",
    Role.DP_AUTH: "SM-DP+ authentication (DPauth)",
    Role.DP_PB: "SM-DP+ profile binding (DPpb)",
    Role.DS_TLS: "SM-DS TLS",
    Role.DS_AUTH: "SM-DS authentication (DSauth)",
}


@dataclass(frozen=True)
class RoleRules:
    """What SGP.22 4.5.2 asks of a role's certificate beyond its policy OID."""

    issuer: Role | None  # the role whose key signs it; None for the self-signed CI
    ca: bool  # basicConstraints cA=TRUE (critical) for the two CA roles
    key_usage: str  # the keyUsage bit the role needs (keyUsage is always critical)
    registered_id: bool  # subjectAltName carries the entity's OID as registeredID
    tls: bool  # a TLS server certificate: extendedKeyUsage serverAuth and a dNSName


_CA = {"key_usage": "key_cert_sign", "ca": True}
_SIGNER = {"key_usage": "digital_signature", "ca": False}
_RULES = {
    Role.CI: RoleRules(issuer=None, registered_id=False, tls=False, **_CA),
    Role.EUM: RoleRules(issuer=Role.CI, registered_id=True, tls=False, **_CA),
    Role.EUICC: RoleRules(issuer=Role.EUM, registered_id=False, tls=False, **_SIGNER),
    Role.DP_TLS: RoleRules(issuer=Role.CI, registered_id=False, tls=True, **_SIGNER),
    Role.DP_AUTH: RoleRules(issuer=Role.CI, registered_id=True, tls=False, **_SIGNER),
    Role.DP_PB: RoleRules(issuer=Role.CI, registered_id=True, tls=False, **_SIGNER),
    Role.DS_TLS: RoleRules(issuer=Role.CI, registered_id=False, tls=True, **_SIGNER),
    Role.DS_AUTH: RoleRules(issuer=Role.CI, registered_id=True, tls=False, **_SIGNER),
}


@dataclass(frozen=True)
class ValidatedChain:
    """The result of a successful validation: what the caller needs from the chain."""

    role: Role
    leaf: x509.Certificate
    ci: x509.Certificate  # the trusted CI the chain ends at
    eum: x509.Certificate | None  # the EUM certificate, for an eUICC leaf
    public_key: ec.EllipticCurvePublicKey  # the leaf's key
    eid: str | None  # eUICC: the EID from the subject serialNumber
    oid: str | None  # the leaf's subjectAltName registeredID (SM-DP+/SM-DS/EUM/CI OID)
    dns_names: tuple[str, ...]  # TLS: the subjectAltName dNSNames

    @property
    def ci_pkid(self) -> bytes:
        """The CI's PKId (its subject key identifier), as listed in euiccCiPKIdList*."""
        return pkid(self.ci)


# --- reading certificates -----------------------------------------------------------------------


def name_text(name: x509.Name) -> str:
    """RFC 4514 text with serialNumber spelled out (cryptography prints its bare OID)."""
    return name.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"})


def describe(cert: x509.Certificate, role: Role) -> str:
    return f"{role.label} certificate '{name_text(cert.subject)}'"


def extensions(cert: x509.Certificate) -> x509.Extensions:
    """The extensions, with a malformed extension reported as a CertificateError."""
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(
            f"certificate '{_subject_text(cert)}' has malformed extensions: {exc}"
        ) from exc


def check_well_formed(cert: x509.Certificate) -> None:
    """Parse the lazily decoded parts (names, extensions, times) now, as a CertificateError if broken."""
    try:
        _ = cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc
        _ = cert.signature_algorithm_oid, cert.signature, cert.tbs_certificate_bytes
    except ValueError as exc:
        raise CertificateError(f"malformed certificate: {exc}") from exc
    extensions(cert)


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension | None:
    try:
        return extensions(cert).get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _subject_text(cert: x509.Certificate) -> str:
    try:
        return name_text(cert.subject)
    except ValueError:
        return "<unreadable subject>"


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    ext = _extension(cert, x509.SubjectKeyIdentifier)
    return ext.value.digest if ext else None


def pkid(cert: x509.Certificate) -> bytes:
    """The subject key identifier; for a CI this is its PKId (euiccCiPKIdListForVerification)."""
    identifier = subject_key_id(cert)
    if identifier is None:
        raise CertificateError(f"certificate '{_subject_text(cert)}' has no subject key identifier")
    return identifier


def authority_key_id(cert: x509.Certificate) -> bytes | None:
    ext = _extension(cert, x509.AuthorityKeyIdentifier)
    return ext.value.key_identifier if ext else None


def role_of(cert: x509.Certificate) -> Role | None:
    """The role named by the certificate's id-rspRole policy, if it carries exactly one."""
    roles = _policy_roles(cert)
    return roles[0] if len(roles) == 1 else None


def _policy_roles(cert: x509.Certificate) -> list[Role]:
    ext = _extension(cert, x509.CertificatePolicies)
    if ext is None:
        return []
    by_oid = {role.value: role for role in Role}
    return [
        by_oid[p.policy_identifier.dotted_string]
        for p in ext.value
        if p.policy_identifier.dotted_string in by_oid
    ]


def _alt_names(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    ext = _extension(cert, x509.SubjectAlternativeName)
    return ext.value if ext else None


def registered_id(cert: x509.Certificate) -> str | None:
    """The entity's OID from subjectAltName registeredID (CI, EUM, SM-DP+, SM-DS)."""
    names = _alt_names(cert)
    oids = names.get_values_for_type(x509.RegisteredID) if names else []
    return oids[0].dotted_string if oids else None


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    names = _alt_names(cert)
    return tuple(names.get_values_for_type(x509.DNSName)) if names else ()


def eid_of(cert: x509.Certificate) -> str | None:
    """The subject serialNumber, which for an eUICC certificate is the EID (SGP.22 4.5.2.1.0.2)."""
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def curve_name(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """'nist' or 'brp'; CertificateError for any other curve."""
    name = key.curve.name
    if name not in CURVE_NAMES:
        raise CertificateError(f"curve {name} is not one SGP.22 allows here (NIST P-256, brainpoolP256r1)")
    return CURVE_NAMES[name]


def public_key(cert: x509.Certificate, role: Role) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{describe(cert, role)}: unusable public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(f"{describe(cert, role)}: public key is not an elliptic curve key")
    try:
        curve_name(key)
    except CertificateError as exc:
        raise CertificateError(f"{describe(cert, role)}: {exc}") from None
    return key


def eum_name_constraints(eum: x509.Certificate) -> tuple[list[x509.Name], list[x509.Name]]:
    """The permitted and excluded directoryName subtrees of an EUM certificate."""
    ext = _extension(eum, x509.NameConstraints)
    if ext is None:
        return [], []

    def directory_names(subtrees) -> list[x509.Name]:
        return [tree.value for tree in subtrees or () if isinstance(tree, x509.DirectoryName)]

    return directory_names(ext.value.permitted_subtrees), directory_names(ext.value.excluded_subtrees)


def _constraint_text(names: list[x509.Name]) -> str:
    return " or ".join(f"'{name_text(n)}'" for n in names)


# --- the SGP.22 name constraint ------------------------------------------------------------------


def name_within(subject: x509.Name, constraint: x509.Name) -> bool:
    """SGP.22 4.5.2.1.0.3 matching: every attribute of the constraint appears in the subject with the
    same value, except serialNumber, where the subject's value (the EID) must start with the
    constraint's (the EUM's EID prefix)."""
    for attribute in constraint:
        values = [str(a.value) for a in subject.get_attributes_for_oid(attribute.oid)]
        wanted = str(attribute.value)
        if attribute.oid == NameOID.SERIAL_NUMBER:
            if not any(v.startswith(wanted) for v in values):
                return False
        elif wanted not in values:
            return False
    return True


def check_name_constraints(eum: x509.Certificate, subject: x509.Name) -> None:
    """Raise unless ``subject`` (an eUICC subject) is inside the EUM's permitted EID range."""
    permitted, excluded = eum_name_constraints(eum)
    eid = next((str(a.value) for a in subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)), None)
    who = f"eUICC '{name_text(subject)}' (EID {eid})"
    if permitted and not any(name_within(subject, c) for c in permitted):
        raise CertificateError(
            f"{who} is outside the EUM's name constraints: O must equal and the EID must start with "
            f"the serialNumber of {_constraint_text(permitted)} (SGP.22 4.5.2.1.0.3)"
        )
    hits = [c for c in excluded if name_within(subject, c)]
    if hits:
        raise CertificateError(f"{who} falls in the EUM's excluded subtree {_constraint_text(hits)}")


# --- validation ---------------------------------------------------------------------------------


def validate_chain(
    leaf: x509.Certificate,
    role: Role,
    *,
    intermediates: Sequence[x509.Certificate] = (),
    trusted_cis: Sequence[x509.Certificate],
    now: datetime,
) -> ValidatedChain:
    """Validate ``leaf`` for ``role`` up to one of ``trusted_cis`` at time ``now`` (tz-aware).

    ``intermediates`` holds the EUM certificate(s) for an eUICC leaf; it is ignored for roles the CI
    signs directly. Raises CertificateError naming the certificate and the rule it broke.
    """
    if now.tzinfo is None:
        raise ValueError("validate_chain needs a timezone-aware 'now'")
    if not trusted_cis:
        raise CertificateError("no trusted CI certificate given")
    for cert in (leaf, *intermediates, *trusted_cis):
        check_well_formed(cert)
    _check_policy(leaf, role)
    chain = _build_path(leaf, role, list(intermediates), list(trusted_cis))
    for (cert, cert_role), (issuer, issuer_role) in pairwise(chain):
        _check_signature(cert, cert_role, issuer, issuer_role)
    ci = chain[-1][0]
    _check_signature(ci, Role.CI, ci, Role.CI)  # the anchor must at least be self-consistent
    for cert, cert_role in chain:
        _check_validity(cert, cert_role, now)
        if cert is not leaf:
            _check_policy(cert, cert_role)
        _check_profile(cert, cert_role)
    eum = chain[1][0] if role is Role.EUICC else None
    if eum is not None:
        check_name_constraints(eum, leaf.subject)
    return ValidatedChain(
        role=role,
        leaf=leaf,
        ci=ci,
        eum=eum,
        public_key=public_key(leaf, role),
        eid=eid_of(leaf) if role is Role.EUICC else None,
        oid=registered_id(leaf),
        dns_names=dns_names(leaf),
    )


def _check_policy(cert: x509.Certificate, role: Role) -> None:
    """The id-rspRole certificate policy names exactly the expected role."""
    roles = _policy_roles(cert)
    if roles == [role]:
        return
    if not roles:
        found = "no id-rspRole certificate policy"
    else:
        found = "the certificate policy of " + " and ".join(f"{r.label} ({r.value})" for r in roles)
    raise CertificateError(f"{describe(cert, role)}: carries {found}, not {role.label} ({role.value})")


def _build_path(
    leaf: x509.Certificate, role: Role, intermediates: list[x509.Certificate], cis: list[x509.Certificate]
) -> list[tuple[x509.Certificate, Role]]:
    """[(certificate, role)] from the leaf up to the trusted CI, matched by issuer name and AKI."""
    if role is Role.CI:
        if leaf not in cis:
            raise CertificateError(f"{describe(leaf, role)} is not one of the trusted CIs")
        return [(leaf, Role.CI)]
    chain = [(leaf, role)]
    if role.rules.issuer is Role.EUM:
        if not intermediates:
            raise CertificateError(
                f"{describe(leaf, role)}: its EUM certificate is needed and none was given"
            )
        eum = _find_issuer(leaf, role, intermediates, Role.EUM)
        chain.append((eum, Role.EUM))
    cert, cert_role = chain[-1]
    chain.append((_find_issuer(cert, cert_role, cis, Role.CI), Role.CI))
    return chain


def _find_issuer(
    cert: x509.Certificate, role: Role, candidates: list[x509.Certificate], issuer_role: Role
) -> x509.Certificate:
    aki = authority_key_id(cert)
    if aki is None:
        raise CertificateError(f"{describe(cert, role)}: no authority key identifier")
    named = [c for c in candidates if c.subject == cert.issuer]
    if not named:
        raise CertificateError(
            f"{describe(cert, role)}: issuer '{name_text(cert.issuer)}' is not the subject of any "
            f"given {issuer_role.label} certificate"
        )
    for candidate in named:
        if subject_key_id(candidate) == aki:
            return candidate
    raise CertificateError(
        f"{describe(cert, role)}: authority key identifier {aki.hex()} matches no {issuer_role.label} "
        f"certificate named '{name_text(cert.issuer)}' (wrong issuer)"
    )


def _check_signature(cert: x509.Certificate, role: Role, issuer: x509.Certificate, issuer_role: Role) -> None:
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise CertificateError(
            f"{describe(cert, role)}: signature algorithm {cert.signature_algorithm_oid.dotted_string} "
            "is not ecdsa-with-SHA256"
        )
    key = public_key(issuer, issuer_role)
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        by = "its own key" if issuer is cert else f"the key of {describe(issuer, issuer_role)}"
        raise CertificateError(f"{describe(cert, role)}: signature does not verify with {by}") from None


def _check_validity(cert: x509.Certificate, role: Role, now: datetime) -> None:
    stamp = "%Y-%m-%d %H:%M:%SZ"
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"{describe(cert, role)}: not valid before {cert.not_valid_before_utc:{stamp}} "
            f"(checked at {now:{stamp}})"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"{describe(cert, role)}: expired on {cert.not_valid_after_utc:{stamp}} (checked at {now:{stamp}})",
            expired=True,
        )


def _check_profile(cert: x509.Certificate, role: Role) -> None:
    """The role's certificate profile (SGP.22 4.5.2.1.0.x): everything but policy, chain and time."""
    what = describe(cert, role)
    if cert.version is not x509.Version.v3:
        raise CertificateError(f"{what}: not an X.509 v3 certificate")
    public_key(cert, role)
    for ext in extensions(cert):
        if ext.critical and ext.oid not in KNOWN_EXTENSIONS:
            raise CertificateError(f"{what}: unrecognised critical extension {ext.oid.dotted_string}")
    if subject_key_id(cert) is None:
        raise CertificateError(f"{what}: no subject key identifier")
    rules = role.rules
    _check_key_usage(cert, what, rules)
    _check_basic_constraints(cert, what, rules)
    if rules.registered_id and registered_id(cert) is None:
        raise CertificateError(f"{what}: subjectAltName has no registeredID (the entity's OID)")
    if rules.tls:
        _check_tls(cert, what)
    if role is Role.EUICC:
        _check_euicc_subject(cert, what)
    if role is Role.EUM:
        _check_eum_constraints(cert, what)


def _check_key_usage(cert: x509.Certificate, what: str, rules: RoleRules) -> None:
    ext = _extension(cert, x509.KeyUsage)
    if ext is None or not ext.critical:
        raise CertificateError(f"{what}: keyUsage must be present and critical")
    usage = ext.value
    if not getattr(usage, rules.key_usage):
        raise CertificateError(f"{what}: keyUsage lacks {rules.key_usage}")
    if not rules.ca and (usage.key_cert_sign or usage.crl_sign):
        raise CertificateError(f"{what}: keyUsage allows certificate or CRL signing, but it is not a CA")


def _check_basic_constraints(cert: x509.Certificate, what: str, rules: RoleRules) -> None:
    ext = _extension(cert, x509.BasicConstraints)
    if rules.ca:
        if ext is None or not ext.critical or not ext.value.ca:
            raise CertificateError(f"{what}: basicConstraints must be critical with cA TRUE")
    elif ext is not None and ext.value.ca:
        raise CertificateError(f"{what}: basicConstraints says cA TRUE, but the role is an end entity")


def _check_tls(cert: x509.Certificate, what: str) -> None:
    ext = _extension(cert, x509.ExtendedKeyUsage)
    if ext is None or ExtendedKeyUsageOID.SERVER_AUTH not in ext.value:
        raise CertificateError(f"{what}: extendedKeyUsage lacks serverAuth (id-kp-serverAuth)")
    if not dns_names(cert):
        raise CertificateError(f"{what}: subjectAltName has no dNSName (the server address)")


def _check_euicc_subject(cert: x509.Certificate, what: str) -> None:
    eid = eid_of(cert)
    if eid is None:
        raise CertificateError(f"{what}: subject has no serialNumber (the EID)")
    try:
        validate_eid(eid)
    except DecodeError as exc:
        raise CertificateError(f"{what}: subject serialNumber is not a valid EID: {exc}") from None
    if not cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        raise CertificateError(f"{what}: subject has no organizationName")


def _check_eum_constraints(cert: x509.Certificate, what: str) -> None:
    ext = _extension(cert, x509.NameConstraints)
    if ext is None or not ext.critical:
        raise CertificateError(f"{what}: nameConstraints must be present and critical")
    permitted, _ = eum_name_constraints(cert)
    if not any(c.get_attributes_for_oid(NameOID.SERIAL_NUMBER) for c in permitted):
        raise CertificateError(
            f"{what}: nameConstraints permit no directoryName with an EID prefix (serialNumber)"
        )
