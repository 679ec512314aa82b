"""``kinsim smdp``: run the SM-DP+ and manage its inventory and orders.

    kinsim smdp serve --state DIR --pki DIR [--pki DIR2] [--host H] [--port N]
                      [--es2-port N --es2-client-ca OPERATOR_CA.pem] [--operator ID=https://host:port]
    kinsim smdp profile add FILE... --state DIR [--type NAME --spn TEXT --profile-name TEXT --class C]
    kinsim smdp profile list --state DIR
    kinsim smdp order create --state DIR (--iccid ICCID | --profile-type NAME) [--eid EID]
                             [--matching-id ID] [--cc CODE] [--release]
    kinsim smdp order list|release|cancel --state DIR ...

ES2+ (operators) is served only with ``--es2-port``; it requires a TLS client certificate issued by
the CA in ``--es2-client-ca`` (PEM or DER; several PEM certificates may be concatenated), and the
operator is the certificate's CN, which must equal the functionRequesterIdentifier of its requests.
``--operator ID=URL`` sends that operator's HandleDownloadProgressInfo callbacks to URL (its ES2+
base URL), authenticating with CERT.DPtls and verifying the operator's server against
``--callback-ca`` (default: the ES2+ client CA).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from kinsim.output import command_group, emit, json_parent, key_values, port_number, table
from rsp.activation import ActivationCode, ActivationCodeError
from rsp.errors import DecodeError, KinsimError
from smdp.config import (
    DEFAULT_MAX_CC_ATTEMPTS,
    DEFAULT_MAX_DOWNLOAD_ATTEMPTS,
    DEFAULT_SESSION_TIMEOUT,
    ConfigError,
    SmdpConfig,
)
from smdp.orders import ORDER_STATES, Orders, OrderSettings, describe_profiles, import_profile
from smdp.store import ProfileState, ProfileType, Store

PROFILE_CLASSES = ("test", "provisioning", "operational")
PPR_NAMES = ("pprUpdateControl", "ppr1", "ppr2")


def register(subparsers, name: str, help_text: str) -> None:
    commands = command_group(subparsers, name, help_text, "Run the SM-DP+ and manage its inventory and orders.")
    as_json = json_parent()
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state", required=True, metavar="DIR", help="state directory (smdp.sqlite inside)")
    _register_serve(commands, [as_json, state])
    _register_profile(commands, [as_json, state])
    _register_order(commands, [as_json, state])


# --- serve ----------------------------------------------------------------------------------------


def _register_serve(commands, parents) -> None:
    serve = commands.add_parser(
        "serve", parents=parents, help="serve ES9+ (and ES2+) over HTTPS",
        description="Serve ES9+ over HTTPS with CERT.DPtls; with --es2-port also ES2+ for operators "
                    "(client certificates from --es2-client-ca). Port 0 picks a free port; the URLs "
                    "are printed one per line ('ES9+ https://...'), or as one JSON line with --json.")
    serve.add_argument("--pki", action="append", required=True, metavar="DIR",
                       help="a 'kinsim certs generate' directory; repeat for several CIs (the first serves TLS)")
    serve.add_argument("--address", help="the SM-DP+ address (default: the DPtls certificate's DNS name)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8443, help="ES9+ port (default 8443, 0 = any free port)")
    serve.add_argument("--es2-port", type=port_number, metavar="PORT", help="ES2+ port (0 = any free port); off when absent")
    serve.add_argument("--es2-client-ca", type=Path, metavar="FILE",
                       help="CA (PEM or DER) that issues the operators' ES2+ client certificates; a certificate's "
                            "CN is that operator's functionRequesterIdentifier")
    serve.add_argument("--operator", action="append", default=[], metavar="ID=URL",
                       help="HandleDownloadProgressInfo base URL for operator ID (the client certificate CN)")
    serve.add_argument("--callback-ca", type=Path, metavar="FILE", help="trust anchor for operator callback servers")
    serve.add_argument("--trusted-ci", action="append", default=[], metavar="FILE",
                       help="another CI certificate whose eUICCs are accepted")
    serve.add_argument("--session-timeout", type=float, default=DEFAULT_SESSION_TIMEOUT.total_seconds(),
                       metavar="SECONDS", help="RSP session timeout between steps (default %(default)s)")
    serve.add_argument("--max-cc-attempts", type=int, default=DEFAULT_MAX_CC_ATTEMPTS, metavar="N",
                       help="wrong confirmation codes before an order is blocked (default %(default)s)")
    serve.add_argument("--max-download-attempts", type=int, default=DEFAULT_MAX_DOWNLOAD_ATTEMPTS, metavar="N",
                       help="download attempts per order (default %(default)s)")
    serve.add_argument("--order-ttl", type=float, metavar="SECONDS", help="lifetime of new download orders")
    serve.set_defaults(func=cmd_serve)


def _operators(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        requester, sep, url = pair.partition("=")
        if not sep or not requester or not url.startswith("https://"):
            raise ConfigError(f"--operator takes ID=https://host:port, got {pair!r}")
        out[requester] = url
    return out


def cmd_serve(args) -> int:
    from smdp.core import SmdpCore  # the server stack is only needed here

    if args.es2_port is not None and args.es2_client_ca is None:
        raise ConfigError("--es2-port needs --es2-client-ca (the CA that issues operator client certificates)")
    config = SmdpConfig.from_pki(
        args.pki, address=args.address, extra_cis=args.trusted_ci,
        session_timeout=timedelta(seconds=args.session_timeout), max_cc_attempts=args.max_cc_attempts,
        max_download_attempts=args.max_download_attempts,
        order_ttl=timedelta(seconds=args.order_ttl) if args.order_ttl else None,
        operators=_operators(args.operator), es2_client_ca=args.es2_client_ca, callback_ca=args.callback_ca)
    return asyncio.run(_serve(SmdpCore(config, Store.open(args.state)), args))


async def _serve(core, args) -> int:
    from smdp.server import SmdpServer

    server = SmdpServer(core)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before the URLs are printed: a parent may stop us at once
        loop.add_signal_handler(signum, stop.set)
    try:
        urls = await server.start(args.host, args.port, args.es2_port)
    except OSError as exc:
        await server.stop()
        core.store.close()
        raise ConfigError(f"cannot listen on {args.host}: {exc.strerror or exc}") from None
    if args.address is None:
        _address_with_port(core, urls["es9"])
    with core.store.transaction():  # once serving, so 'order create' can print activation codes
        core.store.set_meta("address", core.config.address)
        core.store.set_meta("smdp_oid", core.config.smdp_oid)
    info = {"address": core.config.address, "smdpOid": core.config.smdp_oid, **urls}
    if getattr(args, "json", False):
        print(json.dumps(info), flush=True)
    else:
        print(f"SM-DP+ {info['address']} (OID {info['smdpOid']})")
        for name, url in urls.items():
            print(f"{'ES9+' if name == 'es9' else 'ES2+'} {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        core.store.close()
    return 0


def _address_with_port(core, es9_url: str) -> None:
    """On a port other than 443 the address LPAs must use (and activation codes carry) is HOST:PORT."""
    port = urlsplit(es9_url).port
    if port and port != 443 and ":" not in core.config.address:
        core.serve_at(f"{core.config.address}:{port}")


# --- profile --------------------------------------------------------------------------------------


def _register_profile(commands, parents) -> None:
    sub = command_group(commands, "profile", "the inventory of SAIP profile packages")
    add = sub.add_parser("add", parents=parents, help="add SAIP profile packages (DER) as Available")
    add.add_argument("files", nargs="+", metavar="FILE")
    add.add_argument("--type", help="profile type (default: the package header's profileType, else 'default')")
    add.add_argument("--spn", help="service provider name of the type (profile metadata)")
    add.add_argument("--profile-name", help="profile name of the type (profile metadata)")
    add.add_argument("--class", dest="profile_class", choices=PROFILE_CLASSES, help="profile class of the type")
    add.add_argument("--ppr", action="append", choices=PPR_NAMES, default=None, help="profile policy rule")
    add.set_defaults(func=cmd_profile_add)
    listing = sub.add_parser("list", parents=parents, help="list the inventory")
    listing.set_defaults(func=cmd_profile_list)


def _read_package(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KinsimError(f"cannot read {path}: {exc.strerror or exc}") from None


def _import(store: Store, path: str, package: bytes, now: datetime, profile_type: str | None):
    try:
        return import_profile(store, package, now, profile_type)
    except DecodeError as exc:  # name the file: several may be added at once
        raise DecodeError(f"{path}: {exc}") from None


def cmd_profile_add(args) -> int:
    metadata = {"service_provider_name": args.spn, "profile_name": args.profile_name,
                "profile_class": args.profile_class, "ppr": tuple(args.ppr) if args.ppr else None}
    metadata = {k: v for k, v in metadata.items() if v is not None}
    if metadata and not args.type:
        raise ConfigError("--spn, --profile-name, --class and --ppr describe a profile type: give --type too")
    packages = {path: _read_package(path) for path in args.files}  # before the store is made or touched
    now = datetime.now(UTC)
    with Store.open(args.state) as store, store.transaction():  # all files or none
        if metadata:
            current = store.profile_type(args.type) or ProfileType(args.type)
            store.put_profile_type(ProfileType(**{**current.__dict__, **metadata}))
        added = [_import(store, path, package, now, args.type) for path, package in packages.items()]
    rows = describe_profiles(added)
    emit(args, rows, lambda r: table([(p["iccid"], p["profileType"], p["state"]) for p in r],
                                     ["ICCID", "TYPE", "STATE"]))
    return 0


def _existing_store(args) -> Store:
    """The state of an SM-DP+ that exists already: a wrong --state is an error, not a new empty store."""
    return Store.open(args.state, create=False)


def cmd_profile_list(args) -> int:
    with _existing_store(args) as store:
        rows = describe_profiles(store.profiles())
    emit(args, rows, lambda r: table([(p["iccid"], p["profileType"], p["state"], p["matchingId"]) for p in r],
                                     ["ICCID", "TYPE", "STATE", "MATCHING ID"]))
    return 0


# --- order ----------------------------------------------------------------------------------------


def _register_order(commands, parents) -> None:
    sub = command_group(commands, "order", "download orders (ES2+ DownloadOrder/ConfirmOrder for people)")
    create = sub.add_parser("create", parents=parents, help="reserve a profile and confirm the order")
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument("--iccid", help="this profile")
    which.add_argument("--profile-type", help="any Available profile of this type")
    create.add_argument("--eid", help="bind the order to this eUICC")
    create.add_argument("--matching-id", help="the activation code token (default: generated; '' = by EID only)")
    create.add_argument("--cc", metavar="CODE", help="require this confirmation code")
    create.add_argument("--release", action="store_true", help="release at once (else ReleaseProfile later)")
    create.add_argument("--address", help="SM-DP+ address for the activation code (default: from the last serve)")
    create.set_defaults(func=cmd_order_create)
    listing = sub.add_parser("list", parents=parents, help="list orders")
    listing.add_argument("--all", action="store_true", help="include profiles without an order")
    listing.set_defaults(func=cmd_order_list)
    release = sub.add_parser("release", parents=parents, help="release a Confirmed order")
    release.add_argument("--iccid", required=True)
    release.set_defaults(func=cmd_order_release)
    cancel = sub.add_parser("cancel", parents=parents, help="cancel an order")
    cancel.add_argument("--iccid", required=True)
    cancel.add_argument("--final", choices=("Available", "Unavailable"), default="Available",
                        help="state of the profile afterwards (default Available)")
    cancel.set_defaults(func=cmd_order_cancel)


def _orders(store: Store, address: str | None = None) -> Orders:
    """Order management for the local administrator, with the deployment facts of the last serve."""
    settings = OrderSettings(address or store.get_meta("address") or "", store.get_meta("smdp_oid") or "")
    return Orders(settings, store)


def activation_code(address: str, matching_id: str | None, oid: str, cc_required: bool) -> str | None:
    """The 'LPA:1$...' text, or None when the address is not an FQDN (a test setup on localhost)."""
    if not address or matching_id is None:
        return None
    try:
        return str(ActivationCode(address, matching_id, smdp_oid=oid or None, cc_required=cc_required))
    except ActivationCodeError:
        return None


def cmd_order_create(args) -> int:
    with _existing_store(args) as store:
        orders = _orders(store, args.address)
        profile, result = orders.create_order(iccid=args.iccid, profile_type=args.profile_type, eid=args.eid,
                                              matching_id=args.matching_id, confirmation_code=args.cc,
                                              release=args.release)
    value = {**describe_profiles([profile])[0], "smdpAddress": orders.config.address or None,
             "activationCode": activation_code(orders.config.address, profile.matching_id, orders.config.smdp_oid,
                                               profile.cc_required)}
    emit(args, value, lambda v: key_values([("ICCID", v["iccid"]), ("state", v["state"]), ("EID", v["eid"]),
                                            ("matching ID", v["matchingId"]), ("SM-DP+", v["smdpAddress"]),
                                            ("activation code", v["activationCode"])]))
    return 0


def cmd_order_list(args) -> int:
    shown = None if args.all else (*ORDER_STATES, ProfileState.INSTALLED)
    with _existing_store(args) as store:
        rows = describe_profiles(store.profiles(shown))
    emit(args, rows, lambda r: table(
        [(p["iccid"], p["profileType"], p["state"], p["eid"], p["matchingId"], "yes" if p["ccRequired"] else "",
          p["downloadAttempts"], p["error"]) for p in r],
        ["ICCID", "TYPE", "STATE", "EID", "MATCHING ID", "CC", "ATTEMPTS", "ERROR"]))
    return 0


def cmd_order_release(args) -> int:
    with _existing_store(args) as store:
        profile = _orders(store).release_profile(None, iccid=args.iccid)
    emit(args, describe_profiles([profile])[0], f"{profile.iccid} {profile.state}")
    return 0


def cmd_order_cancel(args) -> int:
    with _existing_store(args) as store:
        profile = _orders(store).cancel_order(None, iccid=args.iccid, final_status=args.final)
    emit(args, describe_profiles([profile])[0], f"{profile.iccid} {profile.state}")
    return 0

