"""The SM-DS core (sans-IO): ES12 event records and ES11 authentication and retrieval (SGP.22 3.6, 5.8, 5.9)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certs.pki import issue_euicc, issue_eum, random_eid
from certs.validate import eid_of, pkid
from rsp import crypto, status
from rsp import messages as m
from rsp.errors import StatusCodeError
from rsp.status import (
    EID_INVALID,
    EUICC_REPORTED_ERROR,
    EVENT_ID_INVALID,
    EVENT_RECORD_ALREADY_EXISTS,
    INVALID_SMDS_ADDRESS,
)
from smds.core import Requester, split_address
from smds.server import requester_from_certificate
from smds.store import Store
from tests.smds_fixtures import (
    EIN,
    NOW,
    Clock,
    answer,
    fixture_euicc,
    make_core,
    open_session,
    pki,
    second_euicc,
)

SMDP = Requester("2.999.10", frozenset({"localhost", "127.0.0.1"}))
OTHER_SMDP = Requester("2.999.11", frozenset({"smdp.other.example"}))


@pytest.fixture
def store():
    store = Store.open(":memory:")
    yield store
    store.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def core(store, clock):
    return make_core(store, clock=clock)


def register(core, eid, event_id, address="localhost:8443", requester=SMDP, **kwargs):
    return core.register_event(requester, eid=eid, rsp_server_address=address, event_id=event_id, **kwargs)


def codes(exc_info) -> tuple[str, str]:
    return exc_info.value.subject_code, exc_info.value.reason_code


def session_state(store, auth) -> str | None:
    return store.session(auth["transactionId"]).closed


# --- ES12 --------------------------------------------------------------------------------------


def test_register_lists_the_event_under_its_eid(core):
    eid = pki().eid
    record = register(core, eid, "EV-1", forwarding_indicator=True)
    assert (record.eid, record.event_id, record.rsp_server_address, record.registrant) == \
        (eid, "EV-1", "localhost:8443", "2.999.10")
    assert record.forwarding_indicator is True
    assert core.events(eid) == [record]
    assert core.events(random_eid(EIN)) == []


def test_duplicate_registration_is_refused_and_keeps_the_first(core):
    first = register(core, pki().eid, "EV-1")
    with pytest.raises(StatusCodeError) as refused:
        register(core, pki().eid, "EV-1", address="127.0.0.1:9999")
    assert codes(refused) == (EVENT_RECORD_ALREADY_EXISTS.subject, EVENT_RECORD_ALREADY_EXISTS.reason)
    assert core.events() == [first]


def test_same_event_id_for_two_eids_is_two_records(core):
    register(core, pki().eid, "EV-1")
    register(core, random_eid(EIN), "EV-1")
    assert len(core.events()) == 2


def test_delete_by_the_registrant(core):
    register(core, pki().eid, "EV-1")
    deleted = core.delete_event(SMDP, eid=pki().eid, event_id="EV-1")
    assert deleted.event_id == "EV-1"
    assert core.events() == []


def test_delete_unknown_event(core):
    register(core, pki().eid, "EV-1")
    with pytest.raises(StatusCodeError) as refused:
        core.delete_event(SMDP, eid=pki().eid, event_id="EV-2")
    assert codes(refused) == ("8.9.5", "3.9")
    with pytest.raises(StatusCodeError):
        core.delete_event(SMDP, eid=random_eid(EIN), event_id="EV-1")  # right event, other EID
    assert len(core.events()) == 1


def test_another_server_cannot_delete_a_record(core):
    register(core, pki().eid, "EV-1")
    with pytest.raises(StatusCodeError) as refused:
        core.delete_event(OTHER_SMDP, eid=pki().eid, event_id="EV-1")
    assert codes(refused) == ("8.9.5", "3.9")  # answered like a missing record
    assert len(core.events()) == 1
    core.delete_event(Requester("operator", operator=True), eid=pki().eid, event_id="EV-1")
    assert core.events() == []


@pytest.mark.parametrize(("eid", "event_id", "address", "code"), [
    ("8904903200000000000000000000000", "EV", "localhost", EID_INVALID),  # 31 digits
    ("89049032000000000000000000000000", "EV", "localhost", EID_INVALID),  # wrong check digits
    (None, "", "localhost", EVENT_ID_INVALID),
    (None, "x" * 256, "localhost", EVENT_ID_INVALID),
    (None, "EV\n1", "localhost", EVENT_ID_INVALID),
    (None, "EV", "https://localhost/", status.INVALID_SMDP_ADDRESS),
    (None, "EV", "localhost:0", status.INVALID_SMDP_ADDRESS),
    (None, "EV", "", status.INVALID_SMDP_ADDRESS),
])
def test_malformed_registrations_are_refused(core, eid, event_id, address, code):
    with pytest.raises(StatusCodeError) as refused:
        register(core, eid or pki().eid, event_id, address=address)
    assert refused.value.code == code
    assert core.events() == []


def test_a_server_registers_events_only_for_its_own_address(core):
    with pytest.raises(StatusCodeError) as refused:
        register(core, pki().eid, "EV-1", address="smdp.other.example")
    assert refused.value.code == status.FUNCTION_REQUESTER_NOT_ALLOWED
    register(core, pki().eid, "EV-1", address="smdp.other.example", requester=OTHER_SMDP)
    register(core, pki().eid, "EV-2", address="anything.example", requester=Requester("op", operator=True))
    assert [e.rsp_server_address for e in core.events()] == ["smdp.other.example", "anything.example"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["register", "delete"]), st.integers(0, 1), st.sampled_from(["A", "B"]),
                          st.sampled_from([SMDP, OTHER_SMDP])), max_size=12))
def test_register_and_delete_follow_a_simple_model(operations):
    """Whatever the order of calls, the records are what a dict of (eid, eventId) -> registrant says,
    and every refused call leaves them unchanged."""
    store = Store.open(":memory:")
    core = make_core(store)
    eids = [pki().eid, eid_of(second_euicc().cert)]
    model: dict[tuple[str, str], str] = {}
    for operation, which, event_id, requester in operations:
        key = (eids[which], event_id)
        address = next(iter(requester.hosts))
        try:
            if operation == "register":
                register(core, key[0], event_id, address=address, requester=requester)
            else:
                core.delete_event(requester, eid=key[0], event_id=event_id)
        except StatusCodeError:
            expected_failure = (key in model) if operation == "register" else model.get(key) != requester.name
            assert expected_failure
        else:
            if operation == "register":
                assert key not in model
                model[key] = requester.name
            else:
                assert model.pop(key) == requester.name
        assert {(e.eid, e.event_id): e.registrant for e in core.events()} == model
    store.close()


def test_records_survive_a_restart(tmp_path):
    first = Store.open(tmp_path)
    register(make_core(first), pki().eid, "EV-1")
    first.close()
    again = Store.open(tmp_path)
    assert [e.event_id for e in make_core(again).events(pki().eid)] == ["EV-1"]
    again.close()


# --- ES11.InitiateAuthentication ----------------------------------------------------------------


def test_initiate_authentication_signs_server_signed1_with_dsauth(core):
    card = fixture_euicc()
    auth = open_session(core, card)
    signed1 = auth["serverSigned1"]
    assert signed1["euiccChallenge"].native == card.challenge
    assert signed1["serverAddress"].native == "localhost"
    assert signed1["transactionId"].native == auth["transactionId"]
    assert len(auth["transactionId"]) == 16 and len(signed1["serverChallenge"].native) == 16
    ds_auth = pki().ds_auth
    assert auth["serverCertificate"].dump() == ds_auth.cert_der
    assert crypto.verify(ds_auth.cert.public_key(), signed1.dump(), auth["serverSignature1"].native)
    assert auth["euiccCiPKIdToBeUsed"].native == pkid(pki().ci.cert)


def test_initiate_authentication_refusals_store_nothing(core, store):
    card = fixture_euicc()
    cases = [
        (dict(smds_address="smds.elsewhere.example"), INVALID_SMDS_ADDRESS),
        (dict(euicc_challenge=b"short"), status.INVALID_REQUEST),
        (dict(euicc_info1=fixture_euicc(svn=b"\x03\x00\x00").get_euicc_info1()), status.SVN_UNSUPPORTED),
        (dict(euicc_info1=fixture_euicc("foreign").get_euicc_info1()), status.CI_PK_UNKNOWN),
        (dict(euicc_info1=m.EUICCInfo1({"svn": b"\x02\x05\x00", "euiccCiPKIdListForVerification": [pkid(pki().ci.cert)],
                                        "euiccCiPKIdListForSigning": [b"\x01" * 20]})), status.CI_PK_UNKNOWN),
    ]
    for changes, code in cases:
        values = {"euicc_challenge": card.get_euicc_challenge(), "euicc_info1": card.get_euicc_info1(),
                  "smds_address": "localhost", **changes}
        with pytest.raises(StatusCodeError) as refused:
            core.initiate_authentication(**values)
        assert refused.value.code == code, changes
    assert store.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_the_address_comparison_ignores_case(core):
    card = fixture_euicc()
    auth = core.initiate_authentication(euicc_challenge=card.get_euicc_challenge(), euicc_info1=card.get_euicc_info1(),
                                        smds_address="LocalHost")
    assert auth["serverSigned1"]["serverAddress"].native == "localhost"


# --- ES11.AuthenticateClient --------------------------------------------------------------------


def test_the_euicc_gets_the_events_of_its_own_eid_only(core):
    card, other = fixture_euicc(), fixture_euicc(second=True)
    register(core, card.eid, "EV-A1")
    register(core, other.eid, "EV-B1")
    register(core, card.eid, "EV-A2", address="127.0.0.1:9443")
    auth = open_session(core, card)
    found = core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(card, auth))
    assert found.eid == card.eid
    assert [(e.event_id, e.rsp_server_address) for e in found.events] == [("EV-A1", "localhost:8443"),
                                                                           ("EV-A2", "127.0.0.1:9443")]
    auth = open_session(core, other)
    found = core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(other, auth))
    assert [e.event_id for e in found.events] == ["EV-B1"]


def test_no_events_is_an_empty_list(core):
    card = fixture_euicc()
    auth = open_session(core, card)
    found = core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(card, auth))
    assert found.events == ()


def test_an_empty_matching_id_asks_for_every_event(core):
    card = fixture_euicc()
    register(core, card.eid, "EV-1")
    auth = open_session(core, card)
    found = core.authenticate_client(transaction_id=auth["transactionId"],
                                     authenticate_server_response=answer(card, auth, matching_id=""))
    assert [e.event_id for e in found.events] == ["EV-1"]


def test_a_matching_id_selects_one_event_of_the_eid(core):
    card, other = fixture_euicc(), fixture_euicc(second=True)
    register(core, card.eid, "EV-1")
    register(core, card.eid, "EV-2")
    register(core, other.eid, "EV-OTHER")
    auth = open_session(core, card)
    found = core.authenticate_client(transaction_id=auth["transactionId"],
                                     authenticate_server_response=answer(card, auth, matching_id="EV-2"))
    assert [e.event_id for e in found.events] == ["EV-2"]
    # Another EID's EventID is unknown to this eUICC, even though the record exists.
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"],
                                 authenticate_server_response=answer(card, auth, matching_id="EV-OTHER"))
    assert codes(refused) == ("8.9.5", "3.9")


def test_the_eid_comes_from_the_certificate_not_from_the_lpa(core):
    """An eUICC that presents another eUICC's certificate cannot sign for it: no events leak."""
    card, victim = fixture_euicc(), fixture_euicc(second=True)
    register(core, victim.eid, "EV-VICTIM")
    auth = open_session(core, card)
    forged = answer(victim, auth, signer=card.euicc)  # victim's certificate, attacker's key
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=forged)
    assert refused.value.code == status.EUICC_SIGNATURE_INVALID


def test_wrong_euicc_signature(core, store):
    card = fixture_euicc()
    register(core, card.eid, "EV-1")
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"],
                                 authenticate_server_response=answer(card, auth, corrupt_signature=True))
    assert codes(refused) == ("8.1", "6.1")
    assert session_state(store, auth) == "refused 8.1/6.1"
    # The session was used up by the failed attempt: a corrected retry is a replay.
    with pytest.raises(StatusCodeError) as replay:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(card, auth))
    assert replay.value.code == status.TRANSACTION_ID_UNKNOWN


def test_unknown_transaction_id(core, store):
    card = fixture_euicc()
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=bytes(16), authenticate_server_response=answer(card, auth))
    assert codes(refused) == ("8.10.1", "3.9")
    assert session_state(store, auth) is None  # the real session is untouched


def test_euicc_signed1_for_another_transaction(core, store):
    card = fixture_euicc()
    first, second = open_session(core, card), open_session(core, card)
    crossed = answer(card, first, transaction_id=second["transactionId"])
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=first["transactionId"], authenticate_server_response=crossed)
    assert refused.value.code == status.TRANSACTION_ID_UNKNOWN
    assert session_state(store, second) is None


def test_a_step_cannot_be_replayed(core):
    card = fixture_euicc()
    register(core, card.eid, "EV-1")
    auth = open_session(core, card)
    response = answer(card, auth)
    core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=response)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=response)
    assert refused.value.code == status.TRANSACTION_ID_UNKNOWN


def test_an_expired_session_is_unknown(core, clock):
    card = fixture_euicc()
    auth = open_session(core, card)
    clock.advance(core.config.session_timeout + timedelta(seconds=1))
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(card, auth))
    assert refused.value.code == status.TRANSACTION_ID_UNKNOWN


def test_another_server_challenge(core):
    card = fixture_euicc()
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"],
                                 authenticate_server_response=answer(card, auth, server_challenge=bytes(16)))
    assert refused.value.code == status.EUICC_SIGNATURE_INVALID


def test_signed_for_another_server(core):
    card = fixture_euicc()
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"],
                                 authenticate_server_response=answer(card, auth, server_address="smdp.example"))
    assert refused.value.code == INVALID_SMDS_ADDRESS


def test_euicc_of_an_unknown_ci(core):
    """A card that announces our CI but sends an EUM chain of another CI."""
    card, foreign = fixture_euicc(), fixture_euicc("foreign")
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(foreign, auth))
    assert codes(refused) == ("8.11.1", "3.9")


def test_euicc_certificate_not_issued_by_the_eum(core):
    """The eUICC certificate comes from another EUM of the same CI than the EUM certificate sent."""
    card = fixture_euicc()
    rogue_eum = issue_eum(pki().ci, ein=EIN, now=NOW)
    rogue = issue_euicc(rogue_eum, card.eid, now=NOW)
    auth = open_session(core, card)
    response = answer(card, auth, signer=rogue, certificate=rogue.cert)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=response)
    assert codes(refused) == ("8.1.3", "6.1")


def test_an_expired_eum(core, clock):
    card = fixture_euicc()
    clock.now = pki().eum.cert.not_valid_after_utc + timedelta(days=1)
    auth = open_session(core, card)
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=answer(card, auth))
    assert codes(refused) == ("8.1.2", "6.3")


def test_the_euicc_refused_the_sm_ds(core, store):
    card = fixture_euicc()
    auth = open_session(core, card)
    error = m.decode(m.AuthenticateServerResponse, m.AuthenticateServerResponse(
        name="authenticateResponseError",
        value={"transactionId": auth["transactionId"], "authenticateErrorCode": 7}).dump())
    with pytest.raises(StatusCodeError) as refused:
        core.authenticate_client(transaction_id=auth["transactionId"], authenticate_server_response=error)
    assert refused.value.code == EUICC_REPORTED_ERROR
    assert "ciPKUnknown" in str(refused.value)
    assert session_state(store, auth).startswith("refused")


def test_requester_from_a_tls_client_certificate():
    requester = requester_from_certificate(pki().dp_tls.cert_der)
    assert requester.name == "2.999.10"  # the SM-DP+ OID (registeredID) of its DPtls certificate
    assert {"localhost", "127.0.0.1", "::1"} <= requester.hosts
    assert not requester.operator


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost", ("localhost", None)), ("SMDS.Example.COM:8443", ("smds.example.com", 8443)),
    ("127.0.0.1:1", ("127.0.0.1", 1)), ("[::1]:443", ("::1", 443)), ("::1", ("::1", None)),
])
def test_split_address(text, expected):
    assert split_address(text) == expected

