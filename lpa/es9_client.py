"""The LPA's ES9+ client: HTTPS POSTs of the JSON binding (SGP.22 6.5) to one SM-DP+.

Trust (SGP.22 2.6.6 and 6.5.1): the TLS server certificate must chain to a CI certificate the LPA
trusts and name the SM-DP+ address. The ssl context therefore holds ONLY those CI certificates as
trust anchors (never the system store) and always checks the chain and the host name; there is no
switch to turn verification off.

Failures become one of: ``Es9ConnectionError`` (TLS, refused, timeout, HTTP status: the request did not
get an answer from the function), ``DecodeError`` (an answer that is not the function's JSON) or
``StatusCodeError`` (the SM-DP+ executed the function and reported a failure).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from rsp import es9_json
from rsp.errors import DecodeError, KinsimError

DEFAULT_PORT = 443
DEFAULT_TIMEOUT = 60.0  # seconds for one ES9+ exchange
# SGP.22 2.6.6: TLS 1.2 with these ECDSA suites (TLS 1.3 suites are not affected by set_ciphers).
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA256"

# OpenSSL X509_V_ERR_* codes we explain in words.
_HOSTNAME_MISMATCH = {62, 64}  # hostname / IP address mismatch
_EXPIRED = {9, 10}  # not yet valid / expired
_UNTRUSTED = {2, 18, 19, 20, 21}  # no issuer among the trust anchors, self-signed leaf or chain


class Es9ConnectionError(KinsimError):
    """An ES9+ request got no function answer. ``kind``: tls, refused, timeout, http or connection."""

    def __init__(self, address: str, kind: str, message: str):
        super().__init__(message)
        self.address = address
        self.kind = kind


def tls_context(trusted_cis: Sequence[x509.Certificate]) -> ssl.SSLContext:
    """A client context whose only trust anchors are ``trusted_cis``; chain and host name always checked."""
    if not trusted_cis:
        raise Es9ConnectionError("", "tls", "no trusted CI certificate configured: the LPA cannot verify any SM-DP+")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname; no system CAs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    for ci in trusted_cis:
        context.load_verify_locations(cadata=ci.public_bytes(Encoding.DER))
    return context


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of an SM-DP+ address "host" or "host:port" ("[v6]:port" for IPv6 literals)."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and (not host.count(":") or host.endswith("]")):
        return host.strip("[]"), int(port)
    return address.strip("[]"), DEFAULT_PORT


class _MappedResolver(AbstractResolver):
    """Sends chosen host names to another IP and port (like curl --connect-to); TLS still checks the name."""

    def __init__(self, mapping: Mapping[str, tuple[str, int]]):
        self._mapping = {host.lower(): target for host, target in mapping.items()}
        self._default = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        target = self._mapping.get(host.lower())
        if target is None:
            return await self._default.resolve(host, port, family)
        ip, mapped_port = target
        infos = await asyncio.get_running_loop().getaddrinfo(ip, mapped_port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_NUMERICHOST)
        return [ResolveResult(hostname=host, host=info[4][0], port=mapped_port, family=info[0], proto=info[2],
                              flags=socket.AI_NUMERICHOST) for info in infos]

    async def close(self) -> None:
        await self._default.close()


class Es9Client:
    """ES9+ functions against the SM-DP+ at ``address``; async context manager.

    ``connect_to`` maps host names to (ip, port) for test set-ups whose SM-DP+ has no DNS name.
    """

    role = "SM-DP+"  # the server named in error sentences

    def __init__(self, address: str, ssl_context: ssl.SSLContext, *,
                 connect_to: Mapping[str, tuple[str, int]] | None = None, timeout: float = DEFAULT_TIMEOUT):
        if not isinstance(ssl_context, ssl.SSLContext) or ssl_context.verify_mode != ssl.CERT_REQUIRED \
                or not ssl_context.check_hostname:
            raise ValueError("the ES9+ client needs an ssl context that verifies the chain and the host name")
        self.address = address
        self._ssl = ssl_context
        self._connect_to = dict(connect_to or {})
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        host, port = split_address(address)
        self.base_url = f"https://{'[' + host + ']' if ':' in host else host}:{port}"

    async def __aenter__(self) -> Es9Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, resolver=_MappedResolver(self._connect_to))
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"X-Admin-Protocol": es9_json.ADMIN_PROTOCOL, "User-Agent": es9_json.USER_AGENT},
            )
        return self._session

    # --- the five ES9+ functions (SGP.22 5.6) --------------------------------------------------

    async def initiate_authentication(self, *, euicc_challenge: bytes, euicc_info1, smdp_address: str) -> dict:
        return await self.call(es9_json.INITIATE_AUTHENTICATION, euiccChallenge=euicc_challenge,
                               euiccInfo1=euicc_info1, smdpAddress=smdp_address)

    async def authenticate_client(self, *, transaction_id: bytes, authenticate_server_response) -> dict:
        return await self.call(es9_json.AUTHENTICATE_CLIENT, transactionId=transaction_id,
                               authenticateServerResponse=authenticate_server_response)

    async def get_bound_profile_package(self, *, transaction_id: bytes, prepare_download_response) -> dict:
        return await self.call(es9_json.GET_BOUND_PROFILE_PACKAGE, transactionId=transaction_id,
                               prepareDownloadResponse=prepare_download_response)

    async def handle_notification(self, *, pending_notification) -> None:
        await self.call(es9_json.HANDLE_NOTIFICATION, pendingNotification=pending_notification)

    async def cancel_session(self, *, transaction_id: bytes, cancel_session_response) -> None:
        await self.call(es9_json.CANCEL_SESSION, transactionId=transaction_id,
                        cancelSessionResponse=cancel_session_response)

    # --- HTTP -----------------------------------------------------------------------------------

    async def call(self, function: es9_json.Function, **values: Any) -> dict:
        """POST one function; the decoded response fields (StatusCodeError if the function failed)."""
        body = json.dumps(es9_json.encode_request(function, values)).encode("utf-8")
        status, reason, payload = await self._post(function, body)
        if status not in (200, 204):
            raise Es9ConnectionError(self.address, "http",
                                     f"{self.role} {self.address} answered {function.name} with HTTP {status} {reason}")
        if not payload.strip():
            if function.empty_response_status is not None:
                return {}
            raise DecodeError(f"{self.role} {self.address} answered {function.name} with an empty body")
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"{self.role} {self.address} sent {function.name} a response that is not JSON: {exc}") from None
        if function is es9_json.AUTHENTICATE_CLIENT and isinstance(document, dict):
            function = es9_json.authenticate_client_answer(document)  # v3: an RPM package instead
        try:
            return es9_json.decode_response(function, document)
        except DecodeError as exc:
            raise DecodeError(f"{self.role} {self.address} sent a malformed {function.name} response: {exc}") from None

    async def _post(self, function: es9_json.Function, body: bytes) -> tuple[int, str, bytes]:
        url = self.base_url + function.path
        try:
            async with self._client_session().post(url, data=body, allow_redirects=False,
                                                   headers={"Content-Type": es9_json.CONTENT_TYPE}) as response:
                return response.status, response.reason or "", await response.read()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._certificate_error(exc.certificate_error) from None
        except aiohttp.ClientSSLError as exc:
            raise Es9ConnectionError(self.address, "tls", f"TLS handshake with {self.role} {self.address} failed: "
                                                          f"{_first_line(exc)}") from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.strerror or _first_line(exc.os_error)
            raise Es9ConnectionError(self.address, "refused",
                                     f"cannot connect to {self.role} {self.address}: {reason}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise Es9ConnectionError(self.address, "timeout", f"{self.role} {self.address} did not answer {function.name} "
                                                              f"within {self._timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise Es9ConnectionError(self.address, "connection",
                                     f"connection to {self.role} {self.address} failed: {_first_line(exc)}") from None

    def _certificate_error(self, error: Exception) -> Es9ConnectionError:
        code = getattr(error, "verify_code", None)
        detail = getattr(error, "verify_message", None) or _first_line(error)
        if code in _HOSTNAME_MISMATCH:
            text = f"the TLS certificate of {self.address} is not issued for that address ({detail})"
        elif code in _EXPIRED:
            text = f"the TLS certificate of {self.address} is outside its validity period ({detail})"
        elif code in _UNTRUSTED:
            text = f"the TLS certificate of {self.address} does not chain to a CI this LPA trusts ({detail})"
        else:
            text = f"the TLS certificate of {self.address} failed verification ({detail})"
        return Es9ConnectionError(self.address, "tls", f"refusing {self.role} {self.address}: {text}")


class Es9Pool:
    """One Es9Client per address, sharing trust and settings; ``pool(address)`` gives the client."""

    def __init__(self, ssl_context: ssl.SSLContext, *, connect_to: Mapping[str, tuple[str, int]] | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self._ssl = ssl_context
        self._connect_to = dict(connect_to or {})
        self._timeout = timeout
        self._clients: dict[str, Es9Client] = {}

    def __call__(self, address: str) -> Es9Client:
        client = self._clients.get(address)
        if client is None:
            client = Es9Client(address, self._ssl, connect_to=self._connect_to, timeout=self._timeout)
            self._clients[address] = client
        return client

    async def __aenter__(self) -> Es9Pool:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__
