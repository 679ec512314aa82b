"""``kinsim conformance``: list, es9 (against our SM-DP+ over HTTPS, orders from ES2+ or listed), es10
(against a software eUICC directory), record and replay; exit status and JUnit output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conformance.catalogue import CASES, ES9_CASES, FEATURES
from kinsim.cli import main
from tests.conformance_fixtures import ADDRESS, REQUESTER, make_card, start_smdp, test_pki
from tests.smdp_fixtures import PROFILE_TYPE


def run(capsys, *argv) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().out


def test_list_shows_every_case_with_its_section(capsys):
    status, out = run(capsys, "conformance", "list", "--json")
    rows = json.loads(out)
    assert status == 0 and [r["id"] for r in rows] == [c.id for c in CASES]
    assert all(r["section"] and r["expected"] for r in rows)
    status, out = run(capsys, "conformance", "list", "--features", "--json")
    assert json.loads(out) == FEATURES
    status, out = run(capsys, "conformance", "list", "--orders")
    assert "--matching-id needs" in out


@pytest.fixture
def smdp(tmp_path):
    target = start_smdp(tmp_path / "smdp")
    yield target
    target.close()


def _es9_args(smdp, tmp_path) -> list[str]:
    ci = tmp_path / "ci.pem"
    ci.write_bytes(smdp.pki.ci.cert_pem)
    return ["conformance", "es9", "--smdp", f"{ADDRESS}:{smdp.es9_port}", "--ci", str(ci),
            "--connect-to", f"127.0.0.1:{smdp.es9_port}"]


def test_es9_with_es2_orders_passes_and_writes_junit(smdp, tmp_path, capsys):
    junit = tmp_path / "es9.xml"
    args = _es9_args(smdp, tmp_path) + ["--es2", smdp.server.urls["es2"], "--es2-cert", str(smdp.operator_cert),
                                        "--es2-key", str(smdp.operator_key), "--es2-profile-type", PROFILE_TYPE,
                                        "--junit", str(junit), "--seed", "0102"]
    status, out = run(capsys, *args)
    assert status == 0, out
    assert out.splitlines()[-1] == f"{len(ES9_CASES)} cases: {len(ES9_CASES)} passed, 0 failed, 0 errors, 0 blocked, 0 skipped"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(ES9_CASES)) and suite.get("failures") == "0"
    ordered = [p for p in smdp.store.profiles() if p.requester == REQUESTER]  # requester: the client cert's CN
    assert len(ordered) >= sum(c.order_count for c in ES9_CASES if c.order and c.order != "shared")


def test_es9_with_listed_matching_ids(smdp, tmp_path, capsys):
    _, first = smdp.core.orders.create_order(profile_type=PROFILE_TYPE)
    _, second = smdp.core.orders.create_order(profile_type=PROFILE_TYPE, confirmation_code="1234")
    args = _es9_args(smdp, tmp_path) + ["--matching-id", first["matchingId"],
                                        "--cc-matching-id", f"{second['matchingId']}=1234",
                                        "--case", "ES9-DOWNLOAD-001", "--case", "ES9-DOWNLOAD-002", "--json"]
    status, out = run(capsys, *args)
    assert status == 0 and [r["status"] for r in json.loads(out)["results"]] == ["pass", "pass"]


def test_es9_exit_status_is_1_when_a_case_is_blocked(smdp, tmp_path, capsys):
    status, out = run(capsys, *_es9_args(smdp, tmp_path), "--case", "ES9-DOWNLOAD-001", "--json")
    assert status == 1 and json.loads(out)["results"][0]["status"] == "blocked"


def test_es10_on_a_software_euicc(tmp_path, capsys):
    pki = test_pki()
    card = make_card(tmp_path / "card", pki)
    pki.save(tmp_path / "pki")
    junit = tmp_path / "es10.xml"
    status, out = run(capsys, "conformance", "es10", "--euicc", str(card), "--smdp-pki", str(tmp_path / "pki"),
                      "--skip-feature", "profile-install", "--case", "ES10-AUTHSRV-001", "--case", "ES10-LOAD-001",
                      "--case", "ES10-PREP-002", "--junit", str(junit))
    assert status == 0, out
    assert "ES10-LOAD-001" in out and "SKIP" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("3", "1", "0")


def test_es10_default_smdp_is_sgp26_for_a_default_software_euicc(tmp_path, capsys):
    assert main(["euicc", "create", str(tmp_path / "card")]) == 0
    capsys.readouterr()
    status, out = run(capsys, "conformance", "es10", "--euicc", str(tmp_path / "card"), "--case", "ES10-LOAD-001")
    assert status == 0, out


def test_record_and_replay(tmp_path, capsys):
    path = tmp_path / "session.json"
    status, out = run(capsys, "conformance", "record", "wrong-matching-id", "--out", str(path), "--seed", "abcd")
    assert status == 0 and "refused: 8.2.6 / 3.8" in out
    status, out = run(capsys, "conformance", "replay", str(path))
    assert status == 0 and "identical" in out
    data = json.loads(path.read_text())
    data["events"][0]["response"] = "6F00"
    path.write_text(json.dumps(data))
    status, out = run(capsys, "conformance", "replay", str(path))
    assert status == 1 and "differs" in out


def test_unreadable_inputs_are_sentences(tmp_path, capsys):
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(json.dumps({"format": "kinsim-session/1", "scenario": "download"}))
    status, out = run(capsys, "--json", "conformance", "replay", str(tmp_path / "absent.json"),
                      str(tmp_path / "junk.json"), str(tmp_path / "partial.json"))
    results = [r["result"] for r in json.loads(out)]
    assert status == 1 and all(r.startswith("unreadable: ") for r in results), results
    assert "cannot read" in results[0] and "lacks 'seed'" in results[2]
    status = main(["conformance", "es9", "--smdp", ADDRESS, "--ci", str(tmp_path / "absent.der"), "--matching-id", "x"])
    assert status == 1 and "cannot read the certificate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["conformance", "record", "download", "--out", str(tmp_path / "x.json"), "--seed", "zz"])
    assert caught.value.code == 2 and "a seed is hex digits" in capsys.readouterr().err
    status = main(["conformance", "record", "wrong-matching-id", "--out", str(tmp_path / "no" / "dir.json")])
    assert status == 1 and "cannot write" in capsys.readouterr().err


def test_junit_into_a_missing_directory_is_refused_before_the_run(tmp_path, capsys):
    status = main(["conformance", "es10", "--euicc", str(tmp_path / "card"), "--junit", str(tmp_path / "no" / "j.xml")])
    assert status == 1 and "cannot write --junit" in capsys.readouterr().err
