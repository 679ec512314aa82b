"""ES10a addresses, EUICCInfo1/2, GetEID and malformed requests through APDUs (SGP.22 5.7.3, 5.7.4,
5.7.8, 5.7.9, 5.7.20), and the card's identity (EID check digits, certified key)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs.pki import pkid
from euicc_sim.identity import EuiccConfig, issue_identity, sgp26_identity
from rsp import messages as m
from rsp.errors import CertificateError, DecodeError
from rsp.ids import make_eid, validate_eid
from rsp.tlv import encode_tlv, read_header
from tests.euicc_fixtures import NOW, card_at, iccid, pki_for, profile_package


@pytest.fixture
def bench(tmp_path):
    with card_at(tmp_path / "euicc", default_dp_address="smdp.example.com") as bench:
        yield bench


def addresses(bench) -> dict:
    return bench.reader.call(m.EuiccConfiguredAddressesRequest({}), m.EuiccConfiguredAddressesResponse).native


def set_default(bench, address: str) -> int:
    request = m.SetDefaultDpAddressRequest({"defaultDpAddress": address})
    return bench.reader.call(request, m.SetDefaultDpAddressResponse)["setDefaultDpAddressResult"].native


def info2(bench) -> m.EUICCInfo2:
    return bench.reader.call(m.GetEuiccInfo2Request({}), m.EUICCInfo2)


def free_nvm(info: m.EUICCInfo2) -> int:
    resource = info["extCardResource"].native
    at = resource.index(b"\x82\x04")
    return int.from_bytes(resource[at + 2 : at + 6], "big")


# --- ES10a (5.7.3, 5.7.4) ---------------------------------------------------------------------


def test_configured_addresses(bench):
    assert addresses(bench) == {"defaultDpAddress": "smdp.example.com", "rootDsAddress": "lpa.ds.gsma.com"}


def test_set_default_dp_address_persists(bench, tmp_path):
    assert set_default(bench, "other.example.com") == 0
    assert addresses(bench)["defaultDpAddress"] == "other.example.com"
    assert bench.euicc.store.state["defaultDpAddress"] == "other.example.com"


def test_empty_default_dp_address_removes_it(bench):
    assert set_default(bench, "") == 0
    assert addresses(bench) == {"defaultDpAddress": None, "rootDsAddress": "lpa.ds.gsma.com"}


# --- EUICCInfo1 / EUICCInfo2 (5.7.8, 5.7.9) ---------------------------------------------------


def test_euicc_info1_names_the_trusted_ci(bench):
    info1 = bench.reader.call(m.GetEuiccInfo1Request({}), m.EUICCInfo1).native
    ci = pkid(pki_for().ci.cert)
    assert info1 == {
        "svn": b"\x02\x05\x00",
        "euiccCiPKIdListForVerification": [ci],
        "euiccCiPKIdListForSigning": [ci],
    }


def test_euicc_info2_declares_the_configuration(tmp_path):
    with card_at(
        tmp_path / "e",
        svn="2.2.1",
        memory=100_000,
        forbidden_pprs=("ppr1",),
        euicc_category=1,
        uicc_capabilities=("usimSupport", "akaMilenage"),
    ) as bench:
        info = info2(bench).native
    assert info["svn"] == b"\x02\x02\x01" and info["profileVersion"] == b"\x02\x03\x01"
    assert info["uiccCapability"] == {"usimSupport", "akaMilenage"}
    assert info["rspCapability"] == {"additionalProfile", "testProfileSupport", "rpmSupport"}
    assert info["forbiddenProfilePolicyRules"] == {"ppr1"} and info["euiccCategory"] == 1
    assert info["sasAcreditationNumber"] == "KINSIM-TEST-ONLY"
    assert info["extCardResource"] == bytes.fromhex("8101008204000186A0830400010000")


def test_free_memory_follows_the_installed_profiles(bench):
    before = free_nvm(info2(bench))
    bench.install(iccid(1))
    info = info2(bench)
    assert free_nvm(info) == before - len(profile_package(iccid(1)))
    assert info["extCardResource"].native[:3] == b"\x81\x01\x01"  # one installed profile


def test_additional_profile_disappears_when_memory_is_used_up(tmp_path):
    with card_at(tmp_path / "e", memory=len(profile_package(iccid(1)))) as bench:
        assert "additionalProfile" in info2(bench)["rspCapability"].native
        bench.install(iccid(1))
        assert "additionalProfile" not in info2(bench)["rspCapability"].native
        assert free_nvm(info2(bench)) == 0


# --- GetEID (5.7.20) --------------------------------------------------------------------------


def test_get_eid(bench):
    response = bench.reader.call(m.GetEuiccDataRequest({"tagList": b"\x5a"}), m.GetEuiccDataResponse)
    eid = response["eidValue"].native.hex()
    assert eid == bench.eid and validate_eid(eid) == eid


def test_get_eid_with_another_tag(bench):
    data, sw = bench.reader.store_data(m.GetEuiccDataRequest({"tagList": b"\x4f"}).dump())
    assert sw == 0x6A80 and data == b""


# --- requests that cannot be parsed (5.7.1: a status word, nothing changed) -------------------


@pytest.mark.parametrize(
    "request_hex",
    [
        "BF99 00",  # no ES10 function has this tag
        "BF31 03 800100",  # EnableProfileRequest without its profile identifier
        "BF3F 02 8000 00",  # trailing byte after the request
        "30 00",  # not an ES10 request at all
    ],
)
def test_unparsable_request_is_incorrect_data(bench, request_hex):
    state = bench.euicc.store.state
    data, sw = bench.reader.store_data(bytes.fromhex(request_hex.replace(" ", "")))
    assert (data, sw) == (b"", 0x6A80)
    assert bench.euicc.store.state == state


# --- identity ---------------------------------------------------------------------------------


def test_new_identity_has_a_valid_eid_certified_by_the_eum():
    pki = pki_for()
    identity = issue_identity(pki.eum, [pki.ci.cert], now=NOW - timedelta(hours=1))
    assert validate_eid(identity.eid) == identity.eid and identity.eid.startswith("89049032")
    identity.check(NOW)  # raises unless the eUICC certificate chains to the CI


def test_new_identity_with_a_chosen_eid():
    pki = pki_for()
    eid = make_eid("890490320000000000000000004242")
    identity = issue_identity(pki.eum, [pki.ci.cert], eid=eid, now=NOW - timedelta(hours=1))
    assert identity.eid == eid and identity.euicc.cert.subject.rfc4514_string().count(eid) == 1


def test_identity_refuses_an_eid_with_wrong_check_digits():
    pki = pki_for()
    with pytest.raises(DecodeError):
        issue_identity(pki.eum, [pki.ci.cert], eid="89049032000000000000000000000000")


def test_identity_refuses_an_eid_outside_the_eum_range():
    pki = pki_for()
    with pytest.raises(CertificateError):
        issue_identity(pki.eum, [pki.ci.cert], eid=make_eid("890490330000000000000000000000"))


def test_sgp26_identity_is_the_published_test_euicc():
    identity = sgp26_identity("nist")
    assert identity.eid == "89049032123451234512345678901235"
    assert len(identity.verification_pkids) == 2 and len(identity.signing_pkids) == 1
    identity.check(NOW)


def test_configuration_rejects_unknown_capabilities():
    with pytest.raises(DecodeError):
        EuiccConfig(uicc_capabilities=("warpDrive",))
    with pytest.raises(DecodeError):
        EuiccConfig(svn="2.5")
    with pytest.raises(DecodeError):
        EuiccConfig.from_json({"colour": "blue"})


# --- robustness: any bytes get a response or a status word, never an internal error -----------

REQUEST_TAGS = [
    0xBF3C,
    0xBF3F,
    0xBF20,
    0xBF22,
    0xBF2E,
    0xBF38,
    0xBF21,
    0xBF41,
    0xBF28,
    0xBF2B,
    0xBF30,
    0xBF43,
    0xBF2D,
    0xBF31,
    0xBF32,
    0xBF33,
    0xBF34,
    0xBF3E,
    0xBF29,
    0xBF36,
    0xA3,
    0x86,
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=st.sampled_from(REQUEST_TAGS), body=st.binary(max_size=300))
def test_any_request_body_gets_an_answer_not_an_internal_error(bench, tag, body):
    request = encode_tlv(tag, body)
    data, sw = bench.reader.store_data(request)
    assert sw in (0x9000, 0x6A80, 0x6985), f"{request.hex()} -> {sw:04X}"
    if sw == 0x9000 and data:
        assert read_header(data)[0] in (tag, 0xBF37)  # the function's response, or a PIR
