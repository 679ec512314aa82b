"""One call from an eUICC directory to a ready card: ``with open_euicc(DIR) as euicc: euicc.card``.

``create_euicc(DIR, identity)`` makes the directory: identity files first, then the first state
commit, which is what marks the card as created (a create killed halfway can simply be redone).
``open_euicc`` locks the directory (a second opener gets StoreLocked), loads the identity and state,
and wires the APDU layer (euicc_sim.apdu.Card) to the ISD-R (euicc_sim.isdr.Isdr).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime

from euicc_sim.apdu import Application, Card
from euicc_sim.identity import EuiccIdentity
from euicc_sim.isdr import Isdr
from euicc_sim.state import CardState, Profile
from euicc_sim.store import CardStore, StoreError
from euicc_sim.uicc import ProfileRuntime
from rsp.errors import DecodeError
from rsp.saip import ProfilePackage

_log = logging.getLogger(__name__)

# Builds the enabled profile's applications (MF, ADF.USIM, ...) from its SAIP package; by default
# euicc_sim.uicc.ProfileRuntime, whose SQN arrays and PIN counters persist with the profile.
ProfileApps = Callable[[bytes], list[Application]]


class SoftEuicc:
    """An open software eUICC: ``card`` for APDUs, ``isdr`` and ``store`` for inspection."""

    def __init__(self, store: CardStore, isdr: Isdr, profile_apps: ProfileApps | None = None):
        self.store = store
        self.isdr = isdr
        self._profile_apps = profile_apps
        self._apps: list[Application] | None = None
        self._runtime: ProfileRuntime | None = None
        isdr.on_enabled_change(self._forget_apps)
        self.card = Card(isdr, profile_apps=self._current_apps, on_reset=self._reset)

    @property
    def eid(self) -> str:
        return self.isdr.identity.eid

    @property
    def identity(self) -> EuiccIdentity:
        return self.isdr.identity

    def enabled_package(self) -> bytes | None:
        """The enabled profile's unprotected profile package (SAIP DER), if a profile is enabled."""
        return self.isdr.enabled_package()

    def _current_apps(self) -> list[Application]:
        # The Card wants the same application objects for as long as one profile stays enabled.
        if self._apps is None:
            profile = self.isdr.state.enabled
            self._apps = self._build_apps(profile) if profile is not None else []
        return self._apps

    def _build_apps(self, profile: Profile) -> list[Application]:
        package = self.isdr.package(profile)
        if self._profile_apps is not None:
            return self._profile_apps(package)
        aid = profile.aid
        try:
            self._runtime = ProfileRuntime(
                ProfilePackage.decode(package), profile.runtime.get("sqn"),
                lambda sqn: self.isdr.save_runtime(aid, sqn=sqn),
                pin_states=profile.runtime.get("pins"),
                on_pin_update=lambda pins: self.isdr.save_runtime(aid, pins=pins))
        except DecodeError as exc:  # a profile we cannot run must not make the card mute
            _log.error("the enabled profile %s cannot run: %s", profile.iccid, exc)
            return []
        return self._runtime.applications

    def _forget_apps(self) -> None:
        self._apps, self._runtime = None, None

    def _reset(self) -> None:
        self.isdr.reset()
        if self._runtime is not None:
            self._runtime.reset()

    def close(self) -> None:
        self.card.power_off()
        self.store.close()

    def __enter__(self) -> SoftEuicc:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def create_euicc(directory: str | os.PathLike, identity: EuiccIdentity) -> None:
    """Write a new eUICC to ``directory`` (created if missing); refuses a directory holding one."""
    with CardStore.open(directory, create=True) as store:
        if store.state:
            raise StoreError(f"{store.directory} already holds an eUICC (EID {_stored_eid(store)})")
        identity.save(store)
        store.commit(CardState(default_dp_address=identity.config.default_dp_address).to_json())


def open_euicc(
    directory: str | os.PathLike,
    *,
    clock: Callable[[], datetime] | None = None,
    rng: Callable[[int], bytes] | None = None,
    profile_apps: ProfileApps | None = None,
    checkpoint: Callable[[str], None] | None = None,
    power_on: bool = True,
) -> SoftEuicc:
    """Open (lock) an eUICC directory and return the card, powered on unless ``power_on`` is False.

    ``checkpoint`` is the store's crash-test hook (called between the durable steps of a commit).
    """
    store = CardStore.open(directory, checkpoint=checkpoint)
    try:
        if not store.state:
            raise StoreError(f"{store.directory} holds no eUICC (create one with 'kinsim euicc create')")
        isdr = Isdr(EuiccIdentity.load(store), store, clock=clock, rng=rng)
        euicc = SoftEuicc(store, isdr, profile_apps)
    except BaseException:
        store.close()
        raise
    if power_on:
        euicc.card.power_on()
    return euicc


def _stored_eid(store: CardStore) -> str:
    try:
        return store.read_identity("eid").decode().strip()
    except StoreError:
        return "unknown"
