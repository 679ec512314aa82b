"""The SM-DP+'s events at SM-DSs (ES12, SGP.22 3.6.1 / 3.6.2 and v3 3.7.1): register one when an order
names an SM-DS, delete it once the order no longer needs it.

Registration happens in the ES2+ request that asks for it (ConfirmOrder with smdsAddress, RpmOrder
with rootSmdsAddress), after the order is committed: if the SM-DS refuses or cannot be reached, the
caller undoes the order and ES2+ answers with the ES12 failure (8.9 / 5.1 or 8.9 / 4.2). Each
registered event is remembered in the store; ``sweep()`` deletes, best effort, those whose order ended
(installed, cancelled, blocked; an RPM order executed or failed) and forgets them once the SM-DS
confirmed (or no longer knows them). The server runs the sweep after every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from rsp import status
from rsp.errors import StatusCodeError
from smdp.config import SmdpConfig
from smdp.es12_client import Es12Client, SmdsRefused, tls_context
from smdp.store import ProfileState, RpmState, SmdsEvent, Store

log = logging.getLogger("kinsim.smdp")

DOWNLOAD, RPM = "download", "rpm"
_LIVE_ORDER = (ProfileState.CONFIRMED, ProfileState.RELEASED, ProfileState.DOWNLOADED)
_LIVE_RPM = (RpmState.PENDING, RpmState.DELIVERED)

ClientFactory = Callable[[str], Es12Client]


class SmdsLink:
    """ES12 on behalf of one SM-DP+. ``address()`` is the rspServerAddress events point at (the
    SM-DP+ address, with its port when not 443)."""

    def __init__(self, config_source: Callable[[], SmdpConfig], store: Store, *,
                 client_factory: ClientFactory | None = None):
        self._config = config_source
        self.store = store
        self._factory = client_factory or self._client
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def _client(self, smds_address: str) -> Es12Client:
        config = self._config()
        if config.tls is None:
            raise StatusCodeError(status.SMDS_INACCESSIBLE, "the SM-DP+ has no TLS certificate to present to an SM-DS")
        return Es12Client(smds_address, tls_context(config.trusted_cis, config.tls), requester_id=config.smdp_oid)

    async def register(self, smds_address: str, *, eid: str, event_id: str, kind: str) -> None:
        """ES12.RegisterEvent; raises SmdsInaccessible / SmdsRefused (ES2+ codes 8.9 5.1 / 4.2)."""
        async with self._factory(smds_address) as client:
            await client.register_event(eid=eid, rsp_server_address=self._config().address, event_id=event_id)
        with self.store.transaction():
            self.store.add_smds_event(SmdsEvent(eid, event_id, smds_address, kind))

    # --- deleting events whose order ended ------------------------------------------------------

    def _still_needed(self, event: SmdsEvent) -> bool:
        if event.kind == RPM:
            order = self.store.rpm_order(event.event_id)
            return order is not None and order.state in _LIVE_RPM
        profile = self.store.profile_by_matching_id(event.event_id)
        return profile is not None and profile.eid == event.eid and profile.state in _LIVE_ORDER

    async def sweep(self) -> int:
        """ES12.DeleteEvent for every event no order needs any more; the number deleted."""
        done = 0
        for event in [e for e in self.store.smds_events() if not self._still_needed(e)]:
            try:
                async with self._factory(event.smds_address) as client:
                    await client.delete_event(eid=event.eid, event_id=event.event_id)
            except SmdsRefused as exc:
                if exc.smds_error.code != status.EVENT_RECORD_UNKNOWN:
                    log.warning("SM-DS %s kept event %s: %s", event.smds_address, event.event_id, exc.smds_error)
                    continue
            except StatusCodeError as exc:  # unreachable: try again after the next request
                log.info("SM-DS %s unreachable for DeleteEvent: %s", event.smds_address, exc)
                continue
            with self.store.transaction():
                self.store.remove_smds_event(event.eid, event.event_id)
            done += 1
        return done

    # --- running in the background --------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sweep()
            except Exception:  # keep sweeping whatever one SM-DS does
                log.exception("SM-DS event clean-up failed")
