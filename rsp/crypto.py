"""Elliptic-curve primitives of SGP.22: ECDSA in both encodings, ECKA, one-time key pairs.

SGP.22 uses two ECDSA (SHA-256) signature encodings: certificates (section 4.5) carry the DER
``ECDSA-Sig-Value`` of X.509/RFC 5480, while RSP messages (serverSignature1, euiccSignature1,
smdpSignature2, ...) carry the plain 64-byte ``r || s`` form of BSI TR-03111. Key agreement is the
ECKA of TR-03111 between the one-time key pairs otSK/otPK.DP.ECKA and otSK/otPK.EUICC.ECKA
(section 3.1.3); its shared secret is the x-coordinate of the product point.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rsp.errors import DecodeError

CURVES: dict[str, ec.EllipticCurve] = {"nist": ec.SECP256R1(), "brp": ec.BrainpoolP256R1()}

# Group orders (FIPS 186-4 D.1.2.3 for P-256, RFC 5639 section 3.4 for brainpoolP256r1).
_ORDERS = {
    "nist": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "brp": 0xA9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7,
}
FIELD_BYTES = 32  # both curves are 256-bit
SIGNATURE_LENGTH = 2 * FIELD_BYTES  # TR-03111 plain r || s
POINT_LENGTH = 1 + 2 * FIELD_BYTES  # uncompressed 04 || X || Y

_SHORT_NAMES = {curve.name: short for short, curve in CURVES.items()}

PublicKeyLike = ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey


class UnsupportedCurveError(DecodeError):
    """A key or curve name outside the two curves SGP.22 allows (ES10 maps it to unsupportedCurve)."""


def _curve(curve: str) -> ec.EllipticCurve:
    try:
        return CURVES[curve]
    except KeyError:
        raise UnsupportedCurveError(f"unknown curve {curve!r}; expected one of {sorted(CURVES)}") from None


def curve_name(key: PublicKeyLike) -> str:
    """``"nist"`` or ``"brp"`` for a public or private key on one of the SGP.22 curves."""
    name = _SHORT_NAMES.get(key.curve.name)
    if name is None:
        raise UnsupportedCurveError(f"curve {key.curve.name} is not allowed by SGP.22 (P-256 or brainpoolP256r1)")
    return name


def generate_private_key(
    curve: str = "nist", rng: Callable[[int], bytes] | None = None
) -> ec.EllipticCurvePrivateKey:
    """A fresh key pair; with ``rng`` the scalar comes from rng bytes, so a seeded run replays exactly.

    The scalar is drawn by rejection sampling (FIPS 186-4 B.4.2 "testing candidates"): 32 bytes are
    taken until they encode a value in [1, n-1], which keeps the distribution uniform.
    """
    chosen = _curve(curve)
    if rng is None:
        return ec.generate_private_key(chosen)
    order = _ORDERS[curve]
    while True:
        candidate = int.from_bytes(rng(FIELD_BYTES), "big")
        if 1 <= candidate < order:
            return ec.derive_private_key(candidate, chosen)


def public_key_bytes(key: PublicKeyLike) -> bytes:
    """Uncompressed point 04 || X || Y, as carried in smdpOtpk / euiccOtpk and certificates."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def load_public_point(curve: str, data: bytes) -> ec.EllipticCurvePublicKey:
    """Parse an uncompressed point on ``curve``; DecodeError unless it is a valid point of that curve."""
    chosen = _curve(curve)
    if len(data) != POINT_LENGTH or data[0] != 0x04:
        raise DecodeError(
            f"public key must be an uncompressed point of {POINT_LENGTH} bytes starting with 04, "
            f"got {len(data)} bytes starting with {data[:1].hex() or 'nothing'}"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(chosen, data)
    except ValueError:
        raise DecodeError(f"public key is not a point on {chosen.name}") from None


def sign_der(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA with SHA-256, DER ``ECDSA-Sig-Value`` (the X.509 form)."""
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA with SHA-256, 64-byte ``r || s`` (TR-03111, the form inside RSP messages)."""
    return der_to_rs(sign_der(private_key, data))


def verify(public_key: ec.EllipticCurvePublicKey, data: bytes, signature_rs: bytes) -> bool:
    """True only if ``signature_rs`` is a valid 64-byte r || s ECDSA-SHA256 signature over ``data``."""
    try:
        der = rs_to_der(signature_rs)
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except (DecodeError, InvalidSignature, ValueError):
        return False
    return True


def verify_der(public_key: ec.EllipticCurvePublicKey, data: bytes, signature_der: bytes) -> bool:
    """Like :func:`verify` for a DER signature (certificates); False for malformed DER too."""
    try:
        return verify(public_key, data, der_to_rs(signature_der))
    except DecodeError:
        return False


def der_to_rs(der: bytes) -> bytes:
    """DER ``SEQUENCE { r INTEGER, s INTEGER }`` to 64-byte r || s; DecodeError if malformed."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError:
        raise DecodeError("ECDSA signature is not a DER SEQUENCE of two INTEGERs") from None
    limit = 1 << (8 * FIELD_BYTES)
    if not (0 < r < limit and 0 < s < limit):
        raise DecodeError("ECDSA signature r and s must be positive and fit in 32 bytes")
    return r.to_bytes(FIELD_BYTES, "big") + s.to_bytes(FIELD_BYTES, "big")


def rs_to_der(rs: bytes) -> bytes:
    """64-byte r || s to DER; DecodeError for a wrong length or a zero r or s."""
    if len(rs) != SIGNATURE_LENGTH:
        raise DecodeError(f"r || s signature must be {SIGNATURE_LENGTH} bytes, got {len(rs)}")
    r = int.from_bytes(rs[:FIELD_BYTES], "big")
    s = int.from_bytes(rs[FIELD_BYTES:], "big")
    if r == 0 or s == 0:
        raise DecodeError("ECDSA signature r and s must not be zero")
    return encode_dss_signature(r, s)


def ecka(private_key: ec.EllipticCurvePrivateKey, peer_public_point: bytes) -> bytes:
    """ECKA shared secret Z (TR-03111): x-coordinate of sk * peer point, 32 bytes.

    The peer point is checked to lie on the private key's curve; DecodeError otherwise.
    """
    peer = load_public_point(curve_name(private_key), peer_public_point)
    return private_key.exchange(ec.ECDH(), peer)
