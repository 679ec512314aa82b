"""``kinsim euicc``: create a software eUICC directory, show it, reset it, serve it to a transport.

Transports (vpcd for pcscd, lpac's stdio driver, ...) plug into ``serve`` by adding themselves to
``TRANSPORTS``: ``name -> function(euicc, args) -> exit code``, where ``euicc`` is the open
``SoftEuicc`` and ``args`` the parsed command line (``--address``, ``--option KEY=VALUE``).
Modules named in ``TRANSPORT_MODULES`` are imported first so they can call ``register_transport``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from euicc_sim.card import SoftEuicc, create_euicc, open_euicc
from euicc_sim.identity import (
    EuiccConfig,
    issue_identity,
    load_extra_cis,
    pki_eum,
    sgp26_eum,
    sgp26_identity,
)
from kinsim.output import command_group, emit, json_parent, key_values, table
from rsp.errors import DecodeError, KinsimError
from rsp.ids import validate_eid

Transport = Callable[[SoftEuicc, argparse.Namespace], int]
TRANSPORTS: dict[str, Transport] = {}
# Modules that register transports when imported; missing ones are skipped.
TRANSPORT_MODULES: tuple[str, ...] = ("euicc_sim.vpcd", "euicc_sim.lpac_stdio", "euicc_sim.tcp")


def register_transport(name: str, serve: Transport) -> None:
    TRANSPORTS[name] = serve


def register(subparsers, name: str, help_text: str) -> None:
    commands = command_group(subparsers, name, help_text)

    create = commands.add_parser(
        "create",
        parents=[json_parent()],
        help="make a new software eUICC in DIR",
        description="A new eUICC: a fresh key certified by an EUM (the SGP.26 test EUM of --curve, or the "
        "EUM of --pki), or with --sgp26 the SGP.26 test eUICC itself. Capabilities go in EUICCInfo2.",
    )
    create.add_argument("directory", metavar="DIR")
    who = create.add_mutually_exclusive_group()
    who.add_argument(
        "--eid", type=_eid, help="EID (32 digits, SGP.29 check digits; default: random in the EUM's EIN)"
    )
    who.add_argument("--sgp26", choices=("nist", "brp"), help="use the SGP.26 test eUICC (its published key)")
    create.add_argument(
        "--pki", metavar="PKIDIR", help="certify with the EUM of a 'kinsim certs generate' PKI"
    )
    create.add_argument("--curve", choices=("nist", "brp"), default="nist", help="EUM curve (default nist)")
    create.add_argument(
        "--trust-ci",
        action="append",
        default=[],
        metavar="CERT",
        help="another CI certificate to trust for verification (repeatable)",
    )
    create.add_argument("--default-smdp", metavar="ADDR", help="default SM-DP+ address (ES10a)")
    create.add_argument("--root-smds", metavar="ADDR", help="root SM-DS address (default lpa.ds.gsma.com)")
    create.add_argument(
        "--free-memory", type=int, metavar="BYTES", help="memory for profiles (default 2 MiB)"
    )
    create.add_argument("--svn", metavar="X.Y.Z", help="declared SGP.22 version (default 2.5.0)")
    create.add_argument("--no-test-profiles", action="store_true", help="do not declare testProfileSupport")
    create.add_argument(
        "--forbid-ppr",
        action="append",
        default=[],
        choices=("ppr1", "ppr2"),
        help="declare a profile policy rule forbidden (repeatable)",
    )
    create.add_argument(
        "--config", metavar="JSON", help="file with any EuiccConfig fields (see euicc_sim.identity)"
    )
    create.set_defaults(func=cmd_create)

    show = commands.add_parser(
        "show", parents=[json_parent()], help="EID, profiles, notifications, free memory"
    )
    show.add_argument("directory", metavar="DIR")
    show.set_defaults(func=cmd_show)

    reset = commands.add_parser(
        "reset",
        parents=[json_parent()],
        help="delete every profile and pending notification",
        description="Back to the state after 'create': all profiles (any class, regardless of PPRs) and "
        "pending notifications deleted, default SM-DP+ address restored. Counters keep counting.",
    )
    reset.add_argument("directory", metavar="DIR")
    reset.set_defaults(func=cmd_reset)

    serve = commands.add_parser(
        "serve",
        parents=[json_parent()],
        help="offer the card to a reader transport until stopped",
        description="Serve the card until Ctrl-C (or SIGTERM). The tcp transport prints its address on stdout "
        "('listening tcp:HOST:PORT', or one JSON line with --json) for 'kinsim lpa --card'.",
    )
    serve.add_argument("directory", metavar="DIR")
    serve.add_argument("--transport", required=True, metavar="NAME", help="one of the registered transports")
    serve.add_argument("--address", help="where the transport listens or connects (transport-specific)")
    serve.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="transport option")
    serve.set_defaults(func=cmd_serve)



def _eid(text: str) -> str:
    try:
        return validate_eid(text)
    except KinsimError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- create -----------------------------------------------------------------------------------


def _config(args) -> EuiccConfig:
    config = EuiccConfig()
    if args.config:
        try:
            config = EuiccConfig.from_json(json.loads(Path(args.config).read_text()))
        except (OSError, ValueError) as exc:
            raise KinsimError(f"cannot read the configuration {args.config}: {exc}") from None
    changes = {}
    if args.default_smdp is not None:
        changes["default_dp_address"] = args.default_smdp
    if args.root_smds is not None:
        changes["root_ds_address"] = args.root_smds
    if args.free_memory is not None:
        changes["memory"] = args.free_memory
    if args.svn is not None:
        changes["svn"] = args.svn
    if args.no_test_profiles:
        changes["rsp_capabilities"] = tuple(c for c in config.rsp_capabilities if c != "testProfileSupport")
    if args.forbid_ppr:
        changes["forbidden_pprs"] = tuple(sorted(set(config.forbidden_pprs) | set(args.forbid_ppr)))
    try:
        return replace(config, **changes)
    except TypeError as exc:
        raise DecodeError(str(exc)) from None


def cmd_create(args) -> int:
    config = _config(args)
    extra = load_extra_cis(args.trust_ci)
    if args.sgp26:
        identity = sgp26_identity(args.sgp26, config=config)
    else:
        eum, cis = pki_eum(args.pki, args.curve) if args.pki else sgp26_eum(args.curve)
        identity = issue_identity(eum, cis, eid=args.eid, config=config)
    if extra:
        identity = replace(identity, cis=(*identity.cis, *extra))
    identity.check(datetime.now(UTC))
    create_euicc(args.directory, identity)
    result = {
        "directory": args.directory,
        "eid": identity.eid,
        "ciPkids": identity.verification_pkids,
        "freeMemory": config.memory,
    }
    emit(
        args,
        result,
        lambda r: key_values(
            [
                ("directory", r["directory"]),
                ("EID", r["eid"]),
                ("trusted CIs", ", ".join(p.hex() for p in r["ciPkids"])),
                ("free memory", r["freeMemory"]),
            ]
        ),
    )
    return 0


# --- show / reset -----------------------------------------------------------------------------


def describe(euicc: SoftEuicc) -> dict:
    """What ``show`` prints: identity, addresses, memory, profiles, pending notifications."""
    state = euicc.isdr.state
    config = euicc.identity.config
    return {
        "eid": euicc.eid,
        "svn": config.svn,
        "freeMemory": euicc.isdr.free_memory(),
        "defaultDpAddress": state.default_dp_address,
        "rootDsAddress": config.root_ds_address,
        "profiles": [
            {
                "iccid": p.iccid,
                "isdpAid": p.aid.hex().upper(),
                "profileState": "enabled" if p.enabled else "disabled",
                "profileNickname": p.nickname or None,
                "serviceProviderName": p.service_provider,
                "profileName": p.name,
                "profileClass": p.profile_class,
                "size": p.size,
            }
            for p in state.profiles
        ],
        "notifications": [
            {
                "seqNumber": n.seq,
                "profileManagementOperation": n.operation,
                "notificationAddress": n.address,
                "iccid": n.iccid,
            }
            for n in state.notifications
        ],
    }


def _describe_text(info: dict) -> str:
    head = key_values(
        [
            ("EID", info["eid"]),
            ("SGP.22 version", info["svn"]),
            ("free memory", f"{info['freeMemory']} bytes"),
            ("default SM-DP+", info["defaultDpAddress"]),
            ("root SM-DS", info["rootDsAddress"]),
        ]
    )
    profiles = table(
        [
            (
                p["iccid"],
                p["profileState"],
                p["profileClass"],
                p["serviceProviderName"],
                p["profileName"],
                p["profileNickname"],
                p["isdpAid"],
            )
            for p in info["profiles"]
        ],
        ("ICCID", "state", "class", "provider", "name", "nickname", "ISD-P AID"),
    )
    notifications = table(
        [
            (n["seqNumber"], n["profileManagementOperation"], n["notificationAddress"], n["iccid"])
            for n in info["notifications"]
        ],
        ("seq", "operation", "address", "ICCID"),
    )
    return f"{head}\n\nprofiles\n{profiles}\n\npending notifications\n{notifications}"


def cmd_show(args) -> int:
    with open_euicc(args.directory, power_on=False) as euicc:
        emit(args, describe(euicc), _describe_text)
    return 0


def cmd_reset(args) -> int:
    with open_euicc(args.directory, power_on=False) as euicc:
        removed = len(euicc.isdr.state.profiles)
        euicc.isdr.factory_reset()
        emit(
            args,
            {"eid": euicc.eid, "profilesDeleted": removed},
            f"eUICC {euicc.eid}: {removed} profile(s) and every pending notification deleted",
        )
    return 0


# --- serve ------------------------------------------------------------------------------------


def _load_transports() -> None:
    for module in TRANSPORT_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def cmd_serve(args) -> int:
    _load_transports()
    serve = TRANSPORTS.get(args.transport)
    if serve is None:
        known = ", ".join(sorted(TRANSPORTS)) or "none registered yet"
        raise KinsimError(f"unknown transport {args.transport!r} (available: {known})")
    for option in args.option:
        if "=" not in option:
            raise KinsimError(f"--option takes KEY=VALUE, got {option!r}")
    # Ctrl-C and SIGTERM both end serving the way the transports expect (KeyboardInterrupt), also when
    # a shell started us in the background with SIGINT ignored: the card is powered off and unlocked.
    previous = {signum: signal.signal(signum, signal.default_int_handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open_euicc(args.directory) as euicc:
            return serve(euicc, args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
