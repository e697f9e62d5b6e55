"""Group commit wakes each waiting writer once (issue #22): a durable write batch
(``aio/offload.py``) and a results-log flush (``aio/group_commit.py``) each wake their writers
when their writes are done — not also when the batch before ends — and a batch of durable
writes is one pool job, which creates the writes' temps itself."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from attractor_trio.aio.group_commit import DurableLog, read_records
from attractor_trio.aio.offload import WritePool, write_bytes_durably
from attractor_trio.aio.waiters import OneShot
from attractor_trio.persist import syncfs
from attractor_trio.persist.atomic import is_temp_file_name, read_json
from attractor_trio.persist.syncfs import guard

T = TypeVar("T")
WRITERS = 6


class _Steps(trio.abc.Instrument):
    """How many times each task named ``writer-<n>`` was stepped (started or woken)."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.startswith("writer-"):
            self.steps[task.name] += 1


class _CountingPool(WritePool):
    """A one-thread pool that counts the jobs it is given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs = 0

    async def run(self, fn: Callable[[], T]) -> T:
        self.jobs += 1
        return await super().run(fn)


@pytest.fixture(autouse=True)
def _syncfs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches commit by ``syncfs`` (a no-op here) on any test filesystem."""
    monkeypatch.setattr(syncfs, "syncfs_covers", lambda fd, device: True)
    monkeypatch.setattr(guard, "sync", lambda fd: None)
    monkeypatch.setattr(guard, "available", True)
    monkeypatch.setattr(guard, "off_until", 0.0)
    monkeypatch.setattr(guard, "fsync_s", 1.0)


def _queue_behind_a_busy_pool(pool: WritePool, writer: Callable[[int], Awaitable[None]]) -> _Steps:
    """Start :data:`WRITERS` writers while the pool's only thread is busy: the first leads
    alone, the rest queue into one batch behind it. Their steps."""
    gate = threading.Event()
    instrument = _Steps()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run, lambda: gate.wait(10))
            await trio.testing.wait_all_tasks_blocked()
            for index in range(WRITERS):
                nursery.start_soon(writer, index, name=f"writer-{index}")
                await trio.testing.wait_all_tasks_blocked()
            gate.set()

    trio.run(main, instruments=[instrument])
    return instrument


def _woken_once(steps: Counter[str]) -> None:
    """Each writer: started, then woken once when its write is done — the one that opened
    the second batch also once when the first ended (it leads then)."""
    assert len(steps) == WRITERS
    assert sorted(steps.values()) == [2] * (WRITERS - 1) + [3], steps


def test_a_batch_of_durable_writes_is_one_pool_job_and_wakes_each_writer_once(
    tmp_path: Path,
) -> None:
    pool = _CountingPool()
    targets = [tmp_path / f"b{index}" / "status.json" for index in range(WRITERS)]
    for target in targets:
        target.parent.mkdir()

    async def writer(index: int) -> None:
        await write_bytes_durably(targets[index], b'{"index": %d}\n' % index, pool)

    steps = _queue_behind_a_busy_pool(pool, writer)
    assert pool.jobs == 1 + 2  # the busy job; the lone first write; the batch of the rest
    _woken_once(steps.steps)
    for index, target in enumerate(targets):
        assert read_json(target) == {"index": index}
    assert not [p for p in tmp_path.rglob("*") if is_temp_file_name(p.name)]


def test_a_batch_whose_write_cannot_be_staged_fails_only_that_write(tmp_path: Path) -> None:
    pool = _CountingPool()
    targets = [tmp_path / f"b{index}" / "status.json" for index in range(WRITERS)]
    for target in targets:
        target.parent.mkdir()
    targets[3] = tmp_path / "a-file" / "status.json"  # its temp cannot be created
    targets[3].parent.write_text("not a directory\n")
    failures: dict[int, BaseException | None] = {}

    async def writer(index: int) -> None:
        try:
            await write_bytes_durably(targets[index], b"{}\n", pool)
            failures[index] = None
        except OSError as exc:
            failures[index] = exc

    _queue_behind_a_busy_pool(pool, writer)
    assert isinstance(failures[3], NotADirectoryError)
    assert pool.jobs == 1 + 2
    assert sorted(i for i, exc in failures.items() if exc is None) == [0, 1, 2, 4, 5]
    assert all(read_json(targets[i]) == {} for i in (0, 1, 2, 4, 5))


def test_a_results_log_flush_wakes_each_appender_once(tmp_path: Path) -> None:
    pool = WritePool(1)
    path = tmp_path / "results.ndjson"
    log = DurableLog(path, pool)

    async def writer(index: int) -> None:
        await log.append({"id": index})

    with log:
        steps = _queue_behind_a_busy_pool(pool, writer)
    _woken_once(steps.steps)
    assert sorted(r["id"] for r in read_records(path)) == list(range(WRITERS))


def test_waiting_writers_enter_no_cancel_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shielded scope per waiting write cost more than the rest of its wait (issue #22)."""
    entered: list[str] = []
    real_enter = trio.CancelScope.__enter__

    def counting_enter(scope: trio.CancelScope) -> trio.CancelScope:
        name = trio.lowlevel.current_task().name
        if name.startswith("writer-"):
            entered.append(name)
        return real_enter(scope)

    monkeypatch.setattr(trio.CancelScope, "__enter__", counting_enter)
    pool = WritePool(1)
    log = DurableLog(tmp_path / "results.ndjson", pool)

    async def writer(index: int) -> None:
        await write_bytes_durably(tmp_path / f"{index}.json", b"{}\n", pool)
        await log.append({"id": index})

    with log:
        _queue_behind_a_busy_pool(pool, writer)
    assert entered == []
    assert len(read_records(tmp_path / "results.ndjson")) == WRITERS


def test_a_cancelled_waiter_waits_for_the_shot_and_is_cancelled_after() -> None:
    shot = OneShot()
    seen: list[str] = []

    async def waiter(scope: trio.CancelScope) -> None:
        with scope:
            await shot.wait()
            seen.append("woken")
            await trio.lowlevel.checkpoint()
            seen.append("not reached")

    async def main() -> bool:
        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, scope)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            seen.append("cancelled, still waiting")
            shot.fire()
        return scope.cancelled_caught

    assert trio.run(main)
    assert seen == ["cancelled, still waiting", "woken"]
    assert shot.fired
