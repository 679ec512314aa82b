"""SGP.22 v3 Remote Profile Management, the parts every role shares: building an RPM package, what
smdpSignature3 covers, and reading a LoadRpmPackageResult.

v3 (5.6.3, 5.7.x LoadRpmPackage): the SM-DP+ signs smdpSigned3 with its CERT.DPauth key; the
signature covers smdpSigned3 followed by the euiccSignature1 data object ('5F37') of the same
session, as smdpSignature2 does (so a package is bound to one authenticated session).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asn1crypto import core

from rsp import messages_v3 as v3
from rsp.errors import DecodeError
from rsp.ids import iccid_from_bcd, iccid_to_bcd
from rsp.tlv import encode_tlv

TAG_SIGNATURE = 0x5F37
PROFILE_COMMANDS = ("enable", "disable", "delete")  # the RpmCommand alternatives that name one ICCID
RESULT_OF = {"enable": "enableResult", "disable": "disableResult", "delete": "deleteResult"}
OK = 0


def signed3_data(smdp_signed3: bytes, euicc_signature1: bytes) -> bytes:
    """What smdpSignature3 covers: smdpSigned3 || '5F37' euiccSignature1 (v3 5.6.3)."""
    return smdp_signed3 + encode_tlv(TAG_SIGNATURE, euicc_signature1)


@dataclass(frozen=True)
class Command:
    """One RpmCommand on one profile: ``action`` is enable, disable or delete."""

    action: str
    iccid: str
    continue_on_failure: bool = False


def build_package(commands: Iterable[Command]) -> v3.RpmPackage:
    items = []
    for command in commands:
        if command.action not in PROFILE_COMMANDS:
            raise ValueError(f"unsupported RPM command {command.action!r}")
        item: dict = {"rpmCommandDetails": v3.RpmCommandDetails(
            name=command.action, value={"iccid": iccid_to_bcd(command.iccid)})}
        if command.continue_on_failure:
            item["continueOnFailure"] = core.Null()
        items.append(item)
    if not items:
        raise ValueError("an RPM package needs at least one command")
    return v3.RpmPackage(items)


def revocation_package(iccid: str) -> v3.RpmPackage:
    """Disable (if enabled; a disabled profile answers profileNotInEnabledState, and the package goes
    on) then delete: what an operator sends to remove a profile from the eUICC."""
    return build_package([Command("disable", iccid, continue_on_failure=True), Command("delete", iccid)])


def package_commands(package: v3.RpmPackage) -> list[Command]:
    """The commands of a decoded package; DecodeError for one that names no single profile."""
    commands = []
    for item in package:
        details = item["rpmCommandDetails"]
        if details.name not in PROFILE_COMMANDS:
            raise DecodeError(f"RPM command {details.name} is not supported (only {', '.join(PROFILE_COMMANDS)})")
        iccid = iccid_from_bcd(details.chosen["iccid"].native)
        commands.append(Command(details.name, iccid, continue_on_failure(item)))
    return commands


def continue_on_failure(item: v3.RpmCommand) -> bool:
    """continueOnFailure is a NULL: present or absent (asn1crypto gives Void when absent)."""
    return not isinstance(item["continueOnFailure"], core.Void)


@dataclass(frozen=True)
class CommandOutcome:
    """One RpmCommandResult: the ICCID, the ES10c result alternative and its value (0 = ok)."""

    iccid: str | None
    result: str  # enableResult, disableResult, deleteResult, rpmProcessingTerminated, ...
    code: int

    @property
    def ok(self) -> bool:
        return self.result in RESULT_OF.values() and self.code == OK


def outcomes(data: v3.LoadRpmPackageResultDataSigned) -> list[CommandOutcome]:
    """The per-command results of a signed LoadRpmPackageResult ([] for an error result)."""
    final = data["finalResult"]
    if final.name != "rpmPackageExecutionResult":
        return []
    found = []
    for item in final.chosen:
        chosen = item["rpmCommandResultData"]
        found.append(CommandOutcome(_iccid_text(item["iccid"].native), chosen.name, _result_code(chosen)))
    return found


def _iccid_text(bcd: bytes | None) -> str | None:
    if bcd is None:
        return None
    try:
        return iccid_from_bcd(bcd)
    except DecodeError:  # not BCD digits: shown as received
        return bcd.hex().upper()


def _result_code(chosen) -> int:
    """The integer result of an RpmCommandResultData alternative."""
    value = chosen.chosen
    if chosen.name in RESULT_OF.values():
        return int(value[chosen.name])
    if chosen.name in ("updateMetadataResult", "rpmProcessingTerminated"):
        return int(value)
    return -1  # listProfileInfoResult / contactPcmpResult: no single code


def deleted_iccids(data: v3.LoadRpmPackageResultDataSigned) -> list[str]:
    """ICCIDs the eUICC reports deleted (deleteResult ok)."""
    return [o.iccid for o in outcomes(data) if o.result == "deleteResult" and o.ok and o.iccid]
