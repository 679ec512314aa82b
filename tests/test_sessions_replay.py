"""The recorded sessions shipped in tests/data/sessions/ replay byte for byte: a seeded download between
our LPA, SM-DP+ and software eUICC produces exactly the recorded ES9+ bodies and APDUs.

When a deliberate protocol change alters a session, record it again:
``kinsim conformance record SCENARIO --out tests/data/sessions/SCENARIO.json``."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from conformance import recording
from conformance.recording import SessionMismatch, replay

SESSIONS = Path(__file__).parent / "data" / "sessions"
OUTCOMES = {
    "download": "installed 8944000000000000019",
    "download-cc": "installed 8944000000000000019",
    "wrong-matching-id": "refused: 8.2.6 / 3.8",
}


@pytest.mark.parametrize("scenario", sorted(OUTCOMES))
def test_shipped_session_replays_byte_for_byte(scenario):
    replayed = replay(SESSIONS / f"{scenario}.json")
    assert replayed.outcome.startswith(OUTCOMES[scenario])


def test_the_download_session_holds_every_es9_function_and_the_apdus():
    data = json.loads((SESSIONS / "download.json").read_text())
    paths = [e["es9"].rsplit("/", 1)[1] for e in data["events"] if "es9" in e]
    assert paths == ["initiateAuthentication", "authenticateClient", "getBoundProfilePackage", "handleNotification"]
    store_data = [e for e in data["events"] if "apdu" in e and e["apdu"][2:4] == "E2"]
    assert len(store_data) > 20  # the ES10 requests and every Bound Profile Package segment


def _tampered(tmp_path, scenario: str, change) -> Path:
    data = json.loads((SESSIONS / f"{scenario}.json").read_text())
    change(data)
    path = tmp_path / f"{scenario}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_changed_response_byte_is_found(tmp_path):
    def flip(data):
        event = next(e for e in data["events"] if "apdu" in e and len(e["response"]) > 8)
        event["response"] = ("0" if event["response"][0] != "0" else "1") + event["response"][1:]

    with pytest.raises(SessionMismatch, match="differs in response"):
        replay(_tampered(tmp_path, "download", flip))


def test_another_seed_gives_another_session(tmp_path):
    def reseed(data):
        data["seed"] = "00"

    with pytest.raises(SessionMismatch):
        replay(_tampered(tmp_path, "wrong-matching-id", reseed))


def test_random_ecdsa_nonces_would_break_the_replay(monkeypatch):
    monkeypatch.setattr(recording, "deterministic_signatures", contextlib.nullcontext)
    with pytest.raises(SessionMismatch):
        replay(SESSIONS / "wrong-matching-id.json")


def test_seeded_streams_are_independent_and_repeatable():
    a, b = recording.seeded_rng(b"s", "smdp"), recording.seeded_rng(b"s", "smdp")
    assert a(5) + a(40) == b(45)
    assert recording.seeded_rng(b"s", "euicc")(16) != recording.seeded_rng(b"s", "smdp")(16)
