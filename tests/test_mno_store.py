"""mno.store on PostgreSQL: the same behaviour as the in-memory store, migrations, atomicity,
concurrent accounting, schema isolation, and the authenticator's table (AKA against a software USIM)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mno import plans
from mno.authenticator import AuthenticationRefused, Authenticator, ChallengeOutcome, Subscriber
from mno.plans import OPERATOR, InMemoryPlanStore, ProgressEvent
from mno.store import MIGRATIONS, PgStore, StoreUnavailable
from rsp import aka
from tests.mno_fixtures import EID_A, SoftUsim, make_rig, new_plan, seeded_rng, temporary_pg_store

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store():
    yield from temporary_pg_store()

MILENAGE_K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")  # TS 35.208 test set 1
MILENAGE_OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")


async def scenario(rig) -> dict:
    """Every kind of write the core does, returning what the API would show."""
    plan, owner, _ = new_plan(rig.book, policy="fixed")
    invites = [await rig.service.invite(owner, plan.plan_id, name, eid=eid) for name, eid in (("Ann", EID_A),
                                                                                                ("Bob", None))]
    ann, bob = (i.order.member.member_id for i in invites)
    await rig.service.handle_progress("smdp", ProgressEvent(invites[0].order.profile.iccid, 4, True, EID_A,
                                                            operation="install", install_ok=True))
    rig.book.set_caps(owner, plan.plan_id, ann, {"data": {"amount": 3000}, "sms": {"share": 0.25}})
    for key, member, amount in (("k1", ann, 2500), ("k2", ann, 900), ("k1", ann, 2500), ("k3", bob, 50)):
        rig.book.ingest_usage(OPERATOR, kind="data", amount=amount, at=rig.clock(), idempotency_key=key,
                              member_id=member)
    await rig.service.revoke_member(owner, plan.plan_id, bob)
    rig.book.rotate_token(OPERATOR, plan.plan_id, ann)
    ann_principal = plans.Principal("member", plan.plan_id, ann)
    return {
        "usage": rig.book.plan_usage(owner, plan.plan_id),
        "members": [plans.member_view(m, OPERATOR) for m in rig.book.list_members(OPERATOR, plan.plan_id)],
        "profiles": [plans.profile_view(p) for p in rig.book.get_member(OPERATOR, plan.plan_id, ann)[1]],
        "invitations": [plans.invitation_view(i, rig.clock()) for i in rig.book.list_invitations(owner, plan.plan_id)],
        "records": [plans.usage_record_view(r) for r in rig.book.member_records(ann_principal, plan.plan_id, ann)],
        "audit": [plans.audit_view(e) for e in rig.book.audit_log(OPERATOR, plan.plan_id)],
        "notices": [n.details for n in rig.book.notices(ann_principal, plan.plan_id, ann)],
        "caps": rig.book.caps(owner, plan.plan_id),
        "smdp": rig.smdp.calls,
    }


@pytest.mark.asyncio
async def test_postgres_store_behaves_like_the_in_memory_store(pg_store):
    on_postgres = await scenario(make_rig(pg_store, auth_store=pg_store.authenticator_store()))
    in_memory = await scenario(make_rig(InMemoryPlanStore()))
    for key in in_memory:
        assert on_postgres[key] == in_memory[key], key
    assert on_postgres["usage"]["pool"]["data"]["used"] == 3050


def test_migration_is_idempotent_and_versioned(pg_store):
    assert pg_store.migrate() == len(MIGRATIONS)
    assert pg_store.migrate() == len(MIGRATIONS)
    with pg_store._autocommit() as conn:
        versions = [r["version"] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_a_failed_unit_of_work_changes_nothing(pg_store):
    rig = make_rig(pg_store)
    plan, owner, _ = new_plan(rig.book, max_members=1)
    before = [plans.audit_view(e) for e in rig.book.audit_log(owner, plan.plan_id)]
    with pytest.raises(plans.Conflict):
        rig.book.invite(owner, plan.plan_id, "Nobody")
    assert [plans.audit_view(e) for e in rig.book.audit_log(owner, plan.plan_id)] == before
    assert len(rig.book.list_members(owner, plan.plan_id)) == 1
    assert rig.book.get_plan(owner, plan.plan_id).next_serial == 0


def test_schemas_are_isolated(pg_store):
    other = PgStore(pg_store.dsn, schema=pg_store.schema + "_b")
    other.migrate()
    try:
        plan, _, _ = new_plan(make_rig(pg_store).book)
        assert make_rig(other).book.list_plans(OPERATOR) == []
        assert [p.plan_id for p in make_rig(pg_store).book.list_plans(OPERATOR)] == [plan.plan_id]
    finally:
        other.drop_schema()


def test_concurrent_ingestion_is_exact_and_never_overdraws(pg_store):
    rig = make_rig(pg_store)
    plan, owner, _ = new_plan(rig.book, pool={"data": 1000})
    members = [rig.book.invite(owner, plan.plan_id, f"M{i}").member.member_id for i in range(3)]
    jobs = [(members[i % 40 % 3], f"key-{i % 40}", 37) for i in range(120)]  # every record sent three times

    def send(job):
        member, key, amount = job
        return rig.book.ingest_usage(OPERATOR, kind="data", amount=amount, at=rig.clock(), idempotency_key=key,
                                     member_id=member)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(send, jobs))
    unique = {r.record.idempotency_key: r.record for r in results}
    assert len(unique) == 40 and sum(not r.duplicate for r in results) == 40
    charged = sum(r.charged for r in unique.values())
    assert charged == 1000  # 40 x 37 asked for, the pool ran dry exactly
    usage = rig.book.plan_usage(owner, plan.plan_id)["pool"]["data"]
    assert (usage["used"], usage["remaining"]) == (1000, 0)


def test_values_postgres_cannot_hold_are_refused_without_change(pg_store):
    rig = make_rig(pg_store)
    plan, owner, _ = new_plan(rig.book)
    member = rig.book.invite(owner, plan.plan_id, "Ann").member.member_id
    before = rig.book.plan_usage(OPERATOR, plan.plan_id), rig.book.audit_log(OPERATOR, plan.plan_id)
    for lookup in (lambda: rig.book.get_member(OPERATOR, plan.plan_id, "mem-\x00"),
                   lambda: rig.book.get_plan(OPERATOR, "plan-\x00"),
                   lambda: rig.book.ingest_usage(OPERATOR, kind="data", amount=1, at=rig.clock(), idempotency_key="k",
                                                 member_id="\x00"),
                   lambda: rig.book.ingest_usage(OPERATOR, kind="data", amount=1, at=rig.clock(), idempotency_key="k",
                                                 imsi="\x00"),
                   lambda: rig.book.ingest_usage(OPERATOR, kind="data", amount=1, at=rig.clock(),
                                                 idempotency_key="a\x00b", member_id=member)):
        with pytest.raises(plans.InvalidRequest):
            lookup()
    assert (rig.book.plan_usage(OPERATOR, plan.plan_id), rig.book.audit_log(OPERATOR, plan.plan_id)) == before


def test_unreachable_database_is_a_clear_error():
    store = PgStore("postgresql://127.0.0.1:1/none", schema="kinsim_nowhere")
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        store.migrate()


# --- the authenticator's table ------------------------------------------------------------------------------


def test_authenticator_on_postgres_authenticates_bars_and_resynchronises(pg_store):
    auc = Authenticator(pg_store.authenticator_store(), rng=seeded_rng(b"auc"))
    subscriber = Subscriber(imsi="001010000000001", iccid="89882470000000000006", algorithm="milenage",
                            k=MILENAGE_K, opc=MILENAGE_OPC)
    auc.provision(subscriber)
    assert auc.subscriber(subscriber.imsi) == subscriber
    card = SoftUsim(MILENAGE_K, MILENAGE_OPC)
    assert auc.challenge(subscriber.imsi, card) is ChallengeOutcome.AUTHENTICATED
    assert auc.challenge(subscriber.imsi, card) is ChallengeOutcome.AUTHENTICATED
    vector = auc.generate_vector(subscriber.imsi)
    assert auc.verify_response(subscriber.imsi, vector.rand, vector.xres) is True
    assert auc.verify_response(subscriber.imsi, vector.rand, vector.xres) is False  # each vector answers once
    # a card that has seen a much higher SQN: one resynchronisation, then success
    ahead = SoftUsim(MILENAGE_K, MILENAGE_OPC)
    ahead.sqn_state = tuple(aka.join_sqn(500, i) for i in range(32))
    assert auc.challenge(subscriber.imsi, ahead) is ChallengeOutcome.AUTHENTICATED
    auc.bar(subscriber.imsi)
    with pytest.raises(AuthenticationRefused):
        auc.challenge(subscriber.imsi, card)
    assert auc.subscriber(subscriber.imsi).barred is True


def test_authenticator_keeps_milenage_constants_and_never_reuses_an_sqn(pg_store):
    store = pg_store.authenticator_store()
    constants = aka.MilenageConstants(r=(10, 20, 30, 40, 50), c=tuple(bytes([i]) * 16 for i in range(5)))
    subscriber = Subscriber(imsi="001010000000002", iccid="89882470000000000014", algorithm="milenage",
                            k=MILENAGE_K, opc=MILENAGE_OPC, milenage_constants=constants)
    auc = Authenticator(store)
    auc.provision(subscriber)
    assert store.get(subscriber.imsi).milenage_constants == constants
    lock = threading.Lock()
    sqns: list[bytes] = []

    def draw(_):
        vector = auc.generate_vector(subscriber.imsi)
        with lock:
            sqns.append(vector.autn[:6])  # SQN xor AK: distinct SQNs give distinct values for one K

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(draw, range(24)))
    assert len(set(sqns)) == 24
