"""APDUs, bytes and seconds per profile download over PC/SC, against the fewest APDUs possible.

Run after `scripts/pcscd-setup start` (as root, like the set-up):

    .venv/bin/python bench/pcsc_apdus.py [--downloads 3] [--block-size 255]

Each download goes pyscard -> pcscd -> vpcd -> a fresh software eUICC: GetEUICCChallenge,
AuthenticateServer, PrepareDownload and LoadBoundProfilePackage through lpa.es10 (the SM-DP+ side is
the test signer of tests/euicc_fixtures.py, so no ES9+ time is counted). For the load, the minimum
is what a T=0 card cannot go below: one STORE DATA per block of each BPP segment (SGP.22 2.5.5,
5.7.2) plus the GET RESPONSEs that fetch the ProfileInstallationResult; a T=1 card would spare
those GET RESPONSEs, so the STORE DATA count is shown too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lpa.es10 import Counters, Es10Client  # noqa: E402
from lpa.pcsc import PcscTransport  # noqa: E402
from rsp import bpp  # noqa: E402
from tests.euicc_fixtures import SmdpSide, iccid, make_euicc_dir, metadata, open_test_euicc, profile_package  # noqa: E402
from tests.pcsc_fixtures import READERS, inserted, unavailable_reason  # noqa: E402


def download(es10: Es10Client, eid: str, number: int) -> tuple[Counters, Counters, bytes, bytes]:
    """One download: (whole-procedure counters, load counters, the BPP, the installation result)."""
    smdp, line = SmdpSide(transaction_id=number.to_bytes(16, "big")), iccid(number)
    with es10.measure() as whole:
        request = smdp.authenticate_server(es10.get_euicc_challenge())
        authenticated = es10.authenticate_server(
            server_signed1=request["serverSigned1"], server_signature1=request["serverSignature1"],
            euicc_ci_pkid_to_be_used=request["euiccCiPKIdToBeUsed"],
            server_certificate=request["serverCertificate"], ctx_params1=request["ctxParams1"])
        prepare = smdp.prepare_download(authenticated)
        prepared = es10.prepare_download(smdp_signed2=prepare["smdpSigned2"],
                                         smdp_signature2=prepare["smdpSignature2"],
                                         smdp_certificate=prepare["smdpCertificate"])
        package = smdp.bind(prepared, eid, metadata(line), profile_package(line))
        with es10.measure() as load:
            result = es10.load_bound_profile_package(package)
    final = result["profileInstallationResultData"]["finalResult"]
    if final.name != "successResult":
        raise SystemExit(f"download {number} failed: {final.native}")
    return whole, load, package, result.dump()


def minimum_load_apdus(package: bytes, block_size: int, result: bytes) -> tuple[int, int]:
    """(STORE DATA blocks, T=0 minimum) for loading ``package`` at ``block_size``."""
    blocks = sum(-(-len(segment) // block_size) for segment in bpp.segments(package))
    return blocks, blocks + -(-len(result) // 256)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--downloads", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=255, help="STORE DATA block size (1..255)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"pcscd with the virtual reader is needed: {reason}; run scripts/pcscd-setup start")
    header = (f"{'#':>2} {'APDUs':>6} {'sent B':>8} {'recv B':>8} {'s':>7} | {'load APDUs':>10} "
              f"{'T=0 min':>8} {'blocks':>7} {'BPP B':>7} {'load s':>7}")
    print(f"block size {args.block_size}; reader {READERS[0]}\n{header}")
    with tempfile.TemporaryDirectory() as folder:
        directory = make_euicc_dir(Path(folder) / "card")
        with open_test_euicc(directory) as euicc, inserted(euicc.card), \
                PcscTransport(READERS[0]) as transport, Es10Client(transport, block_size=args.block_size) as es10:
            for number in range(1, args.downloads + 1):
                started = time.perf_counter()
                whole, load, package, result = download(es10, euicc.eid, number)
                blocks, least = minimum_load_apdus(package, args.block_size, result)
                print(f"{number:>2} {whole.apdus:>6} {whole.bytes_sent:>8} {whole.bytes_received:>8} "
                      f"{time.perf_counter() - started:>7.3f} | {load.apdus:>10} {least:>8} {blocks:>7} "
                      f"{len(package):>7} {load.seconds:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
