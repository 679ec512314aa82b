"""Generate an SGP.22 test PKI in the section 4.5.2 certificate profiles, on NIST P-256 or brainpoolP256r1.

The hierarchy mirrors the GSMA SGP.26 test certificates (testdata/sgp26/): a self-signed CI; an EUM whose
critical name constraints permit one EID prefix (its EIN); an eUICC certificate with the EID as subject
serialNumber and no expiry; SM-DP+ DPauth, DPpb and DPtls and SM-DS DSauth and DStls certificates signed by
the CI. Extensions, critical flags and key identifiers follow the SGP.26 certificates; OIDs in the
subjectAltName registeredID use the 2.999 example arc, as SGP.26 does.

TLS keys default to NIST P-256, also in a brainpool hierarchy. OpenSSL 3.0 (behind Python's ssl here) has
no brainpool signature scheme in TLS 1.3, and its TLS 1.2 clients do not offer the brainpool groups by
default, so a brainpoolP256r1 DPtls key fails every handshake ("no shared cipher"). A brainpool CI
signing the P-256 TLS certificate works in TLS 1.2 and 1.3 alike (checked on loopback, see the tests).
"""

from __future__ import annotations

import ipaddress
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.validate import (
    Role,
    check_name_constraints,
    check_well_formed,
    curve_name,
    eid_of,
    eum_name_constraints,
    name_text,
    pkid,
)
from rsp import crypto
from rsp.errors import CertificateError, DecodeError
from rsp.ids import make_eid, validate_eid

__all__ = [
    "Credential",
    "Pki",
    "create_ci",
    "generate_pki",
    "issue_eum",
    "issue_euicc",
    "issue_server",
    "issue_tls",
    "load_certificate",
    "load_private_key",
    "new_private_key",
    "pkid",
    "random_eid",
    "tls_names",
]

Rng = Callable[[int], bytes]

CURVES: dict[str, type[ec.EllipticCurve]] = {"nist": ec.SECP256R1, "brp": ec.BrainpoolP256R1}
# Group orders (SEC 2 section 2.4.2, RFC 5639 section 3.4): rng bytes become a scalar in [1, n-1].
EIN_LENGTH = 8  # the EUM Identification Number: the EID prefix an EUM certificate permits (SGP.29)
TEST_EIN = "89049032"  # the EIN of the SGP.26 test EUM
DEFAULT_CI_OID = "2.999.1"
DEFAULT_EUM_OID = "2.999.5"
DEFAULT_SMDP_OID = "2.999.10"
DEFAULT_SMDS_OID = "2.999.20"
CRL_URL = "http://crl.kinsim.invalid/ci.crl"  # SGP.26-style CRL distribution point; nothing serves it

CI_YEARS = 35
EUM_YEARS = 34
SERVER_YEARS = 10  # DPauth, DPpb, DSauth
TLS_DAYS = 398  # as the SGP.26 DPtls certificates (and the CA/Browser Forum maximum)
EUICC_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)  # "no well-defined expiration date"
# notBefore lies a little in the past so a peer whose clock is slightly behind accepts new certificates.
BACKDATE = timedelta(hours=1)

_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_MAX_CN = 64  # ub-common-name (RFC 5280 Appendix A)


@dataclass(frozen=True)
class Credential:
    """A certificate and, when we hold it, its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None = None

    def __post_init__(self):
        if self.key is not None and _spki(self.key.public_key()) != _spki(self.cert.public_key()):
            raise CertificateError(
                f"private key does not belong to certificate '{name_text(self.cert.subject)}'"
            )

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.signing_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def pkid(self) -> bytes:
        return pkid(self.cert)

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        if self.key is None:
            raise CertificateError(f"no private key for '{name_text(self.cert.subject)}'")
        return self.key


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- keys, time, serials ------------------------------------------------------------------------


def new_private_key(curve: str = "nist", rng: Rng = os.urandom) -> ec.EllipticCurvePrivateKey:
    """A private key from ``rng``, so a seeded rng gives the same PKI twice (one way: rsp.crypto)."""
    if curve not in CURVES:
        raise CertificateError(f"unknown curve {curve!r} (nist or brp)")
    return crypto.generate_private_key(curve, rng)


def _moment(now: datetime | None) -> datetime:
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("'now' must be timezone-aware")
    return now.astimezone(UTC).replace(microsecond=0)


def _years_later(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _serial(rng: Rng) -> int:
    return int.from_bytes(rng(16), "big") >> 1 or 1  # positive, at most 16 octets


def random_eid(ein: str = TEST_EIN, rng: Rng = os.urandom) -> str:
    """An EID starting with ``ein``, random digits after it and SGP.29 check digits."""
    free = 30 - len(ein)
    if not ein.isdigit() or free < 0:
        raise CertificateError(f"EIN must be at most 30 digits, got {ein!r}")
    digits = str(int.from_bytes(rng(16), "big") % 10**free).zfill(free) if free else ""
    return make_eid(ein + digits)


# --- building blocks ----------------------------------------------------------------------------


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _key_usage(*, sign: bool = False, cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _policy(role: Role) -> tuple[x509.ExtensionType, bool]:
    # Critical everywhere but in the TLS certificates, as in SGP.26.
    return x509.CertificatePolicies([x509.PolicyInformation(role.policy_oid, None)]), not role.rules.tls


def _registered_id(oid: str) -> x509.RegisteredID:
    try:
        return x509.RegisteredID(x509.ObjectIdentifier(oid))
    except ValueError:
        raise CertificateError(
            f"{oid!r} is not an object identifier (dotted decimal, e.g. 2.999.10)"
        ) from None


def _crl_points() -> x509.CRLDistributionPoints:
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(CRL_URL)], None, None, None)
    return x509.CRLDistributionPoints([point])


def _identifiers(issuer: Credential, key: ec.EllipticCurvePublicKey) -> list[tuple[x509.ExtensionType, bool]]:
    aki = x509.AuthorityKeyIdentifier(issuer.pkid, None, None)  # keyIdentifier only, as SGP.26
    return [(aki, False), (x509.SubjectKeyIdentifier.from_public_key(key), False)]


def _sign(
    subject: x509.Name,
    key: ec.EllipticCurvePublicKey,
    issuer: Credential | None,
    signer: ec.EllipticCurvePrivateKey,
    validity: tuple[datetime, datetime],
    extensions: list[tuple[x509.ExtensionType, bool]],
    rng: Rng,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key)
        .serial_number(_serial(rng))
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(signer, hashes.SHA256())


def _validity(now: datetime, not_after: datetime, issuer: Credential | None) -> tuple[datetime, datetime]:
    if issuer is not None:
        not_after = min(not_after, issuer.cert.not_valid_after_utc)
    return now - BACKDATE, not_after


def _key_for(key: ec.EllipticCurvePrivateKey | None, curve: str, rng: Rng) -> ec.EllipticCurvePrivateKey:
    return key if key is not None else new_private_key(curve, rng)


# --- the certificates ---------------------------------------------------------------------------


def create_ci(
    curve: str = "nist",
    *,
    oid: str = DEFAULT_CI_OID,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime | None = None,
    rng: Rng | None = None,
) -> Credential:
    """A self-signed CI certificate (SGP.22 4.5.2.1.0.1)."""
    now, rng = _moment(now), rng or os.urandom
    key = _key_for(key, curve, rng)
    subject = _name(
        (NameOID.COMMON_NAME, "kinsim Test CI"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "TESTCERT"),
        (NameOID.ORGANIZATION_NAME, "kinsim"),
        (NameOID.COUNTRY_NAME, "DE"),
    )
    extensions = [
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        (x509.BasicConstraints(ca=True, path_length=None), True),
        _policy(Role.CI),
        (_key_usage(cert_sign=True, crl_sign=True), True),
        (x509.SubjectAlternativeName([_registered_id(oid)]), False),
        (_crl_points(), False),
    ]
    validity = _validity(now, _years_later(now, CI_YEARS), None)
    return Credential(_sign(subject, key.public_key(), None, key, validity, extensions, rng), key)


def issue_eum(
    ci: Credential,
    *,
    ein: str = TEST_EIN,
    oid: str = DEFAULT_EUM_OID,
    organization: str = "kinsim Test EUM",
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime | None = None,
    rng: Rng | None = None,
) -> Credential:
    """An EUM certificate whose name constraints permit EIDs starting with ``ein`` (SGP.22 4.5.2.1.0.3)."""
    if not ein.isdigit() or not 1 <= len(ein) <= 30:
        raise CertificateError(f"EIN (EID prefix) must be 1 to 30 digits, got {ein!r}")
    now, rng = _moment(now), rng or os.urandom
    key = _key_for(key, curve_name(ci.cert.public_key()), rng)
    subject = _name(
        (NameOID.COUNTRY_NAME, "DE"),
        (NameOID.ORGANIZATION_NAME, organization),
        (NameOID.COMMON_NAME, "kinsim Test EUM"),
    )
    permitted = _name((NameOID.ORGANIZATION_NAME, organization), (NameOID.SERIAL_NUMBER, ein))
    extensions = [
        *_identifiers(ci, key.public_key()),
        (_key_usage(cert_sign=True), True),
        _policy(Role.EUM),
        (x509.SubjectAlternativeName([_registered_id(oid)]), False),
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_crl_points(), False),
        (
            x509.NameConstraints(permitted_subtrees=[x509.DirectoryName(permitted)], excluded_subtrees=None),
            True,
        ),
    ]
    validity = _validity(now, _years_later(now, EUM_YEARS), ci)
    return Credential(_sign(subject, key.public_key(), ci, ci.signing_key(), validity, extensions, rng), key)


def issue_euicc(
    eum: Credential,
    eid: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime | None = None,
    rng: Rng | None = None,
) -> Credential:
    """A new eUICC certificate for ``eid``, which must lie in the EUM's permitted EID prefix."""
    validate_eid(eid)
    now, rng = _moment(now), rng or os.urandom
    key = _key_for(key, curve_name(eum.cert.public_key()), rng)
    subject = _euicc_subject(eum.cert, eid)
    check_name_constraints(eum.cert, subject)  # the same rule the validator applies
    extensions = [
        *_identifiers(eum, key.public_key()),
        (_key_usage(sign=True), True),
        _policy(Role.EUICC),
    ]
    validity = (now - BACKDATE, EUICC_NOT_AFTER)  # SGP.22 4.5.2.1.0.2: the eUICC certificate never expires
    return Credential(
        _sign(subject, key.public_key(), eum, eum.signing_key(), validity, extensions, rng), key
    )


def _euicc_subject(eum: x509.Certificate, eid: str) -> x509.Name:
    """C of the EUM, then the matching name constraint with the EID as serialNumber, then a CN."""
    permitted, _ = eum_name_constraints(eum)
    for constraint in permitted:
        prefixes = [str(a.value) for a in constraint.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
        if prefixes and eid.startswith(prefixes[0]):
            body = [
                x509.NameAttribute(NameOID.SERIAL_NUMBER, eid) if a.oid == NameOID.SERIAL_NUMBER else a
                for a in constraint
            ]
            has_country = constraint.get_attributes_for_oid(NameOID.COUNTRY_NAME)
            country = [] if has_country else eum.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
            return x509.Name([*country, *body, x509.NameAttribute(NameOID.COMMON_NAME, "kinsim Test eUICC")])
    allowed = ", ".join(
        str(a.value) for c in permitted for a in c.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    )
    raise CertificateError(f"EID {eid} is outside the EUM's permitted EID prefix ({allowed or 'none'})")


def issue_server(
    ci: Credential,
    role: Role,
    *,
    oid: str,
    common_name: str | None = None,
    organization: str = "kinsim",
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime | None = None,
    rng: Rng | None = None,
) -> Credential:
    """A DPauth, DPpb or DSauth certificate carrying the server's OID (SGP.22 4.5.2.1.0.4/5)."""
    if role not in (Role.DP_AUTH, Role.DP_PB, Role.DS_AUTH):
        raise CertificateError(f"issue_server makes DPauth, DPpb and DSauth certificates, not {role.label}")
    now, rng = _moment(now), rng or os.urandom
    key = _key_for(key, curve_name(ci.cert.public_key()), rng)
    default_cn = "kinsim Test SM-DS" if role is Role.DS_AUTH else "kinsim Test SM-DP+"
    subject = _name(
        (NameOID.ORGANIZATION_NAME, organization), (NameOID.COMMON_NAME, common_name or default_cn)
    )
    extensions = [
        *_identifiers(ci, key.public_key()),
        (x509.SubjectAlternativeName([_registered_id(oid)]), False),
        (_key_usage(sign=True), True),
        _policy(role),
        (_crl_points(), False),
    ]
    validity = _validity(now, _years_later(now, SERVER_YEARS), ci)
    return Credential(_sign(subject, key.public_key(), ci, ci.signing_key(), validity, extensions, rng), key)


def issue_tls(
    ci: Credential,
    address: str,
    role: Role = Role.DP_TLS,
    *,
    oid: str | None = None,
    organization: str = "kinsim",
    curve: str = "nist",
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime | None = None,
    rng: Rng | None = None,
    days: int = TLS_DAYS,
) -> Credential:
    """A TLS server certificate for an SM-DP+ (or SM-DS) address, signed by the CI.

    ``address`` is a host name or IP literal without port; a loopback address also gets DNS
    ``localhost`` and IPs 127.0.0.1 and ::1, so local servers work whichever way they are reached.
    """
    if role not in (Role.DP_TLS, Role.DS_TLS):
        raise CertificateError(f"issue_tls makes SM-DP+ and SM-DS TLS certificates, not {role.label}")
    now, rng = _moment(now), rng or os.urandom
    key = _key_for(key, curve, rng)
    names = tls_names(address)
    host = address.strip().strip("[]").lower()
    subject = [(NameOID.ORGANIZATION_NAME, organization)]
    if len(host) <= _MAX_CN:
        subject.append((NameOID.COMMON_NAME, host))
    if oid is not None:
        names.append(_registered_id(oid))
    extensions = [
        (_key_usage(sign=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), True),
        _policy(role),
        *_identifiers(ci, key.public_key()),
        (x509.SubjectAlternativeName(names), False),
        (_crl_points(), False),
    ]
    validity = _validity(now, now + timedelta(days=days), ci)
    return Credential(
        _sign(_name(*subject), key.public_key(), ci, ci.signing_key(), validity, extensions, rng), key
    )


def tls_names(address: str) -> list[x509.GeneralName]:
    """subjectAltName entries for a server address (dNSName or iPAddress)."""
    host = address.strip().strip("[]").lower()
    try:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        labels = host.split(".")
        if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
            raise CertificateError(
                f"server address {address!r} is not a host name or IP address (give it without scheme or port)"
            ) from None
        names = [x509.DNSName(host)]
    if host in _LOOPBACK_NAMES:
        loopback = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        names += [n for n in loopback if n not in names]
    return names


# --- a whole hierarchy --------------------------------------------------------------------------

PKI_NAMES = ("ci", "eum", "euicc", "dp_auth", "dp_pb", "dp_tls", "ds_auth", "ds_tls")
_OPTIONAL = ("ds_auth", "ds_tls")  # SGP.26 has no SM-DS certificates


@dataclass(frozen=True)
class Pki:
    """One curve's hierarchy: CI, EUM, eUICC, SM-DP+ (auth, pb, TLS) and SM-DS (auth, TLS)."""

    curve: str
    ci: Credential
    eum: Credential
    euicc: Credential
    dp_auth: Credential
    dp_pb: Credential
    dp_tls: Credential
    ds_auth: Credential | None = None
    ds_tls: Credential | None = None

    @property
    def eid(self) -> str:
        return eid_of(self.euicc.cert) or ""

    def credentials(self) -> dict[str, Credential]:
        """Name -> credential for every certificate present; the names are the file stems of save()."""
        return {name: getattr(self, name) for name in PKI_NAMES if getattr(self, name) is not None}

    def save(self, directory: str | os.PathLike) -> list[Path]:
        """Write NAME.der (certificate) and NAME.key.pem (PKCS#8 private key, mode 0600) per credential."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for name, credential in self.credentials().items():
            written.append(_write(target / f"{name}.der", credential.cert_der, 0o644))
            if credential.key is not None:
                written.append(_write(target / f"{name}.key.pem", credential.key_pem, 0o600))
        return written

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Pki:
        source = Path(directory)
        found = {}
        for name in PKI_NAMES:
            cert_path = source / f"{name}.der"
            if not cert_path.exists():
                if name in _OPTIONAL:
                    continue
                raise CertificateError(
                    f"{cert_path} is missing: not a PKI directory written by 'kinsim certs generate'"
                )
            key_path = source / f"{name}.key.pem"
            key = read_private_key(key_path) if key_path.exists() else None
            found[name] = Credential(read_certificate(cert_path), key)
        return cls(curve=curve_name(found["ci"].cert.public_key()), **found)


def _write(path: Path, data: bytes, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)  # the open() mode only applies when the file is new
    return path


def generate_pki(
    curve: str = "nist",
    *,
    smdp_address: str = "localhost",
    smdp_oid: str = DEFAULT_SMDP_OID,
    smds_oid: str = DEFAULT_SMDS_OID,
    eid: str | None = None,
    tls_curve: str = "nist",
    now: datetime | None = None,
    rng: Rng | None = None,
) -> Pki:
    """A complete hierarchy on ``curve``; the EUM permits the first 8 digits (EIN) of ``eid``.

    The SM-DS shares the SM-DP+ address with its own OID. TLS keys use ``tls_curve`` (see module doc).
    """
    now, rng = _moment(now), rng or os.urandom
    eid = validate_eid(eid) if eid else random_eid(TEST_EIN, rng)
    ci = create_ci(curve, now=now, rng=rng)
    eum = issue_eum(ci, ein=eid[:EIN_LENGTH], now=now, rng=rng)
    return Pki(
        curve=curve,
        ci=ci,
        eum=eum,
        euicc=issue_euicc(eum, eid, now=now, rng=rng),
        dp_auth=issue_server(ci, Role.DP_AUTH, oid=smdp_oid, now=now, rng=rng),
        dp_pb=issue_server(ci, Role.DP_PB, oid=smdp_oid, now=now, rng=rng),
        dp_tls=issue_tls(ci, smdp_address, Role.DP_TLS, oid=smdp_oid, curve=tls_curve, now=now, rng=rng),
        ds_auth=issue_server(ci, Role.DS_AUTH, oid=smds_oid, now=now, rng=rng),
        ds_tls=issue_tls(ci, smdp_address, Role.DS_TLS, oid=smds_oid, curve=tls_curve, now=now, rng=rng),
    )


# --- reading files ------------------------------------------------------------------------------


def load_certificate(data: bytes) -> x509.Certificate:
    """A well-formed certificate from DER or PEM bytes; DecodeError otherwise."""
    try:
        with warnings.catch_warnings():
            # cryptography only warns about a serial number that is not positive (RFC 5280 4.1.2.2).
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
        check_well_formed(cert)
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning, CertificateError) as exc:
        raise DecodeError(f"not a well-formed X.509 certificate (DER or PEM): {exc}") from None
    return cert


def read_certificate(path: str | os.PathLike) -> x509.Certificate:
    """``load_certificate`` of a file, with errors that name it: CertificateError when it cannot be
    read, DecodeError when it holds no well-formed certificate."""
    data = _read_file(path, "certificate")
    try:
        return load_certificate(data)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from None


def read_private_key(path: str | os.PathLike) -> ec.EllipticCurvePrivateKey:
    """``load_private_key`` of a file, with errors that name it (as ``read_certificate``)."""
    data = _read_file(path, "private key")
    try:
        return load_private_key(data)
    except DecodeError as exc:
        raise DecodeError(f"{path}: {exc}") from None


def _read_file(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def load_private_key(data: bytes) -> ec.EllipticCurvePrivateKey:
    """An unencrypted EC private key from PEM (PKCS#8 or SEC 1) or DER; DecodeError otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise DecodeError(f"not an unencrypted private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DecodeError("private key is not an elliptic curve key")
    return key
