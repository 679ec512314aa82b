"""Input mutators for the harnesses: byte-level changes to valid encodings and JSON-level changes to
valid ES9+ bodies. Each is a hypothesis strategy, so failures shrink to few, small changes."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from hypothesis import strategies as st

# Bytes that tend to matter in BER-TLV: zero, length forms, common tags, all-ones.
INTERESTING = (0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF, 0x30, 0x04, 0xA0, 0xBF, 0x5F, 0x1F)
BYTE_MUTATIONS = ("flip", "set", "truncate", "insert", "delete", "duplicate")


@st.composite
def mutated(draw, data: bytes, max_changes: int = 4) -> bytes:
    """``data`` with 1..max_changes byte-level changes."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_changes))):
        kind = draw(st.sampled_from(BYTE_MUTATIONS)) if out else "insert"
        if kind == "insert":
            at = draw(st.integers(0, len(out)))
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
            continue
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            out[at] = draw(st.sampled_from(INTERESTING) | st.integers(0, 255))
        elif kind == "truncate":
            del out[at:]
        elif kind == "delete":
            del out[at:at + draw(st.integers(1, 32))]
        else:
            length = draw(st.integers(1, 32))
            out[at:at] = out[at:at + length]
    return bytes(out)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10,
)


_HEX = re.compile(r"(?:[0-9A-F]{2})+")


def _der_field(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@st.composite
def mutated_body(draw, body: dict) -> bytes:
    """A valid ES9+ request body changed at the JSON level (drop, replace, add a member, change the
    bytes inside a base64 or hex member) or as raw text."""
    kind = draw(st.sampled_from(("drop", "replace", "add", "bytes", "text")))
    changed = dict(body)
    names = sorted(changed)
    if kind == "text" or not names:
        return draw(mutated(json.dumps(body).encode()))
    name = draw(st.sampled_from(names))
    if kind == "drop":
        del changed[name]
    elif kind == "replace":
        changed[name] = draw(JSON_VALUES)
    elif kind == "add":
        changed[draw(st.text(min_size=1, max_size=12))] = draw(JSON_VALUES)
    else:
        changed[name] = _mutated_field(draw, changed[name])
    return json.dumps(changed).encode()


def _mutated_field(draw, value: Any) -> Any:
    if isinstance(value, str) and _HEX.fullmatch(value):  # transactionId
        return draw(mutated(bytes.fromhex(value))).hex().upper()
    raw = _der_field(value)
    if raw is not None:
        return base64.b64encode(draw(mutated(raw))).decode("ascii")
    return draw(JSON_VALUES)
