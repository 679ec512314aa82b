"""BPP binding (SM-DP+) against segmentation (LPA) and unprotection (eUICC), one implementation."""

from __future__ import annotations

import pytest

from rsp import bpp, crypto
from rsp import messages as m
from rsp.bsp import BspContext, BspMacError, SessionKeys, unprotect_segments
from rsp.errors import DecodeError
from rsp.ids import eid_to_bytes
from rsp.testdata import ts48_profile
from rsp.tlv import read_header, read_tlv

EID = eid_to_bytes("89049032123451234512345678901235")
TID = bytes(range(16))
METADATA = m.StoreMetadataRequest({"iccid": bytes.fromhex("98001032547698103214"), "serviceProviderName": "GSMA",
                                   "profileName": "TS.48 v7", "profileClass": "test"}).dump()


def bind(curve="nist", ppk=None, upp=None):
    dp_pb = crypto.generate_private_key(curve)
    euicc_otsk = crypto.generate_private_key(curve)
    smdp_otsk = crypto.generate_private_key(curve)
    euicc_otpk = crypto.public_key_bytes(euicc_otsk.public_key())
    data = bpp.build_bound_profile_package(
        transaction_id=TID, eid=EID, euicc_otpk=euicc_otpk, smdp_otsk=smdp_otsk, dp_pb_key=dp_pb,
        metadata=METADATA, upp=upp if upp is not None else ts48_profile(), dp_oid="2.999.10", ppk=ppk)
    return data, dp_pb, euicc_otsk, euicc_otpk


def card_side_install(data, dp_pb, euicc_otsk, euicc_otpk):
    """What the eUICC does, using only the shared code: returns (metadata, profile)."""
    value = m.decode(m.BoundProfilePackage, data)
    isc = value["initialiseSecureChannelRequest"]
    assert bpp.verify_smdp_sign(isc, euicc_otpk, dp_pb.public_key())
    ctx = bpp.open_secure_channel(isc, euicc_otsk, EID)
    configure = ctx.unprotect(value["firstSequenceOf87"][0].dump(), encrypted=True, tag=0x87)
    assert m.decode(m.ConfigureISDPRequest, configure)["dpProprietaryData"]["dpOid"].native == "2.999.10"
    metadata = unprotect_segments(ctx, [e.dump() for e in value["sequenceOf88"]], tag=0x88, encrypted=False)
    if value["secondSequenceOf87"].native is not None:
        keys = m.decode(m.ReplaceSessionKeysRequest,
                        ctx.unprotect(value["secondSequenceOf87"][0].dump(), encrypted=True, tag=0x87))
        ctx = BspContext(SessionKeys(s_enc=keys["ppkEnc"].native, s_mac=keys["ppkCmac"].native,
                                     initial_mcv=keys["initialMacChainingValue"].native))
    profile = unprotect_segments(ctx, [e.dump() for e in value["sequenceOf86"]])
    return metadata, profile


@pytest.mark.parametrize("curve", ["nist", "brp"])
def test_bound_package_round_trip(curve):
    data, dp_pb, euicc_otsk, euicc_otpk = bind(curve)
    metadata, profile = card_side_install(data, dp_pb, euicc_otsk, euicc_otpk)
    assert metadata == METADATA
    assert profile == ts48_profile()


def test_pre_protected_package_with_replace_session_keys():
    ppk = SessionKeys(s_enc=bytes(range(16)), s_mac=bytes(range(1, 17)), initial_mcv=bytes(range(2, 18)))
    data, *keys = bind(ppk=ppk)
    assert m.decode(m.BoundProfilePackage, data)["secondSequenceOf87"].native is not None
    assert card_side_install(data, *keys)[1] == ts48_profile()


def test_smdp_sign_binds_the_euicc_one_time_key():
    data, dp_pb, _, _ = bind()
    isc = m.decode(m.BoundProfilePackage, data)["initialiseSecureChannelRequest"]
    other_otpk = crypto.public_key_bytes(crypto.generate_private_key().public_key())
    assert not bpp.verify_smdp_sign(isc, other_otpk, dp_pb.public_key())


def test_segments_follow_section_2_5_5():
    data, *_ = bind()
    parts = bpp.segments(data)
    assert b"".join(parts) == data  # nothing lost or added
    tag, _, isc_at = read_header(parts[0])
    assert tag == 0xBF36 and read_header(parts[0], isc_at)[0] == 0xBF23  # BF36 header + whole ISC
    assert read_tlv(parts[0], isc_at)[1] == len(parts[0])
    assert parts[1][0] == 0xA0 and parts[1][2] == 0x87  # A0 header + first 87
    a1 = parts.index(next(p for p in parts if p[0] == 0xA1))
    assert len(parts[a1]) in (2, 3, 4)  # A1 header alone, then each 88
    assert parts[a1 + 1][0] == 0x88
    a3 = parts.index(next(p for p in parts if p[0] == 0xA3))
    assert all(p[0] == 0x86 for p in parts[a3 + 1:])
    assert all(len(p) <= 1020 for p in parts[a3 + 1:])
    assert len(parts) - a3 - 1 == -(-len(ts48_profile()) // 1007)  # minimal number of 86 segments


def test_flipped_bit_in_any_profile_segment_is_detected():
    data, dp_pb, euicc_otsk, euicc_otpk = bind(upp=bytes(3000))
    parts = bpp.segments(data)
    first_86 = next(i for i, p in enumerate(parts) if p[0] == 0x86)
    for index in range(first_86, len(parts)):
        corrupted = list(parts)
        corrupted[index] = corrupted[index][:-9] + bytes([corrupted[index][-9] ^ 1]) + corrupted[index][-8:]
        with pytest.raises(BspMacError):
            card_side_install(b"".join(corrupted), dp_pb, euicc_otsk, euicc_otpk)


@pytest.mark.parametrize("data", [b"", b"\xbf\x36\x00", bytes.fromhex("bf3603a00100"), bytes.fromhex("bf37020000")])
def test_malformed_packages_are_refused_by_segmentation(data):
    with pytest.raises(DecodeError):
        bpp.segments(data)
