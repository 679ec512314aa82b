"""Family shared plans, sans-IO: plans, members, invitations, quotas, access rules and the audit trail.

``PlanBook`` is the whole domain core. It reads and writes only through a ``PlanStore`` (one atomic
unit of work per operation: ``store.atomic(fn)`` runs ``fn(tx)`` in one transaction and may run it
again after a serialisation conflict), and takes time and randomness from an injected ``clock`` and
``rng``. The SM-DP+ (ES2+), the network authenticator and the profile personalisation are driven by
``mno.service`` from the values the core returns (``IssuedOrder``, ``Revocation``, ``Barring``).

Who may do what is decided here, once: every public method takes the acting ``Principal`` and checks
it before touching state; the views (``member_view``, ``plan_usage``) leave out what the viewer may
not see. Nothing personal (display names, EIDs, ICCIDs, IMSIs) goes into the audit details, profile
metadata or member notices.

Amounts are integers in the unit of their kind: data in bytes, voice in seconds, SMS in messages.
Each billing period is ``period_days`` long from the plan's anchor (creation day, 00:00 UTC); a
period's ledger starts empty, so roll-over needs no job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Protocol, TypeVar

from rsp.activation import ActivationCode
from rsp.errors import KinsimError
from rsp.ids import luhn_check_digit, validate_eid, validate_iccid

Clock = Callable[[], datetime]
Rng = Callable[[int], bytes]
T = TypeVar("T")

KINDS = ("data", "voice", "sms")
UNITS = {"data": "bytes", "voice": "seconds", "sms": "messages"}
SHARE_SCALE = 10_000  # shares are basis points of the pool: exact integer arithmetic
LATE_PERIODS = 1  # usage may arrive for the current period and this many before it
CLOCK_SKEW = timedelta(minutes=5)  # usage stamped this far in the future is still accepted
HISTORY_PERIODS = 3  # the dynamic policy looks at this many closed periods
MAX_NAME = 64
DEFAULT_TTL = timedelta(days=7)
DEFAULT_CC_ATTEMPTS = 3  # as the SM-DP+ default; its "retries exceeded" report closes the invitation too
MAX_MEMBERS_LIMIT = 32
NUMBERS_PER_MEMBER = 4  # ICCIDs/IMSIs reserved per member slot: room for device changes


# --- errors (the REST API maps each to one HTTP status) ------------------------------------------


class PlanError(KinsimError):
    http_status = 400


class InvalidRequest(PlanError):
    """The request itself is wrong (bad value, missing field)."""


class Unauthenticated(PlanError):
    http_status = 401


class Forbidden(PlanError):
    http_status = 403


class NotFound(PlanError):
    http_status = 404


class Conflict(PlanError):
    """The request is well-formed but the current state does not allow it."""

    http_status = 409


# --- vocabulary ----------------------------------------------------------------------------------


class Role(StrEnum):
    OWNER = "owner"
    ADULT = "adult"
    CHILD = "child"


class MemberState(StrEnum):
    INVITED = "invited"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class ProfileState(StrEnum):
    ORDERING = "ordering"  # personalised, ES2+ order being placed
    RELEASED = "released"  # on the SM-DP+, waiting for the member's device
    INSTALLED = "installed"
    CANCELLED = "cancelled"  # never installed: order failed, expired, cancelled
    REVOKED = "revoked"  # barred at the authenticator; remote deletion asked for
    DELETED = "deleted"  # a deletion notification confirmed it is gone from the eUICC


class InvitationState(StrEnum):
    ORDERING = "ordering"
    PENDING = "pending"
    USED = "used"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXHAUSTED = "exhausted"  # confirmation code or download attempts used up
    FAILED = "failed"  # the SM-DP+ refused the order


class Policy(StrEnum):
    FIXED = "fixed"  # each member gets their cap; uncapped members split the rest equally
    SHARED = "shared"  # first come, first served from the pool; caps are upper limits
    DYNAMIC = "dynamic"  # allowances follow recent demand; caps are upper limits


class Access(StrEnum):
    """Who a principal is with respect to a plan or member (for the rule table below)."""

    OPERATOR = "operator"
    OWNER = "owner"
    SELF = "self"
    MEMBER = "member"  # any member of the plan, including the owner


# --- principals and tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    role: str  # "operator", "owner", "member" or "system"
    plan_id: str | None = None
    member_id: str | None = None
    name: str = ""  # system principals: "smdp", "service"

    @property
    def label(self) -> str:
        """Who, for the audit log: a role and an opaque id, never a person's name."""
        if self.role in ("owner", "member"):
            return f"{self.role}:{self.member_id}"
        return self.name or self.role


OPERATOR = Principal("operator")
SYSTEM = Principal("system", name="service")
SMDP = Principal("system", name="smdp")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    token_hash: str
    role: str  # "owner" or "member"
    plan_id: str
    member_id: str
    created_at: datetime
    revoked_at: datetime | None = None


# --- entities ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Numbering:
    """The plan's block of ICCIDs and IMSIs: serials first..last, allocated in order."""

    iccid_prefix: str
    iccid_first: int
    iccid_last: int
    mcc: str
    mnc: str
    msin_first: int
    msin_last: int

    def iccid(self, serial: int) -> str:
        body = self.iccid_prefix + str(serial).zfill(19 - len(self.iccid_prefix))
        return body + luhn_check_digit(body)

    def imsi(self, serial: int) -> str:
        plmn = self.mcc + self.mnc
        return plmn + str(serial).zfill(15 - len(plmn))


@dataclass(frozen=True)
class Plan:
    plan_id: str
    name: str
    owner_member_id: str
    max_members: int
    pool: Mapping[str, int]
    policy: Policy
    period_days: int
    anchor: datetime
    created_at: datetime
    numbering: Numbering
    next_serial: int  # offset of the next unused ICCID/IMSI serial in the block
    template: str
    cc_required: bool
    invitation_ttl: timedelta
    max_cc_attempts: int


@dataclass(frozen=True)
class Member:
    member_id: str
    plan_id: str
    display_name: str
    role: Role
    state: MemberState
    created_at: datetime
    updated_at: datetime
    eid: str | None = None  # the device the member's current profile is bound to or installed on
    iccid: str | None = None  # the member's current profile


@dataclass(frozen=True)
class Profile:
    iccid: str
    plan_id: str
    member_id: str
    imsi: str
    state: ProfileState
    created_at: datetime
    eid: str | None = None
    installed_at: datetime | None = None
    revoked_at: datetime | None = None
    delete_requested: bool = False  # the SM-DP+ accepted the remote deletion (RpmOrder); until then it is asked again


@dataclass(frozen=True)
class Invitation:
    invitation_id: str
    plan_id: str
    member_id: str
    iccid: str
    state: InvitationState
    created_at: datetime
    expires_at: datetime
    cc_required: bool
    max_cc_attempts: int
    matching_id: str
    eid: str | None = None  # bound: only this eUICC may download
    activation_code: str | None = None  # known once the order is placed
    cc_failures: int = 0
    closed_at: datetime | None = None

    def effective_state(self, now: datetime) -> InvitationState:
        """PENDING past its expiry reads as EXPIRED even before the sweep records it."""
        if self.state is InvitationState.PENDING and now >= self.expires_at:
            return InvitationState.EXPIRED
        return self.state


@dataclass(frozen=True)
class Cap:
    """A member's limit for one kind: an absolute amount or a share of the pool (basis points)."""

    member_id: str
    kind: str
    amount: int | None = None
    share_bp: int | None = None

    def resolve(self, pool: int) -> int:
        if self.amount is not None:
            return min(self.amount, pool)
        return pool * (self.share_bp or 0) // SHARE_SCALE


@dataclass(frozen=True)
class UsageRecord:
    plan_id: str
    idempotency_key: str
    member_id: str
    kind: str
    amount: int
    at: datetime
    period: int
    charged: int
    excess: int  # the part refused: over the member's allowance or the pool
    received_at: datetime


@dataclass(frozen=True)
class UsageTotal:
    member_id: str
    kind: str
    period: int
    charged: int
    demand: int  # everything asked for, charged or not: the dynamic policy's signal


@dataclass(frozen=True)
class Notice:
    plan_id: str
    member_id: str
    at: datetime
    kind: str  # "throttled"
    details: Mapping[str, Any]


@dataclass(frozen=True)
class AuditEvent:
    plan_id: str | None
    at: datetime
    actor: str
    action: str
    target: str | None
    details: Mapping[str, Any]


# --- the store interface ---------------------------------------------------------------------------


class PlanTx(Protocol):
    """One unit of work. ``for_update`` locks the plan row until the unit ends (accounting)."""

    def get_plan(self, plan_id: str, for_update: bool = False) -> Plan | None: ...
    def list_plans(self) -> list[Plan]: ...
    def put_plan(self, plan: Plan) -> None: ...
    def get_member(self, member_id: str) -> Member | None: ...
    def plan_members(self, plan_id: str) -> list[Member]: ...
    def put_member(self, member: Member) -> None: ...
    def get_profile(self, iccid: str) -> Profile | None: ...
    def profile_by_imsi(self, imsi: str) -> Profile | None: ...
    def member_profiles(self, member_id: str) -> list[Profile]: ...
    def put_profile(self, profile: Profile) -> None: ...
    def get_invitation(self, invitation_id: str) -> Invitation | None: ...
    def invitation_for_iccid(self, iccid: str) -> Invitation | None: ...
    def plan_invitations(self, plan_id: str) -> list[Invitation]: ...
    def put_invitation(self, invitation: Invitation) -> None: ...
    def plan_caps(self, plan_id: str) -> list[Cap]: ...
    def put_caps(self, plan_id: str, member_id: str, caps: list[Cap]) -> None:
        """Replace all caps of the member."""
        ...
    def get_usage(self, plan_id: str, idempotency_key: str) -> UsageRecord | None: ...
    def add_usage(self, record: UsageRecord) -> None: ...
    def usage_totals(self, plan_id: str, first_period: int, last_period: int) -> list[UsageTotal]: ...
    def member_usage(self, member_id: str, period: int) -> list[UsageRecord]: ...
    def add_notice(self, notice: Notice) -> None: ...
    def member_notices(self, member_id: str) -> list[Notice]: ...
    def add_audit(self, event: AuditEvent) -> None: ...
    def plan_audit(self, plan_id: str | None) -> list[AuditEvent]:
        """The plan's events, oldest first; ``None``: every event."""
        ...
    def put_token(self, record: TokenRecord) -> None: ...
    def get_token(self, token_hash: str) -> TokenRecord | None: ...
    def revoke_tokens(self, member_id: str, at: datetime) -> None: ...
    def allocate(self, counter: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers of a named counter; returns the first (from 0)."""
        ...


class PlanStore(Protocol):
    def atomic(self, fn: Callable[[PlanTx], T], readonly: bool = False) -> T:
        """Run ``fn`` as one unit of work. A writing unit sees the latest committed state once it holds
        the plan's row lock (``get_plan(for_update=True)``, taken before reading what it decides on);
        a ``readonly`` unit sees one consistent snapshot."""
        ...


@dataclass
class _Tables:
    plans: dict[str, Plan] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    invitations: dict[str, Invitation] = field(default_factory=dict)
    caps: dict[tuple[str, str, str], Cap] = field(default_factory=dict)  # (plan, member, kind)
    usage: dict[tuple[str, str], UsageRecord] = field(default_factory=dict)  # (plan, key)
    notices: list[Notice] = field(default_factory=list)
    audit: list[AuditEvent] = field(default_factory=list)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


class InMemoryPlanStore:
    """A PlanStore for tests and one-process demos: a unit of work sees and edits a private copy that
    replaces the shared state only if the unit returns normally (so a failure changes nothing)."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._lock = threading.Lock()

    def atomic(self, fn: Callable[[PlanTx], T], readonly: bool = False) -> T:
        with self._lock:
            if readonly:
                return fn(_MemoryTx(self._tables))
            work = deepcopy(self._tables)
            result = fn(_MemoryTx(work))
            self._tables = work
            return result


class _MemoryTx:
    def __init__(self, t: _Tables):
        self.t = t

    def get_plan(self, plan_id, for_update=False):
        return self.t.plans.get(plan_id)

    def list_plans(self):
        return sorted(self.t.plans.values(), key=lambda p: (p.created_at, p.plan_id))

    def put_plan(self, plan):
        self.t.plans[plan.plan_id] = plan

    def get_member(self, member_id):
        return self.t.members.get(member_id)

    def plan_members(self, plan_id):
        found = [m for m in self.t.members.values() if m.plan_id == plan_id]
        return sorted(found, key=lambda m: (m.created_at, m.member_id))

    def put_member(self, member):
        self.t.members[member.member_id] = member

    def get_profile(self, iccid):
        return self.t.profiles.get(iccid)

    def profile_by_imsi(self, imsi):
        return next((p for p in self.t.profiles.values() if p.imsi == imsi), None)

    def member_profiles(self, member_id):
        found = [p for p in self.t.profiles.values() if p.member_id == member_id]
        return sorted(found, key=lambda p: (p.created_at, p.iccid))

    def put_profile(self, profile):
        self.t.profiles[profile.iccid] = profile

    def get_invitation(self, invitation_id):
        return self.t.invitations.get(invitation_id)

    def invitation_for_iccid(self, iccid):
        return next((i for i in self.t.invitations.values() if i.iccid == iccid), None)

    def plan_invitations(self, plan_id):
        found = [i for i in self.t.invitations.values() if i.plan_id == plan_id]
        return sorted(found, key=lambda i: (i.created_at, i.invitation_id))

    def put_invitation(self, invitation):
        self.t.invitations[invitation.invitation_id] = invitation

    def plan_caps(self, plan_id):
        return [c for (p, _, _), c in sorted(self.t.caps.items()) if p == plan_id]

    def put_caps(self, plan_id, member_id, caps):
        for key in [k for k in self.t.caps if k[0] == plan_id and k[1] == member_id]:
            del self.t.caps[key]
        for cap in caps:
            self.t.caps[(plan_id, member_id, cap.kind)] = cap

    def get_usage(self, plan_id, idempotency_key):
        return self.t.usage.get((plan_id, idempotency_key))

    def add_usage(self, record):
        key = (record.plan_id, record.idempotency_key)
        if key in self.t.usage:
            raise Conflict(f"usage record {record.idempotency_key!r} exists")
        self.t.usage[key] = record

    def usage_totals(self, plan_id, first_period, last_period):
        sums: dict[tuple[str, str, int], list[int]] = {}
        for r in self.t.usage.values():
            if r.plan_id == plan_id and first_period <= r.period <= last_period:
                entry = sums.setdefault((r.member_id, r.kind, r.period), [0, 0])
                entry[0] += r.charged
                entry[1] += r.amount
        return [UsageTotal(m, k, p, c, d) for (m, k, p), (c, d) in sorted(sums.items())]

    def member_usage(self, member_id, period):
        found = [r for r in self.t.usage.values() if r.member_id == member_id and r.period == period]
        return sorted(found, key=lambda r: (r.at, r.idempotency_key))

    def add_notice(self, notice):
        self.t.notices.append(notice)

    def member_notices(self, member_id):
        return [n for n in self.t.notices if n.member_id == member_id]

    def add_audit(self, event):
        self.t.audit.append(event)

    def plan_audit(self, plan_id):
        return [e for e in self.t.audit if plan_id is None or e.plan_id == plan_id]

    def put_token(self, record):
        self.t.tokens[record.token_hash] = record

    def get_token(self, token_hash):
        return self.t.tokens.get(token_hash)

    def revoke_tokens(self, member_id, at):
        for key, rec in list(self.t.tokens.items()):
            if rec.member_id == member_id and rec.revoked_at is None:
                self.t.tokens[key] = replace(rec, revoked_at=at)

    def allocate(self, counter, count):
        first = self.t.counters.get(counter, 0)
        self.t.counters[counter] = first + count
        return first


# --- operator configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator decides once: numbering, names shown on devices, defaults."""

    service_provider_name: str = "kinsim"  # profile metadata serviceProviderName
    iccid_prefix: str = "8988247"  # 89 (telecom) + country code + issuer id
    mcc: str = "001"  # TS.48 test network
    mnc: str = "01"
    default_template: str = "TS48_V7.0_eSIM_GTP_SAIP2.3_NoBERTLV.der"
    operator_token_hashes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        prefix = self.iccid_prefix
        if not (prefix.isdigit() and prefix.startswith("89") and 4 <= len(prefix) <= 12):
            raise InvalidRequest("ICCID prefix must be 4 to 12 digits starting with 89")
        if not (self.mcc.isdigit() and len(self.mcc) == 3 and self.mnc.isdigit() and len(self.mnc) in (2, 3)):
            raise InvalidRequest("MCC must be 3 digits and MNC 2 or 3 digits")


# --- results handed to the service (what it must do outside the core) -----------------------------


@dataclass(frozen=True)
class IssuedOrder:
    """A profile to personalise, provision and place on the SM-DP+ (ES2+ DownloadOrder/ConfirmOrder)."""

    plan: Plan
    member: Member
    profile: Profile
    invitation: Invitation
    ki: bytes
    opc: bytes
    confirmation_code: str | None
    member_token: str | None  # only when the invitation created the member
    replaced: Revocation | None = None  # device change: the old profile to revoke


@dataclass(frozen=True)
class Revocation:
    """Effects of revoking: IMSIs to bar, orders to cancel, installed profiles to delete remotely."""

    member: Member
    bar_imsis: tuple[str, ...] = ()
    cancel_orders: tuple[str, ...] = ()  # ICCIDs never installed
    remote_deletes: tuple[tuple[str, str | None], ...] = ()  # (ICCID, EID) of installed profiles


@dataclass(frozen=True)
class ClosedInvitation:
    """An invitation withdrawn or expired: cancel its order and bar its never-installed profile."""

    invitation: Invitation
    imsi: str


@dataclass(frozen=True)
class Barring:
    member: Member
    imsis: tuple[str, ...]
    barred: bool


@dataclass(frozen=True)
class ProgressEvent:
    """One ES2+ HandleDownloadProgressInfo, as the ES2+ layer parsed it (SGP.22 5.3.5)."""

    iccid: str
    point_id: int
    success: bool
    eid: str | None = None
    reason: str | None = None  # "subjectCode/reasonCode" of a failure
    operation: str | None = None  # from resultData: "install", "enable", "disable", "delete"
    install_ok: bool | None = None  # ProfileInstallationResult finalResult


@dataclass(frozen=True)
class ProgressOutcome:
    """What the service must do after a progress event."""

    cancel_order: str | None = None  # ICCID whose order must be cancelled (attempts exhausted)
    bar_imsi: str | None = None
    remote_delete: tuple[str, str | None] | None = None


@dataclass(frozen=True)
class IngestResult:
    record: UsageRecord
    duplicate: bool
    allowance: int
    member_remaining: int
    pool_remaining: int
    throttled: bool


_LIVE_OR_COMING = (ProfileState.ORDERING, ProfileState.RELEASED, ProfileState.INSTALLED)

# SGP.22 5.3.5 notification points
POINT_ELIGIBILITY = 1  # eligibility and retry limit check
POINT_CONFIRMATION = 2  # confirmation failure (wrong code, retries exceeded)
POINT_BPP_DOWNLOAD = 3
POINT_BPP_INSTALLATION = 4
RETRIES_EXCEEDED_REASON = "6.4"  # SGP.22 5.2.6.2 "Maximum number of attempts exceeded"


# --- pure helpers ----------------------------------------------------------------------------------


def new_id(prefix: str, rng: Rng) -> str:
    return f"{prefix}-{rng(8).hex()}"


_MATCHING_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_matching_id(rng: Rng) -> str:
    """Twenty characters of A-Z/2-7 (100 random bits) in groups of five: SGP.22 4.1 allows 0-9A-Z-."""
    bits = int.from_bytes(rng(13), "big") >> 4
    chars = [_MATCHING_ALPHABET[(bits >> (5 * i)) & 31] for i in range(20)]
    return "-".join("".join(chars[i : i + 5]) for i in range(0, 20, 5))


def new_confirmation_code(rng: Rng, digits: int = 8) -> str:
    """Uniform decimal digits by rejection sampling (no modulo bias)."""
    limit = (1 << 32) // 10**digits * 10**digits
    while True:
        value = int.from_bytes(rng(4), "big")
        if value < limit:
            return str(value % 10**digits).zfill(digits)


def new_token(rng: Rng) -> str:
    return "kst_" + base64.urlsafe_b64encode(rng(24)).decode("ascii").rstrip("=")


def period_of(plan: Plan, at: datetime) -> int:
    return (at - plan.anchor) // timedelta(days=plan.period_days)


def period_bounds(plan: Plan, period: int) -> tuple[datetime, datetime]:
    start = plan.anchor + timedelta(days=plan.period_days) * period
    return start, start + timedelta(days=plan.period_days)


def _equal_split(amount: int, members: list[str]) -> dict[str, int]:
    return {m: amount // len(members) for m in members} if members else {}


def _fill_under_caps(pool: int, wanted: dict[str, int], caps: dict[str, int]) -> dict[str, int]:
    """Clamp each allowance to its cap and hand what that frees to the uncapped, equally, until stable."""
    result = {m: min(v, caps.get(m, pool)) for m, v in wanted.items()}
    while True:
        spare = pool - sum(result.values())
        open_members = [m for m in result if result[m] < caps.get(m, pool)]
        if spare < len(open_members) or not open_members:
            return result
        share = spare // len(open_members)
        for m in open_members:
            result[m] = min(result[m] + share, caps.get(m, pool))


def allowances_for_kind(
    policy: Policy, pool: int, members: list[str], caps: Mapping[str, Cap], history: Mapping[str, list[int]]
) -> dict[str, int]:
    """Per-member allowance of one kind for one period; the sum never exceeds the pool.

    ``members`` are those sharing the pool (not revoked); ``history`` holds each member's demand in the
    closed periods the dynamic policy looks at.
    """
    limits = {m: caps[m].resolve(pool) for m in members if m in caps}
    if policy is Policy.SHARED:
        return {m: limits.get(m, pool) for m in members}
    if policy is Policy.FIXED:
        uncapped = [m for m in members if m not in limits]
        rest = _equal_split(max(0, pool - sum(limits.values())), uncapped)
        return {m: limits.get(m, rest.get(m, 0)) for m in members}
    return _fill_under_caps(pool, _dynamic_wanted(pool, members, history), limits)


def _dynamic_wanted(pool: int, members: list[str], history: Mapping[str, list[int]]) -> dict[str, int]:
    """Half the pool split equally (a floor for everyone), half in proportion to average recent demand."""
    if not members:
        return {}
    floor = _equal_split(pool // 2, members)
    rest = pool - sum(floor.values())
    demand = {m: sum(history.get(m, [])) for m in members}
    total = sum(demand.values())
    if total == 0:
        extra = _equal_split(rest, members)
    else:
        extra = {m: rest * demand[m] // total for m in members}
    return {m: floor[m] + extra[m] for m in members}


def charge(amount: int, member_remaining: int, pool_remaining: int) -> tuple[int, int]:
    """(charged, excess): what fits in both the member's allowance and the pool, and the rest."""
    charged = max(0, min(amount, member_remaining, pool_remaining))
    return charged, amount - charged


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise InvalidRequest(f"usage kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def _check_amount(value: Any, what: str, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        floor = "a non-negative" if allow_zero else "a positive"
        raise InvalidRequest(f"{what} must be {floor} integer, got {value!r}")
    if value >= 1 << 62:
        raise InvalidRequest(f"{what} is too large")
    return value


def _check_int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{what} must be an integer from {low} to {high}")
    return value


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be true or false")
    return value


def _check_text(value: Any, what: str, longest: int) -> str:
    """An identifier-like string: printable, no control characters (NUL cannot even be stored)."""
    if not isinstance(value, str) or not 1 <= len(value) <= longest or not value.isprintable():
        raise InvalidRequest(f"{what} must be 1 to {longest} printable characters")
    return value


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidRequest(f"{what} must be 1 to {MAX_NAME} characters")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS for ch in value):
        # names are printed in terminals and on the owner page: no escape sequences, no reordered text
        raise InvalidRequest(f"{what} must not contain control characters")
    return value.strip()


def _check_eid(eid: Any) -> str | None:
    if eid is None:
        return None
    if not isinstance(eid, str):
        raise InvalidRequest("EID must be a string of 32 digits")
    try:
        return validate_eid(eid)
    except KinsimError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_pool(pool: Any) -> dict[str, int]:
    if not isinstance(pool, Mapping) or not pool:
        raise InvalidRequest(f"pool must map some of {', '.join(KINDS)} to amounts")
    return {_check_kind(k): _check_amount(v, f"pool {k}") for k, v in pool.items()}


def parse_caps(member_id: str, caps: Any) -> list[Cap]:
    """{"data": {"amount": N} | {"share": 0.25} | {"share_bp": 2500} | null, ...} -> caps to keep."""
    if not isinstance(caps, Mapping):
        raise InvalidRequest("caps must be an object keyed by usage kind")
    result = []
    for kind, spec in caps.items():
        _check_kind(kind)
        if spec is None:
            continue
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise InvalidRequest(f"cap {kind} must be {{'amount': N}} or {{'share': F}} or {{'share_bp': N}}")
        ((how, value),) = spec.items()
        if how == "amount":
            result.append(Cap(member_id, kind, amount=_check_amount(value, f"cap {kind}")))
        elif how in ("share", "share_bp"):
            bp = _share_bp(value) if how == "share" else _check_amount(value, f"cap {kind} share_bp")
            if bp > SHARE_SCALE:
                raise InvalidRequest(f"cap {kind} share must be at most the whole pool")
            result.append(Cap(member_id, kind, share_bp=bp))
        else:
            raise InvalidRequest(f"cap {kind}: unknown form {how!r}")
    return result


def _share_bp(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidRequest(f"a share is a number from 0 to 1, got {value!r}")
    bp = round(value * SHARE_SCALE)
    if abs(bp - value * SHARE_SCALE) > 1e-6:
        raise InvalidRequest(f"a share has at most four decimal places (basis points), got {value!r}")
    return bp


def cap_json(cap: Cap) -> dict[str, int | float]:
    if cap.amount is not None:
        return {"amount": cap.amount}
    return {"share": (cap.share_bp or 0) / SHARE_SCALE}


# --- access rules ----------------------------------------------------------------------------------

# action -> who may do it. OWNER: the plan's owner; SELF: the member the request is about;
# MEMBER: any member of the plan. A member's token is theirs alone: whoever could rotate it could read
# their records and EID, so the owner may not (the operator, who sees those anyway, may).
RULES: dict[str, frozenset[Access]] = {
    "plan.create": frozenset({Access.OPERATOR}),
    "plan.list": frozenset({Access.OPERATOR}),
    "plan.read": frozenset({Access.OPERATOR, Access.OWNER, Access.MEMBER}),
    "plan.update": frozenset({Access.OPERATOR, Access.OWNER}),
    "plan.pool": frozenset({Access.OPERATOR}),
    "members.list": frozenset({Access.OPERATOR, Access.OWNER}),
    "member.invite": frozenset({Access.OPERATOR, Access.OWNER}),
    "member.read": frozenset({Access.OPERATOR, Access.OWNER, Access.SELF}),
    "member.revoke": frozenset({Access.OPERATOR, Access.OWNER}),
    "member.suspend": frozenset({Access.OPERATOR, Access.OWNER}),
    "member.device": frozenset({Access.OPERATOR, Access.OWNER, Access.SELF}),
    "member.token": frozenset({Access.OPERATOR, Access.SELF}),
    "caps.set": frozenset({Access.OPERATOR, Access.OWNER}),
    "usage.plan": frozenset({Access.OPERATOR, Access.OWNER, Access.MEMBER}),
    "usage.records": frozenset({Access.OPERATOR, Access.SELF}),
    "usage.ingest": frozenset({Access.OPERATOR}),
    "notices.read": frozenset({Access.SELF}),
    "invitations.list": frozenset({Access.OPERATOR, Access.OWNER}),
    "invitation.cancel": frozenset({Access.OPERATOR, Access.OWNER}),
    "audit.read": frozenset({Access.OPERATOR, Access.OWNER}),
    "audit.all": frozenset({Access.OPERATOR}),
}


def relations(principal: Principal, plan_id: str | None, member_id: str | None = None) -> set[Access]:
    if principal.role == "operator":
        return {Access.OPERATOR}
    if principal.role not in ("owner", "member") or plan_id is None or principal.plan_id != plan_id:
        return set()
    found = {Access.MEMBER}
    if principal.role == "owner":
        found.add(Access.OWNER)
    if member_id is not None and principal.member_id == member_id:
        found.add(Access.SELF)
    return found


def allowed(action: str, principal: Principal, plan_id: str | None, member_id: str | None = None) -> bool:
    return bool(RULES[action] & relations(principal, plan_id, member_id))


def sees_private(viewer: Principal, member: Member) -> bool:
    """EID, ICCID, IMSI and records of a member: the member and the operator only."""
    return viewer.role == "operator" or (viewer.plan_id == member.plan_id and viewer.member_id == member.member_id)


def member_view(member: Member, viewer: Principal) -> dict[str, Any]:
    view: dict[str, Any] = {
        "member_id": member.member_id,
        "display_name": member.display_name,
        "role": member.role.value,
        "state": member.state.value,
        "created_at": iso(member.created_at),
    }
    if sees_private(viewer, member):
        view.update(eid=member.eid, iccid=member.iccid)
    return view


def profile_view(profile: Profile) -> dict[str, Any]:
    return {
        "iccid": profile.iccid, "imsi": profile.imsi, "state": profile.state.value, "eid": profile.eid,
        "created_at": iso(profile.created_at), "installed_at": iso(profile.installed_at),
        "revoked_at": iso(profile.revoked_at), "delete_requested": profile.delete_requested,
    }  # fmt: skip


def invitation_view(inv: Invitation, now: datetime) -> dict[str, Any]:
    """For the owner and operator: whether it is EID-bound, not which EID."""
    return {
        "invitation_id": inv.invitation_id,
        "member_id": inv.member_id,
        "state": inv.effective_state(now).value,
        "activation_code": inv.activation_code if inv.effective_state(now) is InvitationState.PENDING else None,
        "eid_bound": inv.eid is not None,
        "cc_required": inv.cc_required,
        "cc_failures": inv.cc_failures,
        "max_cc_attempts": inv.max_cc_attempts,
        "created_at": iso(inv.created_at),
        "expires_at": iso(inv.expires_at),
    }


def plan_view(plan: Plan, viewer: Principal) -> dict[str, Any]:
    view: dict[str, Any] = {
        "plan_id": plan.plan_id,
        "name": plan.name,
        "policy": plan.policy.value,
        "pool": dict(plan.pool),
        "units": {k: UNITS[k] for k in plan.pool},
        "period_days": plan.period_days,
        "anchor": iso(plan.anchor),
        "max_members": plan.max_members,
    }
    if viewer.role == "operator" or Access.OWNER in relations(viewer, plan.plan_id):
        view.update(owner_member_id=plan.owner_member_id, cc_required=plan.cc_required,
                    invitation_ttl_seconds=int(plan.invitation_ttl.total_seconds()),
                    max_cc_attempts=plan.max_cc_attempts, template=plan.template)
    return view


def audit_view(event: AuditEvent) -> dict[str, Any]:
    return {"at": iso(event.at), "actor": event.actor, "action": event.action, "target": event.target,
            "details": dict(event.details)}


def usage_record_view(record: UsageRecord) -> dict[str, Any]:
    return {"idempotency_key": record.idempotency_key, "kind": record.kind, "amount": record.amount,
            "at": iso(record.at), "period": record.period, "charged": record.charged, "excess": record.excess}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the core --------------------------------------------------------------------------------------


class PlanBook:
    def __init__(self, store: PlanStore, config: OperatorConfig | None = None,
                 clock: Clock = lambda: datetime.now(UTC), rng: Rng = os.urandom):
        self.store = store
        self.config = config or OperatorConfig()
        self._clock = clock
        self._rng = rng

    def now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return moment

    # --- authentication and authorisation -------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("a bearer token is required")
        digest = token_hash(token)
        if any(hmac.compare_digest(digest, known) for known in self.config.operator_token_hashes):
            return OPERATOR
        record = self.store.atomic(lambda tx: tx.get_token(digest), readonly=True)
        if record is None or record.revoked_at is not None:
            raise Unauthenticated("unknown or revoked token")
        return Principal(record.role, record.plan_id, record.member_id)

    def _require(self, action: str, actor: Principal, plan_id: str | None, member_id: str | None = None) -> None:
        if allowed(action, actor, plan_id, member_id):
            return
        if plan_id is not None and actor.role != "operator" and actor.plan_id != plan_id:
            raise NotFound("no such plan")  # do not confirm that someone else's plan exists
        raise Forbidden(f"{actor.role} may not {action.replace('.', ' ')}")

    def _plan(self, tx: PlanTx, plan_id: str, for_update: bool = False) -> Plan:
        plan = tx.get_plan(plan_id, for_update=for_update)
        if plan is None:
            raise NotFound("no such plan")
        return plan

    def _member(self, tx: PlanTx, plan: Plan, member_id: str) -> Member:
        member = tx.get_member(member_id)
        if member is None or member.plan_id != plan.plan_id:
            raise NotFound("no such member in this plan")
        return member

    def _audit(self, tx: PlanTx, plan_id: str | None, actor: Principal, action: str,
               target: str | None = None, **details: Any) -> None:
        tx.add_audit(AuditEvent(plan_id, self.now(), actor.label, action, target, details))

    def _issue_token(self, tx: PlanTx, role: str, plan_id: str, member_id: str) -> str:
        token = new_token(self._rng)
        tx.put_token(TokenRecord(token_hash(token), role, plan_id, member_id, self.now()))
        return token

    # --- plans ----------------------------------------------------------------------------------

    def create_plan(self, actor: Principal, name: str, owner_name: str, max_members: int,
                    pool: Mapping[str, int], policy: str = "shared", period_days: int = 30,
                    template: str | None = None, cc_required: bool = True,
                    invitation_ttl: timedelta = DEFAULT_TTL, max_cc_attempts: int = DEFAULT_CC_ATTEMPTS,
                    ) -> tuple[Plan, Member, str]:
        """A plan with its owner (an active member without a profile yet); returns the owner token."""
        self._require("plan.create", actor, None)
        name, owner_name = _check_name(name, "plan name"), _check_name(owner_name, "owner name")
        _check_int(max_members, "max_members", 1, MAX_MEMBERS_LIMIT)
        _check_int(period_days, "period_days", 1, 366)
        _check_int(max_cc_attempts, "max_cc_attempts", 1, 20)
        _check_bool(cc_required, "cc_required")
        if template is not None and "/" in _check_text(template, "template", 128):
            raise InvalidRequest("template names a file of the operator's template directory")
        if not timedelta(minutes=1) <= invitation_ttl <= timedelta(days=90):
            raise InvalidRequest("invitation TTL must be 1 minute to 90 days")
        pool = parse_pool(pool)
        policy_value = _parse_policy(policy)

        def work(tx: PlanTx) -> tuple[Plan, Member, str]:
            now = self.now()
            plan_id, owner_id = new_id("plan", self._rng), new_id("mem", self._rng)
            plan = Plan(plan_id, name, owner_id, max_members, pool, policy_value, period_days,
                        anchor=now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0),
                        created_at=now, numbering=self._allocate_numbers(tx, max_members), next_serial=0,
                        template=template or self.config.default_template, cc_required=cc_required,
                        invitation_ttl=invitation_ttl, max_cc_attempts=max_cc_attempts)
            owner = Member(owner_id, plan_id, owner_name, Role.OWNER, MemberState.ACTIVE, now, now)
            tx.put_plan(plan)
            tx.put_member(owner)
            token = self._issue_token(tx, "owner", plan_id, owner_id)
            self._audit(tx, plan_id, actor, "plan.created", plan_id, policy=policy_value.value, pool=dict(pool),
                        max_members=max_members, period_days=period_days)
            self._audit(tx, plan_id, actor, "member.added", owner_id, role=Role.OWNER.value)
            return plan, owner, token

        return self.store.atomic(work)

    def _allocate_numbers(self, tx: PlanTx, max_members: int) -> Numbering:
        size = max_members * NUMBERS_PER_MEMBER
        cfg = self.config
        iccid_first = tx.allocate(f"iccid:{cfg.iccid_prefix}", size)
        msin_first = tx.allocate(f"msin:{cfg.mcc}{cfg.mnc}", size)
        if len(str(iccid_first + size)) > 19 - len(cfg.iccid_prefix):
            raise Conflict("the operator's ICCID range is used up")
        if len(str(msin_first + size)) > 15 - len(cfg.mcc + cfg.mnc):
            raise Conflict("the operator's IMSI range is used up")
        return Numbering(cfg.iccid_prefix, iccid_first, iccid_first + size - 1, cfg.mcc, cfg.mnc,
                         msin_first, msin_first + size - 1)

    def list_plans(self, actor: Principal) -> list[Plan]:
        self._require("plan.list", actor, None)
        return self.store.atomic(lambda tx: tx.list_plans(), readonly=True)

    def get_plan(self, actor: Principal, plan_id: str) -> Plan:
        self._require("plan.read", actor, plan_id)
        return self.store.atomic(lambda tx: self._plan(tx, plan_id), readonly=True)

    def update_plan(self, actor: Principal, plan_id: str, *, name: str | None = None, policy: str | None = None,
                    pool: Mapping[str, int] | None = None, max_members: int | None = None) -> Plan:
        self._require("plan.update", actor, plan_id)
        if pool is not None or max_members is not None:
            self._require("plan.pool", actor, plan_id)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _check_name(name, "plan name")
        if policy is not None:
            changes["policy"] = _parse_policy(policy)
        if pool is not None:
            changes["pool"] = parse_pool(pool)
        if max_members is not None:
            changes["max_members"] = _check_int(max_members, "max_members", 1, MAX_MEMBERS_LIMIT)
        if not changes:
            raise InvalidRequest("nothing to change")

        def work(tx: PlanTx) -> Plan:
            plan = replace(self._plan(tx, plan_id, for_update=True), **changes)
            members = tx.plan_members(plan_id)
            if max_members is not None:
                if max_members > plan.numbering.iccid_last - plan.numbering.iccid_first + 1:
                    raise Conflict("max_members is beyond the plan's number block")
                if sum(m.state is not MemberState.REVOKED for m in members) > max_members:
                    raise Conflict("the plan already has more members than that")
            _check_fixed_fits(plan, members, tx.plan_caps(plan_id))
            tx.put_plan(plan)
            details = {k: (v.value if isinstance(v, Enum) else v) for k, v in changes.items() if k != "name"}
            self._audit(tx, plan_id, actor, "plan.updated", plan_id, renamed="name" in changes, **details)
            return plan

        return self.store.atomic(work)

    # --- members and invitations ----------------------------------------------------------------

    def list_members(self, actor: Principal, plan_id: str) -> list[Member]:
        self._require("members.list", actor, plan_id)

        def work(tx: PlanTx) -> list[Member]:
            self._plan(tx, plan_id)
            return tx.plan_members(plan_id)

        return self.store.atomic(work, readonly=True)

    def get_member(self, actor: Principal, plan_id: str, member_id: str) -> tuple[Member, list[Profile]]:
        """The member, and their profiles if the actor may see them."""
        self._require("member.read", actor, plan_id, member_id)

        def work(tx: PlanTx) -> tuple[Member, list[Profile]]:
            member = self._member(tx, self._plan(tx, plan_id), member_id)
            profiles = tx.member_profiles(member_id) if sees_private(actor, member) else []
            return member, profiles

        return self.store.atomic(work, readonly=True)

    def invite(self, actor: Principal, plan_id: str, display_name: str, role: str = "adult",
               eid: str | None = None, cc_required: bool | None = None,
               ttl: timedelta | None = None) -> IssuedOrder:
        """A new member and their first linked profile and invitation (state ORDERING)."""
        self._require("member.invite", actor, plan_id)
        display_name = _check_name(display_name, "display name")
        role_value = _parse_role(role)
        if role_value is Role.OWNER:
            raise InvalidRequest("a plan has exactly one owner; invite an adult or a child")
        eid = _check_eid(eid)

        def work(tx: PlanTx) -> IssuedOrder:
            plan = self._plan(tx, plan_id, for_update=True)
            members = tx.plan_members(plan_id)
            if sum(m.state is not MemberState.REVOKED for m in members) >= plan.max_members:
                raise Conflict(f"the plan is full ({plan.max_members} members)")
            now = self.now()
            member = Member(new_id("mem", self._rng), plan_id, display_name, role_value, MemberState.INVITED,
                            now, now)
            tx.put_member(member)
            token = self._issue_token(tx, "member", plan_id, member.member_id)
            self._audit(tx, plan_id, actor, "member.invited", member.member_id, role=role_value.value)
            order = self._issue(tx, actor, plan, member, eid, cc_required, ttl)
            return replace(order, member_token=token)

        return self.store.atomic(work)

    def issue_profile(self, actor: Principal, plan_id: str, member_id: str, eid: str | None = None,
                      cc_required: bool | None = None, ttl: timedelta | None = None) -> IssuedOrder:
        """A new linked profile for an existing member: the owner's own line, a re-invitation after an
        expired one, or a device change (the current profile is then revoked: see ``replaced``)."""
        self._require("member.device", actor, plan_id, member_id)
        eid = _check_eid(eid)

        def work(tx: PlanTx) -> IssuedOrder:
            plan = self._plan(tx, plan_id, for_update=True)
            member = self._member(tx, plan, member_id)
            if member.state in (MemberState.REVOKED, MemberState.SUSPENDED):
                raise Conflict(f"the member is {member.state.value}")  # a new profile would escape the bar
            replaced = self._retire_profiles(tx, actor, member, "device-change")
            member = replaced.member
            self._audit(tx, plan_id, actor, "member.profile-requested", member_id, eid_bound=eid is not None)
            order = self._issue(tx, actor, plan, member, eid, cc_required, ttl)
            has_effects = replaced.bar_imsis or replaced.cancel_orders or replaced.remote_deletes
            return replace(order, replaced=replaced if has_effects else None)

        return self.store.atomic(work)

    def _issue(self, tx: PlanTx, actor: Principal, plan: Plan, member: Member, eid: str | None,
               cc_required: bool | None, ttl: timedelta | None) -> IssuedOrder:
        numbering = plan.numbering
        serial = plan.next_serial
        if numbering.iccid_first + serial > numbering.iccid_last:
            raise Conflict("the plan's block of ICCIDs is used up; ask the operator")
        now = self.now()
        ttl = ttl or plan.invitation_ttl
        if not timedelta(minutes=1) <= ttl <= timedelta(days=90):
            raise InvalidRequest("invitation TTL must be 1 minute to 90 days")
        cc = plan.cc_required if cc_required is None else bool(cc_required)
        iccid = numbering.iccid(numbering.iccid_first + serial)
        imsi = numbering.imsi(numbering.msin_first + serial)
        validate_iccid(iccid)
        profile = Profile(iccid, plan.plan_id, member.member_id, imsi, ProfileState.ORDERING, now, eid=eid)
        invitation = Invitation(new_id("inv", self._rng), plan.plan_id, member.member_id, iccid,
                                InvitationState.ORDERING, now, now + ttl, cc, plan.max_cc_attempts,
                                new_matching_id(self._rng), eid=eid)
        member = replace(member, iccid=iccid, eid=eid, updated_at=now)
        tx.put_plan(replace(plan, next_serial=serial + 1))
        tx.put_member(member)
        tx.put_profile(profile)
        tx.put_invitation(invitation)
        self._audit(tx, plan.plan_id, actor, "invitation.created", invitation.invitation_id,
                    member_id=member.member_id, eid_bound=eid is not None, cc_required=cc,
                    expires_at=iso(invitation.expires_at))
        return IssuedOrder(plan, member, profile, invitation, ki=self._rng(16), opc=self._rng(16),
                           confirmation_code=new_confirmation_code(self._rng) if cc else None, member_token=None)

    def order_placed(self, invitation_id: str, smdp_address: str, smdp_oid: str | None = None) -> Invitation:
        """ES2+ ConfirmOrder succeeded: the invitation is usable with its activation code."""

        def work(tx: PlanTx) -> Invitation:
            inv = self._invitation_in(tx, invitation_id, InvitationState.ORDERING, InvitationState.USED)
            if inv.state is InvitationState.USED:
                return inv  # the device was quicker than this bookkeeping: nothing left to release
            code = ActivationCode(smdp_address, inv.matching_id, smdp_oid, inv.cc_required)
            inv = replace(inv, state=InvitationState.PENDING, activation_code=code.to_text(prefix=False))
            tx.put_invitation(inv)
            self._set_profile_state(tx, inv.iccid, ProfileState.RELEASED)
            self._audit(tx, inv.plan_id, SYSTEM, "invitation.released", invitation_id)
            return inv

        return self.store.atomic(work)

    def order_failed(self, invitation_id: str, reason: str) -> Invitation:
        """ES2+ failed: nothing was released. The member stays, without a profile, for a new attempt."""

        def work(tx: PlanTx) -> Invitation:
            inv = self._invitation_in(tx, invitation_id, InvitationState.ORDERING)
            inv = replace(inv, state=InvitationState.FAILED, closed_at=self.now())
            tx.put_invitation(inv)
            self._set_profile_state(tx, inv.iccid, ProfileState.CANCELLED)
            self._detach_profile(tx, inv.member_id, inv.iccid)
            self._audit(tx, inv.plan_id, SYSTEM, "invitation.failed", invitation_id, reason=reason)
            return inv

        return self.store.atomic(work)

    def _invitation_in(self, tx: PlanTx, invitation_id: str, *states: InvitationState) -> Invitation:
        """The invitation, read again under its plan's lock, if it is in one of ``states``."""
        inv = tx.get_invitation(invitation_id)
        if inv is None:
            raise NotFound("no such invitation")
        self._plan(tx, inv.plan_id, for_update=True)
        inv = tx.get_invitation(invitation_id)
        if inv.state not in states:
            raise Conflict(f"invitation is {inv.state.value}")
        return inv

    def _set_profile_state(self, tx: PlanTx, iccid: str, state: ProfileState, **changes: Any) -> Profile:
        profile = tx.get_profile(iccid)
        if profile is None:
            raise NotFound("no such profile")
        profile = replace(profile, state=state, **changes)
        tx.put_profile(profile)
        return profile

    def _detach_profile(self, tx: PlanTx, member_id: str, iccid: str) -> None:
        """The member's current-profile pointer leaves ``iccid`` (cancelled, deleted)."""
        member = tx.get_member(member_id)
        if member is None or member.iccid != iccid:
            return
        member = replace(member, iccid=None, eid=None, updated_at=self.now())
        tx.put_member(member)

    def list_invitations(self, actor: Principal, plan_id: str) -> list[Invitation]:
        self._require("invitations.list", actor, plan_id)

        def work(tx: PlanTx) -> list[Invitation]:
            self._plan(tx, plan_id)
            return tx.plan_invitations(plan_id)

        return self.store.atomic(work, readonly=True)

    def get_invitation(self, actor: Principal, plan_id: str, invitation_id: str) -> Invitation:
        self._require("invitations.list", actor, plan_id)

        def work(tx: PlanTx) -> Invitation:
            inv = tx.get_invitation(invitation_id)
            if inv is None or inv.plan_id != plan_id:
                raise NotFound("no such invitation")
            return inv

        return self.store.atomic(work, readonly=True)

    def cancel_invitation(self, actor: Principal, plan_id: str, invitation_id: str) -> ClosedInvitation:
        """Withdraw a pending invitation; the service cancels the order on the SM-DP+."""
        self._require("invitation.cancel", actor, plan_id)

        def work(tx: PlanTx) -> ClosedInvitation:
            inv = tx.get_invitation(invitation_id)
            if inv is None or inv.plan_id != plan_id:
                raise NotFound("no such invitation")
            inv = self._invitation_in(tx, invitation_id, InvitationState.PENDING, InvitationState.ORDERING)
            return self._closed(tx, self._close_invitation(tx, actor, inv, InvitationState.CANCELLED))

        return self.store.atomic(work)

    def _close_invitation(self, tx: PlanTx, actor: Principal, inv: Invitation, state: InvitationState,
                          **details: Any) -> Invitation:
        inv = replace(inv, state=state, closed_at=self.now())
        tx.put_invitation(inv)
        profile = tx.get_profile(inv.iccid)
        if profile is not None and profile.state in (ProfileState.ORDERING, ProfileState.RELEASED):
            self._set_profile_state(tx, inv.iccid, ProfileState.CANCELLED)
            self._detach_profile(tx, inv.member_id, inv.iccid)
        self._audit(tx, inv.plan_id, actor, f"invitation.{state.value}", inv.invitation_id, **details)
        return inv

    @staticmethod
    def _closed(tx: PlanTx, inv: Invitation) -> ClosedInvitation:
        profile = tx.get_profile(inv.iccid)
        return ClosedInvitation(inv, profile.imsi if profile else "")

    def expire_invitations(self) -> list[ClosedInvitation]:
        """Record every pending invitation past its expiry as EXPIRED (the service cancels the orders)."""

        def work(tx: PlanTx) -> list[ClosedInvitation]:
            now, expired = self.now(), []
            for plan in tx.list_plans():
                self._plan(tx, plan.plan_id, for_update=True)
                for inv in tx.plan_invitations(plan.plan_id):
                    if inv.state is InvitationState.PENDING and now >= inv.expires_at:
                        closed = self._close_invitation(tx, SYSTEM, inv, InvitationState.EXPIRED)
                        expired.append(self._closed(tx, closed))
            return expired

        return self.store.atomic(work)

    # --- download progress (ES2+ HandleDownloadProgressInfo) -------------------------------------

    def download_progress(self, event: ProgressEvent) -> ProgressOutcome:
        """Bookkeeping for one notification from the SM-DP+ about one of our profiles."""

        def work(tx: PlanTx) -> ProgressOutcome:
            found = tx.get_profile(event.iccid)
            if found is None:
                raise NotFound("no such profile")
            self._plan(tx, found.plan_id, for_update=True)
            profile = tx.get_profile(event.iccid)
            inv = tx.invitation_for_iccid(event.iccid)
            if event.operation in ("delete", "enable", "disable"):
                return self._profile_operation(tx, profile, event)
            if event.point_id == POINT_BPP_INSTALLATION and event.success and event.install_ok is not False:
                return self._installed(tx, profile, inv, event.eid)
            if inv is not None and inv.state is InvitationState.PENDING and not event.success:
                return self._attempt_failed(tx, inv, event)
            self._audit(tx, profile.plan_id, SMDP, "profile.progress", profile.member_id,
                        point=event.point_id, success=event.success, reason=event.reason)
            return ProgressOutcome()

        return self.store.atomic(work)

    def _installed(self, tx: PlanTx, profile: Profile, inv: Invitation | None, eid: str | None) -> ProgressOutcome:
        now = self.now()
        if profile.state in (ProfileState.INSTALLED, ProfileState.REVOKED, ProfileState.DELETED):
            return ProgressOutcome()  # a repeated report
        if profile.state is ProfileState.CANCELLED:
            # installed although the invitation was withdrawn meanwhile: make sure it cannot be used
            self._audit(tx, profile.plan_id, SMDP, "profile.installed-after-revocation", profile.member_id)
            revoked = replace(profile, state=ProfileState.REVOKED, eid=eid or profile.eid, installed_at=now,
                              revoked_at=now)
            tx.put_profile(revoked)
            return ProgressOutcome(bar_imsi=profile.imsi, remote_delete=(profile.iccid, revoked.eid))
        tx.put_profile(replace(profile, state=ProfileState.INSTALLED, eid=eid or profile.eid, installed_at=now))
        if inv is not None and inv.state in (InvitationState.PENDING, InvitationState.ORDERING):
            tx.put_invitation(replace(inv, state=InvitationState.USED, closed_at=now))
        member = tx.get_member(profile.member_id)
        if member is not None:
            state = MemberState.ACTIVE if member.state is MemberState.INVITED else member.state
            tx.put_member(replace(member, state=state, eid=eid or member.eid, updated_at=now))
        self._audit(tx, profile.plan_id, SMDP, "member.profile-installed", profile.member_id,
                    invitation_id=inv.invitation_id if inv else None)
        if member is not None and member.state is MemberState.SUSPENDED:
            return ProgressOutcome(bar_imsi=profile.imsi)  # resuming unbars it with the others
        return ProgressOutcome()

    def _attempt_failed(self, tx: PlanTx, inv: Invitation, event: ProgressEvent) -> ProgressOutcome:
        retries_exceeded = (event.reason or "").endswith("/" + RETRIES_EXCEEDED_REASON)
        if event.point_id == POINT_CONFIRMATION:
            inv = replace(inv, cc_failures=inv.cc_failures + 1)
            tx.put_invitation(inv)
            exhausted = retries_exceeded or inv.cc_failures >= inv.max_cc_attempts
        else:
            exhausted = event.point_id == POINT_ELIGIBILITY and retries_exceeded
        self._audit(tx, inv.plan_id, SMDP, "invitation.attempt-failed", inv.invitation_id,
                    point=event.point_id, reason=event.reason, cc_failures=inv.cc_failures)
        if not exhausted:
            return ProgressOutcome()
        self._close_invitation(tx, SMDP, inv, InvitationState.EXHAUSTED)
        return ProgressOutcome(cancel_order=inv.iccid)

    def _profile_operation(self, tx: PlanTx, profile: Profile, event: ProgressEvent) -> ProgressOutcome:
        """Enable/disable/delete notifications the eUICC signed; a deletion reconciles the state."""
        self._audit(tx, profile.plan_id, SMDP, f"profile.{event.operation}d-on-device", profile.member_id)
        if event.operation != "delete" or profile.state is ProfileState.DELETED:
            return ProgressOutcome()
        was_live = profile.state is ProfileState.INSTALLED
        tx.put_profile(replace(profile, state=ProfileState.DELETED, revoked_at=profile.revoked_at or self.now()))
        self._detach_profile(tx, profile.member_id, profile.iccid)
        # a profile the user deleted locally is gone for good: bar its IMSI too
        return ProgressOutcome(bar_imsi=profile.imsi if was_live else None)

    # --- revocation, suspension --------------------------------------------------------------------

    def revoke_member(self, actor: Principal, plan_id: str, member_id: str) -> Revocation:
        self._require("member.revoke", actor, plan_id, member_id)

        def work(tx: PlanTx) -> Revocation:
            plan = self._plan(tx, plan_id, for_update=True)
            member = self._member(tx, plan, member_id)
            if member.role is Role.OWNER:
                raise Conflict("the owner cannot be removed from their plan")
            if member.state is MemberState.REVOKED:
                raise Conflict("the member is already revoked")
            revocation = self._retire_profiles(tx, actor, member, "revoked")
            member = replace(revocation.member, state=MemberState.REVOKED, updated_at=self.now())
            tx.put_member(member)
            tx.revoke_tokens(member_id, self.now())
            self._audit(tx, plan_id, actor, "member.revoked", member_id)
            return replace(revocation, member=member)

        return self.store.atomic(work)

    def _retire_profiles(self, tx: PlanTx, actor: Principal, member: Member, why: str) -> Revocation:
        """Cancel the member's open invitations and revoke their installed profiles."""
        now = self.now()
        bar, cancel, delete = [], [], []
        for inv in tx.plan_invitations(member.plan_id):
            if inv.member_id == member.member_id and inv.state in (InvitationState.PENDING, InvitationState.ORDERING):
                self._close_invitation(tx, actor, inv, InvitationState.CANCELLED, why=why)
                profile = tx.get_profile(inv.iccid)
                cancel.append(inv.iccid)
                bar.append(profile.imsi)  # provisioned at the authenticator, must never work now
        for profile in tx.member_profiles(member.member_id):
            if profile.state is ProfileState.INSTALLED:
                tx.put_profile(replace(profile, state=ProfileState.REVOKED, revoked_at=now))
                bar.append(profile.imsi)
                delete.append((profile.iccid, profile.eid))
                self._audit(tx, member.plan_id, actor, "profile.revoked", member.member_id, why=why)
        member = tx.get_member(member.member_id) or member
        member = replace(member, iccid=None, eid=None, updated_at=now)
        tx.put_member(member)
        return Revocation(member, tuple(bar), tuple(cancel), tuple(delete))

    def set_suspended(self, actor: Principal, plan_id: str, member_id: str, suspended: bool) -> Barring:
        self._require("member.suspend", actor, plan_id, member_id)

        def work(tx: PlanTx) -> Barring:
            plan = self._plan(tx, plan_id, for_update=True)
            member = self._member(tx, plan, member_id)
            wanted_from = MemberState.ACTIVE if suspended else MemberState.SUSPENDED
            if member.state is not wanted_from:
                raise Conflict(f"the member is {member.state.value}")
            state = MemberState.SUSPENDED if suspended else MemberState.ACTIVE
            member = replace(member, state=state, updated_at=self.now())
            tx.put_member(member)
            # released ones too: a download after the suspension must not bring service back
            imsis = tuple(p.imsi for p in tx.member_profiles(member_id) if p.state in _LIVE_OR_COMING)
            self._audit(tx, plan_id, actor, "member.suspended" if suspended else "member.resumed", member_id)
            return Barring(member, imsis, suspended)

        return self.store.atomic(work)

    def pending_remote_deletes(self) -> list[Profile]:
        """Revoked profiles whose remote deletion the SM-DP+ has not accepted yet (once it has, it delivers
        the order at the eUICC's next contact by itself: asking again would queue a second one)."""

        def work(tx: PlanTx) -> list[Profile]:
            found = []
            for plan in tx.list_plans():
                for member in tx.plan_members(plan.plan_id):
                    found += [p for p in tx.member_profiles(member.member_id)
                              if p.state is ProfileState.REVOKED and not p.delete_requested]
            return found

        return self.store.atomic(work, readonly=True)

    def remote_delete_ordered(self, iccid: str) -> Profile:
        """The SM-DP+ accepted the remote deletion of this revoked profile."""

        def work(tx: PlanTx) -> Profile:
            found = tx.get_profile(iccid)
            if found is None:
                raise NotFound("no such profile")
            self._plan(tx, found.plan_id, for_update=True)
            profile = tx.get_profile(iccid)
            if profile.state is not ProfileState.REVOKED or profile.delete_requested:
                return profile  # already confirmed deleted, or recorded before
            profile = replace(profile, delete_requested=True)
            tx.put_profile(profile)
            self._audit(tx, profile.plan_id, SYSTEM, "profile.delete-ordered", profile.member_id)
            return profile

        return self.store.atomic(work)

    def rotate_token(self, actor: Principal, plan_id: str, member_id: str) -> str:
        self._require("member.token", actor, plan_id, member_id)

        def work(tx: PlanTx) -> str:
            member = self._member(tx, self._plan(tx, plan_id, for_update=True), member_id)
            if member.state is MemberState.REVOKED:
                raise Conflict("the member is revoked")
            tx.revoke_tokens(member_id, self.now())
            role = "owner" if member.role is Role.OWNER else "member"
            token = self._issue_token(tx, role, plan_id, member_id)
            self._audit(tx, plan_id, actor, "member.token-rotated", member_id)
            return token

        return self.store.atomic(work)

    # --- quotas and accounting -----------------------------------------------------------------

    def set_caps(self, actor: Principal, plan_id: str, member_id: str, caps: Mapping[str, Any]) -> list[Cap]:
        """Replace the kinds named in ``caps`` (a null value removes that kind's cap)."""
        self._require("caps.set", actor, plan_id, member_id)
        new_caps = parse_caps(member_id, caps)

        def work(tx: PlanTx) -> list[Cap]:
            plan = self._plan(tx, plan_id, for_update=True)
            member = self._member(tx, plan, member_id)
            if member.state is MemberState.REVOKED:
                raise Conflict("the member is revoked")
            kept = [c for c in tx.plan_caps(plan_id) if c.member_id == member_id and c.kind not in caps]
            mine = sorted([*kept, *new_caps], key=lambda c: KINDS.index(c.kind))
            others = [c for c in tx.plan_caps(plan_id) if c.member_id != member_id]
            _check_fixed_fits(plan, tx.plan_members(plan_id), [*others, *mine])
            tx.put_caps(plan_id, member_id, mine)
            self._audit(tx, plan_id, actor, "caps.set", member_id, caps={c.kind: cap_json(c) for c in mine})
            return mine

        return self.store.atomic(work)

    def ingest_usage(self, actor: Principal, *, kind: str, amount: int, at: datetime, idempotency_key: str,
                     plan_id: str | None = None, member_id: str | None = None,
                     imsi: str | None = None) -> IngestResult:
        """Account one usage record exactly once: a repeat of its idempotency key returns the first result."""
        _check_kind(kind)
        _check_amount(amount, "amount", allow_zero=False)
        _check_text(idempotency_key, "idempotency_key", 128)
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise InvalidRequest("usage time must be a timezone-aware timestamp")

        self._require("usage.ingest", actor, plan_id, member_id)

        def work(tx: PlanTx) -> IngestResult:
            member = self._usage_member(tx, plan_id, member_id, imsi)
            plan = self._plan(tx, member.plan_id, for_update=True)  # serialises accounting per plan
            previous = tx.get_usage(plan.plan_id, idempotency_key)
            if previous is not None:
                return self._repeat(tx, plan, previous, member, kind, amount, at)
            period = self._usage_period(plan, at)
            ledger = self._ledger(tx, plan, period, kind)
            allowance = ledger.allowances.get(member.member_id, 0)
            member_left = max(0, allowance - ledger.used.get(member.member_id, 0))
            charged, excess = charge(amount, member_left, ledger.pool_left)
            record = UsageRecord(plan.plan_id, idempotency_key, member.member_id, kind, amount, at, period,
                                 charged, excess, self.now())
            tx.add_usage(record)
            result = IngestResult(record, False, allowance, min(member_left, ledger.pool_left) - charged,
                                  ledger.pool_left - charged, throttled=False)
            result = replace(result, throttled=result.member_remaining == 0)
            if result.throttled:
                self._notify_throttled(tx, plan, record)
            return result

        return self.store.atomic(work)

    def _usage_member(self, tx: PlanTx, plan_id: str | None, member_id: str | None, imsi: str | None) -> Member:
        if imsi is not None:
            profile = tx.profile_by_imsi(imsi) if isinstance(imsi, str) else None
            if profile is None or (plan_id is not None and profile.plan_id != plan_id):
                raise NotFound("no profile with that IMSI")
            member_id = profile.member_id
        if not isinstance(member_id, str):
            raise InvalidRequest("a usage record names the member (member_id) or the profile (imsi)")
        member = tx.get_member(member_id)
        if member is None or (plan_id is not None and member.plan_id != plan_id):
            raise NotFound("no such member in this plan")
        return member

    def _usage_period(self, plan: Plan, at: datetime) -> int:
        now = self.now()
        if at > now + CLOCK_SKEW:
            raise InvalidRequest("usage time is in the future")
        period, current = period_of(plan, at), period_of(plan, now)
        if period < 0 or period < current - LATE_PERIODS:
            raise Conflict("usage time falls in a closed billing period")
        return period

    def _viewed_period(self, plan: Plan, period: Any) -> int:
        """The period a view asks for (default: the current one); only periods records can fall in."""
        if period is None:
            return period_of(plan, self.now())
        return _check_int(period, "period", 0, period_of(plan, self.now() + CLOCK_SKEW))

    def _repeat(self, tx: PlanTx, plan: Plan, previous: UsageRecord, member: Member, kind: str, amount: int,
                at: datetime) -> IngestResult:
        same = (previous.member_id, previous.kind, previous.amount, previous.at) == (member.member_id, kind, amount, at)
        if not same:
            raise Conflict("that idempotency key was used for a different usage record")
        ledger = self._ledger(tx, plan, previous.period, kind)
        allowance = ledger.allowances.get(member.member_id, 0)
        member_left = min(max(0, allowance - ledger.used.get(member.member_id, 0)), ledger.pool_left)
        return IngestResult(previous, True, allowance, member_left, ledger.pool_left, member_left == 0)

    def _notify_throttled(self, tx: PlanTx, plan: Plan, record: UsageRecord) -> None:
        already = any(n.kind == "throttled" and n.details.get("usage_kind") == record.kind
                      and n.details.get("period") == record.period for n in tx.member_notices(record.member_id))
        if already:
            return
        start, end = period_bounds(plan, record.period)
        tx.add_notice(Notice(plan.plan_id, record.member_id, self.now(), "throttled",
                             {"usage_kind": record.kind, "period": record.period, "until": iso(end)}))
        self._audit(tx, plan.plan_id, SYSTEM, "member.throttled", record.member_id, usage_kind=record.kind,
                    period=record.period)

    def _ledger(self, tx: PlanTx, plan: Plan, period: int, kind: str) -> _Ledger:
        totals = tx.usage_totals(plan.plan_id, period - HISTORY_PERIODS, period)
        used = {t.member_id: t.charged for t in totals if t.kind == kind and t.period == period}
        pool = plan.pool.get(kind, 0)
        members = [m.member_id for m in tx.plan_members(plan.plan_id) if m.state is not MemberState.REVOKED]
        caps = {c.member_id: c for c in tx.plan_caps(plan.plan_id) if c.kind == kind}
        history: dict[str, list[int]] = {}
        for t in totals:
            if t.kind == kind and max(0, period - HISTORY_PERIODS) <= t.period < period:
                history.setdefault(t.member_id, []).append(t.demand)
        allowances = allowances_for_kind(plan.policy, pool, members, caps, history)
        return _Ledger(allowances, used, max(0, pool - sum(used.values())))

    def plan_usage(self, actor: Principal, plan_id: str, period: int | None = None) -> dict[str, Any]:
        """Pool totals for everyone in the plan; per-member totals only for the owner and operator
        (a member gets their own line)."""
        self._require("usage.plan", actor, plan_id)

        def work(tx: PlanTx) -> dict[str, Any]:
            plan = self._plan(tx, plan_id)
            which = self._viewed_period(plan, period)
            start, end = period_bounds(plan, which)
            ledgers = {kind: self._ledger(tx, plan, which, kind) for kind in plan.pool}
            members = tx.plan_members(plan_id)
            view: dict[str, Any] = {
                "plan_id": plan_id, "period": which, "period_start": iso(start), "period_end": iso(end),
                "policy": plan.policy.value,
                "pool": {k: {"total": plan.pool[k], "used": plan.pool[k] - ledgers[k].pool_left,
                             "remaining": ledgers[k].pool_left, "unit": UNITS[k]} for k in plan.pool},
            }  # fmt: skip
            caps = tx.plan_caps(plan_id)
            visible = [m for m in members if actor.role == "operator" or Access.OWNER in relations(actor, plan_id)
                       or m.member_id == actor.member_id]
            view["members"] = [self._member_usage_line(m, ledgers, caps) for m in visible]
            return view

        return self.store.atomic(work, readonly=True)

    @staticmethod
    def _member_usage_line(member: Member, ledgers: dict[str, _Ledger], caps: list[Cap]) -> dict[str, Any]:
        line: dict[str, Any] = {"member_id": member.member_id, "display_name": member.display_name,
                                "role": member.role.value, "state": member.state.value, "usage": {}}
        for kind, ledger in ledgers.items():
            allowance = ledger.allowances.get(member.member_id, 0)
            used = ledger.used.get(member.member_id, 0)
            left = min(max(0, allowance - used), ledger.pool_left)
            cap = next((c for c in caps if c.member_id == member.member_id and c.kind == kind), None)
            line["usage"][kind] = {"used": used, "allowance": allowance, "remaining": left,
                                   "throttled": member.state is not MemberState.REVOKED and left == 0,
                                   "cap": cap_json(cap) if cap else None}
        return line

    def member_records(self, actor: Principal, plan_id: str, member_id: str,
                       period: int | None = None) -> list[UsageRecord]:
        self._require("usage.records", actor, plan_id, member_id)

        def work(tx: PlanTx) -> list[UsageRecord]:
            plan = self._plan(tx, plan_id)
            self._member(tx, plan, member_id)
            return tx.member_usage(member_id, self._viewed_period(plan, period))

        return self.store.atomic(work, readonly=True)

    def notices(self, actor: Principal, plan_id: str, member_id: str) -> list[Notice]:
        self._require("notices.read", actor, plan_id, member_id)
        return self.store.atomic(lambda tx: tx.member_notices(member_id), readonly=True)

    def audit_log(self, actor: Principal, plan_id: str | None) -> list[AuditEvent]:
        self._require("audit.read" if plan_id else "audit.all", actor, plan_id)

        def work(tx: PlanTx) -> list[AuditEvent]:
            if plan_id is not None:
                self._plan(tx, plan_id)
            return tx.plan_audit(plan_id)

        return self.store.atomic(work, readonly=True)

    def caps(self, actor: Principal, plan_id: str) -> list[Cap]:
        self._require("members.list", actor, plan_id)
        return self.store.atomic(lambda tx: tx.plan_caps(plan_id), readonly=True)


@dataclass(frozen=True)
class _Ledger:
    allowances: dict[str, int]
    used: dict[str, int]
    pool_left: int


def _parse_policy(policy: Any) -> Policy:
    try:
        return Policy(policy)
    except ValueError:
        raise InvalidRequest(f"policy must be one of {', '.join(p.value for p in Policy)}, got {policy!r}") from None


def _parse_role(role: Any) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidRequest(f"role must be one of {', '.join(r.value for r in Role)}, got {role!r}") from None


def _check_fixed_fits(plan: Plan, members: Iterable[Member], caps: Iterable[Cap]) -> None:
    """Under the fixed policy the members' caps together must fit in the pool."""
    if plan.policy is not Policy.FIXED:
        return
    live = {m.member_id for m in members if m.state is not MemberState.REVOKED}
    for kind, pool in plan.pool.items():
        total = sum(c.resolve(pool) for c in caps if c.kind == kind and c.member_id in live)
        if total > pool:
            raise Conflict(f"under the fixed policy the {kind} caps ({total}) exceed the pool ({pool})")
