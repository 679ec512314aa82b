"""What the runner needs to play a peer: a test eUICC identity (for ES9+ cases), an SM-DP+ PKI
(for ES10 cases), and test certificates forged from them for the negative cases.

Only what a real peer would hold: the eUICC's key and certificate with its EUM certificate (the
SGP.26 test eUICC by default, its keys are published); optionally the EUM and CI private keys, which
the test PKIs publish too and which the runner uses to make expired or wrong-role certificates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import Credential, Pki, load_certificate, load_private_key
from certs.sgp26 import load_sgp26, sgp26_cis
from certs.validate import Role, authority_key_id, curve_name, eid_of, pkid
from rsp import crypto
from rsp.errors import CertificateError, KinsimError

Rng = Callable[[int], bytes]
SGP26 = "sgp26"


class IdentityError(KinsimError):
    """The runner's identity or PKI files are missing or inconsistent."""


@dataclass(frozen=True)
class EuiccMaterial:
    """The runner's eUICC for ES9+ cases: CERT.EUICC with its key, CERT.EUM, and (when known) the CI."""

    euicc: Credential
    eum: Credential
    ci: Credential | None = None

    def __post_init__(self) -> None:
        if self.euicc.key is None:
            raise IdentityError("the test eUICC identity needs the eUICC private key")
        if eid_of(self.euicc.cert) is None:
            raise IdentityError("the eUICC certificate carries no EID (subject serialNumber)")

    @property
    def eid(self) -> str:
        return eid_of(self.euicc.cert) or ""

    @property
    def curve(self) -> str:
        return curve_name(self.euicc.cert.public_key())

    @property
    def signing_ci_pkid(self) -> bytes:
        """The CI the eUICC signs under (euiccCiPKIdListForSigning): the EUM's issuer."""
        issuer = authority_key_id(self.eum.cert)
        if issuer is None:
            raise IdentityError("the EUM certificate has no authority key identifier")
        return issuer

    def missing_material(self) -> dict[str, str]:
        missing = {}
        if self.eum.key is None:
            missing["euicc-eum-key"] = "the eUICC identity has no EUM private key (eum.key.pem)"
        if self.ci is None or self.ci.key is None:
            missing["euicc-ci-key"] = "the eUICC identity has no CI private key (ci.der + ci.key.pem)"
        return missing


def sgp26_euicc(curve: str = "nist") -> EuiccMaterial:
    """The SGP.26 test eUICC with its EUM and CI (all with their published keys)."""
    pki = load_sgp26(curve)
    return EuiccMaterial(pki.euicc, pki.eum, pki.ci)


def euicc_from_pki(pki: Pki) -> EuiccMaterial:
    return EuiccMaterial(pki.euicc, pki.eum, pki.ci)


def load_euicc_material(directory: str | os.PathLike) -> EuiccMaterial:
    """An identity directory: euicc.der (or .pem) + euicc.key.pem + eum.der; optional eum.key.pem,
    ci.der + ci.key.pem. A 'kinsim certs generate' directory and a software eUICC's identity/ folder
    (which has trusted-cis.pem instead of ci.der) both qualify."""
    folder = Path(directory)
    if not folder.is_dir():
        raise IdentityError(f"{folder} is not a directory")
    euicc = _credential(folder, "euicc", required=True)
    eum = _credential(folder, "eum", required=True)
    ci = _credential(folder, "ci", required=False)
    if ci is None and (folder / "trusted-cis.pem").exists():
        issuer = authority_key_id(eum.cert)
        cis = x509.load_pem_x509_certificates((folder / "trusted-cis.pem").read_bytes())
        ci = next((Credential(c) for c in cis if pkid(c) == issuer), None)
    return EuiccMaterial(euicc, eum, ci)


def load_smdp_pki(spec: str) -> Pki:
    """The runner's SM-DP+ for ES10 cases: 'sgp26' / 'sgp26:brp' (the SGP.26 test SM-DP+) or a
    'kinsim certs generate' directory. DPauth and DPpb need their private keys."""
    if spec == SGP26 or spec.startswith(SGP26 + ":"):
        curve = spec.partition(":")[2] or "nist"
        pki = load_sgp26(curve)
    else:
        try:
            pki = Pki.load(spec)
        except (CertificateError, OSError) as exc:
            raise IdentityError(f"cannot load the SM-DP+ PKI {spec}: {exc}") from None
    for name in ("dp_auth", "dp_pb"):
        if getattr(pki, name).key is None:
            raise IdentityError(f"the SM-DP+ PKI {spec} has no {name} private key")
    return pki


def known_cis(*extra: x509.Certificate) -> list[x509.Certificate]:
    """CIs the runner can validate a card's chain against: the given ones and both SGP.26 CIs."""
    seen, out = set(), []
    for cert in (*extra, *sgp26_cis()):
        if pkid(cert) not in seen:
            seen.add(pkid(cert))
            out.append(cert)
    return out


def _credential(folder: Path, stem: str, *, required: bool) -> Credential | None:
    cert_path = next((folder / f"{stem}{ext}" for ext in (".der", ".pem", ".crt") if (folder / f"{stem}{ext}").exists()),
                     None)
    if cert_path is None:
        if required:
            raise IdentityError(f"{folder} has no {stem}.der or {stem}.pem")
        return None
    key_path = folder / f"{stem}.key.pem"
    key = load_private_key(key_path.read_bytes()) if key_path.exists() else None
    try:
        return Credential(load_certificate(cert_path.read_bytes()), key)
    except CertificateError as exc:
        raise IdentityError(f"{cert_path}: {exc}") from None


# --- forging test certificates ------------------------------------------------------------------


def reissue(template: x509.Certificate, signer: ec.EllipticCurvePrivateKey, *, rng: Rng,
            public_key: ec.EllipticCurvePublicKey | None = None, not_before: datetime | None = None,
            not_after: datetime | None = None, role: Role | None = None, oid: str | None = None,
            drop_registered_id: bool = False) -> x509.Certificate:
    """``template`` with the same names and extensions, changed where asked, signed by ``signer``.

    ``role`` replaces the certificate policy; ``oid`` replaces (``drop_registered_id`` removes) the
    subjectAltName registeredID. The issuer name and authority key identifier stay, so a foreign
    ``signer`` gives a certificate that names its real issuer but does not verify with its key.
    """
    key = public_key or template.public_key()
    builder = (x509.CertificateBuilder().subject_name(template.subject).issuer_name(template.issuer)
               .public_key(key).serial_number(int.from_bytes(rng(16), "big") >> 1 or 1)
               .not_valid_before(not_before or template.not_valid_before_utc)
               .not_valid_after(not_after or template.not_valid_after_utc))
    for extension in template.extensions:
        value = _changed_extension(extension.value, key, role, oid, drop_registered_id)
        if value is not None:
            builder = builder.add_extension(value, extension.critical)
    return builder.sign(signer, hashes.SHA256())


def _changed_extension(value, key, role: Role | None, oid: str | None, drop_registered_id: bool):
    if isinstance(value, x509.SubjectKeyIdentifier):
        return x509.SubjectKeyIdentifier.from_public_key(key)
    if isinstance(value, x509.CertificatePolicies) and role is not None:
        return x509.CertificatePolicies([x509.PolicyInformation(role.policy_oid, None)])
    if isinstance(value, x509.SubjectAlternativeName) and (oid is not None or drop_registered_id):
        names = [n for n in value if not isinstance(n, x509.RegisteredID)]
        if oid is not None:
            names.append(x509.RegisteredID(x509.ObjectIdentifier(oid)))
        return x509.SubjectAlternativeName(names) if names else None
    return value


def expired(template: x509.Certificate, signer: ec.EllipticCurvePrivateKey, now: datetime,
            rng: Rng) -> x509.Certificate:
    """``template`` valid from two years to one day before ``now``."""
    return reissue(template, signer, rng=rng, not_before=now - timedelta(days=730), not_after=now - timedelta(days=1))


def foreign_key(curve: str, rng: Rng) -> ec.EllipticCurvePrivateKey:
    """A key that belongs to nobody in the PKI (for signatures that must not verify)."""
    return crypto.generate_private_key(curve, rng)
