"""Bound Profile Package: binding at the SM-DP+ (SGP.22 2.5.4, 5.5), the LPA's segmentation
(2.5.5) and the eUICC's secure channel set-up (5.5.1), on top of rsp.bsp.

One implementation for both ends: the SM-DP+ protects with :func:`build_bound_profile_package`, the
eUICC verifies with :func:`verify_smdp_sign` and unprotects with :func:`open_secure_channel`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from rsp import crypto
from rsp import messages as m
from rsp.bsp import BspContext, SessionKeys, derive_session_keys, protect_segments
from rsp.errors import DecodeError
from rsp.tlv import encode_tlv, parse_one, split

REMOTE_OP_INSTALL_BPP = 1  # RemoteOpId installBoundProfilePackage(1)
DEFAULT_HOST_ID = b"kinsimDP"

TAG_BPP = 0xBF36
TAG_ISC = 0xBF23
TAG_FIRST_87 = 0xA0
TAG_88 = 0xA1
TAG_SECOND_87 = 0xA2
TAG_86 = 0xA3


def smdp_sign_input(isc: m.InitialiseSecureChannelRequest, euicc_otpk: bytes) -> bytes:
    """What smdpSign covers (5.5.1): the remoteOpId, transactionId, controlRefTemplate and smdpOtpk
    data objects as encoded in the request, followed by the euiccOtpk data object '5F49'."""
    parts = b"".join(isc[name].dump() for name in ("remoteOpId", "transactionId", "controlRefTemplate", "smdpOtpk"))
    return parts + encode_tlv(0x5F49, euicc_otpk)


def build_initialise_secure_channel(*, transaction_id: bytes, smdp_otpk: bytes, euicc_otpk: bytes,
                                    dp_pb_key: ec.EllipticCurvePrivateKey,
                                    host_id: bytes = DEFAULT_HOST_ID) -> m.InitialiseSecureChannelRequest:
    isc = m.InitialiseSecureChannelRequest({
        "remoteOpId": REMOTE_OP_INSTALL_BPP,
        "transactionId": transaction_id,
        "controlRefTemplate": {"keyType": b"\x88", "keyLen": b"\x10", "hostId": host_id},
        "smdpOtpk": smdp_otpk,
        "smdpSign": b"",
    })
    isc["smdpSign"] = crypto.sign(dp_pb_key, smdp_sign_input(isc, euicc_otpk))
    return m.decode(m.InitialiseSecureChannelRequest, isc.dump())


def build_bound_profile_package(*, transaction_id: bytes, eid: bytes, euicc_otpk: bytes,
                                smdp_otsk: ec.EllipticCurvePrivateKey, dp_pb_key: ec.EllipticCurvePrivateKey,
                                metadata: bytes, upp: bytes, dp_oid: str | None = None,
                                ppk: SessionKeys | None = None, host_id: bytes = DEFAULT_HOST_ID) -> bytes:
    """Bind a profile package to one eUICC and session (SGP.22 2.5.4); returns the DER of 'BF36'.

    ``metadata`` is the StoreMetadataRequest DER; ``upp`` the unprotected profile package (SAIP);
    with ``ppk`` the profile is protected under those keys and a ReplaceSessionKeys is included
    (a pre-protected package, 2.5.3), else directly under the session keys.
    """
    isc = build_initialise_secure_channel(transaction_id=transaction_id,
                                          smdp_otpk=crypto.public_key_bytes(smdp_otsk.public_key()),
                                          euicc_otpk=euicc_otpk, dp_pb_key=dp_pb_key, host_id=host_id)
    keys = derive_session_keys(crypto.ecka(smdp_otsk, euicc_otpk), host_id=host_id, eid=eid)
    ctx = BspContext(keys)
    configure = m.ConfigureISDPRequest({"dpProprietaryData": {"dpOid": dp_oid}} if dp_oid else {})
    first_87 = [ctx.protect(0x87, configure.dump(), encrypt=True)]
    seq_88 = protect_segments(ctx, metadata, tag=0x88, encrypt=False)
    body = isc.dump() + encode_tlv(TAG_FIRST_87, b"".join(first_87)) + encode_tlv(TAG_88, b"".join(seq_88))
    if ppk is not None:
        replace = m.ReplaceSessionKeysRequest({"initialMacChainingValue": ppk.initial_mcv, "ppkEnc": ppk.s_enc,
                                               "ppkCmac": ppk.s_mac})
        body += encode_tlv(TAG_SECOND_87, ctx.protect(0x87, replace.dump(), encrypt=True))
        ctx = BspContext(ppk)
    body += encode_tlv(TAG_86, b"".join(protect_segments(ctx, upp, tag=0x86, encrypt=True)))
    return encode_tlv(TAG_BPP, body)


def segments(bpp: bytes) -> list[bytes]:
    """The LPA's split of a BPP into ES10b.LoadBoundProfilePackage calls (SGP.22 2.5.5):
    BF36 header + InitialiseSecureChannel; A0 header + first '87'; A1 header; each '88';
    A2 header + first '87' (if present); A3 header; each '86'. Raises DecodeError if malformed."""
    outer = parse_one(bpp)
    if outer.tag != TAG_BPP:
        raise DecodeError(f"a BoundProfilePackage starts with BF36, found {outer.tag:X}")
    items = split(outer.value)
    tags = [item.tag for item in items]
    if tags not in ([TAG_ISC, TAG_FIRST_87, TAG_88, TAG_86], [TAG_ISC, TAG_FIRST_87, TAG_88, TAG_SECOND_87, TAG_86]):
        raise DecodeError(f"unexpected BoundProfilePackage layout: {' '.join(f'{t:X}' for t in tags)}")
    out = [outer.header + items[0].raw]
    for item in items[1:]:
        elements = split(item.value)
        if item.tag in (TAG_FIRST_87, TAG_SECOND_87) and elements:
            out.append(item.header + elements[0].raw)
            out.extend(e.raw for e in elements[1:])
        else:
            out.append(item.header)
            out.extend(e.raw for e in elements)
    return out


def verify_smdp_sign(isc: m.InitialiseSecureChannelRequest, euicc_otpk: bytes,
                     dp_pb_public_key: ec.EllipticCurvePublicKey) -> bool:
    return crypto.verify(dp_pb_public_key, smdp_sign_input(isc, euicc_otpk), isc["smdpSign"].native)


def open_secure_channel(isc: m.InitialiseSecureChannelRequest, euicc_otsk: ec.EllipticCurvePrivateKey,
                        eid: bytes) -> BspContext:
    """The eUICC side of 5.5.1: ECKA with smdpOtpk and the Annex G KDF with the request's CRT.

    Raises rsp.bsp.BspUnsupportedCrtError for CRT values other than AES-128, DecodeError for a bad point.
    """
    crt = isc["controlRefTemplate"]
    shared = crypto.ecka(euicc_otsk, isc["smdpOtpk"].native)
    return BspContext(derive_session_keys(shared, key_type=crt["keyType"].native[0], key_length=crt["keyLen"].native[0],
                                          host_id=crt["hostId"].native, eid=eid))
