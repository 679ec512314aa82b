"""Test doubles for the LPA: a small APDU-level card, a scripted ISD-R, a scripted ES9+ peer, a TLS server."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from aiohttp import web
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509

from certs.pki import Pki, generate_pki
from rsp import es9_json
from rsp import messages as m
from rsp.tlv import read_header

TID = bytes.fromhex("0102030405060708090A0B0C0D0E0F10")
CHALLENGE = bytes(range(16))
SERVER_CHALLENGE = bytes(range(16, 32))
ICCID_BCD = bytes.fromhex("98001032547698103214")  # ICCID 89000123456789012341
ICCID = "89000123456789012341"
EID = "89049032123451234512345678901235"


class FakeCard:
    """Just enough ISO 7816 / SGP.22 5.7.2 to carry ES10: MANAGE CHANNEL, SELECT, STORE DATA, GET RESPONSE.

    ``respond(request) -> response`` plays the ISD-R. ``chunk`` limits bytes per GET RESPONSE;
    ``unknown_size`` makes it announce '6100' and correct the terminal's Le with '6Cxx';
    ``channels=False`` refuses MANAGE CHANNEL like a card without logical channels.
    """

    def __init__(self, respond: Callable[[bytes], bytes], *, chunk: int = 256, unknown_size: bool = False,
                 channels: bool = True, aid: bytes = bytes.fromhex("A0000005591010FFFFFFFF8900000100")):
        self.respond = respond
        self.chunk = chunk
        self.unknown_size = unknown_size
        self.channels_supported = channels
        self.aid = aid
        self.apdus: list[bytes] = []
        self.requests: list[bytes] = []
        self.open_channels = {0}
        self.selected: set[int] = set()
        self.pending: dict[int, bytes] = {}
        self.assembly: dict[int, tuple[bytearray, int]] = {}

    def transmit(self, apdu: bytes) -> bytes:
        self.apdus.append(bytes(apdu))
        cla, ins, p1, p2 = apdu[:4]
        channel = 4 + (cla & 0x0F) if cla & 0x40 else cla & 0x03
        if channel not in self.open_channels:
            return b"\x68\x81"
        body = apdu[4:]
        data = body[1 : 1 + body[0]] if len(body) > 1 else b""
        if ins == 0x70:
            return self._manage_channel(p1, p2)
        if ins == 0xA4:
            if cla & 0x80 or data != self.aid:
                return b"\x6a\x82"
            self.selected.add(channel)
            return self._answer(channel, b"\x6f\x12\x84\x10" + self.aid)
        if ins == 0xC0:
            return self._get_response(channel, body[-1] or 256 if body else 256)
        if ins == 0xE2:
            return self._store_data(channel, cla, p1, p2, data)
        return b"\x6d\x00"

    def _manage_channel(self, p1: int, p2: int) -> bytes:
        if not self.channels_supported:
            return b"\x68\x81"
        if p1 == 0x00:
            number = min(set(range(1, 20)) - self.open_channels)
            self.open_channels.add(number)
            return bytes([number]) + b"\x90\x00"
        self.open_channels.discard(p2)
        self.selected.discard(p2)
        return b"\x90\x00"

    def _store_data(self, channel: int, cla: int, p1: int, p2: int, data: bytes) -> bytes:
        if not cla & 0x80 or channel not in self.selected:
            return b"\x69\x85"
        buffer, expected = self.assembly.get(channel, (bytearray(), 0))
        if p2 == 0:
            buffer = bytearray()
        elif p2 != expected:
            return b"\x6a\x86"
        buffer += data
        if p1 == 0x11:
            self.assembly[channel] = (buffer, p2 + 1)
            return b"\x90\x00"
        self.assembly.pop(channel, None)
        self.requests.append(bytes(buffer))
        return self._answer(channel, self.respond(bytes(buffer)))

    def _answer(self, channel: int, data: bytes) -> bytes:
        if not data:
            return b"\x90\x00"
        self.pending[channel] = data
        return self._more(channel)

    def _more(self, channel: int) -> bytes:
        left = len(self.pending[channel])
        return bytes([0x61, 0 if self.unknown_size or left >= 256 else left])

    def _get_response(self, channel: int, le: int) -> bytes:
        pending = self.pending.get(channel, b"")
        if not pending:
            return b"\x69\x85"
        if le > len(pending) and len(pending) < 256:
            return bytes([0x6C, len(pending)])
        size = min(le, self.chunk)
        out, self.pending[channel] = pending[:size], pending[size:]
        if self.pending[channel]:
            return out + self._more(channel)
        del self.pending[channel]
        return out + b"\x90\x00"


class ScriptedIsdr:
    """An ISD-R answering by request tag: ``answers[tag]`` is bytes or ``f(request) -> bytes``."""

    def __init__(self, answers: dict[int, object] | None = None):
        self.answers = dict(answers or {})
        self.requests: list[bytes] = []

    def __call__(self, request: bytes) -> bytes:
        self.requests.append(request)
        tag = read_header(request)[0]
        answer = self.answers[tag] if tag in self.answers else self.answers[None]  # None: any other tag
        return answer(request) if callable(answer) else answer

    def tags(self) -> list[int]:
        return [read_header(r)[0] for r in self.requests]

    def requests_of(self, tag: int) -> list[bytes]:
        return [r for r in self.requests if read_header(r)[0] == tag]


# --- canned ES10 values ---------------------------------------------------------------------------

_PKI: dict[str, Pki] = {}


def pki(name: str = "main", **kwargs) -> Pki:
    """A generated PKI cached per name (generation takes a moment)."""
    if name not in _PKI:
        _PKI[name] = generate_pki("nist", eid=EID, **kwargs)  # real time: TLS checks the real clock
    return _PKI[name]


def euicc_info1(pkid: bytes = b"\x01" * 20) -> m.EUICCInfo1:
    return m.EUICCInfo1({"svn": b"\x02\x05\x00", "euiccCiPKIdListForVerification": [pkid],
                         "euiccCiPKIdListForSigning": [pkid]})


def euicc_info2(pkid: bytes = b"\x01" * 20) -> m.EUICCInfo2:
    return m.EUICCInfo2({
        "profileVersion": b"\x02\x03\x01", "svn": b"\x02\x05\x00", "euiccFirmwareVer": b"\x01\x02\x03",
        "extCardResource": bytes.fromhex("810101820300F000830200FF"),
        "uiccCapability": {"usimSupport", "isimSupport", "akaMilenage"},
        "rspCapability": {"additionalProfile", "testProfileSupport"},
        "euiccCiPKIdListForVerification": [pkid], "euiccCiPKIdListForSigning": [pkid],
        "ppVersion": b"\x01\x00\x00", "sasAcreditationNumber": "KINSIM-TEST",
    })


def profile_info(iccid_bcd: bytes = ICCID_BCD, state: str = "enabled", nickname: str | None = None) -> dict:
    info = {"iccid": iccid_bcd, "isdpAid": bytes.fromhex("A0000005591010FFFFFFFF8900001000"), "profileState": state,
            "serviceProviderName": "GSMA", "profileName": "TS.48 v7", "profileClass": "test"}
    if nickname is not None:
        info["profileNickname"] = nickname
    return info


def notification_metadata(seq: int, event: str = "notificationEnable", address: str = "smdp.kinsim.test",
                          iccid_bcd: bytes | None = ICCID_BCD) -> dict:
    value = {"seqNumber": seq, "profileManagementOperation": {event}, "notificationAddress": address}
    if iccid_bcd is not None:
        value["iccid"] = iccid_bcd
    return value


def other_notification(seq: int, event: str = "notificationEnable", address: str = "smdp.kinsim.test") -> dict:
    p = pki()
    return {"tbsOtherNotification": notification_metadata(seq, event, address),
            "euiccNotificationSignature": b"\x00" * 64,
            "euiccCertificate": m.decode(asn1_x509.Certificate, p.euicc.cert_der),
            "eumCertificate": m.decode(asn1_x509.Certificate, p.eum.cert_der)}


def pending_other(seq: int, event: str = "notificationEnable", address: str = "smdp.kinsim.test"):
    return m.PendingNotification(name="otherSignedNotification", value=other_notification(seq, event, address))


def installation_result(seq: int, *, error: tuple[int, int] | None = None, tid: bytes = TID,
                        address: str = "smdp.kinsim.test") -> m.ProfileInstallationResult:
    if error is None:
        final = {"successResult": {"aid": bytes.fromhex("A0000005591010FFFFFFFF8900001000"), "simaResponse": b""}}
    else:
        final = {"errorResult": {"bppCommandId": error[0], "errorReason": error[1]}}
    data = {"transactionId": tid, "notificationMetadata": notification_metadata(seq, "notificationInstall", address),
            "finalResult": final}
    return m.ProfileInstallationResult({"profileInstallationResultData": data, "euiccSignPIR": b"\x00" * 64})


def notification_list_response(*seqs: int) -> bytes:
    return m.RetrieveNotificationsListResponse(
        name="notificationList", value=[pending_other(s) for s in seqs]).dump()


# --- ES9+ peers -----------------------------------------------------------------------------------


class RecordingPeer:
    """An ES9+ peer that records HandleNotification calls; ``fail`` makes every call raise it."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.received: list[bytes] = []

    async def handle_notification(self, *, pending_notification) -> None:
        if self.fail is not None:
            raise self.fail
        self.received.append(pending_notification.dump())


def through_json(function: es9_json.Function, values: dict) -> dict:
    """What the ES9+ client hands back: a response encoded to JSON and decoded again."""
    return es9_json.decode_response(function, es9_json.encode_response(function, values))


# --- a TLS server ------------------------------------------------------------------------------------


def server_context(credential, tmp_path) -> ssl.SSLContext:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(credential.cert_pem)
    key.write_bytes(credential.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@contextlib.asynccontextmanager
async def tls_server(app: web.Application, context: ssl.SSLContext):
    """Serve ``app`` over TLS on an ephemeral loopback port; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        await runner.cleanup()
        await asyncio.sleep(0)


# --- a scripted eUICC and SM-DP+ for the download procedure ------------------------------------------

DP_ADDRESS = "smdp.kinsim.test"
SMDP_OID = "2.999.10"


def certificate_value(der: bytes) -> asn1_x509.Certificate:
    return m.decode(asn1_x509.Certificate, der)


class FakeEuicc(ScriptedIsdr):
    """An ISD-R that plays a download without cryptography and keeps a notification list.

    ``authenticate_error`` / ``prepare_error`` answer with that error code; ``install_error`` is a
    (bppCommandId, errorReason) for the ProfileInstallationResult; ``rat`` the GetRAT answer.
    """

    def __init__(self, *, segments: int = 0, authenticate_error: int | None = None,
                 prepare_error: int | None = None, install_error: tuple[int, int] | None = None,
                 rat: list | None = None):
        super().__init__()
        self.pending: dict[int, m.PendingNotification] = {}
        self.next_seq = 1
        self.segments_left = segments
        self.authenticate_error = authenticate_error
        self.prepare_error = prepare_error
        self.install_error = install_error
        self.answers = {
            0xBF2E: m.GetEuiccChallengeResponse({"euiccChallenge": CHALLENGE}).dump(),
            0xBF20: euicc_info1().dump(),
            0xBF38: self._authenticate_server,
            0xBF21: self._prepare_download,
            0xBF41: self._cancel_session,
            0xBF2B: self._retrieve,
            0xBF30: self._remove,
            0xBF43: m.GetRatResponse({"rat": rat or []}).dump(),
            None: self._load_segment,
        }

    def add_notification(self, pending: m.PendingNotification) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.pending[seq] = pending
        return seq

    def _authenticate_server(self, request: bytes) -> bytes:
        if self.authenticate_error is not None:
            return m.AuthenticateServerResponse(name="authenticateResponseError", value={
                "transactionId": TID, "authenticateErrorCode": self.authenticate_error}).dump()
        parsed = m.decode(m.AuthenticateServerRequest, request)
        p = pki()
        signed = {"transactionId": TID, "serverAddress": parsed["serverSigned1"]["serverAddress"].native,
                  "serverChallenge": SERVER_CHALLENGE, "euiccInfo2": euicc_info2(), "ctxParams1": parsed["ctxParams1"]}
        return m.AuthenticateServerResponse(name="authenticateResponseOk", value={
            "euiccSigned1": signed, "euiccSignature1": b"\x02" * 64,
            "euiccCertificate": certificate_value(p.euicc.cert_der),
            "eumCertificate": certificate_value(p.eum.cert_der)}).dump()

    def _prepare_download(self, request: bytes) -> bytes:
        if self.prepare_error is not None:
            return m.PrepareDownloadResponse(name="downloadResponseError", value={
                "transactionId": TID, "downloadErrorCode": self.prepare_error}).dump()
        parsed = m.decode(m.PrepareDownloadRequest, request)
        signed = {"transactionId": TID, "euiccOtpk": b"\x04" + bytes(64)}
        if parsed["hashCc"].native is not None:
            signed["hashCc"] = parsed["hashCc"].native
        return m.PrepareDownloadResponse(name="downloadResponseOk", value={
            "euiccSigned2": signed, "euiccSignature2": b"\x03" * 64}).dump()

    def _load_segment(self, request: bytes) -> bytes:
        self.segments_left -= 1
        if self.segments_left > 0 and self.install_error is None:
            return b""
        seq = self.next_seq
        result = installation_result(seq, error=self.install_error)
        self.add_notification(m.PendingNotification(name="profileInstallationResult", value=result))
        return result.dump()

    def _cancel_session(self, request: bytes) -> bytes:
        parsed = m.decode(m.CancelSessionRequest, request)
        return m.CancelSessionResponse(name="cancelSessionResponseOk", value={
            "euiccCancelSessionSigned": {"transactionId": parsed["transactionId"].native, "smdpOid": SMDP_OID,
                                         "reason": int(parsed["reason"])},
            "euiccCancelSessionSignature": b"\x04" * 64}).dump()

    def _retrieve(self, request: bytes) -> bytes:
        return m.RetrieveNotificationsListResponse(name="notificationList",
                                                   value=[self.pending[s] for s in sorted(self.pending)]).dump()

    def _remove(self, request: bytes) -> bytes:
        seq = m.decode(m.NotificationSentRequest, request)["seqNumber"].native
        found = self.pending.pop(seq, None)
        return m.NotificationSentResponse({"deleteNotificationStatus": 0 if found is not None else 1}).dump()

    def cancel_reasons(self) -> list[int]:
        return [int(m.decode(m.CancelSessionRequest, r)["reason"]) for r in self.requests_of(0xBF41)]


class FakeSmdp:
    """An ES9+ peer answering through the JSON binding; ``fail`` maps a method name to an exception."""

    def __init__(self, *, address: str = DP_ADDRESS, cc_required: bool = False, metadata: dict | None = None,
                 package: bytes = b"", fail: dict | None = None):
        self.address = address
        self.cc_required = cc_required
        self.metadata = metadata or {"iccid": ICCID_BCD, "serviceProviderName": "Kin Mobile",
                                     "profileName": "Family plan", "profileClass": "operational"}
        self.package = package
        self.fail = fail or {}
        self.calls: list[tuple[str, dict]] = []

    def _record(self, name: str, values: dict) -> None:
        self.calls.append((name, values))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def initiate_authentication(self, *, euicc_challenge, euicc_info1, smdp_address):
        self._record("initiate_authentication", {"euicc_challenge": euicc_challenge, "smdp_address": smdp_address})
        p = pki()
        signed = m.ServerSigned1({"transactionId": TID, "euiccChallenge": euicc_challenge,
                                  "serverAddress": self.address, "serverChallenge": SERVER_CHALLENGE})
        return through_json(es9_json.INITIATE_AUTHENTICATION, {
            "transactionId": TID, "serverSigned1": signed, "serverSignature1": es9_json.Signature(b"\x01" * 64),
            "euiccCiPKIdToBeUsed": asn1_core.OctetString(p.ci.pkid), "serverCertificate": p.dp_auth.cert_der})

    async def authenticate_client(self, *, transaction_id, authenticate_server_response):
        self._record("authenticate_client", {"response": authenticate_server_response})
        p = pki()
        return through_json(es9_json.AUTHENTICATE_CLIENT, {
            "transactionId": TID, "profileMetadata": m.StoreMetadataRequest(self.metadata),
            "smdpSigned2": m.SmdpSigned2({"transactionId": TID, "ccRequiredFlag": self.cc_required}),
            "smdpSignature2": es9_json.Signature(b"\x05" * 64), "smdpCertificate": p.dp_pb.cert_der})

    async def get_bound_profile_package(self, *, transaction_id, prepare_download_response):
        self._record("get_bound_profile_package", {"response": prepare_download_response})
        return through_json(es9_json.GET_BOUND_PROFILE_PACKAGE, {
            "transactionId": TID, "boundProfilePackage": self.package})

    async def handle_notification(self, *, pending_notification):
        self._record("handle_notification", {"notification": pending_notification.dump()})

    async def cancel_session(self, *, transaction_id, cancel_session_response):
        self._record("cancel_session", {"transaction_id": transaction_id, "response": cancel_session_response})


def bound_package(upp_size: int = 3000) -> bytes:
    """A structurally real BoundProfilePackage (random keys: only its layout matters to the LPA)."""
    from rsp import bpp as rsp_bpp
    from rsp import crypto
    from rsp.ids import eid_to_bytes

    keys = [crypto.generate_private_key("nist") for _ in range(3)]
    metadata = m.StoreMetadataRequest({"iccid": ICCID_BCD, "serviceProviderName": "GSMA",
                                       "profileName": "TS.48"}).dump()
    return rsp_bpp.build_bound_profile_package(
        transaction_id=TID, eid=eid_to_bytes(EID), euicc_otpk=crypto.public_key_bytes(keys[0].public_key()),
        smdp_otsk=keys[1], dp_pb_key=keys[2], metadata=metadata, upp=bytes(upp_size))


# --- the real SM-DP+ and software eUICC, for end-to-end tests ------------------------------------------

TS48_ICCID = "89000123456789012341"


def smdp_core(pki_value, directory):
    """An SM-DP+ core over a fresh store holding the TS.48 test profile (Available)."""
    from rsp.testdata import ts48_profile
    from smdp.config import SmdpConfig
    from smdp.core import SmdpCore
    from smdp.orders import import_profile
    from smdp.store import Store

    core = SmdpCore(SmdpConfig.for_pkis([pki_value]), Store.open(directory))
    import_profile(core.store, ts48_profile(), core.clock())
    return core


def software_card(pki_value, directory, **config):
    """A new software eUICC certified by the PKI's EUM, opened and powered."""
    from euicc_sim.card import create_euicc, open_euicc
    from euicc_sim.identity import EuiccConfig, issue_identity

    create_euicc(directory, issue_identity(pki_value.eum, [pki_value.ci.cert], config=EuiccConfig(**config)))
    return open_euicc(directory)


class LoopThread:
    """An event loop in a background thread, so servers keep running while CLI code calls asyncio.run."""

    def __init__(self):
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


@contextlib.contextmanager
def smdp_in_thread(core):
    """Serve the SM-DP+ from a background event loop; yields the port."""
    from smdp.server import SmdpServer

    thread = LoopThread()
    server = SmdpServer(core)
    try:
        urls = thread.run(server.start())
        yield int(urls["es9"].rsplit(":", 1)[1])
    finally:
        thread.run(server.stop())
        thread.close()
