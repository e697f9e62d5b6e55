"""``run.lock.json``: one live owner per run directory (contract.md §2, §9 ``stop``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attractor_trio.errors import AttractorError
from attractor_trio.persist import lock as lock_module
from attractor_trio.persist.atomic import CorruptFileError
from attractor_trio.persist.lock import (
    RunLockedError,
    RunLockInfo,
    acquire_run_lock,
    is_pid_alive,
    read_run_lock,
)


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(root: Path, content: object) -> None:
    (root / "run.lock.json").write_text(json.dumps(content))


def _lock_doc(root: Path) -> object:
    return json.loads((root / "run.lock.json").read_text())


def test_acquire_writes_owner_and_release_removes_it(tmp_path: Path) -> None:
    lock = acquire_run_lock(tmp_path, "run-1")
    doc = _lock_doc(tmp_path)
    assert doc == {"pid": os.getpid(), "run_id": "run-1", "acquired_at": lock.info.acquired_at}
    assert lock.info.acquired_at.endswith("Z")
    assert read_run_lock(tmp_path) == lock.info
    assert lock.release() is True
    assert not (tmp_path / "run.lock.json").exists()
    assert os.listdir(tmp_path) == []


def test_context_manager_releases(tmp_path: Path) -> None:
    with acquire_run_lock(tmp_path, "run-1"):
        assert (tmp_path / "run.lock.json").exists()
    assert not (tmp_path / "run.lock.json").exists()


def test_live_owner_is_refused_with_pid_and_stop_hint(tmp_path: Path) -> None:
    owner = {"pid": os.getpid(), "run_id": "other", "acquired_at": "2025-01-01T00:00:00.000Z"}
    _write_lock(tmp_path, owner)
    with pytest.raises(RunLockedError) as info:
        acquire_run_lock(tmp_path, "run-2")
    error = info.value
    assert isinstance(error, AttractorError)
    assert error.owner == RunLockInfo(**owner)  # type: ignore[arg-type]
    message = str(error)
    assert f"process {os.getpid()}" in message
    assert "'other'" in message
    assert f"attractor-trio stop {tmp_path}" in message
    assert _lock_doc(tmp_path) == owner


def test_second_acquire_while_held_is_refused(tmp_path: Path) -> None:
    first = acquire_run_lock(tmp_path, "run-1")
    with pytest.raises(RunLockedError):
        acquire_run_lock(tmp_path, "run-1")
    assert read_run_lock(tmp_path) == first.info


def test_stale_lock_of_exited_process_is_reclaimed(tmp_path: Path) -> None:
    dead = _dead_pid()
    _write_lock(tmp_path, {"pid": dead, "run_id": "old", "acquired_at": "x"})
    lock = acquire_run_lock(tmp_path, "new")
    assert _lock_doc(tmp_path) == lock.info.to_json()
    assert lock.info.pid == os.getpid()
    assert os.listdir(tmp_path) == ["run.lock.json"]


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"pid": "123", "run_id": "r", "acquired_at": "t"}',
        b'{"pid": true, "run_id": "r", "acquired_at": "t"}',
        b'{"run_id": "r"}',
        b'{"pid": 0, "run_id": "r", "acquired_at": "t"}',
        b'{"pid": -5, "run_id": "r", "acquired_at": "t"}',
    ],
)
def test_unreadable_or_impossible_lock_is_reclaimed(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "run.lock.json").write_bytes(garbage)
    lock = acquire_run_lock(tmp_path, "new")
    assert _lock_doc(tmp_path) == lock.info.to_json()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    lock = acquire_run_lock(tmp_path, "run-1")
    usurper = {"pid": os.getpid(), "run_id": "run-2", "acquired_at": "2030-01-01T00:00:00.000Z"}
    _write_lock(tmp_path, usurper)
    assert lock.release() is False
    assert _lock_doc(tmp_path) == usurper


def test_release_of_missing_or_garbage_lock_is_a_no_op(tmp_path: Path) -> None:
    lock = acquire_run_lock(tmp_path, "run-1")
    (tmp_path / "run.lock.json").unlink()
    assert lock.release() is False
    (tmp_path / "run.lock.json").write_bytes(b"{")
    assert lock.release() is False
    assert (tmp_path / "run.lock.json").read_bytes() == b"{"


def test_read_run_lock_absent_and_corrupt(tmp_path: Path) -> None:
    assert read_run_lock(tmp_path) is None
    (tmp_path / "run.lock.json").write_text('{"pid": "nope"}')
    with pytest.raises(CorruptFileError, match="key 'pid' must be an integer"):
        read_run_lock(tmp_path)


def test_is_pid_alive() -> None:
    assert is_pid_alive(os.getpid())
    assert not is_pid_alive(_dead_pid())
    assert not is_pid_alive(0)
    assert not is_pid_alive(-1)


def test_eperm_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def kill_denied(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill_denied)
    assert is_pid_alive(12345)


def test_racing_reclaimers_produce_exactly_one_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two acquirers find the same stale lock. The liveness check is slowed down to widen the
    check-then-replace window; the directory flock must still let only one of them win."""
    dead = _dead_pid()
    _write_lock(tmp_path, {"pid": dead, "run_id": "old", "acquired_at": "x"})
    real_is_pid_alive = lock_module.is_pid_alive

    def slow_is_pid_alive(pid: int) -> bool:
        if pid == dead:
            time.sleep(0.05)
        return real_is_pid_alive(pid)

    monkeypatch.setattr(lock_module, "is_pid_alive", slow_is_pid_alive)
    barrier = threading.Barrier(4)
    winners: list[str] = []
    refused: list[str] = []

    def contender(run_id: str) -> None:
        barrier.wait()
        try:
            acquire_run_lock(tmp_path, run_id)
        except RunLockedError:
            refused.append(run_id)
        else:
            winners.append(run_id)

    threads = [threading.Thread(target=contender, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(winners) == 1, (winners, refused)
    assert len(refused) == 3
    assert read_run_lock(tmp_path) is not None
    assert read_run_lock(tmp_path).run_id == winners[0]  # type: ignore[union-attr]
