"""SM-DP+ state in one SQLite file: inventory and orders, RSP sessions, used one-time keys,
received notifications, the outbox of operator callbacks (ES2+.HandleDownloadProgressInfo), SGP.22 v3
RPM orders, what each eUICC said about RPM support, and the events registered at SM-DSs.

One connection per process in WAL mode; every request runs in one ``transaction()`` (BEGIN
IMMEDIATE ... COMMIT), so a failed request leaves nothing behind and a restart finds orders and
sessions exactly as the last committed request left them. A step that must keep a write and still
fail (a counted confirmation code attempt, a blocked order) raises :class:`CommitAndRaise`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from kinsim.sqlite import CommitAndRaise, SqliteStore, StoreError  # noqa: F401 - re-exported

DB_NAME = "smdp.sqlite"
SCHEMA_VERSION = "1"


class ProfileState(StrEnum):
    """States of a profile at the SM-DP+ (SGP.22 5.3, ES2+ functions and the download procedure)."""

    AVAILABLE = "Available"
    ALLOCATED = "Allocated"
    LINKED = "Linked"
    CONFIRMED = "Confirmed"
    RELEASED = "Released"
    DOWNLOADED = "Downloaded"
    INSTALLED = "Installed"
    ERROR = "Error"
    UNAVAILABLE = "Unavailable"
    # kinsim extension (SGP.22 v3 RPM): installed, but its operator revoked it; becomes Unavailable once
    # the eUICC reports it deleted
    REVOKED = "Revoked"


class RpmState(StrEnum):
    """An RPM order (SGP.22 v3 ES2+.RpmOrder) waiting for, or served at, the eUICC's next contact."""

    PENDING = "pending"  # until an LPA contacts us for its event
    DELIVERED = "delivered"  # the package went to the LPA; its LoadRpmPackageResult is awaited
    DONE = "done"  # every command succeeded
    FAILED = "failed"  # the eUICC refused the package or a command failed


class SessionState(StrEnum):
    """Where an RSP session is: each ES9+ step moves it forward once."""

    INITIATED = "initiated"  # after InitiateAuthentication
    AUTHENTICATED = "authenticated"  # after AuthenticateClient
    DELIVERED = "delivered"  # after GetBoundProfilePackage, until the installation result arrives
    CLOSED = "closed"  # installation result handled, cancelled, superseded or refused


@dataclass(frozen=True)
class ProfileType:
    """Metadata shared by every profile of one type (SGP.22 StoreMetadataRequest)."""

    name: str
    service_provider_name: str = ""
    profile_name: str = ""
    profile_class: str = "operational"  # test | provisioning | operational
    ppr: tuple[str, ...] = ()  # PprIds names: pprUpdateControl, ppr1, ppr2
    # (NotificationEvent name, address); address "" stands for this SM-DP+
    notifications: tuple[tuple[str, str], ...] = (
        ("notificationEnable", ""), ("notificationDisable", ""), ("notificationDelete", ""))


@dataclass(frozen=True)
class Profile:
    """An inventory entry with its download order (the order lives on the profile, as in ES2+)."""

    iccid: str
    profile_type: str
    state: ProfileState
    requester: str | None = None  # ES2+ function requester owning the order; None = local (CLI)
    eid: str | None = None  # EID the order is bound to (Linked, or given to ConfirmOrder)
    matching_id: str | None = None
    cc_hash: bytes | None = None  # SHA-256 of the confirmation code; the code itself is not kept
    cc_attempts: int = 0
    download_attempts: int = 0
    smds_address: str | None = None  # ConfirmOrder asked for an SM-DS event (registered by smdp.smds_link)
    expires_at: datetime | None = None
    current_tid: bytes | None = None  # the RSP session serving the order
    download_eid: str | None = None  # the eUICC the last BPP was bound to
    error: str | None = None
    updated_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def cc_required(self) -> bool:
        return self.cc_hash is not None


@dataclass(frozen=True)
class Session:
    transaction_id: bytes
    state: SessionState
    expires_at: datetime
    created_at: datetime
    euicc_challenge: bytes
    server_challenge: bytes
    ci_pkid: bytes  # euiccCiPKIdToBeUsed: the CI the eUICC signs under
    credentials_pkid: bytes  # the CI of the DPauth/DPpb certificates this session uses
    eid: str | None = None
    euicc_cert: bytes | None = None  # DER, from AuthenticateClient
    iccid: str | None = None
    metadata: bytes | None = None  # the StoreMetadataRequest sent in AuthenticateClient
    smdp_signature2: bytes | None = None  # the '5F37' data object sent in AuthenticateClient
    cc_required: bool = False
    delivered_at: datetime | None = None
    result: str | None = None  # how a closed session ended


@dataclass(frozen=True)
class RpmOrder:
    matching_id: str  # the event ID the eUICC's LPA presents
    eid: str
    package: bytes  # RpmPackage DER, as the operator's rpmScript carried it
    state: RpmState
    iccid: str | None = None  # the operator's profile the order is about
    requester: str | None = None
    smds_address: str | None = None
    current_tid: bytes | None = None
    result: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class SmdsEvent:
    """An event this SM-DP+ registered at an SM-DS (ES12.RegisterEvent), kept until it is deleted."""

    eid: str
    event_id: str
    smds_address: str
    kind: str  # "download" (a download order) or "rpm" (an RPM order)


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    requester: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime


_SCHEMA = """
CREATE TABLE IF NOT EXISTS profile_types (
    name TEXT PRIMARY KEY,
    service_provider_name TEXT NOT NULL,
    profile_name TEXT NOT NULL,
    profile_class TEXT NOT NULL,
    ppr TEXT NOT NULL,
    notifications TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    iccid TEXT PRIMARY KEY,
    profile_type TEXT NOT NULL,
    upp BLOB NOT NULL,
    state TEXT NOT NULL,
    requester TEXT,
    eid TEXT,
    matching_id TEXT UNIQUE,
    cc_hash BLOB,
    cc_attempts INTEGER NOT NULL DEFAULT 0,
    download_attempts INTEGER NOT NULL DEFAULT 0,
    smds_address TEXT,
    expires_at TEXT,
    current_tid BLOB,
    download_eid TEXT,
    error TEXT,
    updated_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS profiles_by_type ON profiles (profile_type, state);
CREATE INDEX IF NOT EXISTS profiles_by_eid ON profiles (eid, state);
CREATE TABLE IF NOT EXISTS sessions (
    transaction_id BLOB PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    euicc_challenge BLOB NOT NULL,
    server_challenge BLOB NOT NULL,
    ci_pkid BLOB NOT NULL,
    credentials_pkid BLOB NOT NULL,
    eid TEXT,
    euicc_cert BLOB,
    iccid TEXT,
    metadata BLOB,
    smdp_signature2 BLOB,
    cc_required INTEGER NOT NULL DEFAULT 0,
    delivered_at TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_iccid ON sessions (iccid, state);
CREATE TABLE IF NOT EXISTS used_otpks (
    otpk BLOB PRIMARY KEY,
    owner TEXT NOT NULL,
    transaction_id BLOB NOT NULL,
    used_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    eid TEXT NOT NULL,
    seq_number INTEGER NOT NULL,
    operation TEXT NOT NULL,
    iccid TEXT,
    transaction_id BLOB,
    received_at TEXT NOT NULL,
    PRIMARY KEY (eid, seq_number)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    requester TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS rpm_orders (
    matching_id TEXT PRIMARY KEY,
    eid TEXT NOT NULL,
    package BLOB NOT NULL,
    state TEXT NOT NULL,
    iccid TEXT,
    requester TEXT,
    smds_address TEXT,
    current_tid BLOB,
    result TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rpm_orders_by_tid ON rpm_orders (current_tid);
CREATE TABLE IF NOT EXISTS euiccs (
    eid TEXT PRIMARY KEY,
    rpm_support INTEGER NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS smds_events (
    eid TEXT NOT NULL,
    event_id TEXT NOT NULL,
    smds_address TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (eid, event_id)
);
"""

# Columns read for a Profile: everything but the package itself, which only GetBPP needs.
_PROFILE_COLUMNS = [f.name for f in fields(Profile)]
_SESSION_COLUMNS = [f.name for f in fields(Session)]
_RPM_COLUMNS = [f.name for f in fields(RpmOrder)]


def _ts(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds") if moment is not None else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


class Store(SqliteStore):
    """The SM-DP+ state file (``smdp.sqlite`` in the state directory, or a .sqlite/.db path).
    Not thread-safe: one per process, used from one thread."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    DB_NAME = DB_NAME

    # --- profile types ----------------------------------------------------------------------------

    def put_profile_type(self, profile_type: ProfileType) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO profile_types VALUES (?, ?, ?, ?, ?, ?)",
            (profile_type.name, profile_type.service_provider_name, profile_type.profile_name,
             profile_type.profile_class, ",".join(profile_type.ppr), json.dumps(profile_type.notifications)),
        )

    def profile_type(self, name: str) -> ProfileType | None:
        row = self.conn.execute("SELECT * FROM profile_types WHERE name = ?", (name,)).fetchone()
        return _profile_type(row) if row else None

    def profile_types(self) -> list[ProfileType]:
        return [_profile_type(r) for r in self.conn.execute("SELECT * FROM profile_types ORDER BY name")]

    # --- inventory and orders ---------------------------------------------------------------------

    def add_profile(self, iccid: str, profile_type: str, upp: bytes, now: datetime) -> Profile:
        try:
            self.conn.execute(
                "INSERT INTO profiles (iccid, profile_type, upp, state, updated_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (iccid, profile_type, upp, ProfileState.AVAILABLE.value, _ts(now), _ts(now)),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"a profile with ICCID {iccid} is already in the inventory") from None
        return self.profile(iccid)

    def profile(self, iccid: str) -> Profile | None:
        return self._one_profile("iccid = ?", (iccid,))

    def profile_by_matching_id(self, matching_id: str) -> Profile | None:
        return self._one_profile("matching_id = ?", (matching_id,))

    def profiles(self, states: Sequence[ProfileState] | None = None, *, eid: str | None = None,
                 profile_type: str | None = None, limit: int | None = None) -> list[Profile]:
        where, args = [], []
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += [s.value for s in states]
        if eid is not None:
            where.append("eid = ?")
            args.append(eid)
        if profile_type is not None:
            where.append("profile_type = ?")
            args.append(profile_type)
        sql = f"SELECT {','.join(_PROFILE_COLUMNS)} FROM profiles"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, iccid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_profile(r) for r in self.conn.execute(sql, args)]

    def upp(self, iccid: str) -> bytes:
        row = self.conn.execute("SELECT upp FROM profiles WHERE iccid = ?", (iccid,)).fetchone()
        if row is None:
            raise StoreError(f"no profile with ICCID {iccid}")
        return row[0]

    def save_profile(self, profile: Profile, now: datetime) -> Profile:
        """Write every order field of ``profile`` (the package is never rewritten)."""
        profile = replace(profile, updated_at=now)
        columns = [c for c in _PROFILE_COLUMNS if c not in ("iccid", "created_at")]
        values = [_db_value(getattr(profile, c)) for c in columns]
        try:
            cursor = self.conn.execute(
                f"UPDATE profiles SET {', '.join(c + ' = ?' for c in columns)} WHERE iccid = ?",
                (*values, profile.iccid),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"matching ID {profile.matching_id} is already used by another order") from None
        if cursor.rowcount != 1:
            raise StoreError(f"no profile with ICCID {profile.iccid}")
        return profile

    def matching_id_taken(self, matching_id: str) -> bool:
        """Used by a download order or an RPM order (both are found by it)."""
        for table in ("profiles", "rpm_orders"):
            if self.conn.execute(f"SELECT 1 FROM {table} WHERE matching_id = ?", (matching_id,)).fetchone():
                return True
        return False

    def _one_profile(self, where: str, args: tuple) -> Profile | None:
        row = self.conn.execute(f"SELECT {','.join(_PROFILE_COLUMNS)} FROM profiles WHERE {where}", args).fetchone()
        return _profile(row) if row else None

    # --- RSP sessions -----------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        values = [_db_value(getattr(session, c)) for c in _SESSION_COLUMNS]
        self.conn.execute(
            f"INSERT INTO sessions ({','.join(_SESSION_COLUMNS)}) VALUES ({','.join('?' * len(values))})", values
        )

    def session(self, transaction_id: bytes) -> Session | None:
        row = self.conn.execute(
            f"SELECT {','.join(_SESSION_COLUMNS)} FROM sessions WHERE transaction_id = ?", (transaction_id,)
        ).fetchone()
        return _session(row) if row else None

    def save_session(self, session: Session) -> Session:
        columns = _SESSION_COLUMNS[1:]
        values = [_db_value(getattr(session, c)) for c in columns]
        self.conn.execute(
            f"UPDATE sessions SET {', '.join(c + ' = ?' for c in columns)} WHERE transaction_id = ?",
            (*values, session.transaction_id),
        )
        return session

    def sessions_for(self, iccid: str, states: Sequence[SessionState]) -> list[Session]:
        rows = self.conn.execute(
            f"SELECT {','.join(_SESSION_COLUMNS)} FROM sessions WHERE iccid = ? "
            f"AND state IN ({','.join('?' * len(states))})",
            (iccid, *[s.value for s in states]),
        )
        return [_session(r) for r in rows]

    def transaction_id_exists(self, transaction_id: bytes) -> bool:
        row = self.conn.execute("SELECT 1 FROM sessions WHERE transaction_id = ?", (transaction_id,)).fetchone()
        return row is not None

    # --- one-time keys ----------------------------------------------------------------------------

    def otpk_used(self, otpk: bytes) -> bool:
        return self.conn.execute("SELECT 1 FROM used_otpks WHERE otpk = ?", (otpk,)).fetchone() is not None

    def mark_otpk(self, otpk: bytes, owner: str, transaction_id: bytes, now: datetime) -> None:
        self.conn.execute("INSERT INTO used_otpks VALUES (?, ?, ?, ?)", (otpk, owner, transaction_id, _ts(now)))

    # --- notifications ----------------------------------------------------------------------------

    def record_notification(self, eid: str, seq_number: int, operation: str, iccid: str | None,
                            transaction_id: bytes | None, now: datetime) -> bool:
        """Remember a handled notification; False if (EID, seqNumber) was handled before."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO notifications VALUES (?, ?, ?, ?, ?, ?)",
            (eid, seq_number, operation, iccid, transaction_id, _ts(now)),
        )
        return cursor.rowcount == 1

    def notifications(self, eid: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT eid, seq_number, operation, iccid, received_at FROM notifications"
        rows = self.conn.execute(sql + (" WHERE eid = ?" if eid else "") + " ORDER BY received_at",
                                 (eid,) if eid else ())
        return [dict(zip(("eid", "seq_number", "operation", "iccid", "received_at"), r, strict=True)) for r in rows]

    # --- RPM orders, eUICC capabilities, SM-DS events (SGP.22 v3 RPM, ES12) -----------------------

    def add_rpm_order(self, order: RpmOrder) -> None:
        values = [_db_value(getattr(order, c)) for c in _RPM_COLUMNS]
        self.conn.execute(f"INSERT INTO rpm_orders ({','.join(_RPM_COLUMNS)}) VALUES ({','.join('?' * len(values))})",
                          values)

    def save_rpm_order(self, order: RpmOrder, now: datetime) -> RpmOrder:
        order = replace(order, updated_at=now)
        columns = _RPM_COLUMNS[1:]
        self.conn.execute(f"UPDATE rpm_orders SET {', '.join(c + ' = ?' for c in columns)} WHERE matching_id = ?",
                          (*[_db_value(getattr(order, c)) for c in columns], order.matching_id))
        return order

    def remove_rpm_order(self, matching_id: str) -> None:
        self.conn.execute("DELETE FROM rpm_orders WHERE matching_id = ?", (matching_id,))

    def rpm_order(self, matching_id: str) -> RpmOrder | None:
        return self._one_rpm_order("matching_id = ?", (matching_id,))

    def rpm_order_by_tid(self, transaction_id: bytes) -> RpmOrder | None:
        return self._one_rpm_order("current_tid = ?", (transaction_id,))

    def rpm_orders(self, eid: str | None = None) -> list[RpmOrder]:
        sql = f"SELECT {','.join(_RPM_COLUMNS)} FROM rpm_orders" + (" WHERE eid = ?" if eid else "")
        return [_rpm_order(r) for r in self.conn.execute(sql + " ORDER BY created_at", (eid,) if eid else ())]

    def _one_rpm_order(self, where: str, args: tuple) -> RpmOrder | None:
        row = self.conn.execute(f"SELECT {','.join(_RPM_COLUMNS)} FROM rpm_orders WHERE {where}", args).fetchone()
        return _rpm_order(row) if row else None

    def note_euicc(self, eid: str, rpm_support: bool, now: datetime) -> None:
        """What the eUICC's EUICCInfo2 said the last time it authenticated."""
        self.conn.execute("INSERT OR REPLACE INTO euiccs VALUES (?, ?, ?)", (eid, int(rpm_support), _ts(now)))

    def euicc_rpm_support(self, eid: str) -> bool | None:
        row = self.conn.execute("SELECT rpm_support FROM euiccs WHERE eid = ?", (eid,)).fetchone()
        return bool(row[0]) if row else None

    def add_smds_event(self, event: SmdsEvent) -> None:
        self.conn.execute("INSERT OR REPLACE INTO smds_events VALUES (?, ?, ?, ?)",
                          (event.eid, event.event_id, event.smds_address, event.kind))

    def remove_smds_event(self, eid: str, event_id: str) -> None:
        self.conn.execute("DELETE FROM smds_events WHERE eid = ? AND event_id = ?", (eid, event_id))

    def smds_events(self) -> list[SmdsEvent]:
        return [SmdsEvent(*r) for r in self.conn.execute("SELECT eid, event_id, smds_address, kind FROM smds_events")]

    # --- outbox of operator callbacks -------------------------------------------------------------

    def outbox_add(self, requester: str, payload: dict[str, Any], now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO outbox (requester, payload, next_attempt_at, created_at) VALUES (?, ?, ?, ?)",
            (requester, json.dumps(payload), _ts(now), _ts(now)),
        )

    def outbox_heads(self) -> list[OutboxEntry]:
        """The oldest pending callback of each operator: callbacks go out in order, one at a time."""
        rows = self.conn.execute(
            "SELECT id, requester, payload, attempts, next_attempt_at FROM outbox AS o WHERE state = 'pending' "
            "AND id = (SELECT MIN(id) FROM outbox WHERE state = 'pending' AND requester = o.requester) ORDER BY id")
        return [OutboxEntry(r[0], r[1], json.loads(r[2]), r[3], _dt(r[4])) for r in rows]

    def outbox_delivered(self, entry_id: int) -> None:
        self.conn.execute("UPDATE outbox SET state = 'delivered', attempts = attempts + 1 WHERE id = ?", (entry_id,))

    def outbox_retry(self, entry_id: int, next_attempt_at: datetime, error: str, *, give_up: bool) -> None:
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, state = ? WHERE id = ?",
            (_ts(next_attempt_at), error, "failed" if give_up else "pending", entry_id),
        )

    def outbox(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, requester, payload, attempts, state, last_error FROM outbox ORDER BY id")
        keys = ("id", "requester", "payload", "attempts", "state", "last_error")
        return [{**dict(zip(keys, r, strict=True)), "payload": json.loads(r[2])} for r in rows]


# --- row <-> value ------------------------------------------------------------------------------


def _db_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _ts(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def _profile_type(row: tuple) -> ProfileType:
    name, spn, profile_name, profile_class, ppr, notifications = row
    return ProfileType(name, spn, profile_name, profile_class, tuple(p for p in ppr.split(",") if p),
                       tuple(tuple(n) for n in json.loads(notifications)))


def _profile(row: tuple) -> Profile:
    data = dict(zip(_PROFILE_COLUMNS, row, strict=True))
    data["state"] = ProfileState(data["state"])
    for key in ("expires_at", "updated_at", "created_at"):
        data[key] = _dt(data[key])
    return Profile(**data)


def _rpm_order(row: tuple) -> RpmOrder:
    data = dict(zip(_RPM_COLUMNS, row, strict=True))
    data["state"] = RpmState(data["state"])
    for key in ("created_at", "updated_at"):
        data[key] = _dt(data[key])
    return RpmOrder(**data)


def _session(row: tuple) -> Session:
    data = dict(zip(_SESSION_COLUMNS, row, strict=True))
    data["state"] = SessionState(data["state"])
    data["cc_required"] = bool(data["cc_required"])
    for key in ("expires_at", "created_at", "delivered_at"):
        data[key] = _dt(data[key])
    return Session(**data)
