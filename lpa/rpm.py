"""SGP.22 v3 Remote Profile Management on the LPA side, and the "next contact" that carries it.

The LPA does not know in advance what an SM-DS event is for: it runs common mutual authentication with
the event's SM-DP+ announcing both operations it can perform (ctxParams1.operationType
{profileDownload, rpm}, v3 5.7.13). The SM-DP+ answers AuthenticateClient either with profile metadata
(the download of SGP.22 3.1.3 continues) or with an RPM package (v3 3.7): the LPA passes it to the card
(ES10b.LoadRpmPackage) and delivers the signed LoadRpmPackageResult to the SM-DP+ with
ES9+.HandleNotification, removing it from the card only once acknowledged (as any notification, 3.5).
If the card answers without a signature (no session), the LPA cancels the session with reason
loadRpmPackageError (v3 5.7.14).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lpa.discovery import Es11Client, EventEntry, discover_events
from lpa.download import DeviceInfo, DownloadProtocolError, DownloadResult, download_profile
from lpa.es10 import Es10Client
from lpa.notifications import Delivery, PeerFactory, process_notifications
from rsp import messages_v3 as v3
from rsp import rpm
from rsp.errors import KinsimError

_log = logging.getLogger(__name__)

EVENT_OPERATIONS = frozenset({"profileDownload", "rpm"})


class RpmLoadFailed(KinsimError):
    """The eUICC refused the RPM package without a signed result (LoadRpmPackageResultNotSigned)."""

    cancel_session_reason = v3.CANCEL_LOAD_RPM_PACKAGE_ERROR


@dataclass(frozen=True)
class RpmResult:
    """What the eUICC did with an RPM package, and where its signed result went."""

    smdp_address: str
    transaction_id: bytes
    outcomes: tuple[rpm.CommandOutcome, ...]
    error: str | None  # loadRpmPackageErrorCodeSigned, when the card refused the package
    notifications: tuple[Delivery, ...]

    def as_dict(self) -> dict:
        return {"smdpAddress": self.smdp_address, "transactionId": self.transaction_id.hex().upper(),
                "error": self.error, "notifications": [d.as_dict() for d in self.notifications],
                "commands": [{"iccid": o.iccid, "result": o.result, "code": o.code, "ok": o.ok} for o in self.outcomes]}


async def execute_rpm(es10: Es10Client, es9, peers: PeerFactory | None, smdp_address: str, transaction_id: bytes,
                      answer: dict) -> RpmResult:
    """ES10b.LoadRpmPackage with an AuthenticateClient RPM answer, then the result as a notification."""
    signed3 = answer["smdpSigned3"]
    if answer["transactionId"] != transaction_id or signed3["transactionId"].native != transaction_id:
        raise DownloadProtocolError("the SM-DP+ sent an RPM package for another transaction")
    result = es10.load_rpm_package(smdp_signed3=signed3, smdp_signature3=answer["smdpSignature3"].native)
    if result.name != "loadRpmPackageResultSigned":
        code = result.chosen["loadRpmPackageErrorCodeNotSigned"]
        raise RpmLoadFailed(f"the eUICC did not run the RPM package: {code.native} ({int(code)})")
    data = result.chosen["loadRpmPackageResultDataSigned"]
    final = data["finalResult"]
    error = str(final.chosen.native) if final.name == "loadRpmPackageErrorCodeSigned" else None
    pending = v3.PendingNotification(name="loadRpmPackageResultSigned", value=result.chosen)

    def peer_for(address: str):
        return es9 if address == smdp_address or peers is None else peers(address)

    deliveries = await process_notifications(es10, peer_for, extra=[pending])
    return RpmResult(smdp_address, transaction_id, tuple(rpm.outcomes(data)), error, tuple(deliveries))


async def process_event(es10: Es10Client, pool: PeerFactory, event: EventEntry, *, device: DeviceInfo | None = None,
                        confirm: Callable | None = None, confirmation_code: Callable | None = None,
                        progress: Callable[[int, int], None] | None = None) -> DownloadResult | RpmResult:
    """Serve one SM-DS event at its SM-DP+: a profile download or an RPM package, as the SM-DP+ decides."""
    address = event.rsp_server_address
    es9 = pool(address)

    async def on_rpm(transaction_id: bytes, answer: dict) -> RpmResult:
        return await execute_rpm(es10, es9, pool, address, transaction_id, answer)

    return await download_profile(es10, es9, smdp_address=address, matching_id=event.event_id, device=device,
                                  confirm=confirm, confirmation_code=confirmation_code, progress=progress,
                                  peers=pool, operation_types=set(EVENT_OPERATIONS), on_rpm=on_rpm)


@dataclass(frozen=True)
class EventOutcome:
    event: EventEntry
    result: DownloadResult | RpmResult | None
    error: KinsimError | None = None

    def as_dict(self) -> dict:
        value: dict[str, Any] = {**self.event.as_dict(), "error": str(self.error) if self.error else None}
        if isinstance(self.result, RpmResult):
            value["rpm"] = self.result.as_dict()
        elif self.result is not None:
            value["download"] = self.result.as_dict()
        return value


async def next_contact(es10: Es10Client, es11: Es11Client, pool: PeerFactory, *, smds_address: str,
                       device: DeviceInfo | None = None, confirm: Callable | None = None,
                       confirmation_code: Callable | None = None) -> list[EventOutcome]:
    """Event retrieval at ``smds_address`` (3.6.3), then each event served in turn; one failing event
    does not stop the others (its error is reported with it)."""
    found = await discover_events(es10, es11, smds_address=smds_address, device=device)
    outcomes = []
    for event in found.events:
        try:
            result = await process_event(es10, pool, event, device=device, confirm=confirm,
                                         confirmation_code=confirmation_code)
        except KinsimError as exc:
            _log.info("event %s at %s failed: %s", event.event_id, event.rsp_server_address, exc)
            outcomes.append(EventOutcome(event, None, exc))
        else:
            outcomes.append(EventOutcome(event, result))
    return outcomes
