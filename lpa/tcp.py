"""The reader end of the software eUICC's loopback link (``kinsim euicc serve DIR --transport tcp``).

It speaks vpcd's framing as vpcd itself would: power on, ask for the ATR, then one frame per APDU.
Use it as ``kinsim lpa --card tcp:127.0.0.1:PORT ...``.
"""

from __future__ import annotations

import contextlib
import socket

from lpa.transport import TransportError

CTRL_POWER_OFF, CTRL_POWER_ON, CTRL_ATR = 0, 1, 4


def parse_card_address(text: str) -> tuple[str, int]:
    """'tcp:HOST:PORT' or 'HOST:PORT'."""
    body = text.removeprefix("tcp:")
    host, _, port = body.rpartition(":")
    if not host or not port.isdigit():
        raise TransportError(f"card address must be tcp:HOST:PORT, not {text!r}")
    return host, int(port)


class TcpCardTransport:
    def __init__(self, address: str, timeout: float = 30.0):
        host, port = parse_card_address(address)
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TransportError(f"no card at tcp:{host}:{port} ({exc.strerror or exc})") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send(bytes([CTRL_POWER_ON]))
        self._send(bytes([CTRL_ATR]))
        self.atr = self._receive()

    def _send(self, payload: bytes) -> None:
        try:
            self._sock.sendall(len(payload).to_bytes(2, "big") + payload)
        except OSError as exc:
            raise TransportError(f"card link lost: {exc}") from None

    def _read(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            if hasattr(socket, "TCP_QUICKACK"):
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            try:
                chunk = self._sock.recv(count - len(data))
            except OSError as exc:
                raise TransportError(f"card link lost: {exc}") from None
            if not chunk:
                raise TransportError("the card went away (connection closed)")
            data += chunk
        return bytes(data)

    def _receive(self) -> bytes:
        return self._read(int.from_bytes(self._read(2), "big"))

    def transmit(self, apdu: bytes) -> bytes:
        if self._sock is None:
            raise TransportError("the card link is closed")
        self._send(apdu)
        return self._receive()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(TransportError):
                self._send(bytes([CTRL_POWER_OFF]))
            self._sock.close()
            self._sock = None
