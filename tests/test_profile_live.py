"""A personalized profile, downloaded through the SM-DP+ (ES9+ over loopback TLS) into the software
eUICC, is live: READ BINARY gives its new ICCID and IMSI and its USIM passes AKA against the operator's
authenticator; the same challenge from another profile's keys fails (TS 31.102 7.1.2, TS 33.102 6.3)."""

from __future__ import annotations

import pytest
import pytest_asyncio

from certs.pki import generate_pki
from lpa import manage
from lpa.download import download_profile
from lpa.es9_client import Es9Pool, tls_context
from lpa.es10 import Es10Client, ProfileRef
from lpa.transport import SimCardTransport
from mno.authenticator import Authenticator, ChallengeOutcome, InMemoryAuthenticatorStore, Subscriber
from rsp import aka
from rsp.errors import ApduError
from rsp.ids import iccid_to_bcd
from rsp.saip import ProfilePackage
from rsp.saip.personalize import personalize
from rsp.testdata import ts48_profile
from smdp.orders import import_profile
from smdp.server import SmdpServer
from tests.lpa_fixtures import smdp_core, software_card

ADDRESS = "smdp.kinsim.test"
ICCID, IMSI = "8949012345678901237", "262019876543210"
KI, OPC = bytes(range(0x10, 0x20)), bytes(range(0x40, 0x50))


def transmit(card, hex_apdu: str) -> bytes:
    """One APDU as a phone's modem would send it, following '61xx' with GET RESPONSE."""
    response = card.transmit(bytes.fromhex(hex_apdu))
    if response[-2] == 0x61:
        response = card.transmit(bytes([0x00, 0xC0, 0x00, 0x00, response[-1]]))
    return response


def ok(response: bytes) -> bytes:
    if response[-2:] != b"\x90\x00":
        raise ApduError(int.from_bytes(response[-2:], "big"), "card refused")
    return response[:-2]


@pytest.fixture(scope="module")
def pki():
    return generate_pki("nist", smdp_address=ADDRESS)


@pytest_asyncio.fixture
async def card_with_profile(pki, tmp_path):
    smdp = smdp_core(pki, tmp_path / "smdp")
    profile = personalize(ts48_profile(), iccid=ICCID, imsi=IMSI, ki=KI, opc=OPC, algorithm="milenage")
    import_profile(smdp.store, profile, smdp.clock())
    _, order = smdp.orders.create_order(iccid=ICCID)
    server = SmdpServer(smdp)
    port = int((await server.start())["es9"].rsplit(":", 1)[1])
    euicc = software_card(pki, tmp_path / "card")
    try:
        async with Es9Pool(tls_context([pki.ci.cert]), connect_to={ADDRESS: ("127.0.0.1", port)}) as pool:
            with Es10Client(SimCardTransport(euicc.card)) as es10:
                await download_profile(es10, pool(ADDRESS), smdp_address=ADDRESS,
                                       matching_id=order["matchingId"], confirm=lambda _: True, peers=pool)
                await manage.enable_profile(es10, pool, ProfileRef(iccid=ICCID))
        yield euicc, ProfilePackage.decode(profile)
    finally:
        euicc.close()
        await server.stop()
        smdp.store.close()


def authenticator_for(imsi: str, ki: bytes, opc: bytes) -> Authenticator:
    auc = Authenticator(InMemoryAuthenticatorStore())
    auc.provision(Subscriber(imsi=imsi, iccid=ICCID, algorithm=aka.MILENAGE, k=ki, opc=opc))
    return auc


def usim_callable(card, usim_aid: bytes):
    def authenticate(rand: bytes, autn: bytes) -> bytes:
        ok(transmit(card, f"00A40404{len(usim_aid):02X}{usim_aid.hex()}"))
        data = aka.encode_authenticate_command(rand, autn)
        return ok(transmit(card, f"00880081{len(data):02X}{data.hex()}"))

    return authenticate


@pytest.mark.asyncio
async def test_read_binary_gives_the_new_iccid_and_imsi(card_with_profile):
    euicc, package = card_with_profile
    card = euicc.card
    ok(transmit(card, "00A4000C023F00"))
    ok(transmit(card, "00A4000C022FE2"))
    assert ok(transmit(card, "00B000000A")) == iccid_to_bcd(ICCID)
    ok(transmit(card, f"00A4040C{len(package.usim_aid):02X}{package.usim_aid.hex()}"))
    ok(transmit(card, "00A4000C026F07"))
    imsi_ef = ok(transmit(card, "00B0000009"))
    assert imsi_ef[0] == 8 and imsi_ef[1] & 0x0F == 0x09  # length, odd parity with IMSI type
    digits = "".join(f"{b & 0x0F}{b >> 4}" for b in imsi_ef[1:])
    assert digits[1:] == IMSI


@pytest.mark.asyncio
async def test_aka_passes_with_the_issued_keys_and_fails_with_another_profiles(card_with_profile):
    euicc, package = card_with_profile
    card = usim_callable(euicc.card, package.usim_aid)
    assert authenticator_for(IMSI, KI, OPC).challenge(IMSI, card) is ChallengeOutcome.AUTHENTICATED
    stranger = authenticator_for(IMSI, bytes(16), OPC)  # another profile's Ki for the same challenge
    assert stranger.challenge(IMSI, card) is ChallengeOutcome.MAC_FAILURE
