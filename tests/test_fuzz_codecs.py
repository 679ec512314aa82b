"""Bounded fuzzing of the SAIP and ASN.1 decoders (conformance.fuzz.codecs): no exception but
DecodeError, and accepted input re-encodes to the same bytes. Longer runs: python -m conformance.fuzz."""

from __future__ import annotations

import pytest

import rsp.saip
from conformance.fuzz import run_harness
from conformance.fuzz.codecs import Asn1Harness, SaipHarness, message_corpus
from rsp import messages as m

EXAMPLES = 150


@pytest.fixture(scope="module")
def saip():
    return SaipHarness()


@pytest.fixture(scope="module")
def asn1():
    return Asn1Harness()


def test_saip_decoder_survives_mutated_profiles(saip, record_property):
    report = run_harness(saip, examples=EXAMPLES, seed=20250601)
    print(report.line())
    record_property("inputs", report.inputs)
    assert report.inputs >= EXAMPLES and report.failures == []


def test_asn1_decoder_survives_mutated_messages(asn1, record_property):
    report = run_harness(asn1, examples=EXAMPLES, seed=20250601)
    print(report.line())
    record_property("inputs", report.inputs)
    assert report.inputs >= EXAMPLES and report.failures == []


def test_the_message_corpus_covers_both_interfaces():
    names = {spec.__name__ for spec, _ in message_corpus()}
    assert {"AuthenticateServerRequest", "AuthenticateServerResponse", "PrepareDownloadRequest",
            "BoundProfilePackage", "ProfileInstallationResult", "EUICCInfo1", "PendingNotification"} <= names


def test_a_decoder_leaking_another_exception_is_caught(saip, monkeypatch):
    real = rsp.saip.ProfilePackage.decode.__func__

    def leaky(cls, data):
        if len(data) % 3 == 0:
            raise IndexError("leaked")
        return real(cls, data)

    monkeypatch.setattr(rsp.saip.ProfilePackage, "decode", classmethod(leaky))
    report = run_harness(saip, examples=EXAMPLES, seed=1)
    assert len(report.failures) == 1 and "IndexError" in report.failures[0]


class _Appended:
    """A decoded value whose dump() no longer returns the received bytes."""

    def __init__(self, value):
        self.value = value

    def dump(self):
        return self.value.dump() + b"\x00"

    @property
    def native(self):
        return self.value.native


def test_a_decoder_that_changes_accepted_bytes_is_caught(asn1, monkeypatch):
    real = m.decode
    monkeypatch.setattr(m, "decode", lambda spec, data: _Appended(real(spec, data)))
    report = run_harness(asn1, examples=EXAMPLES, seed=1)
    assert len(report.failures) == 1 and "differs from the received bytes" in report.failures[0]
