"""3GPP AKA: Milenage (TS 35.206), the XOR test algorithm (TS 34.108 8.1.2), vectors, SQN checks, AUTS.

One code path serves both ends. The network (HSS/AuC role) calls ``generate_vector`` and
``resync_sqn``; the card (USIM role) calls ``usim_authenticate`` and keeps its SQN array as a plain
tuple of ints. ``encode_*``/``decode_*`` are the AUTHENTICATE command and response of TS 31.102 7.1.2
(3G context).

SQN management follows TS 33.102 Annex C with these choices:

* SQN = SEQ || IND with a 5-bit IND (32 array slots), the size SAIP's ``sqnInit`` (32 entries) fixes.
* The card's array holds SEQ values (no IND), like SAIP ``sqnInit``; all start at 0 (Annex C.2.2).
* Wrap-around limit delta and age limit L are in SEQ units and default to 2**28, the SAIP defaults of
  ``sqnDelta`` and ``sqnAgeLimit``.
* The network increments SEQ for every vector and cycles IND (``next_sqn``), so up to 32 vectors
  issued before any is used are still accepted in any order.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from rsp.errors import DecodeError, KinsimError

SQN_BITS = 48
DEFAULT_IND_BITS = 5
DEFAULT_DELTA = 1 << 28  # SAIP sqnDelta default '000010000000'
DEFAULT_AGE_LIMIT = 1 << 28  # SAIP sqnAgeLimit default '000010000000'
RESYNC_AMF = b"\x00\x00"  # TS 33.102 6.3.3: MAC-S uses a dummy AMF of all zeros

MILENAGE = "milenage"
XOR_TEST = "usim-test-algorithm"

# TS 31.102 7.1.2 AUTHENTICATE (INS 88, P2 '81' = specific reference data, 3G context)
INS_AUTHENTICATE = 0x88
P2_3G_CONTEXT = 0x81
TAG_SUCCESS = 0xDB
TAG_SYNC_FAILURE = 0xDC
SW_MAC_FAILURE = 0x9862  # "Authentication error, incorrect MAC"

_RAND_LEN = 16
_AUTN_LEN = 16
_AUTS_LEN = 14
_KEY_LEN = 16
_KC_LEN = 8


class AkaError(KinsimError):
    """An AKA input that is well formed but cannot be used (unsupported algorithm, exhausted SQN)."""


class InvalidAuts(AkaError):
    """An AUTS whose MAC-S does not verify under the subscriber's key (TS 33.102 6.3.5)."""


def _require(name: str, value: bytes, length: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise DecodeError(f"{name} must be {length} bytes, got {got}")
    return bytes(value)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def sqn_to_bytes(sqn: int) -> bytes:
    if not 0 <= sqn < 1 << SQN_BITS:
        raise DecodeError(f"SQN must fit in 48 bits, got {sqn}")
    return sqn.to_bytes(6, "big")


def split_sqn(sqn: int, ind_bits: int = DEFAULT_IND_BITS) -> tuple[int, int]:
    """SQN -> (SEQ, IND) (TS 33.102 Annex C.1.1: IND is the least significant bits)."""
    return sqn >> ind_bits, sqn & ((1 << ind_bits) - 1)


def join_sqn(seq: int, ind: int, ind_bits: int = DEFAULT_IND_BITS) -> int:
    if not 0 <= ind < 1 << ind_bits or not 0 <= seq < 1 << (SQN_BITS - ind_bits):
        raise AkaError(f"SEQ {seq} / IND {ind} do not fit a 48-bit SQN with {ind_bits} IND bits")
    return (seq << ind_bits) | ind


def next_sqn(sqn: int, ind_bits: int = DEFAULT_IND_BITS) -> int:
    """The SQN after ``sqn``: SEQ + 1 and the next IND slot (our Annex C.1 allocation choice)."""
    seq, ind = split_sqn(sqn, ind_bits)
    return join_sqn(seq + 1, (ind + 1) % (1 << ind_bits), ind_bits)


# --- Milenage (TS 35.206) ------------------------------------------------------------------------


@dataclass(frozen=True)
class MilenageConstants:
    """Rotations r1..r5 (bits) and XOR constants c1..c5 of TS 35.206 4.1; defaults from there."""

    r: tuple[int, ...] = (64, 0, 32, 64, 96)
    c: tuple[bytes, ...] = tuple(v.to_bytes(16, "big") for v in (0, 1, 2, 4, 8))

    def __post_init__(self) -> None:
        if len(self.r) != 5 or any(not 0 <= r < 128 for r in self.r):
            raise DecodeError(f"Milenage needs five rotations in 0..127, got {self.r}")
        if len(self.c) != 5:
            raise DecodeError(f"Milenage needs five XOR constants, got {len(self.c)}")
        for i, c in enumerate(self.c, start=1):
            _require(f"c{i}", c, 16)

    @classmethod
    def from_saip(cls, rotation_constants: bytes, xoring_constants: bytes) -> MilenageConstants:
        """SAIP AlgoParameter rotationConstants (5 bytes, bits) and xoringConstants (80 bytes)."""
        _require("rotationConstants", rotation_constants, 5)
        _require("xoringConstants", xoring_constants, 80)
        c = tuple(xoring_constants[i : i + 16] for i in range(0, 80, 16))
        return cls(r=tuple(rotation_constants), c=c)

    def to_saip(self) -> tuple[bytes, bytes]:
        return bytes(self.r), b"".join(self.c)


DEFAULT_CONSTANTS = MilenageConstants()


def _rot(block: bytes, bits: int) -> bytes:
    """Cyclic rotation of a 128-bit block towards the most significant bit (TS 35.206 4.1)."""
    value = int.from_bytes(block, "big")
    mask = (1 << 128) - 1
    return (((value << bits) | (value >> (128 - bits))) & mask).to_bytes(16, "big")


def _aes(k: bytes):
    encryptor = Cipher(algorithms.AES(_require("K", k, _KEY_LEN)), modes.ECB()).encryptor()
    return encryptor.update


def compute_opc(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP) (TS 35.206 4.1)."""
    op = _require("OP", op, 16)
    return _xor(op, _aes(k)(op))


def milenage_f1(
    k: bytes,
    opc: bytes,
    rand: bytes,
    sqn: bytes,
    amf: bytes,
    constants: MilenageConstants = DEFAULT_CONSTANTS,
) -> tuple[bytes, bytes]:
    """(MAC-A, MAC-S) = OUT1[0..63], OUT1[64..127] (TS 35.206 4.1)."""
    e_k = _aes(k)
    opc = _require("OPc", opc, 16)
    temp = e_k(_xor(_require("RAND", rand, _RAND_LEN), opc))
    in1 = (_require("SQN", sqn, 6) + _require("AMF", amf, 2)) * 2
    out1 = _xor(e_k(_xor(_xor(temp, _rot(_xor(in1, opc), constants.r[0])), constants.c[0])), opc)
    return out1[:8], out1[8:]


def milenage_f2345(
    k: bytes, opc: bytes, rand: bytes, constants: MilenageConstants = DEFAULT_CONSTANTS
) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(RES, CK, IK, AK, AK*) from OUT2..OUT5 (TS 35.206 4.1)."""
    e_k = _aes(k)
    opc = _require("OPc", opc, 16)
    temp_opc = _xor(e_k(_xor(_require("RAND", rand, _RAND_LEN), opc)), opc)

    def out(i: int) -> bytes:
        return _xor(e_k(_xor(_rot(temp_opc, constants.r[i]), constants.c[i])), opc)

    out2, out3, out4, out5 = out(1), out(2), out(3), out(4)
    return out2[8:], out3, out4, out2[:6], out5[:6]


# --- The algorithm interface shared by card and network -----------------------------------------


class AkaAlgorithm(Protocol):
    """f1..f5* of TS 33.102 6.3.2 for one subscriber key."""

    name: str

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        """MAC-A (or XMAC-A)."""
        ...

    def f1star(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        """MAC-S for resynchronisation."""
        ...

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """(RES, CK, IK, AK)."""
        ...

    def f5star(self, rand: bytes) -> bytes:
        """AK* that conceals SQN_MS in AUTS."""
        ...


class Milenage:
    name = MILENAGE

    def __init__(self, k: bytes, opc: bytes, constants: MilenageConstants | None = None):
        self.k = _require("K", k, _KEY_LEN)
        self.opc = _require("OPc", opc, 16)
        self.constants = constants or DEFAULT_CONSTANTS

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        return milenage_f1(self.k, self.opc, rand, sqn, amf, self.constants)[0]

    def f1star(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        return milenage_f1(self.k, self.opc, rand, sqn, amf, self.constants)[1]

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        return milenage_f2345(self.k, self.opc, rand, self.constants)[:4]

    def f5star(self, rand: bytes) -> bytes:
        return milenage_f2345(self.k, self.opc, rand, self.constants)[4]


class XorTest:
    """The test algorithm of TS 34.108 8.1.2 (SAIP "usim-test-algorithm", used by TS.48 profiles).

    XDOUT = K xor RAND; RES = XDOUT[bits 0..n-1]; CK = XDOUT rotated left by 8 bits, IK by 16 bits;
    AK = XDOUT[bits 24..71]; MAC = XDOUT[bits 0..63] xor (SQN || AMF) (8.1.2.1). Resynchronisation
    (8.1.2.2) uses the same AK and MAC construction, so f5* = f5 and f1* = f1.
    ``res_length`` is n/8; TS.48 profiles (algorithmOptions '02') use the full 128 bits.
    """

    name = XOR_TEST

    def __init__(self, k: bytes, res_length: int = 16):
        if not 4 <= res_length <= 16:
            raise DecodeError(f"XOR test algorithm RES must be 4..16 bytes, got {res_length}")
        self.k = _require("K", k, _KEY_LEN)
        self.res_length = res_length

    def _xdout(self, rand: bytes) -> bytes:
        return _xor(self.k, _require("RAND", rand, _RAND_LEN))

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        cdout = _require("SQN", sqn, 6) + _require("AMF", amf, 2)
        return _xor(self._xdout(rand)[:8], cdout)

    f1star = f1

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        xdout = self._xdout(rand)
        return xdout[: self.res_length], xdout[1:] + xdout[:1], xdout[2:] + xdout[:2], xdout[3:9]

    def f5star(self, rand: bytes) -> bytes:
        return self._xdout(rand)[3:9]


def algorithm_for(
    name: str,
    k: bytes,
    opc: bytes | None = None,
    op: bytes | None = None,
    constants: MilenageConstants | None = None,
) -> AkaAlgorithm:
    """The algorithm a SAIP akaParameter names ("milenage" or "usim-test-algorithm")."""
    if name == MILENAGE:
        if (opc is None) == (op is None):
            raise DecodeError("Milenage needs exactly one of OP and OPc")
        return Milenage(k, opc if opc is not None else compute_opc(k, op), constants)
    if name == XOR_TEST:
        return XorTest(k)
    raise AkaError(f"AKA algorithm {name!r} is not supported (milenage, usim-test-algorithm)")


def c2(res: bytes) -> bytes:
    """GSM SRES from RES (TS 33.102 6.8.1.2): RES padded to 128 bits, its four 32-bit words XORed."""
    padded = res.ljust(16, b"\x00")
    words = [int.from_bytes(padded[i : i + 4], "big") for i in range(0, 16, 4)]
    return (words[0] ^ words[1] ^ words[2] ^ words[3]).to_bytes(4, "big")


def c3(ck: bytes, ik: bytes) -> bytes:
    """GSM Kc from CK and IK: CK1 xor CK2 xor IK1 xor IK2 (TS 33.102 6.8.1.2)."""
    ck, ik = _require("CK", ck, 16), _require("IK", ik, 16)
    return _xor(_xor(ck[:8], ck[8:]), _xor(ik[:8], ik[8:]))


# --- Network side (TS 33.102 6.3.2, 6.3.5) -------------------------------------------------------


@dataclass(frozen=True)
class AuthVector:
    """A quintet: AUTN = SQN xor AK || AMF || MAC-A (TS 33.102 6.3.2)."""

    rand: bytes
    autn: bytes
    xres: bytes
    ck: bytes
    ik: bytes
    ak: bytes


def generate_vector(alg: AkaAlgorithm, sqn: int, amf: bytes, rand: bytes) -> AuthVector:
    sqn_bytes = sqn_to_bytes(sqn)
    amf = _require("AMF", amf, 2)
    xres, ck, ik, ak = alg.f2345(rand)
    autn = _xor(sqn_bytes, ak) + amf + alg.f1(rand, sqn_bytes, amf)
    return AuthVector(rand=bytes(rand), autn=autn, xres=xres, ck=ck, ik=ik, ak=ak)


def resync_sqn(alg: AkaAlgorithm, rand: bytes, auts: bytes) -> int:
    """SQN_MS from AUTS = (SQN_MS xor AK*) || MAC-S after checking MAC-S (TS 33.102 6.3.5)."""
    auts = _require("AUTS", auts, _AUTS_LEN)
    sqn_ms = _xor(auts[:6], alg.f5star(rand))
    if not hmac.compare_digest(alg.f1star(rand, sqn_ms, RESYNC_AMF), auts[6:]):
        raise InvalidAuts("AUTS rejected: MAC-S does not verify (wrong key or corrupted AUTS)")
    return int.from_bytes(sqn_ms, "big")


# --- Card side (TS 33.102 6.3.3 and Annex C.2, TS 31.102 7.1.2) -----------------------------------


@dataclass(frozen=True)
class AuthSuccess:
    """The USIM accepted the challenge; ``sqn_state`` is the array to persist."""

    res: bytes
    ck: bytes
    ik: bytes
    sqn: int
    sqn_state: tuple[int, ...]


@dataclass(frozen=True)
class MacFailure:
    """XMAC-A differs from MAC-A: the network does not know K (SW '9862')."""


@dataclass(frozen=True)
class SyncFailure:
    """SQN out of range; AUTS = (SQN_MS xor AK*) || MAC-S (TS 33.102 6.3.3)."""

    auts: bytes


AuthResult = AuthSuccess | MacFailure | SyncFailure


def initial_sqn_state(ind_bits: int = DEFAULT_IND_BITS) -> tuple[int, ...]:
    """All SEQ_MS(i) = 0 (TS 33.102 Annex C.2.2)."""
    return (0,) * (1 << ind_bits)


def _check_state(sqn_state: Sequence[int], ind_bits: int) -> tuple[int, ...]:
    state = tuple(sqn_state)
    limit = 1 << (SQN_BITS - ind_bits)
    if len(state) != 1 << ind_bits or any(not isinstance(s, int) or not 0 <= s < limit for s in state):
        raise DecodeError(f"SQN state must be {1 << ind_bits} SEQ values below 2**{SQN_BITS - ind_bits}")
    return state


def highest_sqn(sqn_state: Sequence[int], ind_bits: int = DEFAULT_IND_BITS) -> int:
    """SQN_MS: the highest accepted SEQ anywhere in the array, with its IND (Annex C.2.2)."""
    state = _check_state(sqn_state, ind_bits)
    seq_ms = max(state)
    return join_sqn(seq_ms, state.index(seq_ms), ind_bits)


def sqn_is_fresh(
    sqn: int, sqn_state: Sequence[int], *, ind_bits: int, delta: int, age_limit: int | None
) -> bool:
    """TS 33.102 Annex C.2: wrap-around limit delta (C.2.1), age limit L, then the array (C.2.2)."""
    state = _check_state(sqn_state, ind_bits)
    seq, ind = split_sqn(sqn, ind_bits)
    seq_ms = max(state)
    if seq - seq_ms > delta:
        return False
    if age_limit is not None and seq_ms - seq >= age_limit:
        return False
    return seq > state[ind]


def usim_authenticate(
    alg: AkaAlgorithm,
    rand: bytes,
    autn: bytes,
    sqn_state: Sequence[int],
    *,
    ind_bits: int = DEFAULT_IND_BITS,
    delta: int = DEFAULT_DELTA,
    age_limit: int | None = DEFAULT_AGE_LIMIT,
) -> AuthResult:
    """What the USIM does with RAND and AUTN (TS 33.102 6.3.3): MAC first, then SQN freshness."""
    rand = _require("RAND", rand, _RAND_LEN)
    autn = _require("AUTN", autn, _AUTN_LEN)
    state = _check_state(sqn_state, ind_bits)
    res, ck, ik, ak = alg.f2345(rand)
    sqn_bytes, amf, mac_a = _xor(autn[:6], ak), autn[6:8], autn[8:]
    if not hmac.compare_digest(alg.f1(rand, sqn_bytes, amf), mac_a):
        return MacFailure()
    sqn = int.from_bytes(sqn_bytes, "big")
    if not sqn_is_fresh(sqn, state, ind_bits=ind_bits, delta=delta, age_limit=age_limit):
        return SyncFailure(make_auts(alg, rand, highest_sqn(state, ind_bits)))
    seq, ind = split_sqn(sqn, ind_bits)
    new_state = state[:ind] + (seq,) + state[ind + 1 :]
    return AuthSuccess(res=res, ck=ck, ik=ik, sqn=sqn, sqn_state=new_state)


def make_auts(alg: AkaAlgorithm, rand: bytes, sqn_ms: int) -> bytes:
    sqn_ms_bytes = sqn_to_bytes(sqn_ms)
    return _xor(sqn_ms_bytes, alg.f5star(rand)) + alg.f1star(rand, sqn_ms_bytes, RESYNC_AMF)


# --- AUTHENTICATE command data and response (TS 31.102 7.1.2.1, 3G context) -------------------------


@dataclass(frozen=True)
class AuthenticateResponse:
    """Successful 3G authentication ('DB'); ``kc`` only when the USIM has GSM access (service 27)."""

    res: bytes
    ck: bytes
    ik: bytes
    kc: bytes | None = None


def _lv(value: bytes) -> bytes:
    return bytes([len(value)]) + value


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = bytes(data), 0, what

    def lv(self, name: str, lengths: range) -> bytes:
        if self.pos >= len(self.data):
            raise DecodeError(f"{self.what}: {name} is missing")
        length = self.data[self.pos]
        if length not in lengths:
            raise DecodeError(
                f"{self.what}: {name} length {length} not in {lengths.start}..{lengths.stop - 1}"
            )
        value = self.data[self.pos + 1 : self.pos + 1 + length]
        if len(value) != length:
            raise DecodeError(f"{self.what}: {name} truncated ({len(value)} of {length} bytes)")
        self.pos += 1 + length
        return value

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def end(self) -> None:
        if not self.at_end():
            raise DecodeError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def encode_authenticate_command(rand: bytes, autn: bytes) -> bytes:
    return _lv(_require("RAND", rand, _RAND_LEN)) + _lv(_require("AUTN", autn, _AUTN_LEN))


def decode_authenticate_command(data: bytes) -> tuple[bytes, bytes]:
    """(RAND, AUTN) from 3G-context command data: L RAND L AUTN."""
    reader = _Reader(data, "AUTHENTICATE command")
    rand = reader.lv("RAND", range(_RAND_LEN, _RAND_LEN + 1))
    autn = reader.lv("AUTN", range(_AUTN_LEN, _AUTN_LEN + 1))
    reader.end()
    return rand, autn


def encode_authenticate_success(res: bytes, ck: bytes, ik: bytes, kc: bytes | None = None) -> bytes:
    if not 4 <= len(res) <= 16:
        raise DecodeError(f"RES must be 4..16 bytes, got {len(res)}")
    body = _lv(bytes(res)) + _lv(_require("CK", ck, 16)) + _lv(_require("IK", ik, 16))
    if kc is not None:
        body += _lv(_require("Kc", kc, _KC_LEN))
    return bytes([TAG_SUCCESS]) + body


def encode_sync_failure(auts: bytes) -> bytes:
    return bytes([TAG_SYNC_FAILURE]) + _lv(_require("AUTS", auts, _AUTS_LEN))


def decode_authenticate_response(data: bytes) -> AuthenticateResponse | SyncFailure:
    if not data:
        raise DecodeError("AUTHENTICATE response is empty")
    reader = _Reader(data[1:], "AUTHENTICATE response")
    if data[0] == TAG_SYNC_FAILURE:
        auts = reader.lv("AUTS", range(_AUTS_LEN, _AUTS_LEN + 1))
        reader.end()
        return SyncFailure(auts)
    if data[0] != TAG_SUCCESS:
        raise DecodeError(f"AUTHENTICATE response tag {data[0]:02X} is neither 'DB' nor 'DC'")
    res = reader.lv("RES", range(4, 17))
    ck = reader.lv("CK", range(16, 17))
    ik = reader.lv("IK", range(16, 17))
    kc = None if reader.at_end() else reader.lv("Kc", range(_KC_LEN, _KC_LEN + 1))
    reader.end()
    return AuthenticateResponse(res=res, ck=ck, ik=ik, kc=kc)
