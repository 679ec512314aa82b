"""``kinsim conformance``: run the SGP.22 conformance catalogue against an SM-DP+ or an eUICC.

    kinsim conformance list [--interface es9|es10] [--features] [--orders]
    kinsim conformance es9 --smdp ADDR --ci CI.pem [--connect-to HOST:PORT] [--euicc-identity DIR]
                           (--es2 URL --es2-cert CERT --es2-key KEY --es2-profile-type TYPE
                            | --matching-id ID ... [--cc-matching-id ID=CODE ...]
                              [--unreleased-matching-id ID ...] [--other-eid-matching-id ID ...])
                           [--skip-feature F ...] [--case ID ...] [--junit FILE] [--seed HEX]
    kinsim conformance es10 (--euicc DIR | --reader N|NAME) [--smdp-pki DIR|sgp26[:brp]] [--card-ci CERT ...]
                            [--skip-feature F ...] [--case ID ...] [--junit FILE] [--seed HEX]
    kinsim conformance record SCENARIO --out FILE [--seed HEX]
    kinsim conformance replay FILE ...

The exit status is 0 only when every applicable case passed (see conformance/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certs.pki import read_certificate
from conformance import recording
from conformance.catalogue import CASES, ES9, ES9_CASES, ES10, FEATURES
from conformance.es9_cases import Es9Context
from conformance.es9_cases import run as run_es9
from conformance.es9_euicc import RunnerEuicc
from conformance.es9_http import Es9Http
from conformance.es10_cases import Es10Context
from conformance.es10_cases import run as run_es10
from conformance.es10_smdp import RunnerSmdp
from conformance.identity import known_cis, load_euicc_material, load_smdp_pki, sgp26_euicc
from conformance.orders import Es2Orders, ListedOrders, orders_needed
from conformance.runner import Result, exit_status, junit_xml, results_table, summary
from euicc_sim.card import open_euicc
from kinsim.output import command_group, emit, json_parent, table
from lpa.es9_client import split_address
from lpa.es10 import Es10Client
from lpa.transport import SimCardTransport
from mno.es2_client import Es2Client
from rsp.errors import DecodeError, KinsimError


def register(subparsers, name: str, help_text: str) -> None:
    commands = command_group(subparsers, name, help_text, "Run the SGP.22 conformance catalogue against an SM-DP+ "
                             "(ES9+) or an eUICC (ES10); see conformance/README.md.")
    as_json = json_parent()
    _register_list(commands, as_json)
    _register_es9(commands, _common(as_json))
    _register_es10(commands, _common(as_json))
    _register_sessions(commands, as_json)


def _common(as_json):
    common = argparse.ArgumentParser(add_help=False, parents=[as_json])
    common.add_argument("--skip-feature", action="append", default=[], metavar="FEATURE",
                        help="a feature the target declares it lacks; its cases are not applicable (repeatable)")
    common.add_argument("--case", action="append", default=[], metavar="ID", help="run only this case (repeatable)")
    common.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML results to FILE")
    common.add_argument("--seed", type=_seed, metavar="HEX", help="derive the runner's challenges and keys from this seed")
    return common


def _register_list(commands, as_json) -> None:
    listing = commands.add_parser("list", parents=[as_json], help="the catalogue: IDs, sections, expected outcomes")
    listing.add_argument("--interface", choices=("es9", "es10"), help="only one interface")
    listing.add_argument("--features", action="store_true", help="list the features --skip-feature accepts")
    listing.add_argument("--orders", action="store_true", help="download orders an ES9+ run consumes, per kind")
    listing.set_defaults(func=cmd_list)


def _register_es9(commands, common) -> None:
    es9 = commands.add_parser("es9", parents=[common], help="test an SM-DP+ over ES9+",
                              description="Play LPA and eUICC against the SM-DP+ at --smdp, trusting only --ci.")
    es9.add_argument("--smdp", required=True, metavar="ADDR", help="SM-DP+ address: FQDN[:port]")
    es9.add_argument("--ci", required=True, type=Path, metavar="CERT", help="the CI certificate the LPA trusts")
    es9.add_argument("--connect-to", metavar="HOST:PORT", help="connect here instead (TLS still checks ADDR)")
    es9.add_argument("--euicc-identity", metavar="DIR",
                     help="test eUICC: euicc.der, euicc.key.pem, eum.der [, eum.key.pem, ci.der, ci.key.pem] "
                          "(default: the SGP.26 NIST test eUICC)")
    es9.add_argument("--es2", metavar="URL", help="the SM-DP+'s ES2+ base URL: the runner creates its own orders")
    es9.add_argument("--es2-cert", type=Path, metavar="CERT", help="ES2+ client certificate (PEM)")
    es9.add_argument("--es2-key", type=Path, metavar="KEY", help="its private key (PEM)")
    es9.add_argument("--es2-ca", type=Path, metavar="CERT", help="trust anchor for the ES2+ server (default --ci)")
    es9.add_argument("--es2-requester", metavar="ID", help="functionRequesterIdentifier (default: the cert's CN)")
    es9.add_argument("--es2-profile-type", metavar="TYPE", help="profile type DownloadOrder reserves")
    es9.add_argument("--matching-id", action="append", default=[], metavar="ID", help="a released order")
    es9.add_argument("--cc-matching-id", action="append", default=[], metavar="ID=CODE",
                     help="a released order with its confirmation code")
    es9.add_argument("--unreleased-matching-id", action="append", default=[], metavar="ID",
                     help="a confirmed order not yet released")
    es9.add_argument("--other-eid-matching-id", action="append", default=[], metavar="ID",
                     help="a released order bound to an EID that is not the test eUICC's")
    es9.set_defaults(func=cmd_es9)


def _register_es10(commands, common) -> None:
    es10 = commands.add_parser("es10", parents=[common], help="test an eUICC over ES10",
                               description="Play LPA and SM-DP+ against an eUICC. The card must trust the CI of "
                                           "--smdp-pki (euiccCiPKIdListForVerification).")
    card = es10.add_mutually_exclusive_group(required=True)
    card.add_argument("--euicc", metavar="DIR", help="a software eUICC directory")
    card.add_argument("--reader", metavar="N|NAME", help="a card in a PC/SC reader")
    es10.add_argument("--smdp-pki", default="sgp26", metavar="DIR|sgp26[:brp]",
                      help="the runner's SM-DP+ certificates and keys (default: the SGP.26 test SM-DP+)")
    es10.add_argument("--card-ci", action="append", default=[], type=Path, metavar="CERT",
                      help="another CI the card's certificate may chain to (SGP.26 CIs are known)")
    es10.set_defaults(func=cmd_es10)


def _register_sessions(commands, as_json) -> None:
    rec = commands.add_parser("record", parents=[as_json], help="record a deterministic session as a fixture",
                              description="Run a seeded download between our LPA, SM-DP+ and software eUICC and "
                                          "write every ES9+ body and APDU to FILE.")
    rec.add_argument("scenario", choices=sorted(recording.SCENARIOS))
    rec.add_argument("--out", required=True, type=Path, metavar="FILE")
    rec.add_argument("--seed", type=_seed, default="6b696e73696d", metavar="HEX", help="seed (default: hex of 'kinsim')")
    rec.set_defaults(func=cmd_record)
    rep = commands.add_parser("replay", parents=[as_json], help="replay recorded sessions and compare byte for byte")
    rep.add_argument("files", nargs="+", type=Path, metavar="FILE")
    rep.set_defaults(func=cmd_replay)


# --- handlers -------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    if args.features:
        emit(args, FEATURES, lambda f: table(sorted(f.items()), ("FEATURE", "MEANING")))
        return 0
    if args.orders:
        needed = orders_needed(ES9_CASES)
        emit(args, needed, lambda n: table(sorted(n.items()), ("ORDER KIND", "COUNT")) + "\n(--matching-id needs "
             f"shared + fresh = {n['shared'] + n['fresh']} IDs)")
        return 0
    interface = {"es9": ES9, "es10": ES10}.get(args.interface)
    chosen = [c for c in CASES if interface is None or c.interface == interface]
    rows = [{"id": c.id, "interface": c.interface, "section": c.section, "kind": c.kind, "title": c.title,
             "preconditions": c.preconditions, "expected": c.expected, "features": list(c.features),
             "order": c.order} for c in chosen]
    emit(args, rows, lambda r: table([(x["id"], x["section"], x["kind"], x["title"], x["expected"]) for x in r],
                                     ("ID", "SGP.22", "KIND", "TITLE", "EXPECTED")))
    return 0


def cmd_es9(args) -> int:
    _check_junit(args)
    ci = read_certificate(args.ci)
    material = load_euicc_material(args.euicc_identity) if args.euicc_identity else sgp26_euicc()
    rng, clock = _rng(args), _clock
    host = split_address(args.smdp)[0]

    async def main() -> list[Result]:
        orders = _orders(args, material, rng, ci)
        ctx = Es9Context(Es9Http(args.smdp, ci, connect_to=args.connect_to), RunnerEuicc(material, ci, rng=rng, clock=clock),
                         orders, host, rng, clock)
        return await run_es9(ctx, ids=args.case, skip_features=args.skip_feature, on_result=_progress(args))

    return _report(args, asyncio.run(main()), f"kinsim conformance ES9+ {args.smdp}")


def _orders(args, material, rng, ci):
    if args.es2:
        if not (args.es2_cert and args.es2_key and args.es2_profile_type):
            raise KinsimError("--es2 needs --es2-cert, --es2-key and --es2-profile-type")
        context = ssl.create_default_context(cafile=str(args.es2_ca) if args.es2_ca else None,
                                             cadata=None if args.es2_ca else _pem(ci))
        context.load_cert_chain(args.es2_cert, args.es2_key)
        requester = args.es2_requester or _common_name(args.es2_cert)
        return Es2Orders(Es2Client(args.es2, requester, ssl_context=context), profile_type=args.es2_profile_type,
                         eid=material.eid, rng=rng)
    codes = []
    for item in args.cc_matching_id:
        matching_id, sep, code = item.partition("=")
        if not sep or not code:
            raise KinsimError(f"--cc-matching-id takes ID=CODE, got {item!r}")
        codes.append((matching_id, code))
    return ListedOrders(args.matching_id, codes, args.unreleased_matching_id, args.other_eid_matching_id)


def cmd_es10(args) -> int:
    _check_junit(args)
    pki = load_smdp_pki(args.smdp_pki)
    extra = [read_certificate(p) for p in args.card_ci]
    rng = _rng(args)
    transport = _transport(args)
    try:
        ctx = Es10Context(Es10Client(transport), RunnerSmdp(pki, rng=rng, clock=_clock), known_cis(pki.ci.cert, *extra),
                          rng, _clock)
        results = run_es10(ctx, ids=args.case, skip_features=args.skip_feature, on_result=_progress(args))
    finally:
        transport.close()
    target = f"eUICC {args.euicc}" if args.euicc else f"eUICC in reader {args.reader}"
    return _report(args, results, f"kinsim conformance ES10 {target}")


def _transport(args):
    if args.euicc:
        euicc = open_euicc(args.euicc)
        return SimCardTransport(euicc.card, on_close=euicc.close)
    from lpa.pcsc import open_reader

    return open_reader(int(args.reader) if args.reader.isdigit() else args.reader)


def cmd_record(args) -> int:
    result = recording.record(args.scenario, args.seed, args.out)
    emit(args, {"scenario": result.scenario, "outcome": result.outcome, "events": len(result.events),
                "file": str(args.out)},
         lambda v: f"recorded {v['scenario']}: {v['outcome']} ({v['events']} events) in {v['file']}")
    return 0


def cmd_replay(args) -> int:
    rows = []
    for path in args.files:
        try:
            replayed = recording.replay(path)
            rows.append({"file": str(path), "result": "identical", "events": len(replayed.events)})
        except recording.SessionMismatch as exc:
            rows.append({"file": str(path), "result": f"differs: {exc}", "events": None})
        except DecodeError as exc:
            rows.append({"file": str(path), "result": f"unreadable: {exc}", "events": None})
    emit(args, rows, lambda r: table([(x["file"], x["events"], x["result"]) for x in r], ("FILE", "EVENTS", "RESULT")))
    return 0 if all(r["result"] == "identical" for r in rows) else 1


# --- helpers --------------------------------------------------------------------------------------


def _seed(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is hex digits, got {text!r}") from None


def _clock() -> datetime:
    return datetime.now(UTC)


def _rng(args):
    return recording.seeded_rng(args.seed, "runner") if args.seed else os.urandom


def _progress(args):
    if getattr(args, "json", False):
        return None
    return lambda r: print(f"{r.status.upper():7} {r.case.id}", file=sys.stderr)


def _check_junit(args) -> None:
    """Before a run that may take minutes: the JUnit file must be writable at its end."""
    if args.junit is not None and not args.junit.parent.is_dir():
        raise KinsimError(f"cannot write --junit {args.junit}: {args.junit.parent} is not a directory")


def _report(args, results: list[Result], suite: str) -> int:
    if args.junit:
        try:
            args.junit.write_bytes(junit_xml(results, suite))
        except OSError as exc:  # the results are still printed below
            print(f"kinsim: cannot write {args.junit}: {exc.strerror or exc}", file=sys.stderr)
    rows = [{"id": r.case.id, "section": r.case.section, "kind": r.case.kind, "status": r.status,
             "detail": r.detail} for r in results]
    emit(args, {"results": rows, "summary": summary(results)}, lambda _: results_table(results))
    return exit_status(results)


def _pem(cert) -> str:
    return cert.public_bytes(Encoding.PEM).decode("ascii")


def _common_name(path: Path) -> str:
    names = read_certificate(path).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise KinsimError(f"{path} has no CN: give --es2-requester")
    return str(names[0].value)
