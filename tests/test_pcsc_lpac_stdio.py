"""lpac's stdio APDU driver served by the software eUICC (no pcscd needed: these always run).

lpac itself is not packaged for Debian 12, so ``run_lpac`` is exercised with a stand-in that speaks
the driver's line protocol as lpac does (driver/apdu/stdio.c: one JSON request per line on stdout,
one JSON answer per line on stdin, old versions ending lines with CR LF) and drives GetEID the way
lpac's ES10 layer does (STORE DATA on the opened channel, GET RESPONSE while '61xx').
"""

from __future__ import annotations

import io
import json
import sys
import textwrap

import pytest

from euicc_sim.apdu import Card
from euicc_sim.lpac_stdio import LpacError, LpacStdioBridge, run_lpac, serve_stdio
from tests.pcsc_fixtures import EID, ScriptedIsdr

ISD_R = "A0000005591010FFFFFFFF8900000100"
GET_EID_STORE_DATA = "81E2910006BF3E035C015A"


def request(func: str, param: str | None = None) -> str:
    return json.dumps({"type": "apdu", "payload": {"func": func, "param": param}})


def ask(bridge: LpacStdioBridge, func: str, param: str | None = None) -> dict:
    answer = json.loads(bridge.handle_line(request(func, param)))
    assert answer["type"] == "apdu"
    return answer["payload"]


@pytest.fixture
def bridge() -> LpacStdioBridge:
    return LpacStdioBridge(Card(ScriptedIsdr()))


def test_answer_lines_are_compact_json(bridge):
    assert bridge.handle_line(request("connect")) == '{"type":"apdu","payload":{"ecode":0}}'


def test_get_eid_the_way_lpac_does(bridge):
    assert ask(bridge, "connect") == {"ecode": 0}
    assert ask(bridge, "logic_channel_open", ISD_R) == {"ecode": 1}
    first = ask(bridge, "transmit", GET_EID_STORE_DATA)
    assert first == {"ecode": 0, "data": "6115"}  # T=0: the data waits for GET RESPONSE
    rest = ask(bridge, "transmit", "81C0000015")  # lpac sends GET RESPONSE with the STORE DATA class
    assert rest["data"] == "BF3E125A10" + EID + "9000"
    assert ask(bridge, "logic_channel_close", "01") == {"ecode": 0}
    assert ask(bridge, "transmit", GET_EID_STORE_DATA)["data"] == "6881"  # channel 1 is gone
    assert ask(bridge, "disconnect") == {"ecode": 0}
    assert ask(bridge, "transmit", GET_EID_STORE_DATA) == {"ecode": -1}  # unpowered: no answer
    assert bridge.requests == 8


def test_lowercase_hex_from_lpac_is_accepted(bridge):
    ask(bridge, "connect")
    assert ask(bridge, "logic_channel_open", ISD_R.lower()) == {"ecode": 1}


def test_an_unknown_aid_fails_and_leaves_no_channel_open(bridge):
    ask(bridge, "connect")
    assert ask(bridge, "logic_channel_open", "A000000559101099") == {"ecode": -1}
    assert bridge.card.open_channels == [0]
    assert ask(bridge, "logic_channel_open", ISD_R) == {"ecode": 1}


@pytest.mark.parametrize("func, param", [
    ("transmit", "81E2"),  # shorter than a header
    ("transmit", "not hex"),
    ("logic_channel_open", None),
    ("logic_channel_close", "0102"),
    ("format_card", None),
    (None, None),
])
def test_requests_that_cannot_be_carried_out_get_ecode_minus_one(bridge, func, param):
    ask(bridge, "connect")
    assert ask(bridge, func, param) == {"ecode": -1}


def test_lpac_output_is_collected_not_answered(bridge):
    progress = {"type": "progress", "payload": {"code": 0, "message": "es10c_get_eid", "data": None}}
    assert bridge.handle_line(json.dumps(progress)) is None
    assert bridge.handle_line("lpac: plain text") is None
    assert bridge.handle_line("   ") is None
    assert bridge.output == [progress]
    assert bridge.requests == 0


def test_serve_stdio_answers_requests_and_passes_lpac_output_on():
    lines = [request("connect"), request("logic_channel_open", ISD_R),
             '{"type":"lpa","payload":{"code":0,"message":"success","data":null}}', request("disconnect")]
    answers, output = io.StringIO(), io.StringIO()
    bridge = serve_stdio(Card(ScriptedIsdr()), io.StringIO("\r\n".join(lines) + "\r\n"), answers, output)
    assert [json.loads(line)["payload"]["ecode"] for line in answers.getvalue().splitlines()] == [0, 1, 0]
    assert json.loads(output.getvalue())["type"] == "lpa"
    assert bridge.requests == 3


FAKE_LPAC = textwrap.dedent('''
    import json, sys

    def call(func, param=None):
        sys.stdout.write(json.dumps({"type": "apdu", "payload": {"func": func, "param": param}},
                                    separators=(",", ":")) + "\\r\\n")
        sys.stdout.flush()
        answer = json.loads(sys.stdin.readline())
        assert answer["type"] == "apdu", answer
        return answer["payload"]

    def transmit(apdu):
        payload = call("transmit", apdu)
        if payload["ecode"] != 0:
            sys.exit("transmit failed")
        return bytes.fromhex(payload["data"])

    assert call("connect")["ecode"] == 0
    channel = call("logic_channel_open", "a0000005591010ffffffff8900000100")["ecode"]
    if channel <= 0:
        sys.exit("no channel")
    print(json.dumps({"type": "progress", "payload": {"code": 0, "message": "es10c_get_eid", "data": None}}))
    response = transmit(f"{0x80 | channel:02x}e2910006bf3e035c015a")
    data = b""
    while response[-2] == 0x61:
        data += response[:-2]
        response = transmit(f"{0x80 | channel:02x}c00000{response[-1]:02x}")
    data += response[:-2]
    call("logic_channel_close", f"{channel:02x}")
    call("disconnect")
    print(json.dumps({"type": "lpa", "payload": {"code": 0, "message": "success",
                                                 "data": {"eidValue": data[5:].hex().upper()}}}))
''')


def test_run_lpac_relays_a_whole_run(tmp_path):
    script = tmp_path / "lpac.py"
    script.write_text(FAKE_LPAC)
    card = Card(ScriptedIsdr())
    run = run_lpac(card, [sys.executable, str(script), "chip", "info"], timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.result == {"code": 0, "message": "success", "data": {"eidValue": EID}}
    assert [line["type"] for line in run.output] == ["progress", "lpa"]
    assert run.apdus == 5  # MANAGE CHANNEL, SELECT, STORE DATA, GET RESPONSE, MANAGE CHANNEL close
    assert card.open_channels == []  # lpac disconnected: the card is powered down


def test_run_lpac_is_bounded_in_time(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text("import time\nprint('{\"type\":\"apdu\",\"payload\":{\"func\":\"connect\"}}', flush=True)\n"
                      "time.sleep(600)\n")
    with pytest.raises(LpacError, match="did not finish"):
        run_lpac(Card(ScriptedIsdr()), [sys.executable, str(script)], timeout=1.0)


def test_run_lpac_without_lpac_says_so(tmp_path):
    with pytest.raises(LpacError, match="cannot run"):
        run_lpac(Card(ScriptedIsdr()), [str(tmp_path / "lpac")])
