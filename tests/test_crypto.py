"""rsp.crypto: ECDSA in both encodings on both curves, ECKA, one-time keys."""

from __future__ import annotations

import json
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import given
from hypothesis import strategies as st

from rsp import crypto, testdata
from rsp.errors import DecodeError

CURVE_NAMES = sorted(crypto.CURVES)
SGP26 = testdata.testdata_dir() / "sgp26"
ORDER = {  # group orders, to build out-of-range signatures
    "nist": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "brp": 0xA9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7,
}


def primitives() -> dict:
    return json.loads((testdata.testdata_dir() / "vectors" / "primitives.json").read_text())


def seeded_rng(seed: int):
    gen = random.Random(seed)
    return gen.randbytes


# --- ECKA ------------------------------------------------------------------------------------------


def test_ecka_known_answer_from_smdp_trace():
    v = primitives()["ecka_p256"]
    smdp_sk = ec.derive_private_key(int(v["smdp_one_time_private_key"], 16), ec.SECP256R1())
    assert crypto.public_key_bytes(smdp_sk).hex() == v["smdp_one_time_public_key"]
    z = crypto.ecka(smdp_sk, bytes.fromhex(v["euicc_one_time_public_key"]))
    assert z.hex() == v["shared_secret"]


@pytest.mark.parametrize("curve", CURVE_NAMES)
def test_ecka_both_sides_agree(curve):
    dp = crypto.generate_private_key(curve, seeded_rng(1))
    euicc = crypto.generate_private_key(curve, seeded_rng(2))
    z_dp = crypto.ecka(dp, crypto.public_key_bytes(euicc))
    z_euicc = crypto.ecka(euicc, crypto.public_key_bytes(dp))
    assert z_dp == z_euicc and len(z_dp) == 32


def test_ecka_rejects_point_of_the_other_curve():
    nist = crypto.generate_private_key("nist", seeded_rng(3))
    brp = crypto.generate_private_key("brp", seeded_rng(4))
    with pytest.raises(DecodeError, match="not a point on"):
        crypto.ecka(nist, crypto.public_key_bytes(brp))


@pytest.mark.parametrize(
    "point",
    [b"", b"\x04" + bytes(64), b"\x02" + bytes(32), b"\x05" + bytes(64), b"\x04" + bytes(63)],
    ids=["empty", "zeros", "compressed", "bad-prefix", "short"],
)
def test_ecka_rejects_malformed_points(point):
    key = crypto.generate_private_key("nist", seeded_rng(5))
    with pytest.raises(DecodeError):
        crypto.ecka(key, point)


def test_load_public_point_round_trip_and_flipped_coordinate():
    key = crypto.generate_private_key("brp", seeded_rng(6))
    point = crypto.public_key_bytes(key)
    assert crypto.public_key_bytes(crypto.load_public_point("brp", point)) == point
    tampered = point[:-1] + bytes([point[-1] ^ 1])
    with pytest.raises(DecodeError):
        crypto.load_public_point("brp", tampered)


# --- keys and curves -------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVE_NAMES)
def test_seeded_key_generation_replays(curve):
    a = crypto.generate_private_key(curve, seeded_rng(42))
    b = crypto.generate_private_key(curve, seeded_rng(42))
    c = crypto.generate_private_key(curve, seeded_rng(43))
    assert a.private_numbers().private_value == b.private_numbers().private_value
    assert a.private_numbers().private_value != c.private_numbers().private_value
    assert crypto.curve_name(a) == curve


@pytest.mark.parametrize("curve", CURVE_NAMES)
def test_seeded_key_generation_rejects_out_of_range_candidates(curve):
    candidates = iter([bytes(32), b"\xff" * 32, ORDER[curve].to_bytes(32, "big"), (7).to_bytes(32, "big")])
    key = crypto.generate_private_key(curve, lambda n: next(candidates))
    assert key.private_numbers().private_value == 7


def test_unsupported_curves_are_refused():
    with pytest.raises(crypto.UnsupportedCurveError):
        crypto.generate_private_key("p384")
    with pytest.raises(crypto.UnsupportedCurveError):
        crypto.curve_name(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(crypto.UnsupportedCurveError):
        crypto.load_public_point("ed25519", b"\x04" + bytes(64))


# --- ECDSA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", CURVE_NAMES)
def test_rs_signature_verifies_after_conversion_to_der(curve):
    key = crypto.generate_private_key(curve)
    rs = crypto.sign(key, b"euiccSigned1")
    assert len(rs) == 64
    assert crypto.verify(key.public_key(), b"euiccSigned1", rs)
    # the DER form of the same signature verifies with the library's own DER verifier
    key.public_key().verify(crypto.rs_to_der(rs), b"euiccSigned1", ec.ECDSA(hashes.SHA256()))
    assert crypto.verify_der(key.public_key(), b"euiccSigned1", crypto.rs_to_der(rs))


@pytest.mark.parametrize("curve", CURVE_NAMES)
def test_der_signature_verifies_after_conversion_to_rs(curve):
    key = crypto.generate_private_key(curve)
    der = crypto.sign_der(key, b"serverSigned1")
    assert crypto.verify(key.public_key(), b"serverSigned1", crypto.der_to_rs(der))
    assert crypto.rs_to_der(crypto.der_to_rs(der)) == der


@pytest.mark.parametrize("curve", ["NIST", "BRP"])
def test_sgp26_certificate_signatures_verify_in_rs_form(curve):
    """Published SGP.26 certificates: the EUM's DER signature on the eUICC cert, via r || s."""
    eum = x509.load_der_x509_certificate((SGP26 / "EUM" / f"CERT_EUM_ECDSA_{curve}.der").read_bytes())
    euicc = x509.load_der_x509_certificate((SGP26 / "eUICC" / f"CERT_EUICC_ECDSA_{curve}.der").read_bytes())
    rs = crypto.der_to_rs(euicc.signature)
    assert crypto.verify(eum.public_key(), euicc.tbs_certificate_bytes, rs)
    assert not crypto.verify(eum.public_key(), euicc.tbs_certificate_bytes + b"\x00", rs)


@pytest.mark.parametrize("curve", ["NIST", "BRP"])
def test_sgp26_private_key_signs_for_its_certificate(curve):
    sk = load_pem_private_key((SGP26 / "eUICC" / f"SK_EUICC_ECDSA_{curve}.pem").read_bytes(), None)
    cert = x509.load_der_x509_certificate((SGP26 / "eUICC" / f"CERT_EUICC_ECDSA_{curve}.der").read_bytes())
    assert crypto.curve_name(sk) == {"NIST": "nist", "BRP": "brp"}[curve]
    assert crypto.verify(cert.public_key(), b"data", crypto.sign(sk, b"data"))


@pytest.mark.parametrize("curve", CURVE_NAMES)
def test_verify_is_false_for_every_bad_signature(curve):
    key = crypto.generate_private_key(curve, seeded_rng(7))
    other = crypto.generate_private_key(curve, seeded_rng(8))
    rs = crypto.sign(key, b"msg")
    n = ORDER[curve]
    bad = {
        "wrong data": (key, b"msg!", rs),
        "other key": (other, b"msg", rs),
        "flipped bit": (key, b"msg", rs[:10] + bytes([rs[10] ^ 0x40]) + rs[11:]),
        "short": (key, b"msg", rs[:63]),
        "long": (key, b"msg", rs + b"\x00"),
        "empty": (key, b"msg", b""),
        "zero r": (key, b"msg", bytes(32) + rs[32:]),
        "r = n": (key, b"msg", n.to_bytes(32, "big") + rs[32:]),
        "all ones": (key, b"msg", b"\xff" * 64),
        "der given": (key, b"msg", crypto.rs_to_der(rs)),
    }
    for name, (signer, data, sig) in bad.items():
        assert crypto.verify(signer.public_key(), data, sig) is False, name


def test_verify_der_is_false_for_garbage():
    key = crypto.generate_private_key("nist", seeded_rng(9))
    assert crypto.verify_der(key.public_key(), b"m", b"\x30\x00") is False


@pytest.mark.parametrize(
    "der",
    [
        "",
        "300602010102010200",  # trailing byte
        "3006020101020180",  # s = -128 in DER two's complement
        "300702020001020101",  # non-minimal INTEGER
        "3007020101020102",  # SEQUENCE length says 7, 6 follow
        "040102",  # not a SEQUENCE
        "3006020100020101",  # r = 0
        "3026020101022101" + "00" * 32,  # s = 2^256 does not fit 32 bytes
    ],
)
def test_der_to_rs_rejects_malformed(der):
    with pytest.raises(DecodeError):
        crypto.der_to_rs(bytes.fromhex(der))


@pytest.mark.parametrize("rs", [b"", bytes(63), bytes(65), bytes(64), b"\x01" * 32 + bytes(32)])
def test_rs_to_der_rejects_malformed(rs):
    with pytest.raises(DecodeError):
        crypto.rs_to_der(rs)


@given(r=st.integers(1, 2**256 - 1), s=st.integers(1, 2**256 - 1))
def test_der_rs_conversion_round_trips(r, s):
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    der = crypto.rs_to_der(rs)
    assert crypto.der_to_rs(der) == rs
    assert crypto.rs_to_der(crypto.der_to_rs(der)) == der


@given(data=st.binary(max_size=200), curve=st.sampled_from(CURVE_NAMES), seed=st.integers(0, 2**32))
def test_sign_verify_round_trip_any_data(data, curve, seed):
    key = crypto.generate_private_key(curve, seeded_rng(seed))
    rs = crypto.sign(key, data)
    assert crypto.verify(key.public_key(), data, rs)
    assert crypto.verify(key.public_key(), data, crypto.der_to_rs(crypto.rs_to_der(rs)))
