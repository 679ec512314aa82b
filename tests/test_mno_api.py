"""mno.api over HTTP: the OpenAPI document, authentication, who may see what on every endpoint of that
document, the whole owner flow, QR images, error mapping, and logs without personal data."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from mno import plans
from mno.api import ROUTES, create_app, openapi_document
from mno.plans import OPERATOR, ProgressEvent
from rsp import status
from rsp.errors import StatusCodeError
from tests.mno_fixtures import EID_A, EID_B, OPERATOR_TOKEN, START, make_rig

PLAN_PATH = "/api/v1/plans"
A_NAME, B_NAME = "Alice Private", "Bruno Member"
A_AMOUNT = 12_345  # a number that appears nowhere but in Alice's records
A_KEY = "alice-secret-record-key"
OPERATIONS = [(path, method, op) for path, item in openapi_document()["paths"].items()
              for method, op in item.items()]
GUARDED = [(p, m, op) for p, m, op in OPERATIONS if op["x-kinsim-access"] not in (["public"], ["smdp"])]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    client: TestClient
    rig: object
    plan_id: str
    owner_token: str
    a: object  # Alice's invite (installed, with usage)
    a_token: str
    b_token: str
    b_id: str
    pending: object  # a pending invitation
    other_plan: str
    x_token: str  # a member of another plan

    def secrets(self) -> list[str]:
        profile = self.a.order.profile
        return [EID_A, profile.iccid, profile.imsi, A_NAME, A_KEY, str(A_AMOUNT), self.a_token,
                self.a.order.confirmation_code, self.a.invitation.matching_id]

    def snapshot(self) -> dict:
        book = self.rig.book
        return {
            "audit": len(book.audit_log(OPERATOR, None)),
            "members": [(m.member_id, m.state, m.eid, m.iccid) for m in book.list_members(OPERATOR, self.plan_id)],
            "usage": book.plan_usage(OPERATOR, self.plan_id),
            "invitations": [(i.invitation_id, i.state) for i in book.list_invitations(OPERATOR, self.plan_id)],
            "caps": book.caps(OPERATOR, self.plan_id),
            "plans": book.list_plans(OPERATOR),
            "smdp": list(self.rig.smdp.calls),
        }


async def build_world() -> World:
    rig = make_rig()
    client = TestClient(TestServer(create_app(rig.service)))
    await client.start_server()
    created = await (await client.post(PLAN_PATH, headers=auth(OPERATOR_TOKEN), json={
        "name": "Family", "owner_name": "Olga Owner", "max_members": 6, "pool": {"data": 100_000, "sms": 50},
        "policy": "shared"})).json()
    plan_id, owner_token = created["plan"]["plan_id"], created["owner_token"]
    owner = rig.book.authenticate(owner_token)
    a = await rig.service.invite(owner, plan_id, A_NAME, eid=EID_A)
    b = await rig.service.invite(owner, plan_id, B_NAME)
    for invite, eid in ((a, EID_A), (b, EID_B)):
        await rig.service.handle_progress("smdp", ProgressEvent(invite.order.profile.iccid, 4, True, eid,
                                                                operation="install", install_ok=True))
    rig.book.ingest_usage(OPERATOR, kind="data", amount=A_AMOUNT, at=START, idempotency_key=A_KEY,
                          member_id=a.order.member.member_id)
    rig.book.ingest_usage(OPERATOR, kind="data", amount=1_000, at=START, idempotency_key="owner-1",
                          member_id=owner.member_id)  # so the pool total is not Alice's alone
    pending = await rig.service.invite(owner, plan_id, "Carla Pending")
    _, _, other_owner = rig.book.create_plan(OPERATOR, "Other", "Xavier", 3, {"data": 10})
    other = rig.book.authenticate(other_owner)
    x = await rig.service.invite(other, other.plan_id, "Xena")
    return World(client, rig, plan_id, owner_token, a, a.order.member_token, b.order.member_token,
                 b.order.member.member_id, pending, other.plan_id, x.order.member_token)


@pytest_asyncio.fixture
async def world():
    w = await build_world()
    yield w
    await w.client.close()


def url_for(world: World, path: str, member_id: str | None = None, plan_id: str | None = None) -> str:
    return (path.replace("{plan_id}", plan_id or world.plan_id)
                .replace("{member_id}", member_id or world.a.order.member.member_id)
                .replace("{invitation_id}", world.pending.invitation.invitation_id))


def body_for(world: World, path: str, method: str) -> dict | None:
    """A request that would succeed for a caller allowed to make it."""
    if method in ("get", "delete"):
        return None
    bodies = {
        ("post", PLAN_PATH): {"name": "P", "owner_name": "Q", "max_members": 2, "pool": {"data": 1}},
        ("patch", "/api/v1/plans/{plan_id}"): {"policy": "fixed"},
        ("post", "/api/v1/plans/{plan_id}/members"): {"display_name": "Eve"},
        ("put", "/api/v1/plans/{plan_id}/members/{member_id}/caps"): {"data": {"amount": 1}},
        ("post", "/api/v1/plans/{plan_id}/members/{member_id}/profiles"): {"eid": EID_B},
        ("post", "/api/v1/usage"): {"kind": "data", "amount": 1, "at": START.isoformat(), "idempotency_key": "n1",
                                    "member_id": world.a.order.member.member_id},
    }
    return bodies.get((method, path), {})


async def call(world: World, method: str, url: str, token: str | None, body=None):
    headers = auth(token) if token else {}
    return await world.client.request(method.upper(), url, headers=headers, json=body)


# --- the document ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openapi_document_is_served_and_covers_every_route(world):
    response = await world.client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document == openapi_document() and document["openapi"].startswith("3.")
    served = {(r.method.lower(), r.path) for r in ROUTES}
    documented = {(m, p) for p, m, _ in OPERATIONS}
    assert served == documented
    ids = [op["operationId"] for _, _, op in OPERATIONS]
    assert len(ids) == len(set(ids))
    for path, _, op in OPERATIONS:
        named = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert named == set(re.findall(r"{(\w+)}", path))
        assert set(op["x-kinsim-access"]) <= {"public", "operator", "owner", "self", "member", "smdp"}


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "method", "op"), GUARDED, ids=[op["operationId"] for _, _, op in GUARDED])
async def test_every_guarded_endpoint_needs_a_valid_token(world, path, method, op):
    for token in (None, "kst_unknown"):
        response = await call(world, method, url_for(world, path), token, body_for(world, path, method))
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "method", "op"), GUARDED, ids=[op["operationId"] for _, _, op in GUARDED])
async def test_a_member_cannot_reach_another_members_data(world, path, method, op):
    before = world.snapshot()
    response = await call(world, method, url_for(world, path), world.b_token, body_for(world, path, method))
    text = await response.text()
    if "member" in op["x-kinsim-access"]:
        assert response.status == 200  # plan-wide reads: the shared parts only
    else:
        assert response.status in (403, 404), (response.status, text)
    for secret in world.secrets():
        assert secret not in text, secret
    assert world.snapshot() == before
    assert world.rig.book.authenticate(world.a_token).member_id == world.a.order.member.member_id


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "method", "op"), GUARDED, ids=[op["operationId"] for _, _, op in GUARDED])
async def test_a_member_of_another_plan_reaches_nothing(world, path, method, op):
    before = world.snapshot()
    response = await call(world, method, url_for(world, path), world.x_token, body_for(world, path, method))
    text = await response.text()
    if op["operationId"] == "whoAmI":
        assert (await response.json())["plan_id"] == world.other_plan
    else:
        assert response.status in (403, 404), (response.status, text)
    for secret in world.secrets():
        assert secret not in text
    assert world.snapshot() == before


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "method", "op"), GUARDED, ids=[op["operationId"] for _, _, op in GUARDED])
async def test_the_owner_never_gets_a_members_private_data_or_identity(world, path, method, op):
    """The owner manages Alice's line but must not read her EID, numbers or records, nor obtain a token
    that acts as her (which would open all of those)."""
    response = await call(world, method, url_for(world, path), world.owner_token, body_for(world, path, method))
    text = (await response.read()).decode("latin-1")  # QR images too
    profile = world.a.order.profile
    for secret in (EID_A, profile.iccid, profile.imsi, A_KEY, world.a_token):
        assert secret not in text, secret
    alice = world.a.order.member.member_id
    for token in re.findall(r"kst_[A-Za-z0-9_-]+", text):
        assert world.rig.book.authenticate(token).member_id != alice, op["operationId"]


@pytest.mark.asyncio
async def test_owner_sees_totals_members_see_their_line(world):
    owner_view = await (await world.client.get(f"{PLAN_PATH}/{world.plan_id}/usage", headers=auth(world.owner_token))).json()
    lines = {m["display_name"]: m["usage"]["data"]["used"] for m in owner_view["members"]}
    assert lines[A_NAME] == A_AMOUNT and owner_view["pool"]["data"]["remaining"] == 100_000 - A_AMOUNT - 1_000
    member_view = await (await world.client.get(f"{PLAN_PATH}/{world.plan_id}/usage", headers=auth(world.b_token))).json()
    assert [m["display_name"] for m in member_view["members"]] == [B_NAME]
    assert member_view["pool"] == owner_view["pool"]
    own = await (await world.client.get(f"{PLAN_PATH}/{world.plan_id}/members/{world.a.order.member.member_id}/usage",
                                        headers=auth(world.a_token))).json()
    assert [(r["idempotency_key"], r["amount"]) for r in own["records"]] == [(A_KEY, A_AMOUNT)]
    forbidden = await world.client.get(f"{PLAN_PATH}/{world.plan_id}/members/{world.a.order.member.member_id}/usage",
                                       headers=auth(world.owner_token))
    assert forbidden.status == 403  # not even the owner reads a member's records
    members = await (await world.client.get(f"{PLAN_PATH}/{world.plan_id}/members", headers=auth(world.owner_token))).json()
    assert EID_A not in str(members) and world.a.order.profile.iccid not in str(members)


# --- the owner's flow ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_owner_flow_through_the_api(world):
    client, owner = world.client, auth(world.owner_token)
    base = f"{PLAN_PATH}/{world.plan_id}"
    response = await client.post(base + "/members", headers=owner, json={"display_name": "Dan", "role": "child"})
    assert response.status == 201
    invite = await response.json()
    assert invite["activation_code"].startswith("1$smdp.kinsim.test$") and invite["confirmation_code"]
    assert invite["qr_payload"] == "LPA:" + invite["activation_code"]
    dan = invite["member"]["member_id"]
    png = await client.get(invite["qr"]["png"], headers=owner)
    assert png.status == 200 and png.content_type == "image/png" and (await png.read())[:4] == b"\x89PNG"
    svg = await client.get(invite["qr"]["svg"], headers=owner)
    assert svg.content_type == "image/svg+xml" and b"<svg" in await svg.read()
    caps = await client.put(f"{base}/members/{dan}/caps", headers=owner, json={"data": {"share": 0.1}})
    assert (await caps.json())["caps"] == {"data": {"share": 0.1}}
    record = {"kind": "data", "amount": 20_000, "at": START.isoformat(), "idempotency_key": "d1", "member_id": dan}
    ingested = await (await client.post("/api/v1/usage", headers=auth(OPERATOR_TOKEN), json=record)).json()
    assert (ingested["charged"], ingested["excess"], ingested["throttled"]) == (10_000, 10_000, True)
    batch = await (await client.post("/api/v1/usage", headers=auth(OPERATOR_TOKEN),
                                     json={"records": [record, {**record, "amount": 1}]})).json()
    assert batch["results"][0]["duplicate"] is True and batch["results"][1]["error"]["type"] == "Conflict"
    dan_token = invite["member_token"]
    notices = await (await client.get(f"{base}/members/{dan}/notices", headers=auth(dan_token))).json()
    assert notices["notices"][0]["kind"] == "throttled"
    revoked = await client.delete(f"{base}/members/{world.b_id}", headers=owner)
    assert (await revoked.json())["member"]["state"] == "revoked"
    gone = await client.get(f"{base}/usage", headers=auth(world.b_token))
    assert gone.status == 401  # the revoked member's token no longer works
    audit = await (await client.get(f"{base}/audit", headers=owner)).json()
    actions = [e["action"] for e in audit["events"]]
    for action in ("plan.created", "member.invited", "caps.set", "member.throttled", "member.revoked"):
        assert action in actions
    used = await client.get(f"{PLAN_PATH}/{world.plan_id}/invitations/{world.a.invitation.invitation_id}/qr.png",
                            headers=owner)
    assert used.status == 409  # a used invitation has no QR code any more


@pytest.mark.asyncio
async def test_bad_requests_are_400_and_change_nothing(world):
    before = world.snapshot()
    owner = auth(world.owner_token)
    base = f"{PLAN_PATH}/{world.plan_id}"
    for method, path, body in (
        ("post", base + "/members", {"display_name": ""}),
        ("post", base + "/members", {"display_name": "E", "eid": "1234"}),
        ("post", base + "/members", {"display_name": "E", "cc_required": "yes"}),
        ("put", f"{base}/members/{world.b_id}/caps", {"data": {"share": 2}}),
        ("patch", base, {"policy": "random"}),
        ("patch", base, {"owner_member_id": "mem-x"}),
    ):
        response = await world.client.request(method.upper(), path, headers=owner, json=body)
        assert response.status == 400, (path, body, await response.text())
    not_json = await world.client.post(base + "/members", headers=owner, data=b"{nope")
    assert not_json.status == 400
    assert world.snapshot() == before


@pytest.mark.asyncio
async def test_out_of_range_values_are_400_not_server_errors(world):
    before = world.snapshot()
    owner, operator = auth(world.owner_token), auth(OPERATOR_TOKEN)
    base = f"{PLAN_PATH}/{world.plan_id}"
    plan = {"name": "P", "owner_name": "Q", "max_members": 2, "pool": {"data": 1}}
    record = {"kind": "data", "amount": 1, "at": START.isoformat(), "member_id": world.b_id}
    for method, path, token, body in (
        ("get", base + "/usage?period=99999999999", owner, None),
        ("get", base + "/usage?period=-1", owner, None),
        ("get", f"{base}/members/{world.b_id}/usage?period=99999999999", auth(world.b_token), None),
        ("post", base + "/members", owner, {"display_name": "Z", "ttl_seconds": 10**20}),
        ("post", PLAN_PATH, operator, {**plan, "max_members": True}),
        ("post", PLAN_PATH, operator, {**plan, "period_days": True}),
        ("post", PLAN_PATH, operator, {**plan, "cc_required": "false"}),
        ("post", PLAN_PATH, operator, {**plan, "template": {"file": "x"}}),
        ("post", PLAN_PATH, operator, {**plan, "template": "../../secret.der"}),
        ("patch", base, operator, {"max_members": True}),
        ("post", "/api/v1/usage", operator, {**record, "idempotency_key": "tab\there"}),
    ):
        response = await world.client.request(method.upper(), path, headers=token, json=body)
        assert response.status == 400, (path, body, await response.text())
    assert world.snapshot() == before


@pytest.mark.asyncio
async def test_smdp_refusal_is_a_502_with_the_spec_codes(world):
    world.rig.smdp.fail_confirm = StatusCodeError(status.PROFILE_TYPE_UNAVAILABLE, "no profiles left")
    response = await world.client.post(f"{PLAN_PATH}/{world.plan_id}/members", headers=auth(world.owner_token),
                                       json={"display_name": "Fay"})
    assert response.status == 502
    error = (await response.json())["error"]
    assert (error["subjectCode"], error["reasonCode"]) == ("8.2.5", "3.7")
    states = [i.state for i in world.rig.book.list_invitations(OPERATOR, world.plan_id)]
    assert states.count(plans.InvitationState.FAILED) == 1


@pytest.mark.asyncio
async def test_smdp_sentences_naming_a_members_numbers_reach_the_operator_only(world):
    alice = world.a.order.member.member_id
    for token, shown in ((world.owner_token, False), (OPERATOR_TOKEN, True)):
        plan = world.rig.book.get_plan(OPERATOR, world.plan_id)
        next_iccid = plan.numbering.iccid(plan.numbering.iccid_first + plan.next_serial)  # Alice's new profile
        world.rig.smdp.fail_confirm = StatusCodeError(status.EID_MISMATCH, f"the order for {next_iccid} is not for "
                                                      f"EID {EID_B}")
        response = await world.client.post(f"{PLAN_PATH}/{world.plan_id}/members/{alice}/profiles",
                                           headers=auth(token), json={})  # a device change for Alice
        error = (await response.json())["error"]
        assert response.status == 502 and (error["subjectCode"], error["reasonCode"]) == ("8.1.1", "3.10")
        assert (next_iccid in error["message"]) is shown and (EID_B in error["message"]) is shown


@pytest.mark.asyncio
async def test_security_headers_and_the_owner_page_are_served(world):
    response = await world.client.get("/owner/")
    assert response.status == 200 and "text/html" in response.content_type
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await world.client.get("/owner/app.js")).status == 200
    assert (await world.client.get("/owner/../store.py")).status == 404
    assert (await world.client.get("/owner/secrets.txt")).status == 404


@pytest.mark.asyncio
async def test_the_background_sweep_expires_invitations_and_outlives_a_failed_round():
    rig = make_rig()
    _, _, owner_token = rig.book.create_plan(OPERATOR, "F", "Olga", 3, {"data": 10})
    owner = rig.book.authenticate(owner_token)
    invite = await rig.service.invite(owner, owner.plan_id, "Late Larry")
    rig.clock.advance(days=8)  # past the default week
    rounds = []
    expire = rig.service.expire_invitations

    async def first_round_fails():
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("a driver error that is no KinsimError")
        return await expire()

    rig.service.expire_invitations = first_round_fails
    client = TestClient(TestServer(create_app(rig.service, sweep_interval=0.001)))
    await client.start_server()
    try:
        async def swept() -> None:
            while rig.book.get_invitation(owner, owner.plan_id, invite.invitation.invitation_id).state \
                    is not plans.InvitationState.EXPIRED:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(swept(), 30)  # a guard against a dead sweeper, not a timing assertion
    finally:
        await client.close()
    assert len(rounds) >= 2 and ("cancelOrder", {"iccid": invite.order.profile.iccid,
                                                "final_status": "Unavailable"}) in rig.smdp.calls


@pytest.mark.asyncio
async def test_logs_carry_no_personal_data(caplog):
    caplog.set_level(logging.DEBUG, logger="kinsim")
    w = await build_world()
    try:
        owner = auth(w.owner_token)
        base = f"{PLAN_PATH}/{w.plan_id}"
        for path in ("/usage", "/members", "/invitations", "/audit", f"/members/{w.b_id}"):
            await w.client.get(base + path, headers=owner)
        await w.client.post(base + "/members", headers=owner, json={"display_name": "Gina Logged", "eid": EID_B})
        await w.client.delete(f"{base}/members/{w.b_id}", headers=owner)
        await w.client.get(base + "/usage", headers=auth("kst_bad-token-value"))
    finally:
        await w.client.close()
    text = caplog.text
    assert "GET /api/v1/plans/{plan_id}/usage -> 200 (owner)" in text
    for secret in (*w.secrets(), B_NAME, "Gina Logged", EID_B, w.owner_token, "kst_bad-token-value", w.plan_id):
        assert secret not in text, secret
