"""What the card checks before it accepts a profile (SGP.22 2.9 profile policy, 5.5.3 StoreMetadata,
5.7.6 installation errors), against its state and the capabilities it declares in EUICCInfo2.

``InstallChecks`` is the ``CardChecks`` the BPP loader consults: the ICCID is new, the profile class
is supported, every profile policy rule is allowed by the Rules Authorisation Table for the
profile's owner and not forbidden, the package fits the free memory, its SAIP version and mandatory
services are ones the card declares.
"""

from __future__ import annotations

from collections.abc import Callable

from euicc_sim.es8_loader import (
    ICCID_ALREADY_EXISTS,
    LOAD_PROFILE_ELEMENTS,
    PE_FEATURE_NOT_SUPPORTED,
    PE_PROCESSING_ERROR,
    PE_UNSUPPORTED_PROFILE_VERSION,
    PPR_NOT_ALLOWED,
    STORE_METADATA,
    UNSUPPORTED_PROFILE_CLASS,
    BppLoadError,
    euicc_response,
)
from euicc_sim.identity import EuiccConfig
from euicc_sim.state import CardState, metadata_iccid
from rsp import messages as m
from rsp.saip import ProfilePackage

PPR_RULES = ("ppr1", "ppr2", "ppr3")  # the rules the RAT authorises (2.9.2); pprUpdateControl is not one

# ProfileHeader mandatory services that have a UICCCapability bit (SAIP ServicesList -> EUICCInfo2);
# the others (ber-tlv, get-identity, ...) have no bit in the v2 EUICCInfo2 and are always accepted.
SERVICE_CAPABILITIES = {
    "contactless": "contactlessSupport", "usim": "usimSupport", "isim": "isimSupport", "csim": "csimSupport",
    "milenage": "akaMilenage", "cave": "akaCave", "tuak128": "akaTuak128", "tuak256": "akaTuak256",
    "gba-usim": "gbaAuthenUsim", "gba-isim": "gbaAuthenISim", "mbms": "mbmsAuthenUsim", "eap": "eapClient",
    "javacard": "javacard", "multos": "multos", "multiple-usim": "multipleUsimSupport",
    "multiple-isim": "multipleIsimSupport", "multiple-csim": "multipleCsimSupport",
}  # fmt: skip


def free_memory(config: EuiccConfig, state: CardState) -> int:
    return max(0, config.memory - state.used_memory)


class InstallChecks:
    """The CardChecks of euicc_sim.es8_loader for one card."""

    def __init__(self, config: EuiccConfig, state: Callable[[], CardState]):
        self._config = config
        self._state = state

    def free_memory(self) -> int:
        return free_memory(self._config, self._state())

    def check_metadata(self, metadata: m.StoreMetadataRequest) -> None:
        iccid = metadata_iccid(metadata)
        if self._state().find(iccid=iccid) is not None:
            raise BppLoadError(STORE_METADATA, ICCID_ALREADY_EXISTS, f"ICCID {iccid} is already installed")
        if (
            metadata["profileClass"].native == "test"
            and "testProfileSupport" not in self._config.rsp_capabilities
        ):
            raise BppLoadError(
                STORE_METADATA, UNSUPPORTED_PROFILE_CLASS, "this eUICC accepts no test profiles"
            )
        refusal = ppr_refusal(self._config, metadata)
        if refusal:
            raise BppLoadError(STORE_METADATA, PPR_NOT_ALLOWED, refusal)

    def check_package(self, package: ProfilePackage) -> None:
        major, minor, _ = self._config.version("profile_version")
        if (package.header.major_version, package.header.minor_version) > (major, minor):
            raise BppLoadError(
                LOAD_PROFILE_ELEMENTS,
                PE_PROCESSING_ERROR,
                f"profile version {package.version} is newer than the supported {major}.{minor}",
                sima_response=euicc_response(PE_UNSUPPORTED_PROFILE_VERSION, aborted=True),
            )
        declared = set(self._config.uicc_capabilities)
        needed = {s: SERVICE_CAPABILITIES[s] for s in package.mandatory_services if s in SERVICE_CAPABILITIES}
        missing = [service for service, bit in needed.items() if bit not in declared]
        if missing:
            raise BppLoadError(
                LOAD_PROFILE_ELEMENTS,
                PE_PROCESSING_ERROR,
                f"the profile needs {', '.join(missing)}, which this eUICC does not declare",
                sima_response=euicc_response(PE_FEATURE_NOT_SUPPORTED, aborted=True),
            )


def ppr_refusal(config: EuiccConfig, metadata: m.StoreMetadataRequest) -> str | None:
    """Why the profile's policy rules are not allowed (2.9.2), or None when they are."""
    pprs = set(metadata["profilePolicyRules"].native or ())
    forbidden = pprs & set(config.forbidden_pprs)
    if forbidden:
        return f"this eUICC forbids {', '.join(sorted(forbidden))}"
    owner = metadata["profileOwner"].native
    rules = config.rat_value().native
    for ppr in sorted(pprs & set(PPR_RULES)):
        if owner is None:
            return f"{ppr} is set but the profile names no profileOwner"
        if not any(
            ppr in rule["pprIds"] and any(operator_matches(op, owner) for op in rule["allowedOperators"])
            for rule in rules
        ):
            return f"the Rules Authorisation Table does not let operator {owner['mccMnc'].hex()} set {ppr}"
    return None


def operator_matches(allowed: dict, owner: dict) -> bool:
    """RAT allowedOperators against a profileOwner: mccMnc digit by digit, 'E' a wildcard (2.9.2.2);
    GID1/GID2 must be equal when the rule names them."""
    rule, actual = allowed["mccMnc"].hex(), owner["mccMnc"].hex()
    if len(rule) != len(actual) or any(r not in ("e", a) for r, a in zip(rule, actual, strict=True)):
        return False
    return all(allowed.get(gid) is None or allowed[gid] == owner.get(gid) for gid in ("gid1", "gid2"))
