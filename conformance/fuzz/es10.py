"""The ES10 APDU handler under fuzz: ``euicc_sim`` Card.transmit with random APDUs, mutated ES10
requests (static ones, and AuthenticateServer/PrepareDownload valid for a live session) and mutated
Bound Profile Package segments.

Invariants per input: every APDU gets a status word and never '6F00' (the card's answer to an
unhandled exception); an input the card rejects (error status word, or an ES10 error alternative of
AuthenticateServer/PrepareDownload) leaves the stored card state unchanged; a package the card
refuses installs nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import strategies as st

from certs.pki import generate_pki
from conformance.es10_smdp import CardSession, RunnerSmdp
from conformance.fuzz import FuzzFailure, Harness, logged_exceptions
from conformance.fuzz.mutate import mutated
from conformance.recording import seeded_rng
from euicc_sim.card import create_euicc, open_euicc
from euicc_sim.identity import issue_identity
from lpa.es10 import Es10Client
from lpa.transport import SimCardTransport
from rsp import bpp
from rsp import messages as m
from rsp.errors import ApduError, KinsimError
from rsp.ids import iccid_to_bcd

SW_INTERNAL_ERROR = b"\x6f\x00"
CLASSES = (0x00, 0x01, 0x80, 0x81, 0x40, 0xC0, 0x20, 0xFF)
INSTRUCTIONS = (0xE2, 0xA4, 0x70, 0xC0, 0xAA, 0xB0, 0xD6, 0x88, 0xF2, 0xCA, 0x10)


class _InternalError(Exception):
    """The card answered 6F00: an unhandled exception inside it."""


@st.composite
def apdus(draw) -> bytes:
    """Structured command APDUs around the instructions the card knows, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    header = bytes([draw(st.sampled_from(CLASSES) | st.integers(0, 255)),
                    draw(st.sampled_from(INSTRUCTIONS) | st.integers(0, 255)),
                    draw(st.sampled_from((0x00, 0x04, 0x11, 0x91, 0x80)) | st.integers(0, 255)),
                    draw(st.integers(0, 255))])
    body = draw(st.binary(max_size=255))
    tail = bytes([len(body)]) + body if body else b""
    return header + tail + (bytes([draw(st.integers(0, 255))]) if draw(st.booleans()) else b"")


class Es10Harness(Harness):
    name = "es10-apdu"

    def __init__(self, *, rebuild_every: int = 200):
        super().__init__()
        self._rebuild_every = rebuild_every  # a fresh card now and then keeps every input equally cheap
        self._inputs = 0
        self._folder = Path(tempfile.mkdtemp(prefix="kinsim-fuzz-card-"))
        now = datetime.now(UTC)
        self.pki = generate_pki("nist", now=now - timedelta(days=1))
        self._identity = issue_identity(self.pki.eum, [self.pki.ci.cert], now=now - timedelta(hours=1))
        self.smdp = RunnerSmdp(self.pki, rng=os.urandom, clock=lambda: datetime.now(UTC))
        self.iccid = self.smdp.new_iccid()
        self.profile = self.smdp.profile(self.iccid)
        self._build()

    def _build(self) -> None:
        directory = Path(tempfile.mkdtemp(dir=self._folder)) / "card"
        create_euicc(directory, self._identity)
        self.euicc = open_euicc(directory)
        self.es10 = Es10Client(SimCardTransport(self.euicc.card))
        self.es10.open()
        self._install_reference_profile()

    def close(self) -> None:
        self.euicc.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    # --- the per-input check ------------------------------------------------------------------------

    def check(self, data: st.DataObject) -> None:
        with logged_exceptions("euicc_sim") as errors:
            try:
                self._one_input(data)
            except _InternalError as crash:
                self.crashed(str(crash), errors)
            except ApduError as exc:  # a valid request the harness made to set up the input
                if exc.sw != 0x6F00:
                    raise
                self.crashed(f"the card answered 6F00 to a valid request: {exc}", errors)

    def _one_input(self, data: st.DataObject) -> None:
        self._inputs += 1
        if self._inputs % self._rebuild_every == 0:
            self.euicc.close()
            self._build()
        # The runner's randomness comes from the input, so hypothesis can replay it exactly.
        self.smdp.rng = seeded_rng(data.draw(st.binary(min_size=8, max_size=8), label="smdp seed"), "fuzz-smdp")
        self.euicc.card.reset()
        self.es10.open()
        kind = data.draw(st.sampled_from(("apdu", "request", "authenticate", "prepare", "package")))
        getattr(self, f"_{kind}")(data)

    def _apdu(self, data) -> None:
        before = self._state()
        response = self.euicc.card.transmit(data.draw(apdus()))
        if len(response) < 2:
            raise FuzzFailure(f"the card answered {response.hex()} without a status word")
        if response[-2:] == SW_INTERNAL_ERROR:
            raise _InternalError("the card answered 6F00 to a random APDU")
        if response[-2] not in (0x90, 0x61, 0x91):
            self._unchanged(before, f"an APDU refused with {response[-2:].hex()}")

    def _request(self, data) -> None:
        self._send_mutated(data, data.draw(st.sampled_from(self._static_requests())), always_unchanged=False)

    def _authenticate(self, data) -> None:
        session = self._session()
        self._send_mutated(data, self.smdp.authenticate_server(session).dump(), always_unchanged=True)

    def _prepare(self, data) -> None:
        session = self._authenticated()
        self._send_mutated(data, self.smdp.prepare_download(session).dump(), always_unchanged=True)

    def _package(self, data) -> None:
        session = self._prepared()
        parts = bpp.segments(self.smdp.bind(session, *self.profile))
        index = data.draw(st.integers(0, len(parts) - 1))
        parts[index] = data.draw(mutated(parts[index]))
        before = self._state()
        result = self._load(parts)
        if result is not None and result["profileInstallationResultData"]["finalResult"].name == "successResult":
            return  # the change did not matter (e.g. it cut nothing); installed legitimately
        if self._state().profiles != before.profiles:
            raise FuzzFailure("a refused Bound Profile Package changed the installed profiles")
        self._forget_notifications()

    # --- helpers ------------------------------------------------------------------------------------

    def _send_mutated(self, data, request: bytes, *, always_unchanged: bool) -> None:
        blob = data.draw(mutated(request))
        before = self._state()
        try:
            answer = self.es10.store_data(blob, "fuzzed request")
        except ApduError as exc:
            if exc.sw == 0x6F00:
                raise _InternalError(f"the card answered 6F00 to {blob[:24].hex()}...") from None
            self._unchanged(before, f"a request refused with {exc.sw:04X}")
            return
        except ValueError:
            return  # more than 256 STORE DATA blocks: the LPA does not send it
        if always_unchanged:
            self._unchanged(before, f"a fuzzed session request answered {answer[:16].hex()}")

    def _load(self, parts: list[bytes]) -> m.ProfileInstallationResult | None:
        for part in parts:
            try:
                answer = self.es10.store_data(part, "LoadBoundProfilePackage")
            except ApduError as exc:
                if exc.sw == 0x6F00:
                    raise _InternalError(f"the card answered 6F00 to segment {part[:16].hex()}...") from None
                return None
            except ValueError:
                return None
            if answer:
                return m.decode(m.ProfileInstallationResult, answer)
        return None

    def _state(self):
        return self.euicc.isdr.state

    def _unchanged(self, before, what: str) -> None:
        if self._state() != before:
            raise FuzzFailure(f"{what} changed the card's stored state")

    def _session(self) -> CardSession:
        info1 = self.es10.get_euicc_info1()
        session = CardSession(self.es10.get_euicc_challenge(), self.smdp.rng(16))
        session.ci_pkid = info1["euiccCiPKIdListForSigning"].native[0]
        return session

    def _authenticated(self) -> CardSession:
        session = self._session()
        response = self.es10.store_data(self.smdp.authenticate_server(session).dump(), "AuthenticateServer")
        ok = m.decode(m.AuthenticateServerResponse, response)
        self.smdp.check_authenticated(session, ok, [self.smdp.pki.ci.cert], self.euicc.eid)
        return session

    def _prepared(self) -> CardSession:
        session = self._authenticated()
        answer = self.es10.store_data(self.smdp.prepare_download(session).dump(), "PrepareDownload")
        self.smdp.check_prepared(session, m.decode(m.PrepareDownloadResponse, answer))
        return session

    def _static_requests(self) -> list[bytes]:
        iccid = {"iccid": iccid_to_bcd(self.iccid)}
        values = [
            m.GetEuiccInfo1Request({}), m.GetEuiccInfo2Request({}), m.GetEuiccChallengeRequest({}),
            m.ListNotificationRequest({}), m.RetrieveNotificationsListRequest({}),
            m.ProfileInfoListRequest({"searchCriteria": iccid}), m.GetEuiccDataRequest({"tagList": b"\x5a"}),
            m.SetNicknameRequest({**iccid, "profileNickname": "fuzz"}), m.GetRatRequest({}),
            m.EnableProfileRequest({"profileIdentifier": iccid, "refreshFlag": False}),
            m.DisableProfileRequest({"profileIdentifier": iccid, "refreshFlag": False}),
            m.CancelSessionRequest({"transactionId": bytes(16), "reason": 1}),
            m.NotificationSentRequest({"seqNumber": 1}), m.EuiccConfiguredAddressesRequest({}),
        ]
        return [value.dump() for value in values]

    def _install_reference_profile(self) -> None:
        session = self._prepared()
        result = self._load(bpp.segments(self.smdp.bind(session, *self.profile)))
        if result is None or result["profileInstallationResultData"]["finalResult"].name != "successResult":
            raise KinsimError("the fuzz harness could not install its reference profile")
        self._forget_notifications()

    def _forget_notifications(self) -> None:
        with suppress(KinsimError):
            for metadata in self.es10.list_notifications():
                self.es10.remove_notification(metadata["seqNumber"].native)
