"""Select, run and report conformance cases.

A case is an (async or plain) function ``case(context)`` registered under its catalogue ID. It
passes by returning; it fails by raising ``CaseFailed`` (or any ``KinsimError`` the target provoked:
an unexpected status code, an ES10 error enum, undecodable output); it is blocked by ``CaseBlocked``
when the runner cannot set up its preconditions (no download order left, for instance). Anything
else is an error of the run (``TargetUnreachable``, a bug).

A case is applicable unless the user skipped one of its features (``--skip-feature``) or the runner
lacks material it needs (``context.missing_material()``: feature -> reason). The exit status is 0
only when every applicable case passed.
"""

from __future__ import annotations

import inspect
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from conformance.catalogue import BY_ID, FEATURES, Case
from kinsim.output import table
from rsp.errors import KinsimError

PASS, FAIL, ERROR, BLOCKED, SKIP = "pass", "fail", "error", "blocked", "skip"


class CaseFailed(Exception):
    """The target did not produce the expected outcome."""


def require(condition: bool, problem: str) -> None:
    """Fail the case with ``problem`` unless ``condition`` holds."""
    if not condition:
        raise CaseFailed(problem)


class CaseBlocked(Exception):
    """The runner could not establish the case's preconditions."""


class TargetUnreachable(Exception):
    """The target could not be reached at all (connection refused, TLS failure, reader gone)."""


class SelectionError(KinsimError):
    """Unknown case IDs or features on the command line."""


CaseFunction = Callable[[object], object]


def registry() -> tuple[dict[str, CaseFunction], Callable[[str], Callable[[CaseFunction], CaseFunction]]]:
    """A case table and the decorator that fills it, checking each ID against the catalogue."""
    cases: dict[str, CaseFunction] = {}

    def case(case_id: str):
        if case_id not in BY_ID:
            raise ValueError(f"{case_id} is not in the catalogue")

        def register(function: CaseFunction) -> CaseFunction:
            cases[case_id] = function
            return function

        return register

    return cases, case


@dataclass(frozen=True)
class Result:
    case: Case
    status: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS


def select(cases: Sequence[Case], *, ids: Iterable[str] = (), skip_features: Iterable[str] = (),
           missing_material: Mapping[str, str] | None = None) -> list[tuple[Case, str | None]]:
    """(case, skip reason or None) for the chosen cases, in catalogue order."""
    wanted = set(ids)
    unknown = sorted(wanted - {c.id for c in cases})
    if unknown:
        raise SelectionError(f"unknown case IDs for this interface: {', '.join(unknown)}")
    skipped = set(skip_features)
    bad = sorted(skipped - set(FEATURES))
    if bad:
        raise SelectionError(f"unknown features: {', '.join(bad)} (see 'kinsim conformance list --features')")
    missing = dict(missing_material or {})
    chosen = []
    for case in cases:
        if wanted and case.id not in wanted:
            continue
        reason = next((f"target lacks {f} (--skip-feature)" for f in case.features if f in skipped), None)
        reason = reason or next((missing[f] for f in case.features if f in missing), None)
        chosen.append((case, reason))
    return chosen


async def run_cases(chosen: Sequence[tuple[Case, str | None]], functions: Mapping[str, CaseFunction], context,
                    *, on_result: Callable[[Result], None] | None = None,
                    timer: Callable[[], float] = time.perf_counter) -> list[Result]:
    results = []
    for case, skip_reason in chosen:
        if skip_reason is not None:
            result = Result(case, SKIP, skip_reason)
        else:
            start = timer()
            status, detail = await _run_one(functions[case.id], context)
            result = Result(case, status, detail, timer() - start)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


async def _run_one(function: CaseFunction, context) -> tuple[str, str]:
    try:
        outcome = function(context)
        if inspect.isawaitable(outcome):
            await outcome
    except CaseFailed as exc:
        return FAIL, str(exc)
    except CaseBlocked as exc:
        return BLOCKED, str(exc)
    except TargetUnreachable as exc:
        return ERROR, str(exc)
    except KinsimError as exc:  # the target answered with something the case did not expect
        return FAIL, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug in the runner or an unreadable answer: reported, never hidden
        return ERROR, f"{type(exc).__name__}: {exc}"
    return PASS, ""


def exit_status(results: Sequence[Result]) -> int:
    """0 only when every applicable case passed (and at least one ran)."""
    ran = [r for r in results if r.status != SKIP]
    return 0 if ran and all(r.passed for r in ran) else 1


def summary(results: Sequence[Result]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in (PASS, FAIL, ERROR, BLOCKED, SKIP)}
    parts = [f"{counts[PASS]} passed", f"{counts[FAIL]} failed", f"{counts[ERROR]} errors",
             f"{counts[BLOCKED]} blocked", f"{counts[SKIP]} skipped"]
    return f"{len(results)} cases: " + ", ".join(parts)


def results_table(results: Sequence[Result], width: int = 100) -> str:
    rows = [(r.case.id, r.case.section, r.case.kind, r.status.upper(), _clip(r.detail or r.case.title, width))
            for r in results]
    return table(rows, ("ID", "SGP.22", "KIND", "RESULT", "DETAIL")) + "\n" + summary(results)


def _clip(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def junit_xml(results: Sequence[Result], suite: str) -> bytes:
    """JUnit XML (the Ant/Jenkins schema): one testcase per case, classname = interface.section."""
    root = ET.Element("testsuites")
    element = ET.SubElement(root, "testsuite", {
        "name": suite,
        "tests": str(len(results)),
        "failures": str(sum(r.status == FAIL for r in results)),
        "errors": str(sum(r.status in (ERROR, BLOCKED) for r in results)),
        "skipped": str(sum(r.status == SKIP for r in results)),
        "time": f"{sum(r.seconds for r in results):.3f}",
    })
    for result in results:
        case = result.case
        test = ET.SubElement(element, "testcase", {
            "classname": f"{case.interface}.{case.section.split(',')[0].strip()}",
            "name": f"{case.id} {case.title}",
            "time": f"{result.seconds:.3f}",
        })
        if result.status == FAIL:
            ET.SubElement(test, "failure", {"message": _clip(result.detail, 200), "type": "nonconformant"}).text = (
                f"expected: {case.expected}\nobserved: {result.detail}")
        elif result.status in (ERROR, BLOCKED):
            ET.SubElement(test, "error", {"message": _clip(result.detail, 200), "type": result.status}).text = (
                result.detail)
        elif result.status == SKIP:
            ET.SubElement(test, "skipped", {"message": result.detail})
        ET.SubElement(test, "system-out").text = f"SGP.22 {case.section}; expected: {case.expected}"
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
