"""The software eUICC at the APDU level: a sans-IO card core, ``response = card.transmit(apdu)``.

What the card does with each command (ISO/IEC 7816-4, GlobalPlatform Card Specification 2.3,
ETSI TS 102 221, SGP.22 section 5.7.2 "ES10 transport"):

* Logical channels: the basic channel 0 and 1..19, numbered in CLA as ISO 7816-4 section 5.4.1
  codes them (first interindustry class b2-b1 = 0..3; further interindustry class ``0x40 | (n - 4)``).
  Proprietary classes ('8X', 'CX': GlobalPlatform, TS 102 221) use the same channel coding. MANAGE
  CHANNEL (INS '70') opens and closes them; each channel has its own selected application, its own
  pending response for GET RESPONSE and its own STORE DATA reassembly.
* SELECT by DF name (P1 '04') selects the ISD-R or an application of the enabled profile. A
  right-truncated AID selects the first application it prefixes (TS 102 221 section 11.1.1.2 allows
  it, GlobalPlatform cards do it, and the ATR's card service data says so); P2 b2-b1 '10' selects the
  next such application. SELECT by file identifier or path goes to the enabled profile's file system.
* STORE DATA (INS 'E2', SGP.22 5.7.2): P1 '11' = more blocks follow, '91' = last block (b8 last
  block, b5-b4 '01' BER-TLV); P2 = block number from 0, in sequence; up to 255 data bytes per
  command. The last block hands the reassembled ES10 request to the ISD-R, whose response is returned.
* Response data, T=0 style (what real eUICCs answer on T=0; lpac and pySim fetch with GET
  RESPONSE): a command with a command data field (case 3 or 4, Le or not) never carries response
  data; the card answers '61xx' and the terminal fetches the data with GET RESPONSE ('C0', CLA '0X'
  or '8X' of the same channel), at most 256 bytes each, '61xx' again while more remains. A command
  without a data field (case 1 or 2) gets its data directly, up to Le ('00' or absent = 256). A GET
  RESPONSE whose Le (1..255) exceeds the data available answers '6Cxx' with the exact count, as a
  T=0 card does; the data stays pending. Any other command on the channel discards pending data.
* Every error is a status word, never an exception: see the ``SW_*`` constants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Protocol

from rsp import tlv
from rsp.errors import ApduError, DecodeError, KinsimError
from rsp.ids import ISD_R_AID

_log = logging.getLogger(__name__)

# The ISD-R AID (defined in SGP.02, used unchanged by SGP.22; lpac and pySim select it).

MAX_CHANNELS = 20  # ISO 7816-4 5.4.1: channels 0..19 (0..3 first, 4..19 further interindustry class)


def _with_tck(atr_without_tck: bytes) -> bytes:
    # ISO 7816-3 8.2.5: TCK makes the XOR of T0..TCK zero; present because T=15 is indicated.
    return atr_without_tck + bytes([reduce(lambda acc, b: acc ^ b, atr_without_tck[1:], 0)])


DEFAULT_ATR = _with_tck(bytes([
    0x3B,  # TS: direct convention
    0x9E,  # T0: TA1 and TD1 follow (Y1 = 1001), 14 historical bytes
    0x96,  # TA1: Fi = 512, Di = 32 (f max 5 MHz), a common UICC speed offer
    0x80,  # TD1: TD2 follows; T=0 is the first (default) protocol, the one lpac's PC/SC driver asks for
    0x1F,  # TD2: TA3 follows; T=15, global interface bytes
    0xC7,  # TA3: clock stop supported, no preference; voltage classes A, B and C (5 V, 3 V, 1.8 V)
    0x80,  # historical bytes: category indicator, compact-TLV objects follow
    0x31, 0xE0,  # card service data: selection by full and by partial DF name, EF.DIR, card with MF
    0x73, 0xFE, 0x21, 0x1F,  # card capabilities: selection methods; data coding '21'; no command
    #                          chaining, no extended length, channels assigned by card and terminal, 8+
    0x66, *b"kinsim",  # pre-issuing data: names the software card
]))  # + TCK

# Status words (ISO 7816-4 section 5.6; '61xx'/'6Cxx' from ISO 7816-3 T=0 procedures).
SW_OK = 0x9000
SW_MORE_DATA = 0x6100  # | count ('00' = 256 or more)
SW_WRONG_LE = 0x6C00  # | exact count
SW_WRONG_LENGTH = 0x6700
SW_CHANNEL_NOT_SUPPORTED = 0x6881  # channel not open, or none left
SW_SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
SW_CHAINING_NOT_SUPPORTED = 0x6884
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_INCORRECT_DATA = 0x6A80
SW_FUNCTION_NOT_SUPPORTED = 0x6A81
SW_NOT_FOUND = 0x6A82
SW_NOT_ENOUGH_MEMORY = 0x6A84
SW_INCORRECT_P1P2 = 0x6A86
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_INTERNAL_ERROR = 0x6F00

INS_SELECT = 0xA4
INS_MANAGE_CHANNEL = 0x70
INS_GET_RESPONSE = 0xC0
INS_STORE_DATA = 0xE2
INS_TERMINAL_CAPABILITY = 0xAA

STORE_DATA_MORE_BLOCKS = 0x11  # SGP.22 5.7.2 P1
STORE_DATA_LAST_BLOCK = 0x91


class CardNotPowered(KinsimError):
    """An APDU was sent to a card that is not powered (call ``power_on()`` first)."""


@dataclass(frozen=True)
class Command:
    """One parsed command APDU. ``ne`` is None without an Le field, 256 for Le '00'."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    ne: int | None
    channel: int
    proprietary: bool  # CLA b8 = 1 (GlobalPlatform / TS 102 221 class)


class Application(Protocol):
    """Something a logical channel can select; the enabled profile exposes these (MF, ADF.USIM, ...).

    ``aid`` is the DF name matched by SELECT by DF name; None marks the profile's file-system root
    (the MF), which is implicitly selected on the basic channel at power-on and receives SELECT by
    file identifier or path when no profile application is selected on the channel. An application
    selected on a channel also receives those selects itself, and every command the card does not
    handle (READ BINARY, AUTHENTICATE, STATUS, ...). Per-channel context (current EF, ...) is keyed
    by ``command.channel``; a channel opened by MANAGE CHANNEL from a non-basic channel starts with
    the same application selected (TS 102 221 11.1.17), so treat an unseen channel as freshly
    selected. Return ``(response data, status word)``; the card turns data into '61xx' chunks.
    """

    aid: bytes | None

    def select(self, command: Command) -> tuple[bytes, int]: ...

    def process(self, command: Command) -> tuple[bytes, int]: ...

    def deselect(self, channel: int) -> None:
        """The channel selected something else, was closed, or the card was reset."""


class Isdr(Protocol):
    """The ISD-R: one complete ES10 request (DER, e.g. BF2E00) in, its DER response out."""

    def handle(self, request: bytes) -> bytes: ...


class _Status(Exception):
    """Internal: ends the current command with a status word."""

    def __init__(self, sw: int):
        super().__init__(f"{sw:04X}")
        self.sw = sw


class _IsdrApplication:
    """The ISD-R as a selectable application; its STORE DATA is handled by the card per channel."""

    aid = ISD_R_AID

    def select(self, command: Command) -> tuple[bytes, int]:
        response_control = command.p2 & ~0x03  # b2-b1 (occurrence) are the card's business
        if response_control in (0x00, 0x04):  # FCI (ISO) or FCP (TS 102 221): the same FCI here
            return _isdr_fci(), SW_OK
        if response_control == 0x0C:
            return b"", SW_OK
        return b"", SW_INCORRECT_P1P2

    def process(self, command: Command) -> tuple[bytes, int]:
        return b"", SW_INS_NOT_SUPPORTED

    def deselect(self, channel: int) -> None:
        pass


def _isdr_fci() -> bytes:
    # GlobalPlatform 2.3 section 11.9.3.1: FCI template with the AID and proprietary data carrying
    # '9F65', the maximum length of a command data field (255, as SGP.22 5.7.2 requires).
    proprietary = tlv.encode_tlv(0x9F65, b"\xff")
    return tlv.encode_tlv(0x6F, tlv.encode_tlv(0x84, ISD_R_AID) + tlv.encode_tlv(0xA5, proprietary))


@dataclass
class _Channel:
    selected: Application | None = None
    pending: bytes = b""  # response data awaiting GET RESPONSE
    request: bytearray = field(default_factory=bytearray)  # STORE DATA blocks received so far
    next_block: int = 0


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def _more(count: int) -> int:
    return SW_MORE_DATA | (count if count < 256 else 0)


def _decode_cla(cla: int) -> tuple[int, bool]:
    """(channel, proprietary) of a class byte (ISO 7816-4 5.4.1), or ``_Status`` when unusable."""
    proprietary = bool(cla & 0x80)
    if cla & 0x40:  # further interindustry class 01xx xxxx (and proprietary 11xx xxxx)
        if cla == 0xFF:  # reserved for PPS (ISO 7816-3)
            raise _Status(SW_CLA_NOT_SUPPORTED)
        secure, chaining, channel = cla & 0x20, cla & 0x10, 4 + (cla & 0x0F)
    else:  # first interindustry class 000x xxxx (and proprietary 100x xxxx)
        if cla & 0x20:  # 001x xxxx is RFU; 101x xxxx is the GSM 'A0' class, not a UICC class
            raise _Status(SW_CLA_NOT_SUPPORTED)
        secure, chaining, channel = cla & 0x0C, cla & 0x10, cla & 0x03
    if secure:
        raise _Status(SW_SECURE_MESSAGING_NOT_SUPPORTED)
    if chaining:
        raise _Status(SW_CHAINING_NOT_SUPPORTED)
    return channel, proprietary


def _parse_body(body: bytes) -> tuple[bytes, int | None]:
    """(data, Ne) of the bytes after the header (ISO 7816-3 12.1.3), short length fields only.

    Extended length is not offered (the ATR says so), so a body starting with '00' and longer than
    one byte is a wrong length, as on cards without extended length support.
    """
    if not body:
        return b"", None  # case 1
    if len(body) == 1:
        return b"", body[0] or 256  # case 2
    lc = body[0]
    if lc == 0:
        raise _Status(SW_WRONG_LENGTH)
    if len(body) == 1 + lc:
        return body[1:], None  # case 3
    if len(body) == 2 + lc:
        return body[1:-1], body[-1] or 256  # case 4
    raise _Status(SW_WRONG_LENGTH)


class Card:
    """A software eUICC: power it on, then ``transmit(apdu) -> data || SW1 SW2``."""

    def __init__(
        self,
        isdr: Isdr,
        *,
        atr: bytes = DEFAULT_ATR,
        profile_apps: Callable[[], list[Application]] | None = None,
        on_reset: Callable[[], None] | None = None,
        trace: Callable[[bytes, bytes], None] | None = None,
    ):
        """``profile_apps`` lists the applications of the enabled profile (the same objects while the
        profile stays enabled); ``on_reset`` tells the ISD-R side about power-on and reset (an
        interrupted session ends there); ``trace`` sees every command and response."""
        self._isdr = isdr
        self._isdr_app = _IsdrApplication()
        self._atr = atr
        self._profile_apps = profile_apps or list
        self._on_reset = on_reset
        self.trace = trace
        self._channels: dict[int, _Channel] = {}
        self._powered = False
        self._handlers = {
            INS_SELECT: self._select,
            INS_MANAGE_CHANNEL: self._manage_channel,
            INS_GET_RESPONSE: self._get_response,
            INS_STORE_DATA: self._store_data,
            INS_TERMINAL_CAPABILITY: self._terminal_capability,
        }

    # --- power ------------------------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Cold reset: closes every channel, selects the profile's MF on the basic channel; the ATR."""
        self._deselect_all()
        self._channels = {0: _Channel(selected=self._file_system_root())}
        self._powered = True
        if self._on_reset:
            self._on_reset()
        return self._atr

    def reset(self) -> bytes:
        """Warm reset: the same state as after power-on."""
        return self.power_on()

    def power_off(self) -> None:
        self._deselect_all()
        self._channels = {}
        self._powered = False

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def open_channels(self) -> list[int]:
        return sorted(self._channels)

    # --- APDUs ------------------------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        """One command APDU in, ``data || SW1 SW2`` out; any bytes give a status word, never raise."""
        if not self._powered:
            raise CardNotPowered("the card is not powered: call power_on() before sending APDUs")
        apdu = bytes(apdu)
        try:
            response = self._process(apdu)
        except _Status as status:
            response = _sw(status.sw)
        except ApduError as error:  # the ISD-R or an application chose the status word
            response = _sw(error.sw if 0x6200 <= error.sw <= 0x6FFF else SW_INTERNAL_ERROR)
        except DecodeError:  # a malformed ES10 request or command data field
            response = _sw(SW_INCORRECT_DATA)
        except Exception:
            _log.exception("internal error while processing APDU %s", apdu.hex().upper())
            response = _sw(SW_INTERNAL_ERROR)
        if self.trace:
            self.trace(apdu, response)
        return response

    def _process(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            raise _Status(SW_WRONG_LENGTH)
        cla, ins, p1, p2 = apdu[:4]
        channel_no, proprietary = _decode_cla(cla)
        channel = self._channels.get(channel_no)
        if channel is None:
            raise _Status(SW_CHANNEL_NOT_SUPPORTED)
        if ins >> 4 in (0x6, 0x9):  # ISO 7816-3: invalid INS values (T=0 procedure bytes)
            raise _Status(SW_INS_NOT_SUPPORTED)
        data, ne = _parse_body(apdu[4:])
        command = Command(cla, ins, p1, p2, data, ne, channel_no, proprietary)
        if ins != INS_GET_RESPONSE:
            channel.pending = b""  # T=0: the response is only available to the very next command
        return self._handlers.get(ins, self._to_application)(channel, command)

    def _reply(self, channel: _Channel, command: Command, data: bytes, sw: int) -> bytes:
        if not (0x6200 <= sw <= 0x6FFF or 0x9000 <= sw <= 0x9FFF):  # '61xx' is the card's to give
            raise ValueError(f"an application answered with status word {sw:X}")
        if not data or sw != SW_OK:
            return data + _sw(sw)
        if command.data:  # case 3/4: T=0 returns data only through GET RESPONSE
            channel.pending = data
            return _sw(_more(len(data)))
        return self._serve(channel, data, command.ne or 256)

    @staticmethod
    def _serve(channel: _Channel, data: bytes, ne: int) -> bytes:
        chunk, channel.pending = data[:ne], data[ne:]
        return chunk + _sw(_more(len(channel.pending)) if channel.pending else SW_OK)

    # --- card-level commands ----------------------------------------------------------------------

    def _get_response(self, channel: _Channel, command: Command) -> bytes:
        if command.p1 or command.p2:
            raise _Status(SW_INCORRECT_P1P2)
        if command.data:
            raise _Status(SW_WRONG_LENGTH)
        if not channel.pending:
            raise _Status(SW_CONDITIONS_NOT_SATISFIED)
        if command.ne is not None and len(channel.pending) < command.ne < 256:
            return _sw(SW_WRONG_LE | len(channel.pending))
        return self._serve(channel, channel.pending, command.ne or 256)

    def _manage_channel(self, channel: _Channel, command: Command) -> bytes:
        # ISO 7816-4 section 11.1.2, TS 102 221 section 11.1.17.
        _require_class(command, proprietary=False)
        if command.data:
            raise _Status(SW_WRONG_LENGTH)
        if command.p1 == 0x00:
            return self._open_channel(channel, command)
        if command.p1 == 0x80:
            return self._close_channel(command)
        raise _Status(SW_INCORRECT_P1P2)

    def _open_channel(self, origin: _Channel, command: Command) -> bytes:
        if command.p2 >= MAX_CHANNELS:
            raise _Status(SW_INCORRECT_P1P2)
        if command.p2:  # the terminal chose the number: no response data
            number = command.p2
            if number in self._channels:
                raise _Status(SW_FUNCTION_NOT_SUPPORTED)
        else:
            free = [n for n in range(1, MAX_CHANNELS) if n not in self._channels]
            if not free:
                raise _Status(SW_FUNCTION_NOT_SUPPORTED)
            number = free[0]
        # Opened from the basic channel: the MF is selected; from another: that channel's selection.
        inherited = self._file_system_root() if command.channel == 0 else origin.selected
        self._channels[number] = _Channel(selected=inherited)
        return self._reply(origin, command, b"" if command.p2 else bytes([number]), SW_OK)

    def _close_channel(self, command: Command) -> bytes:
        number = command.p2 or command.channel
        if number == 0 or number >= MAX_CHANNELS:  # the basic channel is never closed
            raise _Status(SW_INCORRECT_P1P2)
        closing = self._channels.pop(number, None)
        if closing is None:
            raise _Status(SW_CHANNEL_NOT_SUPPORTED)
        if closing.selected:
            closing.selected.deselect(number)
        return _sw(SW_OK)

    def _terminal_capability(self, channel: _Channel, command: Command) -> bytes:
        # TS 102 221 section 11.1.19: accepted and checked for BER-TLV form, otherwise not used.
        _require_class(command, proprietary=True)
        if command.p1 or command.p2:
            raise _Status(SW_INCORRECT_P1P2)
        if not command.data:
            raise _Status(SW_WRONG_LENGTH)
        tlv.split(command.data)
        return _sw(SW_OK)

    # --- SELECT -----------------------------------------------------------------------------------

    def _select(self, channel: _Channel, command: Command) -> bytes:
        _require_class(command, proprietary=False)
        if command.p1 == 0x04:
            target = self._find_by_name(channel, command)
        elif command.p1 in (0x00, 0x01, 0x02, 0x03, 0x08, 0x09):
            target = self._file_system_for(channel)
        else:
            raise _Status(SW_INCORRECT_P1P2)
        data, sw = target.select(command)
        if sw == SW_OK:
            terminating = command.p1 == 0x04 and command.p2 & 0x60 == 0x40  # TS 102 221 P2 b7-b6 '10'
            self._switch(channel, command.channel, None if terminating else target)
        return self._reply(channel, command, data, sw)

    def _find_by_name(self, channel: _Channel, command: Command) -> Application:
        name = command.data
        if not 1 <= len(name) <= 16:
            raise _Status(SW_WRONG_LENGTH)
        occurrence = command.p2 & 0x03
        if occurrence not in (0x00, 0x02):  # first or next occurrence; last/previous are not offered
            raise _Status(SW_INCORRECT_P1P2)
        apps: list[Application] = [self._isdr_app, *self._profile_apps()]
        matches = [app for app in apps if app.aid is not None and app.aid.startswith(name)]
        start = 0
        if occurrence == 0x02 and channel.selected in matches:
            start = matches.index(channel.selected) + 1
        if start >= len(matches):
            raise _Status(SW_NOT_FOUND)
        return matches[start]

    def _file_system_for(self, channel: _Channel) -> Application:
        target = self._current_profile_app(channel) or self._file_system_root()
        if target is None:
            raise _Status(SW_NOT_FOUND)
        return target

    def _switch(self, channel: _Channel, number: int, target: Application | None) -> None:
        if channel.selected is not None and channel.selected is not target:
            channel.selected.deselect(number)
        channel.selected = target
        channel.request.clear()
        channel.next_block = 0

    # --- STORE DATA to the ISD-R (SGP.22 5.7.2) ---------------------------------------------------

    def _store_data(self, channel: _Channel, command: Command) -> bytes:
        _require_class(command, proprietary=True)
        if channel.selected is not self._isdr_app:
            raise _Status(SW_CONDITIONS_NOT_SATISFIED)
        block = command.p2
        try:
            if not command.data:
                raise _Status(SW_WRONG_LENGTH)
            if command.p1 not in (STORE_DATA_MORE_BLOCKS, STORE_DATA_LAST_BLOCK):
                raise _Status(SW_INCORRECT_P1P2)
            if block == 0:  # a first block always starts a new request
                channel.request.clear()
            elif block != channel.next_block:
                raise _Status(SW_INCORRECT_P1P2)
            if command.p1 == STORE_DATA_MORE_BLOCKS and block == 255:  # no block 256 can follow
                raise _Status(SW_NOT_ENOUGH_MEMORY)
        except _Status:
            channel.next_block = 0  # any error abandons the request: the next one starts at block 0
            raise
        channel.request += command.data
        if command.p1 == STORE_DATA_MORE_BLOCKS:
            channel.next_block = block + 1
            return _sw(SW_OK)
        request = bytes(channel.request)
        channel.request.clear()
        channel.next_block = 0
        return self._reply(channel, command, self._isdr.handle(request), SW_OK)

    # --- everything else goes to the selected application ----------------------------------------

    def _to_application(self, channel: _Channel, command: Command) -> bytes:
        app = self._isdr_app if channel.selected is self._isdr_app else self._current_profile_app(channel)
        if app is None:  # nothing selected (or its profile was disabled): no one takes this INS
            raise _Status(SW_INS_NOT_SUPPORTED)
        data, sw = app.process(command)
        return self._reply(channel, command, data, sw)

    # --- applications of the enabled profile ------------------------------------------------------

    def _file_system_root(self) -> Application | None:
        return next((app for app in self._profile_apps() if app.aid is None), None)

    def _current_profile_app(self, channel: _Channel) -> Application | None:
        """The profile application selected on the channel, if the profile still exposes it."""
        selected = channel.selected
        if selected is None or selected is self._isdr_app:
            return None
        if any(app is selected for app in self._profile_apps()):
            return selected
        channel.selected = None  # its profile was disabled since: the application is gone
        return None

    def _deselect_all(self) -> None:
        for number, channel in self._channels.items():
            if channel.selected is not None:
                channel.selected.deselect(number)


def _require_class(command: Command, *, proprietary: bool) -> None:
    """SELECT and MANAGE CHANNEL are interindustry commands; STORE DATA and TERMINAL CAPABILITY
    use the GlobalPlatform / TS 102 221 class. GET RESPONSE accepts both (lpac sends '8X')."""
    if command.proprietary != proprietary:
        raise _Status(SW_CLA_NOT_SUPPORTED)
