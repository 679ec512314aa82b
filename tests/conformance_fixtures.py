"""Targets for the conformance runner: our SM-DP+ over TLS on an ephemeral loopback port (ES9+ and
ES2+), and our software eUICC in a temporary directory; plus what the runner needs to reach them."""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs.pki import Pki, generate_pki
from certs.sgp26 import sgp26_cis
from conformance.es9_cases import Es9Context
from conformance.es9_cases import run as run_es9
from conformance.es9_euicc import RunnerEuicc
from conformance.es9_http import Es9Http
from conformance.es10_cases import Es10Context
from conformance.es10_cases import run as run_es10
from conformance.es10_smdp import RunnerSmdp
from conformance.identity import EuiccMaterial, known_cis
from conformance.orders import Es2Orders, ListedOrders, other_eid
from euicc_sim.card import create_euicc, open_euicc
from euicc_sim.identity import issue_identity
from lpa.es10 import Es10Client
from lpa.transport import SimCardTransport
from mno.es2_client import Es2Client
from smdp.config import SmdpConfig
from smdp.core import SmdpCore
from smdp.orders import import_profile
from smdp.store import Store
from tests.smdp_fixtures import PROFILE_TYPE, OperatorPki, ServerThread, packages

ADDRESS = "localhost"  # generate_pki's DPtls covers localhost and 127.0.0.1
REQUESTER = "conformance-operator"
_PKIS: dict[str, Pki] = {}


def test_pki(name: str = "main") -> Pki:
    """One generated SGP.22 hierarchy per name for the whole run (generation is slow-ish)."""
    if name not in _PKIS:
        _PKIS[name] = generate_pki("nist", smdp_address=ADDRESS, now=datetime.now(UTC) - timedelta(days=1))
    return _PKIS[name]


test_pki.__test__ = False


@dataclass
class SmdpTarget:
    """Our SM-DP+ behind HTTPS (ES9+ and ES2+), its core and store for inspection."""

    core: SmdpCore
    store: Store
    server: ServerThread
    pki: Pki
    operator_cert: Path
    operator_key: Path

    @property
    def es9_port(self) -> int:
        return int(self.server.urls["es9"].rsplit(":", 1)[1])

    def es2_client(self) -> Es2Client:
        context = ssl.create_default_context(cadata=self.pki.ci.cert_pem.decode("ascii"))
        context.load_cert_chain(self.operator_cert, self.operator_key)
        return Es2Client(self.server.urls["es2"], REQUESTER, ssl_context=context)

    def close(self) -> None:
        self.server.stop()
        self.store.close()


def start_smdp(directory: Path, *, profiles: int = 30, **settings) -> SmdpTarget:
    """Our SM-DP+ trusting its own CI and the SGP.26 CIs, with ``profiles`` TS.48 profiles in stock."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = test_pki()
    operator = OperatorPki()
    client = operator.client(REQUESTER)
    cert, key = directory / "operator.pem", directory / "operator.key.pem"
    cert.write_bytes(client.cert_pem)
    key.write_bytes(client.key_pem)
    config = SmdpConfig.for_pkis([pki], address=ADDRESS, extra_cis=sgp26_cis(),
                                 es2_client_ca=operator.save_ca(directory / "operator-ca.pem"), **settings)
    store = Store.open(directory / "smdp")
    core = SmdpCore(config, store)
    now = datetime.now(UTC)
    for package in packages(profiles):
        import_profile(store, package.der, now, PROFILE_TYPE)
    return SmdpTarget(core, store, ServerThread(core, es2=True), pki, cert, key)


def es9_context(target: SmdpTarget, material: EuiccMaterial, orders) -> Es9Context:
    http = Es9Http(f"{ADDRESS}:{target.es9_port}", target.pki.ci.cert, connect_to=f"127.0.0.1:{target.es9_port}")
    clock = lambda: datetime.now(UTC)  # noqa: E731
    euicc = RunnerEuicc(material, target.pki.ci.cert, rng=os.urandom, clock=clock)
    return Es9Context(http, euicc, orders, ADDRESS, os.urandom, clock)


def es2_orders(target: SmdpTarget, material: EuiccMaterial) -> Es2Orders:
    return Es2Orders(target.es2_client(), profile_type=PROFILE_TYPE, eid=material.eid, rng=os.urandom)


def listed_orders(target: SmdpTarget, material: EuiccMaterial, *, released: int, cc: int, unreleased: int = 1,
                  other: int = 1) -> ListedOrders:
    """Orders made beforehand with the administrator's API, as a user would with 'kinsim smdp order'."""
    orders = target.core.orders

    def make(**kwargs):
        _, result = orders.create_order(profile_type=PROFILE_TYPE, **kwargs)
        return result["matchingId"]

    codes = [os.urandom(3).hex() for _ in range(cc)]
    return ListedOrders(
        released=[make() for _ in range(released)],
        cc=[(make(confirmation_code=code), code) for code in codes],
        unreleased=[make(release=False) for _ in range(unreleased)],
        other_eid=[make(eid=other_eid(material.eid, os.urandom)) for _ in range(other)],
    )


def run_es9_against(target: SmdpTarget, material: EuiccMaterial, orders=None, **options) -> list:
    ctx = es9_context(target, material, orders or es2_orders(target, material))
    return asyncio.run(run_es9(ctx, **options))


# --- the software eUICC ---------------------------------------------------------------------------


def make_card(directory: Path, pki: Pki) -> Path:
    """A software eUICC certified by ``pki``'s EUM and trusting its CI (the runner's SM-DP+ CI)."""
    identity = issue_identity(pki.eum, [pki.ci.cert], now=datetime.now(UTC) - timedelta(hours=1))
    create_euicc(directory, identity)
    return directory


def run_es10_against(directory: Path, pki: Pki, **options) -> list:
    euicc = open_euicc(directory)
    transport = SimCardTransport(euicc.card, on_close=euicc.close)
    try:
        return run_es10_over(transport, pki, **options)
    finally:
        transport.close()


def run_es10_over(transport, pki: Pki, **options) -> list:
    """The ES10 catalogue through any card transport, the runner's SM-DP+ using ``pki``."""
    smdp = RunnerSmdp(pki, rng=os.urandom, clock=lambda: datetime.now(UTC))
    ctx = Es10Context(Es10Client(transport), smdp, known_cis(pki.ci.cert), os.urandom, lambda: datetime.now(UTC))
    return run_es10(ctx, **options)
