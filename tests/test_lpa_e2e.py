"""End to end: the LPA downloads from the real SM-DP+ (ES9+ over TLS on loopback) into the software eUICC.

Roles meet only on the spec's interfaces: ES9+ JSON over HTTPS and ES10 APDUs (SGP.22 3.1.3, 3.2, 3.5).
"""

from __future__ import annotations

import pytest

from certs.pki import generate_pki
from lpa import manage
from lpa.download import download_profile
from lpa.es9_client import Es9ConnectionError, Es9Pool, tls_context
from lpa.es10 import Es10Client, ProfileRef
from lpa.notifications import list_notifications
from lpa.transport import SimCardTransport
from rsp.errors import BppError
from smdp.server import SmdpServer
from smdp.store import ProfileState
from tests.lpa_fixtures import TS48_ICCID, smdp_core, software_card

ADDRESS = "smdp.kinsim.test"
ICCID = TS48_ICCID


@pytest.fixture(scope="module")
def pki():
    return generate_pki("nist", smdp_address=ADDRESS)


@pytest.fixture
def smdp(pki, tmp_path):
    core = smdp_core(pki, tmp_path / "smdp")
    yield core
    core.store.close()


def lpa_pool(trusted_ci, port) -> Es9Pool:
    return Es9Pool(tls_context([trusted_ci]), connect_to={ADDRESS: ("127.0.0.1", port)})


def order(smdp) -> str:
    _, result = smdp.orders.create_order(iccid=ICCID)
    return result["matchingId"]


async def serve(smdp) -> tuple[SmdpServer, int]:
    server = SmdpServer(smdp)
    urls = await server.start()
    return server, int(urls["es9"].rsplit(":", 1)[1])


@pytest.mark.asyncio
async def test_download_then_enable_disable_delete_with_notifications(pki, smdp, tmp_path):
    matching_id = order(smdp)
    server, port = await serve(smdp)
    euicc = software_card(pki, tmp_path / "card")
    try:
        async with lpa_pool(pki.ci.cert, port) as pool:
            with Es10Client(SimCardTransport(euicc.card)) as es10:
                seen = []
                result = await download_profile(es10, pool(ADDRESS), smdp_address=ADDRESS, matching_id=matching_id,
                                                confirm=lambda metadata: seen.append(metadata) or True, peers=pool)
                assert result.iccid == ICCID and seen[0].iccid == ICCID
                assert result.notifications and all(d.removed for d in result.notifications)
                profiles = manage.list_profiles(es10)
                assert [(p.iccid, p.state) for p in profiles] == [(ICCID, "disabled")]
                assert list_notifications(es10) == []
                assert smdp.store.profile(ICCID).state is ProfileState.INSTALLED

                enabled = await manage.enable_profile(es10, pool, ProfileRef(iccid=ICCID))
                assert manage.list_profiles(es10)[0].state == "enabled"
                disabled = await manage.disable_profile(es10, pool, ProfileRef(iccid=ICCID))
                deleted = await manage.delete_profile(es10, pool, ProfileRef(iccid=ICCID))
                assert manage.list_profiles(es10) == []
                for outcome in (enabled, disabled, deleted):
                    assert all(d.delivered and d.removed for d in outcome.notifications)
                assert list_notifications(es10) == []
    finally:
        euicc.close()
        await server.stop()


@pytest.mark.asyncio
async def test_lpa_refuses_an_smdp_whose_tls_certificate_is_from_another_ci(pki, smdp, tmp_path):
    matching_id = order(smdp)
    server, port = await serve(smdp)
    other_ci = generate_pki("nist", smdp_address=ADDRESS).ci.cert
    euicc = software_card(pki, tmp_path / "card")
    try:
        async with lpa_pool(other_ci, port) as pool:
            with Es10Client(SimCardTransport(euicc.card)) as es10:
                with pytest.raises(Es9ConnectionError, match="does not chain to a CI this LPA trusts"):
                    await download_profile(es10, pool(ADDRESS), smdp_address=ADDRESS, matching_id=matching_id,
                                           peers=pool)
                assert manage.list_profiles(es10) == []
        assert smdp.store.profile(ICCID).state is ProfileState.RELEASED  # the order was never touched
    finally:
        euicc.close()
        await server.stop()


@pytest.mark.asyncio
async def test_failed_install_is_explained_and_the_order_can_be_retried(pki, smdp, tmp_path):
    matching_id = order(smdp)
    server, port = await serve(smdp)
    small = software_card(pki, tmp_path / "small", memory=1024)  # too little memory for the TS.48 profile
    try:
        async with lpa_pool(pki.ci.cert, port) as pool:
            with Es10Client(SimCardTransport(small.card)) as es10:
                with pytest.raises(BppError) as info:
                    await download_profile(es10, pool(ADDRESS), smdp_address=ADDRESS, matching_id=matching_id,
                                           peers=pool)
                assert info.value.error_reason == 10
                assert "not have enough free memory" in str(info.value)
                assert list_notifications(es10) == []  # the failure report reached the SM-DP+
            assert smdp.store.profile(ICCID).state is ProfileState.RELEASED
            big = software_card(pki, tmp_path / "big")
            try:
                with Es10Client(SimCardTransport(big.card)) as es10:
                    result = await download_profile(es10, pool(ADDRESS), smdp_address=ADDRESS,
                                                    matching_id=matching_id, peers=pool)
                    assert result.iccid == ICCID
            finally:
                big.close()
    finally:
        small.close()
        await server.stop()
