"""PC/SC card transport (pyscard over pcsc-lite): real eUICCs in USB readers, or the software eUICC
in the vsmartcard virtual reader (``scripts/pcscd-setup start``).

The transport only carries APDUs: logical channels, SELECT of the ISD-R and STORE DATA belong to
``lpa.es10``. It connects with T=0 or T=1, whichever the card's ATR offers (eUICCs, and our
software card, offer T=0, the only protocol lpac asks for), exclusively by default so no other program interleaves APDUs with a download, and turns
PC/SC failures into typed errors that say what to do. Status words, '61xx' and '6Cxx' included, go
back untouched: ``lpa.es10`` completes them (GET RESPONSE on the same channel, exact Le), so every
APDU is counted and traced there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lpa.transport import TransportError

PROTOCOLS = {"any": ("T0", "T1"), "T0": ("T0",), "T1": ("T1",)}
START_READER_HINT = ("start pcscd: `scripts/pcscd-setup start` for the virtual reader, "
                     "`systemctl start pcscd` for USB readers")


class PcscError(TransportError):
    """A PC/SC call failed; ``code`` is the PC/SC result (e.g. 0x8010000C), None if not from PC/SC."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class PcscServiceError(PcscError):
    """pcscd (or libpcsclite) is not available."""


class NoReaderError(PcscError):
    """No reader at all, or none matching the requested index or name."""


class NoCardError(PcscError):
    """The reader is empty, or what is in it does not answer a reset."""


class CardRemovedError(PcscError):
    """The card left the reader (or stopped answering) while connected: its session is gone."""


class CardResetError(CardRemovedError):
    """Another program reset the card while connected: open channels and sessions are gone."""


class SharingViolationError(PcscError):
    """Another program holds the card (exclusive access, or exclusive was asked while it is open)."""


def _scard():
    try:
        from smartcard import scard
    except ImportError as exc:  # pyscard or libpcsclite.so.1 missing
        raise PcscServiceError(f"PC/SC is not available ({exc}): install pcscd and libpcsclite1") from exc
    return scard


def _code(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


def _message(scard, hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult).rstrip('.')} (0x{_code(hresult):08X})"


def _service_error(scard, hresult: int) -> PcscServiceError:
    return PcscServiceError(f"the PC/SC service is not running: {_message(scard, hresult)}; "
                            f"{START_READER_HINT}", _code(hresult))


class _Context:
    """An SCARDCONTEXT, released on exit."""

    def __init__(self):
        self.scard = _scard()
        hresult, self.handle = self.scard.SCardEstablishContext(self.scard.SCARD_SCOPE_USER)
        if hresult != self.scard.SCARD_S_SUCCESS:
            raise _service_error(self.scard, hresult)

    def readers(self) -> list[str]:
        scard = self.scard
        hresult, names = scard.SCardListReaders(self.handle, [])
        if _code(hresult) == _code(scard.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if _code(hresult) in (_code(scard.SCARD_E_NO_SERVICE), _code(scard.SCARD_E_SERVICE_STOPPED)):
            raise _service_error(scard, hresult)
        if hresult != scard.SCARD_S_SUCCESS:
            raise PcscError(f"listing readers failed: {_message(scard, hresult)}", _code(hresult))
        return list(names)

    def release(self) -> None:
        if self.handle is not None:
            self.scard.SCardReleaseContext(self.handle)
            self.handle = None


def list_readers() -> list[str]:
    """The names of the PC/SC readers, in pcscd's order (the order lpac's index uses too)."""
    context = _Context()
    try:
        return context.readers()
    finally:
        context.release()


def choose_reader(readers: list[str], selector: int | str | None = None) -> str:
    """The reader named by ``selector``: an index (int or digits), an exact name, or a unique part
    of one (case-insensitive); None picks the first reader."""
    if not readers:
        raise NoReaderError(f"no smart card reader found: plug one in, or {START_READER_HINT}")
    listing = "; ".join(f"{index}: {name}" for index, name in enumerate(readers))
    if selector is None:
        return readers[0]
    if isinstance(selector, int) or selector.strip().isdigit():
        index = int(selector)
        if 0 <= index < len(readers):
            return readers[index]
        raise NoReaderError(f"there is no reader {index}; the readers are {listing}")
    if selector in readers:
        return selector
    matches = [name for name in readers if selector.lower() in name.lower()]
    if len(matches) == 1:
        return matches[0]
    problem = "matches several readers" if matches else "matches no reader"
    raise NoReaderError(f"reader {selector!r} {problem}; the readers are {listing}")


def open_reader(reader: int | str | None = None) -> PcscTransport:
    """The card in ``reader`` (index, name or unique part of a name), as ``kinsim lpa --reader`` uses it."""
    return PcscTransport(reader)


def wait_for_card(reader: int | str | None = None, *, present: bool = True, timeout: float = 5.0) -> bool:
    """Wait until the reader holds a card (or, with ``present=False``, is empty); False on timeout.

    pcscd notices a card at its next presence poll, so a freshly inserted card (or a software card
    that just connected to vpcd) may take a few hundred milliseconds to show.
    """
    context = _Context()
    scard = context.scard
    try:
        name = choose_reader(context.readers(), reader)
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while True:
            remaining = deadline - time.monotonic()
            hresult, states = scard.SCardGetStatusChange(context.handle, max(0, int(remaining * 1000)),
                                                         [(name, state)])
            if hresult == scard.SCARD_S_SUCCESS:
                state = states[0][1] & ~scard.SCARD_STATE_CHANGED
                if bool(state & scard.SCARD_STATE_PRESENT) == present:
                    return True
            elif _code(hresult) != _code(scard.SCARD_E_TIMEOUT):
                raise PcscError(f"watching reader {name!r} failed: {_message(scard, hresult)}", _code(hresult))
            if remaining <= 0:
                return False
    finally:
        context.release()


@dataclass(frozen=True)
class CardStatus:
    reader: str
    atr: bytes
    protocol: str  # "T0" or "T1"


class PcscTransport:
    """A connection to the card in one PC/SC reader: ``transmit(apdu) -> data || SW1 SW2``.

    ``reader``: index, name or unique part of a name (see ``choose_reader``). ``protocol``: "any"
    (T=0 or T=1), "T0" or "T1". ``exclusive``: refuse other programs while connected. ``close()`` powers the card down (as lpac does), so the next connection starts from a reset.
    """

    def __init__(self, reader: int | str | None = None, *, protocol: str = "any", exclusive: bool = True):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, not {protocol!r}")
        self._context = _Context()
        self._scard = self._context.scard
        self._card = None
        try:
            self.reader = choose_reader(self._context.readers(), reader)
            self._connect(protocol, exclusive)
        except BaseException:
            self._context.release()
            raise

    def _connect(self, protocol: str, exclusive: bool) -> None:
        scard = self._scard
        wanted = 0
        for name in PROTOCOLS[protocol]:
            wanted |= getattr(scard, f"SCARD_PROTOCOL_{name}")
        share = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED
        hresult, self._card, active = scard.SCardConnect(self._context.handle, self.reader, share, wanted)
        if hresult != scard.SCARD_S_SUCCESS:
            self._card = None
            raise self._error(hresult, "connecting to the card")
        self._protocol = active
        self.protocol = "T0" if active == scard.SCARD_PROTOCOL_T0 else "T1"
        self.atr = self.status().atr

    # --- the CardTransport protocol ---------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        apdu = bytes(apdu)
        self._require_open()
        hresult, response = self._scard.SCardTransmit(self._card, self._protocol, list(apdu))
        if hresult != self._scard.SCARD_S_SUCCESS:
            raise self._error(hresult, f"sending APDU {apdu[:4].hex().upper()}")
        if len(response) < 2:
            # vpcd answers nothing when its card vanished mid-command; pcscd then reports removal.
            raise CardRemovedError(f"the card in {self.reader!r} gave no status word to "
                                   f"{apdu[:4].hex().upper()}: removed, or it stopped answering")
        return bytes(response)

    def close(self) -> None:
        if self._card is not None:
            self._scard.SCardDisconnect(self._card, self._scard.SCARD_UNPOWER_CARD)
            self._card = None
        self._context.release()

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------------------------------

    def status(self) -> CardStatus:
        scard = self._scard
        self._require_open()
        hresult, reader, _state, protocol, atr = scard.SCardStatus(self._card)
        if hresult != scard.SCARD_S_SUCCESS:
            raise self._error(hresult, "reading the card status")
        return CardStatus(reader, bytes(atr), "T0" if protocol == scard.SCARD_PROTOCOL_T0 else "T1")

    def _require_open(self) -> None:
        if self._card is None:
            raise TransportError("the PC/SC transport is closed")

    def _error(self, hresult: int, doing: str) -> PcscError:
        scard, code, reader = self._scard, _code(hresult), self.reader
        detail = f"{doing} in reader {reader!r} failed: {_message(scard, hresult)}"
        if code in (_code(scard.SCARD_E_NO_SMARTCARD), _code(scard.SCARD_W_REMOVED_CARD),
                    _code(scard.SCARD_E_NOT_TRANSACTED), _code(scard.SCARD_W_UNRESPONSIVE_CARD),
                    _code(scard.SCARD_E_COMM_DATA_LOST), _code(scard.SCARD_W_UNPOWERED_CARD)):
            if self._card is None:  # never connected: the reader is empty or the card is mute
                return NoCardError(f"{detail}; insert the eUICC (software card: "
                                   "`kinsim euicc serve DIR --transport vpcd`)", code)
            return CardRemovedError(f"{detail}; the card left or stopped answering: put it back and run "
                                    "the command again", code)
        if code == _code(scard.SCARD_W_RESET_CARD):
            return CardResetError(f"{detail}; another program reset the card: run the command again", code)
        if code == _code(scard.SCARD_E_SHARING_VIOLATION):
            return SharingViolationError(f"{detail}; another program is using the card (pcsc_scan, "
                                         "another LPA): close it and try again", code)
        if code == _code(scard.SCARD_E_PROTO_MISMATCH):
            return PcscError(f"{detail}; the card does not offer the requested protocol", code)
        if code in (_code(scard.SCARD_E_UNKNOWN_READER), _code(scard.SCARD_E_READER_UNAVAILABLE)):
            return NoReaderError(f"{detail}; the reader is gone", code)
        if code in (_code(scard.SCARD_E_NO_SERVICE), _code(scard.SCARD_E_SERVICE_STOPPED)):
            return _service_error(scard, hresult)
        return PcscError(detail, code)
