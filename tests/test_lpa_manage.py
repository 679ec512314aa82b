"""lpa.manage: chip information and profile views decoded for people and scripts (SGP.22 5.7.8, 5.7.15)."""

from __future__ import annotations

from lpa.download import ProfileMetadata
from lpa.es10 import Es10Client
from lpa.manage import chip_info, decode_ext_card_resource, list_profiles, metadata_summary, version_text
from lpa.transport import SimCardTransport
from rsp import messages as m
from rsp.ids import eid_to_bytes
from tests.lpa_fixtures import EID, ICCID, ICCID_BCD, FakeCard, ScriptedIsdr, euicc_info2, pki, profile_info


def test_ext_card_resource_follows_ts_102_226():
    assert decode_ext_card_resource(bytes.fromhex("810101820300F000830200FF")) == {
        "installedApplications": 1, "freeNonVolatileMemory": 0xF000, "freeVolatileMemory": 0xFF}
    assert decode_ext_card_resource(bytes.fromhex("8401AA")) == {"tag84": "AA"}
    assert decode_ext_card_resource(bytes.fromhex("8105")) == {"raw": "8105"}  # truncated: shown raw


def test_version_text():
    assert version_text(b"\x02\x05\x00") == "2.5.0" and version_text(None) is None


def test_chip_info_marks_trusted_ci_keys_and_tolerates_a_card_without_rat():
    ci = pki().ci
    isdr = ScriptedIsdr({
        0xBF3C: m.EuiccConfiguredAddressesResponse({"rootDsAddress": "lpa.ds.gsma.com"}).dump(),
        0xBF43: b"\xbf\x43\x00",  # a GetRAT answer without the table
        0xBF3E: m.GetEuiccDataResponse({"eidValue": eid_to_bytes(EID)}).dump(),
        0xBF22: euicc_info2(ci.pkid).dump(),
    })
    es10 = Es10Client(SimCardTransport(FakeCard(isdr))).open()
    info = chip_info(es10, [ci.cert])
    assert info["eid"] == EID and info["defaultDpAddress"] is None and info["rulesAuthorisationTable"] is None
    e2 = info["euiccInfo2"]
    assert e2["svn"] == "2.5.0" and e2["extCardResource"]["freeNonVolatileMemory"] == 0xF000
    assert e2["euiccCiPKIdListForVerification"] == [{"pkid": ci.pkid.hex().upper(), "trustedByLpa": True}]
    assert e2["rspCapability"] == ["additionalProfile", "testProfileSupport"]
    assert chip_info(es10)["euiccInfo2"]["euiccCiPKIdListForSigning"][0]["trustedByLpa"] is False


def test_profile_view_defaults_and_owner():
    info = profile_info(nickname="Dad")
    del info["profileClass"]  # DEFAULT operational
    info.update(profileOwner={"mccMnc": bytes.fromhex("00F110"), "gid1": b"\xab"}, icon=b"\x89PNG", iconType="png",
                dpProprietaryData={"dpOid": "2.999.10"}, profilePolicyRules={"ppr2"})
    isdr = ScriptedIsdr({0xBF2D: m.ProfileInfoListResponse(name="profileInfoListOk", value=[info]).dump()})
    view = list_profiles(Es10Client(SimCardTransport(FakeCard(isdr))).open())[0]
    assert (view.iccid, view.state, view.nickname, view.profile_class) == (ICCID, "enabled", "Dad", "operational")
    assert view.profile_owner == {"mcc": "001", "mnc": "01", "gid1": "AB"}
    data = view.as_dict()
    assert data["icon"] == "iVBORw==" and data["dpOid"] == "2.999.10" and data["profilePolicyRules"] == ["ppr2"]


def test_metadata_summary_mentions_consent():
    metadata = ProfileMetadata.from_asn1(m.StoreMetadataRequest({
        "iccid": ICCID_BCD, "serviceProviderName": "Kin", "profileName": "Kids",
        "profileOwner": {"mccMnc": bytes.fromhex("00F110")}, "profilePolicyRules": {"ppr1"}}), True)
    labels = dict(metadata_summary(metadata))
    assert labels["ICCID"] == ICCID and labels["Profile owner"] == "MCC 001 MNC 01"
    assert "consent" in labels["Consent"] and labels["Policy rules"] == "ppr1"
