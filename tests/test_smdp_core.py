"""The sans-IO SM-DP+ core: what a download produces, the session and order state machine,
notifications, restarts and rollback, operator reports."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certs.pki import issue_euicc
from rsp import crypto, status
from rsp import messages as m
from rsp.activation import hash_confirmation_code
from rsp.errors import StatusCodeError
from rsp.es9_json import (
    AUTHENTICATE_CLIENT,
    CANCEL_SESSION,
    GET_BOUND_PROFILE_PACKAGE,
    INITIATE_AUTHENTICATION,
)
from rsp.ids import iccid_from_bcd
from rsp.status import EID_REFUSED
from smdp import core as core_module
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import OrderHooks, confirmation_code_digest, expected_hash_cc
from smdp.store import ProfileState, ProfileType, SessionState, Store
from tests.smdp_fixtures import (
    ADDRESS,
    EID,
    OTHER_EID,
    PROFILE_TYPE,
    Clock,
    EuiccSide,
    Smdp,
    authenticate,
    download,
    make_config,
    make_smdp,
    notify,
    seeded_rng,
    snapshot,
    test_pki,
)

OPERATOR = "mno1"


@pytest.fixture
def smdp(tmp_path):
    smdp = make_smdp(tmp_path / "state", operators={OPERATOR: "https://mno.example:8443"})
    yield smdp
    smdp.store.close()


@pytest.fixture
def euicc():
    return EuiccSide(test_pki())


def released(smdp, **kwargs) -> str:
    return smdp.orders.create_order(profile_type=PROFILE_TYPE, release=True, **kwargs)[1]["matchingId"]


def operator_order(smdp, **confirm) -> str:
    iccid = smdp.orders.download_order(OPERATOR, profile_type=PROFILE_TYPE)
    return smdp.orders.confirm_order(OPERATOR, iccid=iccid, release_flag=True, **confirm)["matchingId"]


# --- what a download produces --------------------------------------------------------------------


def test_download_produces_what_the_euicc_checks(smdp, euicc):
    pki = test_pki()
    matching_id = released(smdp)
    steps = download(smdp, euicc, matching_id)
    init, auth = steps.init, steps.auth
    signed1 = init["serverSigned1"]
    assert signed1["transactionId"].native == init["transactionId"] == auth["transactionId"]
    assert signed1["serverAddress"].native == ADDRESS
    assert init["euiccCiPKIdToBeUsed"].dump() == b"\x04\x14" + pki.ci.pkid
    assert init["serverCertificate"].dump() == pki.dp_auth.cert_der
    assert auth["smdpCertificate"].dump() == pki.dp_pb.cert_der
    assert auth["smdpSigned2"]["ccRequiredFlag"].native is False
    assert auth["smdpSigned2"]["bppEuiccOtpk"].native is None  # never a re-bound BPP
    profile = smdp.store.profile_by_matching_id(matching_id)
    metadata, upp = euicc.install(steps.bpp["boundProfilePackage"])
    assert metadata == auth["profileMetadata"].dump()
    assert upp == smdp.store.upp(profile.iccid)
    assert euicc.smdp_oid == smdp.core.config.smdp_oid
    assert iccid_from_bcd(auth["profileMetadata"]["iccid"].native) == profile.iccid
    notifications = auth["profileMetadata"]["notificationConfigurationInfo"].native
    assert notifications == [{"profileManagementOperation": {"notificationEnable", "notificationDisable",
                                                             "notificationDelete"}, "notificationAddress": ADDRESS}]


def test_profile_type_metadata(smdp, euicc):
    smdp.store.put_profile_type(ProfileType(PROFILE_TYPE, "Kin Mobile", "Family basic", "operational",
                                            ppr=("ppr1",), notifications=(("notificationDelete", "mno.example"),)))
    auth = authenticate(smdp, euicc, released(smdp)).auth
    metadata = auth["profileMetadata"].native
    assert (metadata["serviceProviderName"], metadata["profileName"], metadata["profileClass"]) == (
        "Kin Mobile", "Family basic", "operational")
    assert metadata["profilePolicyRules"] == {"ppr1"}
    assert metadata["notificationConfigurationInfo"] == [
        {"profileManagementOperation": {"notificationDelete"}, "notificationAddress": "mno.example"}]


@pytest.mark.parametrize("curve", ["brp"])
def test_brainpool_download(tmp_path, curve):
    pki = test_pki(curve)
    smdp = make_smdp(tmp_path / "state", pki)
    euicc = EuiccSide(pki)
    steps = download(smdp, euicc, released(smdp))
    profile = smdp.store.profiles([ProfileState.DOWNLOADED])[0]
    assert euicc.install(steps.bpp["boundProfilePackage"])[1] == smdp.store.upp(profile.iccid)


def test_two_cis_choose_the_credentials_the_euicc_verifies(tmp_path):
    nist, brp = test_pki("nist"), test_pki("brp")
    store = Store.open(tmp_path / "state")
    clock = Clock()
    smdp = Smdp(SmdpCore(SmdpConfig.for_pkis([nist, brp], address=ADDRESS), store, clock=clock), store, clock)
    euicc = EuiccSide(brp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    assert init["serverCertificate"].dump() == brp.dp_auth.cert_der
    assert init["euiccCiPKIdToBeUsed"].native == brp.ci.pkid


def test_an_address_configured_with_a_port(tmp_path, euicc):
    store = Store.open(tmp_path / "state")
    clock = Clock()
    smdp = Smdp(SmdpCore(SmdpConfig.for_pkis([test_pki()], address="localhost:8443"), store, clock=clock), store, clock)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate(address="LOCALHOST:8443"))
    assert init["serverSigned1"]["serverAddress"].native == "localhost:8443"
    with pytest.raises(StatusCodeError) as info:
        smdp.call(INITIATE_AUTHENTICATION, euicc.initiate(address="localhost:8444"))
    assert info.value.code == status.INVALID_SMDP_ADDRESS


def test_a_fresh_bpp_for_every_session(smdp, euicc):
    matching_id = released(smdp)
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    first = download(smdp, euicc, matching_id)
    notify(smdp, euicc.installation_result(first.auth["transactionId"], iccid, error_reason=11))
    second = download(smdp, euicc, matching_id)
    isc = [s.bpp["boundProfilePackage"]["initialiseSecureChannelRequest"] for s in (first, second)]
    assert isc[0]["smdpOtpk"].native != isc[1]["smdpOtpk"].native
    assert isc[0]["transactionId"].native != isc[1]["transactionId"].native
    assert first.bpp["boundProfilePackage"]["sequenceOf86"].dump() != second.bpp["boundProfilePackage"]["sequenceOf86"].dump()


def test_seeded_rng_replays_transaction_and_challenge(tmp_path, euicc):
    clock = Clock()
    results = []
    for name in ("a", "b"):
        smdp = make_smdp(tmp_path / name, clock=clock, rng=seeded_rng())
        init = smdp.call(INITIATE_AUTHENTICATION, {**euicc.initiate(), "euiccChallenge": bytes(16)})
        results.append((init["transactionId"], init["serverSigned1"]["serverChallenge"].native))
    assert results[0] == results[1]


@given(code=st.text(min_size=1, max_size=20), tid=st.binary(min_size=1, max_size=16))
def test_stored_code_digest_matches_the_lpa_hash(code, tid):
    assert expected_hash_cc(confirmation_code_digest(code), tid) == hash_confirmation_code(code, tid)


# --- order and session states --------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "after"), [
    (11, ProfileState.RELEASED),  # installFailedDueToInterruption: try again
    (8, ProfileState.RELEASED),  # scp03tSecurityError
    (9, ProfileState.ERROR),  # installFailedDueToIccidAlreadyExistsOnEuicc: final
    (15, ProfileState.ERROR),  # pprNotAllowed: final
])
def test_installation_error_decides_the_order(smdp, euicc, reason, after):
    matching_id = released(smdp)
    steps = download(smdp, euicc, matching_id)
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    notify(smdp, euicc.installation_result(steps.auth["transactionId"], iccid, error_reason=reason))
    profile = smdp.store.profile(iccid)
    assert profile.state is after
    assert smdp.store.session(steps.auth["transactionId"]).state is SessionState.CLOSED
    if after is ProfileState.RELEASED:
        assert profile.download_eid is None
        download(smdp, euicc, matching_id)  # the retry succeeds


def test_newer_session_supersedes_an_unfinished_one(smdp, euicc):
    matching_id = released(smdp)
    old = authenticate(smdp, euicc, matching_id)
    new = authenticate(smdp, euicc, matching_id)
    assert smdp.store.session(old.auth["transactionId"]).state is SessionState.CLOSED
    with pytest.raises(StatusCodeError) as info:
        smdp.call(GET_BOUND_PROFILE_PACKAGE, {"transactionId": old.auth["transactionId"],
                                              "prepareDownloadResponse": euicc.prepare_download(old.auth)})
    assert info.value.code == status.TRANSACTION_ID_UNKNOWN
    bound = smdp.call(GET_BOUND_PROFILE_PACKAGE, {"transactionId": new.auth["transactionId"],
                                                  "prepareDownloadResponse": euicc.prepare_download(new.auth)})
    assert bound["boundProfilePackage"] is not None


def test_downloaded_profile_can_be_retried_by_the_same_euicc_only(smdp, euicc):
    matching_id = released(smdp)
    download(smdp, euicc, matching_id)  # BPP delivered, no installation result yet
    assert smdp.store.profile_by_matching_id(matching_id).state is ProfileState.DOWNLOADED
    download(smdp, euicc, matching_id)  # the same eUICC may try again
    pki = test_pki()
    neighbour = EuiccSide(pki, euicc=issue_euicc(pki.eum, OTHER_EID))  # same EUM, another EID
    before = snapshot(smdp.store)
    with pytest.raises(StatusCodeError) as info:
        authenticate(smdp, neighbour, matching_id)
    assert info.value.code == EID_REFUSED
    assert snapshot(smdp.store) == before


def test_default_smdp_address_finds_the_order_by_eid(smdp, euicc):
    iccid = smdp.orders.download_order(None, profile_type=PROFILE_TYPE, eid=EID)
    result = smdp.orders.confirm_order(None, iccid=iccid, matching_id="", release_flag=True)
    assert result["matchingId"] == "" and smdp.store.profile(iccid).matching_id is None
    for matching_id in ("", None):  # empty or absent matchingId in ctxParams1
        steps = download(smdp, euicc, matching_id)
        assert smdp.store.profile(iccid).current_tid == steps.auth["transactionId"]


def test_cancel_after_delivery_then_a_late_installation_result(smdp, euicc):
    matching_id = released(smdp)
    steps = download(smdp, euicc, matching_id)
    tid = steps.auth["transactionId"]
    smdp.call(CANCEL_SESSION, {"transactionId": tid, "cancelSessionResponse": euicc.cancel(tid, 1)})
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    assert smdp.store.profile(iccid).state is ProfileState.RELEASED
    notify(smdp, euicc.installation_result(tid, iccid))  # the card installed it after all
    assert smdp.store.profile(iccid).state is ProfileState.INSTALLED


def test_installation_result_for_another_iccid_is_ignored(smdp, euicc):
    matching_id = released(smdp)
    steps = download(smdp, euicc, matching_id)
    other = next(i for i in smdp.iccids if i != smdp.store.profile_by_matching_id(matching_id).iccid)
    before = snapshot(smdp.store)
    notify(smdp, euicc.installation_result(steps.auth["transactionId"], other))
    assert snapshot(smdp.store) == before


def test_order_cancelled_by_the_operator_ends_its_session(smdp, euicc):
    matching_id = released(smdp)
    steps = authenticate(smdp, euicc, matching_id)
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    smdp.orders.cancel_order(None, iccid=iccid)
    assert smdp.store.session(steps.auth["transactionId"]).state is SessionState.CLOSED
    assert smdp.store.profile(iccid).state is ProfileState.AVAILABLE and smdp.store.profile(iccid).matching_id is None


# --- durability ----------------------------------------------------------------------------------


def test_restart_keeps_orders_and_sessions(tmp_path, euicc):
    clock = Clock()
    smdp = make_smdp(tmp_path / "state", clock=clock)
    matching_id = released(smdp)
    steps = authenticate(smdp, euicc, matching_id)
    smdp.store.close()
    store = Store.open(tmp_path / "state")  # a new process: new connection, new core
    again = Smdp(SmdpCore(make_config(test_pki()), store, clock=clock), store, clock)
    bound = again.call(GET_BOUND_PROFILE_PACKAGE, {"transactionId": steps.auth["transactionId"],
                                                   "prepareDownloadResponse": euicc.prepare_download(steps.auth)})
    iccid = store.profile_by_matching_id(matching_id).iccid
    notify(again, euicc.installation_result(steps.auth["transactionId"], iccid))
    assert euicc.install(bound["boundProfilePackage"])[1] == store.upp(iccid)
    assert store.profile(iccid).state is ProfileState.INSTALLED


def test_a_failure_inside_a_step_rolls_everything_back(smdp, euicc, monkeypatch):
    steps = authenticate(smdp, euicc, released(smdp))
    before = snapshot(smdp.store)

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(core_module, "build_bound_profile_package", broken)
    prepared = euicc.prepare_download(steps.auth)
    request = {"transactionId": steps.auth["transactionId"], "prepareDownloadResponse": prepared}
    with pytest.raises(RuntimeError):
        smdp.call(GET_BOUND_PROFILE_PACKAGE, request)
    assert snapshot(smdp.store) == before
    assert not smdp.store.otpk_used(crypto.public_key_bytes(euicc.otsk))
    assert smdp.store.session(steps.auth["transactionId"]).state is SessionState.AUTHENTICATED
    monkeypatch.undo()
    assert smdp.call(GET_BOUND_PROFILE_PACKAGE, request)["boundProfilePackage"] is not None


# --- notifications and operator reports ----------------------------------------------------------


class RecordingHooks(OrderHooks):
    def __init__(self):
        self.events = []

    def order_changed(self, profile, previous):
        self.events.append(("changed", profile.iccid, previous.value, profile.state.value))

    def notification_received(self, eid, operations, iccid):
        self.events.append(("notification", eid, sorted(operations), iccid))


def test_other_notifications_are_verified_and_deduplicated(smdp, euicc):
    hooks = RecordingHooks()
    smdp.core.orders.hooks = hooks
    iccid = smdp.iccids[0]
    notification = euicc.other_notification(iccid, "notificationDelete")
    for _ in range(2):
        assert notify(smdp, notification) == {}
    assert hooks.events == [("notification", EID, ["notificationDelete"], iccid)]
    assert notify(smdp, euicc.other_notification(iccid, key=crypto.generate_private_key())) == {}
    assert len(hooks.events) == 1
    assert [n["operation"] for n in smdp.store.notifications(EID)] == ["notificationDelete"]


def test_hooks_see_every_order_transition(smdp, euicc):
    hooks = RecordingHooks()
    smdp.core.orders.hooks = hooks
    matching_id = released(smdp)
    steps = download(smdp, euicc, matching_id)
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    notify(smdp, euicc.installation_result(steps.auth["transactionId"], iccid))
    assert [e[2:] for e in hooks.events if e[0] == "changed"] == [
        ("Available", "Allocated"), ("Allocated", "Released"), ("Released", "Downloaded"), ("Downloaded", "Installed")]


def _reports(smdp):
    return [(e["payload"]["notificationPointId"], e["payload"]["notificationPointStatus"]) for e in smdp.store.outbox()]


def test_progress_reports_for_the_operator(smdp, euicc):
    matching_id = operator_order(smdp)
    steps = download(smdp, euicc, matching_id)
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    pir = euicc.installation_result(steps.auth["transactionId"], iccid)
    notify(smdp, pir)
    ok = {"status": "Executed-Success"}
    assert _reports(smdp) == [(1, ok), (3, ok), (4, ok)]
    last = smdp.store.outbox()[-1]
    payload = last["payload"]
    assert last["requester"] == OPERATOR
    assert payload["header"]["functionRequesterIdentifier"] == smdp.core.config.smdp_oid
    assert (payload["iccid"], payload["eid"], payload["profileType"]) == (iccid, EID, PROFILE_TYPE)
    assert base64.b64decode(payload["resultData"]) == pir.chosen.dump()
    assert payload["timestamp"].endswith("Z")


def test_confirmation_failure_and_cancellation_are_reported(smdp, euicc):
    matching_id = operator_order(smdp, confirmation_code="1234")
    steps = authenticate(smdp, euicc, matching_id)
    tid = steps.auth["transactionId"]
    with pytest.raises(StatusCodeError):
        smdp.call(GET_BOUND_PROFILE_PACKAGE, {"transactionId": tid,
                                              "prepareDownloadResponse": euicc.prepare_download(steps.auth, "9999")})
    smdp.call(CANCEL_SESSION, {"transactionId": tid, "cancelSessionResponse": euicc.cancel(tid, 0)})
    reports = _reports(smdp)
    assert [point for point, _ in reports] == [1, 2, 1]
    assert reports[1][1]["statusCodeData"]["subjectCode"] == "8.2.7"
    assert reports[1][1]["statusCodeData"]["reasonCode"] == "3.8"
    assert reports[2][1]["statusCodeData"]["subjectCode"] == status.CANCEL_END_USER_REJECTION.subject


def test_profile_notifications_are_forwarded_to_the_owner(smdp, euicc):
    matching_id = operator_order(smdp)
    steps = download(smdp, euicc, matching_id)
    iccid = smdp.store.profile_by_matching_id(matching_id).iccid
    notify(smdp, euicc.installation_result(steps.auth["transactionId"], iccid))
    deleted = euicc.other_notification(iccid, "notificationDelete")
    notify(smdp, deleted)
    last = smdp.store.outbox()[-1]["payload"]
    assert last["notificationPointId"] == 5 and last["eid"] == EID and last["iccid"] == iccid
    forwarded = m.decode(m.OtherSignedNotification, base64.b64decode(last["resultData"]))
    assert forwarded.dump() == deleted.chosen.dump()  # the eUICC's signed bytes, unchanged
    notify(smdp, euicc.other_notification(smdp.iccids[2], "notificationDelete"))  # nobody's order: not sent
    assert len(smdp.store.outbox()) == 4


def test_refused_eligibility_is_reported_without_changing_the_order(smdp, euicc):
    iccid = smdp.orders.download_order(OPERATOR, profile_type=PROFILE_TYPE, eid=OTHER_EID)
    matching_id = smdp.orders.confirm_order(OPERATOR, iccid=iccid, release_flag=True)["matchingId"]
    before = snapshot(smdp.store)
    with pytest.raises(StatusCodeError) as info:
        authenticate(smdp, euicc, matching_id)
    assert info.value.code == EID_REFUSED and snapshot(smdp.store) == before
    (point, point_status), = _reports(smdp)
    assert point == 1 and point_status["statusCodeData"]["subjectCode"] == "8.1.1"


def test_local_orders_are_not_reported(smdp, euicc):
    download(smdp, euicc, released(smdp))
    assert smdp.store.outbox() == []


def test_transaction_ids_are_unique_even_if_the_rng_repeats(tmp_path, euicc):
    repeating = iter([bytes(16), bytes(16), b"\x01" * 16] + [os.urandom(16) for _ in range(10)])
    smdp = make_smdp(tmp_path / "state", rng=lambda n: next(repeating)[:n] if n == 16 else os.urandom(n))
    first = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    second = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    assert first["transactionId"] != second["transactionId"]


def test_authenticate_client_response_is_signed_over_euicc_signature1(smdp, euicc):
    matching_id = released(smdp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    response = euicc.authenticate_server(init, matching_id)
    auth = smdp.call(AUTHENTICATE_CLIENT, {"transactionId": init["transactionId"], "authenticateServerResponse": response})
    dp_pb = test_pki().dp_pb.cert.public_key()
    covered = auth["smdpSigned2"].dump() + response.chosen["euiccSignature1"].dump()
    assert crypto.verify(dp_pb, covered, auth["smdpSignature2"].native)
    assert not crypto.verify(dp_pb, auth["smdpSigned2"].dump(), auth["smdpSignature2"].native)
