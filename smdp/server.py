"""The SM-DP+ over HTTPS (aiohttp): ES9+ for LPAs, ES2+ for operators, and the operator callback.

Thin edges around the sans-IO cores: each handler checks the HTTP headers of SGP.22 6.5.1, decodes
the JSON binding, calls one core function and encodes its answer. Every failure is HTTP 200 with
``statusCodeData`` (6.5.1.4); only an unknown path (404) or method (405) is an HTTP error. The
ES9+ listener presents CERT.DPtls; the ES2+ listener also requires a client certificate from the
configured operator CA, and the operator is the certificate's CN (it must equal the request's
functionRequesterIdentifier). ES2+.HandleDownloadProgressInfo goes out from a durable outbox in the
background, retried with backoff, so it never delays an ES9+ response.

The ES2+ listener also serves the SGP.22 v3 RpmOrder and kinsim's uploadProfile hand-over (outside the
/gsma/ paths). ConfirmOrder with smdsAddress and RpmOrder with rootSmdsAddress register their SM-DS
event (ES12) before answering; events whose order ended are deleted after each request (smds_link).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from certs.pki import Credential
from rsp import es9_json, status
from rsp.errors import DecodeError, StatusCodeError
from rsp.es9_json import ADMIN_PROTOCOL, CONTENT_TYPE, MissingField
from smdp import es2_json, smds_link
from smdp.config import ConfigError, SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import Orders
from smdp.smds_link import SmdsLink
from smdp.store import OutboxEntry, Store

log = logging.getLogger("kinsim.smdp")

ADMIN_PROTOCOL_PREFIX = "gsma/rsp/v2."  # any v2.x.y client speaks the v2 binding
# SGP.22 2.6.6 (TLS 1.2): TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 and ..._AES_128_CBC_SHA256.
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA256"

CORE = web.AppKey("core", SmdpCore)
ORDERS = web.AppKey("orders", Orders)
NOTIFIER = web.AppKey("notifier", object)
SMDS = web.AppKey("smds", object)
MAX_ES2_BODY = 4 * 1024 * 1024  # uploadProfile carries a whole profile package


# --- TLS ------------------------------------------------------------------------------------------


def load_credential(context: ssl.SSLContext, credential: Credential) -> None:
    """ssl only reads key material from files: write a private temporary file and remove it at once."""
    fd, name = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(credential.cert_pem + credential.key_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)


def _load_anchors(context: ssl.SSLContext, path: Path) -> None:
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        context.load_verify_locations(cadata=data.decode("ascii"))
    else:
        context.load_verify_locations(cadata=data)


def server_ssl_context(tls: Credential, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS for a listener with CERT.DPtls; with ``client_ca`` a client certificate is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    load_credential(context, tls)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_anchors(context, client_ca)
    return context


def callback_ssl_context(config: SmdpConfig) -> ssl.SSLContext:
    """TLS client context for the operator callback: DPtls as client certificate, operator CA as anchor."""
    anchors = config.callback_ca or config.es2_client_ca
    if anchors is None:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
        _load_anchors(context, anchors)
    if config.tls is not None:
        load_credential(context, config.tls)
    return context


# --- responses ------------------------------------------------------------------------------------


def _json_response(body: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
                        headers={"Content-Type": CONTENT_TYPE, "X-Admin-Protocol": ADMIN_PROTOCOL})


def _error_response(error: StatusCodeError) -> web.Response:
    return _json_response(es9_json.encode_error(error))


def _check_http_headers(request: web.Request) -> None:
    """SGP.22 6.5.1: X-Admin-Protocol names a v2 protocol, the body is JSON."""
    protocol = request.headers.get("X-Admin-Protocol")
    if protocol is None:
        raise StatusCodeError(status.UNSUPPORTED_PROTOCOL_VERSION, "the X-Admin-Protocol header is missing")
    if not protocol.startswith(ADMIN_PROTOCOL_PREFIX):
        raise StatusCodeError(status.UNSUPPORTED_PROTOCOL_VERSION,
                              f"X-Admin-Protocol {protocol!r} is not supported (expected {ADMIN_PROTOCOL_PREFIX}x.y)")
    if request.content_type != "application/json":
        raise StatusCodeError(status.INVALID_REQUEST, f"Content-Type must be application/json, got {request.content_type!r}")


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise DecodeError("the body is not valid JSON") from None


def _as_status_error(exc: DecodeError) -> StatusCodeError:
    if isinstance(exc, MissingField):
        return StatusCodeError(status.MANDATORY_ELEMENT_MISSING, str(exc))
    return StatusCodeError(status.INVALID_REQUEST, str(exc))


async def _guarded(request: web.Request, call: Callable) -> web.StreamResponse:
    """Run one function call; map every failure to statusCodeData, never to a stack trace."""
    try:
        _check_http_headers(request)
        return await call(await _json_body(request))
    except StatusCodeError as exc:
        return _error_response(exc)
    except DecodeError as exc:
        return _error_response(_as_status_error(exc))
    except Exception:
        log.exception("%s failed", request.path)
        return _error_response(StatusCodeError(status.EXECUTION_ERROR, "internal error in the SM-DP+"))
    finally:  # refusals may have queued operator callbacks too (blocked orders, wrong codes)
        for background in (request.app.get(NOTIFIER), request.app.get(SMDS)):
            if background is not None:
                background.wake()


# --- ES9+ -----------------------------------------------------------------------------------------


def es9_app(core: SmdpCore, notifier: ProgressNotifier | None = None, smds: SmdsLink | None = None) -> web.Application:
    app = web.Application()
    app[CORE] = core
    if notifier is not None:
        app[NOTIFIER] = notifier
    if smds is not None:
        app[SMDS] = smds
    for path, function in es9_json.ES9_FUNCTIONS.items():
        app.router.add_post(path, _es9_handler(function))
    return app


def _es9_handler(function: es9_json.Function):
    async def handler(request: web.Request) -> web.StreamResponse:
        async def call(body: Any) -> web.StreamResponse:
            result = request.app[CORE].handle(function, es9_json.decode_request(function, body))
            if function.empty_response_status:
                return web.Response(status=function.empty_response_status, headers={"X-Admin-Protocol": ADMIN_PROTOCOL})
            answer = es9_json.authenticate_client_answer(result) if function is es9_json.AUTHENTICATE_CLIENT \
                else function
            return _json_response(es9_json.encode_response(answer, result))

        return await _guarded(request, call)

    return handler


# --- ES2+ -----------------------------------------------------------------------------------------


def es2_app(orders: Orders, notifier: ProgressNotifier | None = None, smds: SmdsLink | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_ES2_BODY)
    app[ORDERS] = orders
    if notifier is not None:
        app[NOTIFIER] = notifier
    if smds is not None:
        app[SMDS] = smds
    for path, function in es2_json.SMDP_FUNCTIONS.items():
        app.router.add_post(path, _es2_handler(function))
    return app


def client_identity(request: web.Request) -> str | None:
    """The CN of the verified TLS client certificate, if any."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


async def _download_order(app: web.Application, requester: str, args: dict) -> dict:
    return {"iccid": app[ORDERS].download_order(requester, **args)}


async def _confirm_order(app: web.Application, requester: str, args: dict) -> dict:
    """ConfirmOrder; with smdsAddress the SM-DS event is registered before we answer (3.6.1): if that
    fails, the order is put back as it was and the ES12 failure is the answer."""
    orders = app[ORDERS]
    before = orders.store.profile(args["iccid"])
    result = orders.confirm_order(requester, **args)
    if args.get("smds_address"):
        try:
            await _smds(app).register(args["smds_address"], eid=result["eid"], event_id=result["matchingId"],
                                      kind=smds_link.DOWNLOAD)
        except StatusCodeError:
            orders.restore(before)
            raise
    return result


async def _cancel_order(app: web.Application, requester: str, args: dict) -> dict:
    app[ORDERS].cancel_order(requester, **args)
    return {}


async def _release_profile(app: web.Application, requester: str, args: dict) -> dict:
    app[ORDERS].release_profile(requester, **args)
    return {}


async def _rpm_order(app: web.Application, requester: str, args: dict) -> dict:
    """v3 RpmOrder: queue the package; with rootSmdsAddress register its event for the eUICC."""
    script = es2_json.base64_field("rpmScript", args.pop("rpm_script"))
    order = app[ORDERS].rpm_order(requester, rpm_script=script, **args)
    if order.smds_address:
        try:
            await _smds(app).register(order.smds_address, eid=order.eid, event_id=order.matching_id,
                                      kind=smds_link.RPM)
        except StatusCodeError:
            app[ORDERS].withdraw_rpm_order(order.matching_id)
            raise
    return {"matchingId": order.matching_id}


async def _upload_profile(app: web.Application, requester: str, args: dict) -> dict:
    package = es2_json.base64_field("profilePackage", args.pop("package"))
    return {"iccid": app[ORDERS].upload_profile(requester, package=package, **args).iccid}


def _smds(app: web.Application) -> SmdsLink:
    link = app.get(SMDS)
    if link is None:
        raise StatusCodeError(status.SMDS_INACCESSIBLE, "this SM-DP+ is not set up to reach an SM-DS")
    return link


_ES2_CALLS = {
    es2_json.DOWNLOAD_ORDER.name: _download_order,
    es2_json.CONFIRM_ORDER.name: _confirm_order,
    es2_json.CANCEL_ORDER.name: _cancel_order,
    es2_json.RELEASE_PROFILE.name: _release_profile,
    es2_json.RPM_ORDER.name: _rpm_order,
    es2_json.UPLOAD_PROFILE.name: _upload_profile,
}


def _es2_handler(function: es2_json.Es2Function):
    async def handler(request: web.Request) -> web.StreamResponse:
        async def call(body: Any) -> web.StreamResponse:
            header, args = es2_json.decode_request(function, body)
            identity = client_identity(request)
            if identity is None or identity != header.function_requester_identifier:
                raise StatusCodeError(status.FUNCTION_REQUESTER_UNKNOWN,
                                      "functionRequesterIdentifier does not match the TLS client certificate")
            values = await _ES2_CALLS[function.name](request.app, identity, args)
            return _json_response(es2_json.encode_response(function, values))

        return await _guarded(request, call)

    return handler


# --- operator callbacks ---------------------------------------------------------------------------


class ProgressNotifier:
    """Delivers queued ES2+.HandleDownloadProgressInfo calls; retries with doubling delays."""

    def __init__(self, config: SmdpConfig, store: Store, clock: Callable[[], datetime] | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        self.config = config
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))
        self.ssl_context = ssl_context or callback_ssl_context(config)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception:  # keep the notifier alive whatever one delivery does
                log.exception("progress notification delivery failed")
            heads = self.store.outbox_heads()
            delay = min(((h.next_attempt_at - self.clock()).total_seconds() for h in heads), default=None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=None if delay is None else max(0.0, delay))
            self._wake.clear()

    async def deliver_due(self) -> None:
        """Deliver each operator's oldest pending callback while they succeed; a failure waits its backoff."""
        while True:
            due = [h for h in self.store.outbox_heads() if h.next_attempt_at <= self.clock()]
            if not due:
                return
            delivered = [await self._deliver(entry) for entry in due]
            if not any(delivered):
                return

    async def _deliver(self, entry: OutboxEntry) -> bool:
        url = self.config.operators.get(entry.requester)
        error = "no callback URL configured" if url is None else await self._post(url, entry.payload)
        with self.store.transaction():
            if error is None:
                self.store.outbox_delivered(entry.id)
                return True
            attempts = entry.attempts + 1
            delay = timedelta(seconds=self.config.callback_backoff * 2 ** (attempts - 1))
            give_up = attempts >= self.config.callback_attempts
            self.store.outbox_retry(entry.id, self.clock() + delay, error, give_up=give_up)
        if give_up:
            log.warning("HandleDownloadProgressInfo to %s abandoned after %d attempts: %s", url, attempts, error)
        return give_up  # the next callback of this operator may go now

    async def _post(self, url: str, payload: dict) -> str | None:
        headers = {"Content-Type": CONTENT_TYPE, "X-Admin-Protocol": ADMIN_PROTOCOL}
        target = url.rstrip("/") + es2_json.HANDLE_DOWNLOAD_PROGRESS_INFO.path  # url: the operator's base URL
        try:
            async with self._session.post(target, data=json.dumps(payload), headers=headers, ssl=self.ssl_context) as resp:
                await resp.read()
                return None if resp.status in (200, 204) else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"


# --- the running server ---------------------------------------------------------------------------


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class SmdpServer:
    """ES9+ (and optionally ES2+) listeners over one core and store, with the callback notifier."""

    def __init__(self, core: SmdpCore, *, notifier: ProgressNotifier | None = None, smds: SmdsLink | None = None):
        if core.config.tls is None:
            raise ConfigError("the SM-DP+ needs its DPtls certificate and key to serve HTTPS")
        self.core = core
        # Retries are scheduled on the wall clock: they are about the network, not protocol time.
        self.notifier = notifier if notifier is not None else ProgressNotifier(core.config, core.store)
        self.smds = smds if smds is not None else SmdsLink(lambda: core.config, core.store)
        self._runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 0, es2_port: int | None = None) -> dict[str, str]:
        """Listen (port 0 = ephemeral) and return {"es9": url, "es2": url}."""
        config = self.core.config
        await self.notifier.start()
        await self.smds.start()
        self.urls["es9"] = await self._serve(es9_app(self.core, self.notifier, self.smds), host, port,
                                             server_ssl_context(config.tls))
        if es2_port is not None:
            if config.es2_client_ca is None:
                raise ConfigError("ES2+ needs the operator CA that issues client certificates (--es2-client-ca)")
            self.urls["es2"] = await self._serve(es2_app(self.core.orders, self.notifier, self.smds), host, es2_port,
                                                 server_ssl_context(config.tls, config.es2_client_ca))
        self.notifier.wake()  # deliver what a previous run left in the outbox
        return dict(self.urls)

    async def _serve(self, app: web.Application, host: str, port: int, context: ssl.SSLContext) -> str:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=context).start()
        self._runners.append(runner)
        return _url(sock)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.notifier.stop()
        await self.smds.stop()
