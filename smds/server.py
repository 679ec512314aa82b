"""The SM-DS over HTTPS: ES11 for LPAs and ES12 for SM-DP+s, on two listeners (SGP.22 6.6, 2.6.6).

ES11 listener: TLS with the DStls certificate, no client certificate (the eUICC authenticates inside
the protocol). Its functions answer at the ES9+ paths (/gsma/rsp2/es9plus/initiateAuthentication and
.../authenticateClient), where deployed LPAs call an SM-DS, and also at the /gsma/rsp2/es11/ paths
named by rsp.es9_json. eventEntries travel as a JSON array of {"eventId", "rspServerAddress"} objects.

ES12 listener: TLS that requires a client certificate issued by a configured CA; the certificate
names the requester (its registeredID OID, else its subject) and the hosts it may register events
for. Requests carry ``header.functionRequesterIdentifier`` and ``header.functionCallIdentifier``.

Every function answers HTTP 200 with ``header.functionExecutionStatus``; failures carry the
statusCodeData of the core's StatusCodeError. The handlers only translate: all rules live in core.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import Credential
from certs.validate import name_text, registered_id
from rsp import es9_json, status
from rsp.errors import DecodeError, KinsimError, StatusCodeError
from smds.core import Requester, Smds

_log = logging.getLogger(__name__)

ES12 = "/gsma/rsp2/es12/"
REGISTER_EVENT_PATH = ES12 + "registerEvent"
DELETE_EVENT_PATH = ES12 + "deleteEvent"
ES11_INITIATE_PATHS = (es9_json.INITIATE_AUTHENTICATION.path, es9_json.ES11_INITIATE_AUTHENTICATION.path)
ES11_AUTHENTICATE_PATHS = (es9_json.AUTHENTICATE_CLIENT.path, es9_json.ES11_AUTHENTICATE_CLIENT.path)
PROTOCOL_PREFIX = "gsma/rsp/v2."  # X-Admin-Protocol values of the v2 message set (6.5.1)

Bind = tuple[str, int] | socket.socket

_CORE = web.AppKey("smds_core", Smds)


# --- TLS ----------------------------------------------------------------------------------------


def server_tls_context(tls: Credential, *, client_cas: Sequence[x509.Certificate] | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context with ``tls`` (DStls); with ``client_cas`` a client certificate issued
    by one of them is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, tls)
    if client_cas is not None:
        if not client_cas:
            raise KinsimError("ES12 needs at least one CA for client certificates")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in client_cas))
    return context


def _load_chain(context: ssl.SSLContext, credential: Credential) -> None:
    """ssl only loads keys from files: write them to a private temporary directory for the call."""
    with tempfile.TemporaryDirectory(prefix="kinsim-tls-") as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(credential.cert_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(credential.key_pem)
        context.load_cert_chain(cert_path, key_path)


def requester_from_certificate(der: bytes) -> Requester:
    """The ES12 function requester a verified TLS client certificate proves."""
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    hosts = set(names.get_values_for_type(x509.DNSName)) if names else set()
    hosts |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} if names else set()
    return Requester(name=registered_id(cert) or name_text(cert.subject), hosts=frozenset(h.lower() for h in hosts))


# --- the function envelope ----------------------------------------------------------------------


def _reply(document: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(document).encode("utf-8"),
                        headers={"Content-Type": es9_json.CONTENT_TYPE, "X-Admin-Protocol": es9_json.ADMIN_PROTOCOL})


async def _body(request: web.Request) -> Any:
    protocol = request.headers.get("X-Admin-Protocol", "")
    if not protocol.startswith(PROTOCOL_PREFIX):
        raise StatusCodeError(status.UNSUPPORTED_PROTOCOL_VERSION,
                              f"X-Admin-Protocol {protocol or '(missing)'} is not {PROTOCOL_PREFIX}x.y")
    try:
        return json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"the request body is not JSON: {exc}") from None


def _function(name: str, handle: Callable[[web.Request, Any], Awaitable[dict]]):
    """An aiohttp handler: JSON in, the function's JSON out, every failure as statusCodeData."""

    async def handler(request: web.Request) -> web.Response:
        try:
            return _reply(await handle(request, await _body(request)))
        except StatusCodeError as exc:
            _log.info("%s refused: %s", name, exc)
            return _reply(es9_json.encode_error(exc))
        except es9_json.MissingField as exc:
            return _reply(es9_json.encode_error(StatusCodeError(status.MANDATORY_ELEMENT_MISSING, str(exc))))
        except DecodeError as exc:
            return _reply(es9_json.encode_error(StatusCodeError(status.INVALID_REQUEST, str(exc))))
        except KinsimError as exc:
            _log.warning("%s failed: %s", name, exc)
            return _reply(es9_json.encode_error(StatusCodeError(status.EXECUTION_ERROR, str(exc))))

    return handler


# --- ES11 ---------------------------------------------------------------------------------------


async def _initiate_authentication(request: web.Request, body: Any) -> dict:
    if isinstance(body, dict) and "smdpAddress" not in body and "smdsAddress" in body:
        body = {**body, "smdpAddress": body["smdsAddress"]}  # some LPAs name the field after the SM-DS
    values = es9_json.decode_request(es9_json.ES11_INITIATE_AUTHENTICATION, body)
    result = request.app[_CORE].initiate_authentication(
        euicc_challenge=values["euiccChallenge"], euicc_info1=values["euiccInfo1"], smds_address=values["smdpAddress"])
    return es9_json.encode_response(es9_json.ES11_INITIATE_AUTHENTICATION, result)


async def _authenticate_client(request: web.Request, body: Any) -> dict:
    values = es9_json.decode_request(es9_json.ES11_AUTHENTICATE_CLIENT, body)
    discovery = request.app[_CORE].authenticate_client(
        transaction_id=values["transactionId"], authenticate_server_response=values["authenticateServerResponse"])
    return {
        "header": es9_json.success_header(),
        "transactionId": discovery.transaction_id.hex().upper(),
        "eventEntries": [{"eventId": e.event_id, "rspServerAddress": e.rsp_server_address} for e in discovery.events],
    }


def es11_app(core: Smds) -> web.Application:
    app = web.Application()
    app[_CORE] = core
    for path in ES11_INITIATE_PATHS:
        app.router.add_post(path, _function("ES11.InitiateAuthentication", _initiate_authentication))
    for path in ES11_AUTHENTICATE_PATHS:
        app.router.add_post(path, _function("ES11.AuthenticateClient", _authenticate_client))
    return app


# --- ES12 ---------------------------------------------------------------------------------------


def _requester(request: web.Request) -> Requester:
    tls = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    if not der:  # the listener requires a certificate; this guards a misconfigured deployment
        raise StatusCodeError(status.FUNCTION_REQUESTER_UNKNOWN, "ES12 needs a TLS client certificate")
    return requester_from_certificate(der)


def _es12_fields(body: Any, text: Sequence[str], flags: Sequence[str] = ()) -> dict[str, Any]:
    """Check the ES12 request header and pick the named string (and optional boolean) fields."""
    if not isinstance(body, dict):
        raise DecodeError("the JSON body must be an object")
    header = body.get("header")
    if not isinstance(header, dict):
        raise es9_json.MissingField("header")
    for name in ("functionRequesterIdentifier", "functionCallIdentifier"):
        if not isinstance(header.get(name), str):
            raise es9_json.MissingField(f"header.{name}")
    values: dict[str, Any] = {}
    for name in text:
        if name not in body:
            raise es9_json.MissingField(name)
        if not isinstance(body[name], str):
            raise DecodeError(f"{name} must be a JSON string")
        values[name] = body[name]
    for name in flags:
        if not isinstance(body.get(name, False), bool):
            raise DecodeError(f"{name} must be true or false")
        values[name] = body.get(name, False)
    return values


async def _register_event(request: web.Request, body: Any) -> dict:
    values = _es12_fields(body, ("eid", "rspServerAddress", "eventId"), ("forwardingIndicator",))
    request.app[_CORE].register_event(
        _requester(request), eid=values["eid"], rsp_server_address=values["rspServerAddress"],
        event_id=values["eventId"], forwarding_indicator=values["forwardingIndicator"])
    return {"header": es9_json.success_header()}


async def _delete_event(request: web.Request, body: Any) -> dict:
    values = _es12_fields(body, ("eid", "eventId"))
    request.app[_CORE].delete_event(_requester(request), eid=values["eid"], event_id=values["eventId"])
    return {"header": es9_json.success_header()}


def es12_app(core: Smds) -> web.Application:
    app = web.Application()
    app[_CORE] = core
    app.router.add_post(REGISTER_EVENT_PATH, _function("ES12.RegisterEvent", _register_event))
    app.router.add_post(DELETE_EVENT_PATH, _function("ES12.DeleteEvent", _delete_event))
    return app


# --- running ------------------------------------------------------------------------------------


def listen(bind: Bind) -> socket.socket:
    """A listening socket for ``(host, port)`` (port 0 picks a free one), or ``bind`` itself."""
    if isinstance(bind, socket.socket):
        return bind
    host, port = bind
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


@dataclass
class RunningServer:
    """The started listeners; ``close()`` stops them."""

    runners: list[web.AppRunner]
    es11_port: int
    es12_port: int | None

    async def close(self) -> None:
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()


async def start(core: Smds, tls: Credential, *, es11: Bind, es12: Bind | None = None,
                es12_client_cas: Sequence[x509.Certificate] = ()) -> RunningServer:
    """Start the ES11 listener and, with ``es12``, the ES12 listener requiring client certificates."""
    runners: list[web.AppRunner] = []
    try:
        es11_port = await _serve(runners, es11_app(core), listen(es11), server_tls_context(tls))
        es12_port = None
        if es12 is not None:
            context = server_tls_context(tls, client_cas=es12_client_cas)
            es12_port = await _serve(runners, es12_app(core), listen(es12), context)
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    return RunningServer(runners, es11_port, es12_port)


async def _serve(runners: list[web.AppRunner], app: web.Application, sock: socket.socket,
                 context: ssl.SSLContext) -> int:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.SockSite(runner, sock, ssl_context=context).start()
    return sock.getsockname()[1]
