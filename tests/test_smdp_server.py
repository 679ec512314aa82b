"""The SM-DP+ HTTPS edges: the SGP.22 6.5 binding rules of ES9+, TLS with CERT.DPtls, ES2+ with
operator client certificates, and HandleDownloadProgressInfo callbacks with retries."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error

import pytest
from cryptography import x509

from certs.pki import generate_pki
from rsp import es9_json, status
from rsp.es9_json import ADMIN_PROTOCOL, CONTENT_TYPE, INITIATE_AUTHENTICATION
from smdp import es2_json
from tests.smdp_fixtures import (
    PROFILE_TYPE,
    EuiccSide,
    LoopThread,
    OperatorPki,
    OperatorServer,
    client_context,
    download,
    make_smdp,
    notify,
    post,
    serve,
    test_pki,
)

MNO = "mno1"


@pytest.fixture
def http(tmp_path):
    smdp = serve(make_smdp(tmp_path / "state"))
    yield smdp
    smdp.server.stop()
    smdp.store.close()


def es9(http, path: str, body, headers=None, method="POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return post(http.server.urls["es9"] + path, data, http.context, headers, method)


def status_of(data: bytes) -> tuple[str, str]:
    scd = json.loads(data)["header"]["functionExecutionStatus"]["statusCodeData"]
    return scd["subjectCode"], scd["reasonCode"]


def initiate_body(**change) -> dict:
    body = es9_json.encode_request(INITIATE_AUTHENTICATION, EuiccSide(test_pki()).initiate())
    body.update(change)
    return {k: v for k, v in body.items() if v is not None}


# --- ES9+ binding (SGP.22 6.5) ---------------------------------------------------------------------


@pytest.mark.parametrize(("body", "headers", "code"), [
    (initiate_body(euiccInfo1=None), {}, status.MANDATORY_ELEMENT_MISSING),
    (initiate_body(euiccInfo1="not base64!"), {}, status.INVALID_REQUEST),
    (initiate_body(euiccInfo1=base64.b64encode(b"\xbf\x20\x03\x01\x01\x00").decode()), {}, status.INVALID_REQUEST),
    (initiate_body(smdpAddress=42), {}, status.INVALID_REQUEST),
    (b"{not json", {}, status.INVALID_REQUEST),
    (b"\xff\xfe", {}, status.INVALID_REQUEST),
    (initiate_body(), {"X-Admin-Protocol": None}, status.UNSUPPORTED_PROTOCOL_VERSION),
    (initiate_body(), {"X-Admin-Protocol": "gsma/rsp/v3.0.0"}, status.UNSUPPORTED_PROTOCOL_VERSION),
    (initiate_body(), {"Content-Type": "text/plain"}, status.INVALID_REQUEST),
])
def test_malformed_requests_get_status_code_data(http, body, headers, code):
    status_code, response_headers, data = es9(http, INITIATE_AUTHENTICATION.path, body, headers)
    assert status_code == 200
    assert response_headers["Content-Type"] == CONTENT_TYPE
    assert response_headers["X-Admin-Protocol"] == ADMIN_PROTOCOL
    assert json.loads(data)["header"]["functionExecutionStatus"]["status"] == "Failed"
    assert status_of(data) == (code.subject, code.reason)
    assert http.store.conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_success_headers_and_body(http):
    status_code, headers, data = es9(http, INITIATE_AUTHENTICATION.path, initiate_body())
    assert status_code == 200 and headers["X-Admin-Protocol"] == ADMIN_PROTOCOL
    body = json.loads(data)
    assert body["header"] == {"functionExecutionStatus": {"status": "Executed-Success"}}
    assert body["transactionId"] == body["transactionId"].upper() and len(body["transactionId"]) == 32
    assert base64.b64decode(body["serverSignature1"])[:3] == b"\x5f\x37\x40"


def test_unknown_path_and_wrong_method(http):
    assert es9(http, "/gsma/rsp2/es9plus/noSuchFunction", initiate_body())[0] == 404
    assert es9(http, INITIATE_AUTHENTICATION.path, b"", method="GET")[0] == 405


def test_internal_errors_are_not_shown(http, monkeypatch):
    def explode(function, request):
        raise RuntimeError("secret stack detail")

    monkeypatch.setattr(http.core, "handle", explode)
    status_code, _, data = es9(http, INITIATE_AUTHENTICATION.path, initiate_body())
    assert status_code == 200 and status_of(data) == (status.EXECUTION_ERROR.subject, status.EXECUTION_ERROR.reason)
    assert b"secret" not in data and b"Traceback" not in data


def test_handle_notification_answers_204(http):
    euicc = EuiccSide(test_pki())
    assert notify(http, euicc.other_notification(http.iccids[0])) == {}  # HttpSmdp.call checks 204 and no body


def test_only_the_ci_makes_the_server_trusted(http):
    stranger = generate_pki("nist", smdp_address="localhost")
    with pytest.raises(urllib.error.URLError) as info:
        post(http.server.urls["es9"] + INITIATE_AUTHENTICATION.path, b"{}", client_context(stranger))
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)


def test_full_download_over_https(http):
    euicc = EuiccSide(test_pki())
    profile, result = http.orders.create_order(profile_type=PROFILE_TYPE, release=True)
    steps = download(http, euicc, result["matchingId"])
    assert euicc.install(steps.bpp["boundProfilePackage"])[1] == http.store.upp(profile.iccid)
    notify(http, euicc.installation_result(steps.auth["transactionId"], profile.iccid))
    assert http.store.profile(profile.iccid).state.value == "Installed"


# --- ES2+ with operator client certificates --------------------------------------------------------


@pytest.fixture
def operator():
    return OperatorPki()


@pytest.fixture
def callbacks(operator):
    thread = LoopThread()
    server = OperatorServer(thread, operator, test_pki().ci, statuses=[500])
    yield server
    thread.stop()


@pytest.fixture
def es2(tmp_path, operator, callbacks):
    smdp = make_smdp(tmp_path / "state", es2_client_ca=operator.save_ca(tmp_path / "operator-ca.pem"),
                     operators={MNO: callbacks.url}, callback_backoff=0.01)
    http = serve(smdp, es2=True)
    yield http
    http.server.stop()
    http.store.close()


def es2_call(http, function, args, context, requester=MNO):
    body = es2_json.encode_request(function, es2_json.RequestHeader(requester, "call-1"), args)
    status_code, headers, data = post(http.server.urls["es2"] + function.path, json.dumps(body).encode(), context)
    assert status_code == 200 and headers["X-Admin-Protocol"] == ADMIN_PROTOCOL
    return json.loads(data)


def test_es2_order_download_and_progress_callbacks(es2, operator, callbacks, tmp_path):
    context = client_context(test_pki(), operator.client(MNO), tmp_path)
    iccid = es2_json.decode_response(es2_json.DOWNLOAD_ORDER, es2_call(
        es2, es2_json.DOWNLOAD_ORDER, {"profile_type": PROFILE_TYPE}, context))["iccid"]
    confirmed = es2_json.decode_response(es2_json.CONFIRM_ORDER, es2_call(
        es2, es2_json.CONFIRM_ORDER, {"iccid": iccid, "release_flag": True, "confirmation_code": "777"}, context))
    assert confirmed["smdpAddress"] == "localhost"
    euicc = EuiccSide(test_pki())
    steps = download(es2, euicc, confirmed["matchingId"], code="777")
    notify(es2, euicc.installation_result(steps.auth["transactionId"], iccid))
    first = callbacks.next()
    assert first[0] == 500  # refused once: delivered again after the backoff
    received = [callbacks.next() for _ in range(3)]
    assert [body["notificationPointId"] for _, body, _, _ in received] == [1, 3, 4]
    assert received[0][1] == first[1]  # the same call, retried
    assert all(body["iccid"] == iccid and body["notificationPointStatus"]["status"] == "Executed-Success"
               for _, body, _, _ in received)
    assert received[0][2] == ADMIN_PROTOCOL
    assert x509.load_der_x509_certificate(received[0][3]) == test_pki().dp_tls.cert  # mutual TLS with DPtls
    first_entry, second_entry = es2.store.outbox()[:2]  # committed before the next one was sent
    assert (first_entry["state"], first_entry["attempts"], first_entry["last_error"]) == ("delivered", 2, "HTTP 500")
    assert second_entry["state"] == "delivered"


def test_es2_requires_a_client_certificate(es2, tmp_path):
    with pytest.raises(OSError):  # handshake refused or connection reset
        es2_call(es2, es2_json.DOWNLOAD_ORDER, {"profile_type": PROFILE_TYPE}, client_context(test_pki()))
    stranger = OperatorPki("Another CA").client(MNO)
    with pytest.raises(OSError):  # handshake refused or connection reset
        es2_call(es2, es2_json.DOWNLOAD_ORDER, {"profile_type": PROFILE_TYPE},
                 client_context(test_pki(), stranger, tmp_path))
    assert all(p.state.value == "Available" for p in es2.store.profiles())


def test_es2_requester_must_match_the_certificate(es2, operator, tmp_path):
    context = client_context(test_pki(), operator.client(MNO), tmp_path)
    body = es2_call(es2, es2_json.DOWNLOAD_ORDER, {"profile_type": PROFILE_TYPE}, context, requester="mno2")
    code = status.FUNCTION_REQUESTER_UNKNOWN
    assert status_of(json.dumps(body).encode()) == (code.subject, code.reason)
    assert all(p.state.value == "Available" for p in es2.store.profiles())


def test_es2_operators_only_see_their_own_orders(es2, operator, tmp_path):
    mine = client_context(test_pki(), operator.client(MNO), tmp_path)
    theirs = client_context(test_pki(), operator.client("mno2"), tmp_path)
    iccid = es2_call(es2, es2_json.DOWNLOAD_ORDER, {"profile_type": PROFILE_TYPE}, mine)["iccid"]
    body = es2_call(es2, es2_json.CANCEL_ORDER, {"iccid": iccid, "final_status": "Available"}, theirs, "mno2")
    code = status.ICCID_NOT_ALLOWED
    assert status_of(json.dumps(body).encode()) == (code.subject, code.reason)
    assert es2.store.profile(iccid).state.value == "Allocated"
    assert es2_call(es2, es2_json.CANCEL_ORDER, {"iccid": iccid, "final_status": "Available"}, mine)["header"] == {
        "functionExecutionStatus": {"status": "Executed-Success"}}


def test_es2_format_errors(es2, operator, tmp_path):
    context = client_context(test_pki(), operator.client(MNO), tmp_path)
    url = es2.server.urls["es2"] + es2_json.RELEASE_PROFILE.path
    status_code, _, data = post(url, json.dumps({"iccid": "1"}).encode(), context)
    assert status_of(data) == (status.MANDATORY_ELEMENT_MISSING.subject, status.MANDATORY_ELEMENT_MISSING.reason)
    body = es2_call(es2, es2_json.RELEASE_PROFILE, {"iccid": "8944000000000000092"}, context)
    assert status_of(json.dumps(body).encode()) == (status.ICCID_UNKNOWN.subject, status.ICCID_UNKNOWN.reason)
