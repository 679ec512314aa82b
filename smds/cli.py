"""``kinsim smds``: run the SM-DS (ES11 for LPAs, ES12 for SM-DP+s) and look at its Event Records."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from datetime import timedelta

from certs.pki import Pki, read_certificate
from certs.validate import dns_names
from kinsim.output import command_group, emit, json_parent, port_number, table
from rsp.ids import validate_eid
from smds.core import DEFAULT_SESSION_TIMEOUT, ConfigError, Smds, SmdsConfig
from smds.store import Store

DEFAULT_PORT = 8444
HTTPS_PORT = 443


def register(subparsers, name: str, help_text: str) -> None:
    commands = command_group(subparsers, name, help_text, "Run the SM-DS and inspect its Event Records.")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state", required=True, metavar="DIR", help="state directory (smds.sqlite inside)")
    _register_serve(commands, [json_parent(), state])
    events = commands.add_parser("events", parents=[json_parent(), state], help="list the registered events")
    events.add_argument("--eid", help="only the events of this EID")
    events.set_defaults(func=cmd_events)



def _register_serve(commands, parents) -> None:
    serve = commands.add_parser(
        "serve", parents=parents, help="serve ES11 and ES12 over HTTPS",
        description="Serve ES11 (event retrieval, for LPAs) over HTTPS with CERT.DStls and, with --es12-port, "
                    "ES12 (RegisterEvent/DeleteEvent, for SM-DP+s) with required client certificates. Port 0 "
                    "picks a free port; the address and URLs are printed, or one JSON line with --json.")
    serve.add_argument("--pki", action="append", required=True, metavar="DIR",
                       help="a 'kinsim certs generate' directory with ds_auth and ds_tls; repeat for several CIs "
                            "(the first serves TLS)")
    serve.add_argument("--address", help="the SM-DS address LPAs use, as in the eUICC's rootDsAddress (default: "
                                         "the DStls certificate's DNS name, with ':PORT' unless the port is 443)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="ES11 port (default %(default)s, 0 = any)")
    serve.add_argument("--es12-port", type=port_number, help="ES12 port (0 = any free port); off when absent")
    serve.add_argument("--es12-client-ca", action="append", default=[], metavar="FILE",
                       help="CA of the SM-DP+ client certificates (default: the CIs of --pki)")
    serve.add_argument("--trusted-ci", action="append", default=[], metavar="FILE",
                       help="another CI certificate whose eUICCs are accepted")
    serve.add_argument("--session-timeout", type=float, default=DEFAULT_SESSION_TIMEOUT.total_seconds(),
                       metavar="SECONDS", help="ES11 session timeout (default %(default)s)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    pkis = [Pki.load(directory) for directory in args.pki]
    if pkis[0].ds_tls is None or pkis[0].ds_tls.key is None:
        raise ConfigError(f"{args.pki[0]}: ds_tls.der and ds_tls.key.pem are needed to serve HTTPS")
    return asyncio.run(_serve(pkis, args))


async def _serve(pkis: list[Pki], args) -> int:
    from smds.server import listen, start  # the server stack is only needed here

    try:
        es11 = listen((args.host, args.port))
        es12 = listen((args.host, args.es12_port)) if args.es12_port is not None else None
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}: {exc.strerror or exc}") from None
    port = es11.getsockname()[1]
    try:
        config = SmdsConfig.from_pkis(
            pkis, address=args.address or _default_address(pkis[0], port), extra_cis=_certificates(args.trusted_ci),
            session_timeout=timedelta(seconds=args.session_timeout))
        client_cas = _certificates(args.es12_client_ca) or [p.ci.cert for p in pkis]
    except BaseException:
        for sock in (es11, es12):
            if sock is not None:
                sock.close()
        raise
    store = Store.open(args.state)
    server = await start(Smds(store, config), pkis[0].ds_tls, es11=es11, es12=es12, es12_client_cas=client_cas)
    info = {"address": config.address, "smdsOid": config.smds_oid, "es11": f"https://{args.host}:{server.es11_port}"}
    if server.es12_port is not None:
        info["es12"] = f"https://{args.host}:{server.es12_port}"
    if getattr(args, "json", False):
        print(json.dumps(info), flush=True)
    else:
        print(f"SM-DS {info['address']} (OID {info['smdsOid']})")
        for name in ("es11", "es12"):
            if name in info:
                print(f"{name.upper()} {info[name]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        store.close()
    return 0


def _default_address(pki: Pki, port: int) -> str:
    names = dns_names(pki.ds_tls.cert)
    if not names:
        raise ConfigError("the DStls certificate has no dNSName; give the SM-DS address with --address")
    return names[0] if port == HTTPS_PORT else f"{names[0]}:{port}"


def _certificates(paths: list[str]) -> list:
    return [read_certificate(p) for p in paths]


def cmd_events(args) -> int:
    if args.eid is not None:
        validate_eid(args.eid)  # DecodeError: a sentence for the user
    with Store.open(args.state, create=False) as store:  # a wrong --state is an error, not a new store
        records = [r.as_dict() for r in store.events(args.eid)]
    rows = [(r["eid"], r["eventId"], r["rspServerAddress"], r["registrant"], r["registeredAt"]) for r in records]
    emit(args, records, lambda _: table(rows, ("EID", "EVENT ID", "RSP SERVER", "REGISTRANT", "REGISTERED")))
    return 0
