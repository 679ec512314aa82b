"""Download orders for the ES9+ cases, from the target's ES2+ or from matching IDs the user lists.

Kinds (``conformance.catalogue``): ``shared`` is one released order reused by every case that a
conformant SM-DP+ refuses before it touches the order; ``fresh`` and ``cc`` are consumed (one per
case); ``unreleased`` and ``other-eid`` are special orders for two negative cases.

- ES2+ (``--es2 URL --es2-cert ... --es2-profile-type T``): the runner is an operator. Each order is
  DownloadOrder(profileType T [, eid]) then ConfirmOrder(releaseFlag, confirmationCode).
- Listed (``--matching-id ID`` ...): the user created the orders beforehand; ``kinsim conformance list
  --orders`` tells how many of each kind a run needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from conformance.catalogue import CC, FRESH, OTHER_EID, SHARED, UNRELEASED, Case
from conformance.runner import CaseBlocked
from rsp.ids import make_eid

Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class Order:
    matching_id: str
    confirmation_code: str | None = None


class OrderSource(Protocol):
    async def get(self, kind: str) -> Order:
        """An order of ``kind``; CaseBlocked when none can be had."""

    async def close(self) -> None: ...


def orders_needed(cases: Iterable[Case]) -> dict[str, int]:
    """How many orders of each kind the given cases consume (``shared`` counts once)."""
    needed = {SHARED: 0, FRESH: 0, CC: 0, UNRELEASED: 0, OTHER_EID: 0}
    for case in cases:
        if case.order is not None:
            needed[case.order] += case.order_count
    needed[SHARED] = min(needed[SHARED], 1)
    return needed


class ListedOrders:
    """Matching IDs given on the command line, handed out once each (the shared one repeatedly)."""

    def __init__(self, released: Iterable[str] = (), cc: Iterable[tuple[str, str]] = (),
                 unreleased: Iterable[str] = (), other_eid: Iterable[str] = ()):
        self._pools = {FRESH: [Order(m) for m in released], CC: [Order(m, code) for m, code in cc],
                       UNRELEASED: [Order(m) for m in unreleased], OTHER_EID: [Order(m) for m in other_eid]}
        self._shared: Order | None = None

    async def get(self, kind: str) -> Order:
        if kind == SHARED:
            if self._shared is None:
                self._shared = self._take(FRESH, "--matching-id")
            return self._shared
        option = {FRESH: "--matching-id", CC: "--cc-matching-id ID=CODE", UNRELEASED: "--unreleased-matching-id",
                  OTHER_EID: "--other-eid-matching-id"}[kind]
        return self._take(kind, option)

    def _take(self, kind: str, option: str) -> Order:
        pool = self._pools[kind]
        if not pool:
            raise CaseBlocked(f"no {kind} download order left: give more with {option} "
                              f"(or use --es2 to let the runner create them)")
        return pool.pop(0)

    async def close(self) -> None:
        pass


class Es2Orders:
    """Orders created through the target's ES2+ (SGP.22 5.3.1 DownloadOrder, 5.3.2 ConfirmOrder)."""

    def __init__(self, client, *, profile_type: str, eid: str, rng: Rng):
        self._client = client  # mno.es2_client.Es2Client (or anything with the same two calls)
        self._profile_type = profile_type
        self._other_eid = other_eid(eid, rng)
        self._rng = rng
        self._shared: Order | None = None

    async def get(self, kind: str) -> Order:
        if kind == SHARED:
            if self._shared is None:
                self._shared = await self._create(FRESH)
            return self._shared
        return await self._create(kind)

    async def _create(self, kind: str) -> Order:
        eid = self._other_eid if kind == OTHER_EID else None
        iccid = await self._client.download_order(profile_type=self._profile_type, eid=eid)
        code = self._rng(4).hex().upper() if kind == CC else None
        confirmed = await self._client.confirm_order(iccid=iccid, confirmation_code=code,
                                                     release_flag=kind != UNRELEASED)
        return Order(confirmed.matching_id, code)

    async def close(self) -> None:
        await self._client.close()


def other_eid(eid: str, rng: Rng) -> str:
    """A valid EID of the same EUM range that is not ``eid``."""
    while True:
        digits = str(int.from_bytes(rng(8), "big") % 10**22).zfill(22)
        candidate = make_eid(eid[:8] + digits)
        if candidate != eid:
            return candidate
