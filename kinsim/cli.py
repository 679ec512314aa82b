"""The ``kinsim`` command: one argparse tree with a group per role.

Each group lives beside its role (``lpa/cli.py``, ``smdp/cli.py``, ...) and exposes
``register(subparsers)``; handlers are ``func(args) -> int``. Errors kinsim raises on purpose
(``KinsimError``) become one clear line on stderr (or ``{"error": ...}`` with ``--json``), never a
stack trace; ``KINSIM_DEBUG=1`` shows the trace.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from kinsim.output import print_json
from rsp.errors import KinsimError, StatusCodeError

# (group, module providing register(), one-line help)
GROUPS = [
    ("demo", "kinsim.demo", "run a complete profile download on the embedded defaults"),
    ("certs", "certs.cli", "test PKI: generate, show and validate SGP.22 certificates"),
    ("euicc", "euicc_sim.cli", "software eUICC: create, show, reset, serve"),
    ("smdp", "smdp.cli", "SM-DP+ server (ES9+, ES2+) and its orders"),
    ("smds", "smds.cli", "SM-DS discovery server (ES11, ES12)"),
    ("lpa", "lpa.cli", "Local Profile Assistant (lpac-style verbs)"),
    ("profile", "kinsim.profile_cmd", "SAIP profile packages: inspect, personalize"),
    ("plan", "mno.cli", "family shared plans (operator side)"),
    ("conformance", "kinsim.conformance_cmd", "SGP.22 conformance runner"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinsim", description="GSMA SGP.22 eSIM provisioning for family plans")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP")
    for name, module_name, help_text in GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # group not built yet
        module.register(subparsers, name, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KinsimError as exc:
        if os.environ.get("KINSIM_DEBUG"):
            raise
        report_error(args, exc)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def report_error(args, exc: KinsimError) -> None:
    if getattr(args, "json", False):
        payload = {"error": str(exc), "type": type(exc).__name__}
        if isinstance(exc, StatusCodeError):
            payload.update(subjectCode=exc.subject_code, reasonCode=exc.reason_code)
        print_json(payload, sys.stderr)
    else:
        print(f"kinsim: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
