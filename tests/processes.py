"""Helpers to run kinsim roles as separate OS processes (the way users and other peers run them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

KINSIM = [sys.executable, "-m", "kinsim"]


def kinsim(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one `kinsim` command to completion (stdout/stderr captured as text)."""
    result = subprocess.run([*KINSIM, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kinsim {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def kinsim_json(*args: str, timeout: float = 60):
    return json.loads(kinsim("--json", *args, timeout=timeout).stdout)


class Server:
    """A long-running `kinsim ... serve` process; ``line`` is the first stdout line matching ``marker``."""

    def __init__(self, args: list[str], marker: str, timeout: float = 30):
        self.proc = subprocess.Popen([*KINSIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.line = self._wait_for(marker, timeout)

    def _wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if marker in line:
                return line.strip()
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"server did not print {marker!r}: {self.proc.stderr.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_smdp(state: Path, pki: Path) -> tuple[Server, str]:
    """`kinsim smdp serve` on an ephemeral loopback port; returns the server and its address
    ('localhost:PORT', what activation codes carry)."""
    server = Server(["--json", "smdp", "serve", "--state", str(state), "--pki", str(pki), "--port", "0"], "{")
    return server, json.loads(server.line)["address"]


def start_card(directory: Path) -> tuple[Server, str]:
    """`kinsim euicc serve DIR --transport tcp`; returns the server and 'tcp:127.0.0.1:PORT'."""
    server = Server(["euicc", "serve", str(directory), "--transport", "tcp"], "listening ")
    return server, server.line.removeprefix("listening ")
