"""SCP03t / BSP: session key derivation and protection of Bound Profile Package commands.

SGP.22 v2.5: 2.5.5 segmented BPP, 2.6.6 SCP03t, Annex G key derivation, 5.5 ES8+ commands.

- Key derivation: ANSI X9.63 KDF with SHA-256 (as in BSI TR-03111) over the ECKA shared secret with
  SharedInfo = keyType || keyLength || len(hostId) || hostId || len(EID) || EID; the 48 output bytes
  are initial MAC chaining value || S-ENC || S-MAC (each 16 bytes, AES-128).
- Protection of one TLV (tag '86', '87' or '88'): optional AES-CBC encryption with padding '80 00..'
  and an ICV = AES(S-ENC, block counter as a 16-byte big-endian block); then an AES-CMAC over
  MAC chaining value || tag || final length || data. The full 16-byte CMAC becomes the next MAC
  chaining value and its first 8 bytes are appended as the MAC. The block counter starts at 1 and
  advances once per protected TLV, including MAC-only ones.
- Segmentation: every protected TLV of the BPP is at most 1020 bytes, tag, length and MAC included.

The SM-DP+ calls ``protect`` and the eUICC ``unprotect`` on two contexts built from the same keys.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from rsp.errors import DecodeError, KinsimError
from rsp.tlv import encode_length

KEY_TYPE_AES = 0x88  # GlobalPlatform key type for AES (CRT keyType)
KEY_LENGTH = 16  # AES-128, the only length SGP.22 v2 defines (CRT keyLen '10')
MAC_LENGTH = 8
BLOCK = 16
EID_LENGTH = 16
# SGP.22 2.5.5: segments of at most 1020 bytes including tag, length field and MAC.
MAX_SEGMENT = 1020
PROTECTED_TAGS = frozenset({0x86, 0x87, 0x88})


class BspError(KinsimError):
    """Base of BSP failures; ``error_reason`` is the ProfileInstallationResult errorReason (5.7.6)."""

    error_reason = 127


class BspStructureError(BspError):
    """A protected TLV is malformed: tag, length, size or padding (scp03tStructureError)."""

    error_reason = 7


class BspMacError(BspError):
    """A protected TLV failed its MAC check (scp03tSecurityError)."""

    error_reason = 8


class BspUnsupportedCrtError(BspError):
    """The key derivation parameters of InitialiseSecureChannel are not supported (unsupportedCrtValues)."""

    error_reason = 4


class BspInputError(BspError):
    """Session keys of the wrong size, e.g. in ReplaceSessionKeys (incorrectInputValues)."""

    error_reason = 1


@dataclass(frozen=True)
class SessionKeys:
    """S-ENC, S-MAC and the initial MAC chaining value (or PPK-ENC, PPK-MAC, MCV after replacement)."""

    s_enc: bytes
    s_mac: bytes
    initial_mcv: bytes

    def __post_init__(self) -> None:
        for name in ("s_enc", "s_mac", "initial_mcv"):
            value = getattr(self, name)
            if len(value) != KEY_LENGTH:
                raise BspInputError(f"{name} must be {KEY_LENGTH} bytes, got {len(value)}")

    def __repr__(self) -> str:  # keep key material out of logs and tracebacks
        return "SessionKeys(<redacted>)"


def derive_session_keys(
    shared_secret: bytes, *, key_type: int = KEY_TYPE_AES, key_length: int = KEY_LENGTH, host_id: bytes, eid: bytes
) -> SessionKeys:
    """Annex G: the BSP session keys from the ECKA shared secret and the InitialiseSecureChannel CRT."""
    if key_type != KEY_TYPE_AES:
        raise BspUnsupportedCrtError(f"key type {key_type:#04x} is not supported; only AES ({KEY_TYPE_AES:#04x})")
    if key_length != KEY_LENGTH:
        raise BspUnsupportedCrtError(f"key length {key_length} is not supported; only {KEY_LENGTH}")
    if not 1 <= len(host_id) <= 16:
        raise BspUnsupportedCrtError(f"hostId must be 1 to 16 bytes, got {len(host_id)}")
    if len(eid) != EID_LENGTH:
        raise DecodeError(f"EID must be {EID_LENGTH} bytes, got {len(eid)}")
    shared_info = bytes([key_type, key_length, len(host_id)]) + host_id + bytes([len(eid)]) + eid
    out = X963KDF(algorithm=hashes.SHA256(), length=3 * key_length, sharedinfo=shared_info).derive(shared_secret)
    return SessionKeys(
        initial_mcv=out[:key_length], s_enc=out[key_length : 2 * key_length], s_mac=out[2 * key_length :]
    )


def _max_value_length(encrypt: bool) -> int:
    # tag (1) + length field of a ~1016-byte value ('82 xx xx') + MAC leave 1008 bytes for data;
    # encrypted data needs whole blocks and at least one padding byte.
    room = MAX_SEGMENT - 1 - len(encode_length(MAX_SEGMENT)) - MAC_LENGTH
    return room // BLOCK * BLOCK - 1 if encrypt else room


MAX_VALUE_ENCRYPTED = _max_value_length(encrypt=True)  # 1007
MAX_VALUE_MAC_ONLY = _max_value_length(encrypt=False)  # 1008


def max_value_length(*, encrypt: bool) -> int:
    """The largest plaintext value whose protected TLV still fits in MAX_SEGMENT bytes."""
    return MAX_VALUE_ENCRYPTED if encrypt else MAX_VALUE_MAC_ONLY


def _pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 method 2: '80' then 0 to 15 '00' bytes up to a multiple of 16."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % BLOCK)


def _unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if len(data) - len(stripped) >= BLOCK or not stripped.endswith(b"\x80"):
        raise BspStructureError("decrypted data does not end with '80 00..' padding")
    return stripped[:-1]


def _parse_tlv(tlv: bytes) -> tuple[int, bytes, bytes]:
    """Split a protected TLV into (tag, header, body) with strict BER length checks."""
    if len(tlv) < 2:
        raise BspStructureError(f"protected TLV too short ({len(tlv)} bytes)")
    if len(tlv) > MAX_SEGMENT:
        raise BspStructureError(f"protected TLV of {len(tlv)} bytes exceeds the {MAX_SEGMENT}-byte segment limit")
    tag, first = tlv[0], tlv[1]
    if tag not in PROTECTED_TAGS:
        raise BspStructureError(f"tag {tag:02X} is not a BSP-protected tag (86, 87 or 88)")
    if first < 0x80:
        offset, length = 2, first
    elif first in (0x81, 0x82):
        offset = 2 + (first & 0x7F)
        if len(tlv) < offset:
            raise BspStructureError("length field truncated")
        length = int.from_bytes(tlv[2:offset], "big")
        if encode_length(length) != tlv[1:offset]:
            raise BspStructureError("length field is not in minimal form")
    else:
        raise BspStructureError(f"unsupported length byte {first:02X}")
    if len(tlv) - offset != length:
        raise BspStructureError(f"length field says {length} bytes, {len(tlv) - offset} follow")
    return tag, tlv[:offset], tlv[offset:]


class BspContext:
    """One SCP03t protection context: keys, MAC chaining value and block counter.

    Methods either succeed and advance the state, or raise and leave it untouched.
    """

    def __init__(self, keys: SessionKeys):
        self._keys = keys
        self._mcv = keys.initial_mcv
        self._counter = 1

    @property
    def mac_chaining_value(self) -> bytes:
        return self._mcv

    @property
    def counter(self) -> int:
        return self._counter

    def _snapshot(self) -> tuple[bytes, int]:
        return self._mcv, self._counter

    def _restore(self, state: tuple[bytes, int]) -> None:
        self._mcv, self._counter = state

    def _cipher(self) -> Cipher:
        icv = self._ecb(self._counter.to_bytes(BLOCK, "big"))
        return Cipher(algorithms.AES(self._keys.s_enc), modes.CBC(icv))

    def _ecb(self, block: bytes) -> bytes:
        encryptor = Cipher(algorithms.AES(self._keys.s_enc), modes.ECB()).encryptor()
        return encryptor.update(block) + encryptor.finalize()

    def _cmac(self, data: bytes) -> bytes:
        mac = cmac.CMAC(algorithms.AES(self._keys.s_mac))
        mac.update(self._mcv + data)
        return mac.finalize()

    def protect(self, tag: int, value: bytes, *, encrypt: bool) -> bytes:
        """Encrypt (optionally) and MAC ``value`` into one TLV with tag 86/87/88."""
        if tag not in PROTECTED_TAGS:
            raise ValueError(f"tag {tag:#04x} is not a BSP-protected tag")
        if len(value) > max_value_length(encrypt=encrypt):
            raise ValueError(f"value of {len(value)} bytes does not fit one {MAX_SEGMENT}-byte segment")
        if encrypt:
            encryptor = self._cipher().encryptor()
            value = encryptor.update(_pad(value)) + encryptor.finalize()
        header = bytes([tag]) + encode_length(len(value) + MAC_LENGTH)
        full_mac = self._cmac(header + value)
        self._mcv = full_mac
        self._counter += 1
        return header + value + full_mac[:MAC_LENGTH]

    def unprotect(self, tlv: bytes, *, encrypted: bool, tag: int | None = None) -> bytes:
        """Verify the MAC of one protected TLV and decrypt it; ``tag`` optionally pins the expected tag."""
        found, header, body = _parse_tlv(tlv)
        if tag is not None and found != tag:
            raise BspStructureError(f"expected tag {tag:02X}, found {found:02X}")
        if len(body) < MAC_LENGTH:
            raise BspStructureError(f"protected value of {len(body)} bytes is shorter than its MAC")
        data, mac = body[:-MAC_LENGTH], body[-MAC_LENGTH:]
        if encrypted and (not data or len(data) % BLOCK):
            raise BspStructureError(f"encrypted data of {len(data)} bytes is not a whole number of AES blocks")
        full_mac = self._cmac(header + data)
        if not hmac.compare_digest(full_mac[:MAC_LENGTH], mac):
            raise BspMacError(f"MAC of the {found:02X} TLV does not verify")
        if encrypted:
            decryptor = self._cipher().decryptor()
            data = _unpad(decryptor.update(data) + decryptor.finalize())
        self._mcv = full_mac
        self._counter += 1
        return data


def replace_session_keys(ppk_enc: bytes, ppk_mac: bytes, initial_mcv: bytes) -> BspContext:
    """A fresh context for the sequenceOf86 after ReplaceSessionKeys (SGP.22 2.5.5, ES8+ 5.5.4).

    The PPKs replace S-ENC and S-MAC, the given value replaces the MAC chaining value, and the block
    counter starts again at 1.
    """
    return BspContext(SessionKeys(s_enc=ppk_enc, s_mac=ppk_mac, initial_mcv=initial_mcv))


def protect_segments(
    ctx: BspContext, data: bytes, tag: int = 0x86, encrypt: bool = True, segment_size: int | None = None
) -> list[bytes]:
    """Split ``data`` into segments (largest allowed unless ``segment_size`` is smaller) and protect each."""
    limit = max_value_length(encrypt=encrypt)
    size = limit if segment_size is None else segment_size
    if not 1 <= size <= limit:
        raise ValueError(f"segment_size must be between 1 and {limit}, got {segment_size}")
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [ctx.protect(tag, chunk, encrypt=encrypt) for chunk in chunks]


def unprotect_segments(ctx: BspContext, segments: list[bytes], tag: int = 0x86, encrypted: bool = True) -> bytes:
    """Inverse of :func:`protect_segments`; all or nothing: a failure leaves ``ctx`` as it was."""
    saved = ctx._snapshot()
    try:
        return b"".join(ctx.unprotect(segment, encrypted=encrypted, tag=tag) for segment in segments)
    except BspError:
        ctx._restore(saved)
        raise
