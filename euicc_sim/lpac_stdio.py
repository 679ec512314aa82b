"""The software eUICC behind lpac's "stdio" APDU driver, so lpac can check our card.

With ``LPAC_APDU=stdio`` lpac (estkme-group/lpac, the most widely used open LPA) does not talk to a
reader: for each call of its APDU interface it prints one JSON line on its stdout and reads the
answer as one JSON line on its stdin:

    request  {"type":"apdu","payload":{"func":FUNC,"param":HEX or null}}
    answer   {"type":"apdu","payload":{"ecode":N,"data":HEX}}     ("data" only for transmit)

FUNC is ``connect``, ``disconnect``, ``logic_channel_open`` (param: the AID to select; ecode: the
channel number, negative on failure), ``logic_channel_close`` (param: the channel number, one byte)
or ``transmit`` (param: the command APDU; data: the response APDU with its status word; ecode 0).
Every other line lpac prints there ("lpa" results, "progress", "driver") is its output for people.

Channels are opened the way lpac's own PC/SC driver opens them: MANAGE CHANNEL open on the basic
channel, then SELECT by AID on the new channel, which succeeds on '9000' or '61xx'.

``LpacStdioBridge`` is that protocol without I/O; ``serve_stdio`` answers on a pair of streams (wire
it to lpac with a coprocess); ``run_lpac`` starts lpac itself and returns what it printed.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from euicc_sim.apdu import Card
from rsp.errors import KinsimError

FUNCS = ("connect", "disconnect", "logic_channel_open", "logic_channel_close", "transmit")
ECODE_ERROR = -1
SW_OK = b"\x90\x00"


class LpacError(KinsimError):
    """lpac could not be run, or stopped answering within the time allowed."""


def _cla(channel: int) -> int:
    """ISO 7816-4 5.4.1 interindustry class byte of a logical channel (0..3 first, 4..19 further)."""
    return channel if channel < 4 else 0x40 | (channel - 4)


class LpacStdioBridge:
    """Answers lpac's stdio APDU requests from ``card``: ``answer = bridge.handle_line(line)``.

    ``handle_line`` returns the answer line (no newline) for an APDU request and None for any other
    line (lpac's output: collected in ``output`` when it is JSON). A request it cannot carry out gets
    ecode -1, never silence, so lpac never waits for an answer that does not come.
    """

    def __init__(self, card: Card):
        self.card = card
        self.output: list[dict] = []
        self.requests = 0
        self.apdus = 0

    def handle_line(self, line: str) -> str | None:
        line = line.strip()
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None  # not JSON: lpac's plain text, nothing to answer
        if not isinstance(message, dict) or message.get("type") != "apdu":
            if isinstance(message, dict):
                self.output.append(message)
            return None
        self.requests += 1
        payload = message.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        return json.dumps({"type": "apdu", "payload": self.handle(payload.get("func"), payload.get("param"))},
                          separators=(",", ":"))

    def handle(self, func: object, param: object) -> dict:
        """One request's answer payload: {"ecode": N} plus "data" for transmit."""
        if func not in FUNCS:
            return {"ecode": ECODE_ERROR}
        try:
            data = bytes.fromhex(param) if isinstance(param, str) else b""
        except ValueError:
            return {"ecode": ECODE_ERROR}
        try:
            return getattr(self, f"_{func}")(data)
        except KinsimError:  # e.g. CardNotPowered: transmit before connect
            return {"ecode": ECODE_ERROR}

    def _connect(self, _param: bytes) -> dict:
        self.card.power_on()
        return {"ecode": 0}

    def _disconnect(self, _param: bytes) -> dict:
        self.card.power_off()
        return {"ecode": 0}

    def _transmit(self, apdu: bytes) -> dict:
        if len(apdu) < 4:
            return {"ecode": ECODE_ERROR}
        response = self._send(apdu)
        return {"ecode": 0, "data": response.hex().upper()}

    def _logic_channel_open(self, aid: bytes) -> dict:
        if not 1 <= len(aid) <= 16:
            return {"ecode": ECODE_ERROR}
        response = self._send(bytes.fromhex("0070000001"))
        if len(response) != 3 or response[1:] != SW_OK:
            return {"ecode": ECODE_ERROR}
        channel = response[0]
        selected = self._send(bytes([_cla(channel), 0xA4, 0x04, 0x00, len(aid)]) + aid)
        if selected[-2:] == SW_OK or selected[-2] == 0x61:
            return {"ecode": channel}
        self._send(bytes([0x00, 0x70, 0x80, channel]))
        return {"ecode": ECODE_ERROR}

    def _logic_channel_close(self, channel: bytes) -> dict:
        if len(channel) != 1:
            return {"ecode": ECODE_ERROR}
        self._send(bytes([0x00, 0x70, 0x80, channel[0]]))
        return {"ecode": 0}

    def _send(self, apdu: bytes) -> bytes:
        self.apdus += 1
        return self.card.transmit(apdu)


def serve_stdio(card: Card, requests: IO[str] = sys.stdin, answers: IO[str] = sys.stdout,
                output: IO[str] | None = sys.stderr) -> LpacStdioBridge:
    """Answer lpac's requests read from ``requests`` on ``answers`` until end of input; lpac's own
    lines go to ``output``. For a coprocess set-up, e.g. bash:
    ``coproc CARD { kinsim euicc serve DIR --transport lpac-stdio; }; LPAC_APDU=stdio lpac chip info
    <&"${CARD[0]}" >&"${CARD[1]}"`` (lpac's output then arrives on the card's stderr)."""
    bridge = LpacStdioBridge(card)
    for line in requests:
        answer = bridge.handle_line(line)
        if answer is not None:
            answers.write(answer + "\n")
            answers.flush()
        elif output is not None and line.strip():
            output.write(line if line.endswith("\n") else line + "\n")
            output.flush()
    return bridge


@dataclass
class LpacRun:
    """What one lpac run printed: its JSON output lines (APDU traffic removed) and its stderr."""

    returncode: int
    output: list[dict] = field(default_factory=list)
    stderr: str = ""
    apdus: int = 0

    @property
    def result(self) -> dict | None:
        """The payload of lpac's final {"type":"lpa"} line (code 0 = success), if it printed one."""
        results = [line.get("payload") for line in self.output if line.get("type") == "lpa"]
        return results[-1] if results else None


def run_lpac(card: Card, command: Sequence[str], *, env: dict[str, str] | None = None,
             timeout: float = 120.0) -> LpacRun:
    """Run lpac (``command``, e.g. ["lpac", "chip", "info"]) with its stdio APDU driver on ``card``.

    Bounded: lpac is killed and LpacError raised when the whole run takes longer than ``timeout``.
    """
    full_env = {**os.environ, **(env or {}), "LPAC_APDU": "stdio"}
    try:
        process = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=full_env)
    except OSError as exc:
        raise LpacError(f"cannot run {command[0]!r}: {exc.strerror}") from exc
    bridge = LpacStdioBridge(card)
    try:
        stderr = _relay(process, bridge, time.monotonic() + timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return LpacRun(process.wait(), bridge.output, stderr, bridge.apdus)


def _relay(process: subprocess.Popen, bridge: LpacStdioBridge, deadline: float) -> str:
    """Feed lpac's request lines to the bridge and its answers back until lpac closes its output."""
    stdout, stderr = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, stdout)
        selector.register(process.stderr, selectors.EVENT_READ, stderr)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LpacError(f"lpac did not finish within the time allowed ({process.args})")
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is stdout:
                    _answer_lines(process, bridge, stdout)
    _answer_lines(process, bridge, stdout + b"\n")
    return stderr.decode(errors="replace")


def _answer_lines(process: subprocess.Popen, bridge: LpacStdioBridge, buffer: bytearray) -> None:
    while (end := buffer.find(b"\n")) >= 0:
        line = buffer[:end].decode(errors="replace")
        del buffer[: end + 1]
        answer = bridge.handle_line(line)
        if answer is not None and process.poll() is None:
            try:
                process.stdin.write(answer.encode() + b"\n")
                process.stdin.flush()
            except BrokenPipeError:
                return


def serve_command(euicc, args) -> int:
    """``kinsim euicc serve DIR --transport lpac-stdio``: answer lpac's requests on stdin/stdout."""
    if args.address or args.option:
        raise KinsimError("the lpac-stdio transport takes no --address or --option: it uses stdin and stdout")
    serve_stdio(euicc.card)
    return 0


def _register() -> None:
    from euicc_sim.cli import register_transport  # the CLI imports this module to collect it

    register_transport("lpac-stdio", serve_command)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m euicc_sim.lpac_stdio DIR lpac ARGS...``: run lpac on the eUICC in DIR and print
    lpac's own output lines; exit with lpac's exit code."""
    from euicc_sim.card import open_euicc

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        print("usage: python -m euicc_sim.lpac_stdio DIR LPAC [ARGS...]   e.g. DIR lpac chip info",
              file=sys.stderr)
        return 2
    with open_euicc(argv[0]) as euicc:
        run = run_lpac(euicc.card, argv[1:])
    for line in run.output:
        print(json.dumps(line))
    sys.stderr.write(run.stderr)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
