"""lpa.notifications: deliver, then remove; undeliverable ones stay and are retried (SGP.22 3.5)."""

from __future__ import annotations

import pytest

from lpa.es9_client import Es9ConnectionError
from lpa.es10 import Es10Client
from lpa.notifications import (
    NotificationNotFound,
    list_notifications,
    process_notifications,
    remove_notifications,
)
from lpa.transport import SimCardTransport
from rsp import messages as m
from rsp import status
from rsp.errors import StatusCodeError
from tests.lpa_fixtures import ICCID, FakeCard, FakeEuicc, RecordingPeer, notification_metadata, pending_other


def card_with(*notifications) -> tuple[Es10Client, FakeEuicc]:
    euicc = FakeEuicc()
    for seq, event, address in notifications:
        euicc.add_notification(pending_other(seq, event, address))
    listed = m.ListNotificationResponse(name="notificationMetadataList", value=[
        notification_metadata(seq, event, address) for seq, event, address in notifications])
    euicc.answers[0xBF28] = listed.dump()
    return Es10Client(SimCardTransport(FakeCard(euicc))).open(), euicc


def removed(euicc: FakeEuicc) -> list[int]:
    return [m.decode(m.NotificationSentRequest, r)["seqNumber"].native for r in euicc.requests_of(0xBF30)]


def test_list_shows_operation_address_and_iccid():
    es10, _ = card_with((2, "notificationDisable", "a.kinsim.test"), (1, "notificationInstall", "b.kinsim.test"))
    listed = list_notifications(es10)
    assert [(n.seq_number, n.operation, n.address, n.iccid) for n in listed] == [
        (1, "install", "b.kinsim.test", ICCID), (2, "disable", "a.kinsim.test", ICCID)]
    assert listed[0].as_dict()["notificationAddress"] == "b.kinsim.test"


@pytest.mark.asyncio
async def test_each_goes_to_its_address_and_is_removed_after_acknowledgement():
    es10, euicc = card_with((1, "notificationEnable", "a.kinsim.test"), (2, "notificationDisable", "b.kinsim.test"))
    peers = {"a.kinsim.test": RecordingPeer(), "b.kinsim.test": RecordingPeer()}
    deliveries = await process_notifications(es10, peers.__getitem__)
    assert [d.removed for d in deliveries] == [True, True]
    assert m.decode(m.PendingNotification, peers["a.kinsim.test"].received[0]).chosen[
        "tbsOtherNotification"]["seqNumber"].native == 1
    assert len(peers["b.kinsim.test"].received) == 1
    assert removed(euicc) == [1, 2] and euicc.pending == {}


@pytest.mark.asyncio
async def test_undeliverable_notification_is_kept_and_retried_next_time():
    es10, euicc = card_with((1, "notificationEnable", "down.kinsim.test"), (2, "notificationDelete", "a.kinsim.test"))
    down = RecordingPeer(fail=Es9ConnectionError("down.kinsim.test", "refused", "cannot connect"))
    peers = {"down.kinsim.test": down, "a.kinsim.test": RecordingPeer()}
    first = await process_notifications(es10, peers.__getitem__)
    assert [(d.delivered, d.removed) for d in first] == [(False, False), (True, True)]
    assert "cannot connect" in first[0].error
    assert removed(euicc) == [2] and list(euicc.pending) == [1]
    down.fail = None  # the server is back
    second = await process_notifications(es10, peers.__getitem__)
    assert [d.notification.seq_number for d in second] == [1] and second[0].removed
    assert euicc.pending == {}


@pytest.mark.asyncio
async def test_server_rejection_keeps_the_notification():
    es10, euicc = card_with((1, "notificationEnable", "a.kinsim.test"))
    peer = RecordingPeer(fail=StatusCodeError(status.EXECUTION_ERROR, "database down"))
    deliveries = await process_notifications(es10, lambda address: peer)
    assert not deliveries[0].delivered and euicc.requests_of(0xBF30) == []


@pytest.mark.asyncio
async def test_only_the_numbered_ones_and_unknown_numbers():
    es10, euicc = card_with((1, "notificationEnable", "a.kinsim.test"), (2, "notificationDisable", "a.kinsim.test"))
    peer = RecordingPeer()
    deliveries = await process_notifications(es10, lambda address: peer, seq_numbers=[2])
    assert [d.notification.seq_number for d in deliveries] == [2] and list(euicc.pending) == [1]
    with pytest.raises(NotificationNotFound, match="7"):
        await process_notifications(es10, lambda address: peer, seq_numbers=[7])


@pytest.mark.asyncio
async def test_no_result_available_means_nothing_pending():
    es10, euicc = card_with()
    euicc.answers[0xBF2B] = m.RetrieveNotificationsListResponse(name="notificationsListResultError", value=1).dump()
    assert await process_notifications(es10, lambda address: RecordingPeer()) == []


def test_explicit_removal():
    es10, euicc = card_with((1, "notificationEnable", "a.kinsim.test"))
    assert remove_notifications(es10, [1]) == [1]
    with pytest.raises(NotificationNotFound, match="the card holds no pending notification 1"):
        remove_notifications(es10, [1])
