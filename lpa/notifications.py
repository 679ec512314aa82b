"""Notifications (SGP.22 3.5): list them, deliver them with ES9+.HandleNotification, then remove them.

A notification leaves the card (ES10b.RemoveNotificationFromList) only after the SM-DP+ at its
notificationAddress acknowledged it. One that cannot be delivered (no network, TLS refused, server
error) stays on the card and is delivered by the next processing run: never dropped.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lpa.es10 import Es10Client
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp.errors import DecodeError, Es10Error, KinsimError
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
        return {"seqNumber": self.seq_number, "profileManagementOperation": self.operation,
                "notificationAddress": self.address, "iccid": self.iccid}


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
    return [await deliver(es10, peers, p) for p in _numbered(pending, seq_numbers)]


def _numbered(pending: list[m.PendingNotification], seq_numbers: Iterable[int] | None) -> list[m.PendingNotification]:
    """Those of ``pending`` with the given sequence numbers (all for None); NotificationNotFound for a number
    the card does not hold."""
    if seq_numbers is None:
        return pending
    wanted = set(seq_numbers)
    missing = sorted(wanted - {metadata_of(p)["seqNumber"].native for p in pending})
    if missing:
        raise NotificationNotFound(f"the card holds no pending notification {', '.join(map(str, missing))}")
    return [p for p in pending if metadata_of(p)["seqNumber"].native in wanted]


def dump_notifications(es10: Es10Client, seq_numbers: Iterable[int] | None = None) -> list[dict]:
    """The pending notifications (all, or those numbered) with their signed PendingNotification DER in
    base64, as HandleNotification carries it (SGP.22 5.6.4): a copy to keep, and to ``replay`` later."""
    return [{**Notification.from_pending(p).as_dict(), "pendingNotification": base64.b64encode(p.dump()).decode()}
            for p in _numbered(pending_notifications(es10), seq_numbers)]


def load_dumped(entry: object) -> m.PendingNotification:
    """The PendingNotification of one ``dump_notifications`` entry; DecodeError if it is not one."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pendingNotification"), str):
        raise DecodeError("a dumped notification is an object with a base64 'pendingNotification'")
    try:
        der = base64.b64decode(entry["pendingNotification"], validate=True)
    except ValueError:
        raise DecodeError("'pendingNotification' is not base64") from None
    return m.decode(v3.PendingNotification, der)


async def replay_notifications(peers: PeerFactory, pending: Iterable[m.PendingNotification]) -> list[Delivery]:
    """HandleNotification for notifications no longer on the card (dumped earlier); nothing is removed."""
    deliveries = []
    for notification in pending:
        view = Notification.from_pending(notification)
        try:
            await peers(view.address).handle_notification(pending_notification=notification)
        except (KinsimError, OSError) as exc:
            deliveries.append(Delivery(view, delivered=False, removed=False, error=str(exc)))
        else:
            deliveries.append(Delivery(view, delivered=True, removed=False))
    return deliveries


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
            if exc.name == "nothingToDelete":
                raise NotificationNotFound(f"the card holds no pending notification {seq}") from None
            raise NotificationNotFound(f"notification {seq} could not be removed: {exc}") from None
        removed.append(seq)
    return removed
