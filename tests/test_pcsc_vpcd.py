"""The card side of vpcd's protocol: the sans-IO session, and the socket loop against a stand-in vpcd
on loopback (no pcscd needed: these always run)."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from euicc_sim.apdu import DEFAULT_ATR, Card
from euicc_sim.vpcd import (
    CTRL_ATR,
    CTRL_POWER_OFF,
    CTRL_POWER_ON,
    CTRL_RESET,
    NETNS_ENV,
    CardMute,
    VpcdCard,
    VpcdError,
    VpcdSession,
    frame,
    open_socket,
    resolve_netns,
)
from tests.pcsc_fixtures import ScriptedIsdr

OPEN = bytes.fromhex("0070000001")
TIMEOUT = 5.0


def control(code: int) -> bytes:
    return frame(bytes([code]))


def session() -> tuple[VpcdSession, Card]:
    card = Card(ScriptedIsdr())
    return VpcdSession(card), card


def test_frames_carry_a_big_endian_length():
    assert frame(b"\x01") == b"\x00\x01\x01"
    assert frame(bytes(300))[:2] == b"\x01\x2c"
    with pytest.raises(VpcdError):
        frame(bytes(0x10000))


def test_atr_is_answered_even_unpowered_as_vpcd_polls_presence():
    vpcd, card = session()
    assert vpcd.receive(control(CTRL_ATR)) == frame(DEFAULT_ATR)
    assert not vpcd.powered and card.open_channels == []


def test_power_on_then_apdus_get_one_answer_frame_each():
    vpcd, _card = session()
    assert vpcd.receive(control(CTRL_POWER_ON)) == b""  # power controls have no answer
    assert vpcd.receive(frame(OPEN) + frame(OPEN)) == frame(b"\x01\x90\x00") + frame(b"\x02\x90\x00")
    assert vpcd.apdus == 2


def test_reset_and_power_off_reach_the_card():
    vpcd, card = session()
    vpcd.receive(control(CTRL_POWER_ON) + frame(OPEN))
    assert card.open_channels == [0, 1]
    vpcd.receive(control(CTRL_RESET))
    assert card.open_channels == [0]  # a reset closes every logical channel
    vpcd.receive(control(CTRL_POWER_OFF))
    assert not vpcd.powered and card.open_channels == []


def test_an_apdu_to_an_unpowered_card_goes_unanswered():
    vpcd, _card = session()
    with pytest.raises(CardMute, match="unpowered"):
        vpcd.receive(frame(OPEN))


def test_unknown_controls_are_ignored_and_empty_frames_refused():
    vpcd, _card = session()
    assert vpcd.receive(control(9)) == b""
    with pytest.raises(VpcdError, match="empty frame"):
        vpcd.receive(frame(b""))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=12))
def test_any_split_of_the_byte_stream_gives_the_same_answers(cuts):
    stream = control(CTRL_POWER_ON) + control(CTRL_ATR) + frame(OPEN) + frame(bytes.fromhex("0070800100")) + frame(OPEN)
    expected = frame(DEFAULT_ATR) + frame(b"\x01\x90\x00") + frame(b"\x90\x00") + frame(b"\x01\x90\x00")
    vpcd, _card = session()
    answers, position = bytearray(), 0
    for cut in cuts:
        answers += vpcd.receive(stream[position : position + cut])
        position += cut
    answers += vpcd.receive(stream[position:])
    assert bytes(answers) == expected and not vpcd.pending


def test_namespace_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(NETNS_ENV, "")
    assert resolve_netns() is None  # explicitly: stay in this namespace
    monkeypatch.setenv(NETNS_ENV, str(tmp_path / "ns"))
    assert resolve_netns() == str(tmp_path / "ns")
    assert resolve_netns(None) is None
    assert resolve_netns("/run/netns/other") == "/run/netns/other"


def test_a_missing_namespace_says_how_to_create_it(tmp_path):
    with pytest.raises(VpcdError, match="pcscd-setup start"):
        open_socket(str(tmp_path / "no-such-namespace"))


class FakeVpcd:
    """vpcd's listening side on an ephemeral loopback port: accepts, sends frames, reads answers."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(TIMEOUT)
        self.port = self.server.getsockname()[1]

    def accept(self) -> socket.socket:
        conn, _ = self.server.accept()
        conn.settimeout(TIMEOUT)
        return conn

    @staticmethod
    def ask(conn: socket.socket, payload: bytes) -> bytes:
        conn.sendall(frame(payload))
        length = int.from_bytes(_read(conn, 2), "big")
        return _read(conn, length)

    def close(self) -> None:
        self.server.close()


def _read(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@pytest.fixture
def fake_vpcd():
    vpcd = FakeVpcd()
    yield vpcd
    vpcd.close()


def test_card_serves_over_tcp_and_reconnects_after_a_drop(fake_vpcd):
    card = Card(ScriptedIsdr())
    served = VpcdCard(card, port=fake_vpcd.port, netns=None, poll_interval=0.05, io_timeout=TIMEOUT).start()
    try:
        conn = fake_vpcd.accept()
        assert served.wait_connected(TIMEOUT)
        assert fake_vpcd.ask(conn, bytes([CTRL_ATR])) == DEFAULT_ATR
        conn.sendall(control(CTRL_POWER_ON))
        assert fake_vpcd.ask(conn, OPEN) == b"\x01\x90\x00"
        conn.close()  # vpcd drops the card: it reconnects, powered down like a removed card
        again = fake_vpcd.accept()
        assert card.open_channels == []
        again.sendall(control(CTRL_POWER_ON))
        assert fake_vpcd.ask(again, OPEN) == b"\x01\x90\x00"  # a fresh card: channel 1 again
        assert served.apdus == 2 and served.connections == 2
    finally:
        served.stop()
    assert again.recv(1) == b""  # stop() hung up
    assert not served.connected.is_set()


def test_a_frame_left_incomplete_drops_the_link(fake_vpcd):
    served = VpcdCard(Card(ScriptedIsdr()), port=fake_vpcd.port, netns=None, poll_interval=0.05,
                      io_timeout=0.3).start()
    try:
        conn = fake_vpcd.accept()
        conn.sendall(b"\x00\x05\x00")  # a length and one byte of five
        assert conn.recv(1) == b""  # the card gave up on the frame and hung up
        fake_vpcd.accept().close()  # and came back for the next one
    finally:
        served.stop()


def test_a_mute_card_hangs_up_instead_of_answering(fake_vpcd):
    served = VpcdCard(Card(ScriptedIsdr()), port=fake_vpcd.port, netns=None, poll_interval=0.05).start()
    try:
        conn = fake_vpcd.accept()
        conn.sendall(frame(OPEN))  # no power on first
        assert conn.recv(1) == b""
    finally:
        served.stop()


def test_stop_ends_the_thread_while_vpcd_is_unreachable():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    served = VpcdCard(Card(ScriptedIsdr()), port=port, netns=None, poll_interval=0.05).start()
    thread = served._thread
    served.stop()
    assert isinstance(thread, threading.Thread) and not thread.is_alive()
