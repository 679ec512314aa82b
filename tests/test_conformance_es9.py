"""The ES9+ catalogue against our SM-DP+ (HTTPS on an ephemeral loopback port): every case passes;
and each negative case detects a deliberately broken SM-DP+ in which exactly one check is disabled."""

from __future__ import annotations

import dataclasses

import pytest

import certs.validate
import rsp.es9_json
import rsp.messages
import smdp.core
import smdp.server
from certs.validate import Role
from conformance.catalogue import ES9_CASES
from conformance.identity import euicc_from_pki, sgp26_euicc
from conformance.orders import orders_needed
from conformance.runner import FAIL, PASS, exit_status
from rsp import crypto, status
from rsp import messages as m
from rsp.errors import DecodeError, StatusCodeError
from rsp.tlv import read_tlv
from smdp.core import SmdpCore
from smdp.store import ProfileState, SessionState, Store
from tests.conformance_fixtures import listed_orders, run_es9_against, start_smdp, test_pki


@pytest.fixture
def target(tmp_path):
    smdp = start_smdp(tmp_path / "smdp")
    yield smdp
    smdp.close()


def failing(results) -> set[str]:
    return {r.case.id for r in results if r.status != PASS}


def test_every_case_passes_with_the_sgp26_euicc_and_es2_orders(target):
    results = run_es9_against(target, sgp26_euicc())
    assert [r.case.id for r in results] == [c.id for c in ES9_CASES]
    assert failing(results) == set(), [(r.case.id, r.detail) for r in results if not r.passed]
    assert exit_status(results) == 0


def test_every_case_passes_with_a_generated_euicc_and_listed_matching_ids(target):
    material = euicc_from_pki(test_pki())
    needed = orders_needed(ES9_CASES)
    orders = listed_orders(target, material, released=needed["fresh"] + needed["shared"], cc=needed["cc"],
                           unreleased=needed["unreleased"], other=needed["other-eid"])
    results = run_es9_against(target, material, orders)
    assert failing(results) == set(), [(r.case.id, r.detail) for r in results if not r.passed]


def test_a_run_that_runs_out_of_orders_is_blocked_not_passed(target):
    material = euicc_from_pki(test_pki())
    orders = listed_orders(target, material, released=0, cc=0, unreleased=0, other=0)
    results = run_es9_against(target, material, orders, ids=["ES9-DOWNLOAD-001", "ES9-INITAUTH-001"])
    assert [r.status for r in results] == ["blocked", PASS]
    assert "--matching-id" in results[0].detail
    assert exit_status(results) == 1


def test_a_skipped_feature_is_not_applicable(target):
    results = run_es9_against(target, sgp26_euicc(), skip_features=["confirmation-code"])
    skipped = {r.case.id for r in results if r.status == "skip"}
    assert skipped == {c.id for c in ES9_CASES if "confirmation-code" in c.features}
    assert exit_status(results) == 0


# --- deliberately broken SM-DP+: one check disabled per test ---------------------------------------


class AnyBytes(bytes):
    """Compares equal to everything, so a comparison against it can never fail a check."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = bytes.__hash__


class AnyStr(str):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


class AnyValue:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


class ModuleProxy:
    """A stand-in for a module as another module sees it, with some names replaced."""

    def __init__(self, module, **overrides):
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._module, name)


def _signs(spec, data: bytes) -> bool:
    try:
        tlv, _ = read_tlv(data)
        m.decode(spec, tlv.raw)
    except DecodeError:
        return False
    return True


def accept_signatures_over(spec):
    """The SM-DP+ takes any signature over data starting with ``spec`` as valid."""
    def apply(mp):
        def verify(key, data, signature):
            return True if _signs(spec, data) else crypto.verify(key, data, signature)
        mp.setattr(smdp.core, "crypto", ModuleProxy(crypto, verify=verify))
    return apply


def live_session(step, *, unknown_falls_back=False, any_state=False, **loose):
    """``SmdpCore._live_session`` for one ES9+ step: an unknown transactionId picks the newest live
    session, any session state is accepted, or session fields compare equal to anything."""
    real = SmdpCore._live_session

    def apply(mp):
        def live(self, transaction_id, states, name):
            if name != step:
                return real(self, transaction_id, states, name)
            if unknown_falls_back and self.store.session(transaction_id) is None:
                transaction_id = _newest_session(self.store, states) or transaction_id
            session = real(self, transaction_id, tuple(SessionState) if any_state else states, name)
            return dataclasses.replace(session, **{k: kind(getattr(session, k)) for k, kind in loose.items()})
        mp.setattr(SmdpCore, "_live_session", live)
    return apply


def _newest_session(store: Store, states) -> bytes | None:
    rows = store.conn.execute("SELECT transaction_id, state FROM sessions ORDER BY rowid DESC").fetchall()
    return next((tid for tid, state in rows if state in states), None)


def address_accepted(mp):
    mp.setattr(SmdpCore, "_server_address", lambda self, address: self.config.address)


def any_svn(mp):
    mp.setattr(smdp.core, "SUPPORTED_SVN_MAJOR", AnyValue())


def default_ci_fallback(list_name):
    """InitiateAuthentication falls back to the SM-DP+'s own CIs when none of one eUICC list is known."""
    real = SmdpCore._choose_credentials

    def apply(mp):
        def choose(self, for_verification, for_signing):
            config = self.config
            if list_name == "signing" and not any(p in config.trusted_cis_by_pkid for p in for_signing):
                for_signing = [*for_signing, *config.trusted_cis_by_pkid]
            if list_name == "verification" and not any(p in config.credentials_by_ci for p in for_verification):
                for_verification = [*for_verification, *config.credentials_by_ci]
            return real(self, for_verification, for_signing)
        mp.setattr(SmdpCore, "_choose_credentials", choose)
    return apply


def chain_without_ci_check(mp):
    """The EUM chain is validated against every trusted CI instead of the session's CI."""
    def verify(self, eum_value, euicc_value, ci_pkid):
        eum = smdp.core._load_certificate(eum_value, status.EUM_CERT_INVALID, "EUM")
        euicc = smdp.core._load_certificate(euicc_value, status.EUICC_CERT_INVALID, "eUICC")
        cis, now = list(self.config.trusted_cis), self.clock()
        try:
            certs.validate.validate_chain(eum, Role.EUM, trusted_cis=cis, now=now)
        except certs.validate.CertificateError as exc:
            raise StatusCodeError(status.EUM_CERT_EXPIRED if exc.expired else status.EUM_CERT_INVALID, str(exc)) from None
        try:
            return certs.validate.validate_chain(euicc, Role.EUICC, intermediates=[eum], trusted_cis=cis, now=now)
        except certs.validate.CertificateError as exc:
            raise StatusCodeError(status.EUICC_CERT_EXPIRED if exc.expired else status.EUICC_CERT_INVALID,
                                  str(exc)) from None
    mp.setattr(SmdpCore, "_verify_euicc_chain", verify)


def expiry_ignored(role):
    """Certificate validity is not checked for ``role`` (its notAfter is taken as 'now')."""
    def apply(mp):
        real = smdp.core.validate_chain

        def validate(leaf, wanted, *, intermediates=(), trusted_cis, now):
            cert = leaf if wanted is role else next((c for c in intermediates if role is Role.EUM), None)
            if cert is not None:
                now = min(now, cert.not_valid_after_utc)
            return real(leaf, wanted, intermediates=intermediates, trusted_cis=trusted_cis, now=now)
        mp.setattr(smdp.core, "validate_chain", validate)
    return apply


def euicc_rule_skipped(name):
    """certs.validate skips one rule (``_check_policy`` or ``_check_signature``) for eUICC certificates."""
    def apply(mp):
        real = getattr(certs.validate, name)

        def check(cert, role, *rest):
            if role is Role.EUICC:
                return None
            return real(cert, role, *rest)
        mp.setattr(certs.validate, name, check)
    return apply


def order_lookup(change):
    """``Store.profile_by_matching_id`` bends the order it finds."""
    def apply(mp):
        real = Store.profile_by_matching_id

        def lookup(self, matching_id):
            return change(self, real(self, matching_id))
        mp.setattr(Store, "profile_by_matching_id", lookup)
    return apply


def any_released_order(store, profile):
    return profile or store.profiles([ProfileState.RELEASED], limit=1)[0]


def unbound(store, profile):
    return profile and dataclasses.replace(profile, eid=None)


def released(store, profile):
    if profile is not None and profile.state is ProfileState.CONFIRMED:
        return dataclasses.replace(profile, state=ProfileState.RELEASED)
    return profile


def unlimited_downloads(mp):
    real = SmdpCore.__init__

    def init(self, config, *args, **kwargs):
        real(self, dataclasses.replace(config, max_download_attempts=10**6), *args, **kwargs)
    mp.setattr(SmdpCore, "__init__", init)


def confirmation_code(accept_missing=False, accept_wrong=False, never_block=False):
    real = SmdpCore._check_confirmation_code

    def apply(mp):
        def check(self, profile, session, hash_cc):
            if (hash_cc is None and accept_missing) or (hash_cc is not None and accept_wrong):
                return None
            if never_block:
                profile = dataclasses.replace(profile, cc_attempts=0)
            return real(self, profile, session, hash_cc)
        mp.setattr(SmdpCore, "_check_confirmation_code", check)
    return apply


def otpk_reuse_allowed(mp):
    mp.setattr(Store, "otpk_used", lambda self, otpk: False)


def any_smdp_oid(mp):
    real = SmdpCore.__init__

    def init(self, config, *args, **kwargs):
        real(self, config, *args, **kwargs)
        config.__dict__["smdp_oid"] = AnyStr(config.smdp_oid)
    mp.setattr(SmdpCore, "__init__", init)


def header_unchecked(mp):
    mp.setattr(smdp.server, "_check_http_headers", lambda request: None)


def decode_errors_crash(mp):
    """Malformed input is no longer mapped to statusCodeData: it becomes an internal error."""
    real = smdp.server._as_status_error
    mp.setattr(smdp.server, "_as_status_error", lambda exc: real(exc) if isinstance(exc, rsp.es9_json.MissingField)
               else StatusCodeError(status.EXECUTION_ERROR, "crash"))


def missing_is_invalid(mp):
    real = smdp.server._as_status_error
    mp.setattr(smdp.server, "_as_status_error", lambda exc: StatusCodeError(status.INVALID_REQUEST, str(exc))
               if isinstance(exc, rsp.es9_json.MissingField) else real(exc))


def hex_any_length(mp):
    real = rsp.es9_json._decode_field

    def decode(field, raw):
        if field.kind == rsp.es9_json.HEX and isinstance(raw, str):
            try:
                return bytes.fromhex(raw)
            except ValueError:
                pass
        return real(field, raw)
    mp.setattr(rsp.es9_json, "_decode_field", decode)


def sizes_unchecked(mp):
    mp.setattr(rsp.messages._Sized, "check_size", lambda self: None)


# break -> the cases it must make fail (all other cases keep passing)
BREAKS = {
    "smdp-address-accepted": (address_accepted, {"ES9-INITAUTH-002"}),
    "svn-unchecked": (any_svn, {"ES9-INITAUTH-003"}),
    "signing-ci-unchecked": (default_ci_fallback("signing"), {"ES9-INITAUTH-004"}),
    "verification-ci-unchecked": (default_ci_fallback("verification"), {"ES9-INITAUTH-005"}),
    "authclient-unknown-tid-tolerated": (live_session("AuthenticateClient", unknown_falls_back=True),
                                         {"ES9-AUTHCLIENT-001"}),
    "authclient-replay-accepted": (live_session("AuthenticateClient", any_state=True), {"ES9-AUTHCLIENT-002"}),
    "euicc-signature1-unchecked": (accept_signatures_over(m.EuiccSigned1), {"ES9-AUTHCLIENT-003"}),
    "server-challenge-unchecked": (live_session("AuthenticateClient", server_challenge=AnyBytes),
                                   {"ES9-AUTHCLIENT-004"}),
    "euicc-signed1-tid-unchecked": (live_session("AuthenticateClient", transaction_id=AnyBytes),
                                    {"ES9-AUTHCLIENT-005"}),
    "ci-of-session-unchecked": (chain_without_ci_check, {"ES9-AUTHCLIENT-006"}),
    "eum-expiry-unchecked": (expiry_ignored(Role.EUM), {"ES9-AUTHCLIENT-007"}),
    "euicc-expiry-unchecked": (expiry_ignored(Role.EUICC), {"ES9-AUTHCLIENT-008"}),
    "euicc-role-unchecked": (euicc_rule_skipped("_check_policy"), {"ES9-AUTHCLIENT-009"}),
    "euicc-certificate-signature-unchecked": (euicc_rule_skipped("_check_signature"), {"ES9-AUTHCLIENT-010"}),
    "matching-id-ignored": (order_lookup(any_released_order), {"ES9-AUTHCLIENT-011"}),
    "order-eid-ignored": (order_lookup(unbound), {"ES9-AUTHCLIENT-012"}),
    "release-ignored": (order_lookup(released), {"ES9-AUTHCLIENT-013"}),
    "download-attempts-unlimited": (unlimited_downloads, {"ES9-AUTHCLIENT-014"}),
    "getbpp-state-unchecked": (live_session("GetBoundProfilePackage", any_state=True),
                               {"ES9-GETBPP-001", "ES9-GETBPP-002"}),
    "euicc-signature2-unchecked": (accept_signatures_over(m.EUICCSigned2), {"ES9-GETBPP-003"}),
    "euicc-signed2-tid-unchecked": (live_session("GetBoundProfilePackage", transaction_id=AnyBytes),
                                    {"ES9-GETBPP-004"}),
    "missing-code-accepted": (confirmation_code(accept_missing=True), {"ES9-GETBPP-005"}),
    "wrong-code-accepted": (confirmation_code(accept_wrong=True), {"ES9-GETBPP-006", "ES9-GETBPP-007"}),
    "code-attempts-unlimited": (confirmation_code(never_block=True), {"ES9-GETBPP-007"}),
    "otpk-reuse-allowed": (otpk_reuse_allowed, {"ES9-GETBPP-008"}),
    "cancel-signature-unchecked": (accept_signatures_over(m.EuiccCancelSessionSigned), {"ES9-CANCEL-002"}),
    "cancel-oid-unchecked": (any_smdp_oid, {"ES9-CANCEL-003"}),
    "cancel-unknown-tid-tolerated": (live_session("CancelSession", unknown_falls_back=True), {"ES9-CANCEL-004"}),
    "admin-protocol-unchecked": (header_unchecked, {"ES9-PROTO-001"}),
    "decode-errors-crash": (decode_errors_crash,
                            {"ES9-PROTO-002", "ES9-PROTO-004", "ES9-PROTO-005", "ES9-PROTO-006", "ES9-PROTO-007"}),
    "missing-field-as-invalid": (missing_is_invalid, {"ES9-PROTO-003"}),
    "transaction-id-length-unchecked": (hex_any_length, {"ES9-PROTO-006"}),
    "asn1-sizes-unchecked": (sizes_unchecked, {"ES9-PROTO-007"}),
}


def test_every_negative_case_has_a_break_that_it_detects():
    detected = set().union(*(cases for _, cases in BREAKS.values()))
    assert detected == {c.id for c in ES9_CASES if c.negative}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_broken_smdp_fails_exactly_the_matching_cases(name, monkeypatch, tmp_path):
    apply, expected = BREAKS[name]
    apply(monkeypatch)
    smdp_target = start_smdp(tmp_path / "smdp")
    try:
        results = run_es9_against(smdp_target, sgp26_euicc())
    finally:
        smdp_target.close()
    assert failing(results) == expected, [(r.case.id, r.status, r.detail) for r in results if not r.passed]
    assert all(r.status == FAIL for r in results if r.case.id in expected)
    assert exit_status(results) == 1
