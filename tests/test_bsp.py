"""rsp.bsp: Annex G key derivation, SCP03t protection, BPP segmentation, ReplaceSessionKeys."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from rsp import bsp, status, testdata
from rsp.errors import DecodeError, KinsimError


def vectors() -> dict:
    return json.loads((testdata.testdata_dir() / "vectors" / "bsp-scp03t.json").read_text())


def primitives() -> dict:
    return json.loads((testdata.testdata_dir() / "vectors" / "primitives.json").read_text())


def keys_of(entry: dict) -> bsp.SessionKeys:
    return bsp.SessionKeys(
        s_enc=bytes.fromhex(entry["s_enc"]),
        s_mac=bytes.fromhex(entry["s_mac"]),
        initial_mcv=bytes.fromhex(entry["initial_mac_chaining_value"]),
    )


def pair(keys: bsp.SessionKeys) -> tuple[bsp.BspContext, bsp.BspContext]:
    """The SM-DP+ side and the eUICC side of one session."""
    return bsp.BspContext(keys), bsp.BspContext(keys)


def state(ctx: bsp.BspContext) -> tuple[bytes, int]:
    return ctx.mac_chaining_value, ctx.counter


KEYS = bsp.SessionKeys(s_enc=bytes(range(16)), s_mac=bytes(range(16, 32)), initial_mcv=bytes(range(32, 48)))


# --- key derivation --------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", vectors()["kdf"], ids=lambda e: e["note"])
def test_kdf_known_answers(entry):
    keys = bsp.derive_session_keys(
        bytes.fromhex(entry["shared_secret"]),
        key_type=int(entry["key_type"], 16),
        key_length=entry["key_length"],
        host_id=bytes.fromhex(entry["host_id"]),
        eid=bytes.fromhex(entry["eid"]),
    )
    assert keys == keys_of(entry)


def test_ecka_shared_secret_feeds_the_second_kdf_set():
    ecka = primitives()["ecka_p256"]
    kdf = vectors()["kdf"][1]
    assert ecka["shared_secret"] == kdf["shared_secret"]
    keys = bsp.derive_session_keys(
        bytes.fromhex(ecka["shared_secret"]), host_id=bytes.fromhex(kdf["host_id"]), eid=bytes.fromhex(kdf["eid"])
    )
    assert keys == keys_of(vectors()["protection"][0])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"key_type": 0x80}, bsp.BspUnsupportedCrtError),
        ({"key_length": 24}, bsp.BspUnsupportedCrtError),
        ({"host_id": b""}, bsp.BspUnsupportedCrtError),
        ({"host_id": bytes(17)}, bsp.BspUnsupportedCrtError),
        ({"eid": bytes(15)}, DecodeError),
    ],
)
def test_kdf_refuses_unsupported_parameters(kwargs, error):
    args = {"host_id": b"\x80" * 8, "eid": bytes(16)} | kwargs
    with pytest.raises(error):
        bsp.derive_session_keys(bytes(32), **args)


def test_session_keys_check_sizes_and_hide_values():
    with pytest.raises(bsp.BspInputError):
        bsp.SessionKeys(s_enc=bytes(15), s_mac=bytes(16), initial_mcv=bytes(16))
    assert bytes(range(16)).hex() not in repr(KEYS)


def test_errors_map_to_profile_installation_result_reasons():
    assert status.BPP_ERROR_REASON[bsp.BspStructureError.error_reason] == "scp03tStructureError"
    assert status.BPP_ERROR_REASON[bsp.BspMacError.error_reason] == "scp03tSecurityError"
    assert status.BPP_ERROR_REASON[bsp.BspUnsupportedCrtError.error_reason] == "unsupportedCrtValues"
    assert status.BPP_ERROR_REASON[bsp.BspInputError.error_reason] == "incorrectInputValues"
    assert issubclass(bsp.BspError, KinsimError)


# --- protection known answers ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", vectors()["protection"], ids=["session keys", "after ReplaceSessionKeys"])
def test_protection_operations_in_order(entry):
    smdp, euicc = pair(keys_of(entry))
    for op in entry["operations"]:
        encrypt = op["operation"].startswith("encrypt")
        plaintext = bytes.fromhex(op["plaintext_value"])
        tlv = smdp.protect(int(op["tag"], 16), plaintext, encrypt=encrypt)
        assert tlv.hex() == op["expected_tlv"]
        assert euicc.unprotect(tlv, encrypted=encrypt, tag=int(op["tag"], 16)) == plaintext
    assert state(smdp) == state(euicc)
    assert smdp.counter == len(entry["operations"]) + 1


def test_replace_session_keys_command_yields_the_ppk_context():
    """The ReplaceSessionKeys command protected in set one carries the keys of set two."""
    command = bytes.fromhex(vectors()["protection"][0]["operations"][2]["plaintext_value"])
    # ReplaceSessionKeysRequest 'BF26': [0] initialMacChainingValue, [1] ppkEnc, [2] ppkCmac
    assert command[:3] == bytes.fromhex("bf2636")
    fields = {}
    pos = 3
    while pos < len(command):
        tag, length = command[pos], command[pos + 1]
        fields[tag] = command[pos + 2 : pos + 2 + length]
        pos += 2 + length
    ctx = bsp.replace_session_keys(ppk_enc=fields[0x81], ppk_mac=fields[0x82], initial_mcv=fields[0x80])
    second = vectors()["protection"][1]
    assert ctx.counter == 1
    op = second["operations"][0]
    assert ctx.protect(0x86, bytes.fromhex(op["plaintext_value"]), encrypt=True).hex() == op["expected_tlv"]


def test_profile_package_is_split_into_the_published_1020_byte_segments():
    entry = vectors()["protection"][1]
    package = b"".join(bytes.fromhex(op["plaintext_value"]) for op in entry["operations"])
    smdp, euicc = pair(keys_of(entry))
    segments = bsp.protect_segments(smdp, package)
    assert [s.hex() for s in segments] == [op["expected_tlv"] for op in entry["operations"]]
    assert all(len(s) == bsp.MAX_SEGMENT for s in segments)
    assert bsp.unprotect_segments(euicc, segments) == package


# --- segment sizes ---------------------------------------------------------------------------------


def test_segment_limits():
    assert bsp.MAX_SEGMENT == 1020
    assert bsp.max_value_length(encrypt=True) == 1007
    assert bsp.max_value_length(encrypt=False) == 1008
    ctx = bsp.BspContext(KEYS)
    assert len(ctx.protect(0x86, bytes(1007), encrypt=True)) == 1020
    assert len(ctx.protect(0x88, bytes(1008), encrypt=False)) == 1020
    before = state(ctx)
    with pytest.raises(ValueError):
        ctx.protect(0x86, bytes(1008), encrypt=True)
    with pytest.raises(ValueError):
        ctx.protect(0x88, bytes(1009), encrypt=False)
    with pytest.raises(ValueError):
        ctx.protect(0x30, b"x", encrypt=True)
    with pytest.raises(ValueError):
        bsp.protect_segments(ctx, b"abc", segment_size=0)
    assert state(ctx) == before


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=4000),
    segment_size=st.integers(1, 1007),
    encrypt=st.booleans(),
    tag=st.sampled_from([0x86, 0x87, 0x88]),
)
def test_segments_round_trip(data, segment_size, encrypt, tag):
    smdp, euicc = pair(KEYS)
    segments = bsp.protect_segments(smdp, data, tag=tag, encrypt=encrypt, segment_size=segment_size)
    assert len(segments) == max(1, -(-len(data) // segment_size))
    assert all(len(s) <= bsp.MAX_SEGMENT and s[0] == tag for s in segments)
    assert bsp.unprotect_segments(euicc, segments, tag=tag, encrypted=encrypt) == data
    assert state(smdp) == state(euicc)


# --- tampering -------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(data=st.binary(min_size=3, max_size=3000), which=st.integers(0, 2), bit=st.integers(0), encrypt=st.booleans())
def test_flipped_bit_in_any_segment_is_detected(data, which, bit, encrypt):
    smdp, euicc = pair(KEYS)
    segments = bsp.protect_segments(smdp, data, encrypt=encrypt, segment_size=len(data) // 3)
    assert len(segments) >= 3
    index = which
    target = bytearray(segments[index])
    position = bit % (8 * len(target))
    target[position // 8] ^= 1 << (position % 8)
    tampered = segments[:index] + [bytes(target)] + segments[index + 1 :]
    original = segments[index]
    header = 2 if original[1] < 0x80 else 2 + (original[1] & 0x7F)
    # a flip in the data or MAC is caught by the MAC; one in tag or length by the structure checks
    expected = bsp.BspMacError if position // 8 >= header else bsp.BspError
    before = state(euicc)
    with pytest.raises(expected):
        bsp.unprotect_segments(euicc, tampered, encrypted=encrypt)
    assert state(euicc) == before
    # the untouched segments still verify on the same context: nothing was consumed
    assert bsp.unprotect_segments(euicc, segments, encrypted=encrypt) == data


def test_failed_unprotect_leaves_context_unchanged_and_usable():
    smdp, euicc = pair(KEYS)
    first = smdp.protect(0x87, b"ConfigureISDP", encrypt=True)
    forged = first[:-1] + bytes([first[-1] ^ 0x01])
    before = state(euicc)
    with pytest.raises(bsp.BspMacError):
        euicc.unprotect(forged, encrypted=True)
    assert state(euicc) == before
    assert euicc.unprotect(first, encrypted=True) == b"ConfigureISDP"


def test_failure_in_a_later_segment_rolls_back_the_earlier_ones():
    smdp, euicc = pair(KEYS)
    segments = bsp.protect_segments(smdp, bytes(3000))
    forged = segments[:-1] + [segments[-1][:-1] + bytes([segments[-1][-1] ^ 0x80])]
    with pytest.raises(bsp.BspMacError):
        bsp.unprotect_segments(euicc, forged)
    assert state(euicc) == (KEYS.initial_mcv, 1)


def test_reordered_or_replayed_segments_fail_the_mac_chain():
    smdp, euicc = pair(KEYS)
    a, b = bsp.protect_segments(smdp, bytes(1500))
    with pytest.raises(bsp.BspMacError):
        bsp.unprotect_segments(euicc, [b, a])
    with pytest.raises(bsp.BspMacError):
        bsp.unprotect_segments(euicc, [a, a])


def test_wrong_mode_or_keys_fail_the_mac():
    smdp, _ = pair(KEYS)
    tlv = smdp.protect(0x86, b"data", encrypt=True)
    other = bsp.BspContext(bsp.SessionKeys(s_enc=KEYS.s_enc, s_mac=bytes(16), initial_mcv=KEYS.initial_mcv))
    with pytest.raises(bsp.BspMacError):
        other.unprotect(tlv, encrypted=True)


def _valid_tlv() -> bytes:
    return bsp.BspContext(KEYS).protect(0x86, b"profile elements", encrypt=True)


@pytest.mark.parametrize(
    "tlv",
    [
        b"",
        b"\x86",
        b"\x30\x18" + bytes(24),  # not 86/87/88
        _valid_tlv()[:-1],  # truncated: length says more than follows
        _valid_tlv() + b"\x00",  # trailing byte
        b"\x86\x81\x18" + _valid_tlv()[2:],  # length not in minimal form
        b"\x86\x80" + _valid_tlv()[2:],  # indefinite length
        b"\x86\x83\x00\x00\x18" + _valid_tlv()[2:],  # three-byte length form
        b"\x86\x82\x00",  # length field truncated
        b"\x86\x07" + bytes(7),  # shorter than the MAC
        b"\x86\x11" + bytes(17),  # 9 bytes of ciphertext: not whole AES blocks
        b"\x86\x08" + bytes(8),  # MAC but no ciphertext
        b"\x86\x82\x03\xfd" + bytes(1021),  # a 1025-byte segment
    ],
    ids=[
        "empty", "tag-only", "wrong-tag", "truncated", "trailing", "non-minimal-length", "indefinite-length",
        "long-length-form", "length-truncated", "shorter-than-mac", "partial-block", "no-ciphertext", "oversize",
    ],
)
def test_malformed_tlvs_are_structure_errors(tlv):
    ctx = bsp.BspContext(KEYS)
    with pytest.raises(bsp.BspStructureError):
        ctx.unprotect(tlv, encrypted=True)
    assert state(ctx) == (KEYS.initial_mcv, 1)


def test_unexpected_tag_is_a_structure_error():
    tlv = bsp.BspContext(KEYS).protect(0x87, b"x", encrypt=True)
    with pytest.raises(bsp.BspStructureError, match="expected tag 86"):
        bsp.BspContext(KEYS).unprotect(tlv, encrypted=True, tag=0x86)


def test_bad_padding_under_a_valid_mac_is_a_structure_error():
    """A sender that MACs correctly but omits the '80' padding marker."""
    icv_enc = Cipher(algorithms.AES(KEYS.s_enc), modes.ECB()).encryptor()
    icv = icv_enc.update((1).to_bytes(16, "big")) + icv_enc.finalize()
    enc = Cipher(algorithms.AES(KEYS.s_enc), modes.CBC(icv)).encryptor()
    unpadded_ciphertext = enc.update(bytes(16)) + enc.finalize()
    tlv = bsp.BspContext(KEYS).protect(0x86, unpadded_ciphertext, encrypt=False)  # same MAC as encrypted
    euicc = bsp.BspContext(KEYS)
    with pytest.raises(bsp.BspStructureError, match="padding"):
        euicc.unprotect(tlv, encrypted=True)
    assert state(euicc) == (KEYS.initial_mcv, 1)


def test_mac_only_segments_still_advance_the_block_counter():
    """StoreMetadata (88, MAC only) between two encrypted 87s: the vector depends on this."""
    ctx = bsp.BspContext(KEYS)
    ctx.protect(0x88, b"metadata", encrypt=False)
    assert ctx.counter == 2
