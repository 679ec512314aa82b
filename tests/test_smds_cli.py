"""``kinsim smds``: the serve command as a separate process, and the events listing."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lpa.discovery import Es11Client, discover_events
from lpa.es9_client import tls_context
from smdp.es12_client import Es12Client
from smdp.es12_client import tls_context as es12_tls_context
from smds import cli
from smds.core import Requester
from smds.store import Store
from tests.smds_fixtures import fixture_euicc, make_core, pki

ROOT = Path(__file__).resolve().parent.parent
# The lead adds the group to kinsim/cli.py; until then the test builds the same tree itself.
RUNNER = ("import argparse, sys; from smds.cli import register; p = argparse.ArgumentParser(prog='kinsim'); "
          "p.add_argument('--json', action='store_true'); register(p.add_subparsers(), 'smds', 'SM-DS'); "
          "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kinsim")
    parser.add_argument("--json", action="store_true")
    cli.register(parser.add_subparsers(), "smds", "SM-DS")
    args = parser.parse_args(argv)
    return args.func(args)


def test_events_lists_the_records(tmp_path, capsys):
    store = Store.open(tmp_path)
    core = make_core(store)
    core.register_event(Requester("op", operator=True), eid=pki().eid, rsp_server_address="smdp.example",
                        event_id="EV-1")
    store.close()
    assert run("smds", "events", "--state", str(tmp_path), "--json") == 0
    [record] = json.loads(capsys.readouterr().out)
    assert (record["eid"], record["eventId"], record["rspServerAddress"]) == (pki().eid, "EV-1", "smdp.example")
    assert run("smds", "events", "--state", str(tmp_path), "--eid", pki().eid) == 0
    assert "EV-1" in capsys.readouterr().out


@pytest.mark.slow
def test_serve_answers_es12_and_es11(tmp_path):
    pki().save(tmp_path / "pki")
    command = [sys.executable, "-c", RUNNER, "smds", "serve", "--state", str(tmp_path / "state"),
               "--pki", str(tmp_path / "pki"), "--port", "0", "--es12-port", "0", "--json"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        info = json.loads(process.stdout.readline())
        assert info["address"].startswith("localhost:")
        asyncio.run(_register_and_discover(info))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read()


async def _register_and_discover(info: dict) -> None:
    card = fixture_euicc()
    es12_address = "localhost:" + info["es12"].rpartition(":")[2]
    async with Es12Client(es12_address, es12_tls_context([pki().ci.cert], pki().dp_tls), requester_id="t") as es12:
        await es12.register_event(eid=card.eid, rsp_server_address="localhost", event_id="EV-1")
    async with Es11Client(info["address"], tls_context([pki().ci.cert])) as lpa:
        found = await discover_events(card, lpa, smds_address=info["address"])
    assert [e.event_id for e in found.events] == ["EV-1"]


def test_events_of_a_mistyped_state_is_an_error_that_creates_nothing(tmp_path, capsys):
    from kinsim.cli import main

    code = main(["smds", "events", "--state", str(tmp_path / "no-such-state")])
    assert code == 1 and "no state at" in capsys.readouterr().err
    assert not (tmp_path / "no-such-state").exists()


def test_serve_refuses_a_bad_timeout_and_port(tmp_path, capsys):
    from kinsim.cli import main

    pki().save(tmp_path / "pki")
    code = main(["smds", "serve", "--state", str(tmp_path / "s"), "--pki", str(tmp_path / "pki"),
                 "--session-timeout", "0"])
    assert code == 1 and "session timeout must be positive" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SystemExit):
        main(["smds", "serve", "--state", str(tmp_path / "s"), "--pki", str(tmp_path / "pki"), "--es12-port", "-1"])
    assert "a port is 0 to 65535" in capsys.readouterr().err
