"""Codings of the elementary files personalization touches (3GPP TS 31.102, ETSI TS 102 221)."""

from __future__ import annotations

from rsp.errors import DecodeError

EF_IMSI_SIZE = 9
IMSI_MIN_DIGITS, IMSI_MAX_DIGITS = 6, 15


def encode_imsi(imsi: str) -> bytes:
    """EF.IMSI (TS 31.102 section 4.2.2): length byte, then BCD with the parity/type nibble first.

    The first nibble is '1' (IMSI type) with bit 4 set when the number of digits is odd; the
    digits follow low nibble first; 'F' fills the last nibble and the unused bytes.
    """
    if not imsi.isdigit() or not IMSI_MIN_DIGITS <= len(imsi) <= IMSI_MAX_DIGITS:
        raise DecodeError(f"IMSI must be {IMSI_MIN_DIGITS} to {IMSI_MAX_DIGITS} decimal digits, got {imsi!r}")
    parity = 0x9 if len(imsi) % 2 else 0x1
    nibbles = [parity] + [int(d) for d in imsi]
    if len(nibbles) % 2:
        nibbles.append(0xF)
    body = bytes(nibbles[i] | nibbles[i + 1] << 4 for i in range(0, len(nibbles), 2))
    return (bytes([len(body)]) + body).ljust(EF_IMSI_SIZE, b"\xff")


def decode_imsi(content: bytes) -> str | None:
    """The IMSI in EF.IMSI content; None when the file is unset (length byte 'FF')."""
    if not content or content[0] == 0xFF:
        return None
    length = content[0]
    if not 1 <= length <= 8 or len(content) < 1 + length:
        raise DecodeError(f"EF.IMSI length byte {length} does not fit {len(content)} bytes of content")
    nibbles = []
    for byte in content[1 : 1 + length]:
        nibbles += [byte & 0x0F, byte >> 4]
    first, digits = nibbles[0], nibbles[1:]
    if digits and digits[-1] == 0xF:
        digits = digits[:-1]
    if first & 0x7 != 0x1 or any(d > 9 for d in digits):
        raise DecodeError(f"EF.IMSI {content.hex().upper()} is not an IMSI coding")
    if bool(first & 0x8) != bool(len(digits) % 2):
        raise DecodeError(f"EF.IMSI {content.hex().upper()}: parity bit does not match {len(digits)} digits")
    return "".join(str(d) for d in digits)


def ad_mnc_length(content: bytes) -> int | None:
    """Length of the MNC in the IMSI, from EF.AD byte 4 (TS 31.102 section 4.2.18)."""
    if len(content) < 4 or content[3] & 0x0F == 0x0F:
        return None
    return content[3] & 0x0F


def ad_with_mnc_length(content: bytes, mnc_length: int) -> bytes:
    if len(content) < 4:
        raise DecodeError(f"EF.AD has {len(content)} bytes, too short to hold the MNC length (byte 4)")
    return content[:3] + bytes([(content[3] & 0xF0) | mnc_length]) + content[4:]
