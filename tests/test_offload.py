"""The write pool (``aio/offload.py``): fsyncs on threads for fan-out branches, with the
semantics of a synchronous call — results and exceptions come back, a cancellation never
abandons a write, and under a virtual clock everything runs inline."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from attractor_trio.aio.offload import WritePool, write_bytes_durably
from attractor_trio.persist import syncfs
from attractor_trio.persist.atomic import is_temp_file_name, read_json

from .helpers import fail_fsyncs, record_fsyncs


def _temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if is_temp_file_name(p.name)]


def test_results_come_back_from_a_pool_thread() -> None:
    pool = WritePool(2)

    async def main() -> list[str]:
        return [await pool.run(lambda: threading.current_thread().name) for _ in range(3)]

    names = trio.run(main)
    assert all(name.startswith("attractor-trio-write-") for name in names)


def test_exceptions_propagate_to_the_caller() -> None:
    pool = WritePool(1)

    def fail() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        await pool.run(fail)

    with pytest.raises(OSError, match="No space left"):
        trio.run(main)


def test_a_cancellation_waits_for_the_write_and_is_delivered_afterwards() -> None:
    pool = WritePool(1)
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow_write() -> str:
        started.set()
        release.wait(5)
        done.append("written")
        return "ok"

    async def main() -> tuple[Any, bool]:
        result: Any = None
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_started() -> None:
                    await trio.to_thread.run_sync(started.wait, 5)
                    scope.cancel()
                    release.set()

                nursery.start_soon(cancel_when_started)
                result = await pool.run(slow_write)  # not a cancel point: returns normally
                await trio.lowlevel.checkpoint()  # the pending cancellation lands here
                result = "unreachable"
        return result, scope.cancelled_caught

    result, caught = trio.run(main)
    assert done == ["written"]
    assert result == "ok"
    assert caught


def test_many_writes_in_flight_at_once(tmp_path: Path) -> None:
    pool = WritePool(4)
    inside, peak, lock = [0], [0], threading.Lock()
    gate = threading.Barrier(4, timeout=5)

    def write(index: int) -> int:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        if index < 4:
            gate.wait()  # the first four must all be inside together
        with lock:
            inside[0] -= 1
        return index

    async def main() -> list[int]:
        results: list[int] = []

        async def one(index: int) -> None:
            results.append(await pool.run(lambda: write(index)))

        async with trio.open_nursery() as nursery:
            for index in range(20):
                nursery.start_soon(one, index)
        return results

    assert sorted(trio.run(main)) == list(range(20))
    assert peak[0] == 4


def test_under_a_mock_clock_the_work_runs_inline() -> None:
    pool = WritePool(1)

    async def main() -> str:
        return await pool.run(lambda: threading.current_thread().name)

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(main, clock=clock) == threading.current_thread().name


def test_write_bytes_durably_writes_atomically_with_both_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = record_fsyncs(monkeypatch)
    target = tmp_path / "status.json"
    target.write_text('{"old": true}\n')

    trio.run(write_bytes_durably, target, b'{"new": true}\n')

    assert read_json(target) == {"new": True}
    assert synced == ["file", "dir"]  # the temp before the rename, the directory after
    assert _temps(tmp_path) == []


def test_write_bytes_durably_leaves_the_old_file_when_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_fsyncs(monkeypatch)
    target = tmp_path / "result.json"
    target.write_text('{"old": true}\n')
    with pytest.raises(OSError, match="Input/output"):
        trio.run(write_bytes_durably, target, b'{"new": true}\n')
    assert read_json(target) == {"old": True}
    assert _temps(tmp_path) == []


def _record_mkdirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch ``os.mkdir`` to note the name of the thread calling it (and still create)."""
    threads: list[str] = []
    real_mkdir = os.mkdir

    def recording_mkdir(path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
        threads.append(threading.current_thread().name)
        real_mkdir(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", recording_mkdir)
    return threads


def test_write_bytes_durably_into_an_existing_directory_makes_no_directory_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A branch's stage dir exists when its status file is written: a ``mkdir`` that finds it
    there was 3 % of the trio thread's time in a 1,000-branch fan-out (issue #22)."""
    mkdirs = _record_mkdirs(monkeypatch)
    trio.run(write_bytes_durably, tmp_path / "status.json", b'{"new": true}\n')
    assert read_json(tmp_path / "status.json") == {"new": True}
    assert mkdirs == []


def test_a_branch_status_file_makes_no_directory_call_on_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attractor_trio.core.outcome import Outcome, StageStatus
    from attractor_trio.scopes.attempt import _write_status_durably

    mkdirs = _record_mkdirs(monkeypatch)
    trio.run(_write_status_durably, tmp_path / "status.json", Outcome(StageStatus.SUCCESS))
    assert read_json(tmp_path / "status.json")["outcome"] == "success"
    assert mkdirs == []


def test_write_bytes_durably_creates_a_missing_directory_on_a_pool_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``syncfs`` the whole recipe is one pool job (with it, the temp is written on the
    calling thread: ``test_syncfs_commit``)."""
    monkeypatch.setattr(syncfs.guard, "available", False)
    mkdirs = _record_mkdirs(monkeypatch)
    synced = record_fsyncs(monkeypatch)
    target = tmp_path / "gone" / "stage" / "status.json"

    trio.run(write_bytes_durably, target, b'{"new": true}\n')

    assert read_json(target) == {"new": True}
    assert mkdirs and all(name.startswith("attractor-trio-write-") for name in mkdirs)
    assert synced == ["file", "dir"]
    assert _temps(target.parent) == []


def test_write_bytes_durably_creates_a_missing_directory_with_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncfs.guard, "available", True)
    monkeypatch.setattr(syncfs.guard, "off_until", 0.0)
    synced = record_fsyncs(monkeypatch)
    target = tmp_path / "gone" / "stage" / "status.json"

    trio.run(write_bytes_durably, target, b'{"new": true}\n')

    assert read_json(target) == {"new": True}
    assert synced == ["file", "dir"]  # a lone write keeps its own fsyncs
    assert _temps(target.parent) == []


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_waiting_durable_writes_hold_no_descriptor(tmp_path: Path) -> None:
    """A thousand branches finishing together on a slow disk queue their status files; a
    descriptor held per waiting write ran out of descriptors (EMFILE, issue #22)."""
    pool = WritePool(1)
    gate = threading.Event()
    waiting = 50

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run, lambda: gate.wait(10))  # the only thread is busy
            before = _open_descriptors()
            for index in range(waiting):
                nursery.start_soon(write_bytes_durably, tmp_path / f"{index}.json", b"{}\n", pool)
            await trio.testing.wait_all_tasks_blocked()
            held = _open_descriptors() - before
            gate.set()
        return held

    assert trio.run(main) <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.json" for i in range(waiting))
