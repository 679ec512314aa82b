"""``kinsim plan``: argument helpers, the commands against a running plan service (REST), and the
operator's direct mode on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import png
import pytest
from aiohttp import web

from kinsim.cli import main
from mno import cli
from mno.api import create_app
from mno.plans import ProgressEvent
from tests.mno_fixtures import EID_A, OPERATOR_TOKEN, START, make_rig, pg_dsn, temporary_pg_store


@pytest.fixture
def pg_store():
    yield from temporary_pg_store()


class ServiceThread:
    """The plan service on a loopback port, in a thread with its own event loop."""

    def __init__(self):
        self.rig = make_rig()
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(create_app(self.rig.service), access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def test_serve_refuses_a_guessable_operator_token(capsys):
    assert main(["plan", "serve", "--operator-token", "admin", "--dsn", "postgresql://127.0.0.1:1/none"]) != 0
    assert "at least 20 characters" in capsys.readouterr().err


def run_json(capsys, *argv: str) -> dict:
    code = main(list(argv) + ["--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


# --- helpers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "text", "amount"), [
    ("data", "20GB", 20 * 10**9), ("data", "150 mb", 150 * 10**6), ("data", "7", 7), ("voice", "90min", 5400),
    ("voice", "2h", 7200), ("sms", "500", 500),
])  # fmt: skip
def test_amounts_take_units(kind, text, amount):
    assert cli.parse_amount(kind, text) == amount


@pytest.mark.parametrize(("kind", "text"), [("data", "1.5GB"), ("data", "10 parsecs"), ("sms", "5min"), ("voice", "")])
def test_bad_amounts_are_refused(kind, text):
    with pytest.raises(cli.CliError):
        cli.parse_amount(kind, text)


def test_pool_and_caps_parse():
    assert cli.parse_pool(["data=1GB", "sms=10"]) == {"data": 10**9, "sms": 10}
    assert cli.parse_caps(["data=25%", "sms=none", "voice=10min"]) == {
        "data": {"share": 0.25}, "sms": None, "voice": {"amount": 600}}
    with pytest.raises(cli.CliError):
        cli.parse_pool(["minutes=10"])
    with pytest.raises(cli.CliError):
        cli.parse_caps(["data=abc%"])


# --- against the service ------------------------------------------------------------------------------------


def test_owner_commands_against_the_service(capsys, tmp_path):
    with ServiceThread() as service:
        api = ["--api", service.url]
        created = run_json(capsys, "plan", "create", "--name", "Family", "--owner", "Olga", "--pool", "data=10MB",
                           "sms=50", "--policy", "fixed", *api, "--token", OPERATOR_TOKEN)
        plan_id, owner = created["plan"]["plan_id"], ["--token", created["owner_token"]]
        assert created["plan"]["pool"] == {"data": 10**7, "sms": 50}
        png_file, svg_file = tmp_path / "qr.png", tmp_path / "qr.svg"
        invite = run_json(capsys, "plan", "invite", plan_id, "Ana", "--role", "child", "--eid", EID_A, "--png",
                          str(png_file), "--svg", str(svg_file), *api, *owner)
        assert invite["invitation"]["eid_bound"] is True and invite["confirmation_code"]
        width, height, _, _ = png.Reader(filename=str(png_file)).read()
        assert width == height > 0 and svg_file.read_bytes().startswith(b"<svg")
        member = invite["member"]["member_id"]
        members = run_json(capsys, "plan", "members", plan_id, *api, *owner)["members"]
        assert [m["display_name"] for m in members] == ["Olga", "Ana"]
        caps = run_json(capsys, "plan", "caps", plan_id, member, "data=20%", *api, *owner)
        assert caps["caps"] == {"data": {"share": 0.2}}
        service.run(service.rig.service.handle_progress("smdp", ProgressEvent(
            service.rig.smdp.calls[0][1]["iccid"], 4, True, EID_A, operation="install", install_ok=True)))
        ingest = ["plan", "ingest", "--kind", "data", "--amount", "3MB", "--member-id", member, "--key", "k1",
                  "--at", START.isoformat(), *api, "--token", OPERATOR_TOKEN]
        first = run_json(capsys, *ingest)
        assert (first["charged"], first["excess"], first["throttled"]) == (2 * 10**6, 10**6, True)
        assert run_json(capsys, *ingest)["duplicate"] is True
        usage = run_json(capsys, "plan", "usage", plan_id, *api, *owner)
        assert usage["pool"]["data"]["used"] == 2 * 10**6
        records = run_json(capsys, "plan", "usage", plan_id, "--member", member, *api, "--token",
                           invite["member_token"])
        assert [r["idempotency_key"] for r in records["records"]] == ["k1"]
        shown = run_json(capsys, "plan", "invitations", plan_id, *api, *owner)["invitations"]
        assert [i["state"] for i in shown] == ["used"]
        revoked = run_json(capsys, "plan", "revoke", plan_id, member, *api, *owner)
        assert revoked["member"]["state"] == "revoked" and revoked["remote_deletions"] == 1
        audit = run_json(capsys, "plan", "audit", plan_id, *api, *owner)["events"]
        assert "member.revoked" in [e["action"] for e in audit]
        # human output: the terminal QR code and the second-channel reminder
        assert main(["plan", "invite", plan_id, "Ben", *api, *owner]) == 0
        out = capsys.readouterr().out
        assert "confirmation code" in out and "another channel" in out and "\u2588" in out


def test_refusals_are_one_clear_line(capsys):
    with ServiceThread() as service:
        code = main(["plan", "members", "plan-0000000000000000", "--api", service.url, "--token", "kst_wrong"])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("kinsim: ") and "HTTP 401" in err and len(err.splitlines()) == 1
    assert main(["plan", "invite", "plan-x", "Ana"]) == 1
    assert "needs the SM-DP+" in capsys.readouterr().err


# --- the operator's direct mode -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_operator_works_on_the_store_directly(capsys, pg_store):
    where = ["--dsn", pg_dsn(), "--schema", pg_store.schema]
    created = run_json(capsys, "plan", "create", "--name", "Direct", "--owner", "Dora", "--pool", "sms=10", *where)
    plan_id, owner_id = created["plan"]["plan_id"], created["owner"]["member_id"]
    assert [p["plan_id"] for p in run_json(capsys, "plan", "list", *where)["plans"]] == [plan_id]
    result = run_json(capsys, "plan", "ingest", "--kind", "sms", "--amount", "4", "--member-id", owner_id,
                      "--key", str(uuid.uuid4()), *where)
    assert result["charged"] == 4
    assert run_json(capsys, "plan", "usage", plan_id, *where)["pool"]["sms"]["remaining"] == 6
    assert run_json(capsys, "plan", "policy", plan_id, "dynamic", *where)["policy"] == "dynamic"
    assert [e["action"] for e in run_json(capsys, "plan", "audit", plan_id, *where)["events"]] == [
        "plan.created", "member.added", "plan.updated"]
