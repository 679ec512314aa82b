"""The operator's network authenticator (HSS/AuC role): Ki, OPc and SQN per issued profile.

Sans-IO core: ``Authenticator`` works on an ``AuthenticatorStore`` (in memory here; a SQL table
implements the same protocol) and an injected ``rng``. It issues authentication vectors
(TS 33.102 6.3.2), checks a card's RES against the XRES of an issued, unused vector, and handles
resynchronisation (6.3.5). A barred subscriber gets no vectors and no RES is accepted for it, which is
how tests and users see that a barred profile no longer works.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from rsp import aka
from rsp.errors import ApduError, DecodeError, KinsimError
from rsp.ids import validate_iccid

Rng = Callable[[int], bytes]
# (RAND, AUTN) -> AUTHENTICATE response data; a status word (e.g. '9862' MAC failure) is an ApduError.
CardCallable = Callable[[bytes, bytes], bytes]

ALGORITHMS = (aka.MILENAGE, aka.XOR_TEST)
DEFAULT_AMF = b"\x80\x00"  # separation bit set (TS 33.401 Annex H), so vectors also suit EPS
FIRST_SQN = aka.join_sqn(1, 0)  # SEQ 1: every SEQ_MS(i) starts at 0 (TS 33.102 Annex C.2.2)
_CAS_ATTEMPTS = 64


class AuthenticationRefused(KinsimError):
    """The authenticator will not authenticate this subscriber (barred, unknown, bad request)."""

    def __init__(self, imsi: str, reason: str):
        super().__init__(f"authentication refused for IMSI {imsi}: {reason}")
        self.imsi = imsi
        self.reason = reason


class UnknownSubscriber(AuthenticationRefused):
    def __init__(self, imsi: str):
        super().__init__(imsi, "no such subscriber")


@dataclass(frozen=True)
class Subscriber:
    """One issued profile's AKA credentials; ``sqn`` is the next SQN to use (SEQ || 5-bit IND)."""

    imsi: str
    iccid: str
    algorithm: str
    k: bytes
    opc: bytes | None = None
    amf: bytes = DEFAULT_AMF
    sqn: int = FIRST_SQN
    barred: bool = False
    milenage_constants: aka.MilenageConstants | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.imsi, str) and self.imsi.isdigit() and 6 <= len(self.imsi) <= 15):
            raise DecodeError(f"IMSI must be 6..15 decimal digits, got {self.imsi!r}")
        validate_iccid(self.iccid)
        if self.algorithm not in ALGORITHMS:
            raise DecodeError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.algorithm == aka.MILENAGE and self.opc is None:
            raise DecodeError("a Milenage subscriber needs OPc")
        aka.sqn_to_bytes(self.sqn)
        if len(self.amf) != 2:
            raise DecodeError(f"AMF must be 2 bytes, got {len(self.amf)}")
        self.aka_algorithm()  # validates K, OPc and constants

    def aka_algorithm(self) -> aka.AkaAlgorithm:
        return aka.algorithm_for(self.algorithm, self.k, opc=self.opc, constants=self.milenage_constants)


class AuthenticatorStore(Protocol):
    """Storage of subscribers and issued-but-unused vectors; each method is one atomic step.

    On SQL: ``compare_and_set_sqn`` is ``UPDATE ... SET sqn = :new WHERE imsi = :imsi AND sqn = :expected``
    (one row updated = success); ``take_vector`` is ``DELETE ... WHERE imsi AND rand RETURNING ...``.
    """

    def get(self, imsi: str) -> Subscriber | None: ...

    def put(self, subscriber: Subscriber) -> None:
        """Insert or replace the subscriber's record."""
        ...

    def compare_and_set_sqn(self, imsi: str, expected: int, new: int) -> bool:
        """Set the next SQN to ``new`` only if it still is ``expected``."""
        ...

    def set_barred(self, imsi: str, barred: bool) -> bool:
        """False if the subscriber is unknown."""
        ...

    def add_vector(self, imsi: str, vector: aka.AuthVector) -> None: ...

    def take_vector(self, imsi: str, rand: bytes) -> aka.AuthVector | None:
        """Remove and return the unused vector issued with ``rand``."""
        ...

    def discard_vectors(self, imsi: str) -> None: ...


@dataclass
class InMemoryAuthenticatorStore:
    _subscribers: dict[str, Subscriber] = field(default_factory=dict)
    _vectors: dict[tuple[str, bytes], aka.AuthVector] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, imsi: str) -> Subscriber | None:
        with self._lock:
            return self._subscribers.get(imsi)

    def put(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers[subscriber.imsi] = subscriber

    def compare_and_set_sqn(self, imsi: str, expected: int, new: int) -> bool:
        with self._lock:
            current = self._subscribers.get(imsi)
            if current is None or current.sqn != expected:
                return False
            self._subscribers[imsi] = replace(current, sqn=new)
            return True

    def set_barred(self, imsi: str, barred: bool) -> bool:
        with self._lock:
            current = self._subscribers.get(imsi)
            if current is None:
                return False
            self._subscribers[imsi] = replace(current, barred=barred)
            return True

    def add_vector(self, imsi: str, vector: aka.AuthVector) -> None:
        with self._lock:
            self._vectors[(imsi, vector.rand)] = vector

    def take_vector(self, imsi: str, rand: bytes) -> aka.AuthVector | None:
        with self._lock:
            return self._vectors.pop((imsi, bytes(rand)), None)

    def discard_vectors(self, imsi: str) -> None:
        with self._lock:
            for key in [key for key in self._vectors if key[0] == imsi]:
                del self._vectors[key]


class ChallengeOutcome(Enum):
    AUTHENTICATED = "authenticated"
    RES_MISMATCH = "res-mismatch"  # the card answered, but not with XRES
    MAC_FAILURE = "mac-failure"  # the card rejected the network: it holds another key
    SYNC_FAILURE = "sync-failure"  # still out of sync after one resynchronisation


class Authenticator:
    def __init__(self, store: AuthenticatorStore, rng: Rng = os.urandom):
        self._store = store
        self._rng = rng

    def provision(self, subscriber: Subscriber) -> None:
        """Register (or re-register) a profile's credentials; vectors issued before are void."""
        self._store.put(subscriber)
        self._store.discard_vectors(subscriber.imsi)

    def subscriber(self, imsi: str) -> Subscriber:
        found = self._store.get(imsi)
        if found is None:
            raise UnknownSubscriber(imsi)
        return found

    def _usable(self, imsi: str) -> Subscriber:
        found = self.subscriber(imsi)
        if found.barred:
            raise AuthenticationRefused(imsi, "subscriber is barred")
        return found

    def generate_vector(self, imsi: str) -> aka.AuthVector:
        """Reserve the next SQN (compare-and-set, so no SQN is used twice) and build a quintet."""
        for _ in range(_CAS_ATTEMPTS):
            found = self._usable(imsi)
            if self._store.compare_and_set_sqn(imsi, found.sqn, aka.next_sqn(found.sqn)):
                vector = aka.generate_vector(found.aka_algorithm(), found.sqn, found.amf, self._rng(16))
                self._store.add_vector(imsi, vector)
                return vector
        raise KinsimError(f"could not reserve an SQN for IMSI {imsi}: store keeps changing it")

    def verify_response(self, imsi: str, rand: bytes, res: bytes) -> bool:
        """RES == XRES of the unused vector issued with RAND; each vector answers once."""
        vector = self._store.take_vector(imsi, rand)
        found = self._store.get(imsi)
        if vector is None or found is None or found.barred:
            return False
        return hmac.compare_digest(vector.xres, bytes(res))

    def resynchronise(self, imsi: str, rand: bytes, auts: bytes) -> int:
        """TS 33.102 6.3.5: check MAC-S, then make the next SQN acceptable to the card.

        RAND must belong to a vector we issued and that is still unused. All unused vectors are
        dropped. The next SQN stays if the card will accept it (SEQ above SEQ_MS, within delta);
        otherwise it becomes SEQ_MS + 1. Returns the next SQN.
        """
        found = self._usable(imsi)
        sqn_ms = aka.resync_sqn(found.aka_algorithm(), rand, auts)  # raises before any change
        if self._store.take_vector(imsi, rand) is None:
            raise AuthenticationRefused(imsi, "resynchronisation for a RAND that was not issued or is used")
        self._store.discard_vectors(imsi)
        seq_ms, ind_ms = aka.split_sqn(sqn_ms)
        for _ in range(_CAS_ATTEMPTS):
            current = self.subscriber(imsi).sqn
            if seq_ms < aka.split_sqn(current)[0] <= seq_ms + aka.DEFAULT_DELTA:
                return current
            new = aka.next_sqn(sqn_ms)
            if self._store.compare_and_set_sqn(imsi, current, new):
                return new
        raise KinsimError(f"could not resynchronise IMSI {imsi}: store keeps changing the SQN")

    def bar(self, imsi: str) -> None:
        if not self._store.set_barred(imsi, True):
            raise UnknownSubscriber(imsi)
        self._store.discard_vectors(imsi)  # so that unbarring does not revive them

    def unbar(self, imsi: str) -> None:
        if not self._store.set_barred(imsi, False):
            raise UnknownSubscriber(imsi)

    def challenge(self, imsi: str, card: CardCallable) -> ChallengeOutcome:
        """One authentication against a card, resynchronising once on a sync failure."""
        vector, response = self._ask(imsi, card)
        if isinstance(response, aka.SyncFailure):
            self.resynchronise(imsi, vector.rand, response.auts)
            vector, response = self._ask(imsi, card)
        if isinstance(response, aka.MacFailure):
            return ChallengeOutcome.MAC_FAILURE
        if isinstance(response, aka.SyncFailure):
            self._store.take_vector(imsi, vector.rand)
            return ChallengeOutcome.SYNC_FAILURE
        if self.verify_response(imsi, vector.rand, response.res):
            return ChallengeOutcome.AUTHENTICATED
        return ChallengeOutcome.RES_MISMATCH

    def _ask(
        self, imsi: str, card: CardCallable
    ) -> tuple[aka.AuthVector, aka.AuthenticateResponse | aka.SyncFailure | aka.MacFailure]:
        vector = self.generate_vector(imsi)
        try:
            return vector, aka.decode_authenticate_response(card(vector.rand, vector.autn))
        except ApduError as error:
            self._store.take_vector(imsi, vector.rand)
            if error.sw != aka.SW_MAC_FAILURE:
                raise
            return vector, aka.MacFailure()
        except DecodeError:
            self._store.take_vector(imsi, vector.rand)
            raise
