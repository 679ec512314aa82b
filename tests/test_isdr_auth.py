"""ES10b GetEUICCChallenge, AuthenticateServer, PrepareDownload and CancelSession through APDUs
(SGP.22 5.7.7, 5.7.13, 5.7.5, 5.7.14), success and every error outcome."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import issue_server
from certs.validate import Role, validate_chain
from rsp import crypto
from rsp import messages as m
from rsp.errors import ApduError
from rsp.tlv import encode_tlv
from tests.euicc_fixtures import NOW, SMDP_ADDRESS, card_at, pki_for, reissue


@pytest.fixture
def bench(tmp_path):
    with card_at(tmp_path / "euicc") as bench:
        yield bench


def counter_rng():
    state = {"n": 0}

    def rng(size: int) -> bytes:
        state["n"] += 1
        return (state["n"].to_bytes(4, "big") * size)[:size]

    return rng


def authenticate(bench, request=None, challenge=None):
    challenge = challenge if challenge is not None else bench.reader.challenge()
    request = request or bench.smdp.authenticate_server(challenge)
    return bench.reader.call(request, m.AuthenticateServerResponse)


def auth_error(response) -> str:
    assert response.name == "authenticateResponseError"
    return response.chosen["authenticateErrorCode"].native


def authenticated(bench):
    response = authenticate(bench)
    assert response.name == "authenticateResponseOk"
    return response


def download_error(response) -> str:
    assert response.name == "downloadResponseError"
    return response.chosen["downloadErrorCode"].native


# --- GetEUICCChallenge (5.7.7) ----------------------------------------------------------------


def test_challenge_is_16_fresh_bytes_from_the_injected_rng(tmp_path):
    with card_at(tmp_path / "e", rng=counter_rng()) as bench:
        first, second = bench.reader.challenge(), bench.reader.challenge()
    assert first == bytes.fromhex("00000001") * 4 and second == bytes.fromhex("00000002") * 4


def test_truncated_challenge_request_is_a_status_word(bench):
    data, sw = bench.reader.store_data(bytes.fromhex("BF2E05800100"))  # 5 bytes announced, 3 sent
    assert sw == 0x6A80 and data == b""


# --- AuthenticateServer (5.7.13) --------------------------------------------------------------


def test_authenticate_server_signs_euicc_signed1_with_the_certified_key(bench):
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge)
    ok = bench.reader.call(request, m.AuthenticateServerResponse).chosen
    signed1 = ok["euiccSigned1"]
    assert signed1["transactionId"].native == bench.smdp.transaction_id
    assert signed1["serverAddress"].native == SMDP_ADDRESS
    assert signed1["serverChallenge"].native == bench.smdp.server_challenge
    assert signed1["ctxParams1"].dump() == request["ctxParams1"].dump()  # the LPA's bytes, unchanged
    info2 = bench.reader.es10(m.GetEuiccInfo2Request({}).dump())
    assert signed1["euiccInfo2"].dump() == info2
    euicc_cert = x509.load_der_x509_certificate(ok["euiccCertificate"].dump())
    eum_cert = x509.load_der_x509_certificate(ok["eumCertificate"].dump())
    chain = validate_chain(
        euicc_cert, Role.EUICC, intermediates=[eum_cert], trusted_cis=[pki_for().ci.cert], now=NOW
    )
    assert chain.eid == bench.eid
    assert crypto.verify(euicc_cert.public_key(), signed1.dump(), ok["euiccSignature1"].native)


def test_authenticate_server_without_challenge_has_no_session_context(bench):
    response = authenticate(bench, request=bench.smdp.authenticate_server(bytes(16)), challenge=b"")
    assert auth_error(response) == "noSessionContext"
    assert response.chosen["transactionId"].native == bench.smdp.transaction_id


def test_second_authenticate_server_in_one_session_has_no_session_context(bench):
    challenge = bench.reader.challenge()
    assert authenticate(bench, challenge=challenge).name == "authenticateResponseOk"
    assert auth_error(authenticate(bench, challenge=challenge)) == "noSessionContext"


def test_authenticate_server_with_wrong_challenge(bench):
    challenge = bench.reader.challenge()
    other = bytes(b ^ 1 for b in challenge)
    response = authenticate(bench, request=bench.smdp.authenticate_server(other), challenge=challenge)
    assert auth_error(response) == "euiccChallengeMismatch"


def test_a_failed_authentication_ends_the_session(bench):
    challenge = bench.reader.challenge()
    wrong = bench.smdp.authenticate_server(bytes(16))
    assert auth_error(authenticate(bench, request=wrong, challenge=challenge)) == "euiccChallengeMismatch"
    right = bench.smdp.authenticate_server(challenge)
    assert auth_error(authenticate(bench, request=right, challenge=challenge)) == "noSessionContext"


def test_authenticate_server_with_bad_signature(bench):
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge)
    request["serverSignature1"] = bytes(
        b ^ 0xFF if i == 5 else b for i, b in enumerate(request["serverSignature1"].native)
    )
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "invalidSignature"


def test_authenticate_server_signed_by_another_key(bench):
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(
        challenge, auth=bench.smdp.pki.dp_pb
    )  # DPpb key, DPauth role wanted
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "invalidCertificate"


def test_authenticate_server_from_an_unknown_ci(bench):
    foreign = pki_for("nist", "2.999.77")  # another CI altogether
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, auth=foreign.dp_auth)
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "ciPKUnknown"


def test_authenticate_server_asking_for_an_unknown_signing_ci(bench):
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, pkid=bytes(20))
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "ciPKUnknown"


def test_authenticate_server_with_expired_certificate(bench):
    pki = bench.smdp.pki
    expired = reissue(pki.dp_auth, pki.ci, not_after=NOW - timedelta(days=1))
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, auth=expired)
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "invalidCertificate"


def test_authenticate_server_with_certificate_not_signed_by_the_ci(bench):
    pki = bench.smdp.pki
    forged = reissue(pki.dp_auth, pki.eum)  # right names and AKI, wrong signer
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, auth=forged)
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "invalidCertificate"


def test_authenticate_server_with_unsupported_curve(bench):
    pki = bench.smdp.pki
    p384 = reissue(pki.dp_auth, pki.ci, key=ec.generate_private_key(ec.SECP384R1()))
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, auth=p384)
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "unsupportedCurve"


def test_authenticate_server_with_certificate_without_oid(bench):
    pki = bench.smdp.pki
    no_oid = reissue(pki.dp_auth, pki.ci, drop_alt_name=True)
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, auth=no_oid)
    assert auth_error(authenticate(bench, request=request, challenge=challenge)) == "invalidOid"


def test_authenticate_server_accepts_an_smds(bench):
    challenge = bench.reader.challenge()
    request = bench.smdp.authenticate_server(challenge, auth=bench.smdp.pki.ds_auth)
    assert authenticate(bench, request=request, challenge=challenge).name == "authenticateResponseOk"


def test_malformed_authenticate_server_is_a_status_word(bench):
    bench.reader.challenge()
    data, sw = bench.reader.store_data(bytes.fromhex("BF3803800100"))
    assert sw == 0x6A80


# --- PrepareDownload (5.7.5) ------------------------------------------------------------------


def test_prepare_download_returns_a_signed_one_time_key(bench):
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth, hash_cc=bytes(range(32)))
    ok = bench.reader.call(request, m.PrepareDownloadResponse).chosen
    signed2 = ok["euiccSigned2"]
    assert signed2["transactionId"].native == bench.smdp.transaction_id
    assert signed2["hashCc"].native == bytes(range(32))
    otpk = crypto.load_public_point("nist", signed2["euiccOtpk"].native)  # a point on the DPpb curve
    assert otpk is not None
    euicc_key = x509.load_der_x509_certificate(auth.chosen["euiccCertificate"].dump()).public_key()
    smdp_signature2_do = encode_tlv(0x5F37, bench.smdp.smdp_signature2)
    assert crypto.verify(euicc_key, signed2.dump() + smdp_signature2_do, ok["euiccSignature2"].native)
    assert not crypto.verify(euicc_key, signed2.dump(), ok["euiccSignature2"].native)


def test_prepare_download_without_authentication_has_no_session_context(bench):
    bench.reader.challenge()
    fake_auth = m.AuthenticateServerResponse(
        name="authenticateResponseOk",
        value={
            "euiccSigned1": {
                "transactionId": b"\x01",
                "serverAddress": "x",
                "serverChallenge": bytes(16),
                "euiccInfo2": m.decode(m.EUICCInfo2, bench.reader.es10(bytes.fromhex("BF2200"))),
                "ctxParams1": bench.smdp.authenticate_server(bytes(16))["ctxParams1"],
            },
            "euiccSignature1": bytes(64),
            "euiccCertificate": bench.smdp.authenticate_server(bytes(16))["serverCertificate"],
            "eumCertificate": bench.smdp.authenticate_server(bytes(16))["serverCertificate"],
        },
    )
    response = bench.reader.call(bench.smdp.prepare_download(fake_auth), m.PrepareDownloadResponse)
    assert download_error(response) == "noSessionContext"
    assert response.chosen["transactionId"].native == bench.smdp.transaction_id


def test_prepare_download_twice_has_no_session_context(bench):
    auth = authenticated(bench)
    assert (
        bench.reader.call(bench.smdp.prepare_download(auth), m.PrepareDownloadResponse).name
        == "downloadResponseOk"
    )
    again = bench.reader.call(bench.smdp.prepare_download(auth), m.PrepareDownloadResponse)
    assert download_error(again) == "noSessionContext"


def test_prepare_download_with_signature_not_bound_to_euicc_signature1(bench):
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth)
    request["smdpSignature2"] = crypto.sign(bench.smdp.pki.dp_pb.signing_key(), request["smdpSigned2"].dump())
    assert download_error(bench.reader.call(request, m.PrepareDownloadResponse)) == "invalidSignature"


def test_prepare_download_for_another_transaction(bench):
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth, transaction_id=bytes(16))  # validly signed, wrong session
    response = bench.reader.call(request, m.PrepareDownloadResponse)
    assert download_error(response) == "invalidTransactionId"
    assert response.chosen["transactionId"].native == bytes(16)


def test_prepare_download_with_auth_certificate_instead_of_pb(bench):
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth, pb=bench.smdp.pki.dp_auth)
    assert download_error(bench.reader.call(request, m.PrepareDownloadResponse)) == "invalidCertificate"


def test_prepare_download_from_another_smdp(bench):
    pki = bench.smdp.pki
    other = issue_server(pki.ci, Role.DP_PB, oid="2.999.99", now=NOW - timedelta(days=1))
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth, pb=other)
    assert download_error(bench.reader.call(request, m.PrepareDownloadResponse)) == "invalidCertificate"


def test_prepare_download_from_an_unknown_ci(bench):
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth, pb=pki_for("nist", "2.999.77").dp_pb)
    assert download_error(bench.reader.call(request, m.PrepareDownloadResponse)) == "invalidCertificate"


def test_prepare_download_with_unsupported_curve(bench):
    pki = bench.smdp.pki
    p384 = reissue(pki.dp_pb, pki.ci, key=ec.generate_private_key(ec.SECP384R1()))
    auth = authenticated(bench)
    request = bench.smdp.prepare_download(auth, pb=p384)
    assert download_error(bench.reader.call(request, m.PrepareDownloadResponse)) == "unsupportedCurve"


def test_a_failed_prepare_download_keeps_the_session_for_a_retry(bench):
    auth = authenticated(bench)
    bad = bench.smdp.prepare_download(auth, transaction_id=bytes(16))
    assert download_error(bench.reader.call(bad, m.PrepareDownloadResponse)) == "invalidTransactionId"
    good = bench.smdp.prepare_download(auth)
    assert bench.reader.call(good, m.PrepareDownloadResponse).name == "downloadResponseOk"


def prepared_otpk(bench, **kwargs) -> bytes:
    auth = authenticated(bench)
    response = bench.reader.call(bench.smdp.prepare_download(auth, **kwargs), m.PrepareDownloadResponse)
    return response.chosen["euiccSigned2"]["euiccOtpk"].native


def test_retry_reuses_the_one_time_key_the_package_was_bound_to(bench):
    first = prepared_otpk(bench)
    assert prepared_otpk(bench, bpp_euicc_otpk=first) == first  # 5.7.5: the retry case
    unknown = crypto.public_key_bytes(crypto.generate_private_key("nist").public_key())
    fresh = prepared_otpk(bench, bpp_euicc_otpk=unknown)
    assert fresh not in (first, unknown)
    assert prepared_otpk(bench) != fresh  # without bppEuiccOtpk: always a new pair


# --- CancelSession (5.7.14) -------------------------------------------------------------------


def cancel(bench, transaction_id, reason="postponed"):
    request = m.CancelSessionRequest({"transactionId": transaction_id, "reason": reason})
    return bench.reader.call(request, m.CancelSessionResponse)


def test_cancel_session_is_signed_and_ends_the_session(bench):
    auth = authenticated(bench)
    response = cancel(bench, bench.smdp.transaction_id, "endUserRejection")
    assert response.name == "cancelSessionResponseOk"
    signed = response.chosen["euiccCancelSessionSigned"]
    assert signed.native == {
        "transactionId": bench.smdp.transaction_id,
        "smdpOid": "2.999.10",
        "reason": "endUserRejection",
    }
    euicc_key = x509.load_der_x509_certificate(auth.chosen["euiccCertificate"].dump()).public_key()
    assert crypto.verify(euicc_key, signed.dump(), response.chosen["euiccCancelSessionSignature"].native)
    after = bench.reader.call(bench.smdp.prepare_download(auth), m.PrepareDownloadResponse)
    assert download_error(after) == "noSessionContext"


def test_cancel_session_for_another_transaction(bench):
    authenticated(bench)
    response = cancel(bench, bytes(16))
    assert response.name == "cancelSessionResponseError" and response.chosen.native == 5
    assert cancel(bench, bench.smdp.transaction_id).name == "cancelSessionResponseOk"  # session intact


def test_cancel_session_before_authentication(bench):
    bench.reader.challenge()
    response = cancel(bench, bench.smdp.transaction_id)
    assert response.name == "cancelSessionResponseError" and response.chosen.native == 5


def test_card_reset_ends_the_session(bench):
    auth = authenticated(bench)
    bench.euicc.card.reset()
    bench.reader.__init__(bench.euicc.card)  # select the ISD-R again
    response = bench.reader.call(bench.smdp.prepare_download(auth), m.PrepareDownloadResponse)
    assert download_error(response) == "noSessionContext"


def test_store_data_without_selecting_the_isdr(bench):
    bench.euicc.card.reset()
    with pytest.raises(ApduError) as error:
        bench.reader.es10(bytes.fromhex("BF2E00"))
    assert error.value.sw == 0x6985
