"""Local profile management (SGP.22 3.2) and chip information, as values the CLI prints.

Every operation that makes the eUICC create a notification (enable, disable, delete, memory reset)
is followed by notification processing (3.5), so the SM-DP+ hears about it without a second command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from certs.validate import pkid
from lpa.download import ProfileMetadata, icon_text, operator_view
from lpa.es10 import Es10Client, ProfileRef
from lpa.notifications import Delivery, PeerFactory, process_notifications
from rsp import messages as m
from rsp.errors import ApduError, DecodeError, Es10Error
from rsp.ids import iccid_from_bcd
from rsp.tlv import split

# ETSI TS 102 226 8.2.1.7.2 extended card resources information (EUICCInfo2.extCardResource).
EXT_CARD_RESOURCE_TAGS = {0x81: "installedApplications", 0x82: "freeNonVolatileMemory", 0x83: "freeVolatileMemory"}


def version_text(value: bytes | None) -> str | None:
    """VersionType '02 02 00' as "2.2.0"."""
    return ".".join(str(b) for b in value) if value is not None else None


@dataclass(frozen=True)
class ProfileView:
    """ProfileInfo (5.7.15) as people and scripts read it."""

    iccid: str | None
    isdp_aid: str | None
    state: str | None
    nickname: str | None
    service_provider_name: str | None
    profile_name: str | None
    profile_class: str
    icon_type: str | None
    icon: bytes | None
    profile_owner: dict | None
    profile_policy_rules: tuple[str, ...]
    dp_oid: str | None

    @classmethod
    def from_asn1(cls, info: m.ProfileInfo) -> ProfileView:
        native = info.native
        return cls(
            iccid=iccid_from_bcd(native["iccid"]) if native.get("iccid") else None,
            isdp_aid=native["isdpAid"].hex().upper() if native.get("isdpAid") else None,
            state=native.get("profileState"),
            nickname=native.get("profileNickname"),
            service_provider_name=native.get("serviceProviderName"),
            profile_name=native.get("profileName"),
            profile_class=native.get("profileClass") or "operational",  # DEFAULT operational
            icon_type=native.get("iconType"),
            icon=native.get("icon"),
            profile_owner=operator_view(native.get("profileOwner")),
            profile_policy_rules=tuple(sorted(native.get("profilePolicyRules") or ())),
            dp_oid=(native.get("dpProprietaryData") or {}).get("dpOid"),
        )

    def as_dict(self) -> dict:
        return {
            "iccid": self.iccid, "isdpAid": self.isdp_aid, "profileState": self.state,
            "profileNickname": self.nickname, "serviceProviderName": self.service_provider_name,
            "profileName": self.profile_name, "profileClass": self.profile_class, "iconType": self.icon_type,
            "icon": icon_text(self.icon), "profileOwner": self.profile_owner,
            "profilePolicyRules": list(self.profile_policy_rules), "dpOid": self.dp_oid,
        }


@dataclass(frozen=True)
class OperationResult:
    """A management operation and the notifications processed after it."""

    action: str
    profile: str
    notifications: list[Delivery]

    def as_dict(self) -> dict:
        return {"action": self.action, "profile": self.profile,
                "notifications": [d.as_dict() for d in self.notifications]}


def list_profiles(es10: Es10Client) -> list[ProfileView]:
    return [ProfileView.from_asn1(info) for info in es10.get_profiles_info()]


def decode_ext_card_resource(data: bytes) -> dict:
    """Installed applications and free memory (bytes) from extCardResource; unknown tags in hex."""
    try:
        items = split(data)
    except DecodeError:
        return {"raw": data.hex().upper()}
    return {EXT_CARD_RESOURCE_TAGS.get(item.tag, f"tag{item.tag:X}"): int.from_bytes(item.value, "big")
            if item.tag in EXT_CARD_RESOURCE_TAGS else item.value.hex().upper() for item in items}


def euicc_info2_view(info: m.EUICCInfo2, trusted_cis: Sequence[x509.Certificate] = ()) -> dict:
    """EUICCInfo2 (5.7.8) decoded: versions as text, bit strings as names, CI keys marked if trusted."""
    native = info.native
    trusted = {pkid(ci) for ci in trusted_cis}

    def keys(name: str) -> list[dict]:
        return [{"pkid": key.hex().upper(), "trustedByLpa": key in trusted} for key in native[name] or ()]

    certification = native.get("certificationDataObject")
    return {
        "profileVersion": version_text(native["profileVersion"]),
        "svn": version_text(native["svn"]),
        "euiccFirmwareVer": version_text(native["euiccFirmwareVer"]),
        "extCardResource": decode_ext_card_resource(native["extCardResource"]),
        "uiccCapability": sorted(native["uiccCapability"] or ()),
        "javacardVersion": version_text(native.get("javacardVersion")),
        "globalplatformVersion": version_text(native.get("globalplatformVersion")),
        "rspCapability": sorted(native["rspCapability"] or ()),
        "euiccCiPKIdListForVerification": keys("euiccCiPKIdListForVerification"),
        "euiccCiPKIdListForSigning": keys("euiccCiPKIdListForSigning"),
        "euiccCategory": native.get("euiccCategory"),
        "forbiddenProfilePolicyRules": sorted(native.get("forbiddenProfilePolicyRules") or ()),
        "ppVersion": version_text(native["ppVersion"]),
        "sasAcreditationNumber": native["sasAcreditationNumber"],
        "certificationDataObject": dict(certification) if certification else None,
    }


def rat_view(rat: m.RulesAuthorisationTable) -> list[dict]:
    return [{"pprIds": sorted(rule["pprIds"] or ()),
             "allowedOperators": [operator_view(op) for op in rule["allowedOperators"]],
             "pprFlags": sorted(rule["pprFlags"] or ())} for rule in rat.native]


def chip_info(es10: Es10Client, trusted_cis: Sequence[x509.Certificate] = ()) -> dict:
    """EID, configured addresses, EUICCInfo2 and the RAT (None if the card does not offer GetRAT)."""
    default_dp, root_ds = es10.get_euicc_configured_addresses()
    try:
        rat = rat_view(es10.get_rat())
    except (Es10Error, DecodeError, ApduError):  # GetRAT is newer than some cards
        rat = None
    return {
        "eid": es10.get_eid(),
        "defaultDpAddress": default_dp,
        "rootDsAddress": root_ds,
        "euiccInfo2": euicc_info2_view(es10.get_euicc_info2(), trusted_cis),
        "rulesAuthorisationTable": rat,
    }


async def enable_profile(es10: Es10Client, peers: PeerFactory, ref: ProfileRef, refresh: bool = False) -> OperationResult:
    es10.enable_profile(ref, refresh)
    return OperationResult("enable", str(ref), await process_notifications(es10, peers))


async def disable_profile(es10: Es10Client, peers: PeerFactory, ref: ProfileRef,
                          refresh: bool = False) -> OperationResult:
    es10.disable_profile(ref, refresh)
    return OperationResult("disable", str(ref), await process_notifications(es10, peers))


async def delete_profile(es10: Es10Client, peers: PeerFactory, ref: ProfileRef) -> OperationResult:
    es10.delete_profile(ref)
    return OperationResult("delete", str(ref), await process_notifications(es10, peers))


async def memory_reset(es10: Es10Client, peers: PeerFactory, options: set[str]) -> OperationResult:
    es10.memory_reset(options)
    return OperationResult("memory reset", ",".join(sorted(options)), await process_notifications(es10, peers))


def set_nickname(es10: Es10Client, iccid: str, nickname: str) -> None:
    es10.set_nickname(iccid, nickname)


def metadata_summary(metadata: ProfileMetadata) -> list[tuple[str, object]]:
    """What the user is asked to confirm, as label/value pairs."""
    owner = metadata.profile_owner
    pairs: list[tuple[str, object]] = [
        ("ICCID", metadata.iccid),
        ("Service provider", metadata.service_provider_name),
        ("Profile name", metadata.profile_name),
        ("Profile class", metadata.profile_class),
    ]
    if owner:
        pairs.append(("Profile owner", f"MCC {owner['mcc']} MNC {owner['mnc']}"))
    if metadata.profile_policy_rules:
        pairs.append(("Policy rules", ", ".join(metadata.profile_policy_rules)))
    if metadata.ppr_consent_required:
        pairs.append(("Consent", "the policy rules of this profile need your explicit consent"))
    return pairs
