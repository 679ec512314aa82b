"""The ``kinsim`` command: one argparse tree with a group per role.

Each group lives beside its role (``lpa/cli.py``, ``smdp/cli.py``, ...) and exposes
``register(subparsers)``; handlers are ``func(args) -> int``. Errors kinsim raises on purpose
(``KinsimError``) become one clear line on stderr (or ``{"error": ...}`` with ``--json``), never a
stack trace; ``KINSIM_DEBUG=1`` shows the trace.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

from kinsim.output import print_json
from rsp.errors import ApduError, BppError, Es10Error, KinsimError, StatusCodeError

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


class JsonUsageParser(argparse.ArgumentParser):
    """A parser whose usage errors are one JSON object on stderr (exit 2), for ``--json`` callers.

    argparse creates every sub-parser with the class of its parent, so the whole tree answers alike."""

    def error(self, message: str):
        print_json({"error": f"{self.prog}: {message}", "type": "UsageError"}, sys.stderr)
        self.exit(2)


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    parser_class = JsonUsageParser if json_errors else argparse.ArgumentParser
    parser = parser_class(prog="kinsim", description="GSMA SGP.22 eSIM provisioning for family plans")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--version", action="version", version=f"kinsim {importlib.metadata.version('kinsim')}")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(argv)
    except BrokenPipeError:
        # Whoever read our output stopped (kinsim ... | head): nothing more to say, and nowhere to say it.
        # stdout goes to /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a C tool cut off the same way


def _run(argv: list[str]) -> int:
    parser = build_parser(json_errors="--json" in argv)
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
        report_error(args, KinsimError("interrupted"), "Interrupted")
        return 130


def report_error(args, exc: KinsimError, kind: str | None = None) -> None:
    if getattr(args, "json", False):
        payload = {"error": str(exc), "type": kind or type(exc).__name__}
        payload.update(error_codes(exc))
        print_json(payload, sys.stderr)
    else:
        print(f"kinsim: {exc}", file=sys.stderr)


def error_codes(exc: KinsimError) -> dict:
    """The codes a script can act on: SGP.22 statusCodeData, the ES10 result enum, the BPP error, the SW."""
    if isinstance(exc, StatusCodeError):
        return {"subjectCode": exc.subject_code, "reasonCode": exc.reason_code}
    if isinstance(exc, Es10Error):
        return {"function": exc.function, "result": exc.name, "resultCode": exc.code}
    if isinstance(exc, BppError):
        return {"bppCommandId": exc.bpp_command_id, "errorReason": exc.error_reason}
    if isinstance(exc, ApduError):
        return {"sw": f"{exc.sw:04X}"}
    return {}


if __name__ == "__main__":
    sys.exit(main())
