"""What the ISD-R keeps across power cycles: installed profiles, pending notifications, counters.

The state is an immutable value; every ES10 function that changes the card computes a new
``CardState`` and commits it (with any new profile package blob) in one atomic store commit, so a
process killed at any point leaves the old state or the new one (SGP.22 3.1.3: a profile is either
installed with its notification or not at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

from rsp import messages as m
from rsp.errors import DecodeError
from rsp.ids import iccid_from_bcd

# SGP.22 2.2.3 / field practice: ISD-P AIDs follow the ISD-R's RID and PIX prefix; eUICCs number
# them A0000005591010FFFFFFFF89 00 001000, 001100, 001200, ...
ISDP_AID_PREFIX = bytes.fromhex("A0000005591010FFFFFFFF8900")
FIRST_ISDP = 0x001000
ISDP_STEP = 0x000100

OPERATIONAL = "operational"


def isdp_aid(number: int) -> bytes:
    """The AID of the ``number``-th ISD-P ever created on this card (numbers are never reused)."""
    return ISDP_AID_PREFIX + (FIRST_ISDP + number * ISDP_STEP).to_bytes(3, "big")


@dataclass(frozen=True)
class Profile:
    """One installed profile: its ISD-P, state, metadata as the SM-DP+ sent it, and its package."""

    iccid: str
    aid: bytes
    enabled: bool
    metadata: bytes  # StoreMetadataRequest DER ('BF25'), as received in the sequenceOf88
    package: str  # blob reference ("sha256:...") of the unprotected profile package (SAIP)
    size: int  # bytes of non-volatile memory the profile occupies
    nickname: str = ""
    dp_proprietary: bytes | None = None  # DpProprietaryData DER from ConfigureISDP ('B8' in ProfileInfo)
    # Live state of the profile's applications (euicc_sim.uicc): {"sqn": {...}, "pins": {...}}
    runtime: dict = field(default_factory=dict, compare=False)

    @cached_property
    def parsed_metadata(self) -> m.StoreMetadataRequest:
        return m.decode(m.StoreMetadataRequest, self.metadata)

    @property
    def profile_class(self) -> str:
        value = self.parsed_metadata["profileClass"].native
        return value if value is not None else OPERATIONAL  # SGP.22 5.4.1: absent means operational

    @property
    def pprs(self) -> set[str]:
        return set(self.parsed_metadata["profilePolicyRules"].native or ())

    @property
    def service_provider(self) -> str:
        return self.parsed_metadata["serviceProviderName"].native

    @property
    def name(self) -> str:
        return self.parsed_metadata["profileName"].native

    def notification_addresses(self, operation: str) -> list[str]:
        """Where this profile's ``operation`` notifications go (notificationConfigurationInfo, 5.4.1)."""
        entries = self.parsed_metadata["notificationConfigurationInfo"].native or []
        return [e["notificationAddress"] for e in entries if operation in e["profileManagementOperation"]]

    def to_json(self) -> dict:
        return {
            "iccid": self.iccid,
            "aid": self.aid.hex(),
            "enabled": self.enabled,
            "metadata": self.metadata.hex(),
            "package": self.package,
            "size": self.size,
            "nickname": self.nickname,
            "dpProprietary": self.dp_proprietary.hex() if self.dp_proprietary is not None else None,
            "runtime": self.runtime,
        }

    @classmethod
    def from_json(cls, data: dict) -> Profile:
        dp = data.get("dpProprietary")
        return cls(
            iccid=data["iccid"],
            aid=bytes.fromhex(data["aid"]),
            enabled=bool(data["enabled"]),
            metadata=bytes.fromhex(data["metadata"]),
            package=data["package"],
            size=int(data["size"]),
            nickname=data.get("nickname", ""),
            dp_proprietary=bytes.fromhex(dp) if dp else None,
            runtime=dict(data.get("runtime") or {}),
        )


@dataclass(frozen=True)
class Notification:
    """A pending notification: its NotificationMetadata facts and the signed PendingNotification DER."""

    seq: int
    operation: str  # one NotificationEvent bit name, e.g. "notificationInstall"
    address: str
    iccid: str | None
    pending: bytes  # PendingNotification DER: ProfileInstallationResult (BF37), OtherSignedNotification or v3 RPM result

    def to_json(self) -> dict:
        return {
            "seq": self.seq,
            "operation": self.operation,
            "address": self.address,
            "iccid": self.iccid,
            "pending": self.pending.hex(),
        }

    @classmethod
    def from_json(cls, data: dict) -> Notification:
        return cls(
            seq=int(data["seq"]),
            operation=data["operation"],
            address=data["address"],
            iccid=data.get("iccid"),
            pending=bytes.fromhex(data["pending"]),
        )


@dataclass(frozen=True)
class CardState:
    profiles: tuple[Profile, ...] = ()
    notifications: tuple[Notification, ...] = ()
    next_seq: int = 1  # SGP.22 5.7.10: sequence numbers increase and are never reused
    next_isdp: int = 0
    default_dp_address: str | None = None
    extra: dict = field(default_factory=dict, compare=False)  # unknown keys, kept as they were

    # --- lookups ------------------------------------------------------------------------------

    def find(self, *, iccid: str | None = None, aid: bytes | None = None) -> Profile | None:
        for profile in self.profiles:
            if (iccid is not None and profile.iccid == iccid) or (aid is not None and profile.aid == aid):
                return profile
        return None

    @property
    def enabled(self) -> Profile | None:
        return next((p for p in self.profiles if p.enabled), None)

    @property
    def used_memory(self) -> int:
        return sum(p.size for p in self.profiles)

    # --- changes (each returns a new state) ---------------------------------------------------

    def with_profile(self, profile: Profile) -> CardState:
        """``profile`` added, or replacing the one with its ISD-P AID."""
        others = tuple(p for p in self.profiles if p.aid != profile.aid)
        if len(others) == len(self.profiles):
            return replace(self, profiles=(*self.profiles, profile))
        return replace(self, profiles=tuple(profile if p.aid == profile.aid else p for p in self.profiles))

    def without_profile(self, aid: bytes) -> CardState:
        return replace(self, profiles=tuple(p for p in self.profiles if p.aid != aid))

    def with_notification(self, notification: Notification) -> CardState:
        return replace(
            self,
            notifications=(*self.notifications, notification),
            next_seq=max(self.next_seq, notification.seq + 1),
        )

    def without_notification(self, seq: int) -> CardState:
        return replace(self, notifications=tuple(n for n in self.notifications if n.seq != seq))

    # --- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            **self.extra,
            "profiles": [p.to_json() for p in self.profiles],
            "notifications": [n.to_json() for n in self.notifications],
            "nextSeqNumber": self.next_seq,
            "nextIsdp": self.next_isdp,
            "defaultDpAddress": self.default_dp_address,
        }

    @classmethod
    def from_json(cls, data: dict) -> CardState:
        known = {"profiles", "notifications", "nextSeqNumber", "nextIsdp", "defaultDpAddress"}
        try:
            return cls(
                profiles=tuple(Profile.from_json(p) for p in data.get("profiles", [])),
                notifications=tuple(Notification.from_json(n) for n in data.get("notifications", [])),
                next_seq=int(data.get("nextSeqNumber", 1)),
                next_isdp=int(data.get("nextIsdp", 0)),
                default_dp_address=data.get("defaultDpAddress"),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as exc:
            raise DecodeError(f"eUICC state is malformed: a profile or notification lacks {exc}") from None
        except (AttributeError, TypeError, ValueError) as exc:  # a list or object where the other belongs
            raise DecodeError(f"eUICC state is malformed: {exc}") from None


def metadata_iccid(metadata: m.StoreMetadataRequest) -> str:
    """The ICCID of StoreMetadata as digits (the field is EF.ICCID-coded, nibble-swapped)."""
    return iccid_from_bcd(metadata["iccid"].native)
