"""ES10 conformance cases: the runner plays LPA and SM-DP+ against an eUICC through any APDU
transport (the software eUICC in-process, or a card in a PC/SC reader).

The card must trust the runner's CI (``euiccCiPKIdListForVerification``). Each case opens its own
RSP session with GetEUICCChallenge; cases that install a profile delete it again and remove the
notifications addressed to the runner's SM-DP+ address, so the card ends as it started. Metadata of
each case is in ``conformance.catalogue`` under the same ID.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from certs.pki import Credential, generate_pki, issue_server, new_private_key
from certs.validate import Role
from conformance.catalogue import ES10_CASES
from conformance.es10_smdp import CardSession, RunnerSmdp
from conformance.identity import expired, foreign_key, reissue
from conformance.runner import CaseFailed, Result, registry, require, run_cases, select
from lpa.es10 import Es10Client, ProfileRef
from rsp import bpp
from rsp import messages as m
from rsp.errors import ApduError, KinsimError
from rsp.ids import iccid_from_bcd, validate_eid

Rng = Callable[[int], bytes]

# Result enums of SGP.22 5.7 (RSPDefinitions).
INVALID_CERTIFICATE, INVALID_SIGNATURE, UNSUPPORTED_CURVE, NO_SESSION_CONTEXT, INVALID_OID = 1, 2, 3, 4, 5
EUICC_CHALLENGE_MISMATCH, CI_PK_UNKNOWN, INVALID_TRANSACTION_ID = 6, 7, 5
ISC, STORE_METADATA, LOAD_PROFILE_ELEMENTS = 0, 2, 5  # bppCommandId
BPP_INVALID_SIGNATURE, BPP_INVALID_TRANSACTION_ID, STRUCTURE_ERROR, SECURITY_ERROR = 2, 3, 7, 8
ICCID_EXISTS, ICCID_MISMATCH = 9, 13
POSTPONED = 1
SW_INTERNAL_ERROR = 0x6F00

CASES, case = registry()


@dataclass
class Es10Context:
    es10: Es10Client
    smdp: RunnerSmdp
    card_cis: list[x509.Certificate]  # CIs the runner validates the card's certificate chain against
    rng: Rng
    clock: Callable[[], datetime]
    _eid: str | None = field(default=None, repr=False)

    @property
    def eid(self) -> str:
        if self._eid is None:
            self._eid = self.es10.get_eid()
        return self._eid

    def missing_material(self) -> dict[str, str]:
        if self.smdp.pki.ci.key is None:
            return {"smdp-ci-key": "the runner's SM-DP+ PKI has no CI private key (ci.key.pem)"}
        return {}


# --- sessions --------------------------------------------------------------------------------------


def call(ctx: Es10Context, request, response_type, function: str):
    return m.decode(response_type, ctx.es10.store_data(request.dump(), function))


def new_session(ctx: Es10Context) -> CardSession:
    challenge = ctx.es10.get_euicc_challenge()
    info1 = ctx.es10.get_euicc_info1()
    return CardSession(challenge, ctx.rng(16), ci_pkid=ctx.smdp.choose_ci(info1, ctx.card_cis))


def authenticate(ctx: Es10Context, session: CardSession, **tamper) -> m.AuthenticateServerResponse:
    request = ctx.smdp.authenticate_server(session, **tamper)
    return call(ctx, request, m.AuthenticateServerResponse, "AuthenticateServer")


def authenticated(ctx: Es10Context) -> CardSession:
    session = new_session(ctx)
    ctx.smdp.check_authenticated(session, authenticate(ctx, session), ctx.card_cis, ctx.eid)
    return session


def prepare(ctx: Es10Context, session: CardSession, **tamper) -> m.PrepareDownloadResponse:
    return call(ctx, ctx.smdp.prepare_download(session, **tamper), m.PrepareDownloadResponse, "PrepareDownload")


def prepared(ctx: Es10Context) -> CardSession:
    session = authenticated(ctx)
    ctx.smdp.check_prepared(session, prepare(ctx, session))
    return session


def load(ctx: Es10Context, segments: list[bytes]) -> m.ProfileInstallationResult:
    """LoadBoundProfilePackage segment by segment until the card answers with the result."""
    for segment in segments:
        data = ctx.es10.store_data(segment, "LoadBoundProfilePackage")
        if data:
            return m.decode(m.ProfileInstallationResult, data)
    raise CaseFailed("the card returned no ProfileInstallationResult after the last segment")


def installed_iccids(ctx: Es10Context) -> list[str]:
    return [iccid_from_bcd(p["iccid"].native) for p in ctx.es10.get_profiles_info() if p["iccid"].native]


@contextmanager
def card_cleanup(ctx: Es10Context, *iccids: str) -> Iterator[None]:
    """Afterwards: the runner's profiles disabled and deleted, its notifications removed."""
    try:
        yield
    finally:
        for iccid in iccids:
            with suppress(KinsimError):
                ctx.es10.disable_profile(ProfileRef(iccid=iccid))
            with suppress(KinsimError):
                ctx.es10.delete_profile(ProfileRef(iccid=iccid))
        with suppress(KinsimError):
            for metadata in ctx.es10.list_notifications():
                if metadata["notificationAddress"].native == ctx.smdp.address:
                    ctx.es10.remove_notification(metadata["seqNumber"].native)


def expect_auth_error(response: m.AuthenticateServerResponse, *codes: int) -> None:
    wanted = " or ".join(m.AuthenticateErrorCode._map[c] + f"({c})" for c in codes)
    if response.name != "authenticateResponseError":
        raise CaseFailed(f"expected authenticateResponseError {wanted}; the card answered authenticateResponseOk")
    code = int(response.chosen["authenticateErrorCode"])
    require(code in codes, f"expected {wanted}; got {response.chosen['authenticateErrorCode'].native}({code})")


def expect_download_error(response: m.PrepareDownloadResponse, code: int) -> None:
    wanted = f"{m.DownloadErrorCode._map[code]}({code})"
    if response.name != "downloadResponseError":
        raise CaseFailed(f"expected downloadResponseError {wanted}; the card answered downloadResponseOk")
    got = int(response.chosen["downloadErrorCode"])
    require(got == code, f"expected {wanted}; got {response.chosen['downloadErrorCode'].native}({got})")


def expect_install_error(ctx: Es10Context, session: CardSession, result: m.ProfileInstallationResult,
                         command: int | None, reason: int, iccid: str) -> None:
    final = result["profileInstallationResultData"]["finalResult"]
    wanted = f"{m.ErrorReason._map[reason]}({reason})"
    if final.name != "errorResult":
        raise CaseFailed(f"expected errorResult {wanted}; the card installed the profile")
    got_command, got_reason = int(final.chosen["bppCommandId"]), int(final.chosen["errorReason"])
    require(got_reason == reason, f"expected errorReason {wanted}; got {final.chosen['errorReason'].native}"
                                  f"({got_reason}) at bppCommandId {got_command}")
    if command is not None:
        require(got_command == command, f"expected bppCommandId {m.BppCommandId._map[command]}({command}); "
                                        f"got {got_command}")
    ctx.smdp.check_result_data(session, result, None)
    require(iccid not in installed_iccids(ctx), "the refused profile is installed anyway")


def expect_error_status(ctx: Es10Context, request: bytes, function: str,
                        accept: Callable[[bytes], bool] | None = None) -> None:
    """An error status word other than 6F00 (or an answer ``accept`` approves); the card keeps working."""
    try:
        data = ctx.es10.store_data(request, function)
    except ApduError as exc:
        require(exc.sw != SW_INTERNAL_ERROR, "the card answered 6F00 (internal error, no precise diagnosis)")
    else:
        require(accept is not None and accept(data), f"the card accepted the request and answered {data[:24].hex()}")
    require(len(ctx.es10.get_euicc_challenge()) == 16, "the card stopped answering GetEUICCChallenge")


# --- ES10a/b information (5.7.7 - 5.7.9, 5.7.20) ---------------------------------------------------


@case("ES10-INFO-001")
def euicc_info1(ctx: Es10Context) -> None:
    info1 = ctx.es10.get_euicc_info1()
    require(info1["svn"].native[0] == 2, f"SVN {info1['svn'].native.hex()} is not 2.x")
    require(info1["euiccCiPKIdListForVerification"].native and info1["euiccCiPKIdListForSigning"].native,
            "a CI list is empty")
    ctx.smdp.choose_ci(info1, ctx.card_cis)


@case("ES10-INFO-002")
def euicc_info2(ctx: Es10Context) -> None:
    info1, info2 = ctx.es10.get_euicc_info1(), ctx.es10.get_euicc_info2()
    for name in ("svn", "euiccCiPKIdListForVerification", "euiccCiPKIdListForSigning"):
        require(info1[name].native == info2[name].native, f"{name} differs between EUICCInfo1 and EUICCInfo2")


@case("ES10-EID-001")
def get_eid(ctx: Es10Context) -> None:
    try:
        validate_eid(ctx.es10.get_eid())
    except KinsimError as exc:
        raise CaseFailed(f"GetEID: {exc}") from None


@case("ES10-CHAL-001")
def challenge(ctx: Es10Context) -> None:
    first, second = ctx.es10.get_euicc_challenge(), ctx.es10.get_euicc_challenge()
    require(len(first) == len(second) == 16, "the challenge is not 16 bytes")
    require(first != second, "two challenges are equal")


# --- AuthenticateServer (5.7.13) -------------------------------------------------------------------


def _auth_refused(ctx: Es10Context, *codes: int, **tamper) -> None:
    expect_auth_error(authenticate(ctx, new_session(ctx), **tamper), *codes)


def _with_key(template: Credential, cert: x509.Certificate) -> Credential:
    return Credential(cert, template.key)


@case("ES10-AUTHSRV-001")
def authenticate_server(ctx: Es10Context) -> None:
    authenticated(ctx)


@case("ES10-AUTHSRV-002")
def server_signature_invalid(ctx: Es10Context) -> None:
    _auth_refused(ctx, INVALID_SIGNATURE, signing_key=foreign_key(ctx.smdp.curve, ctx.rng))


@case("ES10-AUTHSRV-003")
def challenge_mismatch(ctx: Es10Context) -> None:
    _auth_refused(ctx, EUICC_CHALLENGE_MISMATCH, euicc_challenge=ctx.rng(16))


@case("ES10-AUTHSRV-004")
def unknown_ci_to_be_used(ctx: Es10Context) -> None:
    _auth_refused(ctx, CI_PK_UNKNOWN, ci_pkid=ctx.rng(20))


@case("ES10-AUTHSRV-005")
def server_certificate_unknown_ci(ctx: Es10Context) -> None:
    rogue = generate_pki(ctx.smdp.curve, now=ctx.clock(), rng=ctx.rng)
    _auth_refused(ctx, CI_PK_UNKNOWN, INVALID_CERTIFICATE, auth=rogue.dp_auth)


@case("ES10-AUTHSRV-006")
def server_certificate_expired(ctx: Es10Context) -> None:
    pki = ctx.smdp.pki
    cert = expired(pki.dp_auth.cert, pki.ci.signing_key(), ctx.clock(), ctx.rng)
    _auth_refused(ctx, INVALID_CERTIFICATE, auth=_with_key(pki.dp_auth, cert))


@case("ES10-AUTHSRV-007")
def server_certificate_wrong_role(ctx: Es10Context) -> None:
    _auth_refused(ctx, INVALID_CERTIFICATE, auth=ctx.smdp.pki.dp_pb)


@case("ES10-AUTHSRV-008")
def server_certificate_without_oid(ctx: Es10Context) -> None:
    pki = ctx.smdp.pki
    cert = reissue(pki.dp_auth.cert, pki.ci.signing_key(), rng=ctx.rng, drop_registered_id=True)
    _auth_refused(ctx, INVALID_OID, auth=_with_key(pki.dp_auth, cert))


@case("ES10-AUTHSRV-009")
def authenticate_replayed(ctx: Es10Context) -> None:
    session = authenticated(ctx)
    expect_auth_error(call(ctx, session.request, m.AuthenticateServerResponse, "AuthenticateServer"),
                      NO_SESSION_CONTEXT)


@case("ES10-AUTHSRV-010")
def server_certificate_forged(ctx: Es10Context) -> None:
    pki = ctx.smdp.pki
    cert = reissue(pki.dp_auth.cert, foreign_key(ctx.smdp.curve, ctx.rng), rng=ctx.rng)
    _auth_refused(ctx, INVALID_CERTIFICATE, auth=_with_key(pki.dp_auth, cert))


# The OID of the key's curve in a SubjectPublicKeyInfo; its last arc changed to 127 makes a curve nobody knows.
CURVE_OIDS = (bytes.fromhex("06082A8648CE3D030107"), bytes.fromhex("06092B2403030208010107"))


def unknown_curve(der: bytes) -> bytes:
    oid = next((o for o in CURVE_OIDS if o in der), None)
    require(oid is not None, "the runner's CERT.DPauth is on neither SGP.22 curve")
    return der.replace(oid, oid[:-1] + b"\x7f", 1)


@case("ES10-AUTHSRV-011")
def server_certificate_unknown_curve(ctx: Es10Context) -> None:
    der = unknown_curve(Credential(ctx.smdp.pki.dp_auth.cert).cert_der)
    _auth_refused(ctx, UNSUPPORTED_CURVE, INVALID_CERTIFICATE, certificate_der=der)


# --- PrepareDownload (5.7.5) -----------------------------------------------------------------------


def _prepare_refused(ctx: Es10Context, code: int, **tamper) -> None:
    session = authenticated(ctx)
    try:
        expect_download_error(prepare(ctx, session, **tamper), code)
    finally:
        _cancel_quietly(ctx, session)


def _cancel_quietly(ctx: Es10Context, session: CardSession) -> None:
    with suppress(KinsimError):
        ctx.es10.cancel_session(session.transaction_id, POSTPONED)


@case("ES10-PREP-001")
def prepare_download(ctx: Es10Context) -> None:
    _cancel_quietly(ctx, prepared(ctx))


@case("ES10-PREP-002")
def smdp_signature_invalid(ctx: Es10Context) -> None:
    _prepare_refused(ctx, INVALID_SIGNATURE, signing_key=foreign_key(ctx.smdp.curve, ctx.rng))


@case("ES10-PREP-003")
def smdp_signed_other_transaction(ctx: Es10Context) -> None:
    _prepare_refused(ctx, INVALID_TRANSACTION_ID, transaction_id=ctx.rng(16))


@case("ES10-PREP-004")
def dp_pb_of_other_smdp(ctx: Es10Context) -> None:
    pki = ctx.smdp.pki
    other = issue_server(pki.ci, Role.DP_PB, oid=f"2.999.{int.from_bytes(ctx.rng(3), 'big') + 100000}",
                         key=new_private_key(ctx.smdp.curve, ctx.rng), now=ctx.clock(), rng=ctx.rng)
    _prepare_refused(ctx, INVALID_CERTIFICATE, pb=other)


@case("ES10-PREP-005")
def prepare_replayed(ctx: Es10Context) -> None:
    session = prepared(ctx)
    try:
        request = ctx.smdp.prepare_download(session)
        expect_download_error(call(ctx, request, m.PrepareDownloadResponse, "PrepareDownload"), NO_SESSION_CONTEXT)
    finally:
        _cancel_quietly(ctx, session)


@case("ES10-PREP-006")
def dp_pb_expired(ctx: Es10Context) -> None:
    pki = ctx.smdp.pki
    cert = expired(pki.dp_pb.cert, pki.ci.signing_key(), ctx.clock(), ctx.rng)
    _prepare_refused(ctx, INVALID_CERTIFICATE, pb=_with_key(pki.dp_pb, cert))


# --- LoadBoundProfilePackage (5.7.6, 2.5.5) ----------------------------------------------------------


@case("ES10-LOAD-001")
def load_profile(ctx: Es10Context) -> None:
    iccid = ctx.smdp.new_iccid()
    with card_cleanup(ctx, iccid):
        session = prepared(ctx)
        package = ctx.smdp.bind(session, *ctx.smdp.profile(iccid))
        result = ctx.es10.load_bound_profile_package(package)
        ctx.smdp.check_installed(session, result, iccid)
        infos = ctx.es10.get_profiles_info(ProfileRef(iccid=iccid))
        require(len(infos) == 1 and infos[0]["profileState"].native == "disabled",
                "GetProfilesInfo does not list the new profile as disabled")
        seq = result["profileInstallationResultData"]["notificationMetadata"]["seqNumber"].native
        listed = [n["seqNumber"].native for n in ctx.es10.list_notifications({"notificationInstall"})]
        require(seq in listed, "ListNotification does not list the installation result")
        retrieved = ctx.es10.retrieve_notifications(seq)
        require(len(retrieved) == 1 and retrieved[0].chosen.dump() == result.dump(),
                "RetrieveNotificationsList does not return the signed installation result")
        ctx.es10.remove_notification(seq)
        require(seq not in [n["seqNumber"].native for n in ctx.es10.list_notifications()],
                "RemoveNotificationFromList left the notification")
        ctx.es10.delete_profile(ProfileRef(iccid=iccid))
        require(iccid not in installed_iccids(ctx), "DeleteProfile left the profile")


def _load_refused(ctx: Es10Context, command: int | None, reason: int, *, segments=None, bind=None,
                  package_iccid: str | None = None) -> None:
    """Bind a profile (``bind`` tampers the binding), optionally change the segments, load, expect the error."""
    iccid = ctx.smdp.new_iccid()
    with card_cleanup(ctx, iccid):
        session = prepared(ctx)
        metadata, upp = ctx.smdp.profile(iccid, package_iccid=package_iccid)
        package = ctx.smdp.bind(session, metadata, upp, **(bind or {}))
        parts = bpp.segments(package)
        result = load(ctx, segments(parts) if segments else parts)
        expect_install_error(ctx, session, result, command, reason, iccid)


def _last_86(parts: list[bytes]) -> int:
    return max(i for i, part in enumerate(parts) if part[0] == 0x86)


def _mac_broken(parts: list[bytes]) -> list[bytes]:
    index = _last_86(parts)
    return [*parts[:index], parts[index][:-1] + bytes([parts[index][-1] ^ 0x01]), *parts[index + 1:]]


def _truncated(parts: list[bytes]) -> list[bytes]:
    index = min(i for i, part in enumerate(parts) if part[0] == 0x86)
    return [*parts[:index], parts[index][:-9], *parts[index + 1:]]


def _out_of_order(parts: list[bytes]) -> list[bytes]:
    """ISC, then the whole A1 sequence (StoreMetadata) before the A0 sequence (ConfigureISDP)."""
    a1 = next(i for i, part in enumerate(parts) if part[0] == 0xA1)
    after = next(i for i, part in enumerate(parts) if i > a1 and part[0] in (0xA2, 0xA3))
    return [parts[0], *parts[a1:after], *parts[1:a1], *parts[after:]]


@case("ES10-LOAD-002")
def smdp_sign_invalid(ctx: Es10Context) -> None:
    _load_refused(ctx, ISC, BPP_INVALID_SIGNATURE, bind={"pb_key": foreign_key(ctx.smdp.curve, ctx.rng)})


@case("ES10-LOAD-003")
def bpp_other_transaction(ctx: Es10Context) -> None:
    _load_refused(ctx, ISC, BPP_INVALID_TRANSACTION_ID, bind={"transaction_id": ctx.rng(16)})


@case("ES10-LOAD-004")
def bpp_mac_failure(ctx: Es10Context) -> None:
    _load_refused(ctx, LOAD_PROFILE_ELEMENTS, SECURITY_ERROR, segments=_mac_broken)


@case("ES10-LOAD-005")
def bpp_truncated_segment(ctx: Es10Context) -> None:
    _load_refused(ctx, LOAD_PROFILE_ELEMENTS, STRUCTURE_ERROR, segments=_truncated)


@case("ES10-LOAD-006")
def bpp_iccid_mismatch(ctx: Es10Context) -> None:
    _load_refused(ctx, LOAD_PROFILE_ELEMENTS, ICCID_MISMATCH, package_iccid=ctx.smdp.new_iccid())


@case("ES10-LOAD-007")
def bpp_iccid_exists(ctx: Es10Context) -> None:
    iccid = ctx.smdp.new_iccid()
    with card_cleanup(ctx, iccid):
        first = prepared(ctx)
        ctx.smdp.check_installed(first, ctx.es10.load_bound_profile_package(ctx.smdp.bind(first, *ctx.smdp.profile(iccid))),
                                 iccid)
        session = prepared(ctx)
        result = load(ctx, bpp.segments(ctx.smdp.bind(session, *ctx.smdp.profile(iccid))))
        final = result["profileInstallationResultData"]["finalResult"]
        require(final.name == "errorResult", "the card installed a second profile with the same ICCID")
        require((int(final.chosen["bppCommandId"]), int(final.chosen["errorReason"])) == (STORE_METADATA, ICCID_EXISTS),
                f"expected storeMetadata(2) / installFailedDueToIccidAlreadyExistsOnEuicc(9); got {final.chosen.native}")
        require(installed_iccids(ctx).count(iccid) == 1, "the ICCID is not installed exactly once")


@case("ES10-LOAD-008")
def bpp_out_of_order(ctx: Es10Context) -> None:
    _load_refused(ctx, None, STRUCTURE_ERROR, segments=_out_of_order)


# --- CancelSession (5.7.14) ------------------------------------------------------------------------


@case("ES10-CANCEL-001")
def cancel_session(ctx: Es10Context) -> None:
    session = authenticated(ctx)
    ctx.smdp.check_cancelled(session, ctx.es10.cancel_session(session.transaction_id, POSTPONED), POSTPONED)


@case("ES10-CANCEL-002")
def cancel_other_transaction(ctx: Es10Context) -> None:
    session = authenticated(ctx)
    try:
        response = ctx.es10.cancel_session(ctx.rng(16), POSTPONED)
        require(response.name == "cancelSessionResponseError",
                "the card cancelled (and signed) a session for a transactionId it does not hold")
        require(response.chosen.native == INVALID_TRANSACTION_ID,
                f"expected invalidTransactionId(5); got {response.chosen.native}")
    finally:
        _cancel_quietly(ctx, session)


# --- malformed APDUs (5.7.2) -----------------------------------------------------------------------


@case("ES10-APDU-001")
def malformed_request(ctx: Es10Context) -> None:
    request = ctx.smdp.authenticate_server(new_session(ctx)).dump()
    expect_error_status(ctx, request[:-7], "truncated AuthenticateServer")


@case("ES10-APDU-002")
def unknown_request_tag(ctx: Es10Context) -> None:
    expect_error_status(ctx, bytes.fromhex("BF7F0380010A"), "unknown ES10 function")


@case("ES10-APDU-003")
def oversized_transaction_id(ctx: Es10Context) -> None:
    session = new_session(ctx)
    request = ctx.smdp.authenticate_server(session, transaction_id=ctx.rng(17)).dump()

    def refused(data: bytes) -> bool:
        with suppress(KinsimError):
            return m.decode(m.AuthenticateServerResponse, data).name == "authenticateResponseError"
        return False

    expect_error_status(ctx, request, "AuthenticateServer with a 17-byte transactionId", accept=refused)


# --- ES10c profile management (5.7.16 - 5.7.18) ----------------------------------------------------


@case("ES10-PROF-001")
def manage_profile(ctx: Es10Context) -> None:
    iccid = ctx.smdp.new_iccid()
    ref = ProfileRef(iccid=iccid)
    with card_cleanup(ctx, iccid):
        session = prepared(ctx)
        ctx.smdp.check_installed(session, ctx.es10.load_bound_profile_package(
            ctx.smdp.bind(session, *ctx.smdp.profile(iccid))), iccid)
        for step, state in ((ctx.es10.enable_profile, "enabled"), (ctx.es10.disable_profile, "disabled")):
            step(ref)
            infos = ctx.es10.get_profiles_info(ref)
            require(infos and infos[0]["profileState"].native == state, f"the profile is not {state} afterwards")
        ctx.es10.delete_profile(ref)
        require(iccid not in installed_iccids(ctx), "DeleteProfile left the profile")


def run(ctx: Es10Context, *, ids=(), skip_features=(), on_result=None) -> list[Result]:
    """Select and run ES10 cases on the context's card (the ES10 client is opened and closed here)."""
    with ctx.es10:
        chosen = select(ES10_CASES, ids=ids, skip_features=skip_features, missing_material=ctx.missing_material())
        return asyncio.run(run_cases(chosen, CASES, ctx, on_result=on_result))
