"""ES10c.GetProfilesInfo (SGP.22 5.7.15): which profiles the search criteria select and which
ProfileInfo components the tag list asks for."""

from __future__ import annotations

from euicc_sim.state import OPERATIONAL, Profile
from rsp import messages as m
from rsp.ids import iccid_to_bcd
from rsp.tlv import read_tag

# The ProfileInfo component each tag of a tagList selects.
PROFILE_INFO_TAGS = {
    0x5A: "iccid", 0x4F: "isdpAid", 0x9F70: "profileState", 0x90: "profileNickname",
    0x91: "serviceProviderName", 0x92: "profileName", 0x93: "iconType", 0x94: "icon", 0x95: "profileClass",
    0xB6: "notificationConfigurationInfo", 0xB7: "profileOwner", 0xB8: "dpProprietaryData",
    0x99: "profilePolicyRules",
}  # fmt: skip
ALL_FIELDS = tuple(PROFILE_INFO_TAGS.values())
# Components copied from the StoreMetadata the profile was installed with.
METADATA_FIELDS = ("serviceProviderName", "profileName", "iconType", "icon", "notificationConfigurationInfo",
                   "profileOwner", "profilePolicyRules")  # fmt: skip


def requested_fields(tag_list: bytes | None) -> tuple[str, ...]:
    """The components a tagList asks for (all without one); unknown tags are ignored. A tag cut
    short raises DecodeError (the function's incorrectInputValues)."""
    if tag_list is None:
        return ALL_FIELDS
    fields, pos = [], 0
    while pos < len(tag_list):
        tag, pos = read_tag(tag_list, pos)
        if tag in PROFILE_INFO_TAGS:
            fields.append(PROFILE_INFO_TAGS[tag])
    return tuple(fields)


def matches(profile: Profile, criteria: m.ProfileSearchCriteria) -> bool:
    if criteria.name == "isdpAid":
        return profile.aid == criteria.native
    if criteria.name == "iccid":
        return iccid_to_bcd(profile.iccid) == criteria.native
    return profile.profile_class == criteria.native


def profile_info(profile: Profile, fields: tuple[str, ...]) -> m.ProfileInfo:
    metadata = profile.parsed_metadata
    values = {
        "iccid": iccid_to_bcd(profile.iccid),
        "isdpAid": profile.aid,
        "profileState": "enabled" if profile.enabled else "disabled",
    }
    if profile.nickname:
        values["profileNickname"] = profile.nickname
    if profile.profile_class != OPERATIONAL:  # profileClass DEFAULT operational: DER leaves it out
        values["profileClass"] = profile.profile_class
    for name in METADATA_FIELDS:
        if metadata[name].native is not None:
            values[name] = metadata[name].native
    info = m.ProfileInfo({name: value for name, value in values.items() if name in fields})
    if profile.dp_proprietary is not None and "dpProprietaryData" in fields:
        info["dpProprietaryData"] = m.DpProprietaryData.load(profile.dp_proprietary, implicit=24)
    return info
