"""ES8+ on the card: a Bound Profile Package arriving segment by segment through
ES10b.LoadBoundProfilePackage (SGP.22 2.5.5, 2.5.6, 5.5, 5.7.6).

Segments, in order: 'BF36' header + InitialiseSecureChannel ('BF23'); 'A0' header + ConfigureISDP
('87'); 'A1' header; each StoreMetadata '88'; optionally 'A2' header + ReplaceSessionKeys ('87');
'A3' header; each LoadProfileElements '86'. The loader follows the container lengths, so it also
accepts coarser splits, but never a TLV cut across two segments.

The loader only accumulates: nothing reaches the card's store until the last '86' has been
processed and the whole package checked. Any failure raises ``BppError(bppCommandId, errorReason)``
(5.7.6) and leaves the loader unusable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from euicc_sim.es10b_auth import Session
from euicc_sim.state import metadata_iccid
from rsp import bpp, crypto
from rsp import messages as m
from rsp.bsp import BspContext, BspError, BspUnsupportedCrtError, replace_session_keys
from rsp.errors import BppError, DecodeError
from rsp.ids import eid_to_bytes
from rsp.saip import ProfilePackage
from rsp.tlv import Tlv, encode_tlv, read_header, read_tlv

# BppCommandId and ErrorReason values (5.7.6, RSPDefinitions).
INITIALISE_SECURE_CHANNEL, CONFIGURE_ISDP, STORE_METADATA, REPLACE_SESSION_KEYS, LOAD_PROFILE_ELEMENTS = (
    0,
    1,
    2,
    4,
    5,
)
INCORRECT_INPUT_VALUES, INVALID_SIGNATURE, INVALID_TRANSACTION_ID, UNSUPPORTED_CRT_VALUES = 1, 2, 3, 4
UNSUPPORTED_REMOTE_OPERATION, UNSUPPORTED_PROFILE_CLASS, SCP03T_STRUCTURE_ERROR = 5, 6, 7
ICCID_ALREADY_EXISTS, INSUFFICIENT_MEMORY, INSTALL_INTERRUPTED = 9, 10, 11
PE_PROCESSING_ERROR, ICCID_MISMATCH, PPR_NOT_ALLOWED = 12, 13, 15

MAX_DP_PROPRIETARY = 128  # RSPDefinitions: DpProprietaryData at most 128 bytes with tag and length


@dataclass(frozen=True)
class _Container:
    command: int  # bppCommandId of what the container carries
    element: int  # tag of its protected TLVs
    encrypted: bool


CONTAINERS = {
    bpp.TAG_FIRST_87: _Container(CONFIGURE_ISDP, 0x87, encrypted=True),
    bpp.TAG_88: _Container(STORE_METADATA, 0x88, encrypted=False),
    bpp.TAG_SECOND_87: _Container(REPLACE_SESSION_KEYS, 0x87, encrypted=True),
    bpp.TAG_86: _Container(LOAD_PROFILE_ELEMENTS, 0x86, encrypted=True),
}
# Which container may follow which (2.5.4: the second sequence of '87' is optional).
NEXT = {
    None: (bpp.TAG_FIRST_87,),
    bpp.TAG_FIRST_87: (bpp.TAG_88,),
    bpp.TAG_88: (bpp.TAG_SECOND_87, bpp.TAG_86),
    bpp.TAG_SECOND_87: (bpp.TAG_86,),
}
CONTINUATION_TAGS = frozenset({*CONTAINERS, 0x86, 0x87, 0x88})

# SAIP 2.3 EUICCResponse PEStatus values used in simaResponse.
PE_OK, PE_NOT_ENOUGH_MEMORY, PE_INVALID_REQUEST_FORMAT, PE_FEATURE_NOT_SUPPORTED = 0, 4, 5, 10
PE_UNSUPPORTED_PROFILE_VERSION = 31


def euicc_response(status: int, *, aborted: bool = False) -> bytes:
    """One SAIP EUICCResponse: peStatus with one PEStatus, profileInstallationAborted when ``aborted``."""
    pe_status = encode_tlv(0x30, encode_tlv(0x80, status.to_bytes(1, "big")))
    return encode_tlv(0x30, encode_tlv(0xA0, pe_status) + (b"\x81\x00" if aborted else b""))


class BppLoadError(BppError):
    """A BppError that may carry the SAIP simaResponse for the ProfileInstallationResult."""

    def __init__(
        self, bpp_command_id: int, error_reason: int, detail: str = "", *, sima_response: bytes | None = None
    ):
        super().__init__(bpp_command_id, error_reason, detail)
        self.sima_response = sima_response


@dataclass(frozen=True)
class LoadedProfile:
    """A completely received and checked profile, ready to be committed."""

    metadata: m.StoreMetadataRequest
    iccid: str
    package: bytes  # the unprotected profile package (SAIP)
    dp_proprietary: bytes | None  # DpProprietaryData DER, implicit tag 'B8' as in ProfileInfo


class CardChecks(Protocol):
    """What the loader asks the card (euicc_sim.policy.InstallChecks answers from its state and
    declared capabilities)."""

    def check_metadata(self, metadata: m.StoreMetadataRequest) -> None:
        """Raise BppLoadError(storeMetadata, reason) when the card refuses this profile."""

    def free_memory(self) -> int: ...

    def check_package(self, package: ProfilePackage) -> None:
        """Raise BppLoadError(loadProfileElements, reason, sima_response=...) for an unsupported package."""


class BppLoader:
    """One Bound Profile Package being received. Start with the first segment, then ``feed``."""

    def __init__(self, first_segment: bytes, session: Session, eid: str, checks: CardChecks):
        self._session = session
        self._checks = checks
        self._command = INITIALISE_SECURE_CHANNEL
        self._ctx = self._open(first_segment, eid)
        self._container: int | None = None
        self._container_left = 0
        self._data: dict[int, bytearray] = {tag: bytearray() for tag in CONTAINERS}
        self._metadata: m.StoreMetadataRequest | None = None
        self._dp_proprietary: bytes | None = None

    @property
    def command(self) -> int:
        """The bppCommandId being processed (for an interruption report)."""
        return self._command

    @property
    def iccid(self) -> str | None:
        """The profile's ICCID once StoreMetadata was accepted."""
        return metadata_iccid(self._metadata) if self._metadata is not None else None

    # --- InitialiseSecureChannel (5.5.1) ------------------------------------------------------

    def _open(self, segment: bytes, eid: str) -> BspContext:
        try:
            tag, length, offset = read_header(segment)
            isc_tlv, end = read_tlv(segment, offset)
            isc = m.decode(m.InitialiseSecureChannelRequest, isc_tlv.raw)
        except DecodeError as exc:
            raise self._fail(INCORRECT_INPUT_VALUES, f"first segment: {exc}") from None
        if tag != bpp.TAG_BPP or isc_tlv.tag != bpp.TAG_ISC or end != len(segment):
            raise self._fail(
                INCORRECT_INPUT_VALUES, "the first segment is the BF36 header and the whole BF23"
            )
        self._remaining = length - len(isc_tlv.raw)
        if self._remaining <= 0:
            raise self._fail(INCORRECT_INPUT_VALUES, "the BF36 length leaves no room for the profile")
        if isc["remoteOpId"].native != bpp.REMOTE_OP_INSTALL_BPP:
            raise self._fail(
                UNSUPPORTED_REMOTE_OPERATION,
                f"remoteOpId {isc['remoteOpId'].native} is not installBoundProfilePackage(1)",
            )
        if isc["transactionId"].native != self._session.transaction_id:
            raise self._fail(INVALID_TRANSACTION_ID, "the package belongs to another transaction")
        euicc_otpk = crypto.public_key_bytes(self._session.euicc_otsk.public_key())
        if not bpp.verify_smdp_sign(isc, euicc_otpk, self._session.dp_pb_key):
            raise self._fail(INVALID_SIGNATURE, "smdpSign does not verify with CERT.DPpb")
        try:
            return bpp.open_secure_channel(isc, self._session.euicc_otsk, eid_to_bytes(eid))
        except BspUnsupportedCrtError as exc:
            raise self._fail(UNSUPPORTED_CRT_VALUES, str(exc)) from None
        except DecodeError as exc:  # smdpOtpk is not a point of the curve
            raise self._fail(INCORRECT_INPUT_VALUES, str(exc)) from None

    # --- the following segments ---------------------------------------------------------------

    def feed(self, segment: bytes) -> LoadedProfile | None:
        """Process one segment; the loaded profile after the last one, None before."""
        if len(segment) > self._remaining:
            raise self._fail(SCP03T_STRUCTURE_ERROR, "segment runs past the end of the Bound Profile Package")
        self._remaining -= len(segment)
        pos = 0
        while pos < len(segment):
            pos = self._header(segment, pos) if self._container_left == 0 else self._element(segment, pos)
            if self._container_left == 0 and self._container is not None:
                self._finish(self._container)
        if self._remaining:
            return None
        if self._container != bpp.TAG_86 or self._container_left:
            raise self._fail(SCP03T_STRUCTURE_ERROR, "the Bound Profile Package ended before its last '86'")
        return self._complete()

    def _header(self, segment: bytes, pos: int) -> int:
        try:
            tag, length, offset = read_header(segment, pos)
        except DecodeError as exc:
            raise self._fail(SCP03T_STRUCTURE_ERROR, str(exc)) from None
        allowed = NEXT.get(self._container, ())
        if tag not in allowed:
            expected = " or ".join(f"{t:02X}" for t in allowed) or "nothing"
            raise self._fail(SCP03T_STRUCTURE_ERROR, f"found {tag:X} where {expected} belongs")
        self._container, self._container_left = tag, length
        self._command = CONTAINERS[tag].command
        if length == 0:
            raise self._fail(SCP03T_STRUCTURE_ERROR, f"the {tag:02X} sequence is empty")
        return offset

    def _element(self, segment: bytes, pos: int) -> int:
        try:
            tlv, end = read_tlv(segment, pos)
        except DecodeError as exc:
            raise self._fail(SCP03T_STRUCTURE_ERROR, str(exc)) from None
        if end - pos > self._container_left:
            raise self._fail(SCP03T_STRUCTURE_ERROR, f"a {tlv.tag:02X} TLV runs past its sequence")
        self._container_left -= end - pos
        self._unprotect(tlv)
        return end

    def _unprotect(self, tlv: Tlv) -> None:
        container = CONTAINERS[self._container]
        try:
            data = self._ctx.unprotect(tlv.raw, encrypted=container.encrypted, tag=container.element)
        except BspError as exc:
            raise self._fail(exc.error_reason, str(exc)) from None
        self._data[self._container] += data
        if self._container == bpp.TAG_86 and len(self._data[bpp.TAG_86]) > self._checks.free_memory():
            raise self._fail(
                INSUFFICIENT_MEMORY,
                f"the profile needs more than the {self._checks.free_memory()} bytes of free memory",
                sima=euicc_response(PE_NOT_ENOUGH_MEMORY, aborted=True),
            )

    def _finish(self, tag: int) -> None:
        data = bytes(self._data[tag])
        if tag == bpp.TAG_FIRST_87:
            self._configure_isdp(data)
        elif tag == bpp.TAG_88:
            self._store_metadata(data)
        elif tag == bpp.TAG_SECOND_87:
            self._replace_session_keys(data)

    # --- ES8+ commands (5.5.2 - 5.5.5) --------------------------------------------------------

    def _configure_isdp(self, data: bytes) -> None:
        try:
            request = m.decode(m.ConfigureISDPRequest, data)
        except DecodeError as exc:
            raise self._fail(INCORRECT_INPUT_VALUES, str(exc)) from None
        dp = request["dpProprietaryData"]
        if dp.native is not None:
            if len(dp.dump()) > MAX_DP_PROPRIETARY:
                raise self._fail(
                    INCORRECT_INPUT_VALUES, f"dpProprietaryData exceeds {MAX_DP_PROPRIETARY} bytes"
                )
            self._dp_proprietary = dp.dump()

    def _store_metadata(self, data: bytes) -> None:
        try:
            metadata = m.decode(m.StoreMetadataRequest, data)
            metadata_iccid(metadata)
        except DecodeError as exc:
            raise self._fail(INCORRECT_INPUT_VALUES, str(exc)) from None
        self._checks.check_metadata(metadata)
        self._metadata = metadata

    def _replace_session_keys(self, data: bytes) -> None:
        try:
            keys = m.decode(m.ReplaceSessionKeysRequest, data)
            self._ctx = replace_session_keys(
                keys["ppkEnc"].native, keys["ppkCmac"].native, keys["initialMacChainingValue"].native
            )
        except (DecodeError, BspError) as exc:
            raise self._fail(INCORRECT_INPUT_VALUES, str(exc)) from None

    def _complete(self) -> LoadedProfile:
        data = bytes(self._data[bpp.TAG_86])
        try:
            package = ProfilePackage.decode(data)
        except DecodeError as exc:
            raise self._fail(
                PE_PROCESSING_ERROR, str(exc), sima=euicc_response(PE_INVALID_REQUEST_FORMAT, aborted=True)
            ) from None
        iccid = metadata_iccid(self._metadata)
        if package.iccid != iccid:
            raise self._fail(
                ICCID_MISMATCH, f"the profile header holds ICCID {package.iccid}, the metadata {iccid}"
            )
        self._checks.check_package(package)
        return LoadedProfile(
            metadata=self._metadata, iccid=iccid, package=data, dp_proprietary=self._dp_proprietary
        )

    def _fail(self, reason: int, detail: str, sima: bytes | None = None) -> BppLoadError:
        return BppLoadError(self._command, reason, detail, sima_response=sima)


def starts_bpp(request: bytes) -> bool:
    return request[:2] == b"\xbf\x36"


def continues_bpp(request: bytes) -> bool:
    return bool(request) and request[0] in CONTINUATION_TAGS
