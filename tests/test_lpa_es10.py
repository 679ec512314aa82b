"""lpa.es10: ES10 over APDUs (SGP.22 5.7.2 transport, 5.7 functions) against a small fake card."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpa.es10 import (
    ISD_R_AID,
    Es10Client,
    ProfileRef,
    build_apdu,
    interindustry_cla,
    proprietary_cla,
)
from lpa.transport import SimCardTransport, TransportError
from rsp import bpp as rsp_bpp
from rsp import messages as m
from rsp.errors import ApduError, DecodeError, Es10Error
from rsp.ids import eid_to_bytes
from tests.lpa_fixtures import (
    EID,
    ICCID,
    ICCID_BCD,
    TID,
    FakeCard,
    ScriptedIsdr,
    bound_package,
    euicc_info2,
    installation_result,
    notification_list_response,
    notification_metadata,
    profile_info,
)

CHALLENGE_RESPONSE = m.GetEuiccChallengeResponse({"euiccChallenge": bytes(range(16))}).dump()


def echo(request: bytes) -> bytes:
    """An ISD-R that answers with the request itself: shows reassembly and response chaining at once."""
    return request


def client_for(respond, **card_options) -> tuple[Es10Client, FakeCard]:
    card = FakeCard(respond, **card_options)
    return Es10Client(SimCardTransport(card)).open(), card


def store_data_apdus(card: FakeCard) -> list[bytes]:
    return [a for a in card.apdus if a[1] == 0xE2]


# --- class bytes and APDU coding -----------------------------------------------------------------


def test_class_bytes_follow_iso7816_channel_coding():
    assert [interindustry_cla(n) for n in (0, 1, 3, 4, 19)] == [0x00, 0x01, 0x03, 0x40, 0x4F]
    assert [proprietary_cla(n) for n in (0, 2, 4, 19)] == [0x80, 0x82, 0xC0, 0xCF]
    with pytest.raises(ValueError):
        interindustry_cla(20)


def test_build_apdu_cases():
    assert build_apdu(0x00, 0x70, 0x00, 0x00, le=1) == bytes.fromhex("0070000001")
    assert build_apdu(0x81, 0xE2, 0x91, 0x00, b"\xbf\x2e\x00", le=256) == bytes.fromhex("81E2910003BF2E0000")


# --- channel, select, STORE DATA -----------------------------------------------------------------


def test_open_uses_a_logical_channel_and_selects_the_isdr_there():
    es10, card = client_for(echo)
    assert es10.channel == 1
    select = next(a for a in card.apdus if a[1] == 0xA4)
    assert select[:4] == bytes([0x01, 0xA4, 0x04, 0x00]) and select[5:5 + len(ISD_R_AID)] == ISD_R_AID
    es10.store_data(b"\xbf\x2e\x00")
    assert store_data_apdus(card)[0][:4] == bytes([0x81, 0xE2, 0x91, 0x00])


def test_close_releases_the_logical_channel():
    es10, card = client_for(echo)
    es10.close()
    assert card.apdus[-1] == bytes.fromhex("00708001")
    assert card.open_channels == {0}
    with pytest.raises(Exception, match="not open"):
        es10.store_data(b"\xbf\x2e\x00")


def test_card_without_logical_channels_is_used_on_the_basic_channel():
    es10, card = client_for(echo, channels=False)
    assert es10.channel == 0
    es10.store_data(b"\xbf\x2e\x00")
    assert store_data_apdus(card)[0][0] == 0x80
    es10.close()
    assert not [a for a in card.apdus if a[1] == 0x70 and a[2] == 0x80]  # the basic channel stays


def test_configurable_isdr_aid():
    other = bytes.fromhex("A0000005591010FFFFFFFF8900000200")
    card = FakeCard(echo, aid=other)
    with pytest.raises(ApduError, match="no ISD-R") as info:
        Es10Client(SimCardTransport(card)).open()
    assert info.value.sw == 0x6A82
    assert card.open_channels == {0}  # the channel opened for the failed select was closed again
    es10 = Es10Client(SimCardTransport(card), aid=other).open()
    assert es10.store_data(b"\xbf\x2e\x00") == b"\xbf\x2e\x00"


def test_long_request_is_split_into_numbered_blocks():
    request = bytes([0xBF, 0x38, 0x82, 0x02, 0x58]) + bytes(i % 251 for i in range(600))
    es10, card = client_for(echo)
    assert es10.store_data(request) == request
    blocks = store_data_apdus(card)
    assert [(b[2], b[3]) for b in blocks] == [(0x11, 0), (0x11, 1), (0x91, 2)]
    assert [b[4] for b in blocks] == [255, 255, len(request) - 510]
    assert blocks[-1][-1] == 0x00 and len(blocks[0]) == 5 + 255  # Le only on the last block


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 2000), block=st.integers(8, 255), chunk=st.integers(1, 256),
       unknown=st.booleans())
def test_any_request_round_trips_through_blocks_and_response_chaining(length, block, chunk, unknown):
    request = bytes((i * 7 + 3) % 256 for i in range(length))
    card = FakeCard(echo, chunk=chunk, unknown_size=unknown)
    es10 = Es10Client(SimCardTransport(card), block_size=block).open()
    assert es10.store_data(request) == request
    blocks = store_data_apdus(card)
    assert len(blocks) == -(-length // block)
    assert all(b[4] <= block for b in blocks)
    assert [b[3] for b in blocks] == list(range(len(blocks)))
    assert [b[2] for b in blocks] == [0x11] * (len(blocks) - 1) + [0x91]


def test_get_response_uses_the_channels_class_and_follows_61xx():
    es10, card = client_for(lambda request: bytes(700), chunk=100)
    card.apdus.clear()
    assert es10.store_data(b"\xbf\x2e\x00") == bytes(700)
    get_responses = [a for a in card.apdus if a[1] == 0xC0]
    assert len(get_responses) == 7
    assert {a[0] for a in get_responses} == {0x01}


def test_6cxx_reissues_with_the_exact_length():
    es10, card = client_for(lambda request: bytes(range(10)), unknown_size=True)
    card.apdus.clear()
    assert es10.store_data(b"\xbf\x2e\x00") == bytes(range(10))
    get_responses = [a for a in card.apdus if a[1] == 0xC0]
    assert [a[4] for a in get_responses] == [0x00, 0x0A]


def test_error_status_word_raises_apdu_error_with_the_function_name():
    class Refusing(FakeCard):
        def _store_data(self, channel, cla, p1, p2, data):
            return b"\x6a\x80"

    card = Refusing(echo)
    es10 = Es10Client(SimCardTransport(card)).open()
    with pytest.raises(ApduError, match="EnableProfile") as info:
        es10.enable_profile(ProfileRef(iccid=ICCID))
    assert info.value.sw == 0x6A80 and "incorrect data" in str(info.value)


def test_block_size_is_validated():
    with pytest.raises(ValueError):
        Es10Client(SimCardTransport(FakeCard(echo)), block_size=256)
    es10 = Es10Client(SimCardTransport(FakeCard(echo)), block_size=1).open()
    with pytest.raises(ValueError, match="256 blocks"):  # P2 numbers at most 256 blocks
        es10.store_data(bytes(257))


def test_closed_transport_refuses():
    transport = SimCardTransport(FakeCard(echo))
    transport.close()
    with pytest.raises(TransportError):
        transport.transmit(b"\x00\x70\x00\x00\x01")


# --- trace and counters ----------------------------------------------------------------------------


def test_trace_and_counters_see_every_exchange():
    seen = []
    card = FakeCard(lambda request: bytes(300), chunk=256)
    es10 = Es10Client(SimCardTransport(card), trace=seen.append, timer=iter(range(1000)).__next__)
    es10.open()
    with es10.measure() as outer:
        with es10.measure() as inner:
            es10.store_data(b"\xbf\x2e\x00")
        es10.store_data(b"\xbf\x2e\x00")
    assert [e.command for e in seen] == card.apdus
    assert inner.apdus == 3 and outer.apdus == 6  # STORE DATA + 2 GET RESPONSE each
    assert inner.bytes_received == 300 + 3 * 2
    assert inner.bytes_sent == sum(len(a) for a in card.apdus[-6:-3])
    assert inner.seconds == 3  # one tick of the injected timer per exchange
    assert seen[-1].sw == 0x9000 and len(seen[-1].data) == 44


# --- typed ES10 functions --------------------------------------------------------------------------


def scripted(**answers) -> tuple[Es10Client, ScriptedIsdr]:
    isdr = ScriptedIsdr({int(tag[1:], 16): value for tag, value in answers.items()})
    return Es10Client(SimCardTransport(FakeCard(isdr))).open(), isdr


def test_get_eid_and_challenge_and_info():
    es10, isdr = scripted(
        xBF3E=m.GetEuiccDataResponse({"eidValue": eid_to_bytes(EID)}).dump(),
        xBF2E=CHALLENGE_RESPONSE,
        xBF22=euicc_info2().dump(),
    )
    assert es10.get_eid() == EID
    assert es10.get_euicc_challenge() == bytes(range(16))
    assert es10.get_euicc_info2()["svn"].native == b"\x02\x05\x00"
    assert isdr.requests == [bytes.fromhex("BF3E035C015A"), bytes.fromhex("BF2E00"), bytes.fromhex("BF2200")]


def test_profile_operations_raise_the_functions_enum():
    es10, isdr = scripted(
        xBF31=m.EnableProfileResponse({"enableResult": 2}).dump(),
        xBF32=m.DisableProfileResponse({"disableResult": 0}).dump(),
        xBF33=m.DeleteProfileResponse({"deleteResult": 3}).dump(),
        xBF29=m.SetNicknameResponse({"setNicknameResult": 1}).dump(),
    )
    with pytest.raises(Es10Error) as info:
        es10.enable_profile(ProfileRef(iccid=ICCID), refresh=True)
    assert (info.value.function, info.value.code, info.value.name) == ("EnableProfile", 2, "profileNotInDisabledState")
    request = m.decode(m.EnableProfileRequest, isdr.requests[-1])
    assert request["profileIdentifier"].chosen.native == ICCID_BCD and request["refreshFlag"].native is True
    es10.disable_profile(ProfileRef(aid=bytes.fromhex("A0000005591010FFFFFFFF8900001000")))
    request = m.decode(m.DisableProfileRequest, isdr.requests[-1])
    assert request["profileIdentifier"].name == "isdpAid"
    with pytest.raises(Es10Error, match="disallowedByPolicy"):
        es10.delete_profile(ProfileRef(iccid=ICCID))
    assert m.decode(m.DeleteProfileRequest, isdr.requests[-1]).name == "iccid"
    with pytest.raises(Es10Error, match="iccidNotFound"):
        es10.set_nickname(ICCID, "family phone")
    assert m.decode(m.SetNicknameRequest, isdr.requests[-1])["profileNickname"].native == "family phone"


def test_profile_ref_parses_iccid_or_aid():
    assert ProfileRef.parse(ICCID).iccid == ICCID
    assert ProfileRef.parse("a0000005591010ffffffff8900001000").aid == bytes.fromhex("A0000005591010FFFFFFFF8900001000")
    with pytest.raises(DecodeError):
        ProfileRef.parse("89000123456789012342")  # wrong Luhn digit
    with pytest.raises(DecodeError):
        ProfileRef.parse("not-a-profile")


def test_profiles_info_and_addresses():
    profiles = m.ProfileInfoListResponse(name="profileInfoListOk", value=[profile_info(), profile_info(
        bytes.fromhex("98001032547698103232"), "disabled", "spare")])
    es10, isdr = scripted(
        xBF2D=profiles.dump(),
        xBF3C=m.EuiccConfiguredAddressesResponse({"defaultDpAddress": "smdp.kinsim.test",
                                                  "rootDsAddress": "lpa.ds.gsma.com"}).dump(),
        xBF3F=m.SetDefaultDpAddressResponse({"setDefaultDpAddressResult": 0}).dump(),
    )
    infos = es10.get_profiles_info()
    assert [i["profileState"].native for i in infos] == ["enabled", "disabled"]
    assert es10.get_euicc_configured_addresses() == ("smdp.kinsim.test", "lpa.ds.gsma.com")
    es10.set_default_dp_address("new.kinsim.test")
    assert m.decode(m.SetDefaultDpAddressRequest, isdr.requests[-1])["defaultDpAddress"].native == "new.kinsim.test"


def test_profiles_info_error_enum():
    es10, _ = scripted(xBF2D=m.ProfileInfoListResponse(name="profileInfoListError", value=1).dump())
    with pytest.raises(Es10Error, match="incorrectInputValues"):
        es10.get_profiles_info()


def test_notifications_list_retrieve_remove():
    listed = m.ListNotificationResponse(name="notificationMetadataList",
                                        value=[notification_metadata(3), notification_metadata(4)])
    es10, isdr = scripted(
        xBF28=listed.dump(),
        xBF2B=notification_list_response(3, 4),
        xBF30=m.NotificationSentResponse({"deleteNotificationStatus": 1}).dump(),
    )
    assert [n["seqNumber"].native for n in es10.list_notifications()] == [3, 4]
    assert len(es10.retrieve_notifications(seq_number=4)) == 2
    assert m.decode(m.RetrieveNotificationsListRequest, isdr.requests[-1])["searchCriteria"].chosen.native == 4
    with pytest.raises(Es10Error, match="nothingToDelete"):
        es10.remove_notification(9)


def test_cancel_session_returns_either_alternative():
    error = m.CancelSessionResponse(name="cancelSessionResponseError", value=5)
    es10, isdr = scripted(xBF41=error.dump())
    response = es10.cancel_session(TID, 0)
    assert response.name == "cancelSessionResponseError" and response.dump() == error.dump()
    request = m.decode(m.CancelSessionRequest, isdr.requests[-1])
    assert request["transactionId"].native == TID and request["reason"].native == "endUserRejection"


def test_malformed_response_is_a_decode_error():
    es10, _ = scripted(xBF2E=b"\xbf\x2e\x03\x80\x01\x00")  # challenge of 1 byte
    with pytest.raises(DecodeError):
        es10.get_euicc_challenge()
    es10, _ = scripted(xBF2E=b"")
    with pytest.raises(DecodeError, match="no data"):
        es10.get_euicc_challenge()


# --- LoadBoundProfilePackage -----------------------------------------------------------------------


def test_load_bpp_sends_each_segment_as_its_own_store_data_sequence():
    package = bound_package()
    segments = rsp_bpp.segments(package)
    pir = installation_result(7).dump()
    isdr = ScriptedIsdr()
    isdr.answers = {tag: (lambda request: pir if request == segments[-1] else b"") for tag in (0xBF36, 0xA0, 0xA1, 0xA3,
                                                                                              0x88, 0x86, 0x87)}
    es10 = Es10Client(SimCardTransport(FakeCard(isdr))).open()
    progress = []
    result = es10.load_bound_profile_package(package, lambda done, total: progress.append((done, total)))
    assert isdr.requests == segments
    assert result.dump() == pir
    assert progress[-1] == (len(b"".join(segments)),) * 2 and len(progress) == len(segments)


def test_load_bpp_stops_at_an_early_installation_result():
    package = bound_package()
    pir = installation_result(7, error=(0, 2)).dump()
    es10 = Es10Client(SimCardTransport(FakeCard(lambda request: pir))).open()
    result = es10.load_bound_profile_package(package)
    assert result["profileInstallationResultData"]["finalResult"].name == "errorResult"
    assert len(es10.transport._card.requests) == 1


def test_load_bpp_without_result_is_an_error():
    es10 = Es10Client(SimCardTransport(FakeCard(lambda request: b""))).open()
    with pytest.raises(DecodeError, match="no ProfileInstallationResult"):
        es10.load_bound_profile_package(bound_package())


# --- interoperability with the software eUICC's APDU layer ------------------------------------------


def test_against_the_software_euicc_apdu_layer():
    from euicc_sim.apdu import Card

    class Isdr:
        def handle(self, request: bytes) -> bytes:
            return CHALLENGE_RESPONSE if request == bytes.fromhex("BF2E00") else request

    card = Card(Isdr())
    card.power_on()
    with Es10Client(SimCardTransport(card), block_size=100) as es10:
        assert es10.get_euicc_challenge() == bytes(range(16))
        big = bytes([0xBF, 0x2D, 0x82, 0x03, 0x00]) + bytes(768)
        assert es10.store_data(big) == big
        channel = es10.channel
        assert channel in card.open_channels
    assert card.open_channels == [0]
