"""SM-DS state in one SQLite file: the Event Records (SGP.22 3.6.1) and the ES11 sessions.

One connection per process in WAL mode. Every request runs inside one ``transaction()`` (BEGIN
IMMEDIATE ... COMMIT), so a refused request leaves nothing behind, two concurrent requests cannot both
consume the same ES11 session, and a restart finds the records exactly as the last commit left them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kinsim.sqlite import SqliteStore, StoreError  # noqa: F401 - re-exported

DB_NAME = "smds.sqlite"
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class EventRecord:
    """One registered event: an RSP server holds something for the eUICC with this EID (3.6.1)."""

    eid: str
    event_id: str
    rsp_server_address: str
    forwarding_indicator: bool
    registrant: str  # the ES12 function requester (from its TLS client certificate)
    registered_at: datetime

    def as_dict(self) -> dict:
        return {"eid": self.eid, "eventId": self.event_id, "rspServerAddress": self.rsp_server_address,
                "forwardingIndicator": self.forwarding_indicator, "registrant": self.registrant,
                "registeredAt": self.registered_at.isoformat()}


@dataclass(frozen=True)
class Session:
    """An ES11 session between InitiateAuthentication and AuthenticateClient."""

    transaction_id: bytes
    euicc_challenge: bytes
    server_challenge: bytes
    ci_pkid: bytes  # euiccCiPKIdToBeUsed: the CI the eUICC was asked to sign under
    created_at: datetime
    expires_at: datetime
    closed: str | None = None  # None while the session waits for AuthenticateClient; else how it ended


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    eid TEXT NOT NULL,
    event_id TEXT NOT NULL,
    rsp_server_address TEXT NOT NULL,
    forwarding_indicator INTEGER NOT NULL,
    registrant TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (eid, event_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    transaction_id BLOB PRIMARY KEY,
    euicc_challenge BLOB NOT NULL,
    server_challenge BLOB NOT NULL,
    ci_pkid BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    closed TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
"""

_EVENT_COLUMNS = "eid, event_id, rsp_server_address, forwarding_indicator, registrant, registered_at"
_SESSION_COLUMNS = "transaction_id, euicc_challenge, server_challenge, ci_pkid, created_at, expires_at, closed"


def _ts(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _event(row: tuple) -> EventRecord:
    eid, event_id, address, forwarding, registrant, registered_at = row
    return EventRecord(eid, event_id, address, bool(forwarding), registrant, datetime.fromisoformat(registered_at))


def _session(row: tuple) -> Session:
    tid, challenge, server_challenge, ci_pkid, created_at, expires_at, closed = row
    return Session(bytes(tid), bytes(challenge), bytes(server_challenge), bytes(ci_pkid),
                   datetime.fromisoformat(created_at), datetime.fromisoformat(expires_at), closed)


class Store(SqliteStore):
    """The SM-DS state file (``smds.sqlite`` in a directory, a .sqlite/.db path, or ":memory:").
    One per process, used from one thread (the event loop)."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    DB_NAME = DB_NAME

    # --- Event Records ----------------------------------------------------------------------------

    def add_event(self, record: EventRecord) -> bool:
        """Insert ``record``; False (and nothing written) if (eid, eventId) is already registered."""
        cursor = self.conn.execute(
            f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (record.eid, record.event_id, record.rsp_server_address, int(record.forwarding_indicator),
             record.registrant, _ts(record.registered_at)),
        )
        return cursor.rowcount == 1

    def event(self, eid: str, event_id: str) -> EventRecord | None:
        row = self.conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE eid = ? AND event_id = ?",
                                (eid, event_id)).fetchone()
        return _event(row) if row else None

    def events(self, eid: str | None = None) -> list[EventRecord]:
        """Records for ``eid`` (all when None), oldest first."""
        where, args = ("WHERE eid = ?", (eid,)) if eid is not None else ("", ())
        rows = self.conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events {where} ORDER BY registered_at, rowid", args)
        return [_event(r) for r in rows]

    def delete_event(self, eid: str, event_id: str) -> None:
        self.conn.execute("DELETE FROM events WHERE eid = ? AND event_id = ?", (eid, event_id))

    # --- ES11 sessions ----------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        self.conn.execute(
            f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session.transaction_id, session.euicc_challenge, session.server_challenge, session.ci_pkid,
             _ts(session.created_at), _ts(session.expires_at), session.closed),
        )

    def session(self, transaction_id: bytes) -> Session | None:
        row = self.conn.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE transaction_id = ?",
                                (transaction_id,)).fetchone()
        return _session(row) if row else None

    def close_session(self, transaction_id: bytes, how: str) -> None:
        self.conn.execute("UPDATE sessions SET closed = ? WHERE transaction_id = ?", (how, transaction_id))

    def purge_sessions(self, before: datetime) -> int:
        """Forget sessions that expired before ``before``; their transactionIds stay unknown either way."""
        return self.conn.execute("DELETE FROM sessions WHERE expires_at < ?", (_ts(before),)).rowcount
