"""Bounded fuzzing of the ES9+ JSON handlers (conformance.fuzz.es9): our SM-DP+'s aiohttp application
never answers "internal error" and never changes its SQLite state on a refused request. Longer runs:
python -m conformance.fuzz --harness es9-json --minutes 30."""

from __future__ import annotations

import pytest

import smdp.server
from conformance.fuzz import run_harness
from conformance.fuzz.es9 import Es9Harness
from smdp.core import SmdpCore

EXAMPLES = 100


@pytest.fixture(scope="module")
def harness():
    fuzz = Es9Harness()
    yield fuzz
    fuzz.close()


def test_the_smdp_survives_fuzzed_requests(harness, record_property):
    report = run_harness(harness, examples=EXAMPLES, seed=20250601)
    print(report.line())
    record_property("inputs", report.inputs)
    assert report.inputs >= EXAMPLES and report.failures == []


def test_an_unhandled_exception_in_the_smdp_is_caught(harness, monkeypatch):
    def crashing(self, request):
        raise RuntimeError("unhandled")

    monkeypatch.setattr(SmdpCore, "cancel_session", crashing)
    report = run_harness(harness, examples=EXAMPLES, seed=2)
    assert len(report.failures) == 1 and "RuntimeError: unhandled" in report.failures[0]


def test_a_state_change_on_a_refused_request_is_caught(harness, monkeypatch):
    real = smdp.server._error_response

    def leaky(error):
        harness.store.conn.execute("UPDATE profiles SET cc_attempts = cc_attempts + 1")
        return real(error)

    monkeypatch.setattr(smdp.server, "_error_response", leaky)
    report = run_harness(harness, examples=EXAMPLES, seed=3)
    assert len(report.failures) == 1 and "changed the SM-DP+ state" in report.failures[0]
