"""mno.es2_client against the kinsim SM-DP+'s ES2+ listener over mutual TLS, and the SM-DP+'s
HandleDownloadProgressInfo callbacks arriving at the plan service over mutual TLS; plus the parser of
those callbacks on its own."""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web
from asn1crypto import x509 as asn1_x509

from mno import plans
from mno.api import CallbackAuth, ServerTls, create_app
from mno.es2_client import Es2Client, client_ssl_context, parse_progress_info
from mno.plans import InvitationState
from mno.service import CallableSink, ProfileMetadata, ServiceConfig
from rsp import messages as m
from rsp import status
from rsp.errors import DecodeError, StatusCodeError
from rsp.ids import iccid_to_bcd
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import POINT_CONFIRMATION_FAILURE, import_profile
from smdp.server import SmdpServer
from smdp.smds_link import SmdsLink
from smdp.store import ProfileState, ProfileType, Store
from tests.mno_fixtures import EID_A, OperatorPki, make_rig, new_plan
from tests.smdp_fixtures import test_pki

REQUESTER = "kinsim-mno"


class RecordingSmds:
    """Stands in for the ES12 client: records the events the SM-DP+ registers."""

    registered: list[tuple[str, str, str, str]] = []

    def __init__(self, smds_address: str):
        self.smds_address = smds_address

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        pass

    async def register_event(self, *, eid: str, rsp_server_address: str, event_id: str) -> None:
        self.registered.append((self.smds_address, eid, rsp_server_address, event_id))

    async def delete_event(self, *, eid: str, event_id: str) -> None:
        pass


@dataclass
class Deployment:
    rig: object
    smdp_store: Store
    smdp: SmdpServer
    es2: Es2Client
    api_url: str
    files: dict


async def deploy(tmp_path, requester_cn: str = REQUESTER) -> Deployment:
    """SM-DP+ (ES2+ on mutual TLS) and the plan service (HTTPS, accepting the SM-DP+'s DPtls)."""
    pki = test_pki()
    operator = OperatorPki.create()
    ca = operator.write_ca(tmp_path)
    client_cert, client_key = operator.write(tmp_path, "es2-client", *operator.issue(requester_cn))
    api_cert, api_key = operator.write(tmp_path, "api", *operator.issue("plans.kinsim.test", dns="localhost"))
    ci_pem = tmp_path / "ci.pem"
    ci_pem.write_bytes(pki.ci.cert_pem)
    api_socket = socket.create_server(("127.0.0.1", 0))
    api_url = f"https://127.0.0.1:{api_socket.getsockname()[1]}"
    config = SmdpConfig.for_pkis([pki], address="localhost", es2_client_ca=ca, callback_ca=ca,
                                 operators={REQUESTER: api_url}, callback_attempts=1)
    smdp_store = Store.open(tmp_path / "smdp")
    core = SmdpCore(config, smdp_store)
    smdp = SmdpServer(core, smds=SmdsLink(lambda: core.config, smdp_store, client_factory=RecordingSmds))
    urls = await smdp.start(es2_port=0)
    es2 = Es2Client(urls["es2"], REQUESTER, ssl_context=client_ssl_context(client_cert, client_key, str(ci_pem)))

    def hand_over(package: bytes, metadata: ProfileMetadata) -> None:
        smdp_store.put_profile_type(ProfileType(metadata.profile_type, metadata.service_provider_name,
                                                metadata.profile_name))
        import_profile(smdp_store, package, smdp.core.clock(), metadata.profile_type)

    rig = make_rig(smds_address="smds.kinsim.test")
    rig.service.es2, rig.service.sink, rig.service.remote = es2, CallableSink(hand_over), None
    rig.service.config = ServiceConfig(smdp_address="localhost:8443", smds_address="smds.kinsim.test",
                                       smdp_requester_id=config.smdp_oid)
    app = create_app(rig.service, CallbackAuth(client_cert_cn="localhost"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ServerTls(api_cert, api_key, client_ca=str(ci_pem)).context()
    await web.SockSite(runner, api_socket, ssl_context=tls).start()
    files = {"ca": ca, "ci": str(ci_pem), "client_cert": client_cert, "client_key": client_key, "runner": runner}
    return Deployment(rig, smdp_store, smdp, es2, api_url, files)


async def stop(d: Deployment) -> None:
    await d.es2.close()
    await d.smdp.stop()
    await d.files["runner"].cleanup()


@pytest_asyncio.fixture
async def deployment(tmp_path):
    d = await deploy(tmp_path)
    yield d
    await stop(d)


@pytest.mark.asyncio
async def test_invitation_is_ordered_and_confirmed_on_the_real_smdp(deployment):
    rig = deployment.rig
    _, owner, _ = new_plan(rig.book)
    invite = await rig.service.invite(owner, owner.plan_id, "Ann")
    profile = deployment.smdp_store.profile(invite.order.profile.iccid)
    assert profile.state is ProfileState.RELEASED and profile.requester == REQUESTER
    assert profile.matching_id == invite.invitation.matching_id and profile.eid is None
    assert profile.cc_hash == hashlib.sha256(invite.order.confirmation_code.encode()).digest()
    ptype = deployment.smdp_store.profile_type(profile.profile_type)
    assert ptype.service_provider_name == "kinsim" and "Ann" not in ptype.profile_name
    assert invite.activation_code.startswith("1$localhost:8443$" + invite.invitation.matching_id)


@pytest.mark.asyncio
async def test_eid_bound_invitation_links_the_order_and_names_the_smds(deployment):
    rig = deployment.rig
    _, owner, _ = new_plan(rig.book)
    invite = await rig.service.invite(owner, owner.plan_id, "Ann", eid=EID_A)
    profile = deployment.smdp_store.profile(invite.order.profile.iccid)
    assert (profile.eid, profile.smds_address) == (EID_A, "smds.kinsim.test")
    assert ("smds.kinsim.test", EID_A, "localhost", profile.matching_id) in RecordingSmds.registered


@pytest.mark.asyncio
async def test_cancelled_invitation_cancels_the_order(deployment):
    rig = deployment.rig
    _, owner, _ = new_plan(rig.book)
    invite = await rig.service.invite(owner, owner.plan_id, "Ann")
    await rig.service.cancel_invitation(owner, owner.plan_id, invite.invitation.invitation_id)
    assert deployment.smdp_store.profile(invite.order.profile.iccid).state is ProfileState.UNAVAILABLE


@pytest.mark.asyncio
async def test_confirmed_order_is_released_separately(deployment):
    rig = deployment.rig
    _, owner, _ = new_plan(rig.book)
    order = rig.book.invite(owner, owner.plan_id, "Ann")  # personalise and hand over by hand
    await rig.service.sink.upload(rig.service._personalize(order), ProfileMetadata("family-x", "kinsim", "plan"))
    iccid = await deployment.es2.download_order(iccid=order.profile.iccid)
    confirmed = await deployment.es2.confirm_order(iccid=iccid, matching_id=order.invitation.matching_id,
                                                   release_flag=False)
    assert confirmed.matching_id == order.invitation.matching_id and confirmed.smdp_address == "localhost"
    assert deployment.smdp_store.profile(iccid).state is ProfileState.CONFIRMED
    await deployment.es2.release_profile(iccid=iccid)
    assert deployment.smdp_store.profile(iccid).state is ProfileState.RELEASED


@pytest.mark.asyncio
async def test_smdp_refusals_arrive_with_their_status_codes(deployment):
    with pytest.raises(StatusCodeError) as refused:
        await deployment.es2.confirm_order(iccid="89882470000000099996", matching_id="NOPE-1")
    assert refused.value.code == status.ICCID_UNKNOWN
    rig = deployment.rig
    _, owner, _ = new_plan(rig.book)
    invite = await rig.service.invite(owner, owner.plan_id, "Ann")
    with pytest.raises(StatusCodeError) as again:  # the order is released: no second DownloadOrder
        await deployment.es2.download_order(iccid=invite.order.profile.iccid)
    assert again.value.code == status.ICCID_ALREADY_IN_USE


@pytest.mark.asyncio
async def test_client_certificate_must_name_the_requester(tmp_path):
    d = await deploy(tmp_path, requester_cn="someone-else")
    try:
        with pytest.raises(StatusCodeError) as refused:
            await d.es2.download_order(profile_type="family")
        assert refused.value.code == status.FUNCTION_REQUESTER_UNKNOWN
    finally:
        await stop(d)


@pytest.mark.asyncio
async def test_progress_callbacks_from_the_smdp_reach_the_plan(deployment):
    rig = deployment.rig
    _, owner, _ = new_plan(rig.book)
    invite = await rig.service.invite(owner, owner.plan_id, "Ann")
    orders = deployment.smdp.core.orders
    profile = deployment.smdp_store.profile(invite.order.profile.iccid)
    with deployment.smdp_store.transaction():
        orders.report(profile, POINT_CONFIRMATION_FAILURE, eid=EID_A,
                      error=StatusCodeError(status.CC_RETRIES_EXCEEDED, "too many wrong codes"))
    await deployment.smdp.notifier.deliver_due()
    assert [e["state"] for e in deployment.smdp_store.outbox()] == ["delivered"]
    current = rig.book.get_invitation(owner, owner.plan_id, invite.invitation.invitation_id)
    assert (current.state, current.cc_failures) == (InvitationState.EXHAUSTED, 1)


@pytest.mark.asyncio
async def test_callback_without_the_smdp_certificate_is_refused(deployment):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        import ssl

        context = ssl.create_default_context(cafile=deployment.files["ca"])
        async with session.post(deployment.api_url + "/gsma/rsp2/es2plus/handleDownloadProgressInfo",
                                json={"header": {}}, ssl=context) as response:
            assert response.status == 401


# --- the callback parser -----------------------------------------------------------------------------------


def progress_body(**changes) -> dict:
    body = {"header": {"functionRequesterIdentifier": "1.3.6.1.4.1.31746", "functionCallIdentifier": "c1"},
            "eid": EID_A, "iccid": "8988247000000000001F", "profileType": "family", "timestamp": "2025-03-01T10:00:00Z",
            "notificationPointId": 4, "notificationPointStatus": {"status": "Executed-Success"}}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def pir(success: bool = True) -> bytes:
    final = (m.FinalResult(name="successResult", value={"aid": b"\xa0\x00\x00\x05\x59\x10\x10\x01",
                                                         "simaResponse": b"\x30\x00"}) if success else
             m.FinalResult(name="errorResult", value={"bppCommandId": 5, "errorReason": 9}))
    data = m.ProfileInstallationResultData({
        "transactionId": b"\x01" * 16,
        "notificationMetadata": {"seqNumber": 1, "profileManagementOperation": {"notificationInstall"},
                                 "notificationAddress": "localhost", "iccid": iccid_to_bcd("89882470000000000006")},
        "finalResult": final})
    return m.ProfileInstallationResult({"profileInstallationResultData": data, "euiccSignPIR": b"\x00" * 64}).dump()


def delete_notification() -> bytes:
    pki = test_pki()
    return m.OtherSignedNotification({
        "tbsOtherNotification": {"seqNumber": 2, "profileManagementOperation": {"notificationDelete"},
                                 "notificationAddress": "localhost", "iccid": iccid_to_bcd("89882470000000000006")},
        "euiccNotificationSignature": b"\x00" * 64,
        "euiccCertificate": asn1_x509.Certificate.load(pki.euicc.cert_der),
        "eumCertificate": asn1_x509.Certificate.load(pki.eum.cert_der)}).dump()


def test_parse_installation_result():
    requester, event = parse_progress_info(progress_body(resultData=base64.b64encode(pir()).decode()))
    assert requester == "1.3.6.1.4.1.31746"
    assert (event.iccid, event.point_id, event.success, event.eid) == ("8988247000000000001", 4, True, EID_A)
    assert (event.operation, event.install_ok) == ("install", True)
    _, failed = parse_progress_info(progress_body(resultData=base64.b64encode(pir(False)).decode()))
    assert failed.install_ok is False


def test_parse_failure_status_and_forwarded_deletion():
    body = progress_body(notificationPointId=2, notificationPointStatus={
        "status": "Failed", "statusCodeData": {"subjectCode": "8.2.7", "reasonCode": "3.8", "message": "wrong"}})
    _, event = parse_progress_info(body)
    assert (event.success, event.reason) == (False, "8.2.7/3.8")
    for wrapped in (delete_notification(), m.PendingNotification(name="otherSignedNotification",
                                                                  value=m.OtherSignedNotification.load(
                                                                      delete_notification())).dump()):
        _, deleted = parse_progress_info(progress_body(notificationPointId=5,
                                                       resultData=base64.b64encode(wrapped).decode()))
        assert deleted.operation == "delete"


@pytest.mark.parametrize("changes", [
    {"header": None}, {"iccid": None}, {"iccid": "1234"}, {"notificationPointId": "4"}, {"notificationPointId": True},
    {"notificationPointStatus": {}}, {"eid": "123"}, {"resultData": "not base64!"},
    {"resultData": base64.b64encode(b"\x30\x03\x02\x01\x01").decode()}, {"timestamp": None}, {"profileType": None},
    {"notificationPointStatus": {"status": "Failed", "statusCodeData": "8.2.7"}},
    {"notificationPointStatus": {"status": "Failed", "statusCodeData": {"subjectCode": "Ann's phone", "reasonCode": "1"}}},
    {"notificationPointStatus": {"status": "Failed", "statusCodeData": {"subjectCode": "8.2", "reasonCode": 3}}},
])  # fmt: skip
def test_parse_refuses_malformed_callbacks(changes):
    with pytest.raises(DecodeError):
        parse_progress_info(progress_body(**changes))


@pytest.mark.asyncio
async def test_callback_endpoint_answers_with_es2_codes(tmp_path):
    rig = make_rig()
    app = create_app(rig.service, CallbackAuth(token_hash=plans.token_hash("cb-secret"), accept_client_cert=False))
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        path = "/gsma/rsp2/es2plus/handleDownloadProgressInfo"
        headers = {"Authorization": "Bearer cb-secret"}
        response = await client.post(path, json=progress_body(), headers=headers)
        body = await response.json()
        status_data = body["header"]["functionExecutionStatus"]
        assert (status_data["status"], status_data["statusCodeData"]["subjectCode"],
                status_data["statusCodeData"]["reasonCode"]) == ("Failed", "8.2.1", "3.9")  # not our ICCID
        response = await client.post(path, json=progress_body(iccid=None), headers=headers)
        assert (await response.json())["header"]["functionExecutionStatus"]["statusCodeData"]["reasonCode"] == "2.1"
        assert (await client.post(path, json=progress_body())).status == 401
        _, owner, _ = new_plan(rig.book)
        invite = await rig.service.invite(owner, owner.plan_id, "Ann")
        response = await client.post(path, headers=headers, json=progress_body(
            iccid=invite.order.profile.iccid, resultData=base64.b64encode(pir()).decode()))
        assert response.status == 204
        member = rig.book.get_member(owner, owner.plan_id, invite.order.member.member_id)[0]
        assert member.state is plans.MemberState.ACTIVE
