"""Crash-safe storage of one software eUICC: a directory, an exclusive lock, atomic commits.

Layout of an eUICC directory::

    lock            flock()ed while a process has the card open; holds that process's PID
    state.json      everything the ISD-R keeps (counters, profiles and their metadata, pending
                    notifications with their signed DER, addresses), replaced in one rename
    blobs/<sha256>  large immutable values (installed profile packages), named by their SHA-256 and
                    referenced from the state as "sha256:<hex>" strings
    identity/<name> keys and certificates; private keys are 0600

``commit(new_state, blobs)`` writes the new blobs (fsync each, rename, fsync the folder), then the new
state.json (temp file, fsync, rename, fsync the folder). The rename of state.json is the single
point where the old state becomes the new one, so a process killed anywhere leaves either the old
state or the new one: one commit holding a profile, its notification and the counters installs all
of them or none. Opening the directory removes what a killed commit left behind (temp files, blobs
no state references). A second opener, in this process or another, is refused with StoreLocked.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rsp.errors import KinsimError

STATE_FILE = "state.json"
LOCK_FILE = "lock"
BLOBS_DIR = "blobs"
IDENTITY_DIR = "identity"
BLOB_PREFIX = "sha256:"
_TEMP_PREFIX = ".tmp-"
_FORMAT = "kinsim-euicc-store"
_VERSION = 1
_BLOB_REF = re.compile(r"sha256:[0-9a-f]{64}")
_IDENTITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class StoreError(KinsimError):
    """The eUICC directory cannot be used as asked."""


class StoreLocked(StoreError):
    """Another opener (this process or another one) holds the eUICC directory."""

    def __init__(self, directory: Path, pid: int | None):
        holder = f"process {pid}" if pid else "another process"
        if pid == os.getpid():
            holder += " (this process)"
        super().__init__(f"eUICC directory {directory} is in use by {holder}; close it there first")
        self.directory = directory
        self.pid = pid


class StoreCorrupt(StoreError):
    """The directory's content is not what this module writes (edited or damaged by hand)."""


def blob_id(data: bytes) -> str:
    """The reference under which ``data`` is stored: ``"sha256:<hex>"``."""
    return BLOB_PREFIX + hashlib.sha256(data).hexdigest()


def blob_refs(value: Any) -> set[str]:
    """Every blob reference in a JSON-like value (strings of the form ``sha256:<64 hex>``)."""
    if isinstance(value, str):
        return {value} if _BLOB_REF.fullmatch(value) else set()
    if isinstance(value, dict):
        return set().union(*(blob_refs(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(blob_refs(v) for v in value))
    return set()


class CardStore:
    """One open eUICC directory. Use ``CardStore.open(directory)``; not thread-safe."""

    def __init__(self, directory: Path, lock_fd: int, state: dict, checkpoint: Callable[[str], None]):
        self._directory = directory
        self._lock_fd: int | None = lock_fd
        self._state = state
        self._checkpoint = checkpoint
        self._temp_counter = 0

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        *,
        create: bool = False,
        checkpoint: Callable[[str], None] | None = None,
    ) -> CardStore:
        """Lock and recover the directory (created, mode 0700, when ``create``).

        ``checkpoint(step)`` is called between the durable steps of a commit (crash tests stop the
        process there).
        """
        path = Path(directory)
        if not path.is_dir():
            if path.exists() or not create:
                raise StoreError(f"no eUICC directory at {path}")
            try:
                path.mkdir(mode=0o700, parents=True)
            except OSError as exc:
                raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
            _fsync_dir(path.parent)
        elif not create and not (path / LOCK_FILE).is_file():
            # every store has its lock file from the start: without one this is some other directory,
            # which opening must not fill with a lock, blobs/ and identity/
            raise StoreError(f"{path} holds no eUICC (create one with 'kinsim euicc create')")
        lock_fd = _lock(path)
        try:
            state = _recover(path)
        except BaseException:
            _unlock(lock_fd)
            raise
        return cls(path, lock_fd, state, checkpoint or (lambda step: None))

    # --- state --------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def state(self) -> dict:
        """A copy of the committed state (changing it changes nothing until ``commit``)."""
        self._check_open()
        return copy.deepcopy(self._state)

    def commit(self, new_state: dict, blobs: Mapping[str, bytes] | None = None) -> None:
        """Atomically replace the state; ``blobs`` maps ``blob_id(data)`` to data the state references.

        Bad arguments raise before anything is written.
        """
        self._check_open()
        blobs = dict(blobs or {})
        text = _encode_state(new_state)
        refs = blob_refs(new_state)
        self._check_blobs(blobs, refs)
        blob_dir = self._directory / BLOBS_DIR
        written = False
        for ref, data in blobs.items():
            if not (blob_dir / ref[len(BLOB_PREFIX) :]).exists():
                self._write_file(blob_dir, ref[len(BLOB_PREFIX) :], data, 0o600, "blob")
                written = True
        if written:
            _fsync_dir(blob_dir)
            self._checkpoint("blobs-synced")
        self._write_file(self._directory, STATE_FILE, text, 0o600, "state")
        _fsync_dir(self._directory)
        self._checkpoint("state-synced")
        self._state = json.loads(text)["state"]
        if _remove_orphan_blobs(self._directory, refs):
            self._checkpoint("orphans-removed")

    def _check_blobs(self, blobs: dict[str, bytes], refs: set[str]) -> None:
        for ref, data in blobs.items():
            if ref != blob_id(data):
                raise ValueError(f"blob given as {ref} has the SHA-256 {blob_id(data)}")
            if ref not in refs:
                raise ValueError(f"blob {ref} is not referenced by the new state")
        stored = _stored_blobs(self._directory)
        missing = sorted(ref for ref in refs if ref not in blobs and ref not in stored)
        if missing:
            raise ValueError(f"the new state references blobs that are neither stored nor given: {missing}")

    def read_blob(self, ref: str) -> bytes:
        """The stored data of ``ref``, checked against its SHA-256."""
        self._check_open()
        if not _BLOB_REF.fullmatch(ref):
            raise ValueError(f"not a blob reference: {ref!r}")
        try:
            data = (self._directory / BLOBS_DIR / ref[len(BLOB_PREFIX) :]).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no blob {ref} in {self._directory}") from None
        if blob_id(data) != ref:
            raise StoreCorrupt(f"blob {ref} in {self._directory} does not match its SHA-256")
        return data

    # --- identity: keys and certificates ------------------------------------------------------

    def write_identity(self, name: str, data: bytes, *, private: bool = False) -> None:
        """Atomically write ``identity/<name>``: 0600 when ``private`` (keys), else 0644."""
        self._check_open()
        folder = self._directory / IDENTITY_DIR
        self._write_file(folder, _identity_name(name), data, 0o600 if private else 0o644, "identity")
        _fsync_dir(folder)

    def read_identity(self, name: str) -> bytes:
        self._check_open()
        try:
            return (self._directory / IDENTITY_DIR / _identity_name(name)).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no {name} in {self._directory / IDENTITY_DIR}") from None

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def __enter__(self) -> CardStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise StoreError(f"the eUICC store {self._directory} is closed")

    def _write_file(self, folder: Path, name: str, data: bytes, mode: int, step: str) -> None:
        """Temp file, write, fsync, rename over ``name``; the caller fsyncs the folder."""
        self._temp_counter += 1
        temp = folder / f"{_TEMP_PREFIX}{name}-{os.getpid()}-{self._temp_counter}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self._checkpoint(f"{step}-temp-synced")
        os.replace(temp, folder / name)
        self._checkpoint(f"{step}-renamed")


# --- helpers --------------------------------------------------------------------------------------


def _encode_state(state: dict) -> bytes:
    if not isinstance(state, dict):
        raise TypeError(f"the eUICC state must be a dict, not {type(state).__name__}")
    document = {"format": _FORMAT, "version": _VERSION, "state": state}
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False).encode()


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = _read_pid(fd)
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StoreLocked(path, holder) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _unlock(fd: int) -> None:
    os.ftruncate(fd, 0)  # no stale PID for the next opener to report
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _recover(path: Path) -> dict:
    """After a kill: drop temp files, load the state, check and tidy its blobs."""
    for name in (BLOBS_DIR, IDENTITY_DIR):
        if not (path / name).is_dir():
            (path / name).mkdir(mode=0o700)
            _fsync_dir(path)
    for folder in (path, path / BLOBS_DIR, path / IDENTITY_DIR):
        temps = [entry for entry in folder.iterdir() if entry.name.startswith(_TEMP_PREFIX)]
        for entry in temps:
            entry.unlink()
        if temps:
            _fsync_dir(folder)
    state = _load_state(path)
    refs = blob_refs(state)
    missing = sorted(refs - _stored_blobs(path))
    if missing:
        raise StoreCorrupt(f"{path / STATE_FILE} references missing blobs: {missing}")
    _remove_orphan_blobs(path, refs)
    return state


def _load_state(path: Path) -> dict:
    try:
        text = (path / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return {}  # a new eUICC
    try:
        document = json.loads(text)
    except ValueError as error:
        raise StoreCorrupt(f"{path / STATE_FILE} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise StoreCorrupt(f"{path / STATE_FILE} is not a kinsim eUICC state")
    if document.get("version") != _VERSION or not isinstance(document.get("state"), dict):
        raise StoreCorrupt(f"{path / STATE_FILE} has unsupported version {document.get('version')!r}")
    return document["state"]


def _stored_blobs(path: Path) -> set[str]:
    return {BLOB_PREFIX + entry.name for entry in (path / BLOBS_DIR).iterdir()
            if _BLOB_REF.fullmatch(BLOB_PREFIX + entry.name)}


def _remove_orphan_blobs(path: Path, refs: set[str]) -> bool:
    orphans = _stored_blobs(path) - refs
    for ref in orphans:
        (path / BLOBS_DIR / ref[len(BLOB_PREFIX) :]).unlink()
    if orphans:
        _fsync_dir(path / BLOBS_DIR)
    return bool(orphans)


def _identity_name(name: str) -> str:
    if not _IDENTITY_NAME.fullmatch(name):
        raise ValueError(f"identity file names are letters, digits, '.', '_' and '-': {name!r}")
    return name


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
