"""The SM-DP+ pieces family plans need beyond SGP.22 v2.5: kinsim's uploadProfile hand-over, SM-DS
events for ConfirmOrder (smdsAddress) and v3 RpmOrder (rootSmdsAddress) registered before the answer
and undone when the SM-DS fails, and the clean-up of events whose order ended."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from rsp import rpm, status
from rsp.errors import StatusCodeError
from smdp import server
from smdp.es12_client import SmdsInaccessible
from smdp.smds_link import SmdsLink
from smdp.store import ProfileState
from tests.smdp_fixtures import EID, make_smdp, packages, snapshot


class FakeSmds:
    """The ES12 client the link uses: records calls; ``down`` makes the SM-DS unreachable."""

    events: set[tuple[str, str]] = set()
    down = False

    def __init__(self, address: str):
        self.address = address

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        pass

    async def register_event(self, *, eid: str, rsp_server_address: str, event_id: str) -> None:
        if FakeSmds.down:
            raise SmdsInaccessible(f"SM-DS {self.address} did not answer RegisterEvent")
        FakeSmds.events.add((eid, event_id))

    async def delete_event(self, *, eid: str, event_id: str) -> None:
        if FakeSmds.down:
            raise SmdsInaccessible(f"SM-DS {self.address} did not answer DeleteEvent")
        FakeSmds.events.discard((eid, event_id))


@pytest.fixture
def smdp(tmp_path):
    FakeSmds.events, FakeSmds.down = set(), False
    value = make_smdp(tmp_path / "smdp", count=2)
    yield value
    value.store.close()


def app_for(smdp):
    link = SmdsLink(lambda: smdp.core.config, smdp.store, client_factory=FakeSmds)
    return server.es2_app(smdp.orders, smds=link), link


async def confirm(app, smdp, iccid: str) -> dict:
    smdp.orders.download_order("op", iccid=iccid, eid=EID)
    return await server._confirm_order(app, "op", {"iccid": iccid, "smds_address": "smds.example",
                                                   "release_flag": True})


@pytest.mark.asyncio
async def test_confirm_order_registers_the_event_and_it_is_deleted_once_installed(smdp):
    app, link = app_for(smdp)
    iccid = smdp.iccids[0]
    result = await confirm(app, smdp, iccid)
    assert FakeSmds.events == {(EID, result["matchingId"])}
    assert await link.sweep() == 0  # the order still needs it
    profile = smdp.store.profile(iccid)
    smdp.orders.update(profile, replace(profile, state=ProfileState.INSTALLED))
    assert await link.sweep() == 1 and FakeSmds.events == set() and smdp.store.smds_events() == []


@pytest.mark.asyncio
async def test_an_unreachable_smds_undoes_the_confirmation(smdp):
    app, _ = app_for(smdp)
    iccid = smdp.iccids[0]
    smdp.orders.download_order("op", iccid=iccid, eid=EID)
    before = snapshot(smdp.store)
    FakeSmds.down = True
    with pytest.raises(StatusCodeError) as failure:
        await server._confirm_order(app, "op", {"iccid": iccid, "smds_address": "smds.example", "release_flag": True})
    assert failure.value.code == status.SMDS_INACCESSIBLE
    after = snapshot(smdp.store)
    # everything but the timestamps (updated_at, created_at) is as before
    assert [row[:-2] for row in after["profiles"]] == [row[:-2] for row in before["profiles"]]
    assert smdp.store.profile(iccid).state is ProfileState.LINKED


def test_an_smds_event_needs_a_matching_id(smdp):
    smdp.orders.download_order("op", iccid=smdp.iccids[0], eid=EID)
    with pytest.raises(StatusCodeError) as refused:
        smdp.orders.confirm_order("op", iccid=smdp.iccids[0], matching_id="", smds_address="smds.example")
    assert refused.value.code == status.MATCHING_ID_INVALID


@pytest.mark.asyncio
async def test_rpm_order_registers_its_event_or_is_withdrawn(smdp):
    app, link = app_for(smdp)
    iccid = smdp.iccids[0]
    profile = smdp.store.profile(iccid)
    smdp.orders.update(profile, replace(profile, state=ProfileState.INSTALLED, requester="op", eid=EID,
                                        download_eid=EID))
    smdp.store.note_euicc(EID, True, smdp.clock())
    script = base64.b64encode(rpm.revocation_package(iccid).dump()).decode()
    FakeSmds.down = True
    with pytest.raises(StatusCodeError):
        await server._rpm_order(app, "op", {"eid": EID, "rpm_script": script, "smds_address": "smds.example"})
    assert smdp.store.rpm_orders() == [] and smdp.store.profile(iccid).state is ProfileState.REVOKED
    FakeSmds.down = False
    answer = await server._rpm_order(app, "op", {"eid": EID, "rpm_script": script, "smds_address": "smds.example"})
    assert FakeSmds.events == {(EID, answer["matchingId"])}
    with pytest.raises(StatusCodeError) as other:  # another operator's profile is out of reach
        await server._rpm_order(app, "other-op", {"eid": EID, "rpm_script": script})
    assert other.value.code == status.ICCID_NOT_ALLOWED


@pytest.mark.asyncio
async def test_upload_profile_adds_an_available_profile_once(smdp):
    app, _ = app_for(smdp)
    package = packages(3)[2]
    body = {"profile_type": "family-x", "package": base64.b64encode(package.der).decode(),
            "service_provider_name": "kinsim", "profile_name": "kinsim family plan X"}
    answer = await server._upload_profile(app, "op", dict(body))
    profile = smdp.store.profile(answer["iccid"])
    assert profile.state is ProfileState.AVAILABLE and profile.profile_type == "family-x"
    assert smdp.store.profile_type("family-x").profile_name == "kinsim family plan X"
    with pytest.raises(StatusCodeError) as again:
        await server._upload_profile(app, "op", dict(body))
    assert again.value.code == status.ICCID_ALREADY_IN_USE
    with pytest.raises(StatusCodeError) as garbage:
        await server._upload_profile(app, "op", {**body, "package": "MAA="})
    assert garbage.value.code == status.INVALID_REQUEST
