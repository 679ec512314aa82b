"""The runner's HTTPS client for an SM-DP+ under test (ES9+ JSON binding, SGP.22 6.5).

Like a real LPA it trusts only the CI it was given (``lpa.es9_client.tls_context``), checks the
TLS host name against the SM-DP+ address, and sends the X-Admin-Protocol and User-Agent headers.
Unlike the LPA it can send any body and header set, so the negative cases can send malformed
requests, and it hands back the HTTP status with the body.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography import x509

from conformance.runner import CaseFailed, TargetUnreachable
from lpa.es9_client import split_address, tls_context
from rsp import es9_json

Exchange = Callable[[str, bytes, int, bytes], None]  # (path, request body, HTTP status, response body)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise CaseFailed(f"the SM-DP+ answered HTTP {self.status} with a body that is not JSON: "
                             f"{self.body[:80]!r}") from None


class Es9Http:
    """POSTs to ``https://ADDRESS`` (or to ``connect_to`` host:port while verifying ADDRESS's name)."""

    def __init__(self, address: str, trusted_ci: x509.Certificate, *, connect_to: str | None = None,
                 timeout: float = 60.0, on_exchange: Exchange | None = None):
        self.host, port = split_address(address)
        target_host, target_port = split_address(connect_to) if connect_to else (self.host, port)
        self.base_url = f"https://{'[' + target_host + ']' if ':' in target_host else target_host}:{target_port}"
        self._ssl: ssl.SSLContext = tls_context([trusted_ci])
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.on_exchange = on_exchange

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: bytes, *, admin_protocol: bool = True) -> HttpAnswer:
        headers = {"Content-Type": es9_json.CONTENT_TYPE, "User-Agent": es9_json.USER_AGENT}
        if admin_protocol:
            headers["X-Admin-Protocol"] = es9_json.ADMIN_PROTOCOL
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.base_url + path, data=body, headers=headers, ssl=self._ssl,
                                          server_hostname=self.host, allow_redirects=False) as response:
                answer = HttpAnswer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise TargetUnreachable(f"POST {self.base_url}{path} failed: {type(exc).__name__}: {exc}") from None
        if self.on_exchange is not None:
            self.on_exchange(path, body, answer.status, answer.body)
        return answer

    async def call(self, function: es9_json.Function, values: dict[str, Any]) -> dict[str, Any]:
        """One function with well-formed values; its decoded response (StatusCodeError on Failed)."""
        return await self.send(function, json.dumps(es9_json.encode_request(function, values)).encode())

    async def send(self, function: es9_json.Function, body: bytes, *, admin_protocol: bool = True) -> dict[str, Any]:
        """Any body to ``function``'s path; the decoded response as ``call`` gives it."""
        answer = await self.post(function.path, body, admin_protocol=admin_protocol)
        if answer.status == 204 and function.empty_response_status == 204:
            if answer.body:
                raise CaseFailed(f"{function.name}: HTTP 204 must have no body, got {len(answer.body)} bytes")
            return {}
        if answer.status != 200:
            raise CaseFailed(f"{function.name}: HTTP {answer.status} where SGP.22 6.5 expects 200 with a JSON "
                             f"header: {answer.body[:120]!r}")
        return es9_json.decode_response(function, answer.json())
