"""A card pulled out in the middle of LoadBoundProfilePackage (its process killed), then put back:
the next run finishes the job (SGP.22 3.1.3, 5.7.6). The card keeps no trace of the partial profile,
and the SM-DP+ order is in a state from which the same activation code downloads the profile."""

from __future__ import annotations

import signal

import pytest

from certs.pki import load_certificate
from lpa.download import download_profile
from lpa.es9_client import Es9Pool, tls_context
from lpa.es10 import Es10Client
from lpa.tcp import TcpCardTransport
from lpa.transport import TransportError
from tests.processes import kinsim, kinsim_json, start_card, start_smdp
from tests.test_e2e_processes import ICCID, PROFILE

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path):
    pki, state, card_dir = tmp_path / "pki", tmp_path / "smdp", tmp_path / "card"
    kinsim("certs", "generate", str(pki))
    kinsim("smdp", "profile", "add", "--state", str(state), str(PROFILE))
    kinsim("euicc", "create", str(card_dir), "--pki", str(pki))
    smdp, address = start_smdp(state, pki)
    order = kinsim_json("smdp", "order", "create", "--state", str(state), "--iccid", ICCID, "--release")
    yield {"pki": pki, "state": state, "card_dir": card_dir, "address": address,
           "matching_id": order["matchingId"], "ci": load_certificate((pki / "ci.der").read_bytes())}
    smdp.stop()


async def download(world, card_address, progress=None):
    async with Es9Pool(tls_context([world["ci"]])) as pool:
        with Es10Client(TcpCardTransport(card_address)) as es10:
            return await download_profile(es10, pool(world["address"]), smdp_address=world["address"],
                                          matching_id=world["matching_id"], confirm=lambda _: True,
                                          progress=progress, peers=pool)


@pytest.mark.asyncio
async def test_next_run_recovers_after_the_card_is_pulled_mid_download(world):
    card, card_address = start_card(world["card_dir"])

    def pull_card(sent: int, total: int) -> None:
        if sent >= total // 2 and card.proc.poll() is None:  # about half the BPP is on the card
            card.proc.send_signal(signal.SIGKILL)
            card.proc.wait()

    with pytest.raises(TransportError):
        await download(world, card_address, progress=pull_card)

    card, card_address = start_card(world["card_dir"])  # put the card back
    try:
        listed = kinsim("lpa", "--card", card_address, "profile", "list", "--json").stdout
        assert ICCID not in listed  # no trace of the half-installed profile

        result = await download(world, card_address)  # the same activation code, the next run
        assert result.iccid == ICCID
        listed = kinsim("lpa", "--card", card_address, "profile", "list", "--json").stdout
        assert ICCID in listed
    finally:
        card.stop()
    orders = kinsim_json("smdp", "order", "list", "--state", str(world["state"]))
    assert next(o["state"] for o in orders if o["iccid"] == ICCID) == "Installed"
