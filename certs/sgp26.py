"""The GSMA SGP.26 test certificates in testdata/sgp26/ (see testdata/README.md for their origin).

``sgp26_certificates()`` lists every certificate file with its role, including the SM-DP+ 2/4/8 and VARO
TLS variants and the superseded ones under DPtls/old/; ``load_sgp26(curve)`` gives the main hierarchy of
one curve as a ``Pki``, with the private keys the test data publishes.

The NIST and brainpool CIs (and EUMs) share their subject names, so validation tells them apart by
authority key identifier; pass both as trusted CIs and the validator picks the right one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.pki import Credential, Pki, load_certificate, load_private_key
from certs.validate import Role, curve_name
from rsp.errors import CertificateError
from rsp.testdata import testdata_dir

ROLE_DIRS = {
    "CertificateIssuer": Role.CI,
    "EUM": Role.EUM,
    "eUICC": Role.EUICC,
    "DPauth": Role.DP_AUTH,
    "DPpb": Role.DP_PB,
    "DPtls": Role.DP_TLS,
}

# The main hierarchy per curve; {c} is NIST or BRP as in the SGP.26 file names.
_MAIN_FILES = {
    "ci": "CertificateIssuer/CERT_CI_ECDSA_{c}.der",
    "eum": "EUM/CERT_EUM_ECDSA_{c}.der",
    "euicc": "eUICC/CERT_EUICC_ECDSA_{c}.der",
    "dp_auth": "DPauth/CERT_S_SM_DPauth_ECDSA_{c}.der",
    "dp_pb": "DPpb/CERT_S_SM_DPpb_ECDSA_{c}.der",
    "dp_tls": "DPtls/CERT_S_SM_DP_TLS_{c}.der",
}
_CURVE_TAGS = {"nist": "NIST", "brp": "BRP"}


@dataclass(frozen=True)
class Sgp26Certificate:
    name: str  # path below testdata/sgp26, e.g. "DPtls/old/expired-2023/CERT_S_SM_DP2_TLS.der"
    role: Role
    credential: Credential  # with the private key when the test data has it

    @property
    def cert(self) -> x509.Certificate:
        return self.credential.cert

    @property
    def curve(self) -> str:
        return curve_name(self.cert.public_key())


def sgp26_dir() -> Path:
    directory = testdata_dir() / "sgp26"
    if not directory.is_dir():
        raise CertificateError(f"SGP.26 test certificates not found in {directory} (set KINSIM_TESTDATA)")
    return directory


def sgp26_certificates() -> list[Sgp26Certificate]:
    """Every CERT_* file (DER and PEM copies alike), sorted by path."""
    root = sgp26_dir()
    found = []
    for path in sorted(root.rglob("CERT_*")):
        relative = path.relative_to(root)
        role = ROLE_DIRS[relative.parts[0]]
        found.append(Sgp26Certificate(relative.as_posix(), role, _credential(path)))
    return found


def load_sgp26(curve: str = "nist") -> Pki:
    """The SGP.26 CI, EUM, eUICC, DPauth, DPpb and DPtls of one curve (no SM-DS certificates)."""
    if curve not in _CURVE_TAGS:
        raise CertificateError(f"unknown curve {curve!r} (nist or brp)")
    root = sgp26_dir()
    files = {name: root / pattern.format(c=_CURVE_TAGS[curve]) for name, pattern in _MAIN_FILES.items()}
    return Pki(curve=curve, **{name: _credential(path) for name, path in files.items()})


def sgp26_cis() -> list[x509.Certificate]:
    """Both SGP.26 CI certificates (NIST and brainpool)."""
    return [load_sgp26(curve).ci.cert for curve in _CURVE_TAGS]


def sgp26_eums() -> list[x509.Certificate]:
    return [load_sgp26(curve).eum.cert for curve in _CURVE_TAGS]


def _credential(path: Path) -> Credential:
    cert = load_certificate(path.read_bytes())
    return Credential(cert, _private_keys(sgp26_dir()).get(_spki(cert.public_key())))


@cache
def _private_keys(root: Path) -> dict[bytes, object]:
    """Every SK_*.pem under the SGP.26 folder, by the public key it belongs to."""
    keys = {}
    for path in root.rglob("SK_*.pem"):
        key = load_private_key(path.read_bytes())
        keys[_spki(key.public_key())] = key
    return keys


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
