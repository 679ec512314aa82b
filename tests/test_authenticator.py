"""mno.authenticator: vectors, RES checks, resynchronisation and barring against a software USIM."""

from __future__ import annotations

import itertools

import pytest

from mno.authenticator import (
    AuthenticationRefused,
    Authenticator,
    ChallengeOutcome,
    InMemoryAuthenticatorStore,
    Subscriber,
    UnknownSubscriber,
)
from rsp import aka
from rsp.errors import ApduError, DecodeError

TS48_K = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
MILENAGE_K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")  # TS 35.208 test set 1
MILENAGE_OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
ICCID = "89000123456789012341"


class SoftUsim:
    """The card side of AUTHENTICATE: rsp.aka checks plus the TS 31.102 7.1.2 response encoding."""

    def __init__(self, alg: aka.AkaAlgorithm, sqn_state: tuple[int, ...] | None = None):
        self.alg = alg
        self.sqn_state = sqn_state or aka.initial_sqn_state()
        self.seen: list[tuple[bytes, bytes]] = []

    def __call__(self, rand: bytes, autn: bytes) -> bytes:
        self.seen.append((rand, autn))
        result = aka.usim_authenticate(self.alg, rand, autn, self.sqn_state)
        if isinstance(result, aka.MacFailure):
            raise ApduError(aka.SW_MAC_FAILURE, "AUTHENTICATE: incorrect MAC")
        if isinstance(result, aka.SyncFailure):
            return aka.encode_sync_failure(result.auts)
        self.sqn_state = result.sqn_state
        return aka.encode_authenticate_success(result.res, result.ck, result.ik)


def counting_rng():
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def milenage_subscriber(imsi: str = "001010000000001", **changes) -> Subscriber:
    return Subscriber(imsi=imsi, iccid=ICCID, algorithm="milenage", k=MILENAGE_K, opc=MILENAGE_OPC, **changes)


def ts48_subscriber() -> Subscriber:
    return Subscriber(imsi="001010123456789", iccid=ICCID, algorithm="usim-test-algorithm", k=TS48_K)


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(InMemoryAuthenticatorStore(), rng=counting_rng())


def sqn_of(vector: aka.AuthVector) -> int:
    return int.from_bytes(bytes(a ^ b for a, b in zip(vector.autn[:6], vector.ak, strict=True)), "big")


@pytest.mark.parametrize("make", [milenage_subscriber, ts48_subscriber], ids=["milenage", "ts48-xor"])
def test_linked_profile_authenticates(auth, make):
    subscriber = make()
    auth.provision(subscriber)
    card = SoftUsim(subscriber.aka_algorithm())
    assert auth.challenge(subscriber.imsi, card) is ChallengeOutcome.AUTHENTICATED
    assert auth.challenge(subscriber.imsi, card) is ChallengeOutcome.AUTHENTICATED
    assert card.sqn_state[:2] == (1, 2)  # SEQ advanced, IND cycled
    assert auth.subscriber(subscriber.imsi).sqn == aka.join_sqn(3, 2)


def test_vector_is_deterministic_with_a_seeded_rng(auth):
    auth.provision(milenage_subscriber())
    vector = auth.generate_vector("001010000000001")
    assert vector.rand == bytes(16)
    assert sqn_of(vector) == aka.join_sqn(1, 0)
    assert vector == aka.generate_vector(aka.Milenage(MILENAGE_K, MILENAGE_OPC), 32, b"\x80\x00", bytes(16))


def test_each_vector_answers_once(auth):
    auth.provision(milenage_subscriber())
    vector = auth.generate_vector("001010000000001")
    assert auth.verify_response("001010000000001", vector.rand, vector.xres)
    assert not auth.verify_response("001010000000001", vector.rand, vector.xres)
    assert not auth.verify_response("001010000000001", b"\x55" * 16, vector.xres)  # never issued


def test_wrong_key_card_fails(auth):
    auth.provision(milenage_subscriber())
    vector = auth.generate_vector("001010000000001")
    wrong = aka.Milenage(bytes(16), MILENAGE_OPC)
    assert not auth.verify_response("001010000000001", vector.rand, wrong.f2345(vector.rand)[0])
    assert auth.challenge("001010000000001", SoftUsim(wrong)) is ChallengeOutcome.MAC_FAILURE


def test_barred_subscriber_is_refused_until_unbarred(auth):
    subscriber = ts48_subscriber()
    auth.provision(subscriber)
    card = SoftUsim(subscriber.aka_algorithm())
    issued = auth.generate_vector(subscriber.imsi)
    auth.bar(subscriber.imsi)
    with pytest.raises(AuthenticationRefused, match="barred"):
        auth.generate_vector(subscriber.imsi)
    with pytest.raises(AuthenticationRefused):
        auth.challenge(subscriber.imsi, card)
    assert card.seen == []
    assert not auth.verify_response(subscriber.imsi, issued.rand, issued.xres)

    auth.unbar(subscriber.imsi)
    assert not auth.verify_response(subscriber.imsi, issued.rand, issued.xres)  # voided by barring
    assert auth.challenge(subscriber.imsi, card) is ChallengeOutcome.AUTHENTICATED


def test_a_vector_issued_while_barring_races_is_not_accepted():
    store = InMemoryAuthenticatorStore()
    auth = Authenticator(store, rng=counting_rng())
    auth.provision(milenage_subscriber())
    vector = auth.generate_vector("001010000000001")
    store.set_barred("001010000000001", True)  # barred, vectors not yet discarded
    assert not auth.verify_response("001010000000001", vector.rand, vector.xres)


def test_unknown_subscriber(auth):
    with pytest.raises(UnknownSubscriber):
        auth.generate_vector("001019999999999")
    with pytest.raises(UnknownSubscriber):
        auth.bar("001019999999999")
    assert not auth.verify_response("001019999999999", bytes(16), bytes(8))


def test_sync_failure_is_resolved_by_one_resynchronisation(auth):
    auth.provision(milenage_subscriber())
    # The card was used with SQNs far ahead (e.g. another AuC): our SQN 32 is stale for it.
    card = SoftUsim(aka.Milenage(MILENAGE_K, MILENAGE_OPC), sqn_state=(500,) * 32)
    assert auth.challenge("001010000000001", card) is ChallengeOutcome.AUTHENTICATED
    assert len(card.seen) == 2
    assert auth.subscriber("001010000000001").sqn == aka.join_sqn(502, 2)  # SQN_MS was SEQ 500, IND 0
    assert card.sqn_state[1] == 501


def test_resynchronise_keeps_an_acceptable_sqn(auth):
    auth.provision(milenage_subscriber(sqn=aka.join_sqn(40, 0)))
    vector = auth.generate_vector("001010000000001")
    alg = aka.Milenage(MILENAGE_K, MILENAGE_OPC)
    auts = aka.make_auts(alg, vector.rand, aka.join_sqn(10, 7))  # e.g. rejected by the age limit
    assert auth.resynchronise("001010000000001", vector.rand, auts) == aka.join_sqn(41, 1)


def test_bad_auts_changes_nothing(auth):
    auth.provision(milenage_subscriber())
    vector = auth.generate_vector("001010000000001")
    before = auth.subscriber("001010000000001")
    auts = bytearray(aka.make_auts(aka.Milenage(MILENAGE_K, MILENAGE_OPC), vector.rand, aka.join_sqn(900, 1)))
    auts[7] ^= 0x80
    with pytest.raises(aka.InvalidAuts):
        auth.resynchronise("001010000000001", vector.rand, bytes(auts))
    assert auth.subscriber("001010000000001") == before
    assert auth.verify_response("001010000000001", vector.rand, vector.xres)  # still pending


def test_resynchronise_needs_an_issued_rand(auth):
    auth.provision(milenage_subscriber())
    rand = b"\x42" * 16
    auts = aka.make_auts(aka.Milenage(MILENAGE_K, MILENAGE_OPC), rand, aka.join_sqn(900, 1))
    with pytest.raises(AuthenticationRefused, match="not issued"):
        auth.resynchronise("001010000000001", rand, auts)
    assert auth.subscriber("001010000000001").sqn == aka.join_sqn(1, 0)


def test_replayed_challenge_is_refused_by_the_card(auth):
    subscriber = ts48_subscriber()
    auth.provision(subscriber)
    card = SoftUsim(subscriber.aka_algorithm())
    assert auth.challenge(subscriber.imsi, card) is ChallengeOutcome.AUTHENTICATED
    rand, autn = card.seen[-1]
    assert isinstance(aka.decode_authenticate_response(card(rand, autn)), aka.SyncFailure)


def test_card_that_never_resynchronises(auth):
    auth.provision(milenage_subscriber())
    stuck = aka.Milenage(MILENAGE_K, MILENAGE_OPC)

    def card(rand: bytes, autn: bytes) -> bytes:
        return aka.encode_sync_failure(aka.make_auts(stuck, rand, aka.join_sqn(0, 0)))

    assert auth.challenge("001010000000001", card) is ChallengeOutcome.SYNC_FAILURE


def test_res_mismatch_and_garbage_from_the_card(auth):
    auth.provision(milenage_subscriber())

    def wrong_res(rand: bytes, autn: bytes) -> bytes:
        return aka.encode_authenticate_success(bytes(8), bytes(16), bytes(16))

    def security_status(rand: bytes, autn: bytes) -> bytes:
        raise ApduError(0x6982, "security status not satisfied")

    assert auth.challenge("001010000000001", wrong_res) is ChallengeOutcome.RES_MISMATCH
    with pytest.raises(DecodeError):
        auth.challenge("001010000000001", lambda rand, autn: b"\x90\x00")
    with pytest.raises(ApduError):
        auth.challenge("001010000000001", security_status)


class InterleavingStore(InMemoryAuthenticatorStore):
    """Another authenticator reserves an SQN between our read and our compare-and-set."""

    def __init__(self):
        super().__init__()
        self.rival: Authenticator | None = None

    def compare_and_set_sqn(self, imsi: str, expected: int, new: int) -> bool:
        rival, self.rival = self.rival, None
        if rival is not None:
            self.rival_vector = rival.generate_vector(imsi)
        return super().compare_and_set_sqn(imsi, expected, new)


def test_concurrent_vector_generation_never_reuses_an_sqn():
    store = InterleavingStore()
    ours, theirs = Authenticator(store, rng=counting_rng()), Authenticator(store, rng=lambda n: b"\xff" * n)
    ours.provision(milenage_subscriber())
    store.rival = theirs
    vector = ours.generate_vector("001010000000001")
    assert sqn_of(store.rival_vector) == aka.join_sqn(1, 0)
    assert sqn_of(vector) == aka.join_sqn(2, 1)
    assert store.get("001010000000001").sqn == aka.join_sqn(3, 2)


def test_provisioning_voids_earlier_vectors(auth):
    auth.provision(milenage_subscriber())
    vector = auth.generate_vector("001010000000001")
    auth.provision(milenage_subscriber())
    assert not auth.verify_response("001010000000001", vector.rand, vector.xres)


@pytest.mark.parametrize(
    "changes",
    [
        {"imsi": "00101x"},
        {"iccid": "89000123456789012342"},
        {"algorithm": "tuak"},
        {"opc": None},
        {"k": bytes(15)},
        {"amf": b"\x80"},
        {"sqn": 2**48},
    ],
)
def test_subscriber_record_is_validated(changes):
    fields = {"imsi": "001010000000001", "iccid": ICCID, "algorithm": "milenage", "k": MILENAGE_K}
    fields["opc"] = MILENAGE_OPC
    with pytest.raises(DecodeError):
        Subscriber(**{**fields, **changes})
