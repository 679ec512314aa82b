"""`kinsim demo`, the README's first command: a complete download on the embedded defaults."""

from __future__ import annotations

import json

import pytest

from tests.processes import kinsim

pytestmark = pytest.mark.slow


def test_demo_downloads_enables_and_settles_the_order(tmp_path):
    result = json.loads(kinsim("demo", "--json", "--dir", str(tmp_path / "demo"), timeout=120).stdout)
    assert result["smdpState"] == "Installed"
    assert result["iccid"] == "89000123456789012341"
    assert all(step["exit"] == 0 for step in result["steps"])
    assert any("profile download" in step["command"] for step in result["steps"])
    listed = kinsim("euicc", "show", str(tmp_path / "demo" / "card"), "--json").stdout
    assert '"89000123456789012341"' in listed and "enabled" in listed


def test_a_work_directory_that_cannot_be_made_is_one_sentence(tmp_path, capsys):
    from kinsim.cli import main

    (tmp_path / "file").write_text("not a directory")
    assert main(["demo", "--dir", str(tmp_path / "file")]) == 1
    assert capsys.readouterr().err.startswith(f"kinsim: cannot use {tmp_path / 'file'} as the work directory")
