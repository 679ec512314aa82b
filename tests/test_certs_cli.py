"""``kinsim certs generate|show|verify`` through the real argparse tree."""

import json

import pytest

from certs.pki import Pki
from certs.sgp26 import sgp26_dir
from kinsim.cli import main
from rsp.ids import make_eid

EID = make_eid("890490320000000000000000004242")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_both_curves_for_one_eid(tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "certs",
        "generate",
        str(tmp_path),
        "--curve",
        "both",
        "--eid",
        EID,
        "--smdp-address",
        "smdp.example.com",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert [p["curve"] for p in result["pkis"]] == ["nist", "brp"]
    for entry in result["pkis"]:
        pki = Pki.load(tmp_path / entry["curve"])
        assert pki.curve == entry["curve"] and pki.eid == EID == entry["eid"]
        assert entry["ciPkid"] == pki.ci.pkid.hex()
        roles = {c["name"]: c["role"] for c in entry["certificates"]}
        assert roles == {
            "ci": "ci",
            "eum": "eum",
            "euicc": "euicc",
            "dp_auth": "dp-auth",
            "dp_pb": "dp-pb",
            "dp_tls": "dp-tls",
            "ds_auth": "ds-auth",
            "ds_tls": "ds-tls",
        }
        tls = next(c for c in entry["certificates"] if c["name"] == "dp_tls")
        assert tls["dnsNames"] == ["smdp.example.com"] and tls["oid"] == "2.999.10"


def test_generate_refuses_to_overwrite_without_force(tmp_path, capsys):
    assert run(capsys, "certs", "generate", str(tmp_path))[0] == 0
    before = (tmp_path / "ci.der").read_bytes()
    code, _, err = run(capsys, "certs", "generate", str(tmp_path))
    assert code == 1 and "use --force" in err
    assert (tmp_path / "ci.der").read_bytes() == before
    assert run(capsys, "certs", "generate", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "ci.der").read_bytes() != before


def test_generate_rejects_a_bad_eid(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["certs", "generate", str(tmp_path), "--eid", EID[:-1] + "0"])
    assert caught.value.code == 2
    assert "check digits" in capsys.readouterr().err


def test_show_sgp26_euicc(capsys):
    code, out, _ = run(
        capsys, "--json", "certs", "show", str(sgp26_dir() / "eUICC/CERT_EUICC_ECDSA_NIST.der")
    )
    assert code == 0
    shown = json.loads(out)
    assert shown["role"] == "euicc" and shown["eid"] == "89049032123451234512345678901235"
    assert shown["authorityKeyIdentifier"] == "dd3da24d350c1cc5d0af0965f40ec34c5ee409f1"
    assert shown["curve"] == "nist" and shown["notAfter"] == "7496-01-24T09:48:58Z"


def test_show_human_output_for_the_eum(capsys):
    code, out, _ = run(capsys, "certs", "show", str(sgp26_dir() / "EUM/CERT_EUM_ECDSA_BRP.der"))
    assert code == 0
    assert "serialNumber=89049032,O=RSP Test EUM" in out and "2.999.5" in out


def test_verify_sgp26_euicc_at_a_pinned_time(capsys):
    d = sgp26_dir()
    code, out, _ = run(
        capsys,
        "certs",
        "verify",
        str(d / "eUICC/CERT_EUICC_ECDSA_BRP.der"),
        "--role",
        "euicc",
        "--ci",
        str(d / "CertificateIssuer/CERT_CI_ECDSA_NIST.pem"),
        "--ci",
        str(d / "CertificateIssuer/CERT_CI_ECDSA_BRP.pem"),
        "--intermediate",
        str(d / "EUM/CERT_EUM_ECDSA_BRP.der"),
        "--at",
        "2026-01-15",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["valid"] and result["eid"] == "89049032123451234512345678901235"
    assert result["ciPkid"] == "c0bc70ba36929d43b467ff57570530e57ab8fcd8"
    assert result["checkedAt"] == "2026-01-15T00:00:00Z"


def test_verify_expired_tls_fails_with_the_reason(capsys):
    d = sgp26_dir()
    code, _, err = run(
        capsys,
        "certs",
        "verify",
        str(d / "DPtls/CERT_S_SM_DP_TLS_NIST.der"),
        "--role",
        "dp-tls",
        "--ci",
        str(d / "CertificateIssuer/CERT_CI_ECDSA_NIST.der"),
        "--at",
        "2026-08-03T00:00:00+00:00",
    )
    assert code == 1
    assert "expired on 2026-08-02" in err


def test_verify_wrong_role_as_json_error(capsys):
    d = sgp26_dir()
    code, _, err = run(
        capsys,
        "certs",
        "verify",
        str(d / "DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der"),
        "--role",
        "dp-auth",
        "--ci",
        str(d / "CertificateIssuer/CERT_CI_ECDSA_NIST.der"),
        "--at",
        "2026-01-15",
        "--json",
    )
    assert code == 1
    error = json.loads(err)
    assert error["type"] == "CertificateError" and "profile binding" in error["error"]


def test_unreadable_file_is_one_clear_line(tmp_path, capsys):
    code, _, err = run(capsys, "certs", "show", str(tmp_path / "nope.der"))
    assert code == 1 and err.startswith("kinsim: cannot read")
    (tmp_path / "junk.der").write_bytes(b"\x30\x03junk")
    code, _, err = run(capsys, "certs", "show", str(tmp_path / "junk.der"))
    assert code == 1 and "not a well-formed X.509 certificate" in err


def test_certs_without_a_command_prints_help(capsys):
    code, out, _ = run(capsys, "certs")
    assert code == 2 and "generate" in out and "verify" in out


def test_a_broken_file_among_several_is_named(tmp_path, capsys):
    assert run(capsys, "certs", "generate", str(tmp_path / "pki"))[0] == 0
    broken = tmp_path / "eum.der"
    broken.write_bytes((tmp_path / "pki" / "eum.der").read_bytes()[:50])
    code, _, err = run(capsys, "certs", "verify", str(tmp_path / "pki" / "euicc.der"), "--role", "euicc",
                       "--ci", str(tmp_path / "pki" / "ci.der"), "--intermediate", str(broken))
    assert code == 1 and err.startswith(f"kinsim: {broken}: not a well-formed X.509 certificate")


def test_a_pki_directory_with_a_truncated_file_names_it(tmp_path, capsys):
    assert run(capsys, "certs", "generate", str(tmp_path / "pki"))[0] == 0
    serve = ["smdp", "serve", "--state", str(tmp_path / "s"), "--pki", str(tmp_path / "pki")]
    create = ["euicc", "create", str(tmp_path / "e"), "--pki", str(tmp_path / "pki")]
    for name, argv in (("dp_auth.der", serve), ("eum.key.pem", create)):
        damaged = tmp_path / "pki" / name
        damaged.write_bytes(damaged.read_bytes()[:40])
        code, _, err = run(capsys, *argv)
        assert code == 1 and err.startswith(f"kinsim: {damaged}: "), err
    assert not (tmp_path / "s").exists() and not (tmp_path / "e").exists()


def test_generate_into_an_impossible_directory_is_a_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    code, _, err = run(capsys, "certs", "generate", str(tmp_path / "file" / "pki"))
    assert code == 1 and err.startswith(f"kinsim: cannot write the PKI to {tmp_path / 'file' / 'pki'}")
