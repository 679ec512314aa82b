"""PC/SC test set-up: a software eUICC inserted into the vsmartcard reader of a running pcscd.

The tests that use it run against the real stack (pyscard -> pcscd -> vpcd -> our card) and skip,
saying how to enable them, when pcscd with the virtual reader is not there (`scripts/pcscd-setup
start`, as root). The card runs in a thread of the test (``inserted``) or, when a test must pull it
out abruptly, in a child process that it kills (``CardProcess``; run as
``python -m tests.pcsc_fixtures SLOT``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from euicc_sim.apdu import Card
from euicc_sim.vpcd import VPCD_PORT, VpcdCard, VpcdError, open_socket, resolve_netns
from rsp import messages as m
from rsp.ids import eid_to_bytes, iccid_to_bcd, luhn_check_digit

ROOT = Path(__file__).resolve().parent.parent
READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")  # vpcd slots 0 and 1: ports 35963 and 35964
ENABLE_HINT = ("`scripts/pcscd-setup start` as root (Debian packages pcscd and vsmartcard-vpcd, which "
               "scripts/setup installs)")
EID = "89049032123451234512345678901235"
PROFILES = 8  # enough ProfileInfo entries for a response of several GET RESPONSE chunks
CARD_TIMEOUT = 10.0  # seconds for pcscd to see a card come or go
SLOT_WAIT = 300.0  # seconds to wait for another test run to free a slot


def profile_iccid(number: int) -> str:
    body = f"890001234567890{number:04d}"
    return body + luhn_check_digit(body)


class ScriptedIsdr:
    """An ISD-R that answers GetEID, GetProfilesInfo (``PROFILES`` long entries) and SetNickname,
    and records every request: enough to exercise the transport, not the eUICC."""

    def __init__(self):
        self.requests: list[bytes] = []

    def handle(self, request: bytes) -> bytes:
        self.requests.append(request)
        tag = request[:2]
        if tag == b"\xbf\x3e":
            return m.GetEuiccDataResponse({"eidValue": eid_to_bytes(EID)}).dump()
        if tag == b"\xbf\x2d":
            return m.ProfileInfoListResponse(name="profileInfoListOk", value=[self._profile(n) for n in range(PROFILES)]).dump()
        if tag == b"\xbf\x29":
            return m.SetNicknameResponse({"setNicknameResult": 0}).dump()
        raise ValueError(f"the scripted ISD-R does not know request {tag.hex().upper()}")

    @staticmethod
    def _profile(number: int) -> dict:
        return {
            "iccid": iccid_to_bcd(profile_iccid(number)),
            "profileState": "disabled",
            "profileNickname": f"family line {number} ".ljust(64, "."),
            "serviceProviderName": "kinsim test operator".ljust(32, "."),
            "profileName": f"shared plan profile {number} ".ljust(64, "."),
            "profileClass": "operational",
        }


def scripted_card() -> Card:
    return Card(ScriptedIsdr())


@functools.cache
def unavailable_reason() -> str | None:
    """Why the PC/SC tests cannot run here, or None when they can."""
    try:
        from lpa.pcsc import PcscError, list_readers
    except ImportError as exc:
        return f"pyscard is not importable ({exc})"
    try:
        readers = list_readers()
    except PcscError as exc:
        return f"pcscd is not reachable ({type(exc).__name__}, PC/SC code 0x{exc.code or 0:08X})"
    if not set(READERS) <= set(readers):
        return f"pcscd runs without the virtual readers {list(READERS)} (it has {readers})"
    try:
        open_socket(resolve_netns()).close()
    except VpcdError as exc:
        return str(exc)
    return None


def require_pcsc() -> None:
    """Skip the calling test, saying how to enable it, when pcscd with the virtual reader is absent."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"PC/SC test skipped: {reason}. To enable: {ENABLE_HINT}")


@contextlib.contextmanager
def slot_lock(slot: int) -> Iterator[None]:
    """One card per slot across processes: test runs sharing this pcscd take turns."""
    from lpa.pcsc import wait_for_card

    path = Path(tempfile.gettempdir()) / f"kinsim-vpcd-slot{slot}.lock"
    with open(path, "a") as lock:
        deadline = time.monotonic() + SLOT_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"vpcd slot {slot} stayed busy for {SLOT_WAIT:.0f} s") from None
                time.sleep(0.1)
        try:
            assert wait_for_card(READERS[slot], present=False, timeout=CARD_TIMEOUT), \
                f"{READERS[slot]} still holds a card that no test inserted"
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def inserted(card: Card, slot: int = 0) -> Iterator[VpcdCard]:
    """``card`` served to vpcd slot ``slot`` from a thread, seen by pcscd; removed again on exit."""
    from lpa.pcsc import wait_for_card

    with slot_lock(slot):
        server = VpcdCard(card, port=VPCD_PORT + slot, io_timeout=CARD_TIMEOUT).start()
        try:
            assert server.wait_connected(CARD_TIMEOUT), "the card could not connect to vpcd"
            assert wait_for_card(READERS[slot], timeout=CARD_TIMEOUT), "pcscd did not see the card"
            yield server
        finally:
            server.stop()
            wait_for_card(READERS[slot], present=False, timeout=CARD_TIMEOUT)


class CardProcess:
    """A card in a child process, so a test can pull it out of the reader by killing it: the
    scripted card, or with ``directory`` the software eUICC stored there (test clock).

    Holds the slot while the ``with`` block runs; ``insert()`` and ``remove()`` may alternate.
    """

    def __init__(self, slot: int = 0, directory: Path | None = None):
        self.slot = slot
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> CardProcess:
        self._stack.enter_context(slot_lock(self.slot))
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.remove()
        finally:
            self._stack.close()

    def insert(self) -> None:
        from lpa.pcsc import wait_for_card

        command = [sys.executable, "-m", "tests.pcsc_fixtures", str(self.slot)]
        if self.directory is not None:
            command.append(str(self.directory))
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if not wait_for_card(READERS[self.slot], timeout=CARD_TIMEOUT):
            self.remove()
            raise AssertionError("pcscd did not see the card process's card")

    def remove(self) -> None:
        """SIGKILL: the card vanishes with no goodbye, as when it is pulled out of a reader."""
        from lpa.pcsc import wait_for_card

        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(CARD_TIMEOUT)
        self.process = None
        wait_for_card(READERS[self.slot], present=False, timeout=CARD_TIMEOUT)


def _serve_until_killed(slot: int, directory: str | None) -> None:
    """The body of CardProcess."""
    if directory is None:
        VpcdCard(scripted_card(), port=VPCD_PORT + slot).run()
        return
    from tests.euicc_fixtures import open_test_euicc

    with open_test_euicc(Path(directory)) as euicc:
        VpcdCard(euicc.card, port=VPCD_PORT + slot).run()


if __name__ == "__main__":
    _serve_until_killed(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
