"""ES10b.LoadBoundProfilePackage and the ES8+ commands it carries, through APDUs (SGP.22 2.5.5,
5.5, 5.7.6): a signed ProfileInstallationResult on success, the failing bppCommandId and errorReason
otherwise, and nothing of a refused profile left on the card."""

from __future__ import annotations

import pytest

from rsp import bpp, crypto
from rsp import messages as m
from rsp.bsp import SessionKeys
from rsp.errors import ApduError
from rsp.tlv import encode_length, encode_tag, read_header
from tests.euicc_fixtures import (
    OWNER,
    SMDP_ADDRESS,
    Reader,
    SmdpSide,
    card_at,
    iccid,
    install,
    load,
    make_euicc_dir,
    metadata,
    open_test_euicc,
    pki_for,
    profile_package,
)

PPK = SessionKeys(s_enc=bytes(range(16)), s_mac=bytes(range(1, 17)), initial_mcv=bytes(range(2, 18)))
FIRST_AID = bytes.fromhex("A0000005591010FFFFFFFF8900001000")


@pytest.fixture
def bench(tmp_path):
    with card_at(tmp_path / "euicc") as bench:
        yield bench


def result_data(result: m.ProfileInstallationResult):
    return result["profileInstallationResultData"]


def error_of(result: m.ProfileInstallationResult) -> tuple[str, str]:
    final = result_data(result)["finalResult"]
    assert final.name == "errorResult", final.native
    return final.chosen["bppCommandId"].native, final.chosen["errorReason"].native


def send(bench, segments: list[bytes]) -> m.ProfileInstallationResult:
    """Send segments until the card answers with data (a result); that result."""
    for segment in segments:
        answer = bench.reader.es10(segment)
        if answer:
            return m.decode(m.ProfileInstallationResult, answer)
    raise AssertionError("the card never answered with a ProfileInstallationResult")


def assert_no_profile_and_one_failure_notification(bench):
    assert bench.reader.profiles() == []
    notes = bench.reader.notifications()
    assert [n["profileManagementOperation"] for n in notes] == [{"notificationInstall"}]


def euicc_public_key(bench):
    return bench.euicc.identity.euicc.cert.public_key()


# --- success ----------------------------------------------------------------------------------


def test_install_returns_a_signed_result_and_keeps_the_profile(bench):
    free_before = bench.euicc.isdr.free_memory()
    result = bench.install(iccid(1))
    data = result_data(result)
    assert crypto.verify(euicc_public_key(bench), data.dump(), result["euiccSignPIR"].native)
    assert data["transactionId"].native == bench.smdp.transaction_id
    assert data["smdpOid"].native == "2.999.10"
    assert data["notificationMetadata"].native == {
        "seqNumber": 1,
        "profileManagementOperation": {"notificationInstall"},
        "notificationAddress": SMDP_ADDRESS,
        "iccid": m.decode(m.StoreMetadataRequest, metadata(iccid(1)))["iccid"].native,
    }
    success = data["finalResult"].chosen
    assert success["aid"].native == FIRST_AID
    assert success["simaResponse"].native == bytes.fromhex("3007A0053003800100")  # EUICCResponse: ok
    [profile] = bench.reader.profiles()
    assert profile["isdpAid"] == FIRST_AID and profile["profileState"] == "disabled"
    assert profile["profileName"] == "Family plan" and profile["dpProprietaryData"] == {"dpOid": "2.999.10"}
    assert bench.euicc.isdr.free_memory() == free_before - len(profile_package(iccid(1)))
    pending = bench.reader.call(m.RetrieveNotificationsListRequest({}), m.RetrieveNotificationsListResponse)
    assert pending.chosen[0].chosen.dump() == result.dump()  # the PIR is the pending notification


def test_installed_package_is_kept_for_the_profile_applications(bench):
    bench.install(iccid(1))
    assert bench.euicc.enabled_package() is None
    assert bench.reader.enable(iccid(1)) == 0
    assert bench.euicc.enabled_package() == profile_package(iccid(1))


def test_install_of_a_pre_protected_package_with_replace_session_keys(bench):
    download = bench.prepare(iccid(1), ppk=PPK)
    assert any(segment[0] == bpp.TAG_SECOND_87 for segment in download.segments)
    result = load(bench.reader, download.segments)
    assert result_data(result)["finalResult"].name == "successResult"


def test_each_install_gets_the_next_isdp_aid(bench):
    bench.install(iccid(1))
    second = bench.install(iccid(2))
    assert result_data(second)["finalResult"].chosen["aid"].native == bytes.fromhex(
        "A0000005591010FFFFFFFF8900001100"
    )
    assert result_data(second)["notificationMetadata"]["seqNumber"].native == 2


def test_install_on_a_brainpool_hierarchy(tmp_path):
    make_euicc_dir(tmp_path / "e", curve="brp")
    with open_test_euicc(tmp_path / "e") as euicc:
        result = install(Reader(euicc.card), SmdpSide(pki=pki_for("brp")), euicc.eid, iccid(1))
    assert result_data(result)["finalResult"].name == "successResult"


# --- a flipped MAC bit in any protected segment (scp03tSecurityError) -------------------------


def _layout() -> tuple[list[int], list[int]]:
    """Indexes of the segments carrying a protected TLV, without and with ReplaceSessionKeys."""
    otpk = crypto.public_key_bytes(crypto.generate_private_key("nist").public_key())
    indexes = []
    for ppk in (None, PPK):
        package = bpp.build_bound_profile_package(
            transaction_id=b"\x01",
            eid=bytes(16),
            euicc_otpk=otpk,
            smdp_otsk=crypto.generate_private_key("nist"),
            dp_pb_key=crypto.generate_private_key("nist"),
            metadata=metadata(iccid(1)),
            upp=profile_package(iccid(1)),
            dp_oid="2.999.10",
            ppk=ppk,
        )
        indexes.append([i for i, s in enumerate(bpp.segments(package)) if i and _protected(s)])
    return indexes[0], indexes[1]


def _protected(segment: bytes) -> bool:
    """A protected TLV itself, or a sequence header followed by one (A0 + '87', A2 + '87')."""
    tag, _, offset = read_header(segment)
    return tag in (0x86, 0x87, 0x88) or offset < len(segment)


PLAIN_SEGMENTS, PPK_SEGMENTS = _layout()
# With ReplaceSessionKeys: its own '87', the first '86' under the new keys, and the last '86'.
PPK_CASES = [i for i in PPK_SEGMENTS if i > PPK_SEGMENTS[1]][:2] + [PPK_SEGMENTS[-1]]
COMMAND_OF_TAG = {
    0xA0: "configureISDP",
    0xA1: "storeMetadata",
    0xA2: "replaceSessionKeys",
    0xA3: "loadProfileElements",
}


def _expected_command(segments: list[bytes], index: int) -> str:
    container = next(s[0] for s in reversed(segments[: index + 1]) if s[0] in COMMAND_OF_TAG)
    return COMMAND_OF_TAG[container]


def _flip_mac(segment: bytes) -> bytes:
    return segment[:-1] + bytes([segment[-1] ^ 0x01])  # the last byte belongs to the 8-byte MAC


@pytest.mark.parametrize("index", PLAIN_SEGMENTS)
def test_flipped_mac_bit_in_any_segment_stops_the_install(tmp_path, index):
    with card_at(tmp_path / "euicc") as bench:
        segments = bench.prepare(iccid(1)).segments
        for segment in segments[:index]:
            assert bench.reader.es10(segment) == b""
        result = m.decode(m.ProfileInstallationResult, bench.reader.es10(_flip_mac(segments[index])))
        assert error_of(result) == (_expected_command(segments, index), "scp03tSecurityError")
        assert crypto.verify(
            euicc_public_key(bench), result_data(result).dump(), result["euiccSignPIR"].native
        )
        if index + 1 < len(segments):  # later segments of that package are refused
            with pytest.raises(ApduError) as refused:
                bench.reader.es10(segments[index + 1])
            assert refused.value.sw == 0x6985
        assert_no_profile_and_one_failure_notification(bench)


@pytest.mark.parametrize("index", PPK_CASES)
def test_flipped_mac_bit_after_replace_session_keys(tmp_path, index):
    with card_at(tmp_path / "euicc") as bench:
        segments = bench.prepare(iccid(1), ppk=PPK).segments
        result = send(bench, [*segments[:index], _flip_mac(segments[index])])
        assert error_of(result) == (_expected_command(segments, index), "scp03tSecurityError")
        assert_no_profile_and_one_failure_notification(bench)


# --- InitialiseSecureChannel (5.5.1) ----------------------------------------------------------


def custom_isc(bench, download, *, key_type=b"\x88", smdp_otpk=None, remote_op=1) -> bytes:
    """A first segment with an InitialiseSecureChannel the SM-DP+ signed with other values."""
    otpk = download.prepare.chosen["euiccSigned2"]["euiccOtpk"].native
    isc = m.InitialiseSecureChannelRequest(
        {
            "remoteOpId": remote_op,
            "transactionId": bench.smdp.transaction_id,
            "controlRefTemplate": {"keyType": key_type, "keyLen": b"\x10", "hostId": b"kinsimDP"},
            "smdpOtpk": smdp_otpk
            or crypto.public_key_bytes(crypto.generate_private_key("nist").public_key()),
            "smdpSign": b"",
        }
    )
    isc["smdpSign"] = crypto.sign(bench.smdp.pki.dp_pb.signing_key(), bpp.smdp_sign_input(isc, otpk))
    first = download.segments[0]
    _, length, offset = read_header(first)
    body_length = length - (len(first) - offset) + len(isc.dump())
    return encode_tag(bpp.TAG_BPP) + encode_length(body_length) + isc.dump()


def first_segment_result(bench, first: bytes) -> m.ProfileInstallationResult:
    return m.decode(m.ProfileInstallationResult, bench.reader.es10(first))


def test_smdp_sign_by_another_key(bench):
    download = bench.prepare(iccid(1))
    other = bench.smdp.bind(
        download.prepare,
        bench.eid,
        metadata(iccid(1)),
        profile_package(iccid(1)),
        pb_key=crypto.generate_private_key("nist"),
    )
    assert error_of(first_segment_result(bench, bpp.segments(other)[0])) == (
        "initialiseSecureChannel",
        "invalidSignature",
    )
    assert_no_profile_and_one_failure_notification(bench)


def test_package_for_another_transaction(bench):
    download = bench.prepare(iccid(1))
    other = bench.smdp.bind(
        download.prepare, bench.eid, metadata(iccid(1)), profile_package(iccid(1)), transaction_id=bytes(16)
    )
    result = first_segment_result(bench, bpp.segments(other)[0])
    assert error_of(result) == ("initialiseSecureChannel", "invalidTransactionId")


def test_unsupported_remote_operation(bench):
    download = bench.prepare(iccid(1))
    result = first_segment_result(bench, custom_isc(bench, download, remote_op=2))
    assert error_of(result) == ("initialiseSecureChannel", "unsupportedRemoteOperationType")


def test_unsupported_key_type_in_the_control_reference_template(bench):
    download = bench.prepare(iccid(1))
    result = first_segment_result(bench, custom_isc(bench, download, key_type=b"\x80"))  # DES
    assert error_of(result) == ("initialiseSecureChannel", "unsupportedCrtValues")


def test_smdp_one_time_key_off_the_curve(bench):
    download = bench.prepare(iccid(1))
    result = first_segment_result(bench, custom_isc(bench, download, smdp_otpk=b"\x04" + bytes(64)))
    assert error_of(result) == ("initialiseSecureChannel", "incorrectInputValues")


def test_custom_isc_helper_builds_an_acceptable_segment(bench):
    download = bench.prepare(iccid(1))
    assert bench.reader.es10(custom_isc(bench, download)) == b""  # same values: accepted


# --- StoreMetadata and the card's own checks (5.5.3) ------------------------------------------


def test_iccid_already_on_the_card(bench):
    bench.install(iccid(1))
    result = send(bench, bench.prepare(iccid(1)).segments)
    assert error_of(result) == ("storeMetadata", "installFailedDueToIccidAlreadyExistsOnEuicc")
    assert len(bench.reader.profiles()) == 1


def test_test_profile_refused_without_test_profile_support(tmp_path):
    with card_at(tmp_path / "e", rsp_capabilities=()) as bench:
        result = send(
            bench, bench.prepare(iccid(1), metadata_der=metadata(iccid(1), profile_class="test")).segments
        )
        assert error_of(result) == ("storeMetadata", "unsupportedProfileClass")
        assert_no_profile_and_one_failure_notification(bench)


def test_ppr_the_rat_does_not_allow_for_this_operator(tmp_path):
    rat = ({"pprIds": ["ppr1"], "allowedOperators": [{"mccMnc": "00f1ee"}], "pprFlags": []},)
    with card_at(tmp_path / "e", rat=rat) as bench:
        other_owner = {"mccMnc": bytes.fromhex("02f810")}
        refused = metadata(iccid(1), pprs={"ppr1"}, owner=other_owner)
        assert error_of(send(bench, bench.prepare(iccid(1), metadata_der=refused).segments)) == (
            "storeMetadata",
            "pprNotAllowed",
        )
        not_in_rat = metadata(iccid(1), pprs={"ppr2"}, owner=OWNER)
        assert error_of(send(bench, bench.prepare(iccid(1), metadata_der=not_in_rat).segments)) == (
            "storeMetadata",
            "pprNotAllowed",
        )
        allowed = metadata(iccid(1), pprs={"ppr1"}, owner=OWNER)  # 001 01 matches 001 1E (wildcard)
        bench.install(iccid(1), metadata_der=allowed)
        assert bench.reader.profiles()[0]["profilePolicyRules"] == {"ppr1"}


def test_ppr_without_profile_owner(bench):
    refused = metadata(iccid(1), pprs={"ppr2"})
    assert error_of(send(bench, bench.prepare(iccid(1), metadata_der=refused).segments)) == (
        "storeMetadata",
        "pprNotAllowed",
    )


def test_ppr_the_euicc_forbids(tmp_path):
    with card_at(tmp_path / "e", forbidden_pprs=("ppr2",)) as bench:
        info2 = m.decode(m.EUICCInfo2, bench.reader.es10(bytes.fromhex("BF2200")))
        assert info2["forbiddenProfilePolicyRules"].native == {"ppr2"}
        refused = metadata(iccid(1), pprs={"ppr2"}, owner=OWNER)
        assert error_of(send(bench, bench.prepare(iccid(1), metadata_der=refused).segments)) == (
            "storeMetadata",
            "pprNotAllowed",
        )


def test_malformed_metadata(bench):
    result = send(bench, bench.prepare(iccid(1), metadata_der=b"\x30\x00").segments)
    assert error_of(result) == ("storeMetadata", "incorrectInputValues")


def test_profile_larger_than_the_free_memory(tmp_path):
    with card_at(tmp_path / "e", memory=5000) as bench:
        result = send(bench, bench.prepare(iccid(1)).segments)
        assert error_of(result) == ("loadProfileElements", "installFailedDueToInsufficientMemoryForProfile")
        sima = result_data(result)["finalResult"].chosen["simaResponse"].native
        assert sima == bytes.fromhex("3009A0053003800104") + b"\x81\x00"  # not-enough-memory, aborted
        assert_no_profile_and_one_failure_notification(bench)


def test_profile_header_iccid_differs_from_metadata(bench):
    result = send(bench, bench.prepare(iccid(2), upp=profile_package(iccid(1))).segments)
    assert error_of(result) == ("loadProfileElements", "installFailedDueToIccidMismatch")


def test_profile_package_that_is_not_saip(bench):
    result = send(bench, bench.prepare(iccid(1), upp=b"\x30\x03\x02\x01\x00" * 40).segments)
    assert error_of(result) == ("loadProfileElements", "installFailedDueToPEProcessingError")


def test_profile_needing_a_capability_the_euicc_does_not_declare(tmp_path):
    with card_at(tmp_path / "e", uicc_capabilities=("usimSupport", "isimSupport")) as bench:  # no CSIM
        result = send(bench, bench.prepare(iccid(1)).segments)
        assert error_of(result) == ("loadProfileElements", "installFailedDueToPEProcessingError")
        assert result_data(result)["finalResult"].chosen["simaResponse"].native[-4:] == bytes.fromhex(
            "010A8100"
        )


def test_profile_version_newer_than_declared(tmp_path):
    with card_at(tmp_path / "e", profile_version="2.2.0") as bench:
        result = send(bench, bench.prepare(iccid(1)).segments)
        assert error_of(result) == ("loadProfileElements", "installFailedDueToPEProcessingError")


# --- structure and sequencing -----------------------------------------------------------------


def test_segments_out_of_order(bench):
    segments = bench.prepare(iccid(1)).segments
    result = send(bench, [segments[0], segments[2]])  # the A1 header where A0 belongs
    assert error_of(result)[1] == "scp03tStructureError"
    assert_no_profile_and_one_failure_notification(bench)


def test_segment_running_past_the_package(bench):
    segments = bench.prepare(iccid(1)).segments
    result = send(bench, [*segments[:-1], segments[-1] + b"\x00"])
    assert error_of(result) == ("loadProfileElements", "scp03tStructureError")


def test_segment_without_prepare_download(bench):
    segments = bench.prepare(iccid(1)).segments
    bench.reader.challenge()  # a new session: the prepared one is gone
    data, sw = bench.reader.store_data(segments[0])
    assert sw == 0x6985 and data == b""
    assert bench.reader.notifications() == []


def test_continuation_segment_without_a_package(bench):
    data, sw = bench.reader.store_data(bytes.fromhex("A30481020000"))
    assert sw == 0x6985


def test_package_started_twice(bench):
    segments = bench.prepare(iccid(1)).segments
    assert bench.reader.es10(segments[0]) == b""
    data, sw = bench.reader.store_data(segments[0])
    assert sw == 0x6985
    assert (
        load(bench.reader, segments[1:])["profileInstallationResultData"]["finalResult"].name
        == "successResult"
    )


def test_card_reset_during_the_load_reports_an_interruption(bench):
    segments = bench.prepare(iccid(1)).segments
    for segment in segments[:5]:
        bench.reader.es10(segment)
    bench.euicc.card.reset()
    bench.reader.__init__(bench.euicc.card)
    assert bench.reader.profiles() == []
    pending = bench.reader.call(m.RetrieveNotificationsListRequest({}), m.RetrieveNotificationsListResponse)
    [pir] = pending.chosen
    assert error_of(pir.chosen) == (_expected_command(segments, 4), "installFailedDueToInterruption")
    data, sw = bench.reader.store_data(segments[5])
    assert sw == 0x6985


def test_new_session_during_the_load_leaves_no_trace(bench):
    segments = bench.prepare(iccid(1)).segments
    for segment in segments[:4]:
        bench.reader.es10(segment)
    bench.reader.challenge()
    assert bench.reader.profiles() == [] and bench.reader.notifications() == []


def test_cancel_session_during_the_load(bench):
    segments = bench.prepare(iccid(1)).segments
    for segment in segments[:4]:
        bench.reader.es10(segment)
    request = m.CancelSessionRequest(
        {"transactionId": bench.smdp.transaction_id, "reason": "endUserRejection"}
    )
    assert bench.reader.call(request, m.CancelSessionResponse).name == "cancelSessionResponseOk"
    assert bench.reader.store_data(segments[4])[1] == 0x6985
    assert bench.reader.profiles() == [] and bench.reader.notifications() == []
