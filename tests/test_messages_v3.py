"""The SGP.22 v3 types kinsim adds (rsp.messages_v3, rsp.rpm): known-answer encodings written by hand
from the v3.1 RSPDefinitions tags, v2 decoding unchanged, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsp import messages as m
from rsp import messages_v3 as v3
from rsp import rpm
from rsp.errors import DecodeError
from rsp.ids import iccid_to_bcd, luhn_check_digit

ICCID = "89000123456789012341"
BCD = bytes.fromhex("98001032547698103214")
TID = bytes(range(1, 17))


def test_revocation_package_encodes_as_the_v3_module_tags_it():
    # RpmPackage: SEQUENCE OF RpmCommand; RpmCommand: continueOnFailure [0] NULL, then the CHOICE
    # rpmCommandDetails with disable [2] / delete [3] SEQUENCE { iccid [APPLICATION 26] }.
    iccid = "5A0A" + BCD.hex()
    disable = "8000" + "A20C" + iccid
    delete = "A30C" + iccid
    expected = "3022" + "3010" + disable + "300E" + delete
    assert rpm.revocation_package(ICCID).dump().hex().upper() == expected.upper()


def test_load_rpm_package_request_and_result_tags():
    signed3 = v3.SmdpSigned3({"transactionId": TID, "rpmPackage": rpm.revocation_package(ICCID)})
    request = v3.LoadRpmPackageRequest({"smdpSigned3": signed3, "smdpSignature3": b"\x11" * 64}).dump()
    assert request[:2] == b"\xbf\x44"  # [68] 'BF44'
    body = m.decode(v3.LoadRpmPackageRequest, request)
    assert body["smdpSigned3"].dump()[:1] == b"\x30" and body["smdpSigned3"]["rpmPackage"].dump()[:1] == b"\xa1"
    assert request.endswith(b"\x5f\x37\x40" + b"\x11" * 64)

    not_signed = v3.LoadRpmPackageResult(name="loadRpmPackageResultNotSigned",
                                         value={"transactionId": b"\x07", "loadRpmPackageErrorCodeNotSigned": 4})
    assert not_signed.dump().hex().upper() == "BF4408A106800107020104"


def signed_result(final: dict) -> v3.LoadRpmPackageResult:
    metadata = v3.NotificationMetadata({"seqNumber": 5, "profileManagementOperation": {"loadRpmPackageResult"},
                                        "notificationAddress": "smdp.example"})
    data = v3.LoadRpmPackageResultDataSigned({"transactionId": TID, "notificationMetadata": metadata,
                                              "smdpOid": "2.999.10", "finalResult": final})
    signed = v3.LoadRpmPackageResultSigned({"loadRpmPackageResultDataSigned": data, "euiccSignRPR": b"\x22" * 64})
    return v3.LoadRpmPackageResult(name="loadRpmPackageResultSigned", value=signed)


def test_signed_result_uses_automatic_tags_and_reads_back_its_outcomes():
    results = [{"iccid": BCD, "rpmCommandResultData": v3.RpmCommandResultData(
        name="deleteResult", value={"deleteResult": 0})}]
    encoded = signed_result({"rpmPackageExecutionResult": results}).dump()
    decoded = m.decode(v3.LoadRpmPackageResult, encoded)
    signed = decoded.chosen
    data = signed["loadRpmPackageResultDataSigned"]
    # LoadRpmPackageResultSigned has no tagged components: AUTOMATIC TAGS gives [0] and [1].
    assert encoded[:2] == b"\xbf\x44" and encoded[4:5] == b"\xa0" and data.dump()[:1] == b"\xa0"
    assert signed["euiccSignRPR"].dump()[:2] == b"\x81\x40"
    assert data["notificationMetadata"].dump()[:2] == b"\xbf\x2f"
    assert "30125A0A" + BCD.hex().upper() + "BF3303800100" in encoded.hex().upper()  # RpmCommandResult
    assert rpm.outcomes(data) == [rpm.CommandOutcome(ICCID, "deleteResult", 0)]
    assert rpm.deleted_iccids(data) == [ICCID]
    refused = m.decode(v3.LoadRpmPackageResult, signed_result({"loadRpmPackageErrorCodeSigned": 2}).dump())
    assert rpm.outcomes(refused.chosen["loadRpmPackageResultDataSigned"]) == []


def test_pending_notification_v3_adds_the_rpm_result_and_still_reads_v2():
    signed = signed_result({"rpmPackageExecutionResult": []}).chosen
    pending = v3.PendingNotification(name="loadRpmPackageResultSigned", value=signed).dump()
    assert pending[:1] == b"\xa1"  # loadRpmPackageResultSigned [1]
    decoded = m.decode(v3.PendingNotification, pending)
    assert v3.notification_metadata(decoded)["profileManagementOperation"].native == {"loadRpmPackageResult"}
    with pytest.raises(DecodeError):
        m.decode(m.PendingNotification, pending)  # a v2 peer cannot read it
    v2 = m.NotificationMetadata({"seqNumber": 1, "profileManagementOperation": {"notificationDelete"},
                                 "notificationAddress": "a", "iccid": BCD})
    other = m.PendingNotification(name="otherSignedNotification", value={
        "tbsOtherNotification": v2, "euiccNotificationSignature": b"\x01",
        "euiccCertificate": _certificate(), "eumCertificate": _certificate()}).dump()
    assert m.decode(v3.PendingNotification, other).dump() == other


def test_notification_event_v3_bits():
    assert v3.NotificationEvent({"loadRpmPackageResult"}).dump() == bytes.fromhex("03020001")
    assert v3.NotificationEvent({"notificationRpmDelete"}).dump() == bytes.fromhex("03020102")
    assert v3.NotificationEvent({"notificationDelete"}).dump() == m.NotificationEvent({"notificationDelete"}).dump()


def test_operation_type_travels_inside_v2_ctx_params_unchanged():
    device = {"tac": b"\x35\x00\x00\x00", "deviceCapabilities": {}}
    announced = v3.CtxParams1(name="ctxParamsForCommonAuthentication",
                              value={"matchingId": "EV-1", "deviceInfo": device, "operationType": {"profileDownload",
                                                                                                  "rpm"}}).dump()
    assert bytes.fromhex("820206C0") in announced  # operationType [2] BIT STRING {profileDownload, rpm}
    as_v2 = m.decode(m.CtxParams1, announced)
    assert as_v2.dump() == announced and as_v2.chosen["matchingId"].native == "EV-1"
    assert v3.operation_types(as_v2) == {"profileDownload", "rpm"}
    plain = m.CtxParams1(name="ctxParamsForCommonAuthentication", value={"deviceInfo": device})
    assert v3.operation_types(m.decode(m.CtxParams1, plain.dump())) == {"profileDownload"}  # the DEFAULT


def test_rpm_configuration_in_metadata_is_an_extension_for_v2_readers():
    metadata = v3.StoreMetadataRequest({
        "iccid": BCD, "serviceProviderName": "kinsim", "profileName": "family",
        "rpmConfiguration": {"managingDpList": [{"managingDpOid": "2.999.10", "rpmType": {"delete"}}],
                             "profileOwnerOid": "2.999.10"}}).dump()
    assert bytes.fromhex("BA") in metadata[-30:]  # rpmConfiguration [26] 'BA'
    as_v2 = m.decode(m.StoreMetadataRequest, metadata)
    assert as_v2.dump() == metadata and as_v2["profileName"].native == "family"
    entry = m.decode(v3.StoreMetadataRequest, metadata)["rpmConfiguration"]["managingDpList"][0]
    assert (entry["managingDpOid"].native, entry["rpmType"].native) == ("2.999.10", {"delete"})


def test_authenticate_client_rpm_alternative():
    signed3 = v3.SmdpSigned3({"transactionId": TID, "rpmPackage": rpm.revocation_package(ICCID)})
    answer = v3.AuthenticateClientResponseEs9(name="authenticateClientOkRpm", value={
        "transactionId": TID, "smdpSigned3": signed3, "smdpSignature3": b"\x33" * 64}).dump()
    assert answer[:3] == b"\xbf\x3b\x81" and answer[4:5] == b"\xa2"  # authenticateClientOkRpm [2]
    assert m.decode(v3.AuthenticateClientResponseEs9, answer).chosen["smdpSigned3"].dump() == signed3.dump()


def test_signed3_data_appends_the_euicc_signature_object():
    assert rpm.signed3_data(b"\x30\x00", b"\xaa" * 64) == b"\x30\x00\x5f\x37\x40" + b"\xaa" * 64


def _iccids():
    return st.integers(min_value=0, max_value=10 ** 10 - 1).map(
        lambda n: (body := f"898823{n:012d}") + luhn_check_digit(body))


@given(st.lists(st.tuples(st.sampled_from(rpm.PROFILE_COMMANDS), _iccids(), st.booleans()), min_size=1, max_size=5))
def test_packages_round_trip(commands):
    wanted = [rpm.Command(action, iccid, flag) for action, iccid, flag in commands]
    encoded = rpm.build_package(wanted).dump()
    assert rpm.package_commands(m.decode(v3.RpmPackage, encoded)) == wanted
    assert all(iccid_to_bcd(c.iccid) in encoded for c in wanted)


def test_unsupported_commands_are_refused_by_name():
    package = v3.RpmPackage([{"rpmCommandDetails": v3.RpmCommandDetails(
        name="contactPcmp", value={"iccid": BCD, "dpiRpm": "x"})}])
    with pytest.raises(DecodeError, match="contactPcmp"):
        rpm.package_commands(m.decode(v3.RpmPackage, package.dump()))


def _certificate():
    from asn1crypto import x509

    from certs.pki import generate_pki

    return x509.Certificate.load(generate_pki("nist").eum.cert_der)
