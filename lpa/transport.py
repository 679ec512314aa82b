"""The card side of the LPA: anything that carries one command APDU to an eUICC and returns its answer.

The ES10 client (lpa.es10) needs nothing more than ``transmit(apdu) -> data || SW1 SW2``; logical
channels are opened and closed with MANAGE CHANNEL APDUs by the ES10 client itself, so a transport
only has to connect and disconnect. A PC/SC transport (pyscard) plugs in by implementing the same two
methods; the in-process transport here drives a software eUICC (``euicc_sim``) without any I/O.

The CLI finds a PC/SC transport as ``lpa.pcsc.open_reader(spec) -> CardTransport`` (``spec`` is the
``--reader`` value: an index or a reader name) once that module exists.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rsp.errors import KinsimError


class TransportError(KinsimError):
    """The card could not be reached: no reader, card removed, transport closed."""


@runtime_checkable
class CardTransport(Protocol):
    """One APDU in, the card's response (data followed by SW1 SW2) out.

    ``transmit`` is called only between connecting (the constructor or whatever opens the link) and
    ``close()``; after ``close()`` it raises TransportError. Status words are returned, not raised:
    '61xx', '6Cxx' and errors are the ES10 client's business.
    """

    def transmit(self, apdu: bytes) -> bytes: ...

    def close(self) -> None: ...


class SimCardTransport:
    """An in-process transport to a software eUICC: any object with ``transmit(apdu) -> rapdu``.

    The card is expected to be powered (``euicc_sim.card.open_euicc`` hands it out that way); this
    class only forwards APDUs, so it works with any object that answers APDUs the same way.
    ``on_close`` lets the owner of the card release it (store lock, power) when the LPA is done.
    """

    def __init__(self, card, on_close=None):
        self._card = card
        self._on_close = on_close
        self._closed = False

    def transmit(self, apdu: bytes) -> bytes:
        if self._closed:
            raise TransportError("the card transport is closed")
        response = bytes(self._card.transmit(bytes(apdu)))
        if len(response) < 2:
            raise TransportError(f"the card answered {len(response)} bytes, less than a status word")
        return response

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> SimCardTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
