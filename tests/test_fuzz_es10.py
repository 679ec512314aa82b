"""Bounded fuzzing of the ES10 APDU handler (conformance.fuzz.es10): random and mutated APDUs never
crash the software eUICC ('6F00') and never change its stored state when refused. Longer runs:
python -m conformance.fuzz --harness es10-apdu --minutes 30."""

from __future__ import annotations

import dataclasses

import pytest
from asn1crypto import x509 as asn1_x509

from conformance.es10_cases import unknown_curve
from conformance.fuzz import run_harness
from conformance.fuzz.es10 import Es10Harness
from euicc_sim.apdu import Card
from euicc_sim.isdr import Isdr
from rsp import messages as m

EXAMPLES = 120


@pytest.fixture(scope="module")
def harness():
    fuzz = Es10Harness()
    yield fuzz
    fuzz.close()


def test_the_card_survives_fuzzed_apdus(harness, record_property):
    report = run_harness(harness, examples=EXAMPLES, seed=20250601)
    print(report.line())
    record_property("inputs", report.inputs)
    assert report.inputs >= EXAMPLES and report.failures == []


def test_an_unhandled_exception_in_the_card_is_caught(harness, monkeypatch):
    real = Isdr.handle

    def crashing(self, request):
        if request[:2] == b"\xbf\x38":
            raise RuntimeError("unhandled")
        return real(self, request)

    monkeypatch.setattr(Isdr, "handle", crashing)
    report = run_harness(harness, examples=EXAMPLES, seed=2)
    assert len(report.failures) == 1 and "RuntimeError: unhandled" in report.failures[0]


def test_a_state_change_on_a_refused_apdu_is_caught(harness, monkeypatch):
    real = Card.transmit

    def leaky(self, apdu):
        response = real(self, apdu)
        if response[-2] not in (0x90, 0x61, 0x91):
            state = harness.euicc.isdr.state
            harness.euicc.isdr._commit(dataclasses.replace(state, next_seq=state.next_seq + 1))
        return response

    monkeypatch.setattr(Card, "transmit", leaky)
    report = run_harness(harness, examples=EXAMPLES, seed=3)
    assert len(report.failures) == 1 and "changed the card's stored state" in report.failures[0]


def test_a_server_certificate_on_an_unknown_curve_gets_an_error_enum(harness):
    """Regression for a bug the fuzzer found: UnsupportedAlgorithm escaped as SW 6F00."""
    harness.euicc.card.reset()
    harness.es10.open()
    session = harness._session()
    certificate = unknown_curve(harness.pki.dp_auth.cert_der)
    request = harness.smdp.authenticate_server(session, certificate_der=certificate)
    response = m.decode(m.AuthenticateServerResponse, harness.es10.store_data(request.dump(), "AuthenticateServer"))
    assert response.name == "authenticateResponseError"
    assert isinstance(response.chosen["authenticateErrorCode"].native, str)
    assert asn1_x509.Certificate.load(certificate)  # the request itself is well-formed DER
