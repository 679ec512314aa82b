"""kinsim demo: a complete SGP.22 profile download on the embedded defaults, nothing started by hand.

It runs what a user would type, each step shown as its command: a throwaway test PKI, an SM-DP+
holding the GSMA TS.48 v7 test profile on an ephemeral loopback HTTPS port (its own process), a
software eUICC served on a loopback socket (its own process), and the LPA downloading, enabling and
listing the profile. The SM-DP+ and the card stop at the end; the directory stays for inspection
(or is removed with --clean).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kinsim.output import json_parent
from rsp.errors import KinsimError
from rsp.testdata import testdata_dir

PROFILE = Path("ts48") / "v7" / "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV.der"


def register(subparsers, name: str, help_text: str) -> None:
    parser = subparsers.add_parser(name, help=help_text, parents=[json_parent()], description=__doc__)
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--clean", action="store_true", help="remove the work directory at the end")
    parser.add_argument("--quiet", action="store_true", help="show the steps, not their output")
    parser.set_defaults(func=run)


class Demo:
    def __init__(self, work: Path, show_output: bool, as_json: bool):
        self.work = work
        self.show_output = show_output and not as_json
        self.as_json = as_json
        self.steps: list[dict] = []
        self.servers: list[subprocess.Popen] = []

    def say(self, text: str) -> None:
        if not self.as_json:
            print(f"\n== {text}", flush=True)

    def kinsim(self, *args: str, show: bool = True, output: bool = True) -> str:
        """Run one kinsim command as its own process, the way a user would; ``show`` prints the
        command, ``output`` its output."""
        shown = "kinsim " + " ".join(shlex.quote(a) for a in args)
        if show and not self.as_json:
            print(f"$ {shown}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "kinsim", *args], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        self.steps.append({"command": shown, "seconds": round(seconds, 3), "exit": result.returncode})
        if result.returncode != 0:
            raise KinsimError(f"demo step failed: {shown}\n{result.stderr.strip()}")
        if show and output and self.show_output and result.stdout.strip():
            print(_indent(result.stdout.rstrip()))
        return result.stdout

    def serve(self, marker: str, *args: str) -> str:
        """Start a long-running kinsim server process; return its first stdout line holding ``marker``."""
        shown = "kinsim " + " ".join(shlex.quote(a) for a in args)
        if not self.as_json:
            print(f"$ {shown} &", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "kinsim", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.servers.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if marker in line:
                return line.strip()
            if not line and proc.poll() is not None:
                break
        raise KinsimError(f"{shown} did not start: {proc.stderr.read().strip()}")

    def stop(self) -> None:
        for proc in self.servers:
            proc.terminate()
        for proc in self.servers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _kinsim_command() -> str:
    """How this user runs kinsim: plain `kinsim` when it is on PATH, else the script beside this Python."""
    beside = Path(sys.executable).parent / "kinsim"
    return "kinsim" if shutil.which("kinsim") == str(beside) or not beside.exists() else str(beside)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def run(args) -> int:
    as_json = getattr(args, "json", False)
    work = args.dir or Path(tempfile.mkdtemp(prefix="kinsim-demo-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KinsimError(f"cannot use {work} as the work directory: {exc.strerror or exc}") from None
    demo = Demo(work, show_output=not args.quiet, as_json=as_json)
    started = time.perf_counter()
    try:
        result = _script(demo, work)
    finally:
        demo.stop()
        if args.clean:
            shutil.rmtree(work, ignore_errors=True)
    result.update(seconds=round(time.perf_counter() - started, 2), steps=demo.steps,
                  directory=None if args.clean else str(work))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"\nDone in {result['seconds']} s: profile {result['iccid']} downloaded over HTTPS, installed, "
              f"enabled; the SM-DP+ records it as {result['smdpState']}.")
        if not args.clean:
            print(f"Everything is in {work} (pki/, smdp/, card/); try: {_kinsim_command()} euicc show {work / 'card'}")
    return 0


def _script(demo: Demo, work: Path) -> dict:
    pki, state, card = work / "pki", work / "smdp", work / "card"
    demo.say("1. A throwaway test PKI in the SGP.22 certificate profile (CI, EUM, eUICC, DPauth, DPpb, DPtls)")
    demo.kinsim("certs", "generate", str(pki), "--force")

    demo.say("2. An SM-DP+ with the GSMA TS.48 v7 test profile, on an ephemeral loopback HTTPS port")
    demo.kinsim("smdp", "profile", "add", "--state", str(state), str(testdata_dir() / PROFILE))
    info = json.loads(demo.serve("{", "--json", "smdp", "serve", "--state", str(state), "--pki", str(pki),
                                 "--port", "0"))
    if not demo.as_json:
        print(_indent(f"SM-DP+ {info['address']} serving ES9+ at {info['es9']}"))
    order = json.loads(demo.kinsim("--json", "smdp", "order", "create", "--state", str(state), "--profile-type",
                                   "GSMA Generic eUICC Test Profile", "--release", output=False))
    code = order["activationCode"]
    if not demo.as_json:
        print(_indent(f"activation code: {code}"))

    demo.say("3. A software eUICC (EID certified by the test EUM), served on a loopback socket")
    demo.kinsim("euicc", "create", str(card), "--pki", str(pki))
    card_address = demo.serve("listening ", "euicc", "serve", str(card), "--transport", "tcp").split()[-1]

    demo.say("4. The LPA: download with the activation code, enable, list")
    lpa = ["lpa", "--card", card_address, "--ci-cert", str(pki / "ci.der"), "--config-dir", str(work / "lpa")]
    demo.kinsim(*lpa, "chip", "info")
    demo.kinsim(*lpa, "profile", "download", "-a", code, "--yes")
    demo.kinsim(*lpa, "profile", "enable", order["iccid"])
    demo.kinsim(*lpa, "profile", "list")

    demo.say("5. The SM-DP+ side: the installation notification settled the order")
    demo.kinsim("smdp", "order", "list", "--state", str(state))
    orders = json.loads(demo.kinsim("--json", "smdp", "order", "list", "--state", str(state), show=False))
    smdp_state = next(o["state"] for o in orders if o["iccid"] == order["iccid"])
    return {"iccid": order["iccid"], "activationCode": code, "smdpState": smdp_state}
