"""Deterministic sessions: record a complete profile download between our LPA, SM-DP+ and software
eUICC (every ES9+ request/response body and every APDU/R-APDU, in order) and replay it byte for byte.

Determinism comes from three things, all injected:
- randomness: each role gets its own stream ``seeded_rng(seed, role)`` (SHA-256 over seed, role and a
  block counter), so challenges, transactionIds, one-time keys and matching IDs repeat;
- time: a fixed clock (``FIXED_CLOCK`` unless the fixture says otherwise);
- ECDSA: signatures use deterministic nonces (RFC 6979) while a session runs
  (``deterministic_signatures``), since random nonces would change every signature.
Certificates are signed once when a session is first recorded and stored in the fixture.

The SM-DP+ is reached through its real aiohttp application (``smdp.server.es9_app``) over plain HTTP
on loopback, so the transcript holds exactly the JSON the ES9+ handlers read and write.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import PKI_NAMES, Credential, Pki, generate_pki, load_certificate, load_private_key
from euicc_sim.card import create_euicc, open_euicc
from euicc_sim.identity import EuiccIdentity
from lpa.download import download_profile
from lpa.es10 import Es10Client
from lpa.transport import SimCardTransport
from rsp import crypto, es9_json
from rsp.errors import DecodeError, KinsimError, StatusCodeError
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import import_profile
from smdp.server import es9_app
from smdp.store import Store

FORMAT = "kinsim-session/1"
FIXED_CLOCK = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ADDRESS = "smdp.kinsim.test"
ICCID = "8944000000000000019"
MATCHING_ID = "KINSIM-SESSION-1"
CONFIRMATION_CODE = "4711"
PROFILE = "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV_NoRAMRFM.der"

Rng = Callable[[int], bytes]


class SessionMismatch(KinsimError):
    """A replay diverged from the recorded session."""


def seeded_rng(seed: bytes, label: str) -> Rng:
    """Bytes from SHA-256(len(label) || label || seed || counter) blocks: one stream per label."""
    prefix = bytes([len(label)]) + label.encode() + seed
    state = {"counter": 0, "buffer": b""}

    def rng(n: int) -> bytes:
        while len(state["buffer"]) < n:
            state["counter"] += 1
            state["buffer"] += hashlib.sha256(prefix + state["counter"].to_bytes(8, "big")).digest()
        out, state["buffer"] = state["buffer"][:n], state["buffer"][n:]
        return out

    return rng


def fixed_clock(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@contextlib.contextmanager
def deterministic_signatures() -> Iterator[None]:
    """ECDSA with RFC 6979 nonces in ``rsp.crypto`` while the block runs (every role signs through it)."""
    original = crypto.sign_der

    def sign_der(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
        return private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))

    crypto.sign_der = sign_der
    try:
        yield
    finally:
        crypto.sign_der = original


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    description: str
    matching_id: str  # what the LPA sends
    confirmation_code: str | None = None  # the order's code (the user types it in)
    order: bool = True


SCENARIOS = {
    "download": Scenario("a released order downloaded and installed", MATCHING_ID),
    "download-cc": Scenario("an order with a confirmation code, the right code typed", MATCHING_ID, CONFIRMATION_CODE),
    "wrong-matching-id": Scenario("the LPA names a matching ID no order has: refused at AuthenticateClient",
                                  "KINSIM-NO-SUCH-ORDER"),
}


# --- the transcript -------------------------------------------------------------------------------


@dataclass
class Transcript:
    events: list[dict[str, Any]] = field(default_factory=list)

    def es9(self, path: str, request: bytes, status: int, response: bytes) -> None:
        self.events.append({"es9": path, "request": request.decode("utf-8"), "status": status,
                            "response": response.decode("utf-8")})

    def apdu(self, command: bytes, response: bytes) -> None:
        self.events.append({"apdu": command.hex().upper(), "response": response.hex().upper()})


class RecordingTransport(SimCardTransport):
    def __init__(self, card, transcript: Transcript):
        super().__init__(card)
        self._transcript = transcript

    def transmit(self, apdu: bytes) -> bytes:
        response = super().transmit(apdu)
        self._transcript.apdu(bytes(apdu), response)
        return response


class RecordingEs9Peer:
    """The LPA's ES9+ peer (lpa.download.Es9Peer) over an aiohttp test client, recording each body."""

    def __init__(self, client: TestClient, transcript: Transcript):
        self._client = client
        self._transcript = transcript

    async def _call(self, function: es9_json.Function, **values) -> dict:
        body = json.dumps(es9_json.encode_request(function, values)).encode()
        headers = {"Content-Type": es9_json.CONTENT_TYPE, "X-Admin-Protocol": es9_json.ADMIN_PROTOCOL,
                   "User-Agent": es9_json.USER_AGENT}
        async with self._client.post(function.path, data=body, headers=headers) as response:
            status, payload = response.status, await response.read()
        self._transcript.es9(function.path, body, status, payload)
        if status == 204 and function.empty_response_status == 204:
            return {}
        return es9_json.decode_response(function, json.loads(payload))

    async def initiate_authentication(self, *, euicc_challenge, euicc_info1, smdp_address):
        return await self._call(es9_json.INITIATE_AUTHENTICATION, euiccChallenge=euicc_challenge,
                                euiccInfo1=euicc_info1, smdpAddress=smdp_address)

    async def authenticate_client(self, *, transaction_id, authenticate_server_response):
        return await self._call(es9_json.AUTHENTICATE_CLIENT, transactionId=transaction_id,
                                authenticateServerResponse=authenticate_server_response)

    async def get_bound_profile_package(self, *, transaction_id, prepare_download_response):
        return await self._call(es9_json.GET_BOUND_PROFILE_PACKAGE, transactionId=transaction_id,
                                prepareDownloadResponse=prepare_download_response)

    async def handle_notification(self, *, pending_notification):
        await self._call(es9_json.HANDLE_NOTIFICATION, pendingNotification=pending_notification)

    async def cancel_session(self, *, transaction_id, cancel_session_response):
        await self._call(es9_json.CANCEL_SESSION, transactionId=transaction_id,
                         cancelSessionResponse=cancel_session_response)


# --- running a session ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    scenario: str
    seed: bytes
    clock: datetime
    pki: Pki
    outcome: str
    events: list[dict[str, Any]]

    def to_json(self) -> dict:
        return {"format": FORMAT, "scenario": self.scenario, "description": SCENARIOS[self.scenario].description,
                "seed": self.seed.hex(), "clock": self.clock.isoformat(), "pki": _pki_json(self.pki),
                "outcome": self.outcome, "events": self.events}

    @classmethod
    def from_json(cls, data: dict) -> Recording:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise SessionMismatch(f"not a {FORMAT} fixture (format {found!r})")
        try:
            return cls(data["scenario"], bytes.fromhex(data["seed"]), datetime.fromisoformat(data["clock"]),
                       _pki_from_json(data["pki"]), data["outcome"], data["events"])
        except KeyError as exc:
            raise DecodeError(f"the recorded session lacks {exc}") from None
        except (AttributeError, TypeError, ValueError) as exc:  # DecodeError of the PKI included
            raise DecodeError(f"the recorded session is malformed: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """A fixture written by ``record``; DecodeError (naming the file) when unreadable or malformed."""
        try:
            return cls.from_json(json.loads(Path(path).read_text("utf-8")))
        except OSError as exc:
            raise DecodeError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # not UTF-8, not JSON, or DecodeError from from_json
            raise DecodeError(f"{path}: {exc}") from None


async def run_session(scenario_name: str, seed: bytes, pki: Pki, clock: datetime = FIXED_CLOCK) -> Recording:
    """Run ``scenario_name`` with everything seeded and record it."""
    scenario = SCENARIOS[scenario_name]
    transcript = Transcript()
    now = fixed_clock(clock)
    with tempfile.TemporaryDirectory(prefix="kinsim-session-") as folder, deterministic_signatures():
        core = _smdp(Path(folder), pki, seed, now, scenario)
        euicc = _euicc(Path(folder), pki, seed, now)
        try:
            async with TestClient(TestServer(es9_app(core))) as client:
                outcome = await _download(euicc, RecordingEs9Peer(client, transcript), transcript, scenario)
        finally:
            euicc.close()
            core.store.close()
    return Recording(scenario_name, seed, clock, pki, outcome, transcript.events)


def _smdp(folder: Path, pki: Pki, seed: bytes, now, scenario: Scenario) -> SmdpCore:
    store = Store.open(folder / "smdp")
    core = SmdpCore(SmdpConfig.for_pkis([pki], address=ADDRESS), store, clock=now, rng=seeded_rng(seed, "smdp"))
    package = personalize(ts48_profile(PROFILE), iccid=ICCID, imsi="001010000000018", ki=bytes(range(16)),
                          opc=bytes(16))
    import_profile(store, package, now(), "session")
    core.orders.create_order(iccid=ICCID, matching_id=MATCHING_ID, confirmation_code=scenario.confirmation_code)
    return core


def _euicc(folder: Path, pki: Pki, seed: bytes, now):
    identity = EuiccIdentity(eid=pki.eid, euicc=pki.euicc, eum=pki.eum.cert, cis=(pki.ci.cert,))
    create_euicc(folder / "card", identity)
    return open_euicc(folder / "card", clock=now, rng=seeded_rng(seed, "euicc"))


async def _download(euicc, peer: RecordingEs9Peer, transcript: Transcript, scenario: Scenario) -> str:
    with Es10Client(RecordingTransport(euicc.card, transcript)) as es10:
        try:
            result = await download_profile(es10, peer, smdp_address=ADDRESS, matching_id=scenario.matching_id,
                                            confirmation_code=lambda: scenario.confirmation_code)
        except StatusCodeError as exc:
            return f"refused: {exc.subject_code} / {exc.reason_code}"
    return f"installed {result.iccid} in {result.isdp_aid}"


def new_pki(seed: bytes, clock: datetime = FIXED_CLOCK) -> Pki:
    """The session PKI: keys from the seed; certificates valid from a day before ``clock``."""
    return generate_pki("nist", smdp_address=ADDRESS, now=clock - timedelta(days=1), rng=seeded_rng(seed, "pki"))


# --- fixtures -------------------------------------------------------------------------------------


def record(scenario_name: str, seed: bytes, path: str | Path, *, pki: Pki | None = None) -> Recording:
    recording = asyncio.run(run_session(scenario_name, seed, pki or new_pki(seed)))
    try:
        Path(path).write_text(json.dumps(recording.to_json(), indent=1) + "\n")
    except OSError as exc:
        raise KinsimError(f"cannot write {path}: {exc.strerror or exc}") from None
    return recording


def replay(path: str | Path) -> Recording:
    """Re-run a recorded session with its seed, clock and PKI; SessionMismatch at the first byte that differs."""
    expected = Recording.load(path)
    actual = asyncio.run(run_session(expected.scenario, expected.seed, expected.pki, expected.clock))
    compare(expected, actual)
    return actual


def compare(expected: Recording, actual: Recording) -> None:
    for index, (want, got) in enumerate(zip(expected.events, actual.events, strict=False)):
        if want != got:
            field_name = next(k for k in want if want.get(k) != got.get(k)) if set(want) == set(got) else "kind"
            raise SessionMismatch(f"event {index} differs in {field_name}: recorded {_short(want.get(field_name))}, "
                                  f"replayed {_short(got.get(field_name))}")
    if len(expected.events) != len(actual.events):
        raise SessionMismatch(f"recorded {len(expected.events)} events, the replay produced {len(actual.events)}")
    if expected.outcome != actual.outcome:
        raise SessionMismatch(f"recorded outcome {expected.outcome!r}, replayed {actual.outcome!r}")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _pki_json(pki: Pki) -> dict:
    out = {}
    for name, credential in pki.credentials().items():
        entry = {"cert": base64.b64encode(credential.cert_der).decode("ascii")}
        if credential.key is not None:
            entry["key"] = credential.key_pem.decode("ascii")
        out[name] = entry
    return out


def _pki_from_json(data: dict) -> Pki:
    found = {}
    for name in PKI_NAMES:
        if name in data:
            entry = data[name]
            key = load_private_key(entry["key"].encode()) if "key" in entry else None
            found[name] = Credential(load_certificate(base64.b64decode(entry["cert"])), key)
    return Pki(curve=crypto.curve_name(found["ci"].cert.public_key()), **found)

