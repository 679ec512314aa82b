"""Measure what re-arming TCP_QUICKACK on the card's socket does to APDU round trips through pcscd.

Run after `scripts/pcscd-setup start` (as root, like the set-up):

    .venv/bin/python bench/vpcd_quickack.py [--apdus 200] [--port 35963]

For each setting the software card is inserted into the virtual reader, and the same pairs of
MANAGE CHANNEL open/close go through pyscard -> pcscd -> vpcd -> the card, with TCP_QUICKACK
re-armed after every read, set once at connect, or never. vpcd sends each frame's length and payload
in two writes, with Nagle's algorithm on, so the payload waits for the card's ACK of the length:
without QUICKACK that ACK is delayed (about 40 ms on Linux) on every APDU; set once, Linux soon
drops back to delayed ACKs; re-armed after each read, an exchange takes well under a millisecond. The card never touches its ISD-R here, so a stub stands in for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from euicc_sim.apdu import Card  # noqa: E402
from euicc_sim.vpcd import VPCD_PORT, VpcdCard  # noqa: E402
from lpa.pcsc import NoCardError, PcscTransport, list_readers  # noqa: E402

OPEN_CHANNEL = bytes.fromhex("0070000001")


class _UnusedIsdr:
    def handle(self, request: bytes) -> bytes:
        raise AssertionError("this benchmark sends no ES10 request")


class _QuickackOnce(VpcdCard):
    """Sets TCP_QUICKACK at connect only, as a card that does not re-arm it would."""

    armed: set[int] = set()

    def _quickack(self, sock) -> None:
        if id(sock) not in self.armed:
            super()._quickack(sock)
            self.armed.add(id(sock))


def connect(reader: int, timeout: float = 5.0) -> PcscTransport:
    """pcscd notices the new card at its next presence poll: retry until then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return PcscTransport(reader)
        except NoCardError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


MODES = {  # label: (card class, quickack)
    "re-armed": (VpcdCard, True),
    "once": (_QuickackOnce, True),
    "off": (VpcdCard, False),
}


def round_trips(mode: str, apdus: int, port: int) -> list[float]:
    """Seconds per APDU exchange (one MANAGE CHANNEL), measured one by one."""
    reader = port - VPCD_PORT  # vpcd slot n listens on VPCD_PORT + n
    card_class, quickack = MODES[mode]
    with card_class(Card(_UnusedIsdr()), port=port, quickack=quickack) as card:
        if not card.wait_connected(5):
            raise SystemExit("the card could not reach vpcd: run `scripts/pcscd-setup start` first")
        with connect(reader) as transport:
            times = []
            for _ in range(apdus // 2):
                start = time.perf_counter()
                channel = transport.transmit(OPEN_CHANNEL)[0]
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
                transport.transmit(bytes([0x00, 0x70, 0x80, channel]))
                times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apdus", type=int, default=200)
    parser.add_argument("--port", type=int, default=VPCD_PORT)
    args = parser.parse_args()
    print(f"readers: {list_readers()}")
    print(f"{'TCP_QUICKACK':<14}{'APDUs':>7}{'total s':>10}{'median ms':>11}{'p90 ms':>9}")
    for mode in MODES:
        times = round_trips(mode, args.apdus, args.port)
        p90 = sorted(times)[int(len(times) * 0.9)]
        print(f"{mode:<14}{len(times):>7}{sum(times):>10.3f}{statistics.median(times) * 1e3:>11.2f}"
              f"{p90 * 1e3:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
