"""Minimal BER-TLV helpers (ISO 7816-4 / X.690) for the places SGP.22 works below ASN.1 types:
signature inputs that concatenate data objects, BPP segmentation, APDU data fields.

Tags are handled as integers of their full encoding (0x5F37, 0xBF36, 0x87).
"""

from __future__ import annotations

from dataclasses import dataclass

from rsp.errors import DecodeError


def encode_tag(tag: int) -> bytes:
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag: int, value: bytes) -> bytes:
    return encode_tag(tag) + encode_length(len(value)) + value


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes
    raw: bytes  # tag, length and value exactly as received

    @property
    def header(self) -> bytes:
        return self.raw[: len(self.raw) - len(self.value)]


def read_tag(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise DecodeError("TLV truncated: missing tag")
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # multi-byte tag: continuation bit 8 on subsequent bytes
        while True:
            if pos >= len(data):
                raise DecodeError("TLV truncated inside a multi-byte tag")
            byte = data[pos]
            tag = (tag << 8) | byte
            pos += 1
            if not byte & 0x80:
                break
            if tag > 0xFFFFFFFF:
                raise DecodeError("TLV tag longer than 4 bytes")
    return tag, pos


def read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise DecodeError("TLV truncated: missing length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 3:
        raise DecodeError(f"unsupported TLV length form 0x{first:02X}")
    if pos + count > len(data):
        raise DecodeError("TLV truncated inside the length field")
    return int.from_bytes(data[pos : pos + count], "big"), pos + count


def read_header(data: bytes, pos: int = 0) -> tuple[int, int, int]:
    """(tag, length, value offset) of the TLV at ``pos``; the value may extend past ``data``."""
    tag, pos = read_tag(data, pos)
    length, pos = read_length(data, pos)
    return tag, length, pos


def read_tlv(data: bytes, pos: int = 0) -> tuple[Tlv, int]:
    start = pos
    tag, length, pos = read_header(data, pos)
    end = pos + length
    if end > len(data):
        raise DecodeError(f"TLV {tag:X} truncated: {length} value bytes announced, {len(data) - pos} present")
    return Tlv(tag, data[pos:end], data[start:end]), end


def parse_one(data: bytes) -> Tlv:
    """Exactly one TLV, nothing after it."""
    tlv, end = read_tlv(data)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} unexpected bytes after TLV {tlv.tag:X}")
    return tlv


def split(data: bytes) -> list[Tlv]:
    """A concatenation of TLVs, in order."""
    out, pos = [], 0
    while pos < len(data):
        tlv, pos = read_tlv(data, pos)
        out.append(tlv)
    return out
