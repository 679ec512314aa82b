"""The eUICC APDU layer against a fake ISD-R and fake profile applications (ISO 7816-4, SGP.22 5.7.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from euicc_sim.apdu import (
    DEFAULT_ATR,
    ISD_R_AID,
    Card,
    CardNotPowered,
    Command,
)
from rsp import tlv
from rsp.errors import ApduError, DecodeError

USIM_AID = bytes.fromhex("A0000000871002FFFFFFFF8907090000")
ISIM_AID = bytes.fromhex("A0000000871004FFFFFFFF8907090000")


class FakeIsdr:
    """Answers every ES10 request with ``respond(request)``; records what it was handed."""

    def __init__(self, respond=None):
        self.requests: list[bytes] = []
        self.respond = respond or (lambda request: b"\xbf\x2e\x02\x80\x00" + request)

    def handle(self, request: bytes) -> bytes:
        self.requests.append(request)
        return self.respond(request)


class FakeApp:
    """A profile application: answers SELECT with a small FCP and every command with its name."""

    def __init__(self, name: str, aid: bytes | None):
        self.name, self.aid = name, aid
        self.seen: list[Command] = []
        self.deselected: list[int] = []

    def select(self, command: Command) -> tuple[bytes, int]:
        self.seen.append(command)
        if command.p1 != 0x04 and command.data not in (b"\x3f\x00", b"\x2f\xe2", b"\x6f\x07"):
            return b"", 0x6A82
        return (b"" if command.p2 & 0x0C == 0x0C else b"\x62\x03\x82\x01\x38"), 0x9000

    def process(self, command: Command) -> tuple[bytes, int]:
        self.seen.append(command)
        return self.name.encode(), 0x9000

    def deselect(self, channel: int) -> None:
        self.deselected.append(channel)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def sw(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")


def make_card(isdr=None, apps=None, **kwargs) -> Card:
    card = Card(isdr or FakeIsdr(), profile_apps=(lambda: apps) if apps is not None else None, **kwargs)
    card.power_on()
    return card


def cla_for(channel: int, proprietary: bool = False) -> int:
    base = channel if channel < 4 else 0x40 | (channel - 4)
    return base | 0x80 if proprietary else base


def select_isdr(card: Card, channel: int = 0, p2: int = 0x00) -> bytes:
    return card.transmit(bytes([cla_for(channel), 0xA4, 0x04, p2, len(ISD_R_AID)]) + ISD_R_AID)


def store_data(card: Card, channel: int, p1: int, block: int, data: bytes, le: bool = False) -> bytes:
    header = bytes([cla_for(channel, proprietary=True), 0xE2, p1, block, len(data)])
    return card.transmit(header + data + (b"\x00" if le else b""))


def es10(card: Card, channel: int, request: bytes, block_size: int = 255) -> bytes:
    """Send one ES10 request in STORE DATA blocks and collect the answer through GET RESPONSE."""
    blocks = [request[i : i + block_size] for i in range(0, len(request), block_size)]
    for number, block in enumerate(blocks):
        last = number == len(blocks) - 1
        response = store_data(card, channel, 0x91 if last else 0x11, number, block)
        if not last:
            assert response == hx("9000")
    return collect(card, channel, response)


def collect(card: Card, channel: int, response: bytes) -> bytes:
    """Follow '61xx' with GET RESPONSE (Le = SW2, lpac's way) until '9000'."""
    data = b""
    while response[-2] == 0x61:
        data += response[:-2]
        response = card.transmit(bytes([cla_for(channel, True), 0xC0, 0x00, 0x00, response[-1]]))
    assert sw(response) == 0x9000, response.hex()
    return data + response[:-2]


def open_channel(card: Card) -> int:
    response = card.transmit(hx("00 70 00 00 01"))
    assert len(response) == 3 and response[1:] == hx("9000")
    return response[0]


# --- ATR and power ---------------------------------------------------------------------------------


def parse_atr(atr: bytes) -> dict:
    """ISO 7816-3 section 8: interface bytes, offered protocols, historical bytes, TCK check."""
    assert atr[0] == 0x3B  # direct convention
    y, k = atr[1] >> 4, atr[1] & 0x0F
    pos, protocols, interface = 2, [], []
    while True:
        for bit in (0x1, 0x2, 0x4):  # TA, TB, TC
            if y & bit:
                interface.append(atr[pos])
                pos += 1
        if not y & 0x8:
            break
        td = atr[pos]
        pos += 1
        protocols.append(td & 0x0F)
        y = td >> 4
    historical = atr[pos : pos + k]
    rest = atr[pos + k :]
    return {"protocols": protocols, "historical": historical, "rest": rest, "interface": interface}


def test_default_atr_offers_t0_first_with_a_correct_tck():
    parsed = parse_atr(DEFAULT_ATR)
    assert parsed["protocols"] == [0, 15]  # T=0 default, then global bytes
    assert len(parsed["historical"]) == 14 and parsed["historical"][0] == 0x80
    assert len(parsed["rest"]) == 1  # TCK present because T=15 is indicated
    xor = 0
    for byte in DEFAULT_ATR[1:]:
        xor ^= byte
    assert xor == 0
    assert len(DEFAULT_ATR) <= 33


def test_power_on_returns_the_atr_and_reset_closes_channels():
    resets = []
    card = Card(FakeIsdr(), on_reset=lambda: resets.append(1))
    with pytest.raises(CardNotPowered):
        card.transmit(hx("00 70 00 00 01"))
    assert card.power_on() == DEFAULT_ATR
    assert open_channel(card) == 1
    assert card.open_channels == [0, 1]
    assert card.reset() == DEFAULT_ATR
    assert card.open_channels == [0]
    assert card.transmit(hx("01 A4 04 00 10") + ISD_R_AID) == hx("6881")
    assert resets == [1, 1]
    card.power_off()
    with pytest.raises(CardNotPowered):
        card.transmit(hx("00 70 00 00 01"))


def test_custom_atr_is_returned():
    card = Card(FakeIsdr(), atr=hx("3B 00"))
    assert card.power_on() == hx("3B 00")


# --- SELECT of the ISD-R -------------------------------------------------------------------------------


@pytest.mark.parametrize("p2", [0x00, 0x04])
def test_select_isdr_returns_fci_through_get_response(p2):
    card = make_card()
    response = select_isdr(card, p2=p2)
    assert response[0] == 0x61 and len(response) == 2
    fci = tlv.parse_one(collect(card, 0, response))
    assert fci.tag == 0x6F
    inner = {item.tag: item for item in tlv.split(fci.value)}
    assert inner[0x84].value == ISD_R_AID
    assert tlv.parse_one(inner[0xA5].value).tag == 0x9F65
    assert tlv.parse_one(inner[0xA5].value).value == b"\xff"


def test_select_isdr_without_response_data():
    card = make_card()
    assert select_isdr(card, p2=0x0C) == hx("9000")
    assert card.transmit(hx("00 C0 00 00 00")) == hx("6985")  # nothing to fetch


def test_select_isdr_by_right_truncated_aid():
    isdr = FakeIsdr()
    card = make_card(isdr)
    assert card.transmit(hx("00 A4 04 0C 0C") + ISD_R_AID[:12]) == hx("9000")
    assert es10(card, 0, hx("BF2E00"))
    assert isdr.requests == [hx("BF2E00")]


@pytest.mark.parametrize(
    ("apdu", "expected"),
    [
        ("00 A4 04 00 10 A0000005591010FFFFFFFF8900000200", "6A82"),  # unknown AID
        ("00 A4 04 08 10 A0000005591010FFFFFFFF8900000100", "6A86"),  # FMD not offered
        ("00 A4 04 01 10 A0000005591010FFFFFFFF8900000100", "6A86"),  # last occurrence
        ("00 A4 04 4C 10 A0000005591010FFFFFFFF8900000100", "6A86"),  # termination of the ISD-R
        ("00 A4 05 00 02 3F00", "6A86"),  # P1 not a selection method
        ("00 A4 00 04 02 3F00", "6A82"),  # no profile enabled: no file system
        ("00 A4 04 00", "6700"),  # no DF name
        ("00 A4 04 00 00", "6700"),  # Le only
        ("00 A4 04 00 11" + "A0" * 17, "6700"),  # longer than a DF name
        ("80 A4 04 00 10 A0000005591010FFFFFFFF8900000100", "6E00"),  # SELECT is interindustry
    ],
)
def test_select_errors(apdu, expected):
    card = make_card()
    assert card.transmit(hx(apdu)) == hx(expected)


def test_next_occurrence_after_the_only_match_is_not_found():
    card = make_card()
    assert select_isdr(card, p2=0x0C) == hx("9000")
    assert card.transmit(hx("00 A4 04 0E 05 A000000559")) == hx("6A82")
    assert es10(card, 0, hx("BF2E00"))  # a failed SELECT keeps the current selection


# --- the lpac sequence, byte for byte --------------------------------------------------------------------


def test_lpac_pcsc_sequence():
    isdr = FakeIsdr(lambda request: hx("BF2E 12 8010") + bytes(range(16)))
    card = make_card(isdr)
    assert card.transmit(hx("80 AA 00 00 0A A9 08 81 00 82 01 01 83 01 07")) == hx("9000")
    assert card.transmit(hx("00 70 00 00 01")) == hx("01 9000")
    assert card.transmit(hx("01 A4 04 00 10") + ISD_R_AID) == hx("61 1A")
    assert card.transmit(hx("81 E2 91 00 03 BF 2E 00")) == hx("61 15")
    assert card.transmit(hx("81 C0 00 00 15")) == hx("BF2E 12 8010") + bytes(range(16)) + hx("9000")
    assert card.transmit(hx("00 70 80 01 00")) == hx("9000")
    assert card.open_channels == [0]
    assert isdr.requests == [hx("BF2E00")]


# --- STORE DATA (SGP.22 5.7.2) ---------------------------------------------------------------------------


def test_multi_block_request_is_reassembled_in_order():
    isdr = FakeIsdr(lambda request: hx("BF2D 03 A0 01 00"))
    card = make_card(isdr)
    select_isdr(card, p2=0x0C)
    request = tlv.encode_tlv(0xBF36, bytes(range(256)) * 3)
    assert es10(card, 0, request) == hx("BF2D 03 A0 01 00")
    assert isdr.requests == [request]


def test_intermediate_blocks_answer_9000_and_only_the_last_reaches_the_isdr():
    isdr = FakeIsdr()
    card = make_card(isdr)
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x11, 0, b"\xbf\x2e") == hx("9000")
    assert store_data(card, 0, 0x11, 1, b"\x01") == hx("9000")
    assert isdr.requests == []
    response = store_data(card, 0, 0x91, 2, b"\x00", le=True)  # case 4: still T=0 '61xx'
    assert response[0] == 0x61
    assert isdr.requests == [hx("BF2E0100")]


def test_out_of_sequence_block_is_refused_and_abandons_the_request():
    isdr = FakeIsdr()
    card = make_card(isdr)
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x11, 0, b"\xbf\x2e") == hx("9000")
    assert store_data(card, 0, 0x91, 2, b"\x00") == hx("6A86")  # block 1 skipped
    assert store_data(card, 0, 0x91, 1, b"\x00") == hx("6A86")  # the request was abandoned
    assert isdr.requests == []
    assert es10(card, 0, hx("BF2E00"))
    assert isdr.requests == [hx("BF2E00")]


def test_first_block_must_be_zero():
    card = make_card()
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x91, 1, hx("BF2E00")) == hx("6A86")


def test_block_zero_restarts_a_half_sent_request():
    isdr = FakeIsdr()
    card = make_card(isdr)
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x11, 0, b"\xde\xad") == hx("9000")
    assert es10(card, 0, hx("BF2E00"))
    assert isdr.requests == [hx("BF2E00")]


def test_more_blocks_after_block_255_cannot_follow():
    card = make_card()
    select_isdr(card, p2=0x0C)
    for block in range(255):
        assert store_data(card, 0, 0x11, block, b"\x00") == hx("9000")
    assert store_data(card, 0, 0x11, 255, b"\x00") == hx("6A84")


@pytest.mark.parametrize(
    ("apdu", "expected"),
    [
        ("80 E2 80 00 03 BF2E00", "6A86"),  # GlobalPlatform P1 without the BER-TLV structure bits
        ("80 E2 01 00 03 BF2E00", "6A86"),
        ("80 E2 91 00", "6700"),  # no data
        ("80 E2 91 00 00", "6700"),  # Le only
        ("00 E2 91 00 03 BF2E00", "6E00"),  # STORE DATA is a proprietary-class command
    ],
)
def test_store_data_errors(apdu, expected):
    isdr = FakeIsdr()
    card = make_card(isdr)
    select_isdr(card, p2=0x0C)
    assert card.transmit(hx(apdu)) == hx(expected)
    assert isdr.requests == []


def test_store_data_without_isdr_selected():
    isdr = FakeIsdr()
    card = make_card(isdr)
    assert store_data(card, 0, 0x91, 0, hx("BF2E00")) == hx("6985")
    channel = open_channel(card)
    select_isdr(card, channel, p2=0x0C)
    assert store_data(card, 0, 0x91, 0, hx("BF2E00")) == hx("6985")  # selected on another channel
    assert isdr.requests == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DecodeError("not a DER value"), "6A80"),
        (ApduError(0x6A88, "unknown ES10 function"), "6A88"),
        (ApduError(0x9000, "not an error status word"), "6F00"),
        (RuntimeError("bug"), "6F00"),
    ],
)
def test_isdr_errors_become_status_words(error, expected):
    failures = [error]

    def fail_once(request):
        if failures:
            raise failures.pop()
        return b"\x30\x00"

    card = make_card(FakeIsdr(fail_once))
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x91, 0, hx("BF2E00")) == hx(expected)
    assert es10(card, 0, hx("BF2E00")) == b"\x30\x00"  # the channel is clean afterwards


def test_empty_isdr_response_is_plain_9000():
    card = make_card(FakeIsdr(lambda request: b""))
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x91, 0, hx("BF2E00")) == hx("9000")


# --- GET RESPONSE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 255, 256, 257, 4096, 9000])
def test_long_responses_through_get_response_le_00(size):
    answer = bytes(i % 251 for i in range(size))
    card = make_card(FakeIsdr(lambda request: answer))
    select_isdr(card, p2=0x0C)
    response = store_data(card, 0, 0x91, 0, hx("BF2D00"))
    assert response == bytes([0x61, size if size < 256 else 0])
    received = b""
    while response[-2] == 0x61:
        response = card.transmit(hx("80 C0 00 00 00"))
        received += response[:-2]
        assert len(response) - 2 <= 256
    assert response[-2:] == hx("9000")
    assert received == answer


def test_long_response_with_lpac_style_le():
    answer = bytes(range(256)) * 20
    card = make_card(FakeIsdr(lambda request: answer))
    select_isdr(card, p2=0x0C)
    assert es10(card, 0, hx("BF2D00")) == answer


def test_get_response_smaller_le_leaves_the_rest_pending():
    card = make_card(FakeIsdr(lambda request: bytes(range(100))))
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x91, 0, hx("BF2D00")) == hx("6164")
    assert card.transmit(hx("80 C0 00 00 10")) == bytes(range(16)) + hx("6154")
    assert card.transmit(hx("00 C0 00 00 54")) == bytes(range(16, 100)) + hx("9000")


def test_get_response_le_too_large_answers_6cxx_and_keeps_the_data():
    card = make_card(FakeIsdr(lambda request: bytes(range(20))))
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x91, 0, hx("BF2D00")) == hx("6114")
    assert card.transmit(hx("80 C0 00 00 30")) == hx("6C14")
    assert card.transmit(hx("80 C0 00 00 14")) == bytes(range(20)) + hx("9000")


def test_get_response_errors_keep_the_pending_data():
    card = make_card(FakeIsdr(lambda request: b"\x01\x02"))
    select_isdr(card, p2=0x0C)
    assert store_data(card, 0, 0x91, 0, hx("BF2D00")) == hx("6102")
    assert card.transmit(hx("80 C0 01 00 02")) == hx("6A86")
    assert card.transmit(hx("80 C0 00 00 01 00")) == hx("6700")
    assert card.transmit(hx("80 C0 00 00")) == hx("0102 9000")  # no Le: as T=0's P3 '00' = 256
    assert card.transmit(hx("80 C0 00 00 00")) == hx("6985")


def test_another_command_discards_the_pending_response():
    card = make_card()
    assert select_isdr(card)[0] == 0x61
    assert card.transmit(hx("80 AA 00 00 03 A9 01 00")) == hx("9000")
    assert card.transmit(hx("00 C0 00 00 00")) == hx("6985")


def test_get_response_uses_the_channel_of_its_cla():
    card = make_card(FakeIsdr(lambda request: b"\xaa" * 10))
    one, two = open_channel(card), open_channel(card)
    select_isdr(card, one, p2=0x0C)
    assert store_data(card, one, 0x91, 0, hx("BF2D00")) == hx("610A")
    assert card.transmit(bytes([cla_for(two, True), 0xC0, 0, 0, 0x0A])) == hx("6985")
    assert card.transmit(bytes([cla_for(0, True), 0xC0, 0, 0, 0x0A])) == hx("6985")
    assert card.transmit(bytes([cla_for(one, True), 0xC0, 0, 0, 0x0A])) == b"\xaa" * 10 + hx("9000")


# --- MANAGE CHANNEL and logical channels -----------------------------------------------------------------


def test_manage_channel_open_and_close_exact_responses():
    card = make_card()
    for expected in range(1, 20):
        assert card.transmit(hx("00 70 00 00 01")) == bytes([expected]) + hx("9000")
    assert card.transmit(hx("00 70 00 00 01")) == hx("6A81")  # all 19 in use
    assert card.transmit(hx("00 70 80 05 00")) == hx("9000")
    assert card.transmit(hx("00 70 00 00 01")) == hx("05 9000")  # the lowest free number again
    assert card.transmit(hx("00 70 80 13")) == hx("9000")
    assert card.transmit(bytes([cla_for(19), 0xA4, 0x04, 0x0C, 0x10]) + ISD_R_AID) == hx("6881")


def test_manage_channel_variants():
    card = make_card()
    assert card.transmit(hx("00 70 00 00")) == hx("01 9000")  # case 1 still answers the number
    assert card.transmit(hx("00 70 00 00 00")) == hx("02 9000")  # Le '00'
    assert card.transmit(hx("00 70 00 07")) == hx("9000")  # the terminal picks 7
    assert card.open_channels == [0, 1, 2, 7]
    assert card.transmit(hx("00 70 00 07")) == hx("6A81")  # already open
    assert card.transmit(hx("43 70 80 00")) == hx("9000")  # P2 '00': close the channel of CLA
    assert card.open_channels == [0, 1, 2]


@pytest.mark.parametrize(
    ("apdu", "expected"),
    [
        ("00 70 80 00", "6A86"),  # the basic channel is never closed
        ("00 70 80 03", "6881"),  # not open
        ("00 70 80 14", "6A86"),  # no channel 20
        ("00 70 00 14", "6A86"),
        ("00 70 40 00 01", "6A86"),
        ("00 70 00 00 01 00", "6700"),
        ("80 70 00 00 01", "6E00"),
        ("03 70 00 00 01", "6881"),  # opening from a channel that is not open
    ],
)
def test_manage_channel_errors(apdu, expected):
    card = make_card()
    assert card.transmit(hx(apdu)) == hx(expected)
    assert card.open_channels == [0]


def test_further_interindustry_channels():
    isdr = FakeIsdr()
    card = make_card(isdr)
    for _ in range(6):
        open_channel(card)
    assert card.transmit(hx("41 A4 04 0C 10") + ISD_R_AID) == hx("9000")  # channel 5
    assert es10(card, 5, hx("BF2E00"))
    assert card.transmit(hx("C1 E2 91 00 03 BF2E00"))[0] == 0x61  # proprietary further class
    assert card.transmit(hx("C1 C0 00 00 00"))[-2:] == hx("9000")
    assert isdr.requests == [hx("BF2E00"), hx("BF2E00")]


def test_channels_keep_separate_store_data_state():
    isdr = FakeIsdr(lambda request: b"")
    card = make_card(isdr)
    one, two = open_channel(card), open_channel(card)
    select_isdr(card, one, p2=0x0C)
    select_isdr(card, two, p2=0x0C)
    assert store_data(card, one, 0x11, 0, b"\xbf\x22") == hx("9000")
    assert store_data(card, two, 0x11, 0, b"\xbf\x2e") == hx("9000")
    assert store_data(card, one, 0x91, 1, b"\x00") == hx("9000")
    assert store_data(card, two, 0x91, 1, b"\x00") == hx("9000")
    assert isdr.requests == [hx("BF2200"), hx("BF2E00")]


def test_closing_a_channel_forgets_its_state():
    isdr = FakeIsdr()
    card = make_card(isdr)
    channel = open_channel(card)
    select_isdr(card, channel, p2=0x0C)
    assert store_data(card, channel, 0x11, 0, b"\xbf\x2e") == hx("9000")
    assert card.transmit(bytes([0x00, 0x70, 0x80, channel])) == hx("9000")
    assert open_channel(card) == channel
    assert store_data(card, channel, 0x91, 1, b"\x00") == hx("6985")  # nothing selected now
    select_isdr(card, channel, p2=0x0C)
    assert store_data(card, channel, 0x91, 1, b"\x00") == hx("6A86")  # and no half request


def test_channel_opened_from_a_channel_inherits_its_selection():
    isdr = FakeIsdr()
    card = make_card(isdr)
    one = open_channel(card)
    select_isdr(card, one, p2=0x0C)
    response = card.transmit(bytes([cla_for(one), 0x70, 0x00, 0x00, 0x01]))
    two = response[0]
    assert response[1:] == hx("9000")
    assert es10(card, two, hx("BF2E00"))
    assert isdr.requests == [hx("BF2E00")]


# --- every other error status word ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apdu", "expected"),
    [
        ("", "6700"),
        ("00", "6700"),
        ("00 A4 04", "6700"),
        ("00 A4 04 00 05 A0 00", "6700"),  # Lc larger than the data
        ("00 A4 04 00 01 A0 00 00 00", "6700"),  # Lc smaller than the data
        ("00 A4 04 00 00 00 10" + "A0" * 16, "6700"),  # extended length is not offered
        ("A0 A4 00 00 02 3F00", "6E00"),  # GSM class
        ("FF A4 04 00 01 A0", "6E00"),  # PPS
        ("20 A4 04 00 01 A0", "6E00"),  # RFU class
        ("04 A4 04 00 01 A0", "6882"),  # secure messaging
        ("0C A4 04 00 01 A0", "6882"),
        ("60 A4 04 00 01 A0", "6882"),  # further class with secure messaging
        ("84 E2 91 00 03 BF2E00", "6882"),
        ("10 A4 04 00 01 A0", "6884"),  # command chaining
        ("50 A4 04 00 01 A0", "6884"),
        ("01 A4 04 00 01 A0", "6881"),  # channel 1 not open
        ("4F A4 04 00 01 A0", "6881"),  # channel 19 not open
        ("00 60 00 00", "6D00"),  # invalid INS (T=0 procedure byte)
        ("00 9F 00 00", "6D00"),
        ("00 B0 00 00 00", "6D00"),  # READ BINARY with nothing selected
        ("80 AA 00 00 03 A9 05 00", "6A80"),  # terminal capability that is not BER-TLV
        ("80 AA 00 01 03 A9 01 00", "6A86"),
        ("80 AA 00 00", "6700"),
        ("00 AA 00 00 03 A9 01 00", "6E00"),
    ],
)
def test_error_status_words(apdu, expected):
    card = make_card()
    assert card.transmit(hx(apdu)) == hx(expected)


def test_other_instructions_to_the_isdr_are_not_supported():
    card = make_card()
    select_isdr(card, p2=0x0C)
    assert card.transmit(hx("80 CA 00 5A 00")) == hx("6D00")


def test_trace_sees_every_command_and_response():
    seen = []
    card = make_card(trace=lambda command, response: seen.append((command, response)))
    card.transmit(hx("00 70 00 00 01"))
    card.transmit(hx("FF"))
    assert seen == [(hx("00 70 00 00 01"), hx("01 9000")), (hx("FF"), hx("6700"))]


# --- profile applications (the enabled profile's file system and ADFs) -------------------------------------


def profile_apps():
    return [FakeApp("mf", None), FakeApp("usim", USIM_AID), FakeApp("isim", ISIM_AID)]


def test_mf_is_selected_on_the_basic_channel_at_power_on():
    mf, usim, isim = apps = profile_apps()
    card = make_card(apps=apps)
    assert card.transmit(hx("00 B0 00 00 02")) == b"mf" + hx("9000")
    assert mf.seen[-1].ins == 0xB0 and mf.seen[-1].channel == 0


def test_select_adf_by_aid_and_commands_reach_it():
    mf, usim, isim = apps = profile_apps()
    card = make_card(apps=apps)
    assert card.transmit(hx("00 A4 04 04 10") + USIM_AID) == hx("6105")
    assert card.transmit(hx("00 C0 00 00 05")) == hx("62 03 82 01 38 9000")
    assert card.transmit(hx("00 88 00 81 03 010203 00"))[:-2] == b""  # case 4 -> '61xx'
    assert card.transmit(hx("00 C0 00 00 04")) == b"usim" + hx("9000")
    assert mf.deselected == [0]
    assert [c.ins for c in usim.seen] == [0xA4, 0x88]


def test_partial_aid_selects_the_first_match_and_next_occurrence_the_following():
    mf, usim, isim = apps = profile_apps()
    card = make_card(apps=apps)
    assert card.transmit(hx("00 A4 04 0C 07 A0000000871002")) == hx("9000")
    assert card.transmit(hx("00 B0 00 00 00")) == b"usim" + hx("9000")
    assert card.transmit(hx("00 A4 04 0C 05 A000000087")) == hx("9000")  # first: USIM again
    assert card.transmit(hx("00 A4 04 0E 05 A000000087")) == hx("9000")  # next: ISIM
    assert card.transmit(hx("00 B0 00 00 00")) == b"isim" + hx("9000")
    assert card.transmit(hx("00 A4 04 0E 05 A000000087")) == hx("6A82")  # none after ISIM


def test_fid_select_goes_to_the_current_application_or_the_mf():
    mf, usim, isim = apps = profile_apps()
    card = make_card(apps=apps)
    assert card.transmit(hx("00 A4 00 0C 02 2FE2")) == hx("9000")
    assert mf.seen[-1].data == hx("2FE2")
    assert card.transmit(hx("00 A4 04 0C 10") + USIM_AID) == hx("9000")
    assert card.transmit(hx("00 A4 00 0C 02 6F07")) == hx("9000")
    assert usim.seen[-1].data == hx("6F07")
    assert card.transmit(hx("00 A4 00 0C 02 7F99")) == hx("6A82")  # the app's own status word
    select_isdr(card, p2=0x0C)
    assert card.transmit(hx("00 A4 00 0C 02 3F00")) == hx("9000")  # from the ISD-R: to the MF
    assert mf.seen[-1].data == hx("3F00")


def test_isdr_and_usim_on_separate_channels():
    isdr = FakeIsdr()
    mf, usim, isim = apps = profile_apps()
    card = make_card(isdr, apps=apps)
    assert card.transmit(hx("00 A4 04 0C 10") + USIM_AID) == hx("9000")
    channel = open_channel(card)
    select_isdr(card, channel, p2=0x0C)
    assert es10(card, channel, hx("BF2E00"))
    assert card.transmit(hx("00 B0 00 00 00")) == b"usim" + hx("9000")
    assert store_data(card, 0, 0x91, 0, hx("BF2E00")) == hx("6985")  # not on the USIM's channel


def test_new_channel_from_the_basic_channel_starts_at_the_mf():
    mf, usim, isim = apps = profile_apps()
    card = make_card(apps=apps)
    card.transmit(hx("00 A4 04 0C 10") + USIM_AID)
    channel = open_channel(card)
    assert card.transmit(bytes([cla_for(channel), 0xB0, 0, 0, 0])) == b"mf" + hx("9000")


def test_deselect_on_close_reset_and_termination():
    mf, usim, isim = apps = profile_apps()
    card = make_card(apps=apps)
    channel = open_channel(card)
    card.transmit(bytes([cla_for(channel), 0xA4, 0x04, 0x0C, 0x10]) + USIM_AID)
    card.transmit(bytes([0x00, 0x70, 0x80, channel]))
    assert usim.deselected == [channel]
    card.transmit(hx("00 A4 04 0C 10") + ISIM_AID)
    card.transmit(hx("00 A4 04 4C 10") + ISIM_AID)  # terminate the ISIM session
    assert isim.deselected == [0]
    assert card.transmit(hx("00 B0 00 00 00")) == hx("6D00")  # nothing selected any more
    card.transmit(hx("00 A4 04 0C 10") + USIM_AID)
    card.reset()
    assert usim.deselected == [channel, 0]


def test_disabled_profile_applications_are_gone():
    apps = profile_apps()
    enabled = {"apps": apps}
    card = Card(FakeIsdr(), profile_apps=lambda: enabled["apps"])
    card.power_on()
    assert card.transmit(hx("00 A4 04 0C 10") + USIM_AID) == hx("9000")
    enabled["apps"] = []  # the ISD-R disabled the profile
    assert card.transmit(hx("00 B0 00 00 00")) == hx("6D00")
    assert card.transmit(hx("00 A4 04 0C 10") + USIM_AID) == hx("6A82")
    assert card.transmit(hx("00 A4 00 0C 02 3F00")) == hx("6A82")


def test_profile_app_hook_failure_is_an_internal_error():
    calls = {"n": 0}

    def broken():
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("profile store unavailable")
        return []

    card = Card(FakeIsdr(), profile_apps=broken)
    card.power_on()
    assert card.transmit(hx("00 A4 04 0C 10") + USIM_AID) == hx("6F00")


def test_application_status_word_that_is_not_one_is_an_internal_error():
    mf = FakeApp("mf", None)
    mf.process = lambda command: (b"", 0x6101)
    card = make_card(apps=[mf])
    assert card.transmit(hx("00 B0 00 00 00")) == hx("6F00")


# --- no input makes it raise --------------------------------------------------------------------------------

VALID_SW1 = set(range(0x61, 0x70)) | set(range(0x90, 0xA0))


def assert_well_formed(response: bytes) -> None:
    assert isinstance(response, bytes) and len(response) >= 2
    assert response[-2] in VALID_SW1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(apdu):
    card = make_card(apps=profile_apps())
    assert_well_formed(card.transmit(apdu))


header_bytes = st.builds(
    bytes,
    st.tuples(
        st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x40, 0x41, 0x80, 0x81, 0xC0, 0xC1, 0xA0, 0xFF]),
        st.sampled_from([0xA4, 0x70, 0xC0, 0xE2, 0xAA, 0xB0, 0xF2, 0x88, 0x60]),
        st.sampled_from([0x00, 0x04, 0x11, 0x91, 0x80, 0x01]),
        st.integers(0, 3) | st.integers(0, 255),
    ),
)
plausible_apdus = st.one_of(
    st.binary(max_size=40),
    st.tuples(header_bytes, st.binary(max_size=20)).map(lambda t: t[0] + bytes([len(t[1])]) + t[1]),
    st.tuples(header_bytes, st.binary(min_size=1, max_size=20)).map(
        lambda t: t[0] + bytes([len(t[1])]) + t[1] + b"\x00"
    ),
    st.just(bytes([0x00, 0xA4, 0x04, 0x00, 0x10]) + ISD_R_AID),
    st.just(hx("00 70 00 00 01")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(plausible_apdus, max_size=30))
def test_random_command_sequences_never_raise(apdus):
    card = make_card(FakeIsdr(lambda request: request * 40), apps=profile_apps())
    for apdu in apdus:
        assert_well_formed(card.transmit(apdu))
