"""The eUICC directory store: locking, atomic commits that survive SIGKILL at any step, permissions."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from euicc_sim.store import (
    BLOBS_DIR,
    IDENTITY_DIR,
    STATE_FILE,
    CardStore,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    blob_id,
)

REPO = Path(__file__).resolve().parents[1]

# Commit number i of a scripted card life: each install brings a profile package (a blob), its
# notification and a counter in one commit; every third commit deletes the oldest profile.
SCENARIO = textwrap.dedent('''
    from euicc_sim.store import blob_id

    def scenario(i):
        """(state, new blobs) after commit i; scenario(0) is the empty card."""
        if i == 0:
            return {}, {}
        profiles, blobs = [], {}
        for n in range(max(1, i - 2), i + 1):
            package = (f"profile package {n} ".encode()) * (50 + n)
            profiles.append({"iccid": f"8900{n:015d}", "package": blob_id(package), "state": "disabled"})
            if n == i:
                blobs[blob_id(package)] = package
        notifications = [{"seqNumber": n, "operation": "install", "iccid": f"8900{n:015d}",
                          "signed": (bytes([n % 256]) * 40).hex()} for n in range(1, i + 1)]
        return {"seqNumber": i, "profiles": profiles, "notifications": notifications}, blobs
''')
namespace: dict = {}
exec(SCENARIO, namespace)
scenario = namespace["scenario"]

CHILD = SCENARIO + textwrap.dedent('''
    import os, signal, sys
    from euicc_sim.store import CardStore

    directory, mode, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    steps = 0

    def checkpoint(step):
        global steps
        steps += 1
        print("step", steps, step, flush=True)
        if steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    store = CardStore.open(directory, create=True, checkpoint=checkpoint)
    first = store.state.get("seqNumber", 0) + 1
    last = first + 2 if mode == "three" else 10**9
    for i in range(first, last + 1):
        state, blobs = scenario(i)
        store.commit(state, blobs)
        print("committed", i, flush=True)
    store.close()
''')


def run_child(directory: Path, mode: str, kill_at: int = 0) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), mode, str(kill_at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def last_committed(output: str, before: int) -> int:
    numbers = [int(line.split()[1]) for line in output.splitlines() if line.startswith("committed")]
    return max(numbers, default=before)


def assert_consistent(directory: Path, committed: int) -> int:
    """The reopened state is exactly commit ``committed`` or ``committed + 1``, complete, tidy."""
    with CardStore.open(directory) as store:
        state = store.state
        seq = state.get("seqNumber", 0)
        assert seq in (committed, committed + 1), (seq, committed)
        assert state == scenario(seq)[0]
        for profile in state.get("profiles", []):
            assert store.read_blob(profile["package"]).startswith(b"profile package")
        referenced = {p["package"].split(":")[1] for p in state.get("profiles", [])}
    leftovers = [p.name for p in directory.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    assert {p.name for p in (directory / BLOBS_DIR).iterdir()} == referenced
    return seq


def test_kill_at_every_commit_step_leaves_old_or_new_state(tmp_path):
    kill_at, seen_steps = 1, set()
    while True:
        directory = tmp_path / f"card-{kill_at}"
        # one complete commit first, so every kill also has an old state to fall back to
        with CardStore.open(directory, create=True) as store:
            store.commit(*scenario(1))
        child = run_child(directory, "three", kill_at)
        out, err = child.communicate(timeout=60)
        if child.returncode == 0:
            break  # kill_at is past the last step of the three commits
        assert child.returncode == -signal.SIGKILL, err
        seen_steps.add(out.splitlines()[-1].split()[2])
        seq = assert_consistent(directory, last_committed(out, 1))
        with CardStore.open(directory) as store:  # and the card carries on
            store.commit(*scenario(seq + 1))
        assert_consistent(directory, seq + 1)
        kill_at += 1
    assert {"blob-temp-synced", "blob-renamed", "blobs-synced", "state-temp-synced", "state-renamed",
            "state-synced", "orphans-removed"} <= seen_steps
    assert kill_at > 15


def test_kill_at_random_moments_over_a_loop_of_commits(tmp_path):
    directory = tmp_path / "card"
    rng = random.Random(20240611)
    committed = 0
    for _ in range(8):
        child = run_child(directory, "loop")
        for _ in range(rng.randint(1, 6)):  # let it commit a few times, then kill wherever it is
            line = child.stdout.readline()
            while line.startswith("step"):
                line = child.stdout.readline()
            assert line.startswith("committed"), child.stderr.read()
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL
        committed = assert_consistent(directory, last_committed(line + rest, committed))
    assert committed >= 8


# --- locking ------------------------------------------------------------------------------------


def test_second_opener_in_this_process_is_refused(tmp_path):
    with CardStore.open(tmp_path / "card", create=True):
        with pytest.raises(StoreLocked) as refused:
            CardStore.open(tmp_path / "card")
        assert refused.value.pid == os.getpid()
        assert str(os.getpid()) in str(refused.value)
    CardStore.open(tmp_path / "card").close()  # free again after close


OPENER = textwrap.dedent('''
    import sys
    from euicc_sim.store import CardStore, StoreLocked
    try:
        store = CardStore.open(sys.argv[1])
    except StoreLocked as error:
        print("locked", error.pid)
    else:
        print("opened", store.state)
        sys.stdout.flush()
        if len(sys.argv) > 2:
            sys.stdin.readline()  # hold the lock until told (or killed)
''')


def run_opener(directory: Path, hold: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [sys.executable, "-c", OPENER, str(directory)] + (["hold"] if hold else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def test_second_opener_in_another_process_is_refused(tmp_path):
    directory = tmp_path / "card"
    with CardStore.open(directory, create=True) as store:
        store.commit({"seqNumber": 7})
        out, _ = run_opener(directory).communicate(timeout=60)
        assert out.split() == ["locked", str(os.getpid())]
    out, _ = run_opener(directory).communicate(timeout=60)
    assert out.strip() == "opened {'seqNumber': 7}"


def test_this_process_is_refused_while_another_holds_it_and_free_after_it_is_killed(tmp_path):
    directory = tmp_path / "card"
    CardStore.open(directory, create=True).close()
    holder = run_opener(directory, hold=True)
    assert holder.stdout.readline().startswith("opened")
    with pytest.raises(StoreLocked) as refused:
        CardStore.open(directory)
    assert refused.value.pid == holder.pid
    holder.kill()
    holder.communicate(timeout=60)
    CardStore.open(directory).close()  # the kernel released the dead holder's lock


# --- commits --------------------------------------------------------------------------------------


def test_commit_and_reopen(tmp_path):
    package = b"\xa0\x10" + bytes(range(16))
    ref = blob_id(package)
    state = {"seqNumber": 1, "profiles": [{"iccid": "89000123456789012341", "package": ref}]}
    with CardStore.open(tmp_path / "card", create=True) as store:
        assert store.state == {}
        store.commit(state, {ref: package})
        assert store.state == state
    with CardStore.open(tmp_path / "card") as store:
        assert store.state == state
        assert store.read_blob(ref) == package
    document = json.loads((tmp_path / "card" / STATE_FILE).read_text())
    assert document["state"] == state


def test_state_is_a_snapshot(tmp_path):
    with CardStore.open(tmp_path / "card", create=True) as store:
        store.commit({"profiles": []})
        snapshot = store.state
        snapshot["profiles"].append("not committed")
        assert store.state == {"profiles": []}


def test_deleted_profile_package_is_removed_with_the_commit(tmp_path):
    package = b"profile"
    with CardStore.open(tmp_path / "card", create=True) as store:
        store.commit({"package": blob_id(package)}, {blob_id(package): package})
        assert len(list((tmp_path / "card" / BLOBS_DIR).iterdir())) == 1
        store.commit({"package": None})
        assert list((tmp_path / "card" / BLOBS_DIR).iterdir()) == []


@pytest.mark.parametrize(
    ("state", "blobs", "error"),
    [
        ({"key": b"bytes"}, {}, TypeError),
        ({"nan": float("nan")}, {}, ValueError),
        (["not", "a", "dict"], {}, TypeError),
        ({"p": blob_id(b"a")}, {blob_id(b"a"): b"b"}, ValueError),  # wrong name
        ({}, {blob_id(b"a"): b"a"}, ValueError),  # not referenced
        ({"p": blob_id(b"a")}, {}, ValueError),  # referenced but missing
    ],
)
def test_bad_commits_change_nothing(tmp_path, state, blobs, error):
    directory = tmp_path / "card"
    with CardStore.open(directory, create=True) as store:
        store.commit({"seqNumber": 1})
        before = (directory / STATE_FILE).read_bytes()
        with pytest.raises(error):
            store.commit(state, blobs)
        assert store.state == {"seqNumber": 1}
    assert (directory / STATE_FILE).read_bytes() == before
    assert list((directory / BLOBS_DIR).iterdir()) == []
    assert [p for p in directory.iterdir() if p.name.startswith(".tmp-")] == []


def test_open_removes_temp_files_and_orphan_blobs(tmp_path):
    directory = tmp_path / "card"
    with CardStore.open(directory, create=True) as store:
        store.commit({"p": blob_id(b"kept")}, {blob_id(b"kept"): b"kept"})
    (directory / ".tmp-state.json-1-1").write_text("half")
    (directory / BLOBS_DIR / ".tmp-abc-1-2").write_bytes(b"half")
    (directory / BLOBS_DIR / blob_id(b"orphan")[7:]).write_bytes(b"orphan")
    (directory / IDENTITY_DIR / ".tmp-euicc.key-1-3").write_bytes(b"half")
    with CardStore.open(directory) as store:
        assert store.read_blob(blob_id(b"kept")) == b"kept"
    names = {p.relative_to(directory).as_posix() for p in directory.rglob("*")}
    assert names == {"lock", STATE_FILE, BLOBS_DIR, IDENTITY_DIR, f"{BLOBS_DIR}/{blob_id(b'kept')[7:]}"}


def test_tampered_blob_is_detected(tmp_path):
    directory = tmp_path / "card"
    with CardStore.open(directory, create=True) as store:
        store.commit({"p": blob_id(b"good")}, {blob_id(b"good"): b"good"})
        (directory / BLOBS_DIR / blob_id(b"good")[7:]).write_bytes(b"evil")
        with pytest.raises(StoreCorrupt):
            store.read_blob(blob_id(b"good"))
        with pytest.raises(StoreError):
            store.read_blob(blob_id(b"never stored"))
        with pytest.raises(ValueError):
            store.read_blob("../state.json")


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": "other"}', b'{"format": "kinsim-euicc-store", "version": 99, "state": {}}'],
)
def test_damaged_state_is_refused_and_the_lock_released(tmp_path, content):
    directory = tmp_path / "card"
    CardStore.open(directory, create=True).close()
    (directory / STATE_FILE).write_bytes(content)
    with pytest.raises(StoreCorrupt):
        CardStore.open(directory)
    (directory / STATE_FILE).unlink()
    CardStore.open(directory).close()


def test_missing_referenced_blob_is_corruption(tmp_path):
    directory = tmp_path / "card"
    with CardStore.open(directory, create=True) as store:
        store.commit({"p": blob_id(b"x")}, {blob_id(b"x"): b"x"})
    (directory / BLOBS_DIR / blob_id(b"x")[7:]).unlink()
    with pytest.raises(StoreCorrupt):
        CardStore.open(directory)


def test_open_without_create_needs_the_directory(tmp_path):
    with pytest.raises(StoreError):
        CardStore.open(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        CardStore.open(tmp_path / "file", create=True)
    assert not (tmp_path / "absent").exists()


def test_closed_store_refuses_use(tmp_path):
    store = CardStore.open(tmp_path / "card", create=True)
    store.close()
    store.close()  # idempotent
    assert store.closed
    with pytest.raises(StoreError):
        store.commit({})
    with pytest.raises(StoreError):
        _ = store.state


# --- identity and permissions ---------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_permissions_of_directory_keys_and_state(tmp_path):
    directory = tmp_path / "card"
    key = b"-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"
    with CardStore.open(directory, create=True) as store:
        store.write_identity("euicc.key.pem", key, private=True)
        store.write_identity("euicc.cert.der", b"\x30\x82")
        store.commit({"p": blob_id(b"pkg")}, {blob_id(b"pkg"): b"pkg"})
        assert store.read_identity("euicc.key.pem") == key
        store.write_identity("euicc.key.pem", key + b"\n", private=True)  # replaced atomically
        assert store.read_identity("euicc.key.pem") == key + b"\n"
    umask = os.umask(0)
    os.umask(umask)
    assert mode_of(directory) == 0o700 & ~umask
    assert mode_of(directory / IDENTITY_DIR / "euicc.key.pem") == 0o600
    assert mode_of(directory / IDENTITY_DIR / "euicc.cert.der") == 0o644 & ~umask
    assert mode_of(directory / STATE_FILE) == 0o600
    assert mode_of(directory / BLOBS_DIR / blob_id(b"pkg")[7:]) == 0o600
    assert mode_of(directory / "lock") == 0o600


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 101])
def test_identity_names_stay_inside_the_folder(tmp_path, name):
    with CardStore.open(tmp_path / "card", create=True) as store, pytest.raises(ValueError):
        store.write_identity(name, b"x")


def test_missing_identity_file(tmp_path):
    with CardStore.open(tmp_path / "card", create=True) as store, pytest.raises(StoreError):
        store.read_identity("euicc.key.pem")
