"""Long fuzz runs: ``python -m conformance.fuzz --minutes 30 [--harness NAME ...] [--seed N]``.

Prints one line per batch and a total per harness; the exit status is 1 if any input broke an
invariant (known bugs, listed in conformance.fuzz.KNOWN_BUGS, are reported but do not fail the run).
"""

from __future__ import annotations

import argparse
import sys

from conformance.fuzz import run_for
from conformance.fuzz.codecs import Asn1Harness, SaipHarness
from conformance.fuzz.es9 import Es9Harness
from conformance.fuzz.es10 import Es10Harness

HARNESSES = {
    Es9Harness.name: Es9Harness,
    Es10Harness.name: Es10Harness,
    SaipHarness.name: SaipHarness,
    Asn1Harness.name: Asn1Harness,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to fuzz in total (default 5)")
    parser.add_argument("--harness", action="append", choices=sorted(HARNESSES),
                        help="only these harnesses (repeatable; default all)")
    parser.add_argument("--batch", type=int, default=200, help="inputs per hypothesis run (default 200)")
    parser.add_argument("--seed", type=int, help="seed of the first batch (the next batches count up)")
    args = parser.parse_args(argv)
    chosen = {name: HARNESSES[name] for name in (args.harness or sorted(HARNESSES))}
    reports = run_for(chosen, seconds=args.minutes * 60, batch=args.batch, seed=args.seed,
                      on_report=lambda r: print(r.line(), flush=True))
    print("--- totals ---")
    for report in reports:
        print(report.line())
        for failure in report.failures:
            print(f"  FAILURE: {failure}")
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
