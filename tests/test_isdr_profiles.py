"""ES10c profile management and the ES10b notification functions through APDUs (SGP.22 5.7.10 -
5.7.12, 5.7.15 - 5.7.21): state rules, profile policy rules, signed notifications."""

from __future__ import annotations

import pytest

from rsp import crypto
from rsp import messages as m
from rsp.ids import iccid_to_bcd
from tests.euicc_fixtures import (
    DELETE_ADDRESS,
    DISABLE_ADDRESS,
    ENABLE_ADDRESS,
    OWNER,
    Reader,
    card_at,
    default_notify,
    iccid,
    metadata,
    open_test_euicc,
)

AID_1 = bytes.fromhex("A0000005591010FFFFFFFF8900001000")
AID_2 = bytes.fromhex("A0000005591010FFFFFFFF8900001100")


@pytest.fixture
def bench(tmp_path):
    with card_at(tmp_path / "euicc") as bench:
        yield bench


@pytest.fixture
def two(bench):
    """Two installed profiles with notification addresses for enable, disable and delete; install
    notifications already acknowledged."""
    bench.install(iccid(1), metadata_der=metadata(iccid(1), notify=default_notify()))
    bench.install(iccid(2), metadata_der=metadata(iccid(2), notify=default_notify(), profile_class="test"))
    for note in bench.reader.notifications():
        remove(bench, note["seqNumber"])
    return bench


def remove(bench, seq: int) -> int:
    request = m.NotificationSentRequest({"seqNumber": seq})
    return bench.reader.call(request, m.NotificationSentResponse)["deleteNotificationStatus"].native


def by_aid(aid: bytes) -> m.ProfileIdentifier:
    return m.ProfileIdentifier(name="isdpAid", value=aid)


def states(bench) -> dict[str, str]:
    return {p["iccid"]: p["profileState"] for p in bench.reader.profiles()}


def bcd(number: int) -> bytes:
    return iccid_to_bcd(iccid(number))


def operations(bench) -> list[tuple[str, str]]:
    return [
        (next(iter(n["profileManagementOperation"])), n["notificationAddress"])
        for n in bench.reader.notifications()
    ]


# --- GetProfilesInfo (5.7.15) -----------------------------------------------------------------


def profiles_info(bench, **request):
    response = bench.reader.call(m.ProfileInfoListRequest(request), m.ProfileInfoListResponse)
    return response


def test_profiles_info_lists_every_profile_with_its_metadata(two):
    first, second = profiles_info(two).chosen.native
    assert first["iccid"] == bcd(1) and first["isdpAid"] == AID_1 and first["profileState"] == "disabled"
    assert first["profileClass"] is None  # operational is the DEFAULT, so DER leaves it out
    assert second["profileClass"] == "test" and second["isdpAid"] == AID_2
    assert first["serviceProviderName"] == "Kinsim Mobile" and first["profileName"] == "Family plan"
    assert {n["notificationAddress"] for n in first["notificationConfigurationInfo"]} == {
        ENABLE_ADDRESS,
        DISABLE_ADDRESS,
        DELETE_ADDRESS,
    }


@pytest.mark.parametrize(
    "criteria, expected",
    [
        (m.ProfileSearchCriteria(name="isdpAid", value=AID_2), [2]),
        (m.ProfileSearchCriteria(name="iccid", value=iccid_to_bcd(iccid(1))), [1]),
        (m.ProfileSearchCriteria(name="profileClass", value="test"), [2]),
        (m.ProfileSearchCriteria(name="profileClass", value="operational"), [1]),
        (m.ProfileSearchCriteria(name="profileClass", value="provisioning"), []),
        (m.ProfileSearchCriteria(name="iccid", value=iccid_to_bcd(iccid(9))), []),
    ],
)
def test_profiles_info_search_criteria(two, criteria, expected):
    found = profiles_info(two, searchCriteria=criteria).chosen.native
    assert [p["iccid"] for p in found] == [bcd(n) for n in expected]


def test_profiles_info_returns_only_the_requested_tags(two):
    found = profiles_info(two, tagList=bytes.fromhex("5A9F7092")).chosen.native
    assert found[0] == {
        **{k: None for k in found[0]},
        "iccid": bcd(1),
        "profileState": "disabled",
        "profileName": "Family plan",
    }


def test_profiles_info_with_a_malformed_tag_list(two):
    response = profiles_info(two, tagList=bytes.fromhex("9F"))  # a two-byte tag cut short
    assert response.name == "profileInfoListError" and response.chosen.native == 1


def test_profiles_info_on_an_empty_card(bench):
    assert profiles_info(bench).chosen.native == []


# --- EnableProfile (5.7.16) -------------------------------------------------------------------


def test_enable_a_disabled_profile(two):
    assert two.reader.enable(iccid(1)) == 0
    assert states(two) == {bcd(1): "enabled", bcd(2): "disabled"}
    assert operations(two) == [("notificationEnable", ENABLE_ADDRESS)]


def test_enable_another_profile_disables_the_enabled_one(two):
    two.reader.enable(iccid(1))
    request = m.EnableProfileRequest({"profileIdentifier": by_aid(AID_2), "refreshFlag": True})
    assert two.reader.call(request, m.EnableProfileResponse)["enableResult"].native == 0
    assert states(two) == {bcd(1): "disabled", bcd(2): "enabled"}
    assert operations(two) == [
        ("notificationEnable", ENABLE_ADDRESS),
        ("notificationDisable", DISABLE_ADDRESS),
        ("notificationEnable", ENABLE_ADDRESS),
    ]
    assert [n["iccid"] for n in two.reader.notifications()] == [bcd(1), bcd(1), bcd(2)]


def test_enable_an_enabled_profile(two):
    two.reader.enable(iccid(1))
    assert two.reader.enable(iccid(1)) == 2  # profileNotInDisabledState
    assert len(two.reader.notifications()) == 1


def test_enable_an_unknown_profile(two):
    assert two.reader.enable(iccid(9)) == 1
    request = m.EnableProfileRequest({"profileIdentifier": by_aid(bytes(16)), "refreshFlag": False})
    assert two.reader.call(request, m.EnableProfileResponse)["enableResult"].native == 1
    bad_bcd = m.EnableProfileRequest(
        {"profileIdentifier": m.ProfileIdentifier(name="iccid", value=b"\xab" * 10), "refreshFlag": False}
    )
    assert two.reader.call(bad_bcd, m.EnableProfileResponse)["enableResult"].native == 1
    assert two.reader.notifications() == []


def test_profile_without_notification_addresses_is_enabled_silently(bench):
    bench.install(iccid(1))
    remove(bench, 1)
    assert bench.reader.enable(iccid(1)) == 0
    assert bench.reader.notifications() == []


# --- DisableProfile (5.7.17) ------------------------------------------------------------------


def test_disable_the_enabled_profile(two):
    two.reader.enable(iccid(1))
    assert two.reader.disable(iccid(1)) == 0
    assert states(two) == {bcd(1): "disabled", bcd(2): "disabled"}
    assert operations(two)[-1] == ("notificationDisable", DISABLE_ADDRESS)


def test_disable_a_disabled_profile(two):
    assert two.reader.disable(iccid(1)) == 2  # profileNotInEnabledState


def test_disable_an_unknown_profile(two):
    assert two.reader.disable(iccid(9)) == 1


# --- DeleteProfile (5.7.18) -------------------------------------------------------------------


def test_delete_a_disabled_profile_frees_its_memory(two):
    free = two.euicc.isdr.free_memory()
    size = next(p.size for p in two.euicc.isdr.state.profiles if p.iccid == iccid(1))
    assert two.reader.delete(iccid(1)) == 0
    assert list(states(two)) == [bcd(2)]
    assert two.euicc.isdr.free_memory() == free + size
    assert operations(two) == [("notificationDelete", DELETE_ADDRESS)]


def test_delete_by_aid(two):
    request = m.DeleteProfileRequest(name="isdpAid", value=AID_2)
    assert two.reader.call(request, m.DeleteProfileResponse)["deleteResult"].native == 0
    assert list(states(two)) == [bcd(1)]


def test_delete_the_enabled_profile(two):
    two.reader.enable(iccid(1))
    assert two.reader.delete(iccid(1)) == 2  # profileNotInDisabledState
    assert bcd(1) in states(two)


def test_delete_an_unknown_profile(two):
    assert two.reader.delete(iccid(9)) == 1


# --- profile policy rules (2.9, 5.7.16 - 5.7.18) ----------------------------------------------


@pytest.fixture
def guarded(bench):
    """ppr1 (no disabling) on profile 1, ppr2 (no deletion) on profile 2, both owned by 001 01."""
    bench.install(
        iccid(1), metadata_der=metadata(iccid(1), pprs={"ppr1"}, owner=OWNER, notify=default_notify())
    )
    bench.install(
        iccid(2), metadata_der=metadata(iccid(2), pprs={"ppr2"}, owner=OWNER, notify=default_notify())
    )
    bench.install(iccid(3), metadata_der=metadata(iccid(3), notify=default_notify()))
    for note in bench.reader.notifications():
        remove(bench, note["seqNumber"])
    return bench


def test_ppr1_forbids_disabling(guarded):
    assert guarded.reader.enable(iccid(1)) == 0
    assert guarded.reader.disable(iccid(1)) == 3  # disallowedByPolicy
    assert guarded.reader.enable(iccid(3)) == 3  # would disable profile 1
    assert states(guarded)[bcd(1)] == "enabled"
    assert operations(guarded) == [("notificationEnable", ENABLE_ADDRESS)]


def test_ppr2_forbids_deleting(guarded):
    assert guarded.reader.delete(iccid(2)) == 3
    assert bcd(2) in states(guarded)
    assert guarded.reader.delete(iccid(1)) == 0  # ppr1 alone does not protect from deletion
    assert guarded.reader.delete(iccid(3)) == 0


def test_ppr2_profile_can_still_be_disabled(guarded):
    assert guarded.reader.enable(iccid(2)) == 0
    assert guarded.reader.disable(iccid(2)) == 0


def test_get_rat_returns_the_configured_table(bench):
    rat = bench.reader.call(m.GetRatRequest({}), m.GetRatResponse)["rat"].native
    assert rat == [
        {
            "pprIds": {"ppr1", "ppr2"},
            "allowedOperators": [{"mccMnc": bytes.fromhex("eeeeee"), "gid1": None, "gid2": None}],
            "pprFlags": set(),
        }
    ]


# --- SetNickname (5.7.21) ---------------------------------------------------------------------


def test_set_nickname(two):
    request = m.SetNicknameRequest({"iccid": bcd(2), "profileNickname": "Kid's phone"})
    assert two.reader.call(request, m.SetNicknameResponse)["setNicknameResult"].native == 0
    assert [p["profileNickname"] for p in two.reader.profiles()] == [None, "Kid's phone"]


def test_set_nickname_of_an_unknown_profile(two):
    request = m.SetNicknameRequest({"iccid": bcd(9), "profileNickname": "x"})
    assert two.reader.call(request, m.SetNicknameResponse)["setNicknameResult"].native == 1


# --- eUICCMemoryReset (5.7.19) ----------------------------------------------------------------


def memory_reset(bench, *options) -> int:
    request = m.EuiccMemoryResetRequest({"resetOptions": set(options)})
    return bench.reader.call(request, m.EuiccMemoryResetResponse)["resetResult"].native


def test_memory_reset_of_operational_profiles_ignores_pprs(guarded):
    guarded.reader.enable(iccid(1))
    assert memory_reset(guarded, "deleteOperationalProfiles") == 0
    assert states(guarded) == {}


def test_memory_reset_of_test_profiles_only(two):
    assert memory_reset(two, "deleteFieldLoadedTestProfiles") == 0
    assert list(states(two)) == [bcd(1)]
    assert memory_reset(two, "deleteFieldLoadedTestProfiles") == 1  # nothingToDelete


def test_memory_reset_restores_the_default_smdp_address(tmp_path):
    with card_at(tmp_path / "e", default_dp_address="factory.example.com") as bench:
        request = m.SetDefaultDpAddressRequest({"defaultDpAddress": "other.example.com"})
        bench.reader.call(request, m.SetDefaultDpAddressResponse)
        assert memory_reset(bench, "resetDefaultSmdpAddress") == 0
        addresses = bench.reader.call(
            m.EuiccConfiguredAddressesRequest({}), m.EuiccConfiguredAddressesResponse
        )
        assert addresses["defaultDpAddress"].native == "factory.example.com"


def test_memory_reset_with_nothing_to_do(bench):
    assert memory_reset(bench, "deleteOperationalProfiles", "deleteFieldLoadedTestProfiles") == 1
    assert memory_reset(bench) == 1


# --- notifications (5.7.10 - 5.7.12) ----------------------------------------------------------


def retrieve(bench, criteria=None) -> m.RetrieveNotificationsListResponse:
    request = m.RetrieveNotificationsListRequest({"searchCriteria": criteria} if criteria is not None else {})
    return bench.reader.call(request, m.RetrieveNotificationsListResponse)


def test_other_notifications_are_signed_over_their_metadata(two):
    two.reader.enable(iccid(1))
    [pending] = retrieve(two).chosen
    other = pending.chosen
    assert pending.name == "otherSignedNotification"
    metadata_value = other["tbsOtherNotification"]
    assert metadata_value.native["profileManagementOperation"] == {"notificationEnable"}
    assert metadata_value.native["seqNumber"] == 3  # after the two install results
    assert other["euiccCertificate"].dump() == two.euicc.identity.euicc.cert_der
    key = two.euicc.identity.euicc.cert.public_key()
    assert crypto.verify(key, metadata_value.dump(), other["euiccNotificationSignature"].native)


def test_list_notifications_filtered_by_operation(two):
    two.reader.enable(iccid(1))
    two.reader.disable(iccid(1))
    request = m.ListNotificationRequest({"profileManagementOperation": {"notificationDisable"}})
    found = two.reader.call(request, m.ListNotificationResponse).chosen.native
    assert [n["seqNumber"] for n in found] == [4]


def test_retrieve_by_sequence_number_and_by_operation(two):
    two.reader.enable(iccid(1))
    two.reader.disable(iccid(1))
    by_seq = retrieve(two, m.NotificationSearchCriteria(name="seqNumber", value=4)).chosen
    assert [p.chosen["tbsOtherNotification"]["seqNumber"].native for p in by_seq] == [4]
    by_operation = retrieve(
        two, m.NotificationSearchCriteria(name="profileManagementOperation", value={"notificationEnable"})
    ).chosen
    assert [p.chosen["tbsOtherNotification"]["seqNumber"].native for p in by_operation] == [3]


def test_retrieve_with_no_match(two):
    response = retrieve(two, m.NotificationSearchCriteria(name="seqNumber", value=99))
    assert (
        response.name == "notificationsListResultError" and response.chosen.native == 1
    )  # noResultAvailable
    assert retrieve(two).chosen.native == []  # no criteria: an empty list


def test_remove_notification(two):
    two.reader.enable(iccid(1))
    assert remove(two, 3) == 0
    assert two.reader.notifications() == []
    assert remove(two, 3) == 1  # nothingToDelete


def test_sequence_numbers_are_never_reused(two):
    two.reader.enable(iccid(1))
    remove(two, 3)
    two.reader.disable(iccid(1))
    assert [n["seqNumber"] for n in two.reader.notifications()] == [4]


# --- the enabled profile's package reaches the card's profile applications -------------------


class FileSystemRoot:
    """A stand-in for the profile's MF: records the package it was built from."""

    aid = None

    def __init__(self, package: bytes):
        self.package = package

    def select(self, command):
        return b"", 0x9000

    def process(self, command):
        return b"", 0x6D00

    def deselect(self, channel):
        pass


def test_profile_applications_are_built_from_the_enabled_package(tmp_path):
    built = []

    def apps(package: bytes):
        built.append(FileSystemRoot(package))
        return [built[-1]]

    with card_at(tmp_path / "euicc") as bench:
        bench.install(iccid(1))
        bench.install(iccid(2))
        packages = [bench.euicc.isdr.package(p) for p in bench.euicc.isdr.state.profiles]
    select_mf = bytes.fromhex("00A4000C023F00")
    with open_test_euicc(tmp_path / "euicc", profile_apps=apps) as euicc:
        assert euicc.card.transmit(select_mf) == bytes.fromhex("6A82")  # nothing enabled: no file system
        reader = Reader(euicc.card)
        assert reader.enable(iccid(1)) == 0
        assert euicc.card.transmit(select_mf) == bytes.fromhex("9000")
        assert [app.package for app in built] == [packages[0]]
        euicc.card.transmit(select_mf)
        assert len(built) == 1  # the same application objects while the profile stays enabled
        reader = Reader(euicc.card)  # the basic channel now has the MF selected: back to the ISD-R
        assert reader.enable(iccid(2)) == 0
        euicc.card.transmit(select_mf)
        assert [app.package for app in built] == packages
        assert euicc.enabled_package() == packages[1]
