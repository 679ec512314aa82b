"""The conformance catalogue and runner: every case is documented and implemented exactly once;
selection, statuses, exit status, the table and JUnit XML."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET

import pytest

from conformance import es9_cases, es10_cases
from conformance.catalogue import BY_ID, CASES, ES9, ES9_CASES, ES10_CASES, FEATURES, ORDER_KINDS
from conformance.orders import ListedOrders, orders_needed
from conformance.runner import (
    BLOCKED,
    ERROR,
    FAIL,
    PASS,
    SKIP,
    CaseBlocked,
    CaseFailed,
    Result,
    SelectionError,
    TargetUnreachable,
    exit_status,
    junit_xml,
    results_table,
    run_cases,
    select,
)
from rsp.errors import StatusCode, StatusCodeError


def test_every_case_is_documented():
    for case in CASES:
        assert re.fullmatch(r"ES(9|10)-[A-Z]+-\d{3}", case.id), case.id
        assert re.fullmatch(r"[0-9.]+(-[0-9.]+)?(, [0-9.]+(-[0-9.]+)?)*", case.section), case.section
        assert case.title and case.preconditions and case.expected
        assert set(case.features) <= set(FEATURES)
        assert (case.order is None) or (case.interface == ES9 and case.order in ORDER_KINDS)


def test_every_case_has_code_and_no_code_is_orphaned():
    assert set(es9_cases.CASES) == {c.id for c in ES9_CASES}
    assert set(es10_cases.CASES) == {c.id for c in ES10_CASES}


def test_both_interfaces_have_positive_and_negative_cases():
    for cases in (ES9_CASES, ES10_CASES):
        kinds = {c.kind for c in cases}
        assert kinds == {"positive", "negative"}
    assert sum(c.negative for c in CASES) >= 50


def test_orders_needed_counts_each_kind():
    needed = orders_needed(ES9_CASES)
    assert needed["shared"] == 1
    assert needed["fresh"] == sum(c.order_count for c in ES9_CASES if c.order == "fresh")
    assert needed["cc"] == len([c for c in ES9_CASES if c.order == "cc"])


def test_listed_orders_hand_out_each_matching_id_once_and_the_shared_one_again():
    orders = ListedOrders(["A", "B"], [("C", "1234")])

    async def take():
        return [await orders.get("shared"), await orders.get("fresh"), await orders.get("shared"),
                await orders.get("cc")]

    shared, fresh, again, cc = asyncio.run(take())
    assert (shared.matching_id, fresh.matching_id, again.matching_id) == ("A", "B", "A")
    assert (cc.matching_id, cc.confirmation_code) == ("C", "1234")
    with pytest.raises(CaseBlocked, match="--matching-id"):
        asyncio.run(orders.get("fresh"))


def test_selection_by_id_and_feature():
    chosen = select(ES9_CASES, ids=["ES9-DOWNLOAD-002", "ES9-INITAUTH-001"], skip_features=["confirmation-code"])
    assert [(c.id, reason is None) for c, reason in chosen] == [("ES9-DOWNLOAD-002", False), ("ES9-INITAUTH-001", True)]
    missing = select(ES9_CASES, missing_material={"euicc-ci-key": "no CI key"})
    assert {c.id for c, reason in missing if reason} == {c.id for c in ES9_CASES if "euicc-ci-key" in c.features}
    with pytest.raises(SelectionError, match="ES9-NOPE-001"):
        select(ES9_CASES, ids=["ES9-NOPE-001"])
    with pytest.raises(SelectionError, match="teleportation"):
        select(ES9_CASES, skip_features=["teleportation"])


def _outcome(exc: Exception | None):
    def case(_context):
        if exc is not None:
            raise exc
    return case


@pytest.mark.parametrize(("raised", "status"), [
    (None, PASS),
    (CaseFailed("wrong code"), FAIL),
    (StatusCodeError(StatusCode("8.1", "6.1"), "refused"), FAIL),
    (CaseBlocked("no order"), BLOCKED),
    (TargetUnreachable("refused"), ERROR),
    (KeyError("bug"), ERROR),
])
def test_run_cases_maps_outcomes(raised, status):
    case = BY_ID["ES9-INITAUTH-002"]
    results = asyncio.run(run_cases([(case, None)], {case.id: _outcome(raised)}, object()))
    assert results[0].status == status
    assert exit_status(results) == (0 if status == PASS else 1)


def test_async_cases_are_awaited_and_skips_do_not_run():
    ran = []

    async def case(_context):
        ran.append(1)
        raise CaseFailed("after await")

    first, second = BY_ID["ES9-INITAUTH-002"], BY_ID["ES9-INITAUTH-003"]
    results = asyncio.run(run_cases([(first, None), (second, "skipped")], {first.id: case, second.id: case}, None))
    assert [r.status for r in results] == [FAIL, SKIP] and ran == [1]


def test_exit_status_needs_every_applicable_case_passed_and_one_to_run():
    case = BY_ID["ES9-INITAUTH-001"]
    assert exit_status([Result(case, PASS), Result(case, SKIP)]) == 0
    assert exit_status([Result(case, SKIP)]) == 1
    assert exit_status([Result(case, PASS), Result(case, BLOCKED)]) == 1


def test_table_and_junit_xml():
    results = [Result(BY_ID["ES9-INITAUTH-001"], PASS, seconds=0.25),
               Result(BY_ID["ES9-INITAUTH-002"], FAIL, "expected 8.8.1 / 3.8; got 1.2 / 4.2"),
               Result(BY_ID["ES9-DOWNLOAD-002"], SKIP, "target lacks confirmation-code"),
               Result(BY_ID["ES9-DOWNLOAD-001"], BLOCKED, "no fresh download order left")]
    text = results_table(results)
    assert "ES9-INITAUTH-002" in text and "5.6.1" in text and "FAIL" in text
    assert text.splitlines()[-1] == "4 cases: 1 passed, 1 failed, 0 errors, 1 blocked, 1 skipped"
    suite = ET.fromstring(junit_xml(results, "ES9+ test")).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")
    cases = suite.findall("testcase")
    assert cases[0].get("classname") == "ES9+.5.6.1" and cases[0].get("time") == "0.250"
    failure = cases[1].find("failure")
    assert "got 1.2 / 4.2" in failure.get("message") and "8.8.1 / 3.8" in failure.text
    assert cases[2].find("skipped") is not None and cases[3].find("error").get("type") == "blocked"
