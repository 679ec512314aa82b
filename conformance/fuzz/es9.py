"""The ES9+ JSON handlers under fuzz: our SM-DP+'s aiohttp application (``smdp.server.es9_app``),
reached through aiohttp's test client, with random bodies and valid requests of live RSP sessions
mutated at the JSON or byte level (the runner's eUICC, ``conformance.es9_euicc``, makes them).

Invariants per input: HTTP 200 with a JSON header (204 for HandleNotification), never the SM-DP+'s
"internal error" (1.2 / 4.2, its answer to an unhandled exception); a refused request leaves the
SQLite content unchanged, except where SGP.22 has the SM-DP+ count or close on a refusal (an eUICC
error relayed, confirmation code and download attempts).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import strategies as st

from certs.pki import generate_pki
from conformance.es9_euicc import RunnerEuicc, Session
from conformance.fuzz import FuzzFailure, Harness, logged_exceptions
from conformance.fuzz.mutate import JSON_VALUES, mutated_body
from conformance.identity import euicc_from_pki
from conformance.recording import seeded_rng
from rsp import es9_json, status
from rsp.errors import DecodeError, StatusCode, StatusCodeError
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import import_profile
from smdp.server import es9_app
from smdp.store import Store

ADDRESS = "smdp.fuzz.test"
ICCID = "8944000000000000019"
TABLES = ("profiles", "sessions", "used_otpks", "notifications", "outbox")
# Refusals after which SGP.22 has the SM-DP+ keep a write (a counted attempt, a closed session).
STATE_CHANGING = {StatusCode("8.1", "4.2"), status.CC_REFUSED, status.CC_RETRIES_EXCEEDED,
                  status.DOWNLOAD_ATTEMPTS_EXCEEDED}
KINDS = ("random", "initiate", "authenticate", "bpp", "cancel", "notification")


class Es9Harness(Harness):
    name = "es9-json"

    def __init__(self, *, rebuild_every: int = 200):
        super().__init__()
        self._rebuild_every = rebuild_every  # a fresh SM-DP+ now and then keeps every input equally cheap
        self._inputs = 0
        self._folder = Path(tempfile.mkdtemp(prefix="kinsim-fuzz-smdp-"))
        self.loop = asyncio.new_event_loop()
        self._pki = generate_pki("nist", smdp_address=ADDRESS, now=datetime.now(UTC) - timedelta(days=1))
        self._build()

    def _build(self) -> None:
        now, pki = datetime.now(UTC), self._pki
        config = SmdpConfig.for_pkis([pki], address=ADDRESS, max_download_attempts=10**9, max_cc_attempts=10**9)
        self.store = Store.open(Path(tempfile.mkdtemp(dir=self._folder)) / "smdp")
        core = SmdpCore(config, self.store)
        upp = personalize(ts48_profile(), iccid=ICCID, imsi="001010000000019", ki=bytes(range(16)), opc=bytes(16))
        import_profile(self.store, upp, now, "fuzz")
        self.matching_id = core.orders.create_order(iccid=ICCID)[1]["matchingId"]
        self.material, self.ci = euicc_from_pki(pki), pki.ci.cert
        self.client = TestClient(TestServer(es9_app(core)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def _teardown(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.store.close()

    def close(self) -> None:
        self._teardown()
        self.loop.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    # --- the per-input check ------------------------------------------------------------------------

    def check(self, data: st.DataObject) -> None:
        with logged_exceptions("kinsim.smdp") as errors:
            try:
                self._one_input(data, errors)
            except StatusCodeError as exc:  # a valid request the harness made to set up the input
                if exc.code != status.EXECUTION_ERROR:
                    raise
                self.crashed(f"a valid request got 'internal error': {exc}", errors)

    def _one_input(self, data: st.DataObject, errors: list[BaseException]) -> None:
        self._inputs += 1
        if self._inputs % self._rebuild_every == 0:
            self._teardown()
            self._build()
        # The eUICC's randomness comes from the input, so hypothesis can replay it exactly.
        rng = seeded_rng(data.draw(st.binary(min_size=8, max_size=8), label="euicc seed"), "fuzz-euicc")
        self.euicc = RunnerEuicc(self.material, self.ci, rng=rng, clock=lambda: datetime.now(UTC))
        kind = data.draw(st.sampled_from(KINDS))
        if kind == "random":
            function = data.draw(st.sampled_from(list(es9_json.ES9_FUNCTIONS.values())))
            body, original = data.draw(st.binary(max_size=200) | JSON_VALUES.map(_dumps)), None
        else:
            function, values = getattr(self, f"_{kind}")()
            original = es9_json.encode_request(function, values)
            body = data.draw(mutated_body(original))
        before = self._snapshot()
        http_status, payload = self.loop.run_until_complete(self._post(function.path, body))
        self._judge(function, original, body, before, http_status, payload, errors)

    def _judge(self, function, original, body, before, http_status, payload, errors) -> None:
        if http_status == 204 and function is es9_json.HANDLE_NOTIFICATION and not payload:
            if not _same_notification(original, body):
                self._unchanged(before, "an altered notification")
            return
        if http_status != 200:
            raise FuzzFailure(f"{function.name}: HTTP {http_status} {payload[:80]!r}")
        try:
            header = json.loads(payload)["header"]["functionExecutionStatus"]
        except (ValueError, KeyError, TypeError):
            raise FuzzFailure(f"{function.name}: the answer has no functionExecutionStatus: {payload[:80]!r}") from None
        if header.get("status") != es9_json.STATUS_FAILED:
            return  # executed: the mutation did not matter, state may legitimately change
        data = header.get("statusCodeData", {})
        code = StatusCode(str(data.get("subjectCode")), str(data.get("reasonCode")))
        if code == status.EXECUTION_ERROR:
            self.crashed(f"{function.name} answered 'internal error' to a fuzzed request", errors)
        elif code not in STATE_CHANGING:
            self._unchanged(before, f"{function.name} refused with {code.describe()}")

    # --- valid requests of live sessions ------------------------------------------------------------

    def _initiate(self):
        session = Session(challenge=self.euicc.rng(16))
        return es9_json.INITIATE_AUTHENTICATION, self.euicc.initiate_values(session, ADDRESS)

    def _initiated(self) -> Session:
        function, values = self._initiate()
        session = Session(challenge=values["euiccChallenge"])
        init = self._call(function, values)
        self.euicc.check_initiate(session, init, ADDRESS)
        return session

    def _authenticate(self):
        session = self._initiated()
        response = self.euicc.authenticate_server(session, self.matching_id)
        return es9_json.AUTHENTICATE_CLIENT, {"transactionId": session.transaction_id,
                                              "authenticateServerResponse": response}

    def _authenticated(self) -> Session:
        session = self._initiated()
        values = {"transactionId": session.transaction_id,
                  "authenticateServerResponse": self.euicc.authenticate_server(session, self.matching_id)}
        self.euicc.check_authenticate_client(session, self._call(es9_json.AUTHENTICATE_CLIENT, values))
        return session

    def _bpp(self):
        session = self._authenticated()
        return es9_json.GET_BOUND_PROFILE_PACKAGE, {"transactionId": session.transaction_id,
                                                    "prepareDownloadResponse": self.euicc.prepare_download(session)}

    def _cancel(self):
        session = self._authenticated()
        response = self.euicc.cancel(session.transaction_id, session.dp_auth.oid)
        return es9_json.CANCEL_SESSION, {"transactionId": session.transaction_id, "cancelSessionResponse": response}

    def _notification(self):
        return es9_json.HANDLE_NOTIFICATION, {"pendingNotification": self.euicc.other_notification(ICCID, ADDRESS)}

    # --- plumbing -----------------------------------------------------------------------------------

    def _call(self, function: es9_json.Function, values: dict) -> dict:
        body = _dumps(es9_json.encode_request(function, values))
        http_status, payload = self.loop.run_until_complete(self._post(function.path, body))
        if http_status != 200:
            raise FuzzFailure(f"a valid {function.name} got HTTP {http_status}")
        return es9_json.decode_response(function, json.loads(payload))

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": es9_json.CONTENT_TYPE, "X-Admin-Protocol": es9_json.ADMIN_PROTOCOL}
        async with self.client.post(path, data=body, headers=headers) as response:
            return response.status, await response.read()

    def _snapshot(self) -> tuple:
        return tuple(tuple(self.store.conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall())
                     for table in TABLES)

    def _unchanged(self, before: tuple, what: str) -> None:
        after = self._snapshot()
        if after != before:
            changed = [t for t, b, a in zip(TABLES, before, after, strict=True) if a != b]
            raise FuzzFailure(f"{what} changed the SM-DP+ state (tables {', '.join(changed)})")


def _dumps(value) -> bytes:
    return json.dumps(value).encode()


def _same_notification(original: dict | None, body: bytes) -> bool:
    """True when the altered body still carries the original notification's exact DER."""
    try:
        sent = es9_json.decode_request(es9_json.HANDLE_NOTIFICATION, json.loads(body))["pendingNotification"]
        kept = es9_json.decode_request(es9_json.HANDLE_NOTIFICATION, original)["pendingNotification"]
    except (DecodeError, ValueError, TypeError, KeyError):
        return False
    return sent.dump() == kept.dump()

