"""The operator's durable state in PostgreSQL (psycopg 3): plans, members, profiles, invitations, caps,
usage, notices, audit, tokens, and the authenticator's subscribers and vectors.

``PgStore.atomic(fn)`` runs one core operation as one transaction, so a unit of work happens
completely or not at all. Writing units run READ COMMITTED and take the plan's row lock
(``SELECT ... FOR UPDATE``) before reading what they decide on: units for one plan queue, and each
sees everything the previous ones committed (a SERIALIZABLE snapshot would be taken before the lock
is granted and turn every queued usage record into a serialisation failure). Read-only units run
REPEATABLE READ READ ONLY: one consistent snapshot, never blocking. A deadlock or serialisation
failure is retried a bounded number of times.

Every table lives in one schema (``search_path``); tests give each store its own schema, so they run
in parallel against one database. ``migrate()`` creates or upgrades the schema under an advisory lock.
The DSN comes from ``KINSIM_PG_DSN`` (default ``postgresql://127.0.0.1:5432/test``).

``PgAuthenticatorStore`` implements ``mno.authenticator.AuthenticatorStore``: each method is one
atomic statement (compare-and-set of the SQN is a conditional UPDATE, taking a vector a DELETE ...
RETURNING). Ki and OPc are stored as they are: protect the database as you would an AuC.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import errors, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mno.plans import (
    KINDS,
    AuditEvent,
    Cap,
    Conflict,
    InvalidRequest,
    Invitation,
    InvitationState,
    Member,
    MemberState,
    Notice,
    Numbering,
    Plan,
    Policy,
    Profile,
    ProfileState,
    Role,
    TokenRecord,
    UsageRecord,
    UsageTotal,
)
from rsp import aka
from rsp.errors import KinsimError

DEFAULT_DSN = "postgresql://127.0.0.1:5432/test"
DEFAULT_SCHEMA = "kinsim"
MAX_RETRIES = 20
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
T = TypeVar("T")


class StoreUnavailable(KinsimError):
    """PostgreSQL cannot be reached or used."""


def dsn_from_env() -> str:
    return os.environ.get("KINSIM_PG_DSN", DEFAULT_DSN)


# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE plans (
        plan_id text PRIMARY KEY,
        name text NOT NULL,
        owner_member_id text NOT NULL,
        max_members integer NOT NULL CHECK (max_members > 0),
        pool jsonb NOT NULL,
        policy text NOT NULL,
        period_days integer NOT NULL CHECK (period_days > 0),
        anchor timestamptz NOT NULL,
        created_at timestamptz NOT NULL,
        numbering jsonb NOT NULL,
        next_serial integer NOT NULL CHECK (next_serial >= 0),
        template text NOT NULL,
        cc_required boolean NOT NULL,
        invitation_ttl_s bigint NOT NULL,
        max_cc_attempts integer NOT NULL
    );
    CREATE TABLE members (
        member_id text PRIMARY KEY,
        plan_id text NOT NULL REFERENCES plans,
        display_name text NOT NULL,
        role text NOT NULL,
        state text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        eid text,
        iccid text
    );
    CREATE INDEX members_plan ON members (plan_id);
    CREATE TABLE profiles (
        iccid text PRIMARY KEY,
        plan_id text NOT NULL REFERENCES plans,
        member_id text NOT NULL REFERENCES members,
        imsi text NOT NULL UNIQUE,
        state text NOT NULL,
        created_at timestamptz NOT NULL,
        eid text,
        installed_at timestamptz,
        revoked_at timestamptz,
        delete_requested boolean NOT NULL DEFAULT false
    );
    CREATE INDEX profiles_member ON profiles (member_id);
    CREATE TABLE invitations (
        invitation_id text PRIMARY KEY,
        plan_id text NOT NULL REFERENCES plans,
        member_id text NOT NULL REFERENCES members,
        iccid text NOT NULL UNIQUE REFERENCES profiles,
        state text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        cc_required boolean NOT NULL,
        max_cc_attempts integer NOT NULL,
        matching_id text NOT NULL UNIQUE,
        eid text,
        activation_code text,
        cc_failures integer NOT NULL DEFAULT 0,
        closed_at timestamptz
    );
    CREATE INDEX invitations_plan ON invitations (plan_id);
    CREATE TABLE caps (
        plan_id text NOT NULL REFERENCES plans,
        member_id text NOT NULL REFERENCES members,
        kind text NOT NULL,
        amount bigint CHECK (amount >= 0),
        share_bp integer CHECK (share_bp BETWEEN 0 AND 10000),
        PRIMARY KEY (plan_id, member_id, kind),
        CHECK ((amount IS NULL) <> (share_bp IS NULL))
    );
    CREATE TABLE usage_records (
        plan_id text NOT NULL REFERENCES plans,
        idempotency_key text NOT NULL,
        member_id text NOT NULL REFERENCES members,
        kind text NOT NULL,
        amount bigint NOT NULL CHECK (amount > 0),
        at timestamptz NOT NULL,
        period integer NOT NULL,
        charged bigint NOT NULL CHECK (charged >= 0),
        excess bigint NOT NULL CHECK (excess >= 0),
        received_at timestamptz NOT NULL,
        PRIMARY KEY (plan_id, idempotency_key),
        CHECK (charged + excess = amount)
    );
    CREATE INDEX usage_plan_period ON usage_records (plan_id, period);
    CREATE INDEX usage_member_period ON usage_records (member_id, period);
    CREATE TABLE notices (
        notice_id bigserial PRIMARY KEY,
        plan_id text NOT NULL REFERENCES plans,
        member_id text NOT NULL REFERENCES members,
        at timestamptz NOT NULL,
        kind text NOT NULL,
        details jsonb NOT NULL
    );
    CREATE INDEX notices_member ON notices (member_id);
    CREATE TABLE audit_log (
        event_id bigserial PRIMARY KEY,
        plan_id text,
        at timestamptz NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        target text,
        details jsonb NOT NULL
    );
    CREATE INDEX audit_plan ON audit_log (plan_id, event_id);
    CREATE TABLE tokens (
        token_hash text PRIMARY KEY,
        role text NOT NULL,
        plan_id text NOT NULL REFERENCES plans,
        member_id text NOT NULL REFERENCES members,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz
    );
    CREATE INDEX tokens_member ON tokens (member_id);
    CREATE TABLE counters (
        name text PRIMARY KEY,
        next bigint NOT NULL
    );
    CREATE TABLE subscribers (
        imsi text PRIMARY KEY,
        iccid text NOT NULL,
        algorithm text NOT NULL,
        k bytea NOT NULL,
        opc bytea,
        amf bytea NOT NULL,
        sqn bigint NOT NULL,
        barred boolean NOT NULL,
        milenage_r smallint[],
        milenage_c bytea
    );
    CREATE TABLE auth_vectors (
        imsi text NOT NULL REFERENCES subscribers ON DELETE CASCADE,
        rand bytea NOT NULL,
        autn bytea NOT NULL,
        xres bytea NOT NULL,
        ck bytea NOT NULL,
        ik bytea NOT NULL,
        ak bytea NOT NULL,
        PRIMARY KEY (imsi, rand)
    );
    """,
]


class _Pool:
    """A few idle connections, each already pointed at the schema; one per unit of work."""

    def __init__(self, dsn: str, schema: str, size: int = 4):
        self._dsn, self._schema, self._size = dsn, schema, size
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._dsn, row_factory=dict_row, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}".strip()) from None
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema)))
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._release(conn)

    def _release(self, conn: psycopg.Connection) -> None:
        if not conn.closed and not conn.broken:
            try:
                conn.rollback()  # no-op after a commit; ends whatever an error left open
            except psycopg.Error:
                conn.close()
        with self._lock:
            if len(self._idle) < self._size and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PgStore:
    """PlanStore on PostgreSQL. ``authenticator_store()`` shares the connection pool."""

    def __init__(self, dsn: str | None = None, schema: str = DEFAULT_SCHEMA):
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema name must be lower-case letters, digits and _, got {schema!r}")
        self.dsn = dsn or dsn_from_env()
        self.schema = schema
        self._pool = _Pool(self.dsn, schema)

    def migrate(self) -> int:
        """Create the schema or bring it to the latest version; returns that version."""
        with self._autocommit() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kinsim-migrate:{self.schema}",))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            row = conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version").fetchone()
            current = row["v"]
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    conn.execute(script)
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            return len(MIGRATIONS)

    def drop_schema(self) -> None:
        with self._autocommit() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
        self.close()

    def close(self) -> None:
        self._pool.close()

    def atomic(self, fn: Callable[[Any], T], readonly: bool = False) -> T:
        level = psycopg.IsolationLevel.REPEATABLE_READ if readonly else psycopg.IsolationLevel.READ_COMMITTED
        for attempt in range(MAX_RETRIES):
            try:
                with self._pool.connection() as conn:
                    conn.isolation_level = level
                    conn.read_only = readonly
                    with conn.transaction():
                        return fn(_PgTx(conn))
            except (errors.SerializationFailure, errors.DeadlockDetected):
                if attempt == MAX_RETRIES - 1:
                    raise Conflict("the operation kept conflicting with concurrent changes; try again") from None
            except psycopg.DataError:  # e.g. a NUL character in an id: no such row can exist
                raise InvalidRequest("the request holds a value the database cannot represent") from None
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL failed: {exc}".strip()) from None
        raise AssertionError("unreachable")

    @contextmanager
    def _autocommit(self) -> Iterator[psycopg.Connection]:
        """One short READ COMMITTED transaction (the authenticator's single statements, schema changes)."""
        with self._pool.connection() as conn:
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            conn.read_only = False
            with conn.transaction():
                yield conn

    def authenticator_store(self) -> PgAuthenticatorStore:
        return PgAuthenticatorStore(self)


# --- row <-> entity ----------------------------------------------------------------------------------


def _plan(row: dict) -> Plan:
    return Plan(
        row["plan_id"], row["name"], row["owner_member_id"], row["max_members"], {k: row["pool"][k] for k in KINDS if k in row["pool"]},
        Policy(row["policy"]), row["period_days"], row["anchor"], row["created_at"], Numbering(**row["numbering"]),
        row["next_serial"], row["template"], row["cc_required"], timedelta(seconds=row["invitation_ttl_s"]),
        row["max_cc_attempts"],
    )


def _member(row: dict) -> Member:
    return Member(row["member_id"], row["plan_id"], row["display_name"], Role(row["role"]), MemberState(row["state"]),
                  row["created_at"], row["updated_at"], row["eid"], row["iccid"])


def _profile(row: dict) -> Profile:
    return Profile(row["iccid"], row["plan_id"], row["member_id"], row["imsi"], ProfileState(row["state"]),
                   row["created_at"], row["eid"], row["installed_at"], row["revoked_at"], row["delete_requested"])


def _invitation(row: dict) -> Invitation:
    return Invitation(row["invitation_id"], row["plan_id"], row["member_id"], row["iccid"],
                      InvitationState(row["state"]), row["created_at"], row["expires_at"], row["cc_required"],
                      row["max_cc_attempts"], row["matching_id"], row["eid"], row["activation_code"],
                      row["cc_failures"], row["closed_at"])


def _usage(row: dict) -> UsageRecord:
    return UsageRecord(row["plan_id"], row["idempotency_key"], row["member_id"], row["kind"], row["amount"], row["at"],
                       row["period"], row["charged"], row["excess"], row["received_at"])


def _upsert(table: str, key: str, values: dict[str, Any]) -> tuple[sql.Composed, dict[str, Any]]:
    columns = list(values)
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        sql.Identifier(key),
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns if c != key),
    )
    return statement, values


class _PgTx:
    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def _one(self, query: str, params: tuple | dict = ()) -> dict | None:
        return self._conn.execute(query, params).fetchone()

    def _all(self, query: str, params: tuple | dict = ()) -> list[dict]:
        return self._conn.execute(query, params).fetchall()

    def _put(self, table: str, key: str, values: dict[str, Any]) -> None:
        statement, params = _upsert(table, key, values)
        self._conn.execute(statement, params)

    # plans
    def get_plan(self, plan_id, for_update=False):
        row = self._one("SELECT * FROM plans WHERE plan_id = %s" + (" FOR UPDATE" if for_update else ""), (plan_id,))
        return _plan(row) if row else None

    def list_plans(self):
        return [_plan(r) for r in self._all("SELECT * FROM plans ORDER BY created_at, plan_id")]

    def put_plan(self, plan):
        n = plan.numbering
        self._put("plans", "plan_id", {
            "plan_id": plan.plan_id, "name": plan.name, "owner_member_id": plan.owner_member_id,
            "max_members": plan.max_members, "pool": Jsonb(dict(plan.pool)), "policy": plan.policy.value,
            "period_days": plan.period_days, "anchor": plan.anchor, "created_at": plan.created_at,
            "numbering": Jsonb({"iccid_prefix": n.iccid_prefix, "iccid_first": n.iccid_first,
                                "iccid_last": n.iccid_last, "mcc": n.mcc, "mnc": n.mnc,
                                "msin_first": n.msin_first, "msin_last": n.msin_last}),
            "next_serial": plan.next_serial, "template": plan.template, "cc_required": plan.cc_required,
            "invitation_ttl_s": int(plan.invitation_ttl.total_seconds()), "max_cc_attempts": plan.max_cc_attempts,
        })  # fmt: skip

    # members
    def get_member(self, member_id):
        row = self._one("SELECT * FROM members WHERE member_id = %s", (member_id,))
        return _member(row) if row else None

    def plan_members(self, plan_id):
        rows = self._all("SELECT * FROM members WHERE plan_id = %s ORDER BY created_at, member_id", (plan_id,))
        return [_member(r) for r in rows]

    def put_member(self, m):
        self._put("members", "member_id", {
            "member_id": m.member_id, "plan_id": m.plan_id, "display_name": m.display_name, "role": m.role.value,
            "state": m.state.value, "created_at": m.created_at, "updated_at": m.updated_at, "eid": m.eid,
            "iccid": m.iccid,
        })  # fmt: skip

    # profiles
    def get_profile(self, iccid):
        row = self._one("SELECT * FROM profiles WHERE iccid = %s", (iccid,))
        return _profile(row) if row else None

    def profile_by_imsi(self, imsi):
        row = self._one("SELECT * FROM profiles WHERE imsi = %s", (imsi,))
        return _profile(row) if row else None

    def member_profiles(self, member_id):
        rows = self._all("SELECT * FROM profiles WHERE member_id = %s ORDER BY created_at, iccid", (member_id,))
        return [_profile(r) for r in rows]

    def put_profile(self, p):
        self._put("profiles", "iccid", {
            "iccid": p.iccid, "plan_id": p.plan_id, "member_id": p.member_id, "imsi": p.imsi, "state": p.state.value,
            "created_at": p.created_at, "eid": p.eid, "installed_at": p.installed_at, "revoked_at": p.revoked_at,
            "delete_requested": p.delete_requested,
        })  # fmt: skip

    # invitations
    def get_invitation(self, invitation_id):
        row = self._one("SELECT * FROM invitations WHERE invitation_id = %s", (invitation_id,))
        return _invitation(row) if row else None

    def invitation_for_iccid(self, iccid):
        row = self._one("SELECT * FROM invitations WHERE iccid = %s", (iccid,))
        return _invitation(row) if row else None

    def plan_invitations(self, plan_id):
        rows = self._all("SELECT * FROM invitations WHERE plan_id = %s ORDER BY created_at, invitation_id",
                         (plan_id,))
        return [_invitation(r) for r in rows]

    def put_invitation(self, i):
        self._put("invitations", "invitation_id", {
            "invitation_id": i.invitation_id, "plan_id": i.plan_id, "member_id": i.member_id, "iccid": i.iccid,
            "state": i.state.value, "created_at": i.created_at, "expires_at": i.expires_at,
            "cc_required": i.cc_required, "max_cc_attempts": i.max_cc_attempts, "matching_id": i.matching_id,
            "eid": i.eid, "activation_code": i.activation_code, "cc_failures": i.cc_failures,
            "closed_at": i.closed_at,
        })  # fmt: skip

    # caps
    def plan_caps(self, plan_id):
        rows = self._all("SELECT * FROM caps WHERE plan_id = %s ORDER BY member_id, kind", (plan_id,))
        return [Cap(r["member_id"], r["kind"], r["amount"], r["share_bp"]) for r in rows]

    def put_caps(self, plan_id, member_id, caps):
        self._conn.execute("DELETE FROM caps WHERE plan_id = %s AND member_id = %s", (plan_id, member_id))
        for c in caps:
            self._conn.execute("INSERT INTO caps (plan_id, member_id, kind, amount, share_bp) VALUES (%s, %s, %s, %s, %s)",
                               (plan_id, member_id, c.kind, c.amount, c.share_bp))

    # usage
    def get_usage(self, plan_id, idempotency_key):
        row = self._one("SELECT * FROM usage_records WHERE plan_id = %s AND idempotency_key = %s",
                        (plan_id, idempotency_key))
        return _usage(row) if row else None

    def add_usage(self, r):
        self._conn.execute(
            "INSERT INTO usage_records (plan_id, idempotency_key, member_id, kind, amount, at, period, charged, "
            "excess, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (r.plan_id, r.idempotency_key, r.member_id, r.kind, r.amount, r.at, r.period, r.charged, r.excess,
             r.received_at),
        )

    def usage_totals(self, plan_id, first_period, last_period):
        rows = self._all(
            "SELECT member_id, kind, period, sum(charged) AS charged, sum(amount) AS demand FROM usage_records "
            "WHERE plan_id = %s AND period BETWEEN %s AND %s GROUP BY member_id, kind, period "
            "ORDER BY member_id, kind, period",
            (plan_id, first_period, last_period),
        )
        return [UsageTotal(r["member_id"], r["kind"], r["period"], int(r["charged"]), int(r["demand"])) for r in rows]

    def member_usage(self, member_id, period):
        rows = self._all("SELECT * FROM usage_records WHERE member_id = %s AND period = %s "
                         "ORDER BY at, idempotency_key", (member_id, period))
        return [_usage(r) for r in rows]

    # notices and audit
    def add_notice(self, n):
        self._conn.execute("INSERT INTO notices (plan_id, member_id, at, kind, details) VALUES (%s, %s, %s, %s, %s)",
                           (n.plan_id, n.member_id, n.at, n.kind, Jsonb(dict(n.details))))

    def member_notices(self, member_id):
        rows = self._all("SELECT * FROM notices WHERE member_id = %s ORDER BY notice_id", (member_id,))
        return [Notice(r["plan_id"], r["member_id"], r["at"], r["kind"], r["details"]) for r in rows]

    def add_audit(self, e):
        self._conn.execute(
            "INSERT INTO audit_log (plan_id, at, actor, action, target, details) VALUES (%s, %s, %s, %s, %s, %s)",
            (e.plan_id, e.at, e.actor, e.action, e.target, Jsonb(dict(e.details))),
        )

    def plan_audit(self, plan_id):
        if plan_id is None:
            rows = self._all("SELECT * FROM audit_log ORDER BY event_id")
        else:
            rows = self._all("SELECT * FROM audit_log WHERE plan_id = %s ORDER BY event_id", (plan_id,))
        return [AuditEvent(r["plan_id"], r["at"], r["actor"], r["action"], r["target"], r["details"]) for r in rows]

    # tokens
    def put_token(self, t):
        self._put("tokens", "token_hash", {
            "token_hash": t.token_hash, "role": t.role, "plan_id": t.plan_id, "member_id": t.member_id,
            "created_at": t.created_at, "revoked_at": t.revoked_at,
        })  # fmt: skip

    def get_token(self, token_hash):
        r = self._one("SELECT * FROM tokens WHERE token_hash = %s", (token_hash,))
        return TokenRecord(r["token_hash"], r["role"], r["plan_id"], r["member_id"], r["created_at"],
                           r["revoked_at"]) if r else None

    def revoke_tokens(self, member_id, at):
        self._conn.execute("UPDATE tokens SET revoked_at = %s WHERE member_id = %s AND revoked_at IS NULL",
                           (at, member_id))

    def allocate(self, counter, count):
        row = self._one(
            "INSERT INTO counters (name, next) VALUES (%s, %s) ON CONFLICT (name) "
            "DO UPDATE SET next = counters.next + EXCLUDED.next RETURNING next",
            (counter, count),
        )
        return row["next"] - count


# --- the authenticator's table -------------------------------------------------------------------------


class PgAuthenticatorStore:
    """``mno.authenticator.AuthenticatorStore`` on the operator database."""

    def __init__(self, store: PgStore):
        self._store = store

    def get(self, imsi: str):
        from mno.authenticator import Subscriber

        with self._store._autocommit() as conn:
            row = conn.execute("SELECT * FROM subscribers WHERE imsi = %s", (imsi,)).fetchone()
        if row is None:
            return None
        constants = None
        if row["milenage_r"] is not None:
            c = bytes(row["milenage_c"])
            constants = aka.MilenageConstants(r=tuple(row["milenage_r"]), c=tuple(c[i : i + 16] for i in range(0, 80, 16)))
        return Subscriber(imsi=row["imsi"], iccid=row["iccid"], algorithm=row["algorithm"], k=bytes(row["k"]),
                          opc=bytes(row["opc"]) if row["opc"] is not None else None, amf=bytes(row["amf"]),
                          sqn=row["sqn"], barred=row["barred"], milenage_constants=constants)

    def put(self, subscriber) -> None:
        constants = subscriber.milenage_constants
        values = {
            "imsi": subscriber.imsi, "iccid": subscriber.iccid, "algorithm": subscriber.algorithm,
            "k": subscriber.k, "opc": subscriber.opc, "amf": subscriber.amf, "sqn": subscriber.sqn,
            "barred": subscriber.barred,
            "milenage_r": list(constants.r) if constants else None,
            "milenage_c": b"".join(constants.c) if constants else None,
        }  # fmt: skip
        statement, params = _upsert("subscribers", "imsi", values)
        with self._store._autocommit() as conn:
            conn.execute(statement, params)

    def compare_and_set_sqn(self, imsi: str, expected: int, new: int) -> bool:
        with self._store._autocommit() as conn:
            cur = conn.execute("UPDATE subscribers SET sqn = %s WHERE imsi = %s AND sqn = %s", (new, imsi, expected))
            return cur.rowcount == 1

    def set_barred(self, imsi: str, barred: bool) -> bool:
        with self._store._autocommit() as conn:
            cur = conn.execute("UPDATE subscribers SET barred = %s WHERE imsi = %s", (barred, imsi))
            return cur.rowcount == 1

    def add_vector(self, imsi: str, vector: aka.AuthVector) -> None:
        with self._store._autocommit() as conn:
            conn.execute(
                "INSERT INTO auth_vectors (imsi, rand, autn, xres, ck, ik, ak) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (imsi, rand) DO UPDATE SET autn = EXCLUDED.autn, xres = EXCLUDED.xres, "
                "ck = EXCLUDED.ck, ik = EXCLUDED.ik, ak = EXCLUDED.ak",
                (imsi, vector.rand, vector.autn, vector.xres, vector.ck, vector.ik, vector.ak),
            )

    def take_vector(self, imsi: str, rand: bytes) -> aka.AuthVector | None:
        with self._store._autocommit() as conn:
            row = conn.execute("DELETE FROM auth_vectors WHERE imsi = %s AND rand = %s RETURNING *",
                               (imsi, bytes(rand))).fetchone()
        if row is None:
            return None
        return aka.AuthVector(*(bytes(row[k]) for k in ("rand", "autn", "xres", "ck", "ik", "ak")))

    def discard_vectors(self, imsi: str) -> None:
        with self._store._autocommit() as conn:
            conn.execute("DELETE FROM auth_vectors WHERE imsi = %s", (imsi,))
