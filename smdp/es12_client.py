"""The SM-DP+ side of ES12 (SGP.22 5.9, 6.6): register and delete events at an SM-DS over HTTPS with
a client certificate.

When a download order carries an smdsAddress (ES2+.ConfirmOrder, 3.6.1), the SM-DP+ registers an event
for the EID with ``register_event(eid, rspServerAddress=<own address>, eventId=<matchingId>)``; the
member's LPA then finds it at the eUICC's root SM-DS and downloads with matchingId = eventId. After the
download (or when the order ends otherwise) the SM-DP+ deletes it (3.6.2).

Failures come back in ES2+ terms, so ConfirmOrder can answer with them unchanged: ``SmdsInaccessible``
(8.9 / 5.1) when the SM-DS could not be reached or gave no function answer, ``SmdsRefused`` (8.9 / 4.2)
when it executed the function and failed; ``.smds_error`` keeps the SM-DS's own statusCodeData.
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
from collections.abc import Sequence
from itertools import count
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import Credential
from rsp import es9_json, status
from rsp.errors import DecodeError, StatusCodeError

REGISTER_EVENT_PATH = "/gsma/rsp2/es12/registerEvent"
DELETE_EVENT_PATH = "/gsma/rsp2/es12/deleteEvent"
DEFAULT_PORT = 443
DEFAULT_TIMEOUT = 30.0


class SmdsInaccessible(StatusCodeError):
    """No function answer from the SM-DS: refused, TLS failure, timeout, HTTP error, not JSON."""

    def __init__(self, message: str):
        super().__init__(status.SMDS_INACCESSIBLE, message)


class SmdsRefused(StatusCodeError):
    """The SM-DS executed the function and reported a failure (kept in ``smds_error``)."""

    def __init__(self, function: str, smds_error: StatusCodeError):
        super().__init__(status.SMDS_EXECUTION_ERROR, f"the SM-DS refused {function}: {smds_error}")
        self.smds_error = smds_error


def tls_context(trusted_cis: Sequence[x509.Certificate], client: Credential) -> ssl.SSLContext:
    """Trust only the CIs (the SM-DS's DStls chains to one) and present ``client`` (e.g. DPtls)."""
    if not trusted_cis:
        raise ValueError("no trusted CI certificate: the SM-DS cannot be verified")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, no system CAs
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata="".join(ci.public_bytes(Encoding.PEM).decode() for ci in trusted_cis))
    with tempfile.TemporaryDirectory(prefix="kinsim-es12-") as folder:
        cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_path.write_bytes(client.cert_pem)
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(client.key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def base_url(address: str) -> str:
    """https URL of an SM-DS address "host", "host:port" or "[v6]:port"."""
    host, sep, port = address.strip().rpartition(":")
    if not (sep and port.isdigit() and (not host.count(":") or host.endswith("]"))):
        host, port = address.strip(), str(DEFAULT_PORT)
    host = host.strip("[]")
    return f"https://{'[' + host + ']' if ':' in host else host}:{port}"


class Es12Client:
    """ES12 functions against the SM-DS at ``smds_address``; an async context manager.

    ``requester_id`` goes in header.functionRequesterIdentifier (the SM-DS authenticates the caller by
    its TLS client certificate, the header names it for logs).
    """

    def __init__(self, smds_address: str, ssl_context: ssl.SSLContext, *, requester_id: str,
                 timeout: float = DEFAULT_TIMEOUT):
        if ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname:
            raise ValueError("the ES12 client needs an ssl context that verifies the chain and the host name")
        self.address = smds_address
        self.requester_id = requester_id
        self._url = base_url(smds_address)
        self._ssl = ssl_context
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._calls = count(1)

    async def __aenter__(self) -> Es12Client:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def register_event(self, *, eid: str, rsp_server_address: str, event_id: str,
                             forwarding_indicator: bool = False) -> None:
        """ES12.RegisterEvent (5.9.1)."""
        await self._call("RegisterEvent", REGISTER_EVENT_PATH, {
            "eid": eid, "rspServerAddress": rsp_server_address, "eventId": event_id,
            "forwardingIndicator": forwarding_indicator})

    async def delete_event(self, *, eid: str, event_id: str) -> None:
        """ES12.DeleteEvent (5.9.2)."""
        await self._call("DeleteEvent", DELETE_EVENT_PATH, {"eid": eid, "eventId": event_id})

    async def _call(self, function: str, path: str, fields: dict) -> None:
        header = {"functionRequesterIdentifier": self.requester_id,
                  "functionCallIdentifier": f"{function}-{next(self._calls)}"}
        body = json.dumps({"header": header, **fields}).encode("utf-8")
        where = f"SM-DS {self.address}"
        try:
            async with self._client().post(self._url + path, data=body, allow_redirects=False) as response:
                payload = await response.read()
                if response.status != 200:
                    raise SmdsInaccessible(f"{where} answered {function} with HTTP {response.status} {response.reason}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SmdsInaccessible(f"{where} did not answer {function}: {_first_line(exc)}") from None
        try:
            es9_json.check_header(json.loads(payload))
        except (UnicodeDecodeError, json.JSONDecodeError, DecodeError) as exc:
            raise SmdsInaccessible(f"{where} sent a {function} response that is not ES12 JSON: {exc}") from None
        except StatusCodeError as exc:
            raise SmdsRefused(function, exc) from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"X-Admin-Protocol": es9_json.ADMIN_PROTOCOL, "Content-Type": es9_json.CONTENT_TYPE})
        return self._session


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
