"""``kinsim euicc``: create (new identity, SGP.26 identity, own PKI), show, reset, serve."""

from __future__ import annotations

import json

import pytest

from certs.pki import generate_pki
from euicc_sim import cli as euicc_cli
from euicc_sim.card import open_euicc
from kinsim.cli import main
from rsp import messages as m
from rsp.ids import validate_eid
from tests.euicc_fixtures import NOW, Reader, SmdpSide, iccid, install, open_test_euicc, pki_for


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def test_create_makes_a_new_euicc_under_the_sgp26_eum(tmp_path, capsys):
    created = run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    assert validate_eid(created["eid"]) == created["eid"] and created["eid"].startswith("89049032")
    assert created["eid"] != "89049032123451234512345678901235"  # a new card, not the SGP.26 one
    shown = run_json(capsys, "euicc", "show", str(tmp_path / "e"), "--json")
    assert shown["eid"] == created["eid"] and shown["profiles"] == [] and shown["notifications"] == []
    assert shown["freeMemory"] == 2 * 1024 * 1024 and shown["rootDsAddress"] == "lpa.ds.gsma.com"


def test_create_with_the_sgp26_identity(tmp_path, capsys):
    created = run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--sgp26", "brp", "--json")
    assert created["eid"] == "89049032123451234512345678901235"
    with open_euicc(tmp_path / "e") as euicc:
        assert euicc.identity.euicc.cert.public_key().curve.name == "brainpoolP256r1"


def test_create_with_a_chosen_eid_and_own_pki(tmp_path, capsys):
    pki = generate_pki("nist", now=NOW)
    pki.save(tmp_path / "pki")
    eid = "89049032000000000000000000004237"
    created = run_json(
        capsys, "euicc", "create", str(tmp_path / "e"), "--pki", str(tmp_path / "pki"), "--eid", eid, "--json"
    )
    assert created["eid"] == eid and created["ciPkids"] == [pki.ci.pkid.hex()]


def test_create_refuses_an_existing_euicc_and_a_bad_eid(tmp_path, capsys):
    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    code, _, err = run(capsys, "euicc", "create", str(tmp_path / "e"))
    assert code == 1 and "already holds an eUICC" in err
    with pytest.raises(SystemExit):
        main(["euicc", "create", str(tmp_path / "f"), "--eid", "89049032000000000000000000000000"])
    assert "check digits" in capsys.readouterr().err


def test_create_configuration_options_reach_euicc_info2(tmp_path, capsys):
    run_json(
        capsys,
        "euicc",
        "create",
        str(tmp_path / "e"),
        "--free-memory",
        "50000",
        "--svn",
        "2.2.2",
        "--no-test-profiles",
        "--forbid-ppr",
        "ppr1",
        "--default-smdp",
        "smdp.example.com",
        "--root-smds",
        "smds.example.com",
        "--json",
    )
    with open_test_euicc(tmp_path / "e") as euicc:
        reader = Reader(euicc.card)
        info = reader.call(m.GetEuiccInfo2Request({}), m.EUICCInfo2).native
        addresses = reader.call(
            m.EuiccConfiguredAddressesRequest({}), m.EuiccConfiguredAddressesResponse
        ).native
    assert info["svn"] == b"\x02\x02\x02" and "testProfileSupport" not in info["rspCapability"]
    assert info["forbiddenProfilePolicyRules"] == {"ppr1"}
    assert addresses == {"defaultDpAddress": "smdp.example.com", "rootDsAddress": "smds.example.com"}


def test_create_with_a_configuration_file(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"memory": 1234, "sas_accreditation": "LAB-1"}))
    run_json(
        capsys, "euicc", "create", str(tmp_path / "e"), "--config", str(tmp_path / "config.json"), "--json"
    )
    assert run_json(capsys, "euicc", "show", str(tmp_path / "e"), "--json")["freeMemory"] == 1234


def _card_with_profile(tmp_path, capsys):
    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--pki", str(_pki_dir(tmp_path)), "--json")
    with open_test_euicc(tmp_path / "e") as euicc:
        install(Reader(euicc.card), SmdpSide(pki=pki_for()), euicc.eid, iccid(1))


def _pki_dir(tmp_path):
    pki_for().save(tmp_path / "pki")
    return tmp_path / "pki"


def test_show_lists_profiles_and_notifications(tmp_path, capsys):
    _card_with_profile(tmp_path, capsys)
    shown = run_json(capsys, "euicc", "show", str(tmp_path / "e"), "--json")
    [profile] = shown["profiles"]
    assert profile["iccid"] == iccid(1) and profile["profileState"] == "disabled"
    assert profile["isdpAid"] == "A0000005591010FFFFFFFF8900001000"
    assert shown["notifications"] == [
        {
            "seqNumber": 1,
            "profileManagementOperation": "notificationInstall",
            "notificationAddress": "smdp.example.com",
            "iccid": iccid(1),
        }
    ]
    code, text, _ = run(capsys, "euicc", "show", str(tmp_path / "e"))
    assert code == 0 and iccid(1) in text and "notificationInstall" in text


def test_reset_deletes_profiles_and_notifications(tmp_path, capsys):
    _card_with_profile(tmp_path, capsys)
    assert run_json(capsys, "euicc", "reset", str(tmp_path / "e"), "--json")["profilesDeleted"] == 1
    shown = run_json(capsys, "euicc", "show", str(tmp_path / "e"), "--json")
    assert shown["profiles"] == [] and shown["notifications"] == [] and shown["freeMemory"] == 2 * 1024 * 1024


def test_show_of_a_card_in_use_is_refused(tmp_path, capsys):
    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    with open_euicc(tmp_path / "e"):
        code, _, err = run(capsys, "euicc", "show", str(tmp_path / "e"))
    assert code == 1 and "in use" in err


def test_serve_hands_the_open_card_to_a_registered_transport(tmp_path, capsys, monkeypatch):
    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    seen = {}

    def fake_transport(euicc, args):
        data = euicc.card.transmit(bytes.fromhex("00A4040010A0000005591010FFFFFFFF8900000100"))
        seen.update(eid=euicc.eid, sw=data[-2:], address=args.address, options=args.option)
        return 0

    monkeypatch.setitem(euicc_cli.TRANSPORTS, "fake", fake_transport)
    code, _, err = run(
        capsys,
        "euicc",
        "serve",
        str(tmp_path / "e"),
        "--transport",
        "fake",
        "--address",
        "x:1",
        "--option",
        "k=v",
    )
    assert code == 0, err
    assert seen["sw"][0] == 0x61 and seen["address"] == "x:1" and seen["options"] == ["k=v"]
    code, _, err = run(capsys, "euicc", "serve", str(tmp_path / "e"), "--transport", "nope")
    assert code == 1 and "unknown transport 'nope'" in err and "fake" in err


def _tree(directory) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None for p in directory.rglob("*")}


def test_commands_on_a_directory_without_an_euicc_leave_it_alone(tmp_path, capsys):
    pki = _pki_dir(tmp_path)
    before = _tree(pki)
    for argv in (["euicc", "show", str(pki)], ["euicc", "reset", str(pki)], ["lpa", "--euicc", str(pki), "chip", "info"]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and f"{pki} holds no eUICC" in err, argv
    assert _tree(pki) == before  # no lock file, blobs/ or identity/ appeared


def test_a_damaged_identity_file_is_named(tmp_path, capsys):
    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    for name in ("eid", "euicc.der", "euicc.key.pem", "eum.der", "trusted-cis.pem", "config.json"):
        path = tmp_path / "e" / "identity" / name
        intact = path.read_bytes()
        path.write_bytes(intact[:20])
        code, _, err = run(capsys, "euicc", "show", str(tmp_path / "e"))
        assert code == 1 and f"eUICC identity in {tmp_path / 'e'} is damaged: {name}: " in err, err
        path.write_bytes(intact)


@pytest.mark.parametrize("damage", [
    lambda state: state.update(profiles="not a list"),
    lambda state: state.update(profiles=[{"iccid": iccid(1)}]),
    lambda state: state.update(notifications=[[1, 2]]),
])
def test_a_damaged_state_file_is_one_sentence(tmp_path, capsys, damage):
    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    path = tmp_path / "e" / "state.json"
    document = json.loads(path.read_text())
    damage(document["state"])
    path.write_text(json.dumps(document))
    code, _, err = run(capsys, "euicc", "show", str(tmp_path / "e"))
    assert code == 1 and err.startswith(f"kinsim: {path}: eUICC state is malformed")


@pytest.mark.parametrize(("config", "sentence"), [
    ({"memory": "lots"}, "'memory' must be int"),
    ({"memory": True}, "'memory' must be int"),
    ({"uicc_capabilities": "usimSupport"}, "'uicc_capabilities' must be list"),
    ({"rat": [1]}, "'rat' must list dict values"),
    ({"default_dp_address": 5}, "'default_dp_address' must be str or null"),
    ([], "is a JSON object"),
])
def test_a_configuration_file_of_the_wrong_types_is_refused(tmp_path, capsys, config, sentence):
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "euicc", "create", str(tmp_path / "e"), "--config", str(tmp_path / "config.json"))
    assert code == 1 and sentence in err and not (tmp_path / "e").exists()


def test_every_configuration_field_has_a_json_type():
    from dataclasses import fields

    from euicc_sim.identity import _CONFIG_JSON_TYPES, EuiccConfig

    assert {f.name for f in fields(EuiccConfig)} == set(_CONFIG_JSON_TYPES)
    config = EuiccConfig(euicc_category=1, default_dp_address="smdp.example")
    assert EuiccConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_serve_tcp_on_a_busy_or_impossible_port_is_one_sentence(tmp_path, capsys):
    import socket

    run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        code, _, err = run(capsys, "euicc", "serve", str(tmp_path / "e"), "--transport", "tcp", "--address", address)
    assert code == 1 and f"cannot listen on {address}" in err
    code, _, err = run(capsys, "euicc", "serve", str(tmp_path / "e"), "--transport", "tcp", "--address", "127.0.0.1:99999")
    assert code == 1 and "a port of 0 to 65535" in err


def test_serve_tcp_prints_json_and_stops_cleanly_on_sigterm(tmp_path, capsys):
    from tests.processes import Server

    eid = run_json(capsys, "euicc", "create", str(tmp_path / "e"), "--json")["eid"]
    server = Server(["euicc", "serve", str(tmp_path / "e"), "--transport", "tcp", "--json"], '{"card"')
    try:
        served = json.loads(server.line)
        assert served["eid"] == eid and served["card"].startswith("tcp:127.0.0.1:")
        assert run_json(capsys, "--json", "lpa", "--card", served["card"], "chip", "info")["eid"] == eid
    finally:
        server.stop()
    assert server.proc.returncode == 0  # SIGTERM ends serving like Ctrl-C: card powered off, directory unlocked
    assert run_json(capsys, "euicc", "show", str(tmp_path / "e"), "--json")["eid"] == eid


def test_show_names_things_as_the_lpa_does(tmp_path, capsys):
    """A script reading `euicc show` and `lpa ... list` finds the same keys for the same facts."""
    _card_with_profile(tmp_path, capsys)
    shown = run_json(capsys, "euicc", "show", str(tmp_path / "e"), "--json")
    lpa = ["--json", "lpa", "--euicc", str(tmp_path / "e"), "--config-dir", str(tmp_path / "lpa")]
    chip = run_json(capsys, *lpa, "chip", "info")
    [profile] = run_json(capsys, *lpa, "profile", "list")
    [notification] = run_json(capsys, *lpa, "notification", "list")
    assert {k: shown[k] for k in ("eid", "defaultDpAddress", "rootDsAddress")} == {
        k: chip[k] for k in ("eid", "defaultDpAddress", "rootDsAddress")}
    [shown_profile] = shown["profiles"]
    assert set(shown_profile) - {"size"} <= set(profile)
    assert {k: shown_profile[k] for k in ("iccid", "isdpAid", "profileState")} == {
        k: profile[k] for k in ("iccid", "isdpAid", "profileState")}
    assert set(shown["notifications"][0]) == set(notification)


def test_create_in_an_impossible_directory_is_a_sentence(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    code, _, err = run(capsys, "euicc", "create", str(tmp_path / "file" / "e"))
    assert code == 1 and err.startswith(f"kinsim: cannot create {tmp_path / 'file' / 'e'}")
