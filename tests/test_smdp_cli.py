"""``kinsim smdp``: inventory and orders from the command line, and ``serve`` as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kinsim.cli import main
from rsp import es9_json
from rsp.es9_json import INITIATE_AUTHENTICATION
from smdp.store import Store
from tests.smdp_fixtures import (
    Es9Client,
    EuiccSide,
    OperatorPki,
    client_context,
    download,
    notify,
    packages,
    post,
    test_pki,
)

REPO = Path(__file__).resolve().parents[1]


def kinsim(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def kinsim_json(capsys, *argv):
    code, out, err = kinsim(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def state(tmp_path, capsys):
    files = []
    for index, package in enumerate(packages(3)):
        path = tmp_path / f"profile{index}.der"
        path.write_bytes(package.der)
        files.append(str(path))
    state = str(tmp_path / "state")
    added = kinsim_json(capsys, "smdp", "profile", "add", *files, "--state", state, "--type", "family",
                        "--spn", "Kin Mobile", "--class", "operational", "--json")
    assert [p["iccid"] for p in added] == [p.iccid for p in packages(3)]
    return state


def test_profile_add_and_list(state, capsys, tmp_path):
    listed = kinsim_json(capsys, "smdp", "profile", "list", "--state", state, "--json")
    assert [(p["profileType"], p["state"]) for p in listed] == [("family", "Available")] * 3
    store = Store.open(state)
    assert store.profile_type("family").service_provider_name == "Kin Mobile"
    code, out, err = kinsim(capsys, "smdp", "profile", "add", str(tmp_path / "profile0.der"), "--state", state)
    assert code == 1 and "already in the inventory" in err and "Traceback" not in err
    code, _, err = kinsim(capsys, "smdp", "profile", "add", str(tmp_path / "profile0.der"), "--state", state,
                          "--spn", "X")
    assert code == 1 and "--type" in err


def test_order_create_list_release_cancel(state, capsys):
    created = kinsim_json(capsys, "smdp", "order", "create", "--state", state, "--profile-type", "family",
                          "--cc", "4321", "--address", "smdp.kinsim.example", "--json")
    assert created["state"] == "Confirmed" and created["ccRequired"]
    assert created["activationCode"] == f"LPA:1$smdp.kinsim.example${created['matchingId']}$$1"
    code, out, _ = kinsim(capsys, "smdp", "order", "list", "--state", state)
    assert code == 0 and created["iccid"] in out and "Confirmed" in out
    released = kinsim_json(capsys, "smdp", "order", "release", "--state", state, "--iccid", created["iccid"], "--json")
    assert released["state"] == "Released"
    cancelled = kinsim_json(capsys, "smdp", "order", "cancel", "--state", state, "--iccid", created["iccid"],
                            "--final", "Unavailable", "--json")
    assert cancelled["state"] == "Unavailable" and cancelled["matchingId"] is None
    assert kinsim_json(capsys, "smdp", "order", "list", "--state", state, "--json") == []


def test_order_errors_are_one_line(state, capsys):
    code, _, err = kinsim(capsys, "--json", "smdp", "order", "create", "--state", state, "--profile-type", "nope")
    assert code == 1
    assert json.loads(err)["subjectCode"] == "8.2.5" and json.loads(err)["reasonCode"] == "3.9"


def _start(args, tmp_path) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "kinsim", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=60)
        pytest.fail(f"serve did not start: {process.stderr.read()}")
    return process, json.loads(line)


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_serve_on_an_ephemeral_port_with_orders_from_another_process(state, tmp_path, capsys):
    pki = test_pki()
    pki.save(tmp_path / "pki")
    operator = OperatorPki()
    ca = operator.save_ca(tmp_path / "operator-ca.pem")
    process, info = _start(["smdp", "serve", "--state", state, "--pki", str(tmp_path / "pki"), "--port", "0",
                            "--es2-port", "0", "--es2-client-ca", str(ca), "--json"], tmp_path)
    try:
        port = info['es9'].rsplit(':', 1)[1]
        assert info['address'] == f'localhost:{port}' and info['smdpOid'] == '2.999.10'  # HOST:PORT off 443
        assert info["es9"].startswith("https://127.0.0.1:") and not info["es9"].endswith(":0")
        assert info["es2"].startswith("https://127.0.0.1:") and info["es2"] != info["es9"]
        created = kinsim_json(capsys, "smdp", "order", "create", "--state", state, "--profile-type", "family",
                              "--release", "--json")  # written by this process while the server runs
        assert created["smdpAddress"] == f"localhost:{info['es9'].rsplit(':', 1)[1]}"  # the port LPAs must use
        http = Es9Client(info["es9"], client_context(pki))
        euicc = EuiccSide(pki)
        steps = download(http, euicc, created["matchingId"])
        notify(http, euicc.installation_result(steps.auth["transactionId"], created["iccid"]))
    finally:
        assert _stop(process) == 0
    assert Store.open(state).profile(created["iccid"]).state.value == "Installed"


def test_serve_refuses_es2_without_the_operator_ca(state, tmp_path):
    test_pki().save(tmp_path / "pki")
    result = subprocess.run([sys.executable, "-m", "kinsim", "smdp", "serve", "--state", state, "--pki",
                             str(tmp_path / "pki"), "--port", "0", "--es2-port", "0"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "--es2-client-ca" in result.stderr and "Traceback" not in result.stderr


def test_serve_prints_human_lines(state, tmp_path):
    pki = test_pki()
    pki.save(tmp_path / "pki")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "kinsim", "smdp", "serve", "--state", state, "--pki",
                                str(tmp_path / "pki"), "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = process.stdout.readline()
        assert first.startswith("SM-DP+ localhost:") and first.rstrip().endswith("(OID 2.999.10)")
        label, url = process.stdout.readline().split()
        assert label == "ES9+"
        body = json.dumps(es9_json.encode_request(INITIATE_AUTHENTICATION, EuiccSide(pki).initiate())).encode()
        status, _, data = post(url + INITIATE_AUTHENTICATION.path, body, client_context(pki))
        assert status == 200 and json.loads(data)["header"]["functionExecutionStatus"]["status"] == "Executed-Success"
    finally:
        assert _stop(process) == 0


def test_smdp_groups_without_a_command_print_their_own_help(capsys):
    for group in (["smdp"], ["smdp", "profile"], ["smdp", "order"]):
        assert main(group) == 2
        assert capsys.readouterr().out.startswith(f"usage: kinsim {' '.join(group)} ")


def _dump(state) -> list[str]:
    with Store.open(state, create=False) as store:
        return list(store.conn.iterdump())


def test_commands_on_a_mistyped_state_refuse_and_create_nothing(tmp_path, capsys):
    missing = tmp_path / "no-such-state"
    for argv in (["profile", "list"], ["order", "list"], ["order", "create", "--profile-type", "family"],
                 ["order", "release", "--iccid", packages(1)[0].iccid],
                 ["order", "cancel", "--iccid", packages(1)[0].iccid]):
        code, _, err = kinsim(capsys, "smdp", *argv, "--state", str(missing))
        assert code == 1 and f"no state at {missing}" in err, argv
    assert not missing.exists()


def test_profile_add_of_a_missing_or_broken_file_changes_nothing(state, tmp_path, capsys):
    fourth = tmp_path / "profile3.der"
    fourth.write_bytes(packages(4)[3].der)
    broken = tmp_path / "broken.der"
    broken.write_bytes(packages(4)[3].der[:100])
    before = _dump(state)
    code, _, err = kinsim(capsys, "smdp", "profile", "add", str(fourth), str(tmp_path / "absent.der"), "--state", state)
    assert code == 1 and f"cannot read {tmp_path / 'absent.der'}" in err and "Traceback" not in err
    code, _, err = kinsim(capsys, "smdp", "profile", "add", str(fourth), str(broken), "--state", state)
    assert code == 1 and err.startswith(f"kinsim: {broken}: ")  # which of the files is broken
    assert _dump(state) == before
    code, _, _ = kinsim(capsys, "smdp", "profile", "add", str(tmp_path / "absent.der"), "--state", str(tmp_path / "new"))
    assert code == 1 and not (tmp_path / "new").exists()


def test_serve_refuses_bad_settings_with_a_sentence_and_leaves_the_state(state, tmp_path, capsys):
    test_pki().save(tmp_path / "pki")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    before = _dump(state)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        refusals = [
            (["--trusted-ci", str(tmp_path / "absent.der")], "cannot read the certificate"),
            (["--es2-port", "0", "--es2-client-ca", str(junk)], "holds no certificate"),
            (["--callback-ca", str(tmp_path / "absent.pem")], "--callback-ca: cannot read"),
            (["--session-timeout", "-1"], "session timeout must be positive"),
            (["--order-ttl", "-5"], "order lifetime must be positive"),
            (["--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1"),
        ]
        for options, sentence in refusals:
            code, out, err = kinsim(capsys, "smdp", "serve", "--state", state, "--pki", str(tmp_path / "pki"),
                                    *options)
            assert code == 1 and sentence in err and out == "", options
    assert _dump(state) == before  # not even the address of the last serve
    with pytest.raises(SystemExit) as caught:
        main(["smdp", "serve", "--state", state, "--pki", str(tmp_path / "pki"), "--port", "70000"])
    assert caught.value.code == 2 and "a port is 0 to 65535" in capsys.readouterr().err
