"""lpa.config: trusted CIs and settings in one directory; command-line additions; bad input refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lpa.config import ConfigError, add_trusted_ci, default_directory, load_config, parse_connect_to
from lpa.es10 import ISD_R_AID
from tests.lpa_fixtures import pki

NOW = datetime.now(UTC)


def test_defaults_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("KINSIM_LPA_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_directory() == tmp_path / "xdg" / "kinsim" / "lpa"
    monkeypatch.setenv("KINSIM_LPA_DIR", str(tmp_path / "mine"))
    assert default_directory() == tmp_path / "mine"
    config = load_config()
    assert config.directory == tmp_path / "mine" and config.ci_files == () and config.isdr_aid == ISD_R_AID
    with pytest.raises(ConfigError, match="no trusted CI"):
        config.trusted_cis()


def test_settings_file_and_overrides(tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({
        "tac": "35290611", "imei": "3548920712345678", "timeout": 5, "block_size": 120,
        "connect_to": {"SMDP.kinsim.test": "127.0.0.1:8443"}, "isdr_aid": "A0000005591010FFFFFFFF8900000200",
        "capabilities": {"eutranSupportedRelease": "16.1.0"}}))
    config = load_config(tmp_path, connect_to=["other.kinsim.test=[::1]:9443"], block_size=200)
    assert config.device.tac == bytes.fromhex("35290611") and config.device.imei == bytes.fromhex("3548920712345678")
    assert config.device.to_asn1()["deviceCapabilities"] == {"eutranSupportedRelease": b"\x10\x01\x00"}
    assert config.timeout == 5 and config.block_size == 200
    assert config.connect_to == {"smdp.kinsim.test": ("127.0.0.1", 8443), "other.kinsim.test": ("::1", 9443)}
    assert config.isdr_aid == bytes.fromhex("A0000005591010FFFFFFFF8900000200")


@pytest.mark.parametrize("settings, message", [
    ({"tac": "3529"}, "tac"),
    ({"tac": "zz"}, "hex"),
    ({"block_size": 300}, "block size"),
    ({"isdr_aid": "A000"}, "5 to 16 bytes"),
    ({"connect_to": {"a.b": "no-port"}}, "HOST:PORT"),
])
def test_bad_settings_are_refused(tmp_path, settings, message):
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_unreadable_settings(tmp_path):
    (tmp_path / "settings.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)
    (tmp_path / "settings.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(tmp_path)


def test_connect_to_syntax():
    assert parse_connect_to("Smdp.Example=10.0.0.1:443") == ("smdp.example", ("10.0.0.1", 443))
    with pytest.raises(ConfigError):
        parse_connect_to("smdp.example")
    with pytest.raises(ConfigError):
        parse_connect_to("smdp.example=host:0")


def test_only_ci_certificates_become_trust_anchors(tmp_path):
    p = pki()
    with pytest.raises(ConfigError, match="not a usable CI"):
        add_trusted_ci(tmp_path, p.dp_tls.cert_pem, NOW)  # a TLS leaf is no trust anchor
    with pytest.raises(ConfigError, match="not a certificate"):
        add_trusted_ci(tmp_path, b"garbage", NOW)
    assert not (tmp_path / "ci").exists() or list((tmp_path / "ci").iterdir()) == []
    stored = add_trusted_ci(tmp_path, p.ci.cert_der, NOW)
    assert stored.parent == tmp_path / "ci" and stored.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    extra = tmp_path / "extra.pem"
    extra.write_bytes(pki("other").ci.cert_pem)
    config = load_config(tmp_path, ci_certs=[extra])
    assert [c.subject for c in config.trusted_cis()] == [p.ci.cert.subject, pki("other").ci.cert.subject]
    assert len(config.ssl_context().get_ca_certs()) == 2


def test_missing_ci_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read CI certificate"):
        load_config(tmp_path, ci_certs=[tmp_path / "nope.pem"]).trusted_cis()
