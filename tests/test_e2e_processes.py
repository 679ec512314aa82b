"""SGP.22 3.1.2/3.1.3 across process boundaries: SM-DP+, software eUICC and LPA as three OS processes.

The SM-DP+ serves ES9+ over loopback HTTPS with its DPtls certificate; the card serves APDUs on a
loopback socket; the LPA process trusts only the test CI. Nothing is shared but files the user
would also hand over (the CI certificate, the activation code).
"""

from __future__ import annotations

import pytest

from rsp.testdata import testdata_dir
from tests.processes import kinsim, kinsim_json, start_card, start_smdp

pytestmark = pytest.mark.slow

PROFILE = testdata_dir() / "ts48" / "v7" / "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV.der"
ICCID = "89000123456789012341"


@pytest.fixture
def world(tmp_path):
    pki, state, card_dir = tmp_path / "pki", tmp_path / "smdp", tmp_path / "card"
    kinsim("certs", "generate", str(pki))
    kinsim("smdp", "profile", "add", "--state", str(state), str(PROFILE))
    kinsim("euicc", "create", str(card_dir), "--pki", str(pki))
    smdp, address = start_smdp(state, pki)
    card, card_address = start_card(card_dir)
    try:
        yield {"pki": pki, "state": state, "address": address, "card": card_address}
    finally:
        card.stop()
        smdp.stop()


def lpa(world, *args, check=True):
    return kinsim("lpa", "--card", world["card"], "--ci-cert", str(world["pki"] / "ci.der"),
                  "--config-dir", str(world["pki"].parent / "lpa"), *args, check=check)


def order(world) -> dict:
    return kinsim_json("smdp", "order", "create", "--state", str(world["state"]), "--iccid", ICCID, "--release")


def smdp_state(world) -> str:
    orders = kinsim_json("smdp", "order", "list", "--state", str(world["state"]))
    return next(o["state"] for o in orders if o["iccid"] == ICCID)


def test_download_across_three_processes(world):
    code = order(world)["activationCode"]
    assert code.startswith(f"LPA:1${world['address']}$")

    lpa(world, "profile", "download", "-a", code, "--yes")

    profiles = lpa(world, "profile", "list", "--json").stdout
    assert ICCID in profiles
    assert smdp_state(world) == "Installed"  # after HandleNotification of the installation result

    again = lpa(world, "profile", "download", "-a", code, "--yes", check=False)
    assert again.returncode == 1
    assert "8.2.6" in again.stderr and "3.8" in again.stderr  # Matching ID / Refused
    assert "Traceback" not in again.stderr
    assert smdp_state(world) == "Installed"


def test_enable_disable_delete_across_processes(world):
    lpa(world, "profile", "download", "-a", order(world)["activationCode"], "--yes")
    lpa(world, "profile", "enable", ICCID)
    assert '"enabled"' in lpa(world, "profile", "list", "--json").stdout
    lpa(world, "profile", "disable", ICCID)
    lpa(world, "profile", "delete", ICCID)
    assert ICCID not in lpa(world, "profile", "list", "--json").stdout
    # Every notification (install, enable, disable, delete) reached the SM-DP+ and left the card.
    assert lpa(world, "notification", "list", "--json").stdout.strip() in ("[]", "")


def test_lpa_refuses_a_server_outside_its_ci(world, tmp_path):
    other = tmp_path / "other-pki"
    kinsim("certs", "generate", str(other))
    code = order(world)["activationCode"]
    refused = kinsim("lpa", "--card", world["card"], "--ci-cert", str(other / "ci.der"),
                     "--config-dir", str(tmp_path / "lpa-other"), "profile", "download", "-a", code, "--yes",
                     check=False)
    assert refused.returncode == 1
    assert "CI" in refused.stderr and "Traceback" not in refused.stderr
    assert smdp_state(world) == "Released"  # nothing reached the SM-DP+
