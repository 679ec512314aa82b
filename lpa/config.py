"""Where the LPA keeps what it trusts and how it talks: one directory, overridable per command.

Layout of the directory (default ``$KINSIM_LPA_DIR``, else ``$XDG_CONFIG_HOME/kinsim/lpa``, else
``~/.config/kinsim/lpa``)::

    ci/*.pem|*.der|*.crt   trusted CI certificates: the ONLY TLS trust anchors for SM-DP+ servers
    settings.json          optional: {"tac": "35000000", "imei": null, "capabilities": {...},
                           "timeout": 60, "connect_to": {"smdp.example": "127.0.0.1:8443"},
                           "isdr_aid": "A000...0100", "block_size": 255}

Command-line options (``--ci-cert``, ``--connect-to``, ...) add to or override these.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import load_certificate
from certs.validate import Role, validate_chain
from lpa.download import DEFAULT_CAPABILITIES, DEFAULT_TAC, DeviceInfo
from lpa.es9_client import DEFAULT_TIMEOUT, Es9Pool, tls_context
from lpa.es10 import MAX_BLOCK_SIZE
from rsp.errors import CertificateError, DecodeError, KinsimError
from rsp.ids import ISD_R_AID

CI_SUFFIXES = (".pem", ".der", ".crt", ".cer")


class ConfigError(KinsimError):
    """The LPA configuration is missing or malformed."""


def default_directory() -> Path:
    if os.environ.get("KINSIM_LPA_DIR"):
        return Path(os.environ["KINSIM_LPA_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kinsim" / "lpa"


def parse_endpoint(text: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') into (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_connect_to(text: str) -> tuple[str, tuple[str, int]]:
    """'ADDRESS=HOST:PORT': connect to HOST:PORT whenever ADDRESS is asked for (TLS still checks ADDRESS)."""
    address, sep, endpoint = text.partition("=")
    if not sep or not address:
        raise ConfigError(f"--connect-to takes ADDRESS=HOST:PORT, got {text!r}")
    return address.strip().lower(), parse_endpoint(endpoint.strip())


@dataclass(frozen=True)
class LpaConfig:
    directory: Path
    ci_files: tuple[Path, ...] = ()
    device: DeviceInfo = field(default_factory=DeviceInfo)
    timeout: float = DEFAULT_TIMEOUT
    connect_to: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    isdr_aid: bytes = ISD_R_AID
    block_size: int = MAX_BLOCK_SIZE

    def trusted_cis(self) -> list[x509.Certificate]:
        if not self.ci_files:
            raise ConfigError(f"no trusted CI certificate: add one with 'kinsim lpa ci add FILE' "
                              f"(kept in {self.directory / 'ci'}) or pass --ci-cert FILE")
        return [_read_certificate(path) for path in self.ci_files]

    def ssl_context(self) -> ssl.SSLContext:
        return tls_context(self.trusted_cis())

    def es9_pool(self) -> Es9Pool:
        return Es9Pool(self.ssl_context(), connect_to=self.connect_to, timeout=self.timeout)


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return load_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read CI certificate {path}: {exc.strerror}") from None
    except DecodeError as exc:
        raise ConfigError(f"{path} is not a certificate: {exc}") from None


def _stored_cis(directory: Path) -> tuple[Path, ...]:
    folder = directory / "ci"
    if not folder.is_dir():
        return ()
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in CI_SUFFIXES and p.is_file()))


def _read_settings(directory: Path) -> dict:
    path = directory / "settings.json"
    if not path.exists():
        return {}
    try:
        settings = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return settings


def _device(settings: dict) -> DeviceInfo:
    try:
        tac = bytes.fromhex(settings.get("tac") or DEFAULT_TAC.hex())
        imei = bytes.fromhex(settings["imei"]) if settings.get("imei") else None
    except (TypeError, ValueError):
        raise ConfigError("settings.json: 'tac' (8 digits) and 'imei' (16 hex digits) must be hex strings") from None
    if len(tac) != 4:
        raise ConfigError("settings.json: 'tac' must be 8 digits (4 BCD bytes)")
    capabilities = settings.get("capabilities") or DEFAULT_CAPABILITIES
    return DeviceInfo(tac=tac, capabilities=dict(capabilities), imei=imei)


def load_config(directory: str | os.PathLike | None = None, *, ci_certs: Iterable[str | os.PathLike] = (),
                connect_to: Iterable[str] = (), timeout: float | None = None, isdr_aid: str | None = None,
                block_size: int | None = None) -> LpaConfig:
    """The configuration in ``directory`` (default_directory()) with command-line additions applied."""
    folder = Path(directory) if directory is not None else default_directory()
    settings = _read_settings(folder)
    mapping = {}
    for address, endpoint in (settings.get("connect_to") or {}).items():
        mapping[address.lower()] = parse_endpoint(endpoint)
    mapping.update(parse_connect_to(text) for text in connect_to)
    config = LpaConfig(
        directory=folder,
        ci_files=_stored_cis(folder) + tuple(Path(p) for p in ci_certs),
        device=_device(settings),
        timeout=_timeout(timeout if timeout is not None else settings.get("timeout", DEFAULT_TIMEOUT)),
        connect_to=mapping,
    )
    aid_text = isdr_aid or settings.get("isdr_aid")
    if aid_text:
        try:
            aid = bytes.fromhex(aid_text)
        except ValueError:
            raise ConfigError(f"ISD-R AID {aid_text!r} is not hex") from None
        if not 5 <= len(aid) <= 16:
            raise ConfigError(f"ISD-R AID {aid_text!r} must be 5 to 16 bytes")
        config = replace(config, isdr_aid=aid)
    size = block_size if block_size is not None else settings.get("block_size")
    if size is not None:
        if not isinstance(size, int) or not 1 <= size <= MAX_BLOCK_SIZE:
            raise ConfigError(f"the STORE DATA block size must be 1..{MAX_BLOCK_SIZE}, got {size!r}")
        config = replace(config, block_size=size)
    return config


def _timeout(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"the ES9+ timeout is a positive number of seconds, got {value!r}")
    return float(value)


def add_trusted_ci(directory: str | os.PathLike, data: bytes, now: datetime) -> Path:
    """Store a CI certificate (DER or PEM) in ``directory``/ci after checking it is a valid SGP.22 CI."""
    try:
        certificate = load_certificate(data)
    except DecodeError as exc:
        raise ConfigError(f"not a certificate: {exc}") from None
    try:
        validate_chain(certificate, Role.CI, trusted_cis=[certificate], now=now)
    except CertificateError as exc:
        raise ConfigError(f"not a usable CI certificate: {exc}") from None
    folder = Path(directory) / "ci"
    der = certificate.public_bytes(Encoding.DER)
    path = folder / f"{hashlib.sha256(der).hexdigest()[:16]}.pem"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(certificate.public_bytes(Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot store the CI certificate in {folder}: {exc.strerror or exc}") from None
    return path
