"""Shared pieces of the SM-DP+ tests: a test PKI, a clock, an inventory, the SM-DP+ wired over a
JSON round trip, and the eUICC side of the protocol (signing euiccSigned1/euiccSigned2 and the
notifications with a test eUICC identity from certs.pki, verifying what the SM-DP+ signs)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import queue
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import Credential, Pki, generate_pki
from rsp import bpp, crypto, es9_json
from rsp import messages as m
from rsp.activation import hash_confirmation_code
from rsp.bsp import unprotect_segments
from rsp.ids import eid_to_bytes, iccid_to_bcd
from rsp.saip.personalize import personalize_batch
from rsp.testdata import ts48_profile
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import import_profile
from smdp.server import load_credential
from smdp.store import Store

ADDRESS = "localhost"  # the DPtls certificate of generate_pki covers localhost and 127.0.0.1
EID = "89049032123451234512345678901235"
OTHER_EID = "89049032000000000000000000000066"
ICCID_START = "8944000000000000001"
PROFILE_TYPE = "family-basic"

_PKIS: dict[tuple, Pki] = {}
_PACKAGES: list = []


def test_pki(curve: str = "nist", eid: str = EID) -> Pki:
    """One PKI per curve and EID for the whole run (generation is the slow part of a test)."""
    key = (curve, eid)
    if key not in _PKIS:
        _PKIS[key] = generate_pki(curve, smdp_address=ADDRESS, eid=eid)
    return _PKIS[key]


test_pki.__test__ = False  # not a test, despite the name


def packages(count: int = 4) -> list:
    """TS.48 v7 personalized with consecutive ICCIDs (fixed keys, so the run is reproducible)."""
    while len(_PACKAGES) < count:
        _PACKAGES[:] = list(personalize_batch(ts48_profile(), iccid_start=ICCID_START, imsi_start="001010000000001",
                                              count=count, key_source=lambda n: bytes(range(n))))
    return _PACKAGES[:count]


class Clock:
    """A settable clock: tests move time instead of waiting."""

    def __init__(self, now: datetime | None = None):
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def seeded_rng(seed: bytes = b"kinsim"):
    """Deterministic bytes: SHA-256(seed | counter) blocks."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def make_config(pki: Pki, **settings) -> SmdpConfig:
    return SmdpConfig.for_pkis([pki], address=ADDRESS, **settings)


@dataclass
class Smdp:
    """An SM-DP+ core over a fresh store with an inventory of personalized TS.48 profiles."""

    core: SmdpCore
    store: Store
    clock: Clock
    iccids: list[str] = field(default_factory=list)

    @property
    def orders(self):
        return self.core.orders

    def call(self, function: es9_json.Function, values: dict) -> dict:
        """One ES9+ call through the JSON binding both ways, as the wire would carry it."""
        body = json.loads(json.dumps(es9_json.encode_request(function, values)))
        result = self.core.handle(function, es9_json.decode_request(function, body))
        if function.empty_response_status:
            return {}
        return es9_json.decode_response(function, json.loads(json.dumps(es9_json.encode_response(function, result))))


def make_smdp(path, pki: Pki | None = None, *, count: int = 3, clock: Clock | None = None, rng=os.urandom,
              **settings) -> Smdp:
    pki = pki or test_pki()
    clock = clock or Clock()
    store = Store.open(path)
    core = SmdpCore(make_config(pki, **settings), store, clock=clock, rng=rng)
    iccids = [import_profile(store, p.der, clock(), PROFILE_TYPE).iccid for p in packages(count)]
    return Smdp(core, store, clock, iccids)


def snapshot(store: Store) -> dict:
    """Everything about orders and inventory, to assert that a refused request changed nothing."""
    rows = store.conn.execute("SELECT * FROM profiles ORDER BY iccid").fetchall()
    types = store.conn.execute("SELECT * FROM profile_types ORDER BY name").fetchall()
    return {"profiles": rows, "types": types}


# --- the eUICC side -------------------------------------------------------------------------------


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(Credential(cert).cert_der)


def _public_key(value: asn1_x509.Certificate) -> ec.EllipticCurvePublicKey:
    return x509.load_der_x509_certificate(value.dump()).public_key()


def euicc_info2(ci_pkid: bytes) -> dict:
    return {
        "profileVersion": b"\x02\x03\x00", "svn": b"\x02\x05\x00", "euiccFirmwareVer": b"\x01\x00\x00",
        "extCardResource": b"\x81\x01\x00", "uiccCapability": {"usimSupport", "isimSupport"},
        "rspCapability": {"additionalProfile"}, "euiccCiPKIdListForVerification": [ci_pkid],
        "euiccCiPKIdListForSigning": [ci_pkid], "ppVersion": b"\x01\x00\x00", "sasAcreditationNumber": "KINSIM-TEST",
    }


class EuiccSide:
    """What the eUICC signs and checks, written from SGP.22 5.7 with a test identity.

    Keyword arguments of each step tamper with one field, for the negative tests.
    """

    def __init__(self, pki: Pki, *, euicc: Credential | None = None, eum: Credential | None = None, rng=os.urandom):
        self.pki = pki
        self.euicc = euicc or pki.euicc
        self.eum = eum or pki.eum
        self.rng = rng
        self.ci_pkid = pki.ci.pkid
        self.signatures1: dict[bytes, object] = {}  # transactionId -> the euiccSignature1 data object sent
        self.otsk: ec.EllipticCurvePrivateKey | None = None
        self.smdp_oid: str | None = None
        self.dp_pb_key: ec.EllipticCurvePublicKey | None = None
        self.seq = 0

    @property
    def eid(self) -> str:
        return self.euicc.cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value

    def info1(self, *, svn: bytes = b"\x02\x05\x00", verification=None, signing=None) -> m.EUICCInfo1:
        return m.EUICCInfo1({"svn": svn, "euiccCiPKIdListForVerification": verification or [self.ci_pkid],
                             "euiccCiPKIdListForSigning": signing or [self.ci_pkid]})

    def initiate(self, address: str = ADDRESS, **info1) -> dict:
        return {"euiccChallenge": self.rng(16), "euiccInfo1": self.info1(**info1), "smdpAddress": address}

    def authenticate_server(self, init: dict, matching_id: str | None = "", *, transaction_id: bytes | None = None,
                            server_challenge: bytes | None = None, key=None, euicc_cert=None, eum_cert=None,
                            signed_bytes_change: bool = False) -> m.AuthenticateServerResponse:
        """ES10b.AuthenticateServer: verify serverSignature1, sign euiccSigned1 (5.7.13)."""
        server_key = _public_key(init["serverCertificate"])
        assert crypto.verify(server_key, init["serverSigned1"].dump(), init["serverSignature1"].native)
        signed1 = init["serverSigned1"]
        params = {"deviceInfo": {"tac": b"\x35\x29\x06\x11", "deviceCapabilities": {}}}
        if matching_id is not None:
            params["matchingId"] = matching_id
        fields = {
            "transactionId": transaction_id or init["transactionId"],
            "serverAddress": signed1["serverAddress"].native,
            "serverChallenge": server_challenge or signed1["serverChallenge"].native,
            "euiccInfo2": euicc_info2(self.ci_pkid),
            "ctxParams1": m.CtxParams1(name="ctxParamsForCommonAuthentication", value=params),
        }
        euicc_signed1 = m.EuiccSigned1(fields)
        signature = crypto.sign(key or self.euicc.signing_key(), euicc_signed1.dump())
        if signed_bytes_change:  # sign one value, send another
            euicc_signed1 = m.EuiccSigned1({**fields, "serverAddress": "evil.example"})
        ok = m.AuthenticateResponseOk({
            "euiccSigned1": euicc_signed1, "euiccSignature1": signature,
            "euiccCertificate": _asn1_cert(euicc_cert or self.euicc.cert),
            "eumCertificate": _asn1_cert(eum_cert or self.eum.cert),
        })
        response = m.AuthenticateServerResponse(name="authenticateResponseOk", value=ok)
        decoded = m.decode(m.AuthenticateServerResponse, response.dump())
        self.signatures1[init["transactionId"]] = decoded.chosen["euiccSignature1"]
        return decoded

    def authenticate_error(self, transaction_id: bytes, code: int = 2) -> m.AuthenticateServerResponse:
        value = m.AuthenticateResponseError({"transactionId": transaction_id, "authenticateErrorCode": code})
        return m.AuthenticateServerResponse(name="authenticateResponseError", value=value)

    def prepare_download(self, auth: dict, code: str | None = None, *, otsk=None, key=None,
                         transaction_id: bytes | None = None) -> m.PrepareDownloadResponse:
        """ES10b.PrepareDownload: verify smdpSignature2, new one-time key, sign euiccSigned2 (5.7.5)."""
        self.dp_pb_key = _public_key(auth["smdpCertificate"])
        signed2 = auth["smdpSigned2"]
        signature1 = self.signatures1[auth["transactionId"]]
        assert crypto.verify(self.dp_pb_key, signed2.dump() + signature1.dump(), auth["smdpSignature2"].native)
        self.otsk = otsk or crypto.generate_private_key(self.pki.curve)
        tid = transaction_id or auth["transactionId"]
        value = {"transactionId": tid, "euiccOtpk": crypto.public_key_bytes(self.otsk)}
        if code is not None:
            value["hashCc"] = hash_confirmation_code(code, auth["transactionId"])
        euicc_signed2 = m.EUICCSigned2(value)
        signature = crypto.sign(key or self.euicc.signing_key(), euicc_signed2.dump() + auth["smdpSignature2"].dump())
        ok = m.PrepareDownloadResponseOk({"euiccSigned2": euicc_signed2, "euiccSignature2": signature})
        return m.decode(m.PrepareDownloadResponse, m.PrepareDownloadResponse(name="downloadResponseOk", value=ok).dump())

    def download_error(self, transaction_id: bytes, code: int = 2) -> m.PrepareDownloadResponse:
        value = m.PrepareDownloadResponseError({"transactionId": transaction_id, "downloadErrorCode": code})
        return m.PrepareDownloadResponse(name="downloadResponseError", value=value)

    def install(self, bound: m.BoundProfilePackage) -> tuple[bytes, bytes]:
        """What the eUICC recovers from the BPP (metadata, profile package), checking smdpSign."""
        isc = bound["initialiseSecureChannelRequest"]
        otpk = crypto.public_key_bytes(self.otsk)
        assert bpp.verify_smdp_sign(isc, otpk, self.dp_pb_key)
        ctx = bpp.open_secure_channel(isc, self.otsk, eid_to_bytes(self.eid))
        configure = m.decode(m.ConfigureISDPRequest, ctx.unprotect(bound["firstSequenceOf87"][0].dump(),
                                                                   encrypted=True, tag=0x87))
        self.smdp_oid = configure["dpProprietaryData"]["dpOid"].native
        metadata = unprotect_segments(ctx, [e.dump() for e in bound["sequenceOf88"]], tag=0x88, encrypted=False)
        upp = unprotect_segments(ctx, [e.dump() for e in bound["sequenceOf86"]])
        return metadata, upp

    def installation_result(self, transaction_id: bytes, iccid: str, *, error_reason: int | None = None,
                            key=None, smdp_oid: str = "2.999.10") -> m.PendingNotification:
        """The signed ProfileInstallationResult (5.7.6) as a pending notification."""
        self.seq += 1
        if error_reason is None:
            final = {"successResult": {"aid": bytes.fromhex("A0000005591010FFFFFFFF8900001000"),
                                       "simaResponse": b"\x30\x00"}}
        else:
            final = {"errorResult": {"bppCommandId": 5, "errorReason": error_reason}}
        data = m.ProfileInstallationResultData({
            "transactionId": transaction_id,
            "notificationMetadata": {"seqNumber": self.seq, "profileManagementOperation": {"notificationInstall"},
                                     "notificationAddress": ADDRESS, "iccid": iccid_to_bcd(iccid)},
            "smdpOid": smdp_oid, "finalResult": final,
        })
        pir = m.ProfileInstallationResult({"profileInstallationResultData": data,
                                           "euiccSignPIR": crypto.sign(key or self.euicc.signing_key(), data.dump())})
        return m.decode(m.PendingNotification, pir.dump())

    def other_notification(self, iccid: str, operation: str = "notificationDelete", *, key=None,
                           seq: int | None = None) -> m.PendingNotification:
        if seq is None:
            self.seq += 1
            seq = self.seq
        tbs = m.NotificationMetadata({"seqNumber": seq, "profileManagementOperation": {operation},
                                      "notificationAddress": ADDRESS, "iccid": iccid_to_bcd(iccid)})
        value = m.OtherSignedNotification({
            "tbsOtherNotification": tbs,
            "euiccNotificationSignature": crypto.sign(key or self.euicc.signing_key(), tbs.dump()),
            "euiccCertificate": _asn1_cert(self.euicc.cert), "eumCertificate": _asn1_cert(self.eum.cert),
        })
        notification = m.PendingNotification(name="otherSignedNotification", value=value)
        return m.decode(m.PendingNotification, notification.dump())

    def cancel(self, transaction_id: bytes, reason: int = 0, *, smdp_oid: str = "2.999.10", key=None,
               signed_transaction_id: bytes | None = None) -> m.CancelSessionResponse:
        """ES10b.CancelSession (5.7.14): the signed cancellation."""
        signed = m.EuiccCancelSessionSigned({"transactionId": signed_transaction_id or transaction_id,
                                             "smdpOid": smdp_oid, "reason": reason})
        ok = m.CancelSessionResponseOk({
            "euiccCancelSessionSigned": signed,
            "euiccCancelSessionSignature": crypto.sign(key or self.euicc.signing_key(), signed.dump())})
        return m.decode(m.CancelSessionResponse, m.CancelSessionResponse(name="cancelSessionResponseOk", value=ok).dump())


@dataclass
class Download:
    """The responses of one download, step by step."""

    init: dict
    auth: dict | None = None
    bpp: dict | None = None


def authenticate(smdp: Smdp, euicc: EuiccSide, matching_id: str | None) -> Download:
    init = smdp.call(es9_json.INITIATE_AUTHENTICATION, euicc.initiate())
    response = euicc.authenticate_server(init, matching_id)
    auth = smdp.call(es9_json.AUTHENTICATE_CLIENT, {"transactionId": init["transactionId"],
                                                    "authenticateServerResponse": response})
    return Download(init, auth)


def download(smdp: Smdp, euicc: EuiccSide, matching_id: str | None, code: str | None = None) -> Download:
    """InitiateAuthentication, AuthenticateClient and GetBoundProfilePackage."""
    steps = authenticate(smdp, euicc, matching_id)
    prepared = euicc.prepare_download(steps.auth, code)
    steps.bpp = smdp.call(es9_json.GET_BOUND_PROFILE_PACKAGE, {"transactionId": steps.auth["transactionId"],
                                                               "prepareDownloadResponse": prepared})
    return steps


def notify(smdp: Smdp, notification: m.PendingNotification) -> dict:
    return smdp.call(es9_json.HANDLE_NOTIFICATION, {"pendingNotification": notification})


# --- the same SM-DP+ over real HTTPS --------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a background thread, so tests can drive servers with a blocking client."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._cleanups = []

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def on_stop(self, coroutine_function) -> None:
        self._cleanups.append(coroutine_function)

    def stop(self) -> None:
        for cleanup in reversed(self._cleanups):
            self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()


class ServerThread(LoopThread):
    """An SmdpServer on its own loop thread (or on ``loop``'s, when given)."""

    def __init__(self, core: SmdpCore, *, es2: bool = False):
        from smdp.server import SmdpServer

        super().__init__()
        self.server = SmdpServer(core)
        self.urls = self.run(self.server.start("127.0.0.1", 0, 0 if es2 else None))
        self.on_stop(self.server.stop)


def client_context(pki: Pki, client: Credential | None = None, tmp_path=None) -> ssl.SSLContext:
    """What an LPA trusts: the CI alone. With ``client``, present that certificate (ES2+)."""
    context = ssl.create_default_context(cadata=pki.ci.cert_pem.decode("ascii"))
    if client is not None:
        pem = tmp_path / f"client-{client.cert.serial_number:x}.pem"
        pem.write_bytes(client.cert_pem + client.key_pem)
        context.load_cert_chain(pem)
    return context


def post(url: str, body: bytes, context: ssl.SSLContext, headers: dict | None = None,
         method: str = "POST") -> tuple[int, dict, bytes]:
    """(status, headers, body) of one HTTPS request; HTTP errors are returned, not raised."""
    sent = {"Content-Type": es9_json.CONTENT_TYPE, "X-Admin-Protocol": es9_json.ADMIN_PROTOCOL,
            "User-Agent": es9_json.USER_AGENT}
    sent.update(headers or {})
    request = urllib.request.Request(url, data=body if method == "POST" else None,
                                     headers={k: v for k, v in sent.items() if v is not None}, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Es9Client:
    """An LPA's view of ES9+: JSON over HTTPS to ``url``."""

    def __init__(self, url: str, context: ssl.SSLContext):
        self.url = url
        self.context = context

    def call(self, function: es9_json.Function, values: dict) -> dict:
        body = json.dumps(es9_json.encode_request(function, values)).encode()
        status, headers, data = post(self.url + function.path, body, self.context)
        assert headers.get("X-Admin-Protocol") == es9_json.ADMIN_PROTOCOL
        if status == 204:
            assert function.empty_response_status == 204 and data == b""
            return {}
        assert status == 200, (status, data)
        return es9_json.decode_response(function, json.loads(data))


class HttpSmdp(Smdp):
    """The same SM-DP+, reached through its HTTPS API with the CI as the only trust anchor."""

    server: ServerThread
    client: Es9Client

    @property
    def context(self) -> ssl.SSLContext:
        return self.client.context

    def call(self, function: es9_json.Function, values: dict) -> dict:
        return self.client.call(function, values)


def serve(smdp: Smdp, pki: Pki | None = None, *, es2: bool = False) -> HttpSmdp:
    """Put ``smdp`` behind its HTTPS listener; the caller stops ``.server``."""
    http = HttpSmdp(smdp.core, smdp.store, smdp.clock, smdp.iccids)
    http.server = ServerThread(smdp.core, es2=es2)
    http.client = Es9Client(http.server.urls["es9"], client_context(pki or test_pki()))
    return http


def reissue(cert: x509.Certificate, signer: ec.EllipticCurvePrivateKey, *, subject: x509.Name | None = None,
            not_before: datetime | None = None, not_after: datetime | None = None) -> x509.Certificate:
    """``cert`` with the same fields and extensions, changed where asked and signed by ``signer``."""
    builder = (x509.CertificateBuilder().subject_name(subject or cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(cert.serial_number)
               .not_valid_before(not_before or cert.not_valid_before_utc)
               .not_valid_after(not_after or cert.not_valid_after_utc))
    for extension in cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(signer, hashes.SHA256())


def with_serial_number(name: x509.Name, serial: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(a.oid, serial) if a.oid == x509.NameOID.SERIAL_NUMBER else a for a in name])


# --- an operator for ES2+ -------------------------------------------------------------------------


def _issue(subject_cn: str, key, issuer: Credential | None, extensions: list, *, ca: bool = False) -> Credential:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Test Operator"),
                      x509.NameAttribute(x509.NameOID.COMMON_NAME, subject_cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.cert.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return Credential(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


class OperatorPki:
    """A small operator CA issuing ES2+ client certificates and the operator's server certificate."""

    def __init__(self, name: str = "Test Operator CA"):
        self.ca = _issue(name, ec.generate_private_key(ec.SECP256R1()), None, [], ca=True)

    def client(self, requester: str) -> Credential:
        usage = x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH])
        return _issue(requester, ec.generate_private_key(ec.SECP256R1()), self.ca, [usage])

    def server(self) -> Credential:
        names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        usage = x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH])
        return _issue("127.0.0.1", ec.generate_private_key(ec.SECP256R1()), self.ca, [names, usage])

    def save_ca(self, path) -> str:
        path.write_bytes(self.ca.cert_pem)
        return path


class OperatorServer:
    """The operator's ES2+ endpoint for HandleDownloadProgressInfo, over mutual TLS: it requires
    the SM-DP+ to present a certificate from the GSMA CI (CERT.DPtls)."""

    def __init__(self, thread: LoopThread, operator: OperatorPki, ci: Credential, statuses=()):
        self.received: queue.Queue = queue.Queue()
        self.statuses = list(statuses)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_credential(context, operator.server())
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ci.cert_pem.decode("ascii"))
        app = web.Application()
        app.router.add_post("/gsma/rsp2/es2plus/handleDownloadProgressInfo", self._handle)
        self.url = thread.run(self._start(thread, app, context))

    async def _start(self, thread: LoopThread, app, context) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        thread.on_stop(runner.cleanup)
        port = runner.addresses[0][1]
        return f"https://127.0.0.1:{port}"

    async def _handle(self, request):
        peer = request.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        body = await request.json()
        status = self.statuses.pop(0) if self.statuses else 204
        self.received.put((status, body, request.headers.get("X-Admin-Protocol"), peer))
        return web.Response(status=status)

    def next(self):
        return self.received.get(timeout=60)
