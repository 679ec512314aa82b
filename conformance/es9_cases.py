"""ES9+ conformance cases: the runner plays LPA and eUICC against an SM-DP+ at a URL.

Every case drives one or more RSP sessions (``Flow``) over HTTPS and compares the SM-DP+'s answers
with SGP.22 5.6 (functions, status codes) and 3.1.2/3.1.3 (procedures). A session the SM-DP+ still
holds when a case ends is cancelled (postponed), so one case never leaves state that changes the
next. Metadata of each case is in ``conformance.catalogue`` under the same ID.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from certs.pki import generate_pki
from certs.validate import Role
from conformance.catalogue import CC, ES9_CASES, FRESH, OTHER_EID, SHARED, UNRELEASED
from conformance.es9_euicc import POSTPONED, RunnerEuicc, Session
from conformance.es9_http import Es9Http
from conformance.identity import expired, foreign_key, reissue
from conformance.orders import OrderSource
from conformance.runner import CaseFailed, Result, registry, require, run_cases, select
from rsp import es9_json, status
from rsp import messages as m
from rsp.errors import StatusCode, StatusCodeError
from rsp.es9_json import (
    AUTHENTICATE_CLIENT,
    CANCEL_SESSION,
    GET_BOUND_PROFILE_PACKAGE,
    HANDLE_NOTIFICATION,
    INITIATE_AUTHENTICATION,
)
from rsp.ids import luhn_check_digit
from rsp.status import DPAUTH_UNAVAILABLE, EID_REFUSED, PROFILE_NOT_RELEASED, SMDP_OID_INVALID

Rng = Callable[[int], bytes]

CASES, case = registry()


@dataclass
class Es9Context:
    http: Es9Http
    euicc: RunnerEuicc
    orders: OrderSource
    address: str  # the SM-DP+ address (FQDN) sent as smdpAddress and expected in serverSigned1
    rng: Rng
    clock: Callable[[], datetime]
    attempt_cap: int = 12  # AuthenticateClient attempts ES9-AUTHCLIENT-014 makes before giving up
    cc_attempt_cap: int = 10  # wrong confirmation codes ES9-GETBPP-007 sends before giving up

    def missing_material(self) -> dict[str, str]:
        return self.euicc.material.missing_material()

    async def close(self) -> None:
        await self.http.close()
        await self.orders.close()


class Flow:
    """One RSP session; on exit a session the SM-DP+ authenticated is cancelled (postponed)."""

    def __init__(self, ctx: Es9Context):
        self.ctx = ctx
        self.session = Session(challenge=ctx.rng(16))
        self.held = False  # the SM-DP+ has passed AuthenticateClient in this session
        self.requests: dict[str, dict] = {}

    async def __aenter__(self) -> Flow:
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self.held:
            with suppress(Exception):  # best effort: the case's own outcome is what gets reported
                await self.cancel()

    @property
    def tid(self) -> bytes:
        return self.session.transaction_id

    async def initiate(self, address: str | None = None, **info1) -> dict:
        address = address or self.ctx.address
        values = self.ctx.euicc.initiate_values(self.session, address, **info1)
        init = await self.ctx.http.call(INITIATE_AUTHENTICATION, values)
        self.ctx.euicc.check_initiate(self.session, init, self.ctx.address)
        return init

    def authenticate_values(self, matching_id: str | None, *, json_tid: bytes | None = None, **tamper) -> dict:
        response = self.ctx.euicc.authenticate_server(self.session, matching_id, **tamper)
        return {"transactionId": json_tid or self.tid, "authenticateServerResponse": response}

    async def authenticate(self, matching_id: str | None, **tamper) -> dict:
        values = self.authenticate_values(matching_id, **tamper)
        self.requests["authenticate"] = values
        auth = await self.ctx.http.call(AUTHENTICATE_CLIENT, values)
        self.held = True
        self.ctx.euicc.check_authenticate_client(self.session, auth)
        return auth

    async def get_bpp(self, code: str | None = None, **tamper) -> dict:
        prepared = self.ctx.euicc.prepare_download(self.session, code, **tamper)
        values = {"transactionId": self.tid, "prepareDownloadResponse": prepared}
        self.requests["bpp"] = values
        result = await self.ctx.http.call(GET_BOUND_PROFILE_PACKAGE, values)
        require(result["transactionId"] == self.tid, "GetBoundProfilePackage answered another transactionId")
        self.ctx.euicc.open_bpp(self.session, result["boundProfilePackage"])
        return result

    async def cancel(self, reason: int = POSTPONED, *, json_tid: bytes | None = None, smdp_oid: str | None = None,
                     **tamper) -> dict:
        response = self.ctx.euicc.cancel(self.tid, smdp_oid or self.session.dp_auth.oid, reason, **tamper)
        result = await self.ctx.http.call(CANCEL_SESSION, {"transactionId": json_tid or self.tid,
                                                           "cancelSessionResponse": response})
        self.held = False
        return result

    async def notify_installed(self) -> None:
        pending = self.ctx.euicc.installation_result(self.session, self.ctx.address)
        await expect_acknowledged(self.ctx, pending)
        self.held = False


async def expect_acknowledged(ctx: Es9Context, pending: m.PendingNotification) -> None:
    body = json.dumps(es9_json.encode_request(HANDLE_NOTIFICATION, {"pendingNotification": pending})).encode()
    answer = await ctx.http.post(HANDLE_NOTIFICATION.path, body)
    require(answer.status == 204 and not answer.body,
            f"HandleNotification answered HTTP {answer.status} {answer.body[:100]!r}, not 204 without a body")


async def refused(call: Awaitable, *codes: StatusCode) -> StatusCodeError:
    """Await ``call``; it must fail with one of ``codes``."""
    wanted = " or ".join(code.describe() for code in codes)
    try:
        await call
    except StatusCodeError as exc:
        if exc.code in codes:
            return exc
        raise CaseFailed(f"expected {wanted}; got {exc.code.describe()}: {exc.message}") from None
    raise CaseFailed(f"expected {wanted}; the SM-DP+ executed the function successfully")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unknown_matching_id(ctx: Es9Context) -> str:
    return "CONFORMANCE-" + ctx.rng(8).hex().upper()


# --- complete downloads (3.1.3) ------------------------------------------------------------------


@case("ES9-DOWNLOAD-001")
async def download(ctx: Es9Context) -> None:
    order = await ctx.orders.get(FRESH)
    async with Flow(ctx) as flow:
        await flow.initiate()
        await flow.authenticate(order.matching_id)
        require(not flow.session.cc_required, "ccRequiredFlag is set for an order without a confirmation code")
        await flow.get_bpp()
        await flow.notify_installed()


@case("ES9-DOWNLOAD-002")
async def download_with_code(ctx: Es9Context) -> None:
    order = await ctx.orders.get(CC)
    async with Flow(ctx) as flow:
        await flow.initiate()
        await flow.authenticate(order.matching_id)
        require(flow.session.cc_required, "ccRequiredFlag is not set for an order with a confirmation code")
        await flow.get_bpp(order.confirmation_code)
        await flow.notify_installed()


# --- InitiateAuthentication (5.6.1) --------------------------------------------------------------


@case("ES9-INITAUTH-001")
async def initiate_authentication(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await flow.initiate()


@case("ES9-INITAUTH-002")
async def initiate_wrong_address(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await refused(flow.initiate(address=f"other-{ctx.rng(4).hex()}.example.com"), status.INVALID_SMDP_ADDRESS)


@case("ES9-INITAUTH-003")
async def initiate_unsupported_svn(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await refused(flow.initiate(svn=b"\xff\x00\x00"), status.SVN_UNSUPPORTED)


@case("ES9-INITAUTH-004")
async def initiate_unknown_signing_ci(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await refused(flow.initiate(signing=[ctx.rng(20)]), status.SECURITY_CONFIG_UNSUPPORTED)


@case("ES9-INITAUTH-005")
async def initiate_unknown_verification_ci(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await refused(flow.initiate(verification=[ctx.rng(20)]), DPAUTH_UNAVAILABLE)


# --- AuthenticateClient (5.6.3) ------------------------------------------------------------------


async def _authenticate_refused(ctx: Es9Context, code: StatusCode, *, kind: str | None = SHARED, **tamper) -> None:
    """A session on an order of ``kind`` whose AuthenticateClient is tampered and must fail with ``code``."""
    matching_id = (await ctx.orders.get(kind)).matching_id if kind else _unknown_matching_id(ctx)
    async with Flow(ctx) as flow:
        await flow.initiate()
        await refused(flow.authenticate(matching_id, **tamper), code)


@case("ES9-AUTHCLIENT-001")
async def authenticate_unknown_transaction(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, status.TRANSACTION_ID_UNKNOWN, json_tid=ctx.rng(16))


@case("ES9-AUTHCLIENT-002")
async def authenticate_replayed(ctx: Es9Context) -> None:
    order = await ctx.orders.get(FRESH)
    async with Flow(ctx) as flow:
        await flow.initiate()
        await flow.authenticate(order.matching_id)
        await refused(ctx.http.call(AUTHENTICATE_CLIENT, flow.requests["authenticate"]), status.TRANSACTION_ID_UNKNOWN)


@case("ES9-AUTHCLIENT-003")
async def authenticate_bad_signature(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, status.EUICC_SIGNATURE_INVALID, bad_signature=True)


@case("ES9-AUTHCLIENT-004")
async def authenticate_wrong_challenge(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, status.EUICC_SIGNATURE_INVALID, server_challenge=ctx.rng(16))


@case("ES9-AUTHCLIENT-005")
async def authenticate_signed_other_transaction(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, status.TRANSACTION_ID_UNKNOWN, transaction_id=ctx.rng(16))


@case("ES9-AUTHCLIENT-006")
async def authenticate_unknown_ci(ctx: Es9Context) -> None:
    material = ctx.euicc.material
    rogue = generate_pki(material.curve, eid=material.eid, now=ctx.clock(), rng=ctx.rng)
    await _authenticate_refused(ctx, status.CI_PK_UNKNOWN, key=rogue.euicc.signing_key(), euicc_cert=rogue.euicc.cert,
                                eum_cert=rogue.eum.cert)


@case("ES9-AUTHCLIENT-007")
async def authenticate_expired_eum(ctx: Es9Context) -> None:
    material = ctx.euicc.material
    eum = expired(material.eum.cert, material.ci.signing_key(), ctx.clock(), ctx.rng)
    await _authenticate_refused(ctx, status.EUM_CERT_EXPIRED, eum_cert=eum)


@case("ES9-AUTHCLIENT-008")
async def authenticate_expired_euicc(ctx: Es9Context) -> None:
    material = ctx.euicc.material
    euicc = expired(material.euicc.cert, material.eum.signing_key(), ctx.clock(), ctx.rng)
    await _authenticate_refused(ctx, status.EUICC_CERT_EXPIRED, euicc_cert=euicc)


@case("ES9-AUTHCLIENT-009")
async def authenticate_wrong_role(ctx: Es9Context) -> None:
    material = ctx.euicc.material
    euicc = reissue(material.euicc.cert, material.eum.signing_key(), rng=ctx.rng, role=Role.DP_AUTH)
    await _authenticate_refused(ctx, status.EUICC_CERT_INVALID, euicc_cert=euicc)


@case("ES9-AUTHCLIENT-010")
async def authenticate_forged_euicc_certificate(ctx: Es9Context) -> None:
    material = ctx.euicc.material
    euicc = reissue(material.euicc.cert, foreign_key(material.curve, ctx.rng), rng=ctx.rng)
    await _authenticate_refused(ctx, status.EUICC_CERT_INVALID, euicc_cert=euicc)


@case("ES9-AUTHCLIENT-011")
async def authenticate_unknown_matching_id(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, status.MATCHING_ID_REFUSED, kind=None)


@case("ES9-AUTHCLIENT-012")
async def authenticate_other_eid(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, EID_REFUSED, kind=OTHER_EID)


@case("ES9-AUTHCLIENT-013")
async def authenticate_unreleased(ctx: Es9Context) -> None:
    await _authenticate_refused(ctx, PROFILE_NOT_RELEASED, kind=UNRELEASED)


@case("ES9-AUTHCLIENT-014")
async def authenticate_attempt_limit(ctx: Es9Context) -> None:
    order = await ctx.orders.get(FRESH)
    for attempt in range(1, ctx.attempt_cap + 1):
        async with Flow(ctx) as flow:
            await flow.initiate()
            try:
                await flow.authenticate(order.matching_id)
            except StatusCodeError as exc:
                if exc.code != status.DOWNLOAD_ATTEMPTS_EXCEEDED:
                    raise CaseFailed(f"attempt {attempt}: expected success or "
                                     f"{status.DOWNLOAD_ATTEMPTS_EXCEEDED.describe()}, got {exc}") from None
                require(attempt > 1, "the very first download attempt was refused as exceeding the limit")
                return
            await flow.cancel()
    raise CaseFailed(f"{ctx.attempt_cap} download attempts on one order were all accepted: no limit reached")


# --- GetBoundProfilePackage (5.6.2) --------------------------------------------------------------


@case("ES9-GETBPP-001")
async def bpp_out_of_order(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await flow.initiate()
        signature = es9_json.Signature(ctx.rng(64)).dump()  # no smdpSignature2 exists yet
        prepared = ctx.euicc.prepare_download(flow.session, smdp_signature2=signature)
        values = {"transactionId": flow.tid, "prepareDownloadResponse": prepared}
        await refused(ctx.http.call(GET_BOUND_PROFILE_PACKAGE, values), status.TRANSACTION_ID_UNKNOWN)


async def _authenticated(ctx: Es9Context, flow: Flow, kind: str = FRESH):
    order = await ctx.orders.get(kind)
    await flow.initiate()
    await flow.authenticate(order.matching_id)
    return order


@case("ES9-GETBPP-002")
async def bpp_replayed(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow)
        await flow.get_bpp()
        await refused(ctx.http.call(GET_BOUND_PROFILE_PACKAGE, flow.requests["bpp"]), status.TRANSACTION_ID_UNKNOWN)


@case("ES9-GETBPP-003")
async def bpp_bad_signature(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow)
        await refused(flow.get_bpp(bad_signature=True), status.EUICC_SIGNATURE_INVALID)


@case("ES9-GETBPP-004")
async def bpp_signed_other_transaction(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow)
        await refused(flow.get_bpp(transaction_id=ctx.rng(16)), status.TRANSACTION_ID_UNKNOWN)


@case("ES9-GETBPP-005")
async def bpp_code_missing(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow, CC)
        require(flow.session.cc_required, "ccRequiredFlag is not set for an order with a confirmation code")
        await refused(flow.get_bpp(None), status.CC_MISSING)


@case("ES9-GETBPP-006")
async def bpp_wrong_code(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        order = await _authenticated(ctx, flow, CC)
        await refused(flow.get_bpp(_wrong(order.confirmation_code)), status.CC_REFUSED)


def _wrong(code: str | None) -> str:
    return (code or "") + "-WRONG"


@case("ES9-GETBPP-007")
async def bpp_code_attempt_limit(ctx: Es9Context) -> None:
    order = await ctx.orders.get(CC)
    for _ in range(ctx.cc_attempt_cap):
        async with Flow(ctx) as flow:
            await flow.initiate()
            await flow.authenticate(order.matching_id)
            error = await refused(flow.get_bpp(_wrong(order.confirmation_code)), status.CC_REFUSED,
                                  status.CC_RETRIES_EXCEEDED)
        if error.code == status.CC_RETRIES_EXCEEDED:
            await _order_unusable(ctx, order)
            return
    raise CaseFailed(f"{ctx.cc_attempt_cap} wrong confirmation codes never reached the attempt limit")


async def _order_unusable(ctx: Es9Context, order) -> None:
    """After the limit even the right code must not deliver the profile."""
    async with Flow(ctx) as flow:
        await flow.initiate()
        try:
            await flow.authenticate(order.matching_id)
            await flow.get_bpp(order.confirmation_code)
        except StatusCodeError:
            return
    raise CaseFailed("after the confirmation code attempt limit the right code still downloaded the profile")


@case("ES9-GETBPP-008")
async def bpp_otpk_reused(ctx: Es9Context) -> None:
    async with Flow(ctx) as first, Flow(ctx) as second:
        await _authenticated(ctx, first)
        await first.get_bpp()
        await _authenticated(ctx, second)
        await refused(second.get_bpp(otsk=first.session.otsk), status.PROFILE_UNAVAILABLE, status.BPP_REBINDING_REFUSED)


# --- CancelSession (5.6.5) -----------------------------------------------------------------------


@case("ES9-CANCEL-001")
async def cancel_postponed(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        order = await _authenticated(ctx, flow)
        await flow.cancel(POSTPONED)
    async with Flow(ctx) as again:
        await again.initiate()
        await again.authenticate(order.matching_id)


@case("ES9-CANCEL-002")
async def cancel_bad_signature(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow)
        await refused(flow.cancel(bad_signature=True), status.EUICC_SIGNATURE_INVALID)


@case("ES9-CANCEL-003")
async def cancel_other_oid(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow)
        await refused(flow.cancel(smdp_oid=f"2.999.{int.from_bytes(ctx.rng(3), 'big') + 100000}"), SMDP_OID_INVALID)


@case("ES9-CANCEL-004")
async def cancel_unknown_transaction(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await _authenticated(ctx, flow)
        await refused(flow.cancel(json_tid=ctx.rng(16)), status.TRANSACTION_ID_UNKNOWN)


# --- HandleNotification (5.6.4) ------------------------------------------------------------------


@case("ES9-NOTIF-001")
async def notification_acknowledged(ctx: Es9Context) -> None:
    body = "8999" + str(int.from_bytes(ctx.rng(8), "big") % 10**14).zfill(14)
    iccid = body + luhn_check_digit(body)
    await expect_acknowledged(ctx, ctx.euicc.other_notification(iccid, ctx.address))


# --- the JSON binding (6.5) ----------------------------------------------------------------------


def _initiate_body(ctx: Es9Context, **info1) -> dict:
    session = Session(challenge=ctx.rng(16))
    return es9_json.encode_request(INITIATE_AUTHENTICATION, ctx.euicc.initiate_values(session, ctx.address, **info1))


def _dumps(body) -> bytes:
    return json.dumps(body).encode()


@case("ES9-PROTO-001")
async def no_admin_protocol(ctx: Es9Context) -> None:
    body = _dumps(_initiate_body(ctx))
    await refused(ctx.http.send(INITIATE_AUTHENTICATION, body, admin_protocol=False), status.UNSUPPORTED_PROTOCOL_VERSION)


@case("ES9-PROTO-002")
async def not_json(ctx: Es9Context) -> None:
    await refused(ctx.http.send(INITIATE_AUTHENTICATION, b'{"euiccChallenge": '), status.INVALID_REQUEST)


@case("ES9-PROTO-003")
async def mandatory_field_missing(ctx: Es9Context) -> None:
    async with Flow(ctx) as flow:
        await flow.initiate()
        body = _dumps({"transactionId": flow.tid.hex().upper()})
        await refused(ctx.http.send(AUTHENTICATE_CLIENT, body), status.MANDATORY_ELEMENT_MISSING)


@case("ES9-PROTO-004")
async def malformed_asn1(ctx: Es9Context) -> None:
    body = _initiate_body(ctx)
    body["euiccInfo1"] = _b64(base64.b64decode(body["euiccInfo1"])[:-3])
    await refused(ctx.http.send(INITIATE_AUTHENTICATION, _dumps(body)), status.INVALID_REQUEST)


@case("ES9-PROTO-005")
async def not_base64(ctx: Es9Context) -> None:
    body = _initiate_body(ctx)
    body["euiccInfo1"] = "%%% not base64 %%%"
    await refused(ctx.http.send(INITIATE_AUTHENTICATION, _dumps(body)), status.INVALID_REQUEST)


@case("ES9-PROTO-006")
async def oversized_transaction_id(ctx: Es9Context) -> None:
    error = m.AuthenticateServerResponse(name="authenticateResponseError",
                                         value={"transactionId": ctx.rng(16), "authenticateErrorCode": 127})
    body = {"transactionId": ctx.rng(17).hex().upper(), "authenticateServerResponse": _b64(error.dump())}
    await refused(ctx.http.send(AUTHENTICATE_CLIENT, _dumps(body)), status.INVALID_REQUEST)


@case("ES9-PROTO-007")
async def svn_too_long(ctx: Es9Context) -> None:
    await refused(ctx.http.send(INITIATE_AUTHENTICATION, _dumps(_initiate_body(ctx, svn=b"\x02\x05\x00\x00"))),
                  status.INVALID_REQUEST)



async def run(ctx: Es9Context, *, ids=(), skip_features=(), on_result=None) -> list[Result]:
    """Select and run ES9+ cases against the context's SM-DP+; closes the context."""
    try:
        chosen = select(ES9_CASES, ids=ids, skip_features=skip_features, missing_material=ctx.missing_material())
        return await run_cases(chosen, CASES, ctx, on_result=on_result)
    finally:
        await ctx.close()
