"""Complete profile downloads end to end: SM-DP+, software eUICC and LPA as three processes.

    .venv/bin/python bench/download.py [--downloads 50] [--curve nist|brp]

The SM-DP+ (`kinsim smdp serve`) and the card (`kinsim euicc serve --transport tcp`) run as their own
processes on loopback; this process is the LPA (lpa.download over HTTPS and the card socket), so one
download is exactly what `kinsim lpa profile download` does minus interpreter start-up. Printed:

- wall time per download (mean, median, p95) against the 50 ms target;
- SM-DP+ CPU per download (user+system from /proc, so it includes TLS and SQLite) and the time the
  LPA spent waiting on the card;
- the ECDSA/ECDH work one download needs, timed alone in this process with rsp.crypto, and the
  ratio of wall time to it: how far the protocol plumbing is from the cryptographic floor.

Nothing here asserts: speed is measured, not tested.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certs.pki import generate_pki, load_certificate  # noqa: E402
from lpa.download import download_profile  # noqa: E402
from lpa.es9_client import Es9Pool, tls_context  # noqa: E402
from lpa.es10 import Es10Client  # noqa: E402
from lpa.tcp import TcpCardTransport  # noqa: E402
from rsp import crypto  # noqa: E402
from rsp.saip.personalize import personalize_batch  # noqa: E402
from rsp.testdata import ts48_profile  # noqa: E402
from tests.processes import kinsim, kinsim_json, start_card, start_smdp  # noqa: E402

# The public-key operations of one download (SGP.22 3.1.2/3.1.3), both ends:
#   SM-DP+: sign serverSigned1, smdpSigned2, smdpSign; verify EUM and eUICC certificates,
#           euiccSignature1, euiccSignature2, euiccSignPIR; one one-time key pair and one ECKA.
#   eUICC:  verify DPauth and DPpb certificates, serverSignature1, smdpSignature2, smdpSign;
#           sign euiccSigned1, euiccSigned2, the PIR; one one-time key pair and one ECKA.
SIGNS, VERIFIES, KEYPAIRS, ECKAS = 6, 10, 2, 2


def crypto_floor(curve: str, rounds: int = 20) -> float:
    """Seconds the ECDSA/ECDH operations of one download take alone (median of ``rounds``)."""
    key, peer = crypto.generate_private_key(curve), crypto.generate_private_key(curve)
    peer_point = crypto.public_key_bytes(peer.public_key())
    data = os.urandom(200)
    signature = crypto.sign(key, data)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(SIGNS):
            crypto.sign(key, data)
        for _ in range(VERIFIES):
            crypto.verify(key.public_key(), data, signature)
        for _ in range(KEYPAIRS):
            crypto.generate_private_key(curve)
        for _ in range(ECKAS):
            crypto.ecka(key, peer_point)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepare(work: Path, count: int, curve: str) -> list[str]:
    """PKI, an SM-DP+ inventory of ``count`` distinct TS.48-based profiles with released orders, a card."""
    pki = generate_pki(curve, smdp_address="localhost")
    pki.save(work / "pki")
    profiles = work / "profiles"
    profiles.mkdir()
    batch = personalize_batch(ts48_profile(), iccid_start="8949000000000000000", imsi_start="001010000000000",
                              count=count)
    for profile in batch:
        (profiles / f"{profile.iccid}.der").write_bytes(profile.der)
    kinsim("smdp", "profile", "add", "--state", str(work / "smdp"), *map(str, sorted(profiles.iterdir())))
    kinsim("euicc", "create", str(work / "card"), "--pki", str(work / "pki"), "--free-memory", str(64 << 20))
    return sorted(p.stem for p in profiles.iterdir())


async def run_downloads(work: Path, iccids: list[str], address: str, card_address: str) -> list[float]:
    orders = [kinsim_json("smdp", "order", "create", "--state", str(work / "smdp"), "--iccid", iccid,
                          "--release") for iccid in iccids]
    context = tls_context([load_certificate((work / "pki" / "ci.der").read_bytes())])
    times, card_seconds = [], []
    async with Es9Pool(context) as pool:
        with Es10Client(TcpCardTransport(card_address)) as es10:
            for order in orders:
                started = time.perf_counter()
                with es10.measure() as card:
                    await download_profile(es10, pool(address), smdp_address=address,
                                           matching_id=order["matchingId"], confirm=lambda _: True, peers=pool)
                times.append(time.perf_counter() - started)
                card_seconds.append(card.seconds)
    return times, card_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--downloads", type=int, default=50)
    parser.add_argument("--curve", choices=("nist", "brp"), default="nist")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kinsim-bench-") as tmp:
        work = Path(tmp)
        iccids = prepare(work, args.downloads + 1, args.curve)
        smdp, address = start_smdp(work / "smdp", work / "pki")
        card, card_address = start_card(work / "card")
        try:
            asyncio.run(run_downloads(work, iccids[:1], address, card_address))  # warm-up (TLS, caches)
            cpu_before = cpu_seconds(smdp.proc.pid)
            times, card_seconds = asyncio.run(run_downloads(work, iccids[1:], address, card_address))
            smdp_cpu = (cpu_seconds(smdp.proc.pid) - cpu_before) / len(times)
        finally:
            card.stop()
            smdp.stop()
    floor = crypto_floor(args.curve)
    result = report(times, smdp_cpu, floor, args.curve, card_seconds)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def report(times: list[float], smdp_cpu: float, floor: float, curve: str, card_seconds: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    mean = statistics.fmean(ms)
    return {
        "curve": curve, "downloads": len(ms),
        "wall_ms": {"mean": round(mean, 1), "median": round(statistics.median(ms), 1),
                    "p95": round(ms[int(0.95 * (len(ms) - 1))], 1)},
        "target_ms": 50, "smdp_cpu_ms": round(smdp_cpu * 1000, 1),
        "card_ms": round(statistics.fmean(card_seconds) * 1000, 1),
        "crypto_floor_ms": round(floor * 1000, 2), "wall_to_crypto_ratio": round(mean / (floor * 1000), 1),
    }


def render(r: dict) -> str:
    w = r["wall_ms"]
    verdict = "within" if w["median"] <= r["target_ms"] else "over"
    return "\n".join([
        f"{r['downloads']} downloads ({r['curve']}), three processes over loopback HTTPS",
        f"wall time per download   mean {w['mean']} ms, median {w['median']} ms, p95 {w['p95']} ms "
        f"({verdict} the {r['target_ms']} ms target)",
        f"SM-DP+ CPU per download  {r['smdp_cpu_ms']} ms",
        f"time waiting on the card (APDU round trips, card process) per download  {r['card_ms']} ms",
        f"ECDSA/ECDH of one download alone  {r['crypto_floor_ms']} ms "
        f"({SIGNS} signs, {VERIFIES} verifies, {KEYPAIRS} key pairs, {ECKAS} ECKA)",
        f"wall time / crypto floor  {r['wall_to_crypto_ratio']}x",
    ])


if __name__ == "__main__":
    sys.exit(main())
