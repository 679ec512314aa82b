"""Bounded fuzzing of our own components with hypothesis: the ES9+ JSON handlers, the ES10 APDU
handler, the SAIP decoder and the ASN.1 decoder.

A harness owns its target (a temporary SM-DP+ or software eUICC), draws inputs with ``st.data()``
(random bytes, and valid messages mutated at the byte or JSON level) and checks, per input: no
unhandled exception (the SM-DP+ never answers "internal error", the card never '6F00'; decoders
raise only DecodeError), bounded time (hypothesis' deadline), and no state change after a rejected
input (the SM-DP+'s SQLite content, the card's stored state). A broken invariant raises
``FuzzFailure``; hypothesis shrinks it to a minimal input.

Short runs are tests (tests/test_fuzz_*.py); long runs: ``python -m conformance.fuzz --minutes 30``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st


class FuzzFailure(AssertionError):
    """An input broke an invariant of the target."""


@dataclass(frozen=True)
class KnownBug:
    """A crash already reported against another module: counted and shown, never a new failure.

    It matches an unhandled exception of class ``exception`` raised through function ``function``.
    """

    key: str
    description: str
    exception: str
    function: str

    def matches(self, error: BaseException) -> bool:
        frames = traceback.extract_tb(error.__traceback__)
        return type(error).__name__ == self.exception and any(f.name == self.function for f in frames)


KNOWN_BUGS: tuple[KnownBug, ...] = ()  # bugs found and not yet fixed; hits are counted, not failed


class Harness:
    """One target and its invariants; ``check`` gets hypothesis' DataObject for one input."""

    name = "harness"

    def __init__(self):
        self.known: Counter[str] = Counter()  # KnownBug.key -> inputs that hit it

    def check(self, data: st.DataObject) -> None:
        raise NotImplementedError

    def crashed(self, what: str, errors: list[BaseException]) -> None:
        """The target reported an internal error for an input: a known bug, or a FuzzFailure."""
        for error in errors:
            bug = next((b for b in KNOWN_BUGS if b.matches(error)), None)
            if bug is not None:
                self.known[bug.key] += 1
                return
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in errors) or "no exception was logged"
        raise FuzzFailure(f"{what}: {detail}")

    def close(self) -> None:
        """Release the target (temporary directories, event loops)."""


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextmanager
def logged_exceptions(*logger_names: str) -> Iterator[list[BaseException]]:
    """The exceptions the named loggers report (``log.exception``) while the block runs; they are not
    passed on to the root logger meanwhile."""
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in logger_names]
    propagate = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(collector)
        logger.propagate = False  # collected and reported here, not printed once per fuzzed input
    try:
        yield collector.errors
    finally:
        for logger, before in zip(loggers, propagate, strict=True):
            logger.removeHandler(collector)
            logger.propagate = before


@dataclass
class FuzzReport:
    harness: str
    inputs: int = 0
    failures: list[str] = field(default_factory=list)
    known: dict[str, int] = field(default_factory=dict)  # known bugs hit (see KNOWN_BUGS)

    def line(self) -> str:
        known = "".join(f"; known bug {key} hit {count} times" for key, count in sorted(self.known.items()))
        return f"fuzz {self.harness}: {self.inputs} inputs tried, {len(self.failures)} failures{known}"


DEFAULT_DEADLINE = timedelta(seconds=10)  # a hang detector, far above any legitimate input


def run_harness(harness: Harness, *, examples: int, seed: int | None = None,
                deadline: timedelta | None = DEFAULT_DEADLINE) -> FuzzReport:
    """Try ``examples`` inputs (plus hypothesis' shrinking); the first broken invariant is reported."""
    report = FuzzReport(harness.name)
    last: dict[str, str] = {}
    known_before = Counter(harness.known)

    @settings(max_examples=examples, deadline=deadline, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.data())
    def trial(data):
        report.inputs += 1
        try:
            harness.check(data)
        except BaseException as exc:
            last["failure"] = f"{type(exc).__name__}: {exc}"
            raise

    if seed is not None:
        trial = hypothesis_seed(seed)(trial)
    try:
        trial()
    except Exception as exc:  # hypothesis re-raises the (shrunk) failure: one report line per harness run
        report.failures.append(last.get("failure") or f"{type(exc).__name__}: {exc}")
    report.known = dict(harness.known - known_before)
    return report


def run_for(factories: dict[str, Callable[[], Harness]], *, seconds: float, batch: int = 200,
            seed: int | None = None, on_report: Callable[[FuzzReport], None] | None = None) -> list[FuzzReport]:
    """Run every harness in turn, in batches of ``batch`` inputs, until ``seconds`` have passed."""
    totals = {name: FuzzReport(name) for name in factories}
    harnesses = {name: factory() for name, factory in factories.items()}
    end = time.monotonic() + seconds
    round_number = 0
    try:
        while time.monotonic() < end:
            for name, harness in harnesses.items():
                report = run_harness(harness, examples=batch, seed=None if seed is None else seed + round_number)
                totals[name].inputs += report.inputs
                totals[name].failures += report.failures
                for key, count in report.known.items():
                    totals[name].known[key] = totals[name].known.get(key, 0) + count
                if on_report is not None:
                    on_report(report)
                if time.monotonic() >= end:
                    break
            round_number += 1
    finally:
        for harness in harnesses.values():
            harness.close()
    return list(totals.values())
