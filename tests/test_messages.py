"""SGP.22 ASN.1 messages: exact tags, known encodings, received-bytes preservation, robustness."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsp import messages as m
from rsp import testdata, tlv
from rsp.errors import DecodeError

TID = bytes.fromhex("0102030405060708090A0B0C0D0E0F10")
ICCID = bytes.fromhex("98001032547698103214")


def first_tag(value) -> int:
    return tlv.read_tag(value.dump(), 0)[0]


# --- exact tags (SGP.22 RSPDefinitions) ---------------------------------------------------------------

TAGGED_REQUESTS = [
    (m.GetEuiccInfo1Request({}), 0xBF20),
    (m.GetEuiccInfo2Request({}), 0xBF22),
    (m.GetEuiccChallengeRequest({}), 0xBF2E),
    (m.ProfileInfoListRequest({}), 0xBF2D),
    (m.ListNotificationRequest({}), 0xBF28),
    (m.RetrieveNotificationsListRequest({}), 0xBF2B),
    (m.NotificationSentRequest({"seqNumber": 1}), 0xBF30),
    (m.CancelSessionRequest({"transactionId": TID, "reason": 0}), 0xBF41),
    (m.SetNicknameRequest({"iccid": ICCID, "profileNickname": "x"}), 0xBF29),
    (m.EuiccMemoryResetRequest({"resetOptions": {"deleteOperationalProfiles"}}), 0xBF34),
    (m.GetEuiccDataRequest({"tagList": b"\x5a"}), 0xBF3E),
    (m.GetRatRequest({}), 0xBF43),
    (m.EuiccConfiguredAddressesRequest({}), 0xBF3C),
    (m.SetDefaultDpAddressRequest({"defaultDpAddress": "a.example"}), 0xBF3F),
    (m.ConfigureISDPRequest({}), 0xBF24),
    (m.DeleteProfileRequest(name="iccid", value=ICCID), 0xBF33),
    (m.EnableProfileRequest({"profileIdentifier": m.ProfileIdentifier(name="iccid", value=ICCID),
                             "refreshFlag": False}), 0xBF31),
    (m.DisableProfileRequest({"profileIdentifier": m.ProfileIdentifier(name="iccid", value=ICCID),
                              "refreshFlag": False}), 0xBF32),
]


@pytest.mark.parametrize(("value", "tag"), TAGGED_REQUESTS, ids=lambda v: type(v).__name__ if not isinstance(v, int) else hex(v))
def test_request_tags(value, tag):
    assert first_tag(value) == tag
    assert m.decode(type(value), value.dump()).dump() == value.dump()


def test_authenticate_server_request_is_bf38_with_spec_layout():
    assert (m.AuthenticateServerRequest.class_, m.AuthenticateServerRequest.tag) == (2, 56)
    response = m.AuthenticateServerResponse(
        name="authenticateResponseError",
        value={"transactionId": TID, "authenticateErrorCode": "euiccChallengeMismatch"})
    # [56] CHOICE, alternative [1] (automatic tagging): BF38 len A1 len 80 10 tid 02 01 06
    assert response.dump() == bytes.fromhex("bf3817a115" + "8010" + TID.hex() + "020106")


def test_automatic_tags_follow_the_module_rules():
    # GetEuiccChallengeResponse: the only component is untagged, so it becomes [0] = '80'.
    assert m.GetEuiccChallengeResponse({"euiccChallenge": bytes(16)}).dump() == bytes.fromhex("bf2e128010" + "00" * 16)
    # EnableProfileRequest: CHOICE component gets explicit [0] 'A0', BOOLEAN gets [1] '81'.
    enable = m.EnableProfileRequest({"profileIdentifier": m.ProfileIdentifier(name="iccid", value=ICCID),
                                     "refreshFlag": True})
    assert enable.dump() == bytes.fromhex("bf3111a00c5a0a" + ICCID.hex() + "8101ff")
    # RetrieveNotificationsListRequest searchCriteria is an untagged CHOICE: explicit [0].
    retrieve = m.RetrieveNotificationsListRequest(
        {"searchCriteria": m.NotificationSearchCriteria(name="seqNumber", value=3)})
    assert retrieve.dump() == bytes.fromhex("bf2b05a003800103")
    # ProfileInfo is [PRIVATE 3] 'E3'; profileState [112] is '9F70'.
    assert m.ProfileInfo({"profileState": "enabled"}).dump() == bytes.fromhex("e3049f700101")
    # EUICCInfo2 has tagged components, so ppVersion and sasAcreditationNumber keep universal tags.
    info2 = make_euicc_info2()
    inner = tlv.split(tlv.parse_one(info2.dump()).value)
    assert [t.tag for t in inner] == [0x81, 0x82, 0x83, 0x84, 0x85, 0x88, 0xA9, 0xAA, 0x04, 0x0C]


def test_bsp_vector_plaintexts_decode():
    """The BPP command plaintexts in the public BSP vectors decode as their ES8+ types."""
    vectors = json.loads((testdata.testdata_dir() / "vectors" / "bsp-scp03t.json").read_text())
    ops = vectors["protection"][0]["operations"]
    configure = m.decode(m.ConfigureISDPRequest, bytes.fromhex(ops[0]["plaintext_value"]))
    assert configure.native == {"dpProprietaryData": None}
    metadata = m.decode(m.StoreMetadataRequest, bytes.fromhex(ops[1]["plaintext_value"]))
    assert metadata["iccid"].native == ICCID
    assert metadata["serviceProviderName"].native == "GSMA_TEST"
    assert metadata["profileName"].native == "GSMA_TEST_PROFILE"
    assert metadata["profileClass"].native == "test"
    keys = m.decode(m.ReplaceSessionKeysRequest, bytes.fromhex(ops[2]["plaintext_value"]))
    assert keys["ppkEnc"].native == bytes.fromhex(vectors["protection"][1]["s_enc"])
    assert keys["ppkCmac"].native == bytes.fromhex(vectors["protection"][1]["s_mac"])
    assert keys["initialMacChainingValue"].native == bytes.fromhex(vectors["protection"][1]["initial_mac_chaining_value"])


# --- received bytes are kept -------------------------------------------------------------------------


def test_signed_part_keeps_received_non_minimal_encoding():
    """A BER long-form length inside serverSigned1 must survive: signatures cover received bytes."""
    signed = (b"\x80\x10" + TID + b"\x81\x81\x10" + bytes(range(16))  # long-form length 81 10
              + b"\x83\x09a.example" + b"\x84\x10" + bytes(16))
    server_signed1 = b"\x30" + tlv.encode_length(len(signed)) + signed
    value = m.decode(m.ServerSigned1, server_signed1)
    assert value["euiccChallenge"].native == bytes(range(16))
    assert value.dump() == server_signed1
    assert value.dump() != m.ServerSigned1(value.native).dump()  # a re-encoding would differ


def test_extension_fields_are_tolerated_and_kept():
    base = make_euicc_info2().dump()
    body = tlv.parse_one(base).value + bytes.fromhex("9f7f0101") + bytes.fromhex("ad03800101")
    extended = b"\xbf\x22" + tlv.encode_length(len(body)) + body
    value = m.decode(m.EUICCInfo2, extended)
    assert value.dump() == extended
    assert value.native["svn"] == b"\x02\x05\x00"
    assert set(value.native) == {name for name, *_ in m.EUICCInfo2._fields}


# --- malformed input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\xbf\x2e", b"\xbf\x2e\x12\x80\x10", b"\xbf\x2d\x00",
    bytes.fromhex("bf2e0f800d00112233445566778899aabbcc"),  # euiccChallenge not 16 bytes
    bytes.fromhex("bf2e128010" + "00" * 16 + "00"),  # trailing byte
    bytes.fromhex("bf2e1280ff" + "00" * 16),  # length runs past the end
])
def test_malformed_raises_decode_error(data):
    with pytest.raises(DecodeError, match="GetEuiccChallengeResponse"):
        m.decode(m.GetEuiccChallengeResponse, data)


def test_choice_with_unknown_alternative_is_refused():
    with pytest.raises(DecodeError):
        m.decode(m.AuthenticateServerResponse, bytes.fromhex("bf3803820105"))


def test_size_constraints_are_checked():
    too_long_tid = m.CancelSessionRequest({"transactionId": bytes(17), "reason": 0}).dump()
    with pytest.raises(DecodeError, match="TransactionId must be 1..16"):
        m.decode(m.CancelSessionRequest, too_long_tid)
    long_nickname = m.SetNicknameRequest({"iccid": ICCID, "profileNickname": "n" * 65}).dump()
    with pytest.raises(DecodeError, match="64"):
        m.decode(m.SetNicknameRequest, long_nickname)


# --- property tests ----------------------------------------------------------------------------------

octets16 = st.binary(min_size=16, max_size=16)
tids = st.binary(min_size=1, max_size=16)
iccids = st.binary(min_size=10, max_size=10)
texts = st.text(max_size=40)
events = st.sets(st.sampled_from(sorted(m.NotificationEvent._map.values())), min_size=1, max_size=1)

notification_metadata = st.builds(
    lambda seq, op, address, iccid: m.NotificationMetadata(
        {"seqNumber": seq, "profileManagementOperation": op, "notificationAddress": address, "iccid": iccid}),
    st.integers(0, 2**31), events, texts, st.one_of(st.none(), iccids))

store_metadata = st.builds(
    lambda iccid, sp, name, cls, ppr: m.StoreMetadataRequest(
        {"iccid": iccid, "serviceProviderName": sp, "profileName": name, "profileClass": cls,
         "profilePolicyRules": ppr}),
    iccids, st.text(max_size=32), st.text(max_size=64),
    st.one_of(st.none(), st.sampled_from(["test", "provisioning", "operational"])),
    st.one_of(st.none(), st.sets(st.sampled_from(["ppr1", "ppr2"]))))

server_signed1 = st.builds(
    lambda tid, ch, addr, sch: m.ServerSigned1(
        {"transactionId": tid, "euiccChallenge": ch, "serverAddress": addr, "serverChallenge": sch}),
    tids, octets16, texts, octets16)

prepare_download_response = st.one_of(
    st.builds(lambda tid, otpk, cc, sig: m.PrepareDownloadResponse(name="downloadResponseOk", value={
        "euiccSigned2": {"transactionId": tid, "euiccOtpk": otpk, "hashCc": cc}, "euiccSignature2": sig}),
        tids, st.binary(min_size=65, max_size=65), st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
        st.binary(min_size=64, max_size=64)),
    st.builds(lambda tid, code: m.PrepareDownloadResponse(name="downloadResponseError", value={
        "transactionId": tid, "downloadErrorCode": code}), tids, st.sampled_from([1, 2, 3, 4, 5, 127])),
)

profile_infos = st.lists(st.builds(
    lambda iccid, state, nick, cls: m.ProfileInfo(
        {"iccid": iccid, "profileState": state, "profileNickname": nick, "profileClass": cls}),
    iccids, st.sampled_from(["enabled", "disabled"]), st.one_of(st.none(), st.text(max_size=64)),
    st.sampled_from(["test", "operational"])), max_size=4).map(
    lambda items: m.ProfileInfoListResponse(name="profileInfoListOk", value=items))

any_message = st.one_of(notification_metadata, store_metadata, server_signed1, prepare_download_response,
                        profile_infos)


@given(any_message)
@settings(max_examples=300)
def test_decode_encode_round_trip(value):
    data = value.dump()
    decoded = m.decode(type(value), data)
    assert decoded.dump() == data
    assert type(value)(decoded.native).dump() == data if not isinstance(value, m.core.Choice) else True
    assert decoded.native == m.decode(type(value), data).native


SPECS = [m.NotificationMetadata, m.StoreMetadataRequest, m.ServerSigned1, m.PrepareDownloadResponse,
         m.ProfileInfoListResponse, m.AuthenticateServerRequest, m.AuthenticateServerResponse,
         m.BoundProfilePackage, m.PendingNotification, m.EUICCInfo2, m.InitialiseSecureChannelRequest]


@given(st.sampled_from(SPECS), st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_only_raise_decode_error(spec, data):
    with contextlib.suppress(DecodeError):
        m.decode(spec, data)


@given(any_message, st.data())
@settings(max_examples=300)
def test_truncated_messages_only_raise_decode_error(value, data):
    encoded = value.dump()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        m.decode(type(value), encoded[:cut])


@given(any_message, st.data())
@settings(max_examples=300)
def test_corrupted_messages_never_raise_other_errors(value, data):
    encoded = bytearray(value.dump())
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(DecodeError):
        m.decode(type(value), bytes(encoded))


def make_euicc_info2() -> m.EUICCInfo2:
    return m.EUICCInfo2({
        "profileVersion": b"\x02\x03\x00", "svn": b"\x02\x05\x00", "euiccFirmwareVer": b"\x01\x00\x00",
        "extCardResource": bytes.fromhex("810100820400010000830200ff"),
        "uiccCapability": {"usimSupport", "isimSupport", "akaMilenage"},
        "rspCapability": {"additionalProfile", "testProfileSupport"},
        "euiccCiPKIdListForVerification": [bytes(20)], "euiccCiPKIdListForSigning": [bytes(20)],
        "ppVersion": b"\x01\x00\x00", "sasAcreditationNumber": "KINSIM-TEST",
    })
