"""ES10a/b/c over any APDU transport (SGP.22 section 5.7, transport in 5.7.2).

The client opens a logical channel (MANAGE CHANNEL), selects the ISD-R by AID and sends every ES10
request as STORE DATA blocks of at most ``block_size`` bytes: P1 '11' while more blocks follow, '91'
on the last, P2 the block number from 0. Response data arrives through '61xx' + GET RESPONSE on the
same channel; a '6Cxx' answer is re-issued with the exact Le. Each ES10 function has one typed method
that returns the decoded rsp.messages value or raises Es10Error carrying the function's enum.

``trace`` sees every APDU exchange; ``measure()`` counts APDUs, bytes and time for a procedure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from asn1crypto import core

from lpa.transport import CardTransport
from rsp import bpp as rsp_bpp
from rsp import messages as m
from rsp import messages_v3 as v3
from rsp import status
from rsp.errors import ApduError, DecodeError, Es10Error, KinsimError
from rsp.ids import ISD_R_AID, eid_from_bytes, iccid_to_bcd, validate_iccid

MAX_BLOCK_SIZE = 255  # SGP.22 5.7.2: at most 255 bytes of command data per STORE DATA
MAX_BLOCKS = 256  # P2 carries the block number in one byte

INS_MANAGE_CHANNEL = 0x70
INS_SELECT = 0xA4
INS_GET_RESPONSE = 0xC0
INS_STORE_DATA = 0xE2
P1_MORE_BLOCKS = 0x11
P1_LAST_BLOCK = 0x91
MAX_RESPONSE = 1 << 20  # a runaway '61xx' chain stops here

SW_OK = 0x9000
SW_DESCRIPTIONS = {
    0x6700: "wrong length",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6985: "conditions of use not satisfied",
    0x6A80: "incorrect data",
    0x6A81: "function not supported",
    0x6A82: "application not found",
    0x6A84: "not enough memory",
    0x6A86: "incorrect P1/P2",
    0x6D00: "instruction not supported",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
}

# Result enums not listed in rsp.status (RSPDefinitions).
LIST_NOTIFICATION_ERROR = {127: "undefinedError"}
RETRIEVE_NOTIFICATIONS_ERROR = {1: "noResultAvailable", 127: "undefinedError"}


def describe_sw(sw: int) -> str:
    return SW_DESCRIPTIONS.get(sw, "unexpected status")


def is_success(sw: int) -> bool:
    """'9000', or '91xx' (done, with a proactive command pending: TS 102 221 10.2.1.1)."""
    return sw == SW_OK or sw >> 8 == 0x91


def interindustry_cla(channel: int) -> int:
    """ISO 7816-4 5.4.1 class byte for a logical channel (first or further interindustry class)."""
    if not 0 <= channel <= 19:
        raise ValueError(f"logical channel {channel} is outside 0..19")
    return channel if channel < 4 else 0x40 | (channel - 4)


def channel_of(cla: int) -> int:
    """The logical channel a class byte addresses (either class kind)."""
    return 4 + (cla & 0x0F) if cla & 0x40 else cla & 0x03


def proprietary_cla(channel: int) -> int:
    """The GlobalPlatform class ('8X' / 'CX') of STORE DATA on a logical channel."""
    return 0x80 | interindustry_cla(channel)


def build_apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    """A short APDU; ``le`` 1..256 (256 is coded '00')."""
    if len(data) > 255:
        raise ValueError("short APDUs carry at most 255 data bytes")
    apdu = bytes([cla, ins, p1, p2])
    if data:
        apdu += bytes([len(data)]) + data
    if le is not None:
        apdu += bytes([le & 0xFF])
    return apdu


@dataclass(frozen=True)
class ApduExchange:
    """One command and its answer, for the trace hook."""

    command: bytes
    data: bytes
    sw: int
    seconds: float


@dataclass(eq=False)  # identity matters: nested measure() blocks may hold equal counts
class Counters:
    """What a procedure cost on the card interface."""

    apdus: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def add(self, exchange: ApduExchange) -> None:
        self.apdus += 1
        self.bytes_sent += len(exchange.command)
        self.bytes_received += len(exchange.data) + 2
        self.seconds += exchange.seconds

    def as_dict(self) -> dict:
        return {"apdus": self.apdus, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "seconds": round(self.seconds, 6)}


@dataclass(frozen=True)
class ProfileRef:
    """A profile named by ICCID (digits) or ISD-P AID (hex), as a user types it."""

    iccid: str | None = None
    aid: bytes | None = None

    @classmethod
    def parse(cls, text: str) -> ProfileRef:
        text = text.strip()
        if text.isdigit():
            return cls(iccid=validate_iccid(text))
        try:
            aid = bytes.fromhex(text)
        except ValueError:
            aid = b""
        if not 5 <= len(aid) <= 16:
            raise DecodeError(f"{text!r} is neither an ICCID (19-20 digits) nor an ISD-P AID (5-16 bytes in hex)")
        return cls(aid=aid)

    def choice(self) -> dict:
        """The ProfileIdentifier / DeleteProfileRequest alternative."""
        if self.iccid is not None:
            return {"iccid": iccid_to_bcd(self.iccid)}
        return {"isdpAid": self.aid}

    def __str__(self) -> str:
        return self.iccid if self.iccid is not None else (self.aid or b"").hex().upper()


class Es10Client:
    """ES10 functions on an eUICC reached through ``transport``; use as a context manager."""

    def __init__(
        self,
        transport: CardTransport,
        *,
        aid: bytes = ISD_R_AID,
        block_size: int = MAX_BLOCK_SIZE,
        trace: Callable[[ApduExchange], None] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ):
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"STORE DATA block size must be 1..{MAX_BLOCK_SIZE}, got {block_size}")
        self.transport = transport
        self.aid = bytes(aid)
        self.block_size = block_size
        self.trace = trace
        self._timer = timer
        self._meters: list[Counters] = []
        self.channel: int | None = None

    # --- the channel to the ISD-R -------------------------------------------------------------

    def open(self) -> Es10Client:
        """Open a logical channel (the basic channel if the card has none to give) and select the ISD-R."""
        data, sw = self._command(build_apdu(0x00, INS_MANAGE_CHANNEL, 0x00, 0x00, le=1))
        self.channel = data[0] if is_success(sw) and len(data) == 1 and 0 < data[0] <= 19 else 0
        data, sw = self._command(build_apdu(interindustry_cla(self.channel), INS_SELECT, 0x04, 0x00, self.aid, le=256))
        if not is_success(sw):
            channel, self.channel = self.channel, None
            self._close_channel(channel)
            raise ApduError(sw, f"the card has no ISD-R {self.aid.hex().upper()} ({describe_sw(sw)}): is it an eUICC?")
        return self

    def close(self) -> None:
        """Close the logical channel; the transport stays open (its owner closes it)."""
        channel, self.channel = self.channel, None
        if channel is not None:
            self._close_channel(channel)

    def _close_channel(self, channel: int) -> None:
        if not channel:
            return  # the basic channel is never closed
        # A card that is gone or already closed the channel leaves nothing to release.
        with suppress(KinsimError):
            self._command(build_apdu(0x00, INS_MANAGE_CHANNEL, 0x80, channel))

    def __enter__(self) -> Es10Client:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- counting -------------------------------------------------------------------------------

    @contextmanager
    def measure(self) -> Iterator[Counters]:
        """Count the APDUs exchanged inside the ``with`` block (blocks may nest)."""
        counters = Counters()
        self._meters.append(counters)
        try:
            yield counters
        finally:
            self._meters.remove(counters)

    # --- APDU level -----------------------------------------------------------------------------

    def _exchange(self, apdu: bytes) -> tuple[bytes, int]:
        start = self._timer()
        response = self.transport.transmit(apdu)
        exchange = ApduExchange(apdu, response[:-2], int.from_bytes(response[-2:], "big"), self._timer() - start)
        for counters in self._meters:
            counters.add(exchange)
        if self.trace is not None:
            self.trace(exchange)
        return exchange.data, exchange.sw

    def _command(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command; follow '6Cxx' (re-issue with Le) and '61xx' (GET RESPONSE) to the end."""
        data, sw = self._exchange(apdu)
        if sw >> 8 == 0x6C:
            data, sw = self._exchange(_with_le(apdu, sw & 0xFF))
        collected = bytearray(data)
        cla = interindustry_cla(channel_of(apdu[0]))  # GET RESPONSE goes to the same channel
        while sw >> 8 == 0x61:
            get_response = build_apdu(cla, INS_GET_RESPONSE, 0x00, 0x00, le=(sw & 0xFF) or 256)
            data, sw = self._exchange(get_response)
            if sw >> 8 == 0x6C:
                data, sw = self._exchange(_with_le(get_response, sw & 0xFF))
            collected += data
            if len(collected) > MAX_RESPONSE:
                raise ApduError(sw, "the card keeps answering '61xx': response larger than 1 MiB")
        return bytes(collected), sw

    def store_data(self, request: bytes, function: str = "ES10") -> bytes:
        """Send one complete ES10 request in STORE DATA blocks; the response data (may be empty)."""
        if self.channel is None:
            raise KinsimError("the ES10 client is not open: call open() or use it in a 'with' block")
        if not request:
            raise ValueError("an ES10 request is never empty")
        blocks = [request[i : i + self.block_size] for i in range(0, len(request), self.block_size)]
        if len(blocks) > MAX_BLOCKS:
            raise ValueError(f"{function} request of {len(request)} bytes needs more than {MAX_BLOCKS} blocks")
        cla = proprietary_cla(self.channel)
        data = b""
        for number, block in enumerate(blocks):
            last = number == len(blocks) - 1
            apdu = build_apdu(cla, INS_STORE_DATA, P1_LAST_BLOCK if last else P1_MORE_BLOCKS, number, block,
                              le=256 if last else None)
            data, sw = self._command(apdu)
            if not is_success(sw):
                raise ApduError(sw, f"the eUICC rejected {function} (STORE DATA block {number}: {describe_sw(sw)})")
        return data

    def _call(self, function: str, request: core.Asn1Value, response_spec: type):
        raw = self.store_data(request.dump(), function)
        if not raw:
            raise DecodeError(f"the eUICC answered {function} with no data")
        return m.decode(response_spec, raw)

    # --- ES10a ----------------------------------------------------------------------------------

    def get_euicc_configured_addresses(self) -> tuple[str | None, str]:
        """(defaultDpAddress or None, rootDsAddress) (5.7.3)."""
        value = self._call("GetEuiccConfiguredAddresses", m.EuiccConfiguredAddressesRequest({}),
                           m.EuiccConfiguredAddressesResponse)
        return value["defaultDpAddress"].native, value["rootDsAddress"].native

    def set_default_dp_address(self, address: str) -> None:
        """Set (or with "" clear) the default SM-DP+ address (5.7.4)."""
        value = self._call("SetDefaultDpAddress", m.SetDefaultDpAddressRequest({"defaultDpAddress": address}),
                           m.SetDefaultDpAddressResponse)
        _check_result("SetDefaultDpAddress", value["setDefaultDpAddressResult"].native, status.SET_DEFAULT_DP_RESULT)

    # --- ES10b ----------------------------------------------------------------------------------

    def get_euicc_challenge(self) -> bytes:
        value = self._call("GetEUICCChallenge", m.GetEuiccChallengeRequest({}), m.GetEuiccChallengeResponse)
        return value["euiccChallenge"].native

    def get_euicc_info1(self) -> m.EUICCInfo1:
        return self._call("GetEUICCInfo", m.GetEuiccInfo1Request({}), m.EUICCInfo1)

    def get_euicc_info2(self) -> m.EUICCInfo2:
        return self._call("GetEUICCInfo", m.GetEuiccInfo2Request({}), m.EUICCInfo2)

    def authenticate_server(self, *, server_signed1, server_signature1: bytes, euicc_ci_pkid_to_be_used,
                            server_certificate, ctx_params1) -> m.AuthenticateServerResponse:
        """ES10b.AuthenticateServer (5.7.13). Returns either alternative: the SM-DP+ must receive an
        authenticateResponseError too (ES9+.AuthenticateClient relays it)."""
        request = m.AuthenticateServerRequest({
            "serverSigned1": server_signed1,
            "serverSignature1": server_signature1,
            "euiccCiPKIdToBeUsed": euicc_ci_pkid_to_be_used,
            "serverCertificate": server_certificate,
            "ctxParams1": ctx_params1,
        })
        return self._call("AuthenticateServer", request, m.AuthenticateServerResponse)

    def prepare_download(self, *, smdp_signed2, smdp_signature2: bytes, smdp_certificate,
                         hash_cc: bytes | None = None) -> m.PrepareDownloadResponse:
        """ES10b.PrepareDownload (5.7.5). Returns either alternative (ES9+.GetBoundProfilePackage relays it)."""
        fields = {"smdpSigned2": smdp_signed2, "smdpSignature2": smdp_signature2, "smdpCertificate": smdp_certificate}
        if hash_cc is not None:
            fields["hashCc"] = hash_cc
        return self._call("PrepareDownload", m.PrepareDownloadRequest(fields), m.PrepareDownloadResponse)

    def load_bound_profile_package(self, bpp: bytes,
                                   progress: Callable[[int, int], None] | None = None) -> m.ProfileInstallationResult:
        """ES10b.LoadBoundProfilePackage (5.7.6), one STORE DATA sequence per segment of SGP.22 2.5.5.

        The eUICC answers the last segment, or an earlier one when it stops on an error, with the
        ProfileInstallationResult; ``progress(sent_bytes, total_bytes)`` follows the segments.
        """
        parts = rsp_bpp.segments(bpp)
        total, sent = sum(len(p) for p in parts), 0
        for part in parts:
            raw = self.store_data(part, "LoadBoundProfilePackage")
            sent += len(part)
            if progress is not None:
                progress(sent, total)
            if raw:
                return m.decode(m.ProfileInstallationResult, raw)
        raise DecodeError("the eUICC returned no ProfileInstallationResult after the last BPP segment")

    def cancel_session(self, transaction_id: bytes, reason: int) -> m.CancelSessionResponse:
        """ES10b.CancelSession (5.7.14). Returns either alternative: ES9+.CancelSession relays it."""
        request = m.CancelSessionRequest({"transactionId": transaction_id, "reason": reason})
        return self._call("CancelSession", request, m.CancelSessionResponse)

    def list_notifications(self, operations: set[str] | None = None) -> list[m.NotificationMetadata]:
        """ES10b.ListNotification (5.7.9); ``operations`` filters by NotificationEvent names."""
        fields = {"profileManagementOperation": operations} if operations else {}
        value = self._call("ListNotification", m.ListNotificationRequest(fields), v3.ListNotificationResponse)
        if value.name != "notificationMetadataList":
            _raise("ListNotification", value.chosen.native, LIST_NOTIFICATION_ERROR)
        return list(value.chosen)

    def retrieve_notifications(self, seq_number: int | None = None) -> list[m.PendingNotification]:
        """ES10b.RetrieveNotificationsList (5.7.10): all pending notifications, or the one numbered
        (including v3 LoadRpmPackageResults)."""
        fields = {"searchCriteria": {"seqNumber": seq_number}} if seq_number is not None else {}
        value = self._call("RetrieveNotificationsList", m.RetrieveNotificationsListRequest(fields),
                           v3.RetrieveNotificationsListResponse)
        if value.name != "notificationList":
            _raise("RetrieveNotificationsList", value.chosen.native, RETRIEVE_NOTIFICATIONS_ERROR)
        return list(value.chosen)

    def remove_notification(self, seq_number: int) -> None:
        """ES10b.RemoveNotificationFromList (5.7.11)."""
        value = self._call("RemoveNotificationFromList", m.NotificationSentRequest({"seqNumber": seq_number}),
                           m.NotificationSentResponse)
        _check_result("RemoveNotificationFromList", value["deleteNotificationStatus"].native,
                      status.NOTIFICATION_SENT_RESULT)

    def load_rpm_package(self, *, smdp_signed3, smdp_signature3: bytes) -> v3.LoadRpmPackageResult:
        """ES10b.LoadRpmPackage (SGP.22 v3): the eUICC runs the SM-DP+'s RPM package and answers the
        (normally signed) result, which it also keeps as a pending notification."""
        request = v3.LoadRpmPackageRequest({"smdpSigned3": smdp_signed3, "smdpSignature3": smdp_signature3})
        return self._call("LoadRpmPackage", request, v3.LoadRpmPackageResult)

    def get_rat(self) -> m.RulesAuthorisationTable:
        """ES10b.GetRAT (5.7.22): the Rules Authorisation Table."""
        return self._call("GetRAT", m.GetRatRequest({}), m.GetRatResponse)["rat"]

    # --- ES10c ----------------------------------------------------------------------------------

    def get_profiles_info(self, ref: ProfileRef | None = None, profile_class: str | None = None,
                          tags: bytes | None = None) -> list[m.ProfileInfo]:
        """ES10c.GetProfilesInfo (5.7.15), optionally for one profile or one class, and only ``tags``."""
        fields: dict = {}
        if ref is not None:
            fields["searchCriteria"] = ref.choice()
        elif profile_class is not None:
            fields["searchCriteria"] = {"profileClass": profile_class}
        if tags is not None:
            fields["tagList"] = tags
        value = self._call("GetProfilesInfo", m.ProfileInfoListRequest(fields), m.ProfileInfoListResponse)
        if value.name != "profileInfoListOk":
            _raise("GetProfilesInfo", value.chosen.native, status.PROFILE_INFO_LIST_ERROR)
        return list(value.chosen)

    def enable_profile(self, ref: ProfileRef, refresh: bool = False) -> None:
        """ES10c.EnableProfile (5.7.16)."""
        request = m.EnableProfileRequest({"profileIdentifier": ref.choice(), "refreshFlag": refresh})
        value = self._call("EnableProfile", request, m.EnableProfileResponse)
        _check_result("EnableProfile", value["enableResult"].native, status.ENABLE_RESULT, ref)

    def disable_profile(self, ref: ProfileRef, refresh: bool = False) -> None:
        """ES10c.DisableProfile (5.7.17)."""
        request = m.DisableProfileRequest({"profileIdentifier": ref.choice(), "refreshFlag": refresh})
        value = self._call("DisableProfile", request, m.DisableProfileResponse)
        _check_result("DisableProfile", value["disableResult"].native, status.DISABLE_RESULT, ref)

    def delete_profile(self, ref: ProfileRef) -> None:
        """ES10c.DeleteProfile (5.7.18)."""
        name, value = next(iter(ref.choice().items()))
        response = self._call("DeleteProfile", m.DeleteProfileRequest(name=name, value=value), m.DeleteProfileResponse)
        _check_result("DeleteProfile", response["deleteResult"].native, status.DELETE_RESULT, ref)

    def memory_reset(self, options: set[str]) -> None:
        """ES10c.eUICCMemoryReset (5.7.19); ``options`` are ResetOptions bit names."""
        value = self._call("eUICCMemoryReset", m.EuiccMemoryResetRequest({"resetOptions": options}),
                           m.EuiccMemoryResetResponse)
        _check_result("eUICCMemoryReset", value["resetResult"].native, status.MEMORY_RESET_RESULT)

    def get_eid(self) -> str:
        """ES10c.GetEID (5.7.20)."""
        value = self._call("GetEID", m.GetEuiccDataRequest({"tagList": b"\x5a"}), m.GetEuiccDataResponse)
        return eid_from_bytes(value["eidValue"].native)

    def set_nickname(self, iccid: str, nickname: str) -> None:
        """ES10c.SetNickname (5.7.21)."""
        request = m.SetNicknameRequest({"iccid": iccid_to_bcd(iccid), "profileNickname": nickname})
        value = self._call("SetNickname", request, m.SetNicknameResponse)
        _check_result("SetNickname", value["setNicknameResult"].native, status.SET_NICKNAME_RESULT,
                      ProfileRef(iccid=iccid))


def _with_le(apdu: bytes, le: int) -> bytes:
    """The same command with its Le replaced (or added) — for a '6Cxx' answer."""
    body = apdu[4:]
    if len(body) == 1:  # case 2: only Le
        body = b""
    elif body and len(body) == 2 + body[0]:  # case 4: Lc data Le
        body = body[:-1]
    return apdu[:4] + body + bytes([le & 0xFF])


def _raise(function: str, code: int, names: dict[int, str], detail: str = "") -> None:
    raise Es10Error(function, code, names.get(code, "unknown result"), detail)


def _check_result(function: str, code: int, names: dict[int, str], ref: ProfileRef | None = None) -> None:
    if code != 0:
        _raise(function, code, names, f"profile {ref}" if ref is not None else "")
