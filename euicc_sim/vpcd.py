"""The software eUICC in a PC/SC reader: the card side of vsmartcard's vpcd protocol.

vpcd is the IFD handler of the Debian package vsmartcard-vpcd, loaded by pcscd. With a DEVICENAME of
``/dev/null:PORT`` it listens on TCP port PORT (one more port per further slot) and a virtual card
connects to it; every PC/SC program then sees the card in the reader "Virtual PCD 00 00".

The protocol, as vpcd speaks it: each message is a frame of a 2-byte big-endian length followed by
that many bytes. A 1-byte frame is a control: 0 power off, 1 power on, 2 reset (no answer to any of
the three), 4 "send your ATR" (answered with a frame holding the ATR; vpcd asks it to poll for card
presence, powered or not). Any longer frame is a command APDU, answered with one frame holding the
response APDU. vpcd treats a closed connection as a removed card and a new connection as an
inserted one.

``VpcdSession`` is that protocol without I/O; ``VpcdCard`` runs it over a socket in a thread,
reconnecting whenever vpcd drops the link, until stopped.

Loopback only: the vpcd that ``scripts/pcscd-setup`` starts lives in its own network namespace
(``DEFAULT_NETNS``), where its listening socket is reachable from that namespace's loopback only.
``VpcdCard`` joins that namespace for the one socket it opens (setns on its own thread, then back),
which needs root (CAP_SYS_ADMIN), as starting pcscd does.

Latency: vpcd (3.3) writes each frame with two send() calls, the 2-byte length and then the
payload, on a socket without TCP_NODELAY. Nagle's algorithm holds the payload until the length is
ACKed, and Linux delays that ACK (about 40 ms) because the card has nothing to send yet: one stall per
APDU, whatever the card does with TCP_NODELAY on its own socket. TCP_QUICKACK makes the card ACK at
once, but Linux is not bound to keep it set, so it is re-armed after every read (bench/vpcd_quickack.py
measures the difference: about 44 ms per APDU without it, a tenth of a millisecond with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable

from euicc_sim.apdu import Card
from rsp.errors import KinsimError

_log = logging.getLogger(__name__)

VPCD_PORT = 0x8C7B  # 35963: vpcd's default port (slot 0)
VPCD_HOST = "127.0.0.1"
DEFAULT_NETNS = "/run/netns/kinsim-vpcd"  # created by scripts/pcscd-setup
NETNS_ENV = "KINSIM_VPCD_NETNS"  # overrides DEFAULT_NETNS; empty = stay in this namespace

CTRL_POWER_OFF = 0
CTRL_POWER_ON = 1
CTRL_RESET = 2
CTRL_ATR = 4

_CLONE_NEWNET = 0x40000000


class VpcdError(KinsimError):
    """The virtual card could not reach vpcd (namespace, socket) or vpcd broke the protocol."""


class CardMute(VpcdError):
    """vpcd sent an APDU to the card while it was not powered: a real card stays silent."""


def frame(payload: bytes) -> bytes:
    """One vpcd frame: 2-byte big-endian length, then the payload."""
    if len(payload) > 0xFFFF:
        raise VpcdError(f"a vpcd frame holds at most 65535 bytes, not {len(payload)}")
    return len(payload).to_bytes(2, "big") + payload


class VpcdSession:
    """The card side of one vpcd connection, without I/O: ``reply = session.receive(bytes_from_vpcd)``.

    Bytes may arrive in any split; complete frames are handled in order and their answers returned
    concatenated (often empty: power controls have no answer). ``trace`` sees each APDU and answer.
    """

    def __init__(self, card: Card, trace: Callable[[bytes, bytes], None] | None = None):
        self._card = card
        self._buffer = bytearray()
        self._trace = trace
        self.powered = False
        self.apdus = 0

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while (payload := self._next_frame()) is not None:
            out += self._handle(payload)
        return bytes(out)

    @property
    def pending(self) -> bool:
        """True while part of a frame has arrived and the rest has not."""
        return bool(self._buffer)

    def _next_frame(self) -> bytes | None:
        if len(self._buffer) < 2:
            return None
        length = int.from_bytes(self._buffer[:2], "big")
        if len(self._buffer) < 2 + length:
            return None
        payload = bytes(self._buffer[2 : 2 + length])
        del self._buffer[: 2 + length]
        return payload

    def _handle(self, payload: bytes) -> bytes:
        if len(payload) == 1:
            return self._control(payload[0])
        if not payload:
            raise VpcdError("vpcd sent an empty frame")
        if not self.powered:
            raise CardMute(f"APDU {payload.hex().upper()} sent to an unpowered card")
        response = self._card.transmit(payload)
        self.apdus += 1
        if self._trace:
            self._trace(payload, response)
        return frame(response)

    def _control(self, code: int) -> bytes:
        if code == CTRL_ATR:
            return frame(self._card.atr)
        if code == CTRL_POWER_ON:
            self._card.power_on()
            self.powered = True
        elif code == CTRL_RESET:
            self._card.reset()
            self.powered = True
        elif code == CTRL_POWER_OFF:
            self._card.power_off()
            self.powered = False
        else:
            _log.warning("ignoring unknown vpcd control %d", code)
        return b""


def resolve_netns(netns: str | None = "auto") -> str | None:
    """The namespace file to join: ``"auto"`` = $KINSIM_VPCD_NETNS, else DEFAULT_NETNS if it exists."""
    if netns != "auto":
        return netns or None
    if NETNS_ENV in os.environ:
        return os.environ[NETNS_ENV] or None
    return DEFAULT_NETNS if os.path.exists(DEFAULT_NETNS) else None


def open_socket(netns: str | None) -> socket.socket:
    """A TCP socket in the network namespace ``netns`` (a file such as /run/netns/NAME), or in ours."""
    if not netns:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        home = open("/proc/thread-self/ns/net")  # noqa: SIM115 - closed below, after switching back
        target = open(netns)  # noqa: SIM115
    except OSError as exc:
        raise VpcdError(f"cannot open network namespace {netns}: {exc.strerror}; "
                        "start the reader with `scripts/pcscd-setup start`") from exc
    with home, target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise VpcdError(f"cannot join network namespace {netns}: {os.strerror(err)} "
                            "(joining it needs root, as starting pcscd does)")
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:  # never leave this thread behind
                raise VpcdError(f"cannot return from network namespace {netns}")


class VpcdCard:
    """Serves one Card to vpcd over TCP, reconnecting after every drop, until ``stop()``.

    ``start()`` runs it in a daemon thread; ``run()`` runs it in the caller's thread. Each socket
    operation is bounded: connecting by ``io_timeout``, idle reads wake every ``poll_interval`` to
    check for ``stop()``, and a frame that stays incomplete for ``io_timeout`` drops the link.
    """

    def __init__(
        self,
        card: Card,
        host: str = VPCD_HOST,
        port: int = VPCD_PORT,
        *,
        netns: str | None = "auto",
        quickack: bool = True,
        poll_interval: float = 0.2,
        io_timeout: float = 5.0,
        trace: Callable[[bytes, bytes], None] | None = None,
    ):
        self.card = card
        self.address = (host, port)
        self.netns = resolve_netns(netns)
        self.quickack = quickack
        self.poll_interval = poll_interval
        self.io_timeout = io_timeout
        self.trace = trace
        self.connected = threading.Event()
        self.apdus = 0
        self.connections = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> VpcdCard:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"vpcd-card:{self.address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect (vpcd sees the card removed) and end ``run()``."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._thread = None

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def __enter__(self) -> VpcdCard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Connect, serve until vpcd hangs up, reconnect; return once ``stop()`` was called."""
        reported = False
        while not self._stop.is_set():
            try:
                sock = self._connect()
            except (OSError, VpcdError) as exc:
                if not reported:  # once per outage: pcscd may simply not be started yet
                    _log.warning("vpcd at %s:%d is not reachable (%s); retrying until it is "
                                 "(start it with scripts/pcscd-setup start)", *self.address, exc)
                    reported = True
                self._stop.wait(self.poll_interval)
                continue
            reported = False
            session = VpcdSession(self.card, self._count)
            self._sock = sock
            self.connections += 1
            self.connected.set()
            _log.info("card inserted into vpcd at %s:%d", *self.address)
            try:
                self._serve(sock, session)
            except (OSError, VpcdError) as exc:
                if not self._stop.is_set():
                    _log.warning("vpcd link dropped: %s", exc)
            finally:
                self.connected.clear()
                self._sock = None
                sock.close()
                if session.powered:  # vpcd now sees a removed card: the card loses power too
                    self.card.power_off()

    def _connect(self) -> socket.socket:
        sock = open_socket(self.netns)
        try:
            sock.settimeout(self.io_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(self.address)
            self._quickack(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _serve(self, sock: socket.socket, session: VpcdSession) -> None:
        idle = 0.0
        sock.settimeout(self.poll_interval)
        while not self._stop.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                idle = idle + self.poll_interval if session.pending else 0.0
                if idle >= self.io_timeout:
                    raise VpcdError("vpcd stopped in the middle of a frame") from None
                continue
            if not data:
                if not self._stop.is_set():
                    _log.info("vpcd closed the link")
                return
            self._quickack(sock)
            reply = session.receive(data)
            if reply:
                sock.settimeout(self.io_timeout)
                sock.sendall(reply)
                sock.settimeout(self.poll_interval)

    def _count(self, command: bytes, response: bytes) -> None:
        self.apdus += 1
        if self.trace:
            self.trace(command, response)

    def _quickack(self, sock: socket.socket) -> None:
        if self.quickack and hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def parse_address(text: str | None) -> tuple[str, int]:
    """'HOST:PORT', 'HOST' or ':PORT' (defaults 127.0.0.1 and 35963)."""
    if not text:
        return VPCD_HOST, VPCD_PORT
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        number = int(port, 0) if port else VPCD_PORT
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise VpcdError(f"the address must be HOST:PORT with a port of 0 to 65535, not {text!r}")
    return host or VPCD_HOST, number


def serve_command(euicc, args) -> int:
    """``kinsim euicc serve DIR --transport vpcd [--address HOST:PORT] [--option netns=PATH|none]
    [--option quickack=0]``: the card sits in the virtual reader until Ctrl-C."""
    options = dict(option.split("=", 1) for option in args.option)
    unknown = set(options) - {"netns", "quickack"}
    if unknown:
        raise VpcdError(f"unknown vpcd option(s) {', '.join(sorted(unknown))} (known: netns, quickack)")
    host, port = parse_address(args.address)
    netns = options.get("netns", "auto")
    netns = None if netns == "none" else netns
    reader = VpcdCard(euicc.card, host, port, netns=netns, quickack=options.get("quickack", "1") != "0")
    open_socket(reader.netns).close()  # fail now, in words, if the namespace cannot be joined
    where = f" in network namespace {reader.netns}" if reader.netns else ""
    print(f"eUICC {euicc.eid} is in the vpcd reader at {host}:{port}{where}; Ctrl-C removes it",
          file=sys.stderr)
    try:
        reader.run()
    except KeyboardInterrupt:
        reader.stop()
    return 0


def _register() -> None:
    from euicc_sim.cli import register_transport  # the CLI imports this module to collect it

    register_transport("vpcd", serve_command)


_register()
