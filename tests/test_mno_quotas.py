"""Quotas: the three policies, exact and idempotent accounting, throttling, period roll-over, and the
accounting invariants under random record streams (hypothesis)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mno import plans
from mno.plans import OPERATOR, Cap, Policy, allowances_for_kind, charge
from tests.mno_fixtures import START, make_rig, new_plan

DATA_POOL = {"data": 1000, "sms": 10}


def plan_with_members(policy: str, names=("Ann", "Bob"), pool=None):
    """A plan whose owner and members all exist (invited members count like active ones)."""
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book, policy=policy, pool=pool or DATA_POOL)
    ids = [owner.member_id]
    for name in names:
        order = rig.book.invite(owner, plan.plan_id, name)
        ids.append(order.member.member_id)
    return rig, plan, owner, ids


def use(rig, member_id, amount, key, kind="data", at=None):
    return rig.book.ingest_usage(OPERATOR, kind=kind, amount=amount, at=at or rig.clock(), idempotency_key=key,
                                 member_id=member_id)


def line(rig, owner, plan, member_id, kind="data"):
    usage = rig.book.plan_usage(owner, plan.plan_id)
    return next(m for m in usage["members"] if m["member_id"] == member_id)["usage"][kind]


# --- policies -------------------------------------------------------------------------------------------


def test_fixed_policy_gives_caps_and_splits_the_rest():
    rig, plan, owner, (o, a, b) = plan_with_members("fixed")
    rig.book.set_caps(owner, plan.plan_id, a, {"data": {"amount": 400}})
    rig.book.set_caps(owner, plan.plan_id, b, {"data": {"share": 0.2}})
    assert [line(rig, owner, plan, m)["allowance"] for m in (o, a, b)] == [400, 400, 200]
    result = use(rig, a, 450, "a1")
    assert (result.record.charged, result.record.excess, result.throttled) == (400, 50, True)
    assert result.pool_remaining == 600
    assert use(rig, b, 150, "b1").record.charged == 150
    assert line(rig, owner, plan, b)["remaining"] == 50


def test_fixed_policy_refuses_caps_beyond_the_pool_without_change():
    rig, plan, owner, (o, a, b) = plan_with_members("fixed")
    rig.book.set_caps(owner, plan.plan_id, a, {"data": {"amount": 700}})
    before = rig.book.caps(owner, plan.plan_id)
    with pytest.raises(plans.Conflict):
        rig.book.set_caps(owner, plan.plan_id, b, {"data": {"share": 0.5}})
    assert rig.book.caps(owner, plan.plan_id) == before


def test_shared_policy_is_first_come_with_caps_as_limits():
    rig, plan, owner, (o, a, b) = plan_with_members("shared")
    rig.book.set_caps(owner, plan.plan_id, b, {"data": {"amount": 100}})
    first = use(rig, a, 950, "a1")
    assert (first.record.charged, first.throttled) == (950, False)
    second = use(rig, b, 80, "b1")  # under b's cap, but the pool only has 50 left
    assert (second.record.charged, second.record.excess, second.throttled) == (50, 30, True)
    assert second.pool_remaining == 0
    assert use(rig, o, 1, "o1").record.charged == 0  # the pool never goes negative
    assert rig.book.plan_usage(owner, plan.plan_id)["pool"]["data"]["remaining"] == 0


def test_dynamic_policy_rebalances_from_usage_history():
    rig, plan, owner, (o, a, b) = plan_with_members("dynamic")
    equal = [line(rig, owner, plan, m)["allowance"] for m in (o, a, b)]
    assert equal == [333, 333, 333]  # no history yet: equal shares
    use(rig, a, 300, "a1")
    use(rig, b, 30, "b1")
    rig.clock.advance(days=plan.period_days)  # next billing period
    o_next, a_next, b_next = (line(rig, owner, plan, m)["allowance"] for m in (o, a, b))
    assert a_next > b_next > o_next and a_next + b_next + o_next <= 1000
    assert o_next >= 1000 // 2 // 3  # everyone keeps the equal half as a floor
    rig.book.set_caps(owner, plan.plan_id, a, {"data": {"amount": 400}})
    capped = [line(rig, owner, plan, m)["allowance"] for m in (o, a, b)]
    assert capped[1] == 400 and sum(capped) <= 1000 and capped[2] > b_next  # what a lost went to the others


def test_throttled_member_is_told_once_per_kind_and_period():
    rig, plan, owner, (o, a, b) = plan_with_members("fixed")
    rig.book.set_caps(owner, plan.plan_id, a, {"data": {"amount": 100}})
    member = rig.book.authenticate(rig.book.rotate_token(OPERATOR, plan.plan_id, a))
    assert use(rig, a, 60, "k1").throttled is False
    assert rig.book.notices(member, plan.plan_id, a) == []
    assert use(rig, a, 60, "k2").throttled is True
    use(rig, a, 60, "k3")
    notices = rig.book.notices(member, plan.plan_id, a)
    assert [(n.kind, n.details["usage_kind"], n.details["period"]) for n in notices] == [("throttled", "data", 0)]
    assert line(rig, owner, plan, a)["throttled"] is True
    with pytest.raises(plans.Forbidden):  # notices are the member's own
        rig.book.notices(owner, plan.plan_id, a)


# --- exactness, idempotency, validation ---------------------------------------------------------------------


def test_a_record_sent_twice_counts_once():
    rig, plan, owner, (o, a, b) = plan_with_members("shared")
    first = use(rig, a, 123, "same")
    again = use(rig, a, 123, "same")
    assert (again.duplicate, again.record) == (True, first.record)
    assert rig.book.plan_usage(owner, plan.plan_id)["pool"]["data"]["used"] == 123
    with pytest.raises(plans.Conflict):  # the same key for other content is an error, not a duplicate
        use(rig, a, 124, "same")
    assert rig.book.plan_usage(owner, plan.plan_id)["pool"]["data"]["used"] == 123


@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "10", 1 << 62])
def test_bad_amounts_are_refused(amount):
    rig, plan, owner, (o, a, b) = plan_with_members("shared")
    with pytest.raises(plans.InvalidRequest):
        use(rig, a, amount, "x")
    assert rig.book.plan_usage(owner, plan.plan_id)["pool"]["data"]["used"] == 0


def test_unknown_kind_member_and_imsi_are_refused():
    rig, plan, owner, (o, a, b) = plan_with_members("shared")
    with pytest.raises(plans.InvalidRequest):
        use(rig, a, 1, "x", kind="mms")
    with pytest.raises(plans.NotFound):
        use(rig, "mem-0000000000000000", 1, "y")
    with pytest.raises(plans.NotFound):
        rig.book.ingest_usage(OPERATOR, kind="data", amount=1, at=rig.clock(), idempotency_key="z", imsi="001019999999999")
    with pytest.raises(plans.NotFound):  # right member, wrong plan
        rig.book.ingest_usage(OPERATOR, kind="data", amount=1, at=rig.clock(), idempotency_key="w",
                              plan_id="plan-0000000000000000", member_id=a)


def test_usage_by_imsi_reaches_the_member():
    rig = make_rig()
    plan, owner, _ = new_plan(rig.book)
    order = rig.book.invite(owner, plan.plan_id, "Ann")
    result = rig.book.ingest_usage(OPERATOR, kind="sms", amount=2, at=rig.clock(), idempotency_key="s1",
                                   imsi=order.profile.imsi)
    assert result.record.member_id == order.member.member_id


def test_only_the_operator_ingests():
    rig, plan, owner, (o, a, b) = plan_with_members("shared")
    with pytest.raises(plans.Forbidden):
        rig.book.ingest_usage(owner, kind="data", amount=1, at=rig.clock(), idempotency_key="k", member_id=a)


# --- periods ------------------------------------------------------------------------------------------------


def test_periods_roll_over_and_late_records_land_in_their_period():
    rig, plan, owner, (o, a, b) = plan_with_members("fixed")
    rig.book.set_caps(owner, plan.plan_id, a, {"data": {"amount": 100}})
    assert use(rig, a, 100, "p0").throttled is True
    last_moment = plan.anchor + timedelta(days=plan.period_days) - timedelta(microseconds=1)
    rig.clock.now = last_moment
    assert rig.book.plan_usage(owner, plan.plan_id)["period"] == 0
    rig.clock.advance(microseconds=1)  # the first instant of period 1
    usage = rig.book.plan_usage(owner, plan.plan_id)
    assert usage["period"] == 1 and usage["pool"]["data"]["used"] == 0
    assert line(rig, owner, plan, a)["throttled"] is False
    fresh = use(rig, a, 40, "p1")
    assert (fresh.record.period, fresh.record.charged) == (1, 40)
    late = use(rig, b, 10, "late", at=last_moment)  # arrives now, happened in period 0
    assert late.record.period == 0
    assert rig.book.plan_usage(owner, plan.plan_id, period=0)["pool"]["data"]["used"] == 110
    rig.clock.advance(days=plan.period_days)  # period 2: period 0 is closed for good
    with pytest.raises(plans.Conflict):
        use(rig, b, 10, "too-late", at=last_moment)
    with pytest.raises(plans.InvalidRequest):
        use(rig, b, 10, "future", at=rig.clock() + timedelta(hours=1))


def test_period_arithmetic_starts_at_midnight_of_creation_day():
    rig = make_rig()
    plan, _, _ = new_plan(rig.book, period_days=7)
    assert plan.anchor == START.replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = plans.period_bounds(plan, 3)
    assert (start - plan.anchor, end - start) == (timedelta(days=21), timedelta(days=7))
    assert plans.period_of(plan, start) == 3 and plans.period_of(plan, start - timedelta(microseconds=1)) == 2


# --- invariants -------------------------------------------------------------------------------------------


caps_strategy = st.one_of(st.none(), st.integers(0, 1500).map(lambda a: ("amount", a)),
                          st.integers(0, 10_000).map(lambda bp: ("share_bp", bp)))


@settings(max_examples=300, deadline=None)
@given(policy=st.sampled_from(list(Policy)), pool=st.integers(0, 5000),
       caps=st.lists(caps_strategy, min_size=1, max_size=6),
       history=st.lists(st.lists(st.integers(0, 4000), max_size=3), min_size=6, max_size=6))
def test_allowances_fit_the_pool_and_the_caps(policy, pool, caps, history):
    members = [f"m{i}" for i in range(len(caps))]
    cap_objects = {m: Cap(m, "data", **{c[0]: c[1]}) for m, c in zip(members, caps, strict=True) if c}
    if policy is Policy.FIXED and sum(c.resolve(pool) for c in cap_objects.values()) > pool:
        return  # refused by set_caps; nothing to allocate
    result = allowances_for_kind(policy, pool, members, cap_objects, dict(zip(members, history, strict=False)))
    assert set(result) == set(members)
    for member, allowance in result.items():
        assert 0 <= allowance <= pool
        if member in cap_objects:
            assert allowance <= cap_objects[member].resolve(pool)
    if policy is not Policy.SHARED:
        assert sum(result.values()) <= pool
    if policy is Policy.FIXED:
        for member, cap in cap_objects.items():
            assert result[member] == cap.resolve(pool)


@settings(max_examples=200, deadline=None)
@given(pool=st.integers(1, 10_000), low=st.integers(0, 5000), extra=st.integers(1, 5000), others=st.integers(0, 5))
def test_dynamic_allowance_grows_with_demand(pool, low, extra, others):
    members = ["light", "heavy"] + [f"o{i}" for i in range(others)]
    history = {"light": [low], "heavy": [low + extra]}
    result = allowances_for_kind(Policy.DYNAMIC, pool, members, {}, history)
    assert result["heavy"] >= result["light"] >= pool // 2 // len(members)


@pytest.mark.parametrize(("amount", "member_left", "pool_left", "expected"), [
    (10, 100, 100, (10, 0)), (10, 4, 100, (4, 6)), (10, 100, 3, (3, 7)), (10, 0, 5, (0, 10)), (10, 5, 0, (0, 10)),
])  # fmt: skip
def test_charge(amount, member_left, pool_left, expected):
    assert charge(amount, member_left, pool_left) == expected


record_strategy = st.tuples(st.integers(0, 2), st.sampled_from(["data", "sms"]), st.integers(1, 400),
                            st.integers(0, 14))  # member index, kind, amount, key (small: repeats happen)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.sampled_from(["fixed", "shared", "dynamic"]), records=st.lists(record_strategy, max_size=25),
       cap=st.one_of(st.none(), st.integers(0, 500)))
def test_accounting_invariants(policy, records, cap):
    rig, plan, owner, members = plan_with_members(policy)
    if cap is not None:
        rig.book.set_caps(owner, plan.plan_id, members[1], {"data": {"amount": cap}})
    first_seen: dict[str, plans.UsageRecord] = {}
    arrival: list[plans.UsageRecord] = []  # first occurrences, in the order they were accounted
    for member_index, kind, amount, key in records:
        key = str(key)
        previous = first_seen.get(key)
        if previous is not None and (previous.member_id, previous.kind, previous.amount) != (
                members[member_index], kind, amount):
            with pytest.raises(plans.Conflict):
                use(rig, members[member_index], amount, key, kind=kind)
            continue
        result = use(rig, members[member_index], amount, key, kind=kind)
        record = result.record
        assert record.charged + record.excess == record.amount and record.charged >= 0 and record.excess >= 0
        assert result.pool_remaining >= 0 and result.member_remaining >= 0
        assert result.throttled == (result.member_remaining == 0)
        if previous is not None:
            assert result.duplicate and record == previous
        else:
            assert not result.duplicate
            first_seen[key] = record
            arrival.append(record)
    usage = rig.book.plan_usage(owner, plan.plan_id)
    for kind, pool in plan.pool.items():
        charged = sum(r.charged for r in arrival if r.kind == kind)
        assert usage["pool"][kind]["used"] == charged <= pool
        assert usage["pool"][kind]["remaining"] == pool - charged
        for member in usage["members"]:
            mine = sum(r.charged for r in arrival if r.kind == kind and r.member_id == member["member_id"])
            assert member["usage"][kind]["used"] == mine <= member["usage"][kind]["allowance"]
    if policy == "shared" and cap is None:  # first come, first served: each got what the pool still had
        left = dict(plan.pool)
        for record in arrival:
            assert record.charged == min(record.amount, left[record.kind])
            left[record.kind] -= record.charged
