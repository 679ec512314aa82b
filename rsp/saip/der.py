"""A DER tree for SAIP profile elements: every TLV parsed, every TLV re-encodable.

PEDefinitions is extensible (``EXTENSIBILITY IMPLIED``): a profile may carry fields and elements
newer than the module we know. asn1crypto types refuse components they do not declare, so the
codec keeps the whole element as a tree of tagged nodes instead: known fields are read through
typed views, unknown ones stay nodes and re-encode to their original bytes. The input must be DER
(definite, minimal lengths; minimal tags), which is what makes ``encode(parse(x)) == x``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from rsp.errors import DecodeError
from rsp.tlv import encode_length, encode_tag

MAX_DEPTH = 24  # SAIP nests about 8 deep; the bound keeps hostile input from exhausting the stack


def context_tag(number: int, constructed: bool = False) -> int:
    """The tag integer of [number] in the context-specific class (IMPLICIT/AUTOMATIC tagging)."""
    first = 0x80 | (0x20 if constructed else 0)
    if number < 31:
        return first | number
    body = [number & 0x7F]
    number >>= 7
    while number:
        body.insert(0, 0x80 | (number & 0x7F))
        number >>= 7
    return int.from_bytes(bytes([first | 0x1F, *body]), "big")


def tag_number(tag: int) -> int:
    """The number inside a tag (class and constructed bit stripped)."""
    octets = encode_tag(tag)
    if octets[0] & 0x1F != 0x1F:
        return octets[0] & 0x1F
    number = 0
    for byte in octets[1:]:
        number = (number << 7) | (byte & 0x7F)
    return number


def tag_class(tag: int) -> int:
    """0 universal, 1 application, 2 context-specific, 3 private."""
    return encode_tag(tag)[0] >> 6


def is_constructed(tag: int) -> bool:
    return bool(encode_tag(tag)[0] & 0x20)


@dataclass(slots=True)
class Node:
    """One TLV: ``value`` for primitive tags, ``children`` for constructed ones."""

    tag: int
    value: bytes = b""
    children: list[Node] | None = field(default=None)

    @property
    def constructed(self) -> bool:
        return self.children is not None

    def content(self) -> bytes:
        if self.children is None:
            return self.value
        return b"".join(child.encode() for child in self.children)

    def encode(self) -> bytes:
        content = self.content()
        return encode_tag(self.tag) + encode_length(len(content)) + content

    def find(self, tag: int) -> Node | None:
        return next(self.find_all(tag), None)

    def find_all(self, tag: int) -> Iterator[Node]:
        return (child for child in self.children or () if child.tag == tag)

    def copy(self) -> Node:
        if self.children is None:
            return Node(self.tag, self.value)
        return Node(self.tag, children=[child.copy() for child in self.children])


def _read_der_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, length, value offset) of the TLV at ``pos``, refusing anything that is not DER.

    Written as one tight loop because a profile package holds thousands of TLVs and the card, the
    SM-DP+ and the operator all parse whole packages.
    """
    end = len(data)
    first = data[pos]
    if first == 0x00:
        raise DecodeError(f"zero tag byte at offset {pos} (padding or end-of-contents are not DER)")
    tag, pos = first, pos + 1
    if first & 0x1F == 0x1F:  # multi-byte tag
        if pos >= end:
            raise DecodeError("TLV truncated inside a multi-byte tag")
        if data[pos] == 0x80 or data[pos] < 31:
            raise DecodeError(f"tag {first:02X}{data[pos]:02X} is not in minimal (DER) form")
        while True:
            if pos >= end:
                raise DecodeError("TLV truncated inside a multi-byte tag")
            byte = data[pos]
            tag, pos = (tag << 8) | byte, pos + 1
            if not byte & 0x80:
                break
            if tag > 0xFFFFFF:
                raise DecodeError("TLV tag longer than 4 bytes")
    if pos >= end:
        raise DecodeError("TLV truncated: missing length")
    length, pos = data[pos], pos + 1
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 3:
            raise DecodeError(f"unsupported TLV length form 0x{length:02X}")
        if pos + count > end:
            raise DecodeError("TLV truncated inside the length field")
        if data[pos] == 0:
            raise DecodeError(f"TLV {tag:X} has a non-minimal (not DER) length encoding")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
        if length < 0x80:
            raise DecodeError(f"TLV {tag:X} has a non-minimal (not DER) length encoding")
    if pos + length > end:
        raise DecodeError(f"TLV {tag:X} truncated: {length} value bytes announced, {end - pos} present")
    return tag, length, pos


def parse_nodes(data: bytes, depth: int = 0) -> list[Node]:
    """Every TLV of ``data`` in order, recursing into constructed ones; strict DER."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"TLV nesting deeper than {MAX_DEPTH} levels")
    nodes, pos, end = [], 0, len(data)
    while pos < end:
        constructed = data[pos] & 0x20
        tag, length, start = _read_der_header(data, pos)
        pos = start + length
        value = data[start:pos]
        nodes.append(Node(tag, children=parse_nodes(value, depth + 1)) if constructed else Node(tag, value))
    return nodes


def parse_node(data: bytes) -> Node:
    """Exactly one TLV."""
    nodes = parse_nodes(data)
    if len(nodes) != 1:
        raise DecodeError(f"expected one TLV, found {len(nodes)}")
    return nodes[0]


# --- primitive value codecs (X.690 contents octets) -------------------------------------------


def decode_uint(value: bytes, what: str) -> int:
    if not value:
        raise DecodeError(f"{what}: empty INTEGER")
    if len(value) > 1 and (value[0] == 0 and value[1] < 0x80 or value[0] == 0xFF and value[1] >= 0x80):
        raise DecodeError(f"{what}: INTEGER {value.hex()} is not minimally encoded")
    number = int.from_bytes(value, "big", signed=True)
    if number < 0:
        raise DecodeError(f"{what}: negative INTEGER {number}")
    return number


def encode_uint(number: int) -> bytes:
    return number.to_bytes(number.bit_length() // 8 + 1, "big")


def decode_oid(value: bytes, what: str = "OBJECT IDENTIFIER") -> str:
    if not value or value[-1] & 0x80:
        raise DecodeError(f"{what}: malformed OBJECT IDENTIFIER {value.hex()}")
    arcs, current = [], 0
    for byte in value:
        if current == 0 and byte == 0x80:
            raise DecodeError(f"{what}: OBJECT IDENTIFIER arc with a leading 0x80")
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: not UTF-8 ({exc.reason})") from None
