"""lpa.es9_client: ES9+ over HTTPS trusting only the configured CI (SGP.22 2.6.6, 6.5.1)."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from aiohttp import web
from asn1crypto import core

from lpa.es9_client import Es9Client, Es9ConnectionError, Es9Pool, split_address, tls_context
from rsp import es9_json, status
from rsp import messages as m
from rsp.errors import DecodeError, StatusCodeError
from tests.lpa_fixtures import CHALLENGE, SERVER_CHALLENGE, TID, euicc_info1, pki, server_context, tls_server

ADDRESS = "smdp.kinsim.test"


def initiate_response() -> dict:
    p = pki("es9", smdp_address=ADDRESS)
    signed = m.ServerSigned1({"transactionId": TID, "euiccChallenge": CHALLENGE, "serverAddress": ADDRESS,
                              "serverChallenge": SERVER_CHALLENGE})
    return es9_json.encode_response(es9_json.INITIATE_AUTHENTICATION, {
        "transactionId": TID, "serverSigned1": signed, "serverSignature1": es9_json.Signature(b"\x01" * 64),
        "euiccCiPKIdToBeUsed": core.OctetString(p.ci.pkid), "serverCertificate": p.dp_auth.cert_der,
    })


class Server:
    """Records requests; answers per path from ``routes`` (a callable(request_json) -> web.Response)."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.seen: list[tuple[str, dict, object]] = []
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.path, dict(request.headers), json.loads(body)))
        return await self.routes[request.path](self)


def json_response(document, status_code=200):
    async def answer(server):
        return web.Response(status=status_code, body=json.dumps(document).encode(),
                            headers={"Content-Type": es9_json.CONTENT_TYPE, "X-Admin-Protocol": es9_json.ADMIN_PROTOCOL})
    return answer


def client(port: int, trusted=None, address: str = ADDRESS, timeout: float = 10) -> Es9Client:
    trusted = trusted or [pki("es9", smdp_address=ADDRESS).ci.cert]
    return Es9Client(address, tls_context(trusted), connect_to={address: ("127.0.0.1", port)}, timeout=timeout)


@pytest.fixture
def context(tmp_path):
    return server_context(pki("es9", smdp_address=ADDRESS).dp_tls, tmp_path)


@pytest.mark.asyncio
async def test_initiate_authentication_over_tls_with_the_spec_headers(context):
    server = Server({es9_json.INITIATE_AUTHENTICATION.path: json_response(initiate_response())})
    async with tls_server(server.app(), context) as port, client(port) as es9:
        result = await es9.initiate_authentication(euicc_challenge=CHALLENGE, euicc_info1=euicc_info1(),
                                                   smdp_address=ADDRESS)
    assert result["transactionId"] == TID
    assert result["serverSigned1"]["serverAddress"].native == ADDRESS
    path, headers, body = server.seen[0]
    assert path == "/gsma/rsp2/es9plus/initiateAuthentication"
    assert headers["X-Admin-Protocol"] == "gsma/rsp/v2.5.0"
    assert headers["Content-Type"] == "application/json;charset=UTF-8"
    assert headers["User-Agent"] == "gsma-rsp-lpad"
    assert headers["Host"] == ADDRESS  # the SM-DP+ address, even though --connect-to chose the port
    assert es9_json.decode_request(es9_json.INITIATE_AUTHENTICATION, body)["euiccChallenge"] == CHALLENGE


@pytest.mark.asyncio
async def test_server_certificate_from_another_ci_is_refused(tmp_path):
    stranger = pki("stranger", smdp_address=ADDRESS)  # same address, different CI
    server = Server({es9_json.INITIATE_AUTHENTICATION.path: json_response(initiate_response())})
    async with tls_server(server.app(), server_context(stranger.dp_tls, tmp_path)) as port, client(port) as es9:
        with pytest.raises(Es9ConnectionError, match="does not chain to a CI this LPA trusts") as info:
            await es9.initiate_authentication(euicc_challenge=CHALLENGE, euicc_info1=euicc_info1(),
                                              smdp_address=ADDRESS)
    assert info.value.kind == "tls"
    assert server.seen == []  # nothing was sent to the untrusted server


@pytest.mark.asyncio
async def test_certificate_for_another_address_is_refused(context):
    server = Server({es9_json.INITIATE_AUTHENTICATION.path: json_response(initiate_response())})
    async with tls_server(server.app(), context) as port, client(port, address="other.kinsim.test") as es9:
        with pytest.raises(Es9ConnectionError, match="not issued for that address") as info:
            await es9.initiate_authentication(euicc_challenge=CHALLENGE, euicc_info1=euicc_info1(),
                                              smdp_address="other.kinsim.test")
    assert info.value.kind == "tls" and server.seen == []


def test_context_trusts_only_the_given_ci():
    ci = pki("es9", smdp_address=ADDRESS).ci.cert
    context = tls_context([ci])
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1
    with pytest.raises(Es9ConnectionError, match="no trusted CI"):
        tls_context([])
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verifies"):
        Es9Client(ADDRESS, lax)


@pytest.mark.asyncio
async def test_connection_refused_is_reported():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client(port) as es9:
        with pytest.raises(Es9ConnectionError, match="cannot connect") as info:
            await es9.handle_notification(pending_notification=b"\xbf\x37\x00")
    assert info.value.kind == "refused"


@pytest.mark.asyncio
async def test_http_error_status(context):
    async def failing(server):
        return web.Response(status=503, reason="Service Unavailable")

    server = Server({es9_json.HANDLE_NOTIFICATION.path: failing})
    async with tls_server(server.app(), context) as port, client(port) as es9:
        with pytest.raises(Es9ConnectionError, match="HTTP 503") as info:
            await es9.handle_notification(pending_notification=b"\xbf\x37\x00")
    assert info.value.kind == "http"


@pytest.mark.asyncio
async def test_malformed_json_and_missing_fields(context):
    async def garbage(server):
        return web.Response(status=200, body=b"{not json")

    server = Server({es9_json.AUTHENTICATE_CLIENT.path: garbage,
                     es9_json.GET_BOUND_PROFILE_PACKAGE.path: json_response({"header": es9_json.success_header()})})
    async with tls_server(server.app(), context) as port, client(port) as es9:
        with pytest.raises(DecodeError, match="not JSON"):
            await es9.authenticate_client(transaction_id=TID, authenticate_server_response=b"\xbf\x38\x00")
        with pytest.raises(DecodeError, match="transactionId is missing"):
            await es9.get_bound_profile_package(transaction_id=TID, prepare_download_response=b"\xbf\x21\x00")


@pytest.mark.asyncio
async def test_function_failure_is_a_status_code_error(context):
    failure = es9_json.encode_error(StatusCodeError(status.MATCHING_ID_REFUSED, "no such order"))
    server = Server({es9_json.AUTHENTICATE_CLIENT.path: json_response(failure)})
    async with tls_server(server.app(), context) as port, client(port) as es9:
        with pytest.raises(StatusCodeError) as info:
            await es9.authenticate_client(transaction_id=TID, authenticate_server_response=b"\xbf\x38\x00")
    assert info.value.code == status.MATCHING_ID_REFUSED


@pytest.mark.asyncio
async def test_handle_notification_accepts_204_and_cancel_session_a_header(context):
    async def no_content(server):
        return web.Response(status=204)

    server = Server({es9_json.HANDLE_NOTIFICATION.path: no_content,
                     es9_json.CANCEL_SESSION.path: json_response({"header": es9_json.success_header()})})
    async with tls_server(server.app(), context) as port, client(port) as es9:
        assert await es9.handle_notification(pending_notification=b"\xbf\x37\x00") is None
        cancel = m.CancelSessionResponse(name="cancelSessionResponseError", value=5)
        assert await es9.cancel_session(transaction_id=TID, cancel_session_response=cancel) is None
    assert server.seen[1][2] == {"transactionId": TID.hex().upper(),
                                 "cancelSessionResponse": es9_json._encode_field(
                                     es9_json.CANCEL_SESSION.request[1], cancel)}


@pytest.mark.asyncio
async def test_timeout_is_its_own_kind(context):
    async def stall(server):
        await server.release.wait()
        return web.Response(status=204)

    server = Server({es9_json.HANDLE_NOTIFICATION.path: stall})
    async with tls_server(server.app(), context) as port:
        async with client(port, timeout=0.3) as es9:
            with pytest.raises(Es9ConnectionError) as info:
                await es9.handle_notification(pending_notification=b"\xbf\x37\x00")
        server.release.set()
    assert info.value.kind == "timeout"


@pytest.mark.asyncio
async def test_pool_keeps_one_client_per_address():
    pool = Es9Pool(tls_context([pki("es9", smdp_address=ADDRESS).ci.cert]))
    async with pool:
        assert pool("a.kinsim.test") is pool("a.kinsim.test")
        assert pool("b.kinsim.test").address == "b.kinsim.test"


def test_split_address():
    assert split_address("smdp.example.com") == ("smdp.example.com", 443)
    assert split_address("smdp.example.com:8443") == ("smdp.example.com", 8443)
    assert split_address("[::1]:8443") == ("::1", 8443)
    assert split_address("::1") == ("::1", 443)
