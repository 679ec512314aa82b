"""Event retrieval from an SM-DS (SGP.22 3.6.3): how an LPA finds a profile waiting for its eUICC
without an activation code.

The LPA reads the root SM-DS address from the eUICC (ES10a.GetEuiccConfiguredAddresses), runs common
mutual authentication with the SM-DS (ES11.InitiateAuthentication, ES10b.AuthenticateServer,
ES11.AuthenticateClient; the same steps as 3.1.2 with ctxParams1.matchingId absent) and receives the
event entries registered for the eUICC's EID. Each entry names an RSP server and an EventID: the
profile download (3.1.3) then runs at ``rsp_server_address`` with ``matching_id = event_id``.

ES11 shares the ES9+ HTTP binding, trust rules (TLS chain to a trusted CI) and paths (SGP.22 6.6), so
the client is the ES9+ client with an AuthenticateClient that reads event entries: a JSON array of
``{"eventId", "rspServerAddress"}`` objects.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from lpa.download import DeviceInfo
from lpa.es9_client import Es9Client, Es9ConnectionError
from lpa.es10 import Es10Client
from rsp import es9_json
from rsp import messages as m
from rsp.errors import DecodeError, Es10Error, KinsimError

_log = logging.getLogger(__name__)


class DiscoveryProtocolError(KinsimError):
    """The SM-DS answered inconsistently (another transactionId, another server address)."""


@dataclass(frozen=True)
class EventEntry:
    """One event for this eUICC: download with matchingId ``event_id`` at ``rsp_server_address``."""

    event_id: str
    rsp_server_address: str

    def as_dict(self) -> dict:
        return {"eventId": self.event_id, "rspServerAddress": self.rsp_server_address}


@dataclass(frozen=True)
class Discovery:
    smds_address: str
    transaction_id: bytes
    events: tuple[EventEntry, ...]

    def as_dict(self) -> dict:
        return {"smdsAddress": self.smds_address, "transactionId": self.transaction_id.hex().upper(),
                "events": [e.as_dict() for e in self.events]}


class Es11Peer(Protocol):
    """The two ES11 functions (SGP.22 5.8); ``authenticate_client`` gives transactionId and entries."""

    async def initiate_authentication(self, *, euicc_challenge: bytes, euicc_info1, smdp_address: str) -> dict: ...

    async def authenticate_client(self, *, transaction_id: bytes, authenticate_server_response) -> dict: ...


# The fields of the ES11.AuthenticateClient answer that rsp.es9_json can decode; eventEntries is a
# JSON array, read by decode_event_entries.
_TRANSACTION_ID_ONLY = es9_json.Function("es11.authenticateClient", es9_json.AUTHENTICATE_CLIENT.path, request=(),
                                         response=(es9_json.Field("transactionId", es9_json.HEX),))


def decode_event_entries(document: Any) -> dict:
    """{"transactionId": bytes, "eventEntries": [EventEntry]} from an ES11.AuthenticateClient answer
    whose header already reported success; DecodeError for anything else."""
    if not isinstance(document, dict):
        raise DecodeError("the ES11 response is not a JSON object")
    values = es9_json.decode_response(_TRANSACTION_ID_ONLY, document)
    entries = document.get("eventEntries", [])
    if not isinstance(entries, list):
        raise DecodeError("eventEntries must be a JSON array")
    events = []
    for entry in entries:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k]
                                                  for k in ("eventId", "rspServerAddress")):
            raise DecodeError("each event entry needs a non-empty eventId and rspServerAddress")
        events.append(EventEntry(entry["eventId"], entry["rspServerAddress"]))
    return {"transactionId": values["transactionId"], "eventEntries": events}


class Es11Client(Es9Client):
    """ES11 against one SM-DS: the ES9+ client (same TLS trust, headers and InitiateAuthentication),
    with AuthenticateClient answered by event entries instead of profile metadata."""

    role = "SM-DS"

    async def authenticate_client(self, *, transaction_id: bytes, authenticate_server_response) -> dict:
        function = es9_json.AUTHENTICATE_CLIENT  # ES11 uses the ES9+ path (SGP.22 6.6)
        body = es9_json.encode_request(function, {"transactionId": transaction_id,
                                                  "authenticateServerResponse": authenticate_server_response})
        status, reason, payload = await self._post(function, json.dumps(body).encode("utf-8"))
        if status != 200:
            raise Es9ConnectionError(self.address, "http",
                                     f"SM-DS {self.address} answered AuthenticateClient with HTTP {status} {reason}")
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"SM-DS {self.address} sent an AuthenticateClient response that is not JSON: {exc}") from None
        es9_json.check_header(document)
        try:
            return decode_event_entries(document)
        except DecodeError as exc:
            raise DecodeError(f"SM-DS {self.address} sent a malformed AuthenticateClient response: {exc}") from None


def root_smds_address(es10: Es10Client) -> str:
    """The eUICC's root SM-DS address (rootDsAddress of ES10a.GetEuiccConfiguredAddresses, 5.7.3)."""
    _, root = es10.get_euicc_configured_addresses()
    if not root:
        raise DiscoveryProtocolError("the eUICC has no root SM-DS address configured")
    return root


async def discover_events(es10: Es10Client, es11: Es11Peer, *, smds_address: str,
                          device: DeviceInfo | None = None, event_id: str | None = None) -> Discovery:
    """Event retrieval at ``smds_address`` (3.6.3). ``event_id`` asks for that one record instead of all
    (the second step when an entry points at an alternative SM-DS).

    Raises StatusCodeError (the SM-DS refused), Es10Error (the eUICC refused the SM-DS),
    Es9ConnectionError, DecodeError, DiscoveryProtocolError.
    """
    challenge = es10.get_euicc_challenge()
    info1 = es10.get_euicc_info1()
    auth = await es11.initiate_authentication(euicc_challenge=challenge, euicc_info1=info1, smdp_address=smds_address)
    transaction_id = auth["transactionId"]
    signed1 = auth["serverSigned1"]
    if signed1["transactionId"].native != transaction_id:
        raise DiscoveryProtocolError("the SM-DS answered InitiateAuthentication with two different transactionIds")
    if signed1["serverAddress"].native != smds_address:
        raise DiscoveryProtocolError(f"the SM-DS signed serverAddress {signed1['serverAddress'].native!r}, not the "
                                     f"address the LPA contacted ({smds_address!r})")
    context: dict[str, Any] = {"deviceInfo": (device or DeviceInfo()).to_asn1()}
    if event_id is not None:
        context["matchingId"] = event_id
    server_response = es10.authenticate_server(
        server_signed1=signed1, server_signature1=auth["serverSignature1"].native,
        euicc_ci_pkid_to_be_used=auth["euiccCiPKIdToBeUsed"], server_certificate=auth["serverCertificate"],
        ctx_params1={"ctxParamsForCommonAuthentication": context},
    )
    if server_response.name != "authenticateResponseOk":
        await _relay_quietly(es11, transaction_id, server_response)
        code = server_response.chosen["authenticateErrorCode"]
        raise Es10Error("AuthenticateServer", int(code), str(code.native), "the eUICC did not accept the SM-DS")
    result = await es11.authenticate_client(transaction_id=transaction_id, authenticate_server_response=server_response)
    if result["transactionId"] != transaction_id:
        raise DiscoveryProtocolError("the SM-DS answered AuthenticateClient for another transaction")
    return Discovery(smds_address, transaction_id, tuple(result["eventEntries"]))


async def _relay_quietly(es11: Es11Peer, transaction_id: bytes, response: m.AuthenticateServerResponse) -> None:
    """Tell the SM-DS the eUICC refused it (ends its session); its failure answer is expected."""
    try:
        await es11.authenticate_client(transaction_id=transaction_id, authenticate_server_response=response)
    except (KinsimError, OSError) as exc:
        _log.info("the SM-DS answered the relayed error with: %s", exc)
