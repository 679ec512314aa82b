"""Notifications (SGP.22 3.5): list them, deliver them with ES9+.HandleNotification, then remove them.

A notification leaves the card (ES10b.RemoveNotificationFromList) only after the SM-DP+ at its
notificationAddress acknowledged it. One that cannot be delivered (no network, TLS refused, server
error) stays on the card and is delivered by the next processing run: never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lpa.es10 import Es10Client
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.errors import Es10Error, KinsimError
from rsp.ids import iccid_from_bcd

_log = logging.getLogger(__name__)

# NotificationEvent bit names (RSPDefinitions) and the word people read.
OPERATIONS = {
    "notificationInstall": "install",
    "notificationEnable": "enable",
    "notificationDisable": "disable",
    "notificationDelete": "delete",
    "notificationRpmEnable": "rpm enable",  # SGP.22 v3 remote profile management
    "notificationRpmDisable": "rpm disable",
    "notificationRpmDelete": "rpm delete",
    "loadRpmPackageResult": "rpm result",
}
NO_RESULT_AVAILABLE = 1  # RetrieveNotificationsList: nothing matches the search criteria


class NotificationPeer(Protocol):
    async def handle_notification(self, *, pending_notification) -> None: ...


PeerFactory = Callable[[str], NotificationPeer]


class NotificationNotFound(KinsimError):
    """The user named a notification the card does not hold."""


@dataclass(frozen=True)
class Notification:
    """NotificationMetadata (5.7.9) as people and scripts read it."""

    seq_number: int
    operation: str  # install, enable, disable, delete (or a v3 RPM operation, see OPERATIONS)
    address: str
    iccid: str | None

    @classmethod
    def from_metadata(cls, metadata: m.NotificationMetadata) -> Notification:
        events = sorted(metadata["profileManagementOperation"].native or ())
        operation = ",".join(OPERATIONS.get(e, e) for e in events) or "unknown"
        iccid = metadata["iccid"]
        return cls(
            seq_number=metadata["seqNumber"].native,
            operation=operation,
            address=metadata["notificationAddress"].native,
            iccid=iccid_from_bcd(iccid.native) if iccid.native is not None else None,
        )

    @classmethod
    def from_pending(cls, pending: m.PendingNotification) -> Notification:
        return cls.from_metadata(metadata_of(pending))

    def as_dict(self) -> dict:
        return {"seqNumber": self.seq_number, "operation": self.operation, "notificationAddress": self.address,
                "iccid": self.iccid}


@dataclass(frozen=True)
class Delivery:
    """What happened to one notification in a processing run."""

    notification: Notification
    delivered: bool
    removed: bool
    error: str | None = None

    def as_dict(self) -> dict:
        return {**self.notification.as_dict(), "delivered": self.delivered, "removed": self.removed,
                "error": self.error}


def metadata_of(pending: m.PendingNotification) -> m.NotificationMetadata:
    return v3.notification_metadata(pending)


def list_notifications(es10: Es10Client) -> list[Notification]:
    """ES10b.ListNotification, in sequence order."""
    return sorted((Notification.from_metadata(md) for md in es10.list_notifications()), key=lambda n: n.seq_number)


def pending_notifications(es10: Es10Client) -> list[m.PendingNotification]:
    """ES10b.RetrieveNotificationsList (all), in sequence order; 'noResultAvailable' means none."""
    try:
        pending = es10.retrieve_notifications()
    except Es10Error as exc:
        if exc.code != NO_RESULT_AVAILABLE:
            raise
        pending = []
    return sorted(pending, key=lambda p: metadata_of(p)["seqNumber"].native)


async def process_notifications(es10: Es10Client, peers: PeerFactory, *, seq_numbers: Iterable[int] | None = None,
                                extra: Sequence[m.PendingNotification] = ()) -> list[Delivery]:
    """Deliver pending notifications (all, or those numbered) and remove each acknowledged one.

    ``extra`` holds notifications the LPA has in hand (the ProfileInstallationResult it just received)
    and delivers even if the card does not list them. Raises NotificationNotFound for an unknown number.
    """
    pending = pending_notifications(es10)
    known = {metadata_of(p)["seqNumber"].native for p in pending}
    pending += [p for p in extra if metadata_of(p)["seqNumber"].native not in known]
    if seq_numbers is not None:
        wanted = set(seq_numbers)
        missing = sorted(wanted - {metadata_of(p)["seqNumber"].native for p in pending})
        if missing:
            raise NotificationNotFound(f"the card holds no pending notification {', '.join(map(str, missing))}")
        pending = [p for p in pending if metadata_of(p)["seqNumber"].native in wanted]
    return [await deliver(es10, peers, p) for p in pending]


async def deliver(es10: Es10Client, peers: PeerFactory, pending: m.PendingNotification) -> Delivery:
    """HandleNotification to its notificationAddress; RemoveNotificationFromList only once acknowledged."""
    notification = Notification.from_pending(pending)
    try:
        await peers(notification.address).handle_notification(pending_notification=pending)
    except (KinsimError, OSError) as exc:
        _log.info("notification %d kept on the card: %s", notification.seq_number, exc)
        return Delivery(notification, delivered=False, removed=False, error=str(exc))
    try:
        es10.remove_notification(notification.seq_number)
    except Es10Error as exc:  # e.g. nothingToDelete: the card no longer holds it
        return Delivery(notification, delivered=True, removed=False, error=str(exc))
    return Delivery(notification, delivered=True, removed=True)


def remove_notifications(es10: Es10Client, seq_numbers: Iterable[int]) -> list[int]:
    """Remove notifications without delivering them (an explicit user decision); the numbers removed."""
    removed = []
    for seq in seq_numbers:
        try:
            es10.remove_notification(seq)
        except Es10Error as exc:
            raise NotificationNotFound(f"notification {seq} could not be removed: {exc}") from None
        removed.append(seq)
    return removed
