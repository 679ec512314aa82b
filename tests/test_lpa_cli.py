"""`kinsim lpa`: the lpac-style command line against the real SM-DP+ and a software eUICC directory."""

from __future__ import annotations

import json
import socket

import pytest

from certs.pki import generate_pki
from kinsim.cli import main
from smdp.store import ProfileState
from tests.lpa_fixtures import TS48_ICCID, smdp_core, smdp_in_thread, software_card

ADDRESS = "smdp.kinsim.test"


@pytest.fixture(scope="module")
def pki():
    return generate_pki("nist", smdp_address=ADDRESS)


class World:
    def __init__(self, pki, tmp_path, capsys):
        self.pki = pki
        self.capsys = capsys
        self.card = tmp_path / "card"
        self.config = tmp_path / "lpa"
        software_card(pki, self.card, default_dp_address=ADDRESS).close()
        self.core = smdp_core(pki, tmp_path / "smdp")
        (tmp_path / "ci.der").write_bytes(pki.ci.cert_der)
        self.ci_file = tmp_path / "ci.der"
        self.port = 0

    def lpa(self, *argv: str, port: int | None = None, config=None) -> tuple[int, str, str]:
        port = self.port if port is None else port
        route = ["--connect-to", f"{ADDRESS}=127.0.0.1:{port}"] if port else []
        code = main(["lpa", "--euicc", str(self.card), "--config-dir", str(config or self.config), *route, *argv])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def matching_id(self, **options) -> str:
        _, result = self.core.orders.create_order(iccid=TS48_ICCID, **options)
        return result["matchingId"]


@pytest.fixture
def world(pki, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KINSIM_EUICC", raising=False)
    w = World(pki, tmp_path, capsys)
    assert w.lpa("ci", "add", str(w.ci_file))[0] == 0
    with smdp_in_thread(w.core) as port:
        w.port = port
        yield w
    w.core.store.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_with_activation_code_then_profile_list_shows_the_iccid(world):
    code, out, err = world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}", "--yes")
    assert code == 0, err
    assert f"Installed profile {TS48_ICCID}" in out and "Notification" in out
    code, out, _ = world.lpa("profile", "list")
    assert code == 0 and TS48_ICCID in out and "disabled" in out
    code, out, _ = world.lpa("profile", "list", "--json")
    profiles = json.loads(out)
    assert [(p["iccid"], p["profileState"]) for p in profiles] == [(TS48_ICCID, "disabled")]
    assert world.core.store.profile(TS48_ICCID).state is ProfileState.INSTALLED


def test_smdp_with_a_tls_certificate_from_another_ci_is_refused(world, tmp_path):
    stranger = tmp_path / "stranger"
    other_ci = tmp_path / "other-ci.der"
    other_ci.write_bytes(generate_pki("nist", smdp_address=ADDRESS).ci.cert_der)
    assert world.lpa("ci", "add", str(other_ci), config=stranger)[0] == 0
    code, out, err = world.lpa("profile", "download", "--smdp", ADDRESS, "-m", world.matching_id(), "--yes",
                               config=stranger)
    assert code == 1 and out == ""
    assert "does not chain to a CI this LPA trusts" in err and "Traceback" not in err
    assert world.lpa("profile", "list", "--json")[1].strip() == "[]"
    assert world.core.store.profile(TS48_ICCID).state is ProfileState.RELEASED


def test_default_smdp_address_download(world):
    eid = json.loads(world.lpa("chip", "info", "--json")[1])["eid"]
    world.matching_id(eid=eid, matching_id="")  # an order found by EID alone
    code, out, err = world.lpa("profile", "download", "--yes")
    assert code == 0, err
    assert TS48_ICCID in world.lpa("profile", "list")[1]


def test_management_sends_notifications_and_explains_card_errors(world):
    world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}", "--yes")
    code, out, _ = world.lpa("profile", "enable", TS48_ICCID)
    assert code == 0 and f"Profile {TS48_ICCID} enabled." in out
    assert f"(enable) sent to {ADDRESS}" in out
    code, out, err = world.lpa("profile", "delete", TS48_ICCID)
    assert code == 1 and "an enabled profile cannot be deleted: disable it first" in err
    code, out, err = world.lpa("profile", "enable", TS48_ICCID, "--json")
    assert code == 1 and json.loads(err)["type"] == "Es10Error"
    code, out, _ = world.lpa("profile", "nickname", TS48_ICCID, "Grandma")
    assert code == 0 and "Grandma" in world.lpa("profile", "list")[1]
    assert world.lpa("profile", "disable", TS48_ICCID)[0] == 0
    code, out, _ = world.lpa("profile", "delete", TS48_ICCID, "--json")
    result = json.loads(out)
    assert code == 0 and result["action"] == "delete"
    assert [n["profileManagementOperation"] for n in result["notifications"]] == ["delete"] and result["notifications"][0]["removed"]


def test_undelivered_notifications_stay_until_processed(world):
    world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}", "--yes")
    down = closed_port()
    code, out, _ = world.lpa("profile", "enable", TS48_ICCID, port=down)
    assert code == 0 and "kept on the card for later" in out
    code, out, _ = world.lpa("notification", "list", "--json")
    pending = json.loads(out)
    assert [(n["profileManagementOperation"], n["iccid"], n["notificationAddress"]) for n in pending] == [
        ("enable", TS48_ICCID, ADDRESS)]
    code, out, _ = world.lpa("notification", "list")
    assert "enable" in out and str(pending[0]["seqNumber"]) in out
    code, out, _ = world.lpa("notification", "process", port=down)
    assert code == 1 and "kept" in out
    code, out, _ = world.lpa("notification", "process", "--json")
    assert code == 0 and json.loads(out)[0]["removed"]
    assert world.lpa("notification", "list")[1].strip() == "No pending notifications."


def test_notification_remove_needs_numbers(world):
    world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}", "--yes")
    world.lpa("profile", "enable", TS48_ICCID, port=closed_port())
    seq = json.loads(world.lpa("notification", "list", "--json")[1])[0]["seqNumber"]
    assert world.lpa("notification", "remove")[0] == 1
    code, out, _ = world.lpa("notification", "remove", str(seq))
    assert code == 0 and f"Removed notification {seq}." in out
    code, _, err = world.lpa("notification", "remove", str(seq))
    assert code == 1 and f"the card holds no pending notification {seq}" in err


def test_unconfirmed_download_is_postponed(world, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, _, err = world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}")
    assert code == 1 and "needs your confirmation" in err
    assert world.lpa("profile", "list", "--json")[1].strip() == "[]"
    # the session was cancelled on both sides, so the same order downloads at once
    assert world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.core.store.profile(TS48_ICCID).matching_id}",
                     "--yes")[0] == 0


def test_confirmation_code(world):
    matching_id = world.matching_id(confirmation_code="4711")
    ac = f"LPA:1${ADDRESS}${matching_id}$$1"
    code, _, err = world.lpa("profile", "download", "-a", ac, "--yes", "-c", "1234")
    assert code == 1 and "the confirmation code is wrong" in err
    code, out, err = world.lpa("profile", "download", "-a", ac, "--yes", "-c", "4711")
    assert code == 0, err


def test_chip_info_and_default_address(world):
    code, out, _ = world.lpa("chip", "info")
    assert code == 0 and "(trusted)" in out and ADDRESS in out
    info = json.loads(world.lpa("chip", "info", "--json")[1])
    assert len(info["eid"]) == 32 and info["eid"] in out
    assert info["euiccInfo2"]["svn"] == "2.5.0"
    assert info["euiccInfo2"]["euiccCiPKIdListForVerification"][0]["trustedByLpa"]
    code, out, _ = world.lpa("chip", "default-dp-address", "set", "other.kinsim.test")
    assert code == 0 and "other.kinsim.test" in out
    code, out, _ = world.lpa("chip", "default-dp-address", "clear", "--json")
    assert json.loads(out)["defaultDpAddress"] is None
    assert world.lpa("chip", "default-dp-address", "set")[0] == 1


def test_trace_prints_apdus_and_the_cost(world):
    code = main(["lpa", "--euicc", str(world.card), "--config-dir", str(world.config), "--trace",
                 "chip", "default-dp-address"])
    err = world.capsys.readouterr().err
    assert code == 0 and ">> 0070000001" in err and "<< " in err and "[card]" in err


def test_people_get_sentences_not_tracebacks(world, tmp_path):
    code = main(["lpa", "profile", "list"])
    err = world.capsys.readouterr().err
    assert code == 1 and "no card chosen" in err
    code, _, err = world.lpa("profile", "download", "--smdp", ADDRESS, "--yes", config=tmp_path / "empty")
    assert code == 1 and "no trusted CI certificate" in err
    code, _, err = world.lpa("profile", "download", "-a", "LPA:1$nodot$X", "--yes")
    assert code == 1 and "SM-DP+ Address" in err
    code, _, err = world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}$NO-SUCH-ORDER", "--yes")
    assert code == 1 and "no download order for this matching ID" in err and "8.2.6" in err
    code, _, err = world.lpa("profile", "enable", "89000123456789012342")
    assert code == 1 and "Luhn" in err
    code, _, err = world.lpa("ci", "add", str(tmp_path / "missing.der"))
    assert code == 1 and "cannot read" in err


def test_interactive_refusal_ends_the_order(world, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, _, err = world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}")
    assert code == 1 and "declined" in err and "Profile name" in err  # the metadata was shown first
    assert world.lpa("profile", "list", "--json")[1].strip() == "[]"
    # endUserRejection reached the SM-DP+, which ends the order (unlike 'postponed')
    assert world.core.store.profile(TS48_ICCID).state is ProfileState.ERROR


def test_interactive_acceptance(world, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, err = world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}")
    assert code == 0 and TS48_ICCID in out, err


def test_purge_needs_yes(world):
    world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}", "--yes")
    code, _, err = world.lpa("chip", "purge")
    assert code == 1 and "--yes" in err and TS48_ICCID in world.lpa("profile", "list")[1]
    code, out, err = world.lpa("chip", "purge", "--yes")
    assert code == 0, err
    assert world.lpa("profile", "list", "--json")[1].strip() == "[]"


def test_profile_discovery_lists_the_events_of_the_root_smds(tmp_path, capsys):
    from tests import smds_fixtures
    from tests.lpa_fixtures import LoopThread

    thread = LoopThread()
    running = smds_fixtures.running_smds(tmp_path / "smds")
    smds = thread.run(running.__aenter__())
    try:
        card = tmp_path / "card"
        software_card(smds_fixtures.pki(), card, root_ds_address=smds.address).close()
        ci = tmp_path / "ci.der"
        ci.write_bytes(smds_fixtures.pki().ci.cert_der)
        base = ["lpa", "--euicc", str(card), "--config-dir", str(tmp_path / "lpa"), "--ci-cert", str(ci)]
        eid = json.loads(main_output(capsys, base + ["chip", "info", "--json"]))["eid"]

        async def register():
            async with smds.es12_client() as es12:
                await es12.register_event(eid=eid, rsp_server_address="localhost:8443", event_id="INVITE-1")

        thread.run(register())
        found = json.loads(main_output(capsys, base + ["profile", "discovery", "--json"]))
        assert found["smdsAddress"] == smds.address
        assert found["events"] == [{"eventId": "INVITE-1", "rspServerAddress": "localhost:8443"}]
        assert "INVITE-1" in main_output(capsys, base + ["profile", "discovery"])
    finally:
        thread.run(running.__aexit__(None, None, None))
        thread.close()


def main_output(capsys, argv) -> str:
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_json_after_the_card_options_and_card_errors_carry_their_enum(world):
    code, out, _ = world.lpa("--json", "chip", "info")
    assert code == 0 and len(json.loads(out)["eid"]) == 32
    code, _, err = world.lpa("--json", "profile", "enable", "89000123456789012358")  # a valid ICCID not on the card
    error = json.loads(err)
    assert code == 1 and (error["function"], error["result"], error["resultCode"]) == (
        "EnableProfile", "iccidOrAidNotFound", 1)


def test_dumped_notification_replays_after_removal(world, tmp_path):
    world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${world.matching_id()}", "--yes")
    assert world.lpa("profile", "enable", TS48_ICCID, port=closed_port())[0] == 0  # the SM-DP+ is unreachable
    code, out, _ = world.lpa("notification", "dump")
    [dumped] = json.loads(out)
    assert code == 0 and dumped["profileManagementOperation"] == "enable" and dumped["pendingNotification"]
    assert world.lpa("notification", "dump", "999")[0] == 1
    assert world.lpa("notification", "remove", "--all")[0] == 0
    (tmp_path / "dump.json").write_text(out)
    code, out, err = world.lpa("notification", "replay", str(tmp_path / "dump.json"), "--json")
    assert code == 0, err
    assert [(d["seqNumber"], d["delivered"], d["removed"]) for d in json.loads(out)] == [
        (dumped["seqNumber"], True, False)]
    operations = [n["operation"] for n in world.core.store.notifications()]
    assert operations[-1] == "notificationEnable"  # the SM-DP+ got the signed notification the card had dropped
    (tmp_path / "bad.json").write_text(json.dumps([{"pendingNotification": "AAAA"}]))
    code, _, err = world.lpa("notification", "replay", str(tmp_path / "bad.json"))
    assert code == 1 and "PendingNotification" in err and "Traceback" not in err


def test_download_options_as_lpac_spells_them(world):
    eid = json.loads(world.lpa("chip", "info", "--json")[1])["eid"]
    matching_id = world.matching_id(eid=eid)
    code, _, err = world.lpa("profile", "download", "-a", f"LPA:1${ADDRESS}${matching_id}", "-m", matching_id)
    assert code == 1 and "give -a or -m, not both" in err
    code, _, err = world.lpa("--timeout", "-1", "profile", "download", "-s", ADDRESS, "-m", matching_id, "--yes")
    assert code == 1 and "positive number of seconds" in err
    assert world.lpa("profile", "list")[1].strip() == "No profiles installed."
    code, _, err = world.lpa("profile", "download", "-m", matching_id, "-i", "356938035643809", "--yes")
    assert code == 0, err  # -m with the card's default SM-DP+ address, as lpac does
    assert TS48_ICCID in world.lpa("profile", "list")[1]


def test_reader_list(world, monkeypatch):
    monkeypatch.setattr("lpa.pcsc.list_readers", lambda: ["Reader A", "Reader B"])
    code, out, _ = world.lpa("reader", "list", "--json")
    assert code == 0 and json.loads(out) == [{"index": 0, "name": "Reader A"}, {"index": 1, "name": "Reader B"}]
    monkeypatch.setattr("lpa.pcsc.list_readers", lambda: [])
    assert "No PC/SC reader" in world.lpa("reader", "list")[1]


def test_an_unreachable_smds_is_called_an_smds(world):
    port = closed_port()
    code, _, err = world.lpa("profile", "discovery", "-s", f"localhost:{port}")
    assert code == 1 and f"cannot connect to SM-DS localhost:{port}" in err


def test_ci_add_to_an_impossible_configuration_directory_is_a_sentence(world, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    code, _, err = world.lpa("ci", "add", str(world.ci_file), config=tmp_path / "file" / "lpa")
    assert code == 1 and "cannot store the CI certificate" in err and "Traceback" not in err
