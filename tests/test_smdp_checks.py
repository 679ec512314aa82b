"""Every SM-DP+ check of SGP.22 3.1.2, 3.1.3 and 5.6, driven twice: on the sans-IO core and through
the real HTTPS API (CI as the only trust anchor). Each refusal carries the spec's
subjectCode/reasonCode and leaves orders and inventory unchanged, or counts/blocks where the spec
says so."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from certs.pki import issue_euicc, issue_eum, new_private_key
from rsp import crypto, status
from rsp.errors import StatusCode, StatusCodeError
from rsp.es9_json import (
    AUTHENTICATE_CLIENT,
    CANCEL_SESSION,
    GET_BOUND_PROFILE_PACKAGE,
    INITIATE_AUTHENTICATION,
)
from rsp.ids import make_eid
from smdp.core import (
    DPAUTH_UNAVAILABLE,
    EID_REFUSED,
    EUICC_REPORTED_ERROR,
    PROFILE_NOT_RELEASED,
    SMDP_OID_INVALID,
)
from smdp.store import ProfileState, SessionState
from tests.smdp_fixtures import (
    EID,
    OTHER_EID,
    PROFILE_TYPE,
    EuiccSide,
    authenticate,
    download,
    make_smdp,
    notify,
    reissue,
    serve,
    snapshot,
    test_pki,
    with_serial_number,
)

MAX_DOWNLOADS = 2
MAX_CC = 3
TTL = timedelta(days=30)
TIMEOUT = timedelta(minutes=5)


@pytest.fixture(params=["core", "https"])
def smdp(request, tmp_path):
    base = make_smdp(tmp_path / "state", max_download_attempts=MAX_DOWNLOADS, max_cc_attempts=MAX_CC,
                     order_ttl=TTL, session_timeout=TIMEOUT)
    if request.param == "core":
        yield base
    else:
        http = serve(base)
        yield http
        http.server.stop()
    base.store.close()


@pytest.fixture
def euicc():
    return EuiccSide(test_pki())


def order(smdp, **kwargs) -> str:
    """A released order for a profile of the test type; returns its matching ID."""
    profile, result = smdp.orders.create_order(profile_type=PROFILE_TYPE, release=True, **kwargs)
    return result["matchingId"]


def refused(code: StatusCode, call, *args, **kwargs) -> StatusCodeError:
    with pytest.raises(StatusCodeError) as info:
        call(*args, **kwargs)
    assert (info.value.subject_code, info.value.reason_code) == (code.subject, code.reason), info.value
    assert info.value.message  # a sentence for people
    return info.value


def session_count(smdp) -> int:
    return smdp.store.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]


def the_profile(smdp, matching_id: str):
    return smdp.store.profile_by_matching_id(matching_id)


# --- InitiateAuthentication (5.6.1) ----------------------------------------------------------------


@pytest.mark.parametrize(("change", "code"), [
    ({"address": "other.example"}, status.INVALID_SMDP_ADDRESS),
    ({"svn": b"\x03\x00\x00"}, status.SVN_UNSUPPORTED),
    ({"signing": [bytes(20)]}, status.SECURITY_CONFIG_UNSUPPORTED),
    ({"verification": [bytes(20)]}, DPAUTH_UNAVAILABLE),
])
def test_initiate_authentication_checks(smdp, euicc, change, code):
    order(smdp)
    before = snapshot(smdp.store)
    refused(code, smdp.call, INITIATE_AUTHENTICATION, euicc.initiate(**change))
    assert session_count(smdp) == 0
    assert snapshot(smdp.store) == before


def test_initiate_authentication_needs_a_16_byte_challenge(smdp, euicc):
    request = {**euicc.initiate(), "euiccChallenge": bytes(15)}
    refused(status.INVALID_REQUEST, smdp.call, INITIATE_AUTHENTICATION, request)
    assert session_count(smdp) == 0


@pytest.mark.parametrize(("given", "signed"), [("LocalHost", "localhost"), ("localhost:8443", "localhost:8443")])
def test_initiate_authentication_accepts_our_address(smdp, euicc, given, signed):
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate(address=given))
    assert init["serverSigned1"]["serverAddress"].native == signed
    assert len(init["transactionId"]) == 16 and session_count(smdp) == 1


@pytest.mark.parametrize("given", ["localhost:", "localhost:x", "localhost.evil", "host:localhost"])
def test_initiate_authentication_refuses_look_alike_addresses(smdp, euicc, given):
    refused(status.INVALID_SMDP_ADDRESS, smdp.call, INITIATE_AUTHENTICATION, euicc.initiate(address=given))


# --- AuthenticateClient (5.6.3) --------------------------------------------------------------------


def _other_pki_euicc(pki):
    other = test_pki("nist", eid=make_eid("890490320000000000000000000077"))
    return {"euicc_cert": other.euicc.cert, "eum_cert": other.eum.cert, "key": other.euicc.signing_key()}


def _expired_eum(pki):
    past = pki.ci.cert.not_valid_before_utc - timedelta(days=365 * 40)
    eum = issue_eum(pki.ci, now=past)
    euicc = issue_euicc(eum, EID, now=past)
    return {"euicc_cert": euicc.cert, "eum_cert": eum.cert, "key": euicc.signing_key()}


def _outside_ein(pki):
    subject = with_serial_number(pki.euicc.cert.subject, make_eid("891234560000000000000000000001"))
    return {"euicc_cert": reissue(pki.euicc.cert, pki.eum.signing_key(), subject=subject)}


def _expired_euicc(pki):
    start = pki.euicc.cert.not_valid_before_utc
    return {"euicc_cert": reissue(pki.euicc.cert, pki.eum.signing_key(), not_before=start - timedelta(days=2),
                                  not_after=start - timedelta(days=1))}


AUTHENTICATE_CASES = {
    "EUM under another CI": (_other_pki_euicc, status.CI_PK_UNKNOWN),
    "forged EUM certificate": (lambda p: {"eum_cert": reissue(p.eum.cert, new_private_key())}, status.EUM_CERT_INVALID),
    "expired EUM certificate": (_expired_eum, status.EUM_CERT_EXPIRED),
    "forged eUICC certificate": (lambda p: {"euicc_cert": reissue(p.euicc.cert, new_private_key())},
                                 status.EUICC_CERT_INVALID),
    "EID outside the EUM's prefix": (_outside_ein, status.EUICC_CERT_INVALID),
    "expired eUICC certificate": (_expired_euicc, status.EUICC_CERT_EXPIRED),
    "euiccSignature1 by another key": (lambda p: {"key": new_private_key()}, status.EUICC_SIGNATURE_INVALID),
    "euiccSigned1 changed after signing": (lambda p: {"signed_bytes_change": True}, status.EUICC_SIGNATURE_INVALID),
    "another serverChallenge": (lambda p: {"server_challenge": os.urandom(16)}, status.EUICC_SIGNATURE_INVALID),
    "another transactionId inside": (lambda p: {"transaction_id": os.urandom(16)}, status.TRANSACTION_ID_UNKNOWN),
    "unknown matching ID": (lambda p: {"matching_id": "NO-SUCH-ORDER"}, status.MATCHING_ID_REFUSED),
    "no matching ID and no order for the EID": (lambda p: {"matching_id": ""}, status.MATCHING_ID_REFUSED),
}


@pytest.mark.parametrize("case", AUTHENTICATE_CASES)
def test_authenticate_client_checks(smdp, euicc, case):
    matching_id = order(smdp)
    change, code = AUTHENTICATE_CASES[case]
    tamper = change(test_pki())
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    response = euicc.authenticate_server(init, tamper.pop("matching_id", matching_id), **tamper)
    before = snapshot(smdp.store)
    refused(code, smdp.call, AUTHENTICATE_CLIENT,
            {"transactionId": init["transactionId"], "authenticateServerResponse": response})
    assert snapshot(smdp.store) == before
    assert smdp.store.session(init["transactionId"]).state is SessionState.INITIATED


def test_authenticate_client_unknown_transaction(smdp, euicc):
    matching_id = order(smdp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    response = euicc.authenticate_server(init, matching_id)
    before = snapshot(smdp.store)
    refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, AUTHENTICATE_CLIENT,
            {"transactionId": os.urandom(16), "authenticateServerResponse": response})
    assert snapshot(smdp.store) == before


@pytest.mark.parametrize(("kwargs", "release", "code"), [
    ({}, False, PROFILE_NOT_RELEASED),
    ({"eid": OTHER_EID}, True, EID_REFUSED),
])
def test_authenticate_client_order_checks(smdp, euicc, kwargs, release, code):
    profile, result = smdp.orders.create_order(profile_type=PROFILE_TYPE, release=release, **kwargs)
    before = snapshot(smdp.store)
    refused(code, authenticate, smdp, euicc, result["matchingId"])
    assert snapshot(smdp.store) == before


def test_expired_order(smdp, euicc):
    matching_id = order(smdp)
    smdp.clock.advance(days=TTL.days + 1)
    before = snapshot(smdp.store)
    refused(status.DOWNLOAD_ORDER_EXPIRED, authenticate, smdp, euicc, matching_id)
    assert snapshot(smdp.store) == before


def test_download_attempt_limit_blocks_the_order(smdp, euicc):
    matching_id = order(smdp)
    for _ in range(MAX_DOWNLOADS):
        authenticate(smdp, euicc, matching_id)
    assert the_profile(smdp, matching_id).download_attempts == MAX_DOWNLOADS
    refused(status.DOWNLOAD_ATTEMPTS_EXCEEDED, authenticate, smdp, euicc, matching_id)
    profile = the_profile(smdp, matching_id)
    assert profile.state is ProfileState.ERROR and "download attempts" in profile.error
    refused(status.MATCHING_ID_REFUSED, authenticate, smdp, euicc, matching_id)  # blocked for good


def test_authenticate_server_error_ends_the_session(smdp, euicc):
    matching_id = order(smdp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    before = snapshot(smdp.store)
    error = refused(EUICC_REPORTED_ERROR, smdp.call, AUTHENTICATE_CLIENT, {
        "transactionId": init["transactionId"],
        "authenticateServerResponse": euicc.authenticate_error(init["transactionId"], code=2)})
    assert "invalidSignature" in error.message
    assert snapshot(smdp.store) == before
    refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, AUTHENTICATE_CLIENT, {
        "transactionId": init["transactionId"],
        "authenticateServerResponse": euicc.authenticate_server(init, matching_id)})


def test_each_step_runs_once_and_in_order(smdp, euicc):
    matching_id = order(smdp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    response = euicc.authenticate_server(init, matching_id)
    refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, GET_BOUND_PROFILE_PACKAGE, {  # skipping a step
        "transactionId": init["transactionId"], "prepareDownloadResponse": euicc.download_error(init["transactionId"])})
    request = {"transactionId": init["transactionId"], "authenticateServerResponse": response}
    auth = smdp.call(AUTHENTICATE_CLIENT, request)
    after_first = snapshot(smdp.store)
    refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, AUTHENTICATE_CLIENT, request)  # replayed
    assert snapshot(smdp.store) == after_first
    prepare = {"transactionId": auth["transactionId"], "prepareDownloadResponse": euicc.prepare_download(auth)}
    smdp.call(GET_BOUND_PROFILE_PACKAGE, prepare)
    after_bpp = snapshot(smdp.store)
    refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, GET_BOUND_PROFILE_PACKAGE, prepare)
    assert snapshot(smdp.store) == after_bpp


def test_session_timeout(smdp, euicc):
    matching_id = order(smdp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    response = euicc.authenticate_server(init, matching_id)
    smdp.clock.advance(seconds=TIMEOUT.total_seconds() + 1)
    before = snapshot(smdp.store)
    error = refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, AUTHENTICATE_CLIENT,
                    {"transactionId": init["transactionId"], "authenticateServerResponse": response})
    assert "timed out" in error.message
    assert snapshot(smdp.store) == before


# --- GetBoundProfilePackage (5.6.2) ----------------------------------------------------------------


@pytest.mark.parametrize(("tamper", "code"), [
    ({"key": "random"}, status.EUICC_SIGNATURE_INVALID),
    ({"transaction_id": "random"}, status.TRANSACTION_ID_UNKNOWN),
])
def test_get_bound_profile_package_checks(smdp, euicc, tamper, code):
    steps = authenticate(smdp, euicc, order(smdp))
    tamper = {k: new_private_key() if k == "key" else os.urandom(16) for k in tamper}
    before = snapshot(smdp.store)
    refused(code, smdp.call, GET_BOUND_PROFILE_PACKAGE, {
        "transactionId": steps.auth["transactionId"], "prepareDownloadResponse": euicc.prepare_download(steps.auth, **tamper)})
    assert snapshot(smdp.store) == before
    good = smdp.call(GET_BOUND_PROFILE_PACKAGE, {  # the session is still usable by the genuine eUICC
        "transactionId": steps.auth["transactionId"], "prepareDownloadResponse": euicc.prepare_download(steps.auth)})
    assert good["boundProfilePackage"] is not None


def test_confirmation_code_missing_is_not_counted(smdp, euicc):
    matching_id = order(smdp, confirmation_code="2468")
    steps = authenticate(smdp, euicc, matching_id)
    assert steps.auth["smdpSigned2"]["ccRequiredFlag"].native is True
    before = snapshot(smdp.store)
    refused(status.CC_MISSING, smdp.call, GET_BOUND_PROFILE_PACKAGE, {
        "transactionId": steps.auth["transactionId"], "prepareDownloadResponse": euicc.prepare_download(steps.auth)})
    assert snapshot(smdp.store) == before


def test_wrong_confirmation_codes_count_then_block(smdp, euicc):
    matching_id = order(smdp, confirmation_code="2468")
    steps = authenticate(smdp, euicc, matching_id)

    def get_bpp(code):
        return smdp.call(GET_BOUND_PROFILE_PACKAGE, {"transactionId": steps.auth["transactionId"],
                                                     "prepareDownloadResponse": euicc.prepare_download(steps.auth, code)})

    for attempt in range(1, MAX_CC):
        refused(status.CC_REFUSED, get_bpp, "1111")
        profile = the_profile(smdp, matching_id)
        assert (profile.state, profile.cc_attempts) == (ProfileState.RELEASED, attempt)
    refused(status.CC_RETRIES_EXCEEDED, get_bpp, "1111")
    profile = the_profile(smdp, matching_id)
    assert profile.state is ProfileState.ERROR and profile.cc_attempts == MAX_CC
    refused(status.TRANSACTION_ID_UNKNOWN, get_bpp, "2468")  # the session ended with the order
    refused(status.MATCHING_ID_REFUSED, authenticate, smdp, euicc, matching_id)


def test_right_confirmation_code_after_a_wrong_one(smdp, euicc):
    matching_id = order(smdp, confirmation_code="2468")
    steps = authenticate(smdp, euicc, matching_id)
    request = {"transactionId": steps.auth["transactionId"]}
    refused(status.CC_REFUSED, smdp.call, GET_BOUND_PROFILE_PACKAGE,
            {**request, "prepareDownloadResponse": euicc.prepare_download(steps.auth, "0000")})
    bound = smdp.call(GET_BOUND_PROFILE_PACKAGE,
                      {**request, "prepareDownloadResponse": euicc.prepare_download(steps.auth, "2468")})
    assert euicc.install(bound["boundProfilePackage"])[1] == smdp.store.upp(the_profile(smdp, matching_id).iccid)


def test_one_time_key_of_the_euicc_is_never_reused(smdp, euicc):
    matching_id = order(smdp)
    first = download(smdp, euicc, matching_id)
    reused = euicc.otsk
    notify(smdp, euicc.installation_result(first.auth["transactionId"], the_profile(smdp, matching_id).iccid,
                                           error_reason=11))  # interrupted: a retry is allowed
    assert the_profile(smdp, matching_id).state is ProfileState.RELEASED
    steps = authenticate(smdp, euicc, matching_id)
    before = snapshot(smdp.store)
    refused(status.PROFILE_UNAVAILABLE, smdp.call, GET_BOUND_PROFILE_PACKAGE, {  # 8.2 3.7 no new binding
        "transactionId": steps.auth["transactionId"],
        "prepareDownloadResponse": euicc.prepare_download(steps.auth, otsk=reused)})
    assert snapshot(smdp.store) == before


def test_prepare_download_error_ends_the_session(smdp, euicc):
    matching_id = order(smdp)
    steps = authenticate(smdp, euicc, matching_id)
    before = snapshot(smdp.store)
    refused(EUICC_REPORTED_ERROR, smdp.call, GET_BOUND_PROFILE_PACKAGE, {
        "transactionId": steps.auth["transactionId"],
        "prepareDownloadResponse": euicc.download_error(steps.auth["transactionId"])})
    assert snapshot(smdp.store) == before
    assert smdp.store.session(steps.auth["transactionId"]).state is SessionState.CLOSED
    download(smdp, euicc, matching_id)  # a new session can still succeed


# --- CancelSession (5.6.5) -------------------------------------------------------------------------


@pytest.mark.parametrize(("tamper", "code"), [
    ({"key": "random"}, status.EUICC_SIGNATURE_INVALID),
    ({"smdp_oid": "2.999.99"}, SMDP_OID_INVALID),
    ({"signed_transaction_id": "random"}, status.TRANSACTION_ID_UNKNOWN),
])
def test_cancel_session_checks(smdp, euicc, tamper, code):
    steps = authenticate(smdp, euicc, order(smdp))
    tamper = {k: new_private_key() if v == "random" and k == "key" else os.urandom(16) if v == "random" else v
              for k, v in tamper.items()}
    before = snapshot(smdp.store)
    tid = steps.auth["transactionId"]
    refused(code, smdp.call, CANCEL_SESSION, {"transactionId": tid, "cancelSessionResponse": euicc.cancel(tid, **tamper)})
    assert snapshot(smdp.store) == before
    assert smdp.store.session(tid).state is SessionState.AUTHENTICATED


def test_cancel_session_unknown_or_unauthenticated(smdp, euicc):
    order(smdp)
    init = smdp.call(INITIATE_AUTHENTICATION, euicc.initiate())
    for tid in (os.urandom(16), init["transactionId"]):
        refused(status.TRANSACTION_ID_UNKNOWN, smdp.call, CANCEL_SESSION,
                {"transactionId": tid, "cancelSessionResponse": euicc.cancel(tid)})


@pytest.mark.parametrize(("reason", "after"), [
    (1, ProfileState.RELEASED),  # postponed: a later attempt may succeed
    (2, ProfileState.RELEASED),  # timeout
    (0, ProfileState.ERROR),  # endUserRejection: the user said no
    (3, ProfileState.ERROR),  # pprNotAllowed
])
def test_cancel_session_reason_decides_the_order(smdp, euicc, reason, after):
    matching_id = order(smdp)
    steps = download(smdp, euicc, matching_id)
    tid = steps.auth["transactionId"]
    assert smdp.call(CANCEL_SESSION, {"transactionId": tid, "cancelSessionResponse": euicc.cancel(tid, reason)}) == {}
    assert the_profile(smdp, matching_id).state is after
    assert smdp.store.session(tid).state is SessionState.CLOSED


# --- HandleNotification (5.6.4) and the acceptance criterion ---------------------------------------


def test_installed_after_the_notification_and_second_download_refused(smdp, euicc):
    matching_id = order(smdp)
    steps = download(smdp, euicc, matching_id)
    profile = the_profile(smdp, matching_id)
    metadata, upp = euicc.install(steps.bpp["boundProfilePackage"])
    assert upp == smdp.store.upp(profile.iccid) and profile.state is ProfileState.DOWNLOADED
    assert notify(smdp, euicc.installation_result(steps.auth["transactionId"], profile.iccid)) == {}
    assert the_profile(smdp, matching_id).state is ProfileState.INSTALLED
    before = snapshot(smdp.store)
    refused(status.MATCHING_ID_REFUSED, authenticate, smdp, euicc, matching_id)
    assert snapshot(smdp.store) == before


def test_notification_with_a_bad_signature_is_acknowledged_and_ignored(smdp, euicc):
    matching_id = order(smdp)
    steps = download(smdp, euicc, matching_id)
    profile = the_profile(smdp, matching_id)
    before = snapshot(smdp.store)
    forged = euicc.installation_result(steps.auth["transactionId"], profile.iccid, key=new_private_key())
    assert notify(smdp, forged) == {}
    assert snapshot(smdp.store) == before


def test_duplicate_notification_is_idempotent(smdp, euicc):
    matching_id = order(smdp)
    steps = download(smdp, euicc, matching_id)
    pir = euicc.installation_result(steps.auth["transactionId"], the_profile(smdp, matching_id).iccid)
    notify(smdp, pir)
    after = snapshot(smdp.store)
    assert notify(smdp, pir) == {}
    assert snapshot(smdp.store) == after


def test_otpk_table_holds_both_one_time_keys(smdp, euicc):
    steps = download(smdp, euicc, order(smdp))
    smdp_otpk = steps.bpp["boundProfilePackage"]["initialiseSecureChannelRequest"]["smdpOtpk"].native
    assert smdp.store.otpk_used(crypto.public_key_bytes(euicc.otsk)) and smdp.store.otpk_used(smdp_otpk)


def test_order_eid_binding_accepts_the_right_euicc(smdp, euicc):
    matching_id = order(smdp, eid=EID)
    download(smdp, euicc, matching_id)
    assert the_profile(smdp, matching_id).download_eid == EID == euicc.eid
