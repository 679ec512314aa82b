"""Acceptance: a family plan end to end, every role a real server on its own loopback HTTPS port.

The plan service (PostgreSQL, REST API, ES2+ callback), the SM-DP+ (ES9+ and ES2+ with mutual TLS,
kinsim's uploadProfile hand-over, SGP.22 v3 RpmOrder), the SM-DS (ES11, ES12) and three software
eUICCs driven by the LPA. The owner invites three members; two download with their activation code
and confirmation code, the third (an EID-bound invitation) finds its profile through the SM-DS. Each
profile passes AKA through its card's USIM. Usage ingestion enforces a cap. Refusals carry the spec's
codes: another eUICC (8.1.1/3.8), a wrong confirmation code (8.2.7/3.8, counted), a used invitation
(8.2.6/3.8). Revoking a member bars AKA, and at the member's next LPA contact the SM-DS event leads to
an RPM package that deletes the profile from the card; the eUICC's signed result reconciles the plan.
A member's token reaches none of another member's data, on every endpoint of the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from lpa import manage
from lpa.discovery import Es11Client
from lpa.download import download_profile
from lpa.es9_client import Es9Pool
from lpa.es9_client import tls_context as lpa_tls_context
from lpa.es10 import Es10Client, ProfileRef
from lpa.rpm import RpmResult, next_contact
from lpa.transport import SimCardTransport
from mno.api import CallbackAuth, ServerTls, create_app, openapi_document
from mno.authenticator import AuthenticationRefused, Authenticator, ChallengeOutcome
from mno.es2_client import Es2Client, client_ssl_context
from mno.plans import OperatorConfig, PlanBook, token_hash
from mno.service import Es2RemoteManager, FamilyService, HttpProfileSink, ServiceConfig
from rsp import aka, status
from rsp.activation import parse_activation_code
from rsp.errors import ApduError, StatusCodeError
from rsp.saip import ProfilePackage
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.server import SmdpServer
from smdp.store import ProfileState, RpmState
from smdp.store import Store as SmdpStore
from tests.lpa_fixtures import software_card
from tests.mno_fixtures import OperatorPki, temporary_pg_store
from tests.smds_fixtures import pki as shared_pki
from tests.smds_fixtures import running_smds

pytestmark = pytest.mark.postgres

REQUESTER = "kinsim-mno"
OPERATOR_TOKEN = "kst_family-e2e-operator"
API = "/api/v1"
NAMES = {"a": "Ada Member", "b": "Ben Member", "c": "Cleo Member"}


# --- the deployment ----------------------------------------------------------------------------------


@dataclass
class Deployment:
    service: FamilyService
    smdp: SmdpCore
    smds: object  # tests.smds_fixtures.RunningSmds
    api_url: str
    http: aiohttp.ClientSession
    pool: Es9Pool
    ci_context: ssl.SSLContext
    cards: dict

    async def api(self, method: str, path: str, token: str | None, body=None) -> tuple[int, object, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.api_url + path, json=body, headers=headers) as response:
            text = await response.text()
            data = await response.json() if response.content_type == "application/json" else None
            return response.status, data, text

    def es10(self, name: str) -> Es10Client:
        return Es10Client(SimCardTransport(self.cards[name].card))


@pytest.fixture
def pg_store():
    yield from temporary_pg_store()


@pytest_asyncio.fixture
async def deployment(tmp_path, pg_store):
    pki = shared_pki()
    operator = OperatorPki.create()
    ca = operator.write_ca(tmp_path)
    client_cert, client_key = operator.write(tmp_path, "es2-client", *operator.issue(REQUESTER))
    api_cert, api_key = operator.write(tmp_path, "api", *operator.issue("plans.kinsim.test", dns="localhost"))
    ci_pem = tmp_path / "ci.pem"
    ci_pem.write_bytes(pki.ci.cert_pem)
    api_socket = socket.create_server(("127.0.0.1", 0))
    api_url = f"https://127.0.0.1:{api_socket.getsockname()[1]}"
    async with contextlib.AsyncExitStack() as stack:
        smds = await stack.enter_async_context(running_smds(tmp_path / "smds"))
        # The SM-DP+: its address carries the ES9+ port (what activation codes and SM-DS events name).
        smdp_store = SmdpStore.open(tmp_path / "smdp")
        stack.callback(smdp_store.close)
        config = SmdpConfig.for_pkis([pki], address="localhost", es2_client_ca=ca, callback_ca=ca,
                                     operators={REQUESTER: api_url}, callback_backoff=0.05)
        core = SmdpCore(config, smdp_store)
        server = SmdpServer(core)
        urls = await server.start(es2_port=0)
        stack.push_async_callback(server.stop)
        core.config = replace(core.config, address=f"localhost:{urls['es9'].rsplit(':', 1)[1]}")
        core.orders.config = core.config.order_settings
        # The plan service on PostgreSQL, talking ES2+ to the SM-DP+ and asking the SM-DS for bound invitations.
        es2 = Es2Client(urls["es2"], REQUESTER, ssl_context=client_ssl_context(client_cert, client_key, str(ci_pem)))
        stack.push_async_callback(es2.close)
        book = PlanBook(pg_store, OperatorConfig(operator_token_hashes=(token_hash(OPERATOR_TOKEN),)))
        service = FamilyService(book, Authenticator(pg_store.authenticator_store()), es2, HttpProfileSink(es2),
                                Es2RemoteManager(es2, smds.es12_address),
                                ServiceConfig(smdp_address=core.config.address, smds_address=smds.es12_address,
                                              smdp_requester_id=config.smdp_oid))
        runner = web.AppRunner(create_app(service, CallbackAuth()), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, api_socket, ssl_context=ServerTls(api_cert, api_key, str(ci_pem)).context()).start()
        http = await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca))))
        ci_context = lpa_tls_context([pki.ci.cert])
        pool = await stack.enter_async_context(Es9Pool(ci_context))
        cards = {}
        for name in NAMES:  # each device's eUICC knows the SM-DS as its root SM-DS
            cards[name] = software_card(pki, tmp_path / f"card-{name}", root_ds_address=smds.address)
            stack.callback(cards[name].close)
        yield Deployment(service, core, smds, api_url, http, pool, ci_context, cards)


# --- helpers ---------------------------------------------------------------------------------------------


async def eventually(check, what: str, timeout: float = 20.0):
    """Wait for the background operator callbacks (HandleDownloadProgressInfo) to land."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def download(d: Deployment, card: str, activation_code: str, code: str | None):
    target = parse_activation_code(activation_code)
    with d.es10(card) as es10:
        return await download_profile(es10, d.pool(target.smdp_address), smdp_address=target.smdp_address,
                                      matching_id=target.matching_id, smdp_oid=target.smdp_oid,
                                      confirmation_code=lambda: code, peers=d.pool)


async def refused(d: Deployment, card: str, activation_code: str, code: str | None) -> StatusCodeError:
    with pytest.raises(StatusCodeError) as failure:
        await download(d, card, activation_code, code)
    return failure.value


def usim(d: Deployment, card: str):
    """AUTHENTICATE (TS 31.102 7.1.2) through the card's APDU interface, on its enabled profile's USIM."""
    euicc = d.cards[card]
    aid = ProfilePackage.decode(euicc.enabled_package()).usim_aid

    def transmit(apdu: bytes) -> bytes:
        response = euicc.card.transmit(apdu)
        if response[-2] == 0x61:
            response = euicc.card.transmit(bytes([0x00, 0xC0, 0x00, 0x00, response[-1]]))
        if response[-2:] != b"\x90\x00":
            raise ApduError(int.from_bytes(response[-2:], "big"), "the USIM refused")
        return response[:-2]

    def authenticate(rand: bytes, autn: bytes) -> bytes:
        transmit(bytes([0x00, 0xA4, 0x04, 0x04, len(aid)]) + aid)
        data = aka.encode_authenticate_command(rand, autn)
        return transmit(bytes([0x00, 0x88, 0x00, 0x81, len(data)]) + data)

    return authenticate


async def enable_and_challenge(d: Deployment, card: str, imsi: str) -> ChallengeOutcome:
    with d.es10(card) as es10:
        profiles = manage.list_profiles(es10)
        await manage.enable_profile(es10, d.pool, ProfileRef(iccid=profiles[0].iccid))
    return d.service.authenticator.challenge(imsi, usim(d, card))


async def member_profile(d: Deployment, plan: str, member: str) -> dict:
    _, view, _ = await d.api("GET", f"{API}/plans/{plan}/members/{member}", OPERATOR_TOKEN)
    return view["profiles"][-1]


# --- the acceptance test -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_family_plan_end_to_end(deployment):
    d = deployment
    code, created, _ = await d.api("POST", f"{API}/plans", OPERATOR_TOKEN, {
        "name": "Family", "owner_name": "Olivia Owner", "max_members": 4, "policy": "shared",
        "pool": {"data": 10_000, "voice": 600, "sms": 100}})
    assert code == 201
    plan, owner = created["plan"]["plan_id"], created["owner_token"]
    invites = {}
    for name, eid in (("a", None), ("b", None), ("c", d.cards["c"].eid)):
        code, invite, text = await d.api("POST", f"{API}/plans/{plan}/members", owner,
                                         {"display_name": NAMES[name], **({"eid": eid} if eid else {})})
        assert code == 201, text
        invites[name] = invite
    member = {name: invite["member"]["member_id"] for name, invite in invites.items()}
    ac = {name: invite["activation_code"] for name, invite in invites.items()}
    cc = {name: invite["confirmation_code"] for name, invite in invites.items()}
    assert all(parse_activation_code(ac[n]).smdp_address == d.smdp.config.address for n in NAMES)

    order = {name: parse_activation_code(ac[name]).matching_id for name in NAMES}
    # An EID-bound invitation refuses any other eUICC (8.1.1 / 3.8); the order stays as it was.
    assert (await refused(d, "a", ac["c"], cc["c"])).code == status.EID_REFUSED
    bound = d.smdp.store.profile_by_matching_id(order["c"])
    assert (bound.state, bound.download_attempts, bound.eid) == (ProfileState.RELEASED, 0, d.cards["c"].eid)
    # A wrong confirmation code is refused (8.2.7 / 3.8) and counts against the attempt limit.
    assert (await refused(d, "b", ac["b"], "00000000")).code == status.CC_REFUSED
    assert d.smdp.store.profile_by_matching_id(order["b"]).cc_attempts == 1

    async def cc_failures():
        _, view, _ = await d.api("GET", f"{API}/plans/{plan}/invitations/{invites['b']['invitation']['invitation_id']}",
                                 owner)
        return view["cc_failures"] == 1 and view
    assert (await eventually(cc_failures, "the counted confirmation failure"))["state"] == "pending"

    # Members a and b download with their activation codes over HTTPS.
    installed = {name: (await download(d, name, ac[name], cc[name])).iccid for name in ("a", "b")}
    # Member c's LPA finds the bound invitation through the eUICC's root SM-DS (ES11) and downloads it.
    with d.es10("c") as es10:
        async with Es11Client(d.smds.address, d.ci_context) as es11:
            found = await next_contact(es10, es11, d.pool, smds_address=d.smds.address,
                                       confirmation_code=lambda: cc["c"])
    assert [o.error for o in found] == [None] and not isinstance(found[0].result, RpmResult)
    installed["c"] = found[0].result.iccid

    async def all_active():
        _, view, _ = await d.api("GET", f"{API}/plans/{plan}/members", owner)
        states = {m["member_id"]: m["state"] for m in view["members"]}
        return all(states[member[n]] == "active" for n in NAMES)
    await eventually(all_active, "installation notifications to turn the members active")
    # A used invitation is refused (8.2.6 / 3.8).
    assert (await refused(d, "c", ac["a"], cc["a"])).code == status.MATCHING_ID_REFUSED

    # Every member's profile passes AKA through its card.
    imsi = {}
    for name in NAMES:
        profile = await member_profile(d, plan, member[name])
        imsi[name] = profile["imsi"]
        assert (profile["iccid"], profile["eid"], profile["state"]) == (installed[name], d.cards[name].eid, "installed")
        assert await enable_and_challenge(d, name, imsi[name]) is ChallengeOutcome.AUTHENTICATED

    # Usage ingestion enforces a member's cap.
    code, _, text = await d.api("PUT", f"{API}/plans/{plan}/members/{member['a']}/caps", owner,
                                {"data": {"amount": 1_000}})
    assert code == 200, text
    now = datetime.now(UTC).isoformat()
    code, result, _ = await d.api("POST", f"{API}/usage", OPERATOR_TOKEN, {
        "kind": "data", "amount": 1_500, "at": now, "idempotency_key": "a-1", "imsi": imsi["a"]})
    assert code == 200 and (result["charged"], result["excess"], result["throttled"]) == (1_000, 500, True)
    code, result, _ = await d.api("POST", f"{API}/usage", OPERATOR_TOKEN, {
        "kind": "data", "amount": 700, "at": now, "idempotency_key": "b-1", "imsi": imsi["b"]})
    assert code == 200 and (result["charged"], result["excess"]) == (700, 0)

    # A member's token reaches none of another member's data, on every endpoint.
    await check_privacy(d, plan, member, invites, imsi)

    # Revoking member b bars AKA at once and queues the remote deletion (v3 RpmOrder, SM-DS event).
    code, revoked, _ = await d.api("DELETE", f"{API}/plans/{plan}/members/{member['b']}", owner)
    assert code == 200 and revoked["remote_deletions"] == 1
    with pytest.raises(AuthenticationRefused):
        d.service.authenticator.challenge(imsi["b"], usim(d, "b"))
    iccid_b = (await member_profile(d, plan, member["b"]))["iccid"]
    assert d.smdp.store.profile(iccid_b).state is ProfileState.REVOKED
    [removal] = d.smdp.store.rpm_orders(eid=d.cards["b"].eid)
    assert [e.event_id for e in d.smds.core.events(d.cards["b"].eid)] == [removal.matching_id]

    # The next contact of b's LPA: the SM-DS event leads to the RPM package; the card deletes the profile.
    with d.es10("b") as es10:
        async with Es11Client(d.smds.address, d.ci_context) as es11:
            [contact] = await next_contact(es10, es11, d.pool, smds_address=d.smds.address)
    assert isinstance(contact.result, RpmResult), contact.error
    assert [(o.result, o.ok) for o in contact.result.outcomes] == [("disableResult", True), ("deleteResult", True)]
    assert d.cards["b"].isdr.state.profiles == ()
    assert d.smdp.store.rpm_order(removal.matching_id).state is RpmState.DONE
    assert d.smdp.store.profile(iccid_b).state is ProfileState.UNAVAILABLE

    async def reconciled():
        return (await member_profile(d, plan, member["b"]))["state"] == "deleted"
    await eventually(reconciled, "the deletion to reconcile the plan")

    async def event_gone():
        return not d.smds.core.events(d.cards["b"].eid)
    await eventually(event_gone, "the SM-DP+ to delete its SM-DS event")
    # The others are untouched and still authenticate.
    assert d.service.authenticator.challenge(imsi["a"], usim(d, "a")) is ChallengeOutcome.AUTHENTICATED


# --- privacy on every endpoint ------------------------------------------------------------------------------


def _body(path: str, method: str, member: dict) -> dict | None:
    """A request that would succeed for a caller allowed to make it."""
    if method in ("get", "delete"):
        return None
    return {
        ("post", f"{API}/plans"): {"name": "P", "owner_name": "Q", "max_members": 2, "pool": {"data": 1}},
        ("patch", f"{API}/plans/{{plan_id}}"): {"policy": "fixed"},
        ("post", f"{API}/plans/{{plan_id}}/members"): {"display_name": "Eve"},
        ("put", f"{API}/plans/{{plan_id}}/members/{{member_id}}/caps"): {"data": {"amount": 1}},
        ("post", f"{API}/plans/{{plan_id}}/members/{{member_id}}/profiles"): {},
        ("post", f"{API}/usage"): {"kind": "data", "amount": 1, "at": datetime.now(UTC).isoformat(),
                                   "idempotency_key": "privacy", "member_id": member["c"]},
    }.get((method, path), {})


async def check_privacy(d: Deployment, plan: str, member: dict, invites: dict, imsi: dict) -> None:
    """Member a, with its own token, on every guarded operation of the OpenAPI document aimed at member c."""
    token = invites["a"]["member_token"]
    secrets = [d.cards["c"].eid, imsi["c"], NAMES["c"], invites["c"]["member_token"], invites["c"]["confirmation_code"],
               (await member_profile(d, plan, member["c"]))["iccid"],
               parse_activation_code(invites["c"]["activation_code"]).matching_id]

    async def snapshot():
        _, members, _ = await d.api("GET", f"{API}/plans/{plan}/members", OPERATOR_TOKEN)
        _, caps, _ = await d.api("GET", f"{API}/plans/{plan}/caps", OPERATOR_TOKEN)
        _, invitations, _ = await d.api("GET", f"{API}/plans/{plan}/invitations", OPERATOR_TOKEN)
        _, usage, _ = await d.api("GET", f"{API}/plans/{plan}/usage", OPERATOR_TOKEN)
        return members, caps, invitations, usage

    before = await snapshot()
    operations = [(path, method, op) for path, item in openapi_document()["paths"].items()
                  for method, op in item.items() if op["x-kinsim-access"] not in (["public"], ["smdp"])]
    assert len(operations) > 20
    for path, method, op in operations:
        url = (path.replace("{plan_id}", plan).replace("{member_id}", member["c"])
               .replace("{invitation_id}", invites["c"]["invitation"]["invitation_id"]))
        code, _, text = await d.api(method.upper(), url, token, _body(path, method, member))
        if "member" in op["x-kinsim-access"]:
            assert code == 200, (op["operationId"], code, text)  # plan-wide: the shared parts only
        else:
            assert code in (403, 404), (op["operationId"], code, text)
        for secret in secrets:
            assert secret not in text, (op["operationId"], secret)
    assert await snapshot() == before
