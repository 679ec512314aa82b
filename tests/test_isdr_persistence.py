"""Crash safety of the software eUICC: a process holding the card is killed between every pair of
BPP segments and at every durable step of the final commit; the reopened directory holds either no
trace of the profile or the complete one, with its notification, and the lock is free again."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from euicc_sim.store import StoreLocked
from rsp import messages as m
from rsp.ids import iccid_to_bcd
from tests.euicc_fixtures import (
    Reader,
    SmdpSide,
    card_at,
    iccid,
    install,
    make_euicc_dir,
    open_test_euicc,
    prepare,
    profile_package,
)

FORK = multiprocessing.get_context("fork")


def _load_then_wait(directory, count, conn, pause_at_checkpoints):
    """Child: download up to ``count`` segments (all if None), then report and wait to be killed.

    With ``pause_at_checkpoints`` every durable step of a store commit is reported and waits for
    the parent's word, so the parent can kill the child exactly there."""

    def checkpoint(step):
        conn.send(("checkpoint", step))
        conn.recv()

    with open_test_euicc(directory, checkpoint=checkpoint if pause_at_checkpoints else None) as euicc:
        reader = Reader(euicc.card)
        segments = prepare(reader, SmdpSide(), euicc.eid, iccid(1)).segments
        conn.send(("segments", len(segments)))
        for segment in segments[:count]:
            reader.es10(segment)
        conn.send(("ready", None))
        conn.recv()  # blocks until the parent kills this process


def _start(directory, count, pause_at_checkpoints=False):
    parent, child = FORK.Pipe()
    process = FORK.Process(target=_load_then_wait, args=(directory, count, child, pause_at_checkpoints))
    process.start()
    child.close()  # the parent's recv() raises EOFError if the child dies early
    kind, total = parent.recv()
    assert kind == "segments"
    return process, parent, total


def _kill(process):
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL


def _assert_all_or_nothing(directory) -> bool:
    """Reopen (the lock must be free) and check consistency; True if the profile is installed."""
    with open_test_euicc(directory) as euicc:
        reader = Reader(euicc.card)
        profiles, notifications = reader.profiles(), reader.notifications()
        state = euicc.isdr.state
        if not profiles:
            assert notifications == [] and state.next_seq == 1 and state.next_isdp == 0
            assert list((directory / "blobs").iterdir()) == []
            return False
        [profile], [notification] = profiles, notifications
        assert profile["profileState"] == "disabled"
        assert notification["seqNumber"] == 1 and notification["profileManagementOperation"] == {
            "notificationInstall"
        }
        assert euicc.isdr.package(state.profiles[0]) == profile_package(iccid(1))
        assert state.next_seq == 2 and state.next_isdp == 1
        [pending] = reader.call(
            m.RetrieveNotificationsListRequest({}), m.RetrieveNotificationsListResponse
        ).chosen
        assert pending.chosen["profileInstallationResultData"]["finalResult"].name == "successResult"
        return True


def test_kill_between_every_pair_of_segments(tmp_path):
    total = None
    count = 0
    while total is None or count <= total:
        directory = make_euicc_dir(tmp_path / f"euicc-{count}")
        process, conn, total = _start(directory, count)
        assert conn.recv() == ("ready", None)
        with pytest.raises(StoreLocked):  # two processes on one directory: refused
            open_test_euicc(directory)
        _kill(process)
        installed = _assert_all_or_nothing(directory)
        assert installed == (count == total), f"killed after {count} of {total} segments"
        count += 1
    assert count == total + 1 > 10


def test_kill_at_every_step_of_the_final_commit(tmp_path):
    step_index, outcomes = 0, []
    while True:
        directory = make_euicc_dir(tmp_path / f"euicc-{step_index}")
        process, conn, _ = _start(directory, None, pause_at_checkpoints=True)
        reached, message = 0, conn.recv()
        while message[0] == "checkpoint" and reached < step_index:
            conn.send("go")
            reached, message = reached + 1, conn.recv()
        _kill(process)
        outcomes.append(
            (message[1] if message[0] == "checkpoint" else "done", _assert_all_or_nothing(directory))
        )
        if message[0] == "ready":
            break
        step_index += 1
    steps = [step for step, _ in outcomes]
    assert "state-renamed" in steps and outcomes[-1] == ("done", True)
    # Until the rename of state.json nothing is installed; from the rename on, all of it is.
    renamed = steps.index("state-renamed")
    assert [installed for _, installed in outcomes] == [False] * renamed + [True] * (len(outcomes) - renamed)


def test_state_survives_close_and_reopen(tmp_path):
    with card_at(tmp_path / "euicc") as bench:
        bench.install(iccid(1))
        assert bench.reader.enable(iccid(1)) == 0
        request = m.SetNicknameRequest({"iccid": iccid_to_bcd(iccid(1)), "profileNickname": "mum"})
        bench.reader.call(request, m.SetNicknameResponse)
        before = bench.reader.profiles(), bench.reader.notifications()
    with open_test_euicc(tmp_path / "euicc") as euicc:
        reader = Reader(euicc.card)
        assert (reader.profiles(), reader.notifications()) == before
        assert euicc.enabled_package() == profile_package(iccid(1))
        result = install(reader, SmdpSide(), euicc.eid, iccid(2))
        assert result["profileInstallationResultData"]["notificationMetadata"]["seqNumber"].native == 2


def test_second_opener_in_the_same_process_is_refused(tmp_path):
    directory = make_euicc_dir(tmp_path / "euicc")
    with open_test_euicc(directory), pytest.raises(StoreLocked):
        open_test_euicc(directory)
    open_test_euicc(directory).close()  # free again after close
