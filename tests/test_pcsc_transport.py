"""The PC/SC transport through the real stack: pyscard -> pcscd -> vpcd -> the software eUICC.

Marked ``pcsc``: these skip, saying how to enable them, without `scripts/pcscd-setup start`.
Reader choice and the no-service error need no pcscd and always run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from euicc_sim.apdu import DEFAULT_ATR, Card
from lpa.es10 import ApduExchange, Es10Client
from lpa.pcsc import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    PcscError,
    PcscServiceError,
    PcscTransport,
    SharingViolationError,
    choose_reader,
    list_readers,
)
from lpa.transport import CardTransport, TransportError
from rsp.errors import ApduError, KinsimError
from rsp.ids import iccid_from_bcd
from tests.pcsc_fixtures import (
    EID,
    PROFILES,
    READERS,
    ROOT,
    CardProcess,
    ScriptedIsdr,
    inserted,
    profile_iccid,
    require_pcsc,
    scripted_card,
)

pcsc = pytest.mark.pcsc
GET_EID = bytes.fromhex("BF3E035C015A")


@pytest.fixture
def virtual_reader() -> str:
    """vpcd slot 0's reader; skips the test when pcscd with the virtual reader is not running."""
    require_pcsc()
    return READERS[0]


def store_data_apdus(transport, channel: int, request: bytes) -> bytes:
    """One ES10 request as a single STORE DATA block, the raw answer (no GET RESPONSE)."""
    return transport.transmit(bytes([0x80 | channel, 0xE2, 0x91, 0x00, len(request)]) + request)


# --- no pcscd needed ------------------------------------------------------------------------------


def test_choose_reader_by_index_name_or_unique_part():
    readers = ["Gemalto USB Reader 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert choose_reader(readers) == readers[0]
    assert choose_reader(readers, 1) == readers[1]
    assert choose_reader(readers, "2") == readers[2]
    assert choose_reader(readers, "Virtual PCD 00 01") == readers[2]
    assert choose_reader(readers, "gemalto") == readers[0]


@pytest.mark.parametrize("selector, problem", [
    ("3", "there is no reader 3"),
    (-1, "there is no reader -1"),
    ("Virtual PCD", "matches several readers"),
    ("Omnikey", "matches no reader"),
])
def test_choose_reader_refuses_what_names_no_single_reader(selector, problem):
    readers = ["Gemalto USB Reader 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"]
    with pytest.raises(NoReaderError, match=problem) as caught:
        choose_reader(readers, selector)
    assert "1: Virtual PCD 00 00" in str(caught.value)  # the message lists what there is


def test_no_reader_at_all_says_how_to_get_one():
    with pytest.raises(NoReaderError, match="pcscd-setup start"):
        choose_reader([], 0)


def test_without_pcscd_the_error_says_how_to_start_it(tmp_path):
    # libpcsclite takes its socket path from PCSCLITE_CSOCK_NAME once per process: use a child.
    code = ("from lpa.pcsc import list_readers, PcscServiceError\n"
            "try:\n    list_readers()\nexcept PcscServiceError as exc:\n    print(type(exc).__name__, exc)\n")
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "absent.comm"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("PcscServiceError"), result.stdout + result.stderr
    assert "pcscd-setup start" in result.stdout
    assert issubclass(PcscServiceError, TransportError) and issubclass(TransportError, KinsimError)


# --- through pcscd --------------------------------------------------------------------------------


@pcsc
def test_virtual_readers_are_listed(virtual_reader):
    assert set(READERS) <= set(list_readers())


@pcsc
def test_connect_sees_the_atr_and_uses_t0(virtual_reader):
    with inserted(scripted_card()), PcscTransport(virtual_reader) as transport:
        assert isinstance(transport, CardTransport)
        assert transport.atr == DEFAULT_ATR
        assert transport.protocol == "T0"  # the ATR offers T=0 only, the protocol lpac asks for
        assert transport.status().reader == virtual_reader


@pcsc
def test_asking_for_t1_only_fails_clearly(virtual_reader):
    with inserted(scripted_card()), pytest.raises(PcscError, match="does not offer the requested protocol"):
        PcscTransport(virtual_reader, protocol="T1")


@pcsc
def test_manage_channel_answers_exactly_the_channel_and_9000(virtual_reader):
    with inserted(scripted_card()), PcscTransport(virtual_reader) as transport:
        opened = [transport.transmit(bytes.fromhex("0070000001")) for _ in range(3)]
        assert opened == [b"\x01\x90\x00", b"\x02\x90\x00", b"\x03\x90\x00"]  # lpac wants 3 bytes exactly
        assert transport.transmit(bytes.fromhex("0070800200")) == b"\x90\x00"  # lpac's close carries Le
        assert transport.transmit(bytes.fromhex("0070800200")) == b"\x68\x81"  # already closed
        assert transport.transmit(bytes.fromhex("0070000001")) == b"\x02\x90\x00"  # reused


@pcsc
def test_select_isdr_and_get_eid_over_es10(virtual_reader):
    isdr = ScriptedIsdr()
    with inserted(Card(isdr)), PcscTransport(virtual_reader) as transport, Es10Client(transport) as es10:
        assert es10.channel == 1
        assert es10.get_eid() == EID
    assert isdr.requests == [GET_EID]


@pcsc
def test_a_card_without_the_chosen_isdr_is_refused_and_left_clean(virtual_reader):
    other_aid = bytes.fromhex("A0000005591010FFFFFFFF8900000200")  # what some removable eUICCs use
    with inserted(scripted_card()), PcscTransport(virtual_reader) as transport:
        with pytest.raises(ApduError, match="no ISD-R A0000005591010FFFFFFFF8900000200"):
            Es10Client(transport, aid=other_aid).open()
        assert transport.transmit(bytes.fromhex("0070000001")) == b"\x01\x90\x00"  # its channel was closed


@pcsc
def test_long_response_arrives_through_61xx_and_get_response_on_the_channel(virtual_reader):
    trace: list[ApduExchange] = []
    with inserted(scripted_card()), PcscTransport(virtual_reader) as transport, \
            Es10Client(transport, trace=trace.append) as es10, es10.measure() as counters:
        profiles = es10.get_profiles_info()
    assert [iccid_from_bcd(p["iccid"].native) for p in profiles] == [profile_iccid(n) for n in range(PROFILES)]
    start = next(i for i, x in enumerate(trace) if x.command[1] == 0xE2)  # after channel and SELECT
    store, *get_responses, close = trace[start:]
    assert close.command[:3] == b"\x00\x70\x80"  # the client closed its channel on the way out
    assert store.command[:2] == b"\x81\xe2" and store.sw >> 8 == 0x61 and not store.data
    assert len(get_responses) >= 5  # the response spans several 256-byte chunks
    assert all(x.command[:2] == b"\x01\xc0" for x in get_responses)  # GET RESPONSE keeps channel 1
    assert [x.sw >> 8 for x in get_responses] == [0x61] * (len(get_responses) - 1) + [0x90]
    assert counters.apdus == 1 + len(get_responses)
    assert counters.bytes_received == sum(len(x.data) + 2 for x in [store, *get_responses])


@pcsc
def test_get_response_in_pieces_and_6cxx_for_too_long_le(virtual_reader):
    with inserted(scripted_card()), PcscTransport(virtual_reader) as transport:
        transport.transmit(bytes.fromhex("0070000001"))
        select = transport.transmit(bytes.fromhex("01A4040010A0000005591010FFFFFFFF8900000100"))
        assert select[-2] == 0x61  # the FCI waits for GET RESPONSE (T=0)
        first = store_data_apdus(transport, 1, GET_EID)
        assert first == bytes([0x61, 21])  # 'BF3E 12 5A 10' + 16-byte EID: data only via GET RESPONSE
        head = transport.transmit(bytes.fromhex("01C0000005"))
        assert head == bytes.fromhex("BF3E125A10") + bytes([0x61, 16])  # 16 bytes still pending
        assert transport.transmit(bytes.fromhex("01C0000020")) == bytes([0x6C, 16])  # exact count
        tail = transport.transmit(bytes.fromhex("01C0000010"))
        assert tail[-2:] == b"\x90\x00" and len(tail) == 18


@pcsc
def test_es10_blocks_of_a_chosen_size(virtual_reader):
    isdr = ScriptedIsdr()
    trace: list[ApduExchange] = []
    with inserted(Card(isdr)), PcscTransport(virtual_reader) as transport, \
            Es10Client(transport, block_size=16, trace=trace.append) as es10:
        es10.set_nickname(profile_iccid(1), "grandma's phone, second line")
    request = isdr.requests[0]
    stores = [x for x in trace if x.command[1] == 0xE2]
    assert len(stores) == -(-len(request) // 16)
    assert [x.command[3] for x in stores] == list(range(len(stores)))  # P2 = block number
    assert [x.command[2] for x in stores] == [0x11] * (len(stores) - 1) + [0x91]
    assert b"".join(x.command[5 : 5 + x.command[4]] for x in stores) == request


@pcsc
def test_an_empty_reader_is_no_card(virtual_reader):
    with pytest.raises(NoCardError, match="kinsim euicc serve"):
        PcscTransport(READERS[1])


@pcsc
def test_a_second_program_meets_a_sharing_violation(virtual_reader):
    with inserted(scripted_card()), PcscTransport(virtual_reader) as first:
        with pytest.raises(SharingViolationError, match="another program"):
            PcscTransport(virtual_reader)
        assert first.transmit(bytes.fromhex("0070000001")) == b"\x01\x90\x00"  # the first is unharmed


@pcsc
def test_shared_connections_coexist(virtual_reader):
    with inserted(scripted_card()), PcscTransport(virtual_reader, exclusive=False) as one, \
            PcscTransport(virtual_reader, exclusive=False) as two:
        assert one.transmit(bytes.fromhex("0070000001")) == b"\x01\x90\x00"
        assert two.transmit(bytes.fromhex("0070000001")) == b"\x02\x90\x00"


@pcsc
def test_card_removed_mid_request_then_the_next_run_works(virtual_reader):
    with CardProcess() as card:
        card.insert()
        transport = PcscTransport(virtual_reader)
        es10 = Es10Client(transport).open()
        first_block = bytes([0x81, 0xE2, 0x11, 0x00, 3]) + GET_EID[:3]  # more blocks would follow
        assert transport.transmit(first_block) == b"\x90\x00"
        card.remove()
        with pytest.raises(CardRemovedError, match="put it back"):
            transport.transmit(bytes([0x81, 0xE2, 0x91, 0x01, 3]) + GET_EID[3:])
        es10.close()  # closing the channel of a vanished card is quiet
        transport.close()
        card.insert()  # the card is back: a new run starts from a reset
        with PcscTransport(virtual_reader) as again, Es10Client(again) as es10:
            assert es10.get_eid() == EID


@pcsc
def test_closed_transport_refuses_apdus(virtual_reader):
    with inserted(scripted_card()):
        transport = PcscTransport(virtual_reader)
        transport.close()
        transport.close()  # twice is fine
        with pytest.raises(TransportError, match="closed"):
            transport.transmit(bytes.fromhex("0070000001"))


@pcsc
@pytest.mark.skipif(shutil.which("pcsc_scan") is None, reason="pcsc_scan (pcsc-tools) is not installed")
def test_pcsc_scan_shows_the_card(virtual_reader):
    with inserted(scripted_card()):
        result = subprocess.run(["pcsc_scan", "-n", "-t", "1"], capture_output=True, text=True, timeout=30)
    assert virtual_reader in result.stdout
    assert " ".join(f"{b:02X}" for b in DEFAULT_ATR) in result.stdout
