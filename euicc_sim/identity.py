"""Who the software eUICC is: EID, eUICC key and certificate, EUM certificate, the CIs it trusts, and
the capabilities it declares in EUICCInfo1/EUICCInfo2 (SGP.22 4.3, 5.7.8, 5.7.9).

An identity is made once, when the card is created: a fresh key certified by an EUM we hold the key
of (``issue_identity``; the default EUM is the SGP.26 test EUM), or the SGP.26 test eUICC itself
(``sgp26_identity``). It is stored in the card directory's ``identity/`` folder and never changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.pki import (
    Credential,
    Pki,
    issue_euicc,
    load_certificate,
    load_private_key,
    random_eid,
    read_certificate,
)
from certs.sgp26 import load_sgp26, sgp26_cis
from certs.validate import Role, authority_key_id, eid_of, eum_name_constraints, pkid, validate_chain
from euicc_sim.store import CardStore
from rsp import messages as m
from rsp.errors import CertificateError, DecodeError
from rsp.ids import validate_eid

# What the eUICC offers by default (UICCCapability bits, RSPDefinitions). The TS.48 test profiles
# need usim, isim and csim; AKA is Milenage or the test algorithm (rsp.aka), so no TUAK or CAVE.
DEFAULT_UICC_CAPABILITIES = (
    "usimSupport",
    "isimSupport",
    "csimSupport",
    "akaMilenage",
    "multipleUsimSupport",
    "multipleIsimSupport",
)
# additionalProfile follows the free memory; rpmSupport: ES10b.LoadRpmPackage (SGP.22 v3 RPM, euicc_sim.rpm)
DEFAULT_RSP_CAPABILITIES = ("testProfileSupport", "rpmSupport")
DEFAULT_MEMORY = 2 * 1024 * 1024
DEFAULT_ROOT_DS = "lpa.ds.gsma.com"  # the GSMA root SM-DS (SGP.22 glossary); configurable
# SGP.22 2.9.2.2: the Rules Authorisation Table, set at manufacturing. The default lets any operator
# ('E' nibbles are wildcards in mccMnc) set PPR1 and PPR2 without end-user consent.
DEFAULT_RAT = ({"pprIds": ["ppr1", "ppr2"], "allowedOperators": [{"mccMnc": "eeeeee"}], "pprFlags": []},)

IDENTITY_FILES = ("eid", "euicc.der", "euicc.key.pem", "eum.der", "trusted-cis.pem", "config.json")


def _version(text: str) -> bytes:
    """'2.5.0' -> 02 05 00 (VersionType: major, minor, revision as binary bytes)."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise DecodeError(f"a version is MAJOR.MINOR.REVISION with numbers below 256, got {text!r}")
    return bytes(int(p) for p in parts)


@dataclass(frozen=True)
class EuiccConfig:
    """The declared, configurable facts of EUICCInfo2 and ES10a; every one of them is honoured."""

    svn: str = "2.5.0"  # SGP.22 version
    profile_version: str = "2.3.1"  # SAIP (TCA profile package) version
    firmware_version: str = "0.1.0"
    pp_version: str = "0.0.0"  # Protection Profile version: none certified
    sas_accreditation: str = "KINSIM-TEST-ONLY"
    euicc_category: int | None = None
    memory: int = DEFAULT_MEMORY  # non-volatile bytes for profiles; installs that do not fit fail
    volatile_memory: int = 64 * 1024
    uicc_capabilities: tuple[str, ...] = DEFAULT_UICC_CAPABILITIES
    rsp_capabilities: tuple[str, ...] = DEFAULT_RSP_CAPABILITIES
    forbidden_pprs: tuple[str, ...] = ()
    root_ds_address: str = DEFAULT_ROOT_DS
    default_dp_address: str | None = None  # the factory value, restored by eUICCMemoryReset
    rat: tuple[dict, ...] = DEFAULT_RAT

    def __post_init__(self) -> None:
        for name in ("svn", "profile_version", "firmware_version", "pp_version"):
            _version(getattr(self, name))
        if self.memory < 0 or self.volatile_memory < 0:
            raise DecodeError("memory sizes must not be negative")
        _check_names(self.uicc_capabilities, m.UICCCapability, "UICC capability")
        _check_names(self.rsp_capabilities, m.RspCapability, "RSP capability")
        _check_names(self.forbidden_pprs, m.PprIds, "profile policy rule")
        self.rat_value()  # raises DecodeError for a malformed table

    def version(self, name: str) -> bytes:
        return _version(getattr(self, name))

    def rat_value(self) -> m.RulesAuthorisationTable:
        try:
            rules = [
                {
                    "pprIds": set(rule["pprIds"]),
                    "allowedOperators": [
                        {k: bytes.fromhex(v) for k, v in op.items()} for op in rule["allowedOperators"]
                    ],
                    "pprFlags": set(rule.get("pprFlags", [])),
                }
                for rule in self.rat
            ]
            return m.decode(m.RulesAuthorisationTable, m.RulesAuthorisationTable(rules).dump())
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed Rules Authorisation Table: {exc}") from None

    def to_json(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_json(cls, data: dict) -> EuiccConfig:
        if not isinstance(data, dict):
            raise DecodeError("an eUICC configuration is a JSON object")
        unknown = set(data) - set(_CONFIG_JSON_TYPES)
        if unknown:
            raise DecodeError(f"unknown eUICC configuration keys: {sorted(unknown)}")
        for key, value in data.items():
            _check_json_type(key, value)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


# The JSON form of each EuiccConfig field: its type, and for lists the type of the items.
_CONFIG_JSON_TYPES: dict[str, tuple[tuple[type, ...], type | None]] = {
    **{name: ((str,), None) for name in ("svn", "profile_version", "firmware_version", "pp_version",
                                         "sas_accreditation", "root_ds_address")},
    "euicc_category": ((int, type(None)), None),
    "default_dp_address": ((str, type(None)), None),
    "memory": ((int,), None),
    "volatile_memory": ((int,), None),
    **{name: ((list,), str) for name in ("uicc_capabilities", "rsp_capabilities", "forbidden_pprs")},
    "rat": ((list,), dict),
}


def _check_json_type(key: str, value: object) -> None:
    kinds, item_kind = _CONFIG_JSON_TYPES[key]
    if isinstance(value, bool) or not isinstance(value, kinds):  # JSON true is not a number of bytes
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise DecodeError(f"eUICC configuration {key!r} must be {names}, got {value!r}")
    if item_kind is not None and not all(isinstance(item, item_kind) for item in value):
        raise DecodeError(f"eUICC configuration {key!r} must list {item_kind.__name__} values, got {value!r}")


def _check_names(names: Sequence[str], bits: type, what: str) -> None:
    allowed = set(bits._map.values())
    for name in names:
        if name not in allowed:
            raise DecodeError(f"unknown {what} {name!r} (one of: {', '.join(sorted(allowed))})")


@dataclass(frozen=True)
class EuiccIdentity:
    eid: str
    euicc: Credential  # CERT.EUICC.ECDSA with SK.EUICC.ECDSA
    eum: x509.Certificate  # CERT.EUM.ECDSA
    cis: tuple[x509.Certificate, ...]  # CI certificates trusted for verification (PK.CI.ECDSA)
    config: EuiccConfig = field(default_factory=EuiccConfig)

    def __post_init__(self) -> None:
        validate_eid(self.eid)
        if self.euicc.key is None:
            raise CertificateError("an eUICC identity needs the eUICC private key")
        if eid_of(self.euicc.cert) != self.eid:
            raise CertificateError(
                f"the eUICC certificate is for EID {eid_of(self.euicc.cert)}, not {self.eid}"
            )
        if self.signing_ci is None:
            raise CertificateError("none of the trusted CIs issued the EUM certificate")

    @property
    def signing_ci(self) -> x509.Certificate | None:
        """The CI at the top of our own chain (its PKId goes in euiccCiPKIdListForSigning)."""
        issuer = authority_key_id(self.eum)
        return next((ci for ci in self.cis if pkid(ci) == issuer), None)

    @property
    def verification_pkids(self) -> list[bytes]:
        return [pkid(ci) for ci in self.cis]

    @property
    def signing_pkids(self) -> list[bytes]:
        return [pkid(self.signing_ci)]

    @property
    def eum_der(self) -> bytes:
        return self.eum.public_bytes(serialization.Encoding.DER)

    def check(self, now: datetime) -> None:
        """The eUICC certificate chains to the signing CI (what an SM-DP+ will check)."""
        validate_chain(
            self.euicc.cert, Role.EUICC, intermediates=[self.eum], trusted_cis=list(self.cis), now=now
        )

    # --- the card directory -------------------------------------------------------------------

    def save(self, store: CardStore) -> None:
        cis_pem = b"".join(ci.public_bytes(serialization.Encoding.PEM) for ci in self.cis)
        store.write_identity("eid", self.eid.encode())
        store.write_identity("euicc.der", self.euicc.cert_der)
        store.write_identity("euicc.key.pem", self.euicc.key_pem, private=True)
        store.write_identity("eum.der", self.eum_der)
        store.write_identity("trusted-cis.pem", cis_pem)
        store.write_identity("config.json", json.dumps(self.config.to_json(), indent=1).encode())

    @classmethod
    def load(cls, store: CardStore) -> EuiccIdentity:
        """The identity saved in ``store``; a damaged file is a DecodeError that names it."""

        def read(name: str, parse: Callable[[bytes], object]):
            try:
                return parse(store.read_identity(name))
            except ValueError as exc:  # DecodeError, JSON and UTF-8 errors alike
                raise DecodeError(f"eUICC identity in {store.directory} is damaged: {name}: {exc}") from None

        return cls(
            eid=read("eid", lambda data: validate_eid(data.decode().strip())),
            euicc=Credential(read("euicc.der", load_certificate), read("euicc.key.pem", load_private_key)),
            eum=read("eum.der", load_certificate),
            cis=tuple(read("trusted-cis.pem", x509.load_pem_x509_certificates)),
            config=read("config.json", lambda data: EuiccConfig.from_json(json.loads(data))),
        )


# --- making identities ------------------------------------------------------------------------


def issue_identity(
    eum: Credential,
    cis: Sequence[x509.Certificate],
    *,
    eid: str | None = None,
    config: EuiccConfig | None = None,
    now: datetime | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> EuiccIdentity:
    """A new eUICC: a fresh key pair certified by ``eum`` for ``eid`` (default: random within the
    EUM's EIN, with SGP.29 check digits)."""
    if eid is None:
        eid = random_eid(_ein_of(eum.cert), rng)
    euicc = issue_euicc(eum, validate_eid(eid), now=now, rng=rng)
    return EuiccIdentity(eid=eid, euicc=euicc, eum=eum.cert, cis=tuple(cis), config=config or EuiccConfig())


def sgp26_identity(curve: str = "nist", *, config: EuiccConfig | None = None) -> EuiccIdentity:
    """The GSMA SGP.26 test eUICC (its published key), trusting both SGP.26 CIs."""
    pki = load_sgp26(curve)
    return EuiccIdentity(
        eid=pki.eid, euicc=pki.euicc, eum=pki.eum.cert, cis=tuple(sgp26_cis()), config=config or EuiccConfig()
    )


def sgp26_eum(curve: str = "nist") -> tuple[Credential, list[x509.Certificate]]:
    """The SGP.26 test EUM (with its published key) and the SGP.26 CIs: the default issuer."""
    return load_sgp26(curve).eum, sgp26_cis()


def pki_eum(directory: str | os.PathLike, curve: str = "nist") -> tuple[Credential, list[x509.Certificate]]:
    """The EUM (with key) and CI of a PKI written by ``kinsim certs generate`` (DIR or DIR/<curve>)."""
    folder = Path(directory)
    if not (folder / "ci.der").exists() and (folder / curve / "ci.der").exists():
        folder = folder / curve
    pki = Pki.load(folder)
    if pki.eum.key is None:
        raise CertificateError(f"{folder} has no EUM private key (eum.key.pem): cannot certify a new eUICC")
    return pki.eum, [pki.ci.cert]


def load_extra_cis(paths: Sequence[str | os.PathLike]) -> list[x509.Certificate]:
    return [read_certificate(p) for p in paths]


def _ein_of(eum: x509.Certificate) -> str:
    """The EID prefix the EUM's name constraints permit (its serialNumber constraint)."""
    permitted, _ = eum_name_constraints(eum)
    for name in permitted:
        for attribute in name.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER):
            return str(attribute.value)
    raise CertificateError("the EUM certificate permits no EID prefix (no serialNumber name constraint)")
