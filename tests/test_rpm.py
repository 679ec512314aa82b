"""SGP.22 v3 Remote Profile Management across the three roles in one process, over loopback TLS: the
SM-DP+ answers an RPM order's matching ID with a signed package, the LPA has the software eUICC run it
(ES10b.LoadRpmPackage) and returns the signed result with HandleNotification; plus the card's refusals
(no session, bad signature, an SM-DP+ that does not manage the profile) and the SM-DP+'s fallback for
an eUICC without rpmSupport."""

from __future__ import annotations

from dataclasses import replace

import pytest
import pytest_asyncio

from certs.pki import generate_pki
from lpa import manage
from lpa.discovery import EventEntry
from lpa.download import DownloadProtocolError, download_profile
from lpa.es9_client import Es9Pool, tls_context
from lpa.es10 import Es10Client, ProfileRef
from lpa.notifications import list_notifications
from lpa.rpm import RpmResult, execute_rpm, process_event
from lpa.transport import SimCardTransport
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp import rpm, status
from rsp.errors import ApduError, StatusCodeError
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from smdp.orders import import_profile
from smdp.server import SmdpServer
from smdp.store import ProfileState, RpmState
from tests.lpa_fixtures import smdp_core, software_card

ADDRESS = "smdp.kinsim.test"
ICCID = "8949012345678901237"


@pytest.fixture(scope="module")
def pki():
    return generate_pki("nist", smdp_address=ADDRESS)


class World:
    def __init__(self, smdp, euicc, pool):
        self.smdp, self.euicc, self.pool = smdp, euicc, pool

    @property
    def eid(self) -> str:
        return self.euicc.eid

    def es10(self) -> Es10Client:
        return Es10Client(SimCardTransport(self.euicc.card))

    async def install(self, *, enable: bool = True) -> None:
        _, order = self.smdp.orders.create_order(iccid=ICCID)
        with self.es10() as es10:
            await download_profile(es10, self.pool(ADDRESS), smdp_address=ADDRESS, matching_id=order["matchingId"],
                                   peers=self.pool)
            if enable:
                await manage.enable_profile(es10, self.pool, ProfileRef(iccid=ICCID))

    def order_removal(self) -> str:
        order = self.smdp.orders.rpm_order(None, eid=self.eid, rpm_script=rpm.revocation_package(ICCID).dump())
        return order.matching_id

    async def contact(self, matching_id: str):
        with self.es10() as es10:
            return await process_event(es10, self.pool, EventEntry(matching_id, ADDRESS))


async def world_for(pki, tmp_path, **card_config):
    smdp = smdp_core(pki, tmp_path / "smdp")
    import_profile(smdp.store, personalize(ts48_profile(), iccid=ICCID, imsi="262019876543210", ki=bytes(range(16)),
                                           opc=bytes(range(16, 32)), algorithm="milenage"), smdp.clock())
    server = SmdpServer(smdp)
    port = int((await server.start())["es9"].rsplit(":", 1)[1])
    euicc = software_card(pki, tmp_path / "card", **card_config)
    pool = Es9Pool(tls_context([pki.ci.cert]), connect_to={ADDRESS: ("127.0.0.1", port)})
    return World(smdp, euicc, pool), server


@pytest_asyncio.fixture
async def world(pki, tmp_path):
    world, server = await world_for(pki, tmp_path)
    try:
        yield world
    finally:
        await world.pool.close()
        world.euicc.close()
        await server.stop()
        world.smdp.store.close()


@pytest.mark.asyncio
async def test_an_rpm_order_deletes_the_enabled_profile_at_the_next_contact(world):
    await world.install()
    assert world.smdp.store.profile(ICCID).state is ProfileState.INSTALLED
    metadata = m.decode(v3.StoreMetadataRequest, world.euicc.isdr.state.find(iccid=ICCID).metadata)
    assert metadata["rpmConfiguration"]["managingDpList"][0]["managingDpOid"].native == world.smdp.config.smdp_oid
    matching_id = world.order_removal()
    assert world.smdp.store.profile(ICCID).state is ProfileState.REVOKED
    result = await world.contact(matching_id)
    assert isinstance(result, RpmResult) and result.error is None
    assert [(o.result, o.iccid, o.ok) for o in result.outcomes] == [("disableResult", ICCID, True),
                                                                    ("deleteResult", ICCID, True)]
    assert world.euicc.isdr.state.find(iccid=ICCID) is None
    assert [d.removed for d in result.notifications] == [True]  # the signed result reached the SM-DP+
    with world.es10() as es10:
        assert list_notifications(es10) == []
    assert world.smdp.store.profile(ICCID).state is ProfileState.UNAVAILABLE
    assert world.smdp.store.rpm_order(matching_id).state is RpmState.DONE
    with pytest.raises(StatusCodeError) as again:  # a served order is not served twice
        await world.contact(matching_id)
    assert again.value.code == status.MATCHING_ID_REFUSED


@pytest.mark.asyncio
async def test_a_disabled_profile_is_deleted_and_the_failed_disable_is_tolerated(world):
    await world.install(enable=False)
    result = await world.contact(world.order_removal())
    assert [(o.result, o.code) for o in result.outcomes] == [("disableResult", 2), ("deleteResult", 0)]
    assert world.euicc.isdr.state.profiles == ()


@pytest.mark.asyncio
async def test_the_card_refuses_a_package_whose_signature_does_not_verify(world):
    await world.install()
    matching_id = world.order_removal()

    async def tampered(transaction_id, answer):
        signature = bytearray(answer["smdpSignature3"].native)
        signature[7] ^= 1
        answer = {**answer, "smdpSignature3": type(answer["smdpSignature3"])(bytes(signature))}
        return await execute_rpm(es10, world.pool(ADDRESS), world.pool, ADDRESS, transaction_id, answer)

    with world.es10() as es10:
        result = await download_profile(es10, world.pool(ADDRESS), smdp_address=ADDRESS, matching_id=matching_id,
                                        operation_types={"profileDownload", "rpm"}, on_rpm=tampered)
    assert result.error == "invalidSignature" and result.outcomes == ()
    assert world.euicc.isdr.state.find(iccid=ICCID) is not None
    assert world.smdp.store.rpm_order(matching_id).state is RpmState.FAILED


@pytest.mark.asyncio
async def test_load_rpm_package_outside_a_session_is_not_signed(world):
    signed3 = v3.SmdpSigned3({"transactionId": b"\x01" * 16, "rpmPackage": rpm.revocation_package(ICCID)})
    with world.es10() as es10:
        result = es10.load_rpm_package(smdp_signed3=signed3, smdp_signature3=b"\x00" * 64)
    assert result.name == "loadRpmPackageResultNotSigned"
    assert result.chosen["loadRpmPackageErrorCodeNotSigned"].native == "noSession"
    assert world.euicc.isdr.state.notifications == ()


@pytest.mark.asyncio
async def test_an_smdp_that_does_not_manage_the_profile_cannot_delete_it(world):
    world.smdp.config = replace(world.smdp.config, rpm_configuration=False)
    await world.install()  # installed without rpmConfiguration: nobody manages it remotely
    result = await world.contact(world.order_removal())
    assert [(o.result, o.code) for o in result.outcomes] == [("disableResult", 9), ("deleteResult", 3)]
    assert world.euicc.isdr.state.find(iccid=ICCID) is not None
    assert world.smdp.store.profile(ICCID).state is ProfileState.REVOKED  # still revoked, not deleted


@pytest.mark.asyncio
async def test_an_lpa_that_does_not_announce_rpm_gets_no_package(world):
    await world.install()
    matching_id = world.order_removal()
    with world.es10() as es10, pytest.raises(StatusCodeError) as refused:
        await download_profile(es10, world.pool(ADDRESS), smdp_address=ADDRESS, matching_id=matching_id)
    assert refused.value.code == status.MATCHING_ID_REFUSED
    assert world.smdp.store.rpm_order(matching_id).state is RpmState.PENDING


@pytest.mark.asyncio
async def test_a_download_without_on_rpm_does_not_accept_a_package(world):
    await world.install()
    matching_id = world.order_removal()
    with world.es10() as es10, pytest.raises(DownloadProtocolError):
        await download_profile(es10, world.pool(ADDRESS), smdp_address=ADDRESS, matching_id=matching_id,
                               operation_types={"rpm"})
    assert world.euicc.isdr.state.find(iccid=ICCID) is not None
    assert world.smdp.store.rpm_order(matching_id).state is RpmState.PENDING  # cancelled: waits again


@pytest.mark.asyncio
async def test_an_euicc_without_rpm_support_gets_its_profile_marked_revoked_only(pki, tmp_path):
    world, server = await world_for(pki, tmp_path, rsp_capabilities=("testProfileSupport",))
    try:
        await world.install()
        with pytest.raises(StatusCodeError) as refused:
            world.order_removal()
        assert refused.value.code == status.RPM_UNSUPPORTED
        assert world.smdp.store.profile(ICCID).state is ProfileState.REVOKED
        assert world.smdp.store.rpm_orders() == []
        with world.es10() as es10, pytest.raises(ApduError):  # the card does not know BF44
            es10.load_rpm_package(smdp_signed3=v3.SmdpSigned3({"transactionId": b"\x01",
                                                               "rpmPackage": rpm.revocation_package(ICCID)}),
                                  smdp_signature3=b"\x00" * 64)
    finally:
        await world.pool.close()
        world.euicc.close()
        await server.stop()
        world.smdp.store.close()


def test_rpm_orders_only_touch_the_requesters_installed_profiles_on_that_euicc(pki, tmp_path):
    smdp = smdp_core(pki, tmp_path / "smdp")
    script = rpm.revocation_package(ICCID).dump()
    for kwargs, code in (({"eid": "89049032123451234512345678901235"}, status.ICCID_UNKNOWN),
                         ({"eid": "123"}, status.EID_INVALID),
                         ({"eid": "89049032123451234512345678901235", "rpm_script": b"\x30\x00"},
                          status.INVALID_REQUEST)):
        with pytest.raises(StatusCodeError) as refused:
            smdp.orders.rpm_order(None, **{"rpm_script": script, **kwargs})
        assert refused.value.code == code
    assert smdp.store.rpm_orders() == []
    smdp.store.close()


def test_lpa_discovery_download_installs_then_runs_the_rpm_package(tmp_path, capsys, monkeypatch):
    """`kinsim lpa profile discovery --download`: the next contact serves every SM-DS event."""
    import json

    from kinsim.cli import main
    from smdp.config import SmdpConfig
    from smdp.core import SmdpCore
    from smdp.smds_link import DOWNLOAD, RPM
    from smdp.store import Store
    from tests import smds_fixtures
    from tests.lpa_fixtures import LoopThread

    monkeypatch.delenv("KINSIM_EUICC", raising=False)
    shared = smds_fixtures.pki()
    thread = LoopThread()
    running = smds_fixtures.running_smds(tmp_path / "smds")
    smds = thread.run(running.__aenter__())
    core = SmdpCore(SmdpConfig.for_pkis([shared]), Store.open(tmp_path / "smdp"))
    import_profile(core.store, personalize(ts48_profile(), iccid=ICCID, imsi="262019876543210", ki=bytes(16),
                                           opc=bytes(16), algorithm="milenage"), core.clock())
    server = SmdpServer(core)
    try:
        port = thread.run(server.start())["es9"].rsplit(":", 1)[1]
        core.config = replace(core.config, address=f"localhost:{port}")
        card = tmp_path / "card"
        software_card(shared, card, root_ds_address=smds.address).close()
        ci = tmp_path / "ci.der"
        ci.write_bytes(shared.ci.cert_der)
        base = ["lpa", "--euicc", str(card), "--config-dir", str(tmp_path / "lpa"), "--ci-cert", str(ci)]

        def lpa(*argv: str):
            code = main([*base, *argv])
            out = capsys.readouterr()
            assert code == 0, out.err
            return out.out

        eid = json.loads(lpa("chip", "info", "--json"))["eid"]
        _, order = core.orders.create_order(iccid=ICCID, eid=eid)
        thread.run(server.smds.register(smds.es12_address, eid=eid, event_id=order["matchingId"], kind=DOWNLOAD))
        [installed] = json.loads(lpa("profile", "discovery", "--download", "--yes", "--json"))
        assert installed["download"]["iccid"] == ICCID and installed["error"] is None
        removal = core.orders.rpm_order(None, eid=eid, rpm_script=rpm.revocation_package(ICCID).dump())
        thread.run(server.smds.register(smds.es12_address, eid=eid, event_id=removal.matching_id, kind=RPM))
        human = lpa("profile", "discovery", "--download")
        assert f"remote management by the SM-DP+: disable {ICCID}: 2, delete {ICCID}: ok." in human
        assert json.loads(lpa("profile", "list", "--json")) == []
        assert core.store.profile(ICCID).state is ProfileState.UNAVAILABLE
        thread.run(server.smds.sweep())  # (also run in the background after each request)
        assert "No events" in lpa("profile", "discovery", "--download")  # both events were deleted
    finally:
        thread.run(server.stop())
        thread.run(running.__aexit__(None, None, None))
        thread.close()
        core.store.close()
