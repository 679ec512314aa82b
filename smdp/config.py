"""What an SM-DP+ deployment needs: its address, its certificates per CI, the trusted CIs, limits.

Keys and certificates are loaded once (``SmdpConfig.from_pki``) and kept in memory; the core never
reads files. A deployment may serve several CIs (one ``certs.pki`` directory each, for instance a
NIST and a brainpool hierarchy): InitiateAuthentication picks the set whose CI the eUICC supports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

from cryptography import x509

from certs.pki import Credential, Pki, read_certificate
from certs.validate import Role, dns_names, pkid, registered_id, validate_chain
from rsp.errors import CertificateError, KinsimError
from smdp.orders import OrderSettings

DEFAULT_SESSION_TIMEOUT = timedelta(minutes=5)
DEFAULT_MAX_CC_ATTEMPTS = 3
DEFAULT_MAX_DOWNLOAD_ATTEMPTS = 5
DEFAULT_HOST_ID = b"kinsimDP"  # BSP hostId in the InitialiseSecureChannel CRT (SGP.22 5.5.1)
SUPPORTED_SVN_MAJOR = 2  # the v2 message set: eUICCs announcing SVN 2.x.y


class ConfigError(KinsimError):
    """A deployment setting is missing or inconsistent."""


@dataclass(frozen=True)
class ServerCredentials:
    """The SM-DP+ certificates issued under one CI: CERT.DPauth.ECDSA and CERT.DPpb.ECDSA."""

    ci: x509.Certificate
    dp_auth: Credential
    dp_pb: Credential

    @cached_property
    def ci_pkid(self) -> bytes:
        return pkid(self.ci)

    @cached_property
    def dp_auth_der(self) -> bytes:
        return self.dp_auth.cert_der

    @cached_property
    def dp_pb_der(self) -> bytes:
        return self.dp_pb.cert_der


@dataclass(frozen=True)
class SmdpConfig:
    """Everything the SM-DP+ core and its HTTP edges need, already loaded."""

    address: str  # the SM-DP+ address (FQDN) eUICCs are sent to, compared case-insensitively
    credentials: tuple[ServerCredentials, ...]
    trusted_cis: tuple[x509.Certificate, ...]  # CIs whose eUICCs (EUM chains) we accept
    tls: Credential | None = None  # CERT.DPtls with its key, for the HTTPS listeners
    session_timeout: timedelta = DEFAULT_SESSION_TIMEOUT
    max_cc_attempts: int = DEFAULT_MAX_CC_ATTEMPTS
    max_download_attempts: int = DEFAULT_MAX_DOWNLOAD_ATTEMPTS
    order_ttl: timedelta | None = None  # default lifetime of a new download order; None = no expiry
    host_id: bytes = DEFAULT_HOST_ID
    # ES2+: requester identifier (client certificate CN) -> HandleDownloadProgressInfo URL
    operators: Mapping[str, str] = field(default_factory=dict)
    es2_client_ca: Path | None = None  # operator CA(s) that issue ES2+ client certificates
    callback_ca: Path | None = None  # trust anchors for the operators' callback servers
    callback_attempts: int = 5
    callback_backoff: float = 1.0  # seconds before the first retry; doubles each time
    # SGP.22 v3 RPM: give profiles for rpmSupport eUICCs an rpmConfiguration naming us as managing SM-DP+
    rpm_configuration: bool = True

    def __post_init__(self):
        if not self.credentials:
            raise ConfigError("the SM-DP+ needs at least one set of DPauth/DPpb certificates")
        oids = {registered_id(c.dp_auth.cert) for c in self.credentials}
        if len(oids) != 1 or None in oids:
            raise ConfigError(f"every DPauth certificate must carry the same SM-DP+ OID, found {sorted(map(str, oids))}")
        if self.max_cc_attempts < 1 or self.max_download_attempts < 1:
            raise ConfigError("attempt limits must be at least 1")
        if self.session_timeout <= timedelta(0):
            raise ConfigError(f"the session timeout must be positive, got {self.session_timeout.total_seconds()} s")
        if self.order_ttl is not None and self.order_ttl <= timedelta(0):
            raise ConfigError(f"the order lifetime must be positive, got {self.order_ttl.total_seconds()} s")

    @cached_property
    def smdp_oid(self) -> str:
        """The SM-DP+ OID from the subjectAltName registeredID of CERT.DPauth.ECDSA."""
        return registered_id(self.credentials[0].dp_auth.cert) or ""

    @cached_property
    def order_settings(self) -> OrderSettings:
        return OrderSettings(self.address, self.smdp_oid, self.order_ttl, self.operators)

    @cached_property
    def credentials_by_ci(self) -> dict[bytes, ServerCredentials]:
        return {c.ci_pkid: c for c in self.credentials}

    @cached_property
    def trusted_cis_by_pkid(self) -> dict[bytes, x509.Certificate]:
        return {pkid(ci): ci for ci in self.trusted_cis}

    @classmethod
    def from_pki(cls, directories: Sequence[str | os.PathLike], *, address: str | None = None,
                 extra_cis: Sequence[str | os.PathLike] = (), **settings) -> SmdpConfig:
        """Load one ``certs.pki`` directory per CI (see :meth:`for_pkis`); extra CI files are trusted too."""
        if not directories:
            raise ConfigError("give at least one PKI directory (--pki)")
        extra = [read_certificate(f) for f in extra_cis]
        for flag in ("es2_client_ca", "callback_ca"):
            if settings.get(flag) is not None:
                _check_anchors(settings[flag], flag)
        return cls.for_pkis([Pki.load(d) for d in directories], address=address, extra_cis=extra, **settings)

    @classmethod
    def for_pkis(cls, pkis: Sequence[Pki], *, address: str | None = None,
                 extra_cis: Sequence[x509.Certificate] = (), **settings) -> SmdpConfig:
        """The first PKI's DPtls serves HTTPS; ``address`` defaults to its first dNSName."""
        credentials = tuple(ServerCredentials(p.ci.cert, p.dp_auth, p.dp_pb) for p in pkis)
        for creds in credentials:
            _check_own_certificates(creds)
        tls = pkis[0].dp_tls
        if tls.key is None:
            raise ConfigError("the DPtls private key (dp_tls.key.pem) is missing")
        if address is None:
            names = dns_names(tls.cert)
            if not names:
                raise ConfigError("the DPtls certificate has no dNSName; pass the SM-DP+ address explicitly")
            address = names[0]
        cis = _unique([p.ci.cert for p in pkis] + list(extra_cis))
        return cls(address=address, credentials=credentials, trusted_cis=tuple(cis), tls=tls, **settings)


def _check_own_certificates(creds: ServerCredentials) -> None:
    """Refuse to start with a key missing or a certificate that does not chain to its CI."""
    for credential, role in ((creds.dp_auth, Role.DP_AUTH), (creds.dp_pb, Role.DP_PB)):
        if credential.key is None:
            raise ConfigError(f"the private key of the {role.label} certificate is missing")
        try:
            validate_chain(credential.cert, role, trusted_cis=[creds.ci], now=datetime.now(UTC))
        except CertificateError as exc:
            raise ConfigError(f"{role.label}: {exc}") from None


def _check_anchors(path: str | os.PathLike, flag: str) -> None:
    """Refuse to start with a CA file that the TLS layer would reject later, when a client connects."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--{flag.replace('_', '-')}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            found = x509.load_pem_x509_certificates(data)
        else:
            found = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ConfigError(f"--{flag.replace('_', '-')}: {path} holds no certificate (PEM or DER): {exc}") from None
    if not found:
        raise ConfigError(f"--{flag.replace('_', '-')}: {path} holds no certificate")


def _unique(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    seen, out = set(), []
    for cert in certs:
        key = pkid(cert)
        if key not in seen:
            seen.add(key)
            out.append(cert)
    return out
