"""The ``kinsim`` command as scripts meet it: usage errors as JSON, a reader that stops early, the version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest

from kinsim.cli import main, report_error
from rsp.errors import ApduError, BppError, Es10Error, StatusCodeError
from rsp.status import MATCHING_ID_REFUSED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_usage_errors_are_one_json_object_with_json(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--json", "certs", "verify", "x.der", "--role", "ci", "--ci", "y.der", "--at", "garbage"])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    error = json.loads(captured.err)
    assert error["type"] == "UsageError" and "--at" in error["error"] and captured.out == ""


def test_usage_errors_without_json_stay_argparse_text(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["certs", "show"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("usage: kinsim certs show")


def test_json_may_come_before_the_command_of_a_group(tmp_path, capsys):
    assert main(["certs", "generate", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["certs", "--json", "show", str(tmp_path / "ci.der")]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "ci"


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.startswith("kinsim ")


def test_output_to_a_closed_pipe_ends_quietly_with_141():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written, as with `kinsim ... | head -0`
    try:
        result = subprocess.run([sys.executable, "-m", "kinsim", "--json", "conformance", "list"], stdout=write_end,
                                stderr=subprocess.PIPE, cwd=ROOT, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == b""


@pytest.mark.parametrize(("error", "codes"), [
    (StatusCodeError(MATCHING_ID_REFUSED, "no order"), {"subjectCode": "8.2.6", "reasonCode": "3.8"}),
    (Es10Error("EnableProfile", 1, "iccidOrAidNotFound"),
     {"function": "EnableProfile", "result": "iccidOrAidNotFound", "resultCode": 1}),
    (BppError(3, 8), {"bppCommandId": 3, "errorReason": 8}),
    (ApduError(0x6A88, "no such data"), {"sw": "6A88"}),
])
def test_json_errors_carry_the_codes_a_script_acts_on(error, codes, capsys):
    report_error(Namespace(json=True), error)
    payload = json.loads(capsys.readouterr().err)
    assert payload == {"error": str(error), "type": type(error).__name__, **codes}
