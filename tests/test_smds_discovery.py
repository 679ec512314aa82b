"""Event retrieval with the software eUICC over real ES10 APDUs (SGP.22 3.6.3), and the EID-bound
invitation of a family plan end to end: ConfirmOrder with an SM-DS, ES12 registration, discovery at
the eUICC's root SM-DS, download with matchingId = EventID, ES12 deletion (3.6.1, 3.6.2, 3.1.3)."""

from __future__ import annotations

import socket
from contextlib import closing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from euicc_sim.card import create_euicc, open_euicc
from euicc_sim.identity import EuiccConfig, issue_identity
from lpa.discovery import EventEntry, decode_event_entries, discover_events, root_smds_address
from lpa.download import download_profile
from lpa.es9_client import Es9Client, tls_context
from lpa.es10 import Es10Client
from lpa.transport import SimCardTransport
from rsp.errors import DecodeError
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import import_profile
from smdp.server import SmdpServer
from smdp.store import Store as SmdpStore
from tests.smds_fixtures import pki, running_smds


def soft_euicc(directory, root_ds: str):
    identity = issue_identity(pki().eum, [pki().ci.cert], config=EuiccConfig(root_ds_address=root_ds))
    create_euicc(directory, identity)
    return open_euicc(directory)


def free_port() -> int:
    with closing(socket.create_server(("127.0.0.1", 0))) as sock:
        return sock.getsockname()[1]


@pytest.mark.asyncio
async def test_discovery_with_the_software_euicc(tmp_path):
    async with running_smds(tmp_path / "smds") as smds, smds.es12_client() as es12, smds.lpa_client() as lpa:
        with soft_euicc(tmp_path / "card", smds.address) as euicc, \
                Es10Client(SimCardTransport(euicc.card)) as es10:
            await es12.register_event(eid=euicc.eid, rsp_server_address="localhost:8443", event_id="INVITE-1")
            await es12.register_event(eid=pki().eid, rsp_server_address="localhost:8443", event_id="NOT-MINE")
            address = root_smds_address(es10)
            assert address == smds.address
            found = await discover_events(es10, lpa, smds_address=address)
        assert [(e.event_id, e.rsp_server_address) for e in found.events] == [("INVITE-1", "localhost:8443")]


@pytest.mark.asyncio
async def test_eid_bound_invitation_without_activation_code(tmp_path):
    from tests.smdp_fixtures import packages

    smdp_address = f"localhost:{free_port()}"
    smdp_store = SmdpStore.open(tmp_path / "smdp")
    smdp = SmdpCore(SmdpConfig.for_pkis([pki()], address=smdp_address), smdp_store)
    iccid = import_profile(smdp_store, packages(1)[0].der, smdp.clock(), "family").iccid
    server = SmdpServer(smdp)
    await server.start(port=int(smdp_address.rpartition(":")[2]))
    try:
        async with running_smds(tmp_path / "smds") as smds, smds.es12_client() as es12, smds.lpa_client() as lpa:
            with soft_euicc(tmp_path / "card", smds.address) as euicc, \
                    Es10Client(SimCardTransport(euicc.card)) as es10:
                # The operator orders a profile for the member's EID and names the SM-DS (ES2+).
                smdp.orders.download_order(None, eid=euicc.eid, iccid=iccid)
                order = smdp.orders.confirm_order(None, iccid=iccid, smds_address=smds.address, release_flag=True)
                # The SM-DP+ hook: ES12.RegisterEvent with its own address and the matching ID as EventID.
                await es12.register_event(eid=euicc.eid, rsp_server_address=smdp_address, event_id=order["matchingId"])

                found = await discover_events(es10, lpa, smds_address=root_smds_address(es10))
                [event] = found.events
                assert (event.event_id, event.rsp_server_address) == (order["matchingId"], smdp_address)
                async with Es9Client(event.rsp_server_address, tls_context([pki().ci.cert])) as es9:
                    result = await download_profile(es10, es9, smdp_address=event.rsp_server_address,
                                                    matching_id=event.event_id)
                assert result.iccid == iccid

                # After the download the SM-DP+ deletes the event; the member's LPA finds nothing more.
                await es12.delete_event(eid=euicc.eid, event_id=event.event_id)
                assert (await discover_events(es10, lpa, smds_address=smds.address)).events == ()
    finally:
        await server.stop()
        smdp_store.close()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=10)


def test_event_entries_are_read_from_a_json_array():
    document = {"header": {"functionExecutionStatus": {"status": "Executed-Success"}}, "transactionId": "0A0B",
                "eventEntries": [{"eventId": "EV-1", "rspServerAddress": "smdp.example"}]}
    assert decode_event_entries(document) == {"transactionId": b"\x0a\x0b",
                                              "eventEntries": [EventEntry("EV-1", "smdp.example")]}


@settings(max_examples=200, deadline=None)
@given(entries=JSON, transaction_id=JSON)
def test_malformed_event_entries_raise_decode_error_only(entries, transaction_id):
    document = {"header": {"functionExecutionStatus": {"status": "Executed-Success"}},
                "transactionId": transaction_id, "eventEntries": entries}
    try:
        result = decode_event_entries(document)
    except DecodeError:
        return
    assert all(isinstance(e, EventEntry) and e.event_id and e.rsp_server_address for e in result["eventEntries"])
