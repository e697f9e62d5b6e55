"""A fan-out branch's stage files — the stage dir, ``prompt.md``, ``response.md`` and the
``.attempt.json`` marker — are written on the write pool, so a thousand branches' file system
calls overlap instead of queueing on the trio thread (issue #22); the main line writes the same
files inline. A marker write is never half-done from the engine's point of view: a cancellation
waits for it, and what it wrote is what a resume adopts."""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio import load, run
from attractor_trio.aio import offload
from attractor_trio.backends.simulate import SimulationBackend
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.persist.attempt_marker import read_attempt_marker
from attractor_trio.scopes import attempt as attempt_module

POOL_THREAD = "attractor-trio-write-"
BRANCH_FILES = ("prompt.md", "response.md", ".attempt.json")


def _record_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """``os.mkdir`` and ``os.replace`` note ``(call, path, thread name)`` and still run."""
    calls: list[tuple[str, str, str]] = []
    real_mkdir, real_replace = os.mkdir, os.replace

    def mkdir(path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
        calls.append(("mkdir", os.fspath(path), threading.current_thread().name))
        real_mkdir(path, mode, *args, **kwargs)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(("replace", os.fspath(dst), threading.current_thread().name))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_a_branch_writes_its_stage_files_on_the_write_pool_and_the_main_line_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_calls(monkeypatch)
    dot = """digraph f {
        start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        start -> main1 -> par; par -> a -> join; par -> b -> join; join -> done
    }"""
    root = tmp_path / "run"
    result = trio.run(partial(run, load(dot), logs_root=root, backend=SimulationBackend()))
    assert result.status == "success"

    def written(node: str) -> dict[str, str]:
        """The thread of each of ``node``'s stage dir mkdir and stage file renames."""
        found: dict[str, str] = {}
        for call, path, thread in calls:
            parent, name = os.path.split(path)
            if call == "mkdir" and name == node:
                found["mkdir"] = thread
            elif call == "replace" and os.path.basename(parent) == node and name in BRANCH_FILES:
                found[name] = thread
        return found

    for branch in ("a", "b"):
        threads = written(branch)
        assert set(threads) == {"mkdir", *BRANCH_FILES}, threads
        assert all(name.startswith(POOL_THREAD) for name in threads.values()), threads
        assert read_attempt_marker(next(root.rglob(f"{branch}/.attempt.json")).parent) is not None
    main = written("main1")
    assert set(main) == {"mkdir", *BRANCH_FILES}, main
    assert set(main.values()) == {threading.main_thread().name}, main


def _blocking_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[threading.Event, threading.Event]:
    """Marker writes on the pool wait on a gate after signalling they are under way."""
    under_way, gate = threading.Event(), threading.Event()
    real = offload._write_replacing

    def blocked(path: str, data: bytes) -> None:
        under_way.set()
        assert gate.wait(10)
        real(path, data)

    monkeypatch.setattr(offload, "_write_replacing", blocked)
    return under_way, gate


def test_a_cancellation_during_a_branch_marker_write_waits_for_it_and_a_resume_adopts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finished marker is the commit point: cancelled while it is on a pool thread, the
    attempt waits until it is on disk (the cancellation lands at the next checkpoint), so the
    engine knows it landed — and the outcome it carries is the one a resume adopts."""
    under_way, gate = _blocking_writes(monkeypatch)
    stage_dir = tmp_path / "a"
    stage_dir.mkdir()
    marker = attempt_module._Marker("a", 1, 1, "a-1-abc", "")
    outcome = Outcome(StageStatus.SUCCESS, notes="done")

    async def main() -> tuple[dict[str, Any] | None, bool]:
        record: dict[str, Any] | None = None
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_while_under_way() -> None:
                    await trio.to_thread.run_sync(under_way.wait, 10)
                    scope.cancel()
                    gate.set()

                nursery.start_soon(cancel_while_under_way)
                record = await marker.write(stage_dir, offload=True, finished=True, outcome=outcome)
                await trio.lowlevel.checkpoint()  # the pending cancellation lands here
                record = None
        return record, scope.cancelled_caught

    record, cancelled = trio.run(main)
    assert cancelled
    assert record is not None and record["finished"] is True
    on_disk = read_attempt_marker(stage_dir)
    assert on_disk == record
    adopted = attempt_module._marked_outcome(on_disk)
    assert adopted is not None and adopted.status is StageStatus.SUCCESS
    assert adopted.notes == "done"
    assert [p.name for p in stage_dir.iterdir()] == [".attempt.json"]  # no temp file left


def test_a_failed_branch_marker_write_leaves_the_previous_marker_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the pool thread's write fails, the caller gets the error and the marker on disk is
    the previous one: certain it did not land."""
    stage_dir = tmp_path / "a"  # missing: the pool thread makes it
    started = trio.run(_write_marker, stage_dir, False)

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    from attractor_trio.persist import atomic

    monkeypatch.setattr(atomic, "write_all", disk_full)
    with pytest.raises(OSError, match="No space left"):
        trio.run(_write_marker, stage_dir, True)
    assert read_attempt_marker(stage_dir) == started
    assert [p.name for p in stage_dir.iterdir()] == [".attempt.json"]


async def _write_marker(stage_dir: Path, finished: bool) -> dict[str, Any]:
    marker = attempt_module._Marker("a", 1, 1, "a-1-abc", "")
    outcome = Outcome(StageStatus.SUCCESS) if finished else None
    return await marker.write(stage_dir, offload=True, finished=finished, outcome=outcome)
