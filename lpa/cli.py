"""``kinsim lpa``: an lpac-style Local Profile Assistant on the command line.

    kinsim lpa --euicc DIR chip info
    kinsim lpa --euicc DIR profile download -a 'LPA:1$smdp.example$MATCHING-ID' [-c CODE] [--yes]
    kinsim lpa --euicc DIR notification list

The card is a software eUICC directory (``--euicc``, or $KINSIM_EUICC) or, once available, a PC/SC
reader (``--reader``). SM-DP+ servers are trusted only through the CI certificates of the LPA
configuration (``kinsim lpa ci add``) or ``--ci-cert``. Tables by default, ``--json`` on every leaf.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from certs.pki import load_certificate
from certs.validate import pkid
from kinsim.output import command_group, emit, json_parent, key_values, print_json, table
from lpa import manage
from lpa.config import LpaConfig, add_trusted_ci, load_config
from lpa.download import DownloadPostponed, ProfileMetadata, download_profile
from lpa.es10 import ApduExchange, Counters, Es10Client, ProfileRef
from lpa.notifications import (
    Delivery,
    dump_notifications,
    list_notifications,
    load_dumped,
    process_notifications,
    remove_notifications,
    replay_notifications,
)
from lpa.transport import CardTransport, SimCardTransport
from rsp import status
from rsp.activation import parse_activation_code
from rsp.errors import DecodeError, Es10Error, KinsimError, StatusCodeError
from rsp.ids import validate_iccid

RESET_OPTIONS = ("deleteOperationalProfiles", "deleteFieldLoadedTestProfiles")


# --- the argparse tree ------------------------------------------------------------------------------


def register(subparsers, name: str, help_text: str) -> None:
    parser = subparsers.add_parser(
        name, help=help_text, parents=[json_parent()], description="Local Profile Assistant: talk ES10 to an eUICC and ES9+ to SM-DP+ "
        "servers. Global options go before the command: kinsim lpa --euicc DIR profile list")
    card = parser.add_argument_group("card")
    card.add_argument("--euicc", metavar="DIR", default=os.environ.get("KINSIM_EUICC"),
                      help="software eUICC directory, used in-process (default $KINSIM_EUICC)")
    card.add_argument("--reader", metavar="N|NAME", help="PC/SC reader by index or name")
    card.add_argument("--card", metavar="tcp:HOST:PORT",
                      help="a software eUICC in another process ('kinsim euicc serve DIR --transport tcp')")
    card.add_argument("--isdr-aid", metavar="HEX", help="ISD-R AID (default A0000005591010FFFFFFFF8900000100)")
    card.add_argument("--block-size", type=int, metavar="N", help="STORE DATA block size, 1..255 (default 255)")
    card.add_argument("--trace", action="store_true", help="print every APDU and the card cost per command")
    net = parser.add_argument_group("SM-DP+")
    net.add_argument("--config-dir", metavar="DIR", help="LPA configuration (default ~/.config/kinsim/lpa)")
    net.add_argument("--ci-cert", action="append", default=[], metavar="FILE",
                     help="trust this CI certificate for SM-DP+ TLS (repeatable; adds to the configuration)")
    net.add_argument("--connect-to", action="append", default=[], metavar="ADDR=HOST:PORT",
                     help="reach SM-DP+ ADDR at HOST:PORT (TLS still checks ADDR); repeatable")
    net.add_argument("--timeout", type=float, metavar="S", help="seconds per ES9+ request (default 60)")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    groups = parser.add_subparsers(dest="lpa_group", metavar="GROUP")
    _register_chip(groups)
    _register_profile(groups)
    _register_notification(groups)
    _register_ci(groups)
    _register_reader(groups)


def _leaf(commands, name: str, func: Callable, help_text: str, description: str | None = None):
    leaf = commands.add_parser(name, parents=[json_parent()], help=help_text, description=description or help_text)
    leaf.set_defaults(func=_friendly(func))
    return leaf


def _group(groups, name: str, help_text: str):
    return command_group(groups, name, help_text)


def _register_chip(groups) -> None:
    commands = _group(groups, "chip", "the eUICC itself: EID, capabilities, addresses")
    _leaf(commands, "info", cmd_chip_info, "EID, EUICCInfo2, configured addresses, CI keys, RAT")
    address = _leaf(commands, "default-dp-address", cmd_default_dp_address,
                    "show, set or clear the default SM-DP+ address (ES10a)",
                    "Without arguments: show. 'set ADDR': set it. 'clear': remove it.")
    address.add_argument("action", nargs="?", choices=("show", "set", "clear"), default="show")
    address.add_argument("address", nargs="?", metavar="ADDR")
    purge = _leaf(commands, "purge", cmd_chip_purge, "eUICCMemoryReset: delete all profiles (needs --yes)")
    purge.add_argument("--yes", action="store_true", help="really delete every operational and test profile")
    purge.add_argument("--reset-default-dp-address", action="store_true",
                       help="also restore the default SM-DP+ address")


def _register_profile(groups) -> None:
    commands = _group(groups, "profile", "list, download, enable, disable, delete, nickname")
    _leaf(commands, "list", cmd_profile_list, "installed profiles (ES10c.GetProfilesInfo)")
    for verb, func in (("enable", cmd_profile_enable), ("disable", cmd_profile_disable)):
        leaf = _leaf(commands, verb, func, f"{verb} a profile (by ICCID or ISD-P AID), then send notifications")
        leaf.add_argument("profile", metavar="ICCID|AID")
        leaf.add_argument("--refresh", action="store_true", help="set refreshFlag (the device then REFRESHes)")
    delete = _leaf(commands, "delete", cmd_profile_delete, "delete a disabled profile, then send notifications")
    delete.add_argument("profile", metavar="ICCID|AID")
    nickname = _leaf(commands, "nickname", cmd_profile_nickname, "set a profile's nickname ('' clears it)")
    nickname.add_argument("iccid", metavar="ICCID")
    nickname.add_argument("nickname", metavar="NAME")
    download = _leaf(
        commands, "download", cmd_profile_download, "download and install a profile (SGP.22 3.1.3)",
        "With -a: the activation code's SM-DP+ and matching ID. With -s/--smdp: that address. Without either: "
        "the card's default SM-DP+ address. -m gives the matching ID in the last two cases (default empty). "
        "The short options are lpac's.")
    source = download.add_mutually_exclusive_group()
    source.add_argument("-a", "--activation-code", metavar="CODE", help="'LPA:1$ADDRESS$MATCHING-ID[$OID[$1]]'")
    source.add_argument("-s", "--smdp", metavar="ADDR", help="SM-DP+ address")
    download.add_argument("-m", "--matching-id", metavar="ID", help="matching ID (not with -a, which carries one)")
    download.add_argument("-c", "--confirmation-code", metavar="CODE", help="confirmation code, if the order has one")
    download.add_argument("--yes", action="store_true", help="accept the profile without asking")
    download.add_argument("-i", "--imei", metavar="DIGITS", help="IMEI to send in deviceInfo (15 or 16 digits)")
    discovery = _leaf(commands, "discovery", cmd_profile_discovery,
                      "ask an SM-DS for events waiting for this eUICC (SGP.22 3.6.3)",
                      "Lists the events. With --download, serves each at its SM-DP+: a profile download, or an "
                      "SGP.22 v3 RPM package (e.g. the remote deletion of a revoked profile) the card runs.")
    discovery.add_argument("-s", "--smds", metavar="ADDR", help="SM-DS address (default: the card's root SM-DS)")
    discovery.add_argument("-i", "--imei", metavar="DIGITS", help="IMEI to send in deviceInfo (15 or 16 digits)")
    discovery.add_argument("--download", action="store_true",
                           help="serve every event: download its profile or run its RPM package")
    discovery.add_argument("-c", "--confirmation-code", metavar="CODE", help="confirmation code for a download")
    discovery.add_argument("--yes", action="store_true", help="accept downloaded profiles without asking")


def _register_notification(groups) -> None:
    commands = _group(groups, "notification", "pending notifications: list, send, remove")
    _leaf(commands, "list", cmd_notification_list, "notifications waiting on the card")
    process = _leaf(commands, "process", cmd_notification_process,
                    "send notifications to their SM-DP+; each acknowledged one is removed")
    process.add_argument("seq", nargs="*", type=int, metavar="SEQ", help="only these (default: all)")
    process.add_argument("--all", action="store_true", help="all pending notifications (the default)")
    remove = _leaf(commands, "remove", cmd_notification_remove, "drop notifications without sending them")
    remove.add_argument("seq", nargs="*", type=int, metavar="SEQ")
    remove.add_argument("--all", action="store_true", help="every pending notification")
    dump = _leaf(commands, "dump", cmd_notification_dump, "print notifications with their signed content (JSON)",
                 "A JSON list: each notification's metadata and its signed PendingNotification (base64 DER), "
                 "always JSON, to keep before 'remove' and to send again with 'replay'.")
    dump.add_argument("seq", nargs="*", type=int, metavar="SEQ", help="only these (default: all)")
    replay = _leaf(commands, "replay", cmd_notification_replay,
                   "send dumped notifications to their SM-DP+ again (HandleNotification)",
                   "Reads the JSON list 'notification dump' printed, from FILE or '-' for stdin. The card is not "
                   "involved: the notifications are sent as they were signed.")
    replay.add_argument("file", metavar="FILE")


def _register_reader(groups) -> None:
    commands = _group(groups, "reader", "PC/SC readers (lpac: driver apdu list)")
    _leaf(commands, "list", cmd_reader_list, "the PC/SC readers, with the index --reader N takes")


def _register_ci(groups) -> None:
    commands = _group(groups, "ci", "the CI certificates this LPA trusts for SM-DP+ TLS")
    _leaf(commands, "list", cmd_ci_list, "trusted CI certificates")
    add = _leaf(commands, "add", cmd_ci_add, "trust a CI certificate (DER or PEM) from now on")
    add.add_argument("file", metavar="FILE")



# --- errors in words ------------------------------------------------------------------------------

SERVER_SENTENCES = {
    status.MATCHING_ID_REFUSED: "the SM-DP+ has no download order for this matching ID and eUICC",
    status.EID_MISMATCH: "the download order is for another eUICC",
    status.EID_UNKNOWN: "the SM-DP+ knows no order for this eUICC",
    status.PROFILE_UNAVAILABLE: "the profile of this order is no longer available",
    status.DOWNLOAD_ORDER_EXPIRED: "the download order has expired",
    status.DOWNLOAD_ATTEMPTS_EXCEEDED: "this order has been tried too many times",
    status.CC_MISSING: "this order needs a confirmation code (-c CODE)",
    status.CC_REFUSED: "the confirmation code is wrong",
    status.CC_RETRIES_EXCEEDED: "too many wrong confirmation codes: the order is blocked",
    status.INVALID_SMDP_ADDRESS: "the SM-DP+ does not serve this address",
    status.CI_PK_UNKNOWN: "the SM-DP+ and this eUICC trust no CI in common",
    status.SECURITY_CONFIG_UNSUPPORTED: "the SM-DP+ supports none of this eUICC's CI keys",
    status.SVN_UNSUPPORTED: "the SM-DP+ does not support this eUICC's SGP.22 version",
    status.EUM_CERT_INVALID: "the SM-DP+ rejected the eUICC manufacturer's certificate",
    status.EUM_CERT_EXPIRED: "the eUICC manufacturer's certificate has expired",
    status.EUICC_CERT_INVALID: "the SM-DP+ rejected the eUICC's certificate",
    status.EUICC_CERT_EXPIRED: "the eUICC's certificate has expired",
    status.EUICC_SIGNATURE_INVALID: "the SM-DP+ could not verify the eUICC's signature",
    status.TRANSACTION_ID_UNKNOWN: "the SM-DP+ no longer knows this session (it may have timed out)",
    status.BPP_REBINDING_REFUSED: "the SM-DP+ refuses to bind the profile again",
    status.RPM_UNSUPPORTED: "this eUICC does not support remote profile management (SGP.22 v3 RPM)",
}
# (function or None for any, enum name) -> sentence
CARD_SENTENCES = {
    ("EnableProfile", "profileNotInDisabledState"): "the profile is already enabled",
    ("DisableProfile", "profileNotInEnabledState"): "the profile is not enabled",
    ("DeleteProfile", "profileNotInDisabledState"): "an enabled profile cannot be deleted: disable it first",
    (None, "iccidOrAidNotFound"): "the eUICC has no such profile",
    (None, "iccidNotFound"): "the eUICC has no such profile",
    (None, "disallowedByPolicy"): "the profile's policy rules forbid this",
    (None, "wrongProfileReenabling"): "this profile cannot be enabled again right now",
    (None, "catBusy"): "the card is busy (CAT): try again",
    (None, "nothingToDelete"): "there is nothing to delete",
    ("AuthenticateServer", "invalidCertificate"): "the eUICC rejected the SM-DP+ certificate",
    ("AuthenticateServer", "invalidSignature"): "the eUICC could not verify the SM-DP+ signature",
    ("AuthenticateServer", "ciPKUnknown"): "the eUICC does not trust the SM-DP+'s CI",
    ("AuthenticateServer", "euiccChallengeMismatch"): "the SM-DP+ answered another challenge",
    ("AuthenticateServer", "invalidOid"): "the SM-DP+ certificate carries the wrong OID",
    ("PrepareDownload", "invalidCertificate"): "the eUICC rejected the SM-DP+ binding certificate",
    ("PrepareDownload", "invalidSignature"): "the eUICC could not verify the SM-DP+ signature",
}


def humanize(error: KinsimError) -> KinsimError:
    """The same error with one sentence a person understands (codes kept for --json)."""
    if isinstance(error, StatusCodeError):
        sentence = SERVER_SENTENCES.get(error.code)
        if sentence is None:
            return error
        return StatusCodeError(error.code, f"{sentence} (SM-DP+: {error.message})", error.subject_identifier)
    if isinstance(error, Es10Error):
        sentence = CARD_SENTENCES.get((error.function, error.name)) or CARD_SENTENCES.get((None, error.name))
        if sentence is None:
            return error
        return Es10Error(error.function, error.code, error.name, sentence)
    return error


def _friendly(func: Callable) -> Callable:
    def handler(args) -> int:
        try:
            return func(args)
        except KinsimError as exc:
            raise humanize(exc) from exc

    return handler


# --- opening the card -------------------------------------------------------------------------------


def _config(args) -> LpaConfig:
    return load_config(args.config_dir, ci_certs=args.ci_cert, connect_to=args.connect_to, timeout=args.timeout,
                       isdr_aid=args.isdr_aid, block_size=args.block_size)


def _transport(args) -> CardTransport:
    chosen = [flag for flag, value in (("--euicc", args.euicc), ("--reader", args.reader), ("--card", args.card))
              if value is not None]
    if len(chosen) > 1:
        raise KinsimError(f"choose one card, not {' and '.join(chosen)}")
    if args.euicc:
        from euicc_sim.card import open_euicc

        euicc = open_euicc(args.euicc)
        return SimCardTransport(euicc.card, on_close=euicc.close)
    if args.reader is not None:
        from lpa.pcsc import open_reader

        return open_reader(args.reader)
    if args.card is not None:
        from lpa.tcp import TcpCardTransport

        return TcpCardTransport(args.card)
    raise KinsimError("no card chosen: give --euicc DIR (software eUICC), --reader N|NAME (PC/SC) "
                      "or --card tcp:HOST:PORT (a software eUICC served with 'kinsim euicc serve --transport tcp')")


def _print_exchange(exchange: ApduExchange) -> None:
    print(f">> {exchange.command.hex().upper()}", file=sys.stderr)
    print(f"<< {exchange.data.hex().upper()} {exchange.sw:04X}  ({exchange.seconds * 1000:.1f} ms)", file=sys.stderr)


@contextmanager
def card_session(args, config: LpaConfig) -> Iterator[tuple[Es10Client, Counters]]:
    """The ES10 client on the chosen card, its channel open; counts what the command cost."""
    transport = _transport(args)
    try:
        es10 = Es10Client(transport, aid=config.isdr_aid, block_size=config.block_size,
                          trace=_print_exchange if args.trace else None)
        with es10.measure() as counters, es10:
            yield es10, counters
        if args.trace:
            print(f"[card] {counters.apdus} APDUs, {counters.bytes_sent} bytes sent, "
                  f"{counters.bytes_received} received, {counters.seconds:.3f} s", file=sys.stderr)
    finally:
        transport.close()


def _trusted_cis(config: LpaConfig) -> list[x509.Certificate]:
    return config.trusted_cis() if config.ci_files else []


# --- chip ---------------------------------------------------------------------------------------------


def cmd_chip_info(args) -> int:
    config = _config(args)
    with card_session(args, config) as (es10, _):
        info = manage.chip_info(es10, _trusted_cis(config))
    emit(args, info, _chip_text)
    return 0


def _chip_text(info: dict) -> str:
    e = info["euiccInfo2"]
    resources = e["extCardResource"]

    def keys(name: str) -> str:
        return ", ".join(k["pkid"] + (" (trusted)" if k["trustedByLpa"] else "") for k in e[name]) or "-"

    pairs = [
        ("EID", info["eid"]),
        ("Default SM-DP+", info["defaultDpAddress"]),
        ("Root SM-DS", info["rootDsAddress"]),
        ("SGP.22 version", e["svn"]),
        ("Profile package version", e["profileVersion"]),
        ("Firmware version", e["euiccFirmwareVer"]),
        ("GlobalPlatform version", e["globalplatformVersion"]),
        ("Java Card version", e["javacardVersion"]),
        ("Protection profile", e["ppVersion"]),
        ("SAS accreditation", e["sasAcreditationNumber"]),
        ("Category", e["euiccCategory"]),
        ("Installed applications", resources.get("installedApplications")),
        ("Free non-volatile memory", _bytes_text(resources.get("freeNonVolatileMemory"))),
        ("Free volatile memory", _bytes_text(resources.get("freeVolatileMemory"))),
        ("RSP capabilities", ", ".join(e["rspCapability"])),
        ("UICC capabilities", ", ".join(e["uiccCapability"])),
        ("Forbidden policy rules", ", ".join(e["forbiddenProfilePolicyRules"])),
        ("CI keys (verification)", keys("euiccCiPKIdListForVerification")),
        ("CI keys (signing)", keys("euiccCiPKIdListForSigning")),
        ("Certification data", ", ".join(f"{k} {v}" for k, v in (e["certificationDataObject"] or {}).items())),
    ]
    rat = info["rulesAuthorisationTable"]
    pairs.append(("Policy rules allowed (RAT)", "; ".join(_rat_rule_text(r) for r in rat) if rat else "-"))
    return key_values(pairs)


def _bytes_text(value) -> str | None:
    return f"{value} bytes" if isinstance(value, int) else value


def _operator_text(operator: dict) -> str:
    """MCC/MNC with 'E' wildcard digits (SGP.22 RAT) shown as '*'; all wildcards as 'any operator'."""
    text = f"{operator['mcc']}/{operator['mnc']}".replace("E", "*")
    return "any operator" if set(text) <= {"*", "/"} else text


def _rat_rule_text(rule: dict) -> str:
    operators = ", ".join(_operator_text(op) for op in rule["allowedOperators"]) or "nobody"
    flags = " (consent required)" if "consentRequired" in rule["pprFlags"] else ""
    return f"{'+'.join(rule['pprIds'])} for {operators}{flags}"


def cmd_default_dp_address(args) -> int:
    if args.action == "set" and not args.address:
        raise KinsimError("'set' needs the address: kinsim lpa chip default-dp-address set ADDR")
    if args.action != "set" and args.address:
        raise KinsimError(f"unexpected address {args.address!r}: use 'set ADDR'")
    config = _config(args)
    with card_session(args, config) as (es10, _):
        if args.action != "show":
            es10.set_default_dp_address(args.address if args.action == "set" else "")
        default, root = es10.get_euicc_configured_addresses()
    value = {"defaultDpAddress": default, "rootDsAddress": root}
    emit(args, value, key_values([("Default SM-DP+", default), ("Root SM-DS", root)]))
    return 0


def cmd_chip_purge(args) -> int:
    if not args.yes:
        raise KinsimError("purge deletes every profile on the eUICC: add --yes if that is what you want")
    options = set(RESET_OPTIONS) | ({"resetDefaultSmdpAddress"} if args.reset_default_dp_address else set())
    return _run_operation(args, lambda es10, peers: manage.memory_reset(es10, peers, options))


# --- profiles --------------------------------------------------------------------------------------------


def cmd_profile_list(args) -> int:
    with card_session(args, _config(args)) as (es10, _):
        profiles = manage.list_profiles(es10)
    rows = [(p.iccid, p.state, p.profile_class, p.service_provider_name, p.profile_name, p.nickname, p.isdp_aid)
            for p in profiles]
    human = table(rows, ["ICCID", "State", "Class", "Provider", "Name", "Nickname", "ISD-P AID"]) if rows \
        else "No profiles installed."
    emit(args, [p.as_dict() for p in profiles], human)
    return 0


def cmd_profile_enable(args) -> int:
    ref = ProfileRef.parse(args.profile)
    return _run_operation(args, lambda es10, peers: manage.enable_profile(es10, peers, ref, args.refresh))


def cmd_profile_disable(args) -> int:
    ref = ProfileRef.parse(args.profile)
    return _run_operation(args, lambda es10, peers: manage.disable_profile(es10, peers, ref, args.refresh))


def cmd_profile_delete(args) -> int:
    ref = ProfileRef.parse(args.profile)
    return _run_operation(args, lambda es10, peers: manage.delete_profile(es10, peers, ref))


def _run_operation(args, operation) -> int:
    """A management operation on the card, then notification processing with the configured trust."""
    config = _config(args)
    with card_session(args, config) as (es10, _):
        result = asyncio.run(_with_pool(config, lambda pool: operation(es10, pool)))
    past = {"enable": "enabled", "disable": "disabled", "delete": "deleted", "memory reset": "reset"}
    headline = f"Profile {result.profile} {past.get(result.action, result.action)}." \
        if result.action != "memory reset" else f"eUICC memory reset ({result.profile})."
    emit(args, result.as_dict(), "\n".join([headline, *_delivery_lines(result.notifications)]))
    return 0


async def _with_pool(config: LpaConfig, work):
    if not config.ci_files:  # nothing can be delivered without trust; the notifications stay on the card
        return await work(_untrusted_peer)
    async with config.es9_pool() as pool:
        return await work(pool)


class _NoTrustPeer:
    async def handle_notification(self, *, pending_notification) -> None:
        raise KinsimError("no trusted CI certificate is configured, so no SM-DP+ can be reached "
                          "(kinsim lpa ci add FILE)")


def _untrusted_peer(address: str) -> _NoTrustPeer:
    return _NoTrustPeer()


def _delivery_lines(deliveries: list[Delivery]) -> list[str]:
    lines = []
    for d in deliveries:
        n = d.notification
        if d.removed:
            lines.append(f"Notification {n.seq_number} ({n.operation}) sent to {n.address}.")
        elif d.delivered:
            lines.append(f"Notification {n.seq_number} ({n.operation}) sent to {n.address}; not removed: {d.error}")
        else:
            lines.append(f"Notification {n.seq_number} ({n.operation}) kept on the card for later: {d.error}")
    return lines


def cmd_profile_nickname(args) -> int:
    iccid = validate_iccid(args.iccid)
    with card_session(args, _config(args)) as (es10, _):
        manage.set_nickname(es10, iccid, args.nickname)
    emit(args, {"iccid": iccid, "profileNickname": args.nickname},
         f"Nickname of {iccid} set to {args.nickname!r}." if args.nickname else f"Nickname of {iccid} cleared.")
    return 0


def cmd_profile_download(args) -> int:
    target = _requested_target(args)  # like the trust and the IMEI, checked before the card is touched
    config = _config(args)
    config.trusted_cis()
    if args.imei:
        config = _with_imei(config, args.imei)
    with card_session(args, config) as (es10, counters):
        address, matching_id, oid, cc_required = target or _default_target(args, es10)
        result = asyncio.run(_download(args, config, es10, address, matching_id, oid, cc_required))
    value = {**result.as_dict(), "smdpAddress": address, "card": counters.as_dict()}
    names = ": ".join(n for n in (result.metadata.service_provider_name, result.metadata.profile_name) if n)
    lines = [f"Installed profile {result.iccid}{f' ({names})' if names else ''} in ISD-P {result.isdp_aid}.",
             f"Card: {counters.apdus} APDUs, {counters.bytes_sent} bytes sent, {counters.seconds:.2f} s.",
             *_delivery_lines(result.notifications)]
    emit(args, value, "\n".join(lines))
    return 0


def _with_imei(config: LpaConfig, imei: str) -> LpaConfig:
    digits = imei.strip()
    if not digits.isdigit() or len(digits) not in (15, 16):
        raise KinsimError(f"an IMEI is 15 or 16 digits, got {imei!r}")
    packed = bytes.fromhex(digits.ljust(16, "F"))
    return replace(config, device=replace(config.device, imei=packed))


DownloadTarget = tuple[str, str, str | None, bool]  # SM-DP+ address, matching ID, SM-DP+ OID, CC required


def _requested_target(args) -> DownloadTarget | None:
    """What -a or --smdp ask for; None when the card's default SM-DP+ address is to be used."""
    if args.activation_code:
        if args.matching_id is not None:
            raise KinsimError("the activation code carries the matching ID: give -a or -m, not both")
        code = parse_activation_code(args.activation_code.strip())
        return code.smdp_address, code.matching_id, code.smdp_oid, code.cc_required
    if args.smdp:
        return args.smdp, args.matching_id or "", None, False
    return None


def _default_target(args, es10: Es10Client) -> DownloadTarget:
    default, _ = es10.get_euicc_configured_addresses()
    if not default:
        raise KinsimError("no activation code or --smdp given, and the eUICC has no default SM-DP+ address")
    return default, args.matching_id or "", None, False


async def _download(args, config: LpaConfig, es10: Es10Client, address: str, matching_id: str, oid: str | None,
                    cc_required: bool):
    interactive = sys.stdin.isatty() and not getattr(args, "json", False)
    if cc_required and not args.confirmation_code and not interactive:
        raise KinsimError("this activation code needs a confirmation code: pass -c CODE")
    bar = _progress_bar(args)
    async with config.es9_pool() as pool:
        try:
            return await download_profile(
                es10, pool(address), smdp_address=address, matching_id=matching_id, smdp_oid=oid,
                device=config.device, confirm=None if args.yes else _confirm_prompt(interactive),
                confirmation_code=_code_source(args.confirmation_code, interactive),
                progress=bar.update_to if bar else None, peers=pool)
        finally:
            if bar:
                bar.close()


def _confirm_prompt(interactive: bool):
    def confirm(metadata: ProfileMetadata) -> bool:
        if not interactive:
            raise DownloadPostponed("the download needs your confirmation: run it in a terminal or add --yes")
        print(key_values(manage.metadata_summary(metadata)), file=sys.stderr)
        try:
            answer = input("Download and install this profile? [y/N] ")
        except EOFError:
            answer = ""
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _code_source(code: str | None, interactive: bool):
    def confirmation_code() -> str | None:
        if code:
            return code
        if not interactive:
            return None
        try:
            return getpass.getpass("Confirmation code: ")
        except EOFError:
            return None

    return confirmation_code


class _Bar:
    def __init__(self, bar):
        self._bar = bar

    def update_to(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(args) -> _Bar | None:
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return _Bar(tqdm(total=0, unit="B", unit_scale=True, desc="Installing", file=sys.stderr, leave=False))


def cmd_profile_discovery(args) -> int:
    from lpa.discovery import Es11Client, discover_events, root_smds_address

    config = _config(args)
    if args.imei:
        config = _with_imei(config, args.imei)
    context = config.ssl_context()
    if args.download:
        return _discovery_download(args, config, context)
    with card_session(args, config) as (es10, _):
        address = args.smds or root_smds_address(es10)

        async def discover():
            async with Es11Client(address, context, connect_to=config.connect_to, timeout=config.timeout) as es11:
                return await discover_events(es10, es11, smds_address=address, device=config.device)

        found = asyncio.run(discover())
    rows = [(e.event_id, e.rsp_server_address) for e in found.events]
    human = table(rows, ["Event ID (matching ID)", "SM-DP+"]) + "\nDownload one with: kinsim lpa profile download " \
        "--smdp SM-DP+ -m 'EVENT ID'" if rows else f"No events for this eUICC at {address}."
    emit(args, found.as_dict(), human)
    return 0


def _discovery_download(args, config: LpaConfig, context) -> int:
    """The next contact: every event at its SM-DP+ (download or v3 RPM), see lpa.rpm.next_contact."""
    from lpa.discovery import Es11Client, root_smds_address
    from lpa.rpm import RpmResult, next_contact

    interactive = sys.stdin.isatty() and not getattr(args, "json", False)
    with card_session(args, config) as (es10, _):
        address = args.smds or root_smds_address(es10)

        async def contact():
            async with Es11Client(address, context, connect_to=config.connect_to, timeout=config.timeout) as es11, \
                    config.es9_pool() as pool:
                return await next_contact(es10, es11, pool, smds_address=address, device=config.device,
                                          confirm=None if args.yes else _confirm_prompt(interactive),
                                          confirmation_code=_code_source(args.confirmation_code, interactive))

        outcomes = asyncio.run(contact())
    lines = [] if outcomes else [f"No events for this eUICC at {address}."]
    for outcome in outcomes:
        where = f"Event {outcome.event.event_id} at {outcome.event.rsp_server_address}"
        if outcome.error is not None:
            lines.append(f"{where}: failed: {humanize(outcome.error)}")
        elif isinstance(outcome.result, RpmResult):
            done = ", ".join(f"{o.result.removesuffix('Result')} {o.iccid}: {'ok' if o.ok else o.code}"
                             for o in outcome.result.outcomes) or outcome.result.error or "nothing"
            lines += [f"{where}: remote management by the SM-DP+: {done}.",
                      *_delivery_lines(list(outcome.result.notifications))]
        else:
            lines += [f"{where}: installed profile {outcome.result.iccid} in ISD-P {outcome.result.isdp_aid}.",
                      *_delivery_lines(outcome.result.notifications)]
    emit(args, [o.as_dict() for o in outcomes], "\n".join(lines))
    return 0 if all(o.error is None for o in outcomes) else 1


# --- notifications -----------------------------------------------------------------------------------------


def cmd_notification_list(args) -> int:
    with card_session(args, _config(args)) as (es10, _):
        notifications = list_notifications(es10)
    rows = [(n.seq_number, n.operation, n.iccid, n.address) for n in notifications]
    human = table(rows, ["Seq", "Operation", "ICCID", "Address"]) if rows else "No pending notifications."
    emit(args, [n.as_dict() for n in notifications], human)
    return 0


def cmd_notification_process(args) -> int:
    if args.all and args.seq:
        raise KinsimError("give sequence numbers or --all, not both")
    config = _config(args)
    config.trusted_cis()
    with card_session(args, config) as (es10, _):
        deliveries = asyncio.run(_with_pool(config, lambda pool: process_notifications(
            es10, pool, seq_numbers=args.seq or None)))
    rows = [(d.notification.seq_number, d.notification.operation, d.notification.address,
             "sent, removed" if d.removed else ("sent" if d.delivered else "kept"), d.error) for d in deliveries]
    human = table(rows, ["Seq", "Operation", "Address", "Result", "Error"]) if rows else "No pending notifications."
    emit(args, [d.as_dict() for d in deliveries], human)
    return 0 if all(d.delivered for d in deliveries) else 1


def cmd_notification_dump(args) -> int:
    with card_session(args, _config(args)) as (es10, _):
        dumped = dump_notifications(es10, args.seq or None)
    print_json(dumped)  # always JSON: the dump is meant to be kept as a file
    return 0


def cmd_notification_replay(args) -> int:
    pending = [load_dumped(entry) for entry in _read_dump(args.file)]
    config = _config(args)
    deliveries = asyncio.run(_with_pool(config, lambda pool: replay_notifications(pool, pending)))
    rows = [(d.notification.seq_number, d.notification.operation, d.notification.address,
             "sent" if d.delivered else "failed", d.error) for d in deliveries]
    human = table(rows, ["Seq", "Operation", "Address", "Result", "Error"]) if rows else "Nothing to replay."
    emit(args, [d.as_dict() for d in deliveries], human)
    return 0 if all(d.delivered for d in deliveries) else 1


def _read_dump(path: str) -> list:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except OSError as exc:
        raise KinsimError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DecodeError(f"{path} is not a notification dump (not UTF-8 text)") from None
    try:
        dumped = json.loads(text)
    except ValueError as exc:
        raise DecodeError(f"{path} is not a notification dump (JSON): {exc}") from None
    if not isinstance(dumped, list):
        raise DecodeError(f"{path} is not a notification dump: expected the JSON list 'notification dump' prints")
    return dumped


def cmd_notification_remove(args) -> int:
    if bool(args.all) == bool(args.seq):
        raise KinsimError("give the sequence numbers to remove, or --all")
    with card_session(args, _config(args)) as (es10, _):
        numbers = [n.seq_number for n in list_notifications(es10)] if args.all else args.seq
        removed = remove_notifications(es10, numbers)
    emit(args, {"removed": removed},
         f"Removed notification{'s' if len(removed) != 1 else ''} {', '.join(map(str, removed))}." if removed
         else "No pending notifications.")
    return 0


# --- readers ---------------------------------------------------------------------------------------------


def cmd_reader_list(args) -> int:
    from lpa.pcsc import list_readers

    readers = [{"index": index, "name": name} for index, name in enumerate(list_readers())]
    human = table([(r["index"], r["name"]) for r in readers], ["Index", "Reader"]) if readers \
        else "No PC/SC reader (plug one in, or 'scripts/pcscd-setup start' for the virtual reader)."
    emit(args, readers, human)
    return 0


# --- trusted CIs -----------------------------------------------------------------------------------------


def cmd_ci_list(args) -> int:
    config = _config(args)
    rows = []
    for path, cert in zip(config.ci_files, _trusted_cis(config), strict=True):
        rows.append({"file": str(path), "subject": cert.subject.rfc4514_string(), "pkid": pkid(cert).hex().upper(),
                     "notAfter": cert.not_valid_after_utc.isoformat()})
    human = table([(r["subject"], r["pkid"], r["notAfter"][:10], r["file"]) for r in rows],
                  ["Subject", "PKId", "Valid until", "File"]) if rows else \
        f"No trusted CI certificate (add one with 'kinsim lpa ci add FILE'; kept in {config.directory / 'ci'})."
    emit(args, rows, human)
    return 0


def cmd_ci_add(args) -> int:
    config = _config(args)
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise KinsimError(f"cannot read {args.file}: {exc.strerror}") from None
    path = add_trusted_ci(config.directory, data, datetime.now(UTC))
    cert = load_certificate(data)
    emit(args, {"file": str(path), "pkid": pkid(cert).hex().upper()},
         f"Trusting CI {cert.subject.rfc4514_string()} (PKId {pkid(cert).hex().upper()}), stored in {path}.")
    return 0
