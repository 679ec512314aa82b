"""Identifiers: EID (GSMA SGP.29 check digits) and ICCID (ITU-T E.118 Luhn, EF.ICCID BCD coding)."""

from __future__ import annotations

from rsp.errors import DecodeError

EID_LENGTH = 32
# The ISD-R AID every eUICC answers to (SGP.22 2.2.3, from SGP.02).
ISD_R_AID = bytes.fromhex("A0000005591010FFFFFFFF8900000100")


def eid_check_digits(eid30: str) -> str:
    """The two check digits of SGP.29: 98 - (eid30 || '00' mod 97), as two decimal digits."""
    if len(eid30) != EID_LENGTH - 2 or not eid30.isdigit():
        raise DecodeError(f"EID body must be 30 decimal digits, got {eid30!r}")
    return f"{98 - int(eid30 + '00') % 97:02d}"


def make_eid(eid30: str) -> str:
    return eid30 + eid_check_digits(eid30)


def validate_eid(eid: str) -> str:
    """Return the EID if it is 32 digits with correct SGP.29 check digits, else raise DecodeError."""
    if len(eid) != EID_LENGTH or not eid.isdigit():
        raise DecodeError(f"EID must be 32 decimal digits, got {eid!r}")
    if int(eid) % 97 != 1:
        raise DecodeError(f"EID {eid} has wrong check digits (expected {eid_check_digits(eid[:30])})")
    return eid


def eid_to_bytes(eid: str) -> bytes:
    """EID as carried in GetEuiccDataResponse and the BSP KDF: 16 bytes, plain (unswapped) BCD."""
    return bytes.fromhex(validate_eid(eid))


def eid_from_bytes(data: bytes) -> str:
    if len(data) != 16:
        raise DecodeError(f"EID must be 16 bytes, got {len(data)}")
    return validate_eid(data.hex())


def luhn_check_digit(digits: str) -> str:
    """The Luhn (mod 10) check digit to append to ``digits``."""
    if not digits.isdigit():
        raise DecodeError(f"Luhn input must be decimal digits, got {digits!r}")
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def validate_iccid(iccid: str) -> str:
    """An ICCID of 19 or 20 digits starting with '89' whose last digit is its Luhn check digit."""
    if not iccid.isdigit():
        raise DecodeError(f"ICCID must be decimal digits, got {iccid!r}")
    if not 19 <= len(iccid) <= 20:
        raise DecodeError(f"ICCID must have 19 or 20 digits, got {len(iccid)}")
    if not iccid.startswith("89"):
        raise DecodeError(f"ICCID must start with the telecom industry identifier 89, got {iccid}")
    if luhn_check_digit(iccid[:-1]) != iccid[-1]:
        raise DecodeError(f"ICCID {iccid} has a wrong Luhn check digit (expected {luhn_check_digit(iccid[:-1])})")
    return iccid


def swap_nibbles(data: bytes) -> bytes:
    return bytes(((b & 0x0F) << 4) | (b >> 4) for b in data)


def iccid_to_bcd(iccid: str) -> bytes:
    """EF.ICCID / SGP.22 Iccid coding: 10 bytes, nibble-swapped BCD, padded with 'F'."""
    validate_iccid(iccid)
    return swap_nibbles(bytes.fromhex(iccid.ljust(20, "f")))


def iccid_from_bcd(data: bytes) -> str:
    if len(data) != 10:
        raise DecodeError(f"ICCID must be 10 bytes, got {len(data)}")
    text = swap_nibbles(data).hex().rstrip("f")
    if not text.isdigit():
        raise DecodeError(f"ICCID bytes {data.hex()} are not BCD digits")
    return text
