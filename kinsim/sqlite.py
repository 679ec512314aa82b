"""The SQLite plumbing the server roles share (SM-DP+, SM-DS): one file per role, WAL so the CLI can
read while the server writes, full fsync by default, a schema version, and nested transactions
where the outermost one is the unit of atomicity."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rsp.errors import KinsimError

META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


class StoreError(KinsimError):
    """The state file cannot be used (wrong schema version, corrupt, not writable)."""


class CommitAndRaise(Exception):  # noqa: N818 - a control-flow signal, not an error kind
    """Raised inside a transaction to commit what was written (a counted attempt) and still fail."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def database_path(path: str | os.PathLike, default_name: str) -> str | Path:
    """``path`` itself for a .sqlite/.db file or ":memory:", else ``default_name`` inside directory ``path``."""
    if str(path) == ":memory:":
        return ":memory:"
    target = Path(path)
    if target.suffix in (".sqlite", ".db"):
        return target
    return target / default_name


class SqliteStore:
    """Base of a role's state file: subclasses add their tables (``SCHEMA``) and queries."""

    SCHEMA = ""
    SCHEMA_VERSION = "1"
    DB_NAME = "state.sqlite"

    def __init__(self, connection: sqlite3.Connection):
        self.conn = connection
        self._depth = 0

    @classmethod
    def open(cls, path: str | os.PathLike, *, synchronous: str = "FULL", create: bool = True):
        """Open (with ``create``, make) the state file. Without ``create`` a missing or empty file is a
        StoreError and nothing is written, so a mistyped path is reported, not turned into a new store."""
        target = database_path(path, cls.DB_NAME)
        if target != ":memory:":
            _prepare(Path(target), create)
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")  # the CLI and the server may share the file
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(META_TABLE + cls.SCHEMA)
            store = cls(conn)
            with store.transaction():
                version = store.get_meta("schema_version")
                if version is None:
                    store.set_meta("schema_version", cls.SCHEMA_VERSION)
                elif version != cls.SCHEMA_VERSION:
                    raise StoreError(f"{target}: schema version {version}, this kinsim expects {cls.SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{target}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator:
        """One atomic unit; nested calls join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except CommitAndRaise:
            self.conn.execute("COMMIT")
            raise
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._depth = 0

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _prepare(target: Path, create: bool) -> None:
    if create:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    elif not target.is_file() or target.stat().st_size == 0:
        raise StoreError(f"no state at {target} (check the path; nothing has been stored there yet)")
