"""Blocking file writes that many tasks issue at once, with their fsyncs on a few threads.

Why: a fan-out's branches each write a durable ``status.json`` (temp file, fsync, rename,
directory fsync; their results share fsyncs another way, see ``group_commit.py``). On the trio
thread those fsyncs run one after another and stall every other branch while they wait for
the disk; on the pool they overlap with the branches' other work.

The price is the GIL: each time a pool thread hands a result back it must win the GIL from the
busy trio thread, ~60 µs of trio-thread time per fsync (:func:`trio.to_thread.run_sync` costs
~120 µs, which is why this pool exists: a ``SimpleQueue`` in, ``run_sync_soon`` out). So only
fan-out branches use it, while a sequential stage, which has nothing to overlap its fsyncs
with, writes inline. Measured on the CI machine's ext4 (``benchmarks/fanout.py`` scenario a,
before results moved to ``group_commit.py``): inline 2.1-2.3 s, 1 thread 2.1-2.2 s, 2-4
threads 1.84-1.93 s, 8 threads 1.9-2.1 s; on tmpfs, where fsync is free, inline is fastest.

When several branches' ``status.json`` writes are pending at once they are committed together
(:func:`write_bytes_durably`): two ``syncfs`` calls on the pool for the whole batch instead of two
fsyncs per file (``persist/syncfs.py``, contract.md §2), which also removes a pool hand-off per
write.

A job has to move an fsync or a slow create to pay for its hand-over. A branch's unsynced
stage files (the stage dir, ``prompt.md``, ``response.md``, ``.attempt.json``) stay on the trio
thread: as pool jobs they lengthened a 1,000-branch fan-out by 0.3-0.5 s on ext4 and tmpfs alike
(with 1, 2 or 4 threads), though the trio thread's CPU did not grow: it waited instead
(benchmarks/README.md, "Branch iP8").

Semantics are those of a synchronous call: the caller waits until the write is done — a
cancellation cannot abandon a half-done write (the task is woken only when it has finished, and
the cancellation is delivered at its next checkpoint) — and exceptions propagate to the caller.
Under a :class:`trio.testing.MockClock` the work runs inline: a virtual clock cannot account for
real IO, and a thread would let the clock jump while the write is in flight.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar, final

import trio

from ..core import redaction
from ..persist.syncfs import (
    Pending,
    guard,
    stage_and_commit,
    stage_and_finish,
    write_durably,
)
from .waiters import Batches

__all__ = ["WritePool", "write_bytes_durably", "write_pool"]

T = TypeVar("T")

#: Enough in flight to fold flushes together; more only adds GIL and scheduler churn.
DEFAULT_THREADS: Final = 4


class _Job:
    """One call and where its result goes: ``(True, value)`` or ``(False, exception)``."""

    __slots__ = ("fn", "result", "task", "token")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.token = trio.lowlevel.current_trio_token()
        self.task = trio.lowlevel.current_task()
        self.result: tuple[bool, Any] = (False, None)


class WritePool:
    """Daemon threads fed by one queue. Threads start on first use and then idle in ``get``."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self._size = threads
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a pool thread; returns its result or raises its exception.

        Not a cancellation point, like the synchronous call it replaces: a caller that has just
        finished a stage still records it even if a cancellation is already pending.
        """
        if _virtual_clock():
            await trio.lowlevel.cancel_shielded_checkpoint()
            return fn()
        self._ensure_threads()
        job = _Job(fn)
        self._queue.put(job)
        await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        succeeded, value = job.result
        if not succeeded:
            raise value
        return value  # type: ignore[no-any-return]

    def _ensure_threads(self) -> None:
        if self._started >= self._size:
            return
        with self._lock:
            while self._started < self._size:
                self._started += 1
                name = f"attractor-trio-write-{self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job.result = (True, job.fn())
            except BaseException as exc:  # handed to the waiting task, which raises it
                job.result = (False, exc)
            try:
                job.token.run_sync_soon(trio.lowlevel.reschedule, job.task)
            except trio.RunFinishedError:  # pragma: no cover - the waiter always outlives us
                pass


def _virtual_clock() -> bool:
    """Whether the run uses :class:`trio.testing.MockClock`. Without importing
    ``trio.testing``: it imports pytest, a third of the CLI's start-up time, and a run can only
    have a ``MockClock`` if someone imported it already."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)


def _cannot_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


#: The process-wide pool the engine uses.
write_pool: Final = WritePool()


async def write_bytes_durably(
    path: Path, data: bytes, pool: WritePool = write_pool, *, together: bool = True
) -> None:
    """:func:`~attractor_trio.persist.atomic.write_bytes_atomic` with its waits on ``pool``:
    the same temp file, fsync, rename and directory fsync, in the same order — or, when several
    such writes are pending at once, all of them committed together by two ``syncfs`` calls
    (``persist/syncfs.py``, contract.md §2).

    One pool job per batch, not per write: it creates and writes the batch's temps (file
    creation is the slow part of a write on a disk that has just freed many inodes — 0.2-0.6
    ms, against 25 µs — and stays off the trio thread), then commits them. No descriptor is
    held while a write waits for its batch (only its bytes): when each waiting write held its
    temp file open, a thousand branches finishing together on a slow disk ran out of
    descriptors (EMFILE; issue #22). Where ``syncfs`` is missing or the guard has it off, and
    under a virtual clock, the whole per-file recipe is one pool job, as it always was.

    ``together=False`` keeps this write out of the batches: for writes on the way out of a
    cancelled run, where the batch's first ``syncfs`` would also flush everything the run wrote
    without fsync since the last one (tool logs, prompts, markers) — 100 cancelled branches
    took 0.1 s longer to exit that way (``benchmarks/cancel.py``).
    """
    data = redaction.file_bytes(path, data)
    if not together or _virtual_clock() or not guard.allows():
        await pool.run(partial(write_durably, os.fspath(path), data))
        return
    await _batcher(pool).commit(Pending(os.fspath(path), data))


@final
class _DurableBatches:
    """Group commit of durable atomic writes (:class:`~.waiters.Batches`, as
    ``group_commit.py`` uses for log lines): each batch is committed in one pool job — a lone
    write by the per-file recipe (a lone stage keeps its own fsyncs), several by ``syncfs``
    (every temp created and written → one ``syncfs`` → their renames → one more ``syncfs``
    covering the directories), or, while the guard has ``syncfs`` off, each by the per-file
    recipe on the pool's threads at once. A writer returns only when the batch holding its
    write has ended: its data synced before its rename, its directory synced after.

    Why this shape (issue #22): the batch job creates its writes' temps itself, so a write
    costs its task no pool hand-off of its own (the hand-back from a pool thread is ~60 µs of
    trio-thread time: GIL and a scheduler wake-up); and every writer waits on its own batch's
    event, so it is woken once, when its write is done — not also when the batch before ends
    to find it must wait again. No descriptor is held while a write waits: its bytes are."""

    def __init__(self, pool: WritePool) -> None:
        self._pool = pool
        self._batches: Batches[Pending] = Batches(self._commit)

    async def commit(self, item: Pending) -> None:
        """Return once ``item`` is durable in place, or raise its failure. Like a synchronous
        write, a cancellation does not abandon it: it is delivered at the caller's next
        checkpoint."""
        await self._batches.submit(item)
        if item.error is not None:
            raise item.error

    async def _commit(self, items: list[Pending]) -> None:
        """Stage and commit ``items`` in one pool job (:class:`Batches` commit)."""
        try:
            if len(items) > 1 and guard.allows():  # temps synced, renamed, directories synced
                await self._pool.run(partial(stage_and_commit, items))
            elif len(items) == 1:
                await self._pool.run(partial(stage_and_finish, items[0]))
            else:  # a nursery's exit is a checkpoint: shielded, as the pool jobs are
                with trio.CancelScope(shield=True):
                    async with trio.open_nursery() as nursery:
                        for item in items:
                            nursery.start_soon(self._pool.run, partial(stage_and_finish, item))
        except BaseException:  # the job did not finish: no write of it is known to be done
            for item in items:
                item.discard()
                item.error = item.error or OSError("the durable write was interrupted")
            raise


#: Each trio run's batches, per pool (their events belong to one run).
_batches: Final[trio.lowlevel.RunVar[dict[WritePool, _DurableBatches]]] = trio.lowlevel.RunVar(
    "attractor_trio_durable_batches"
)


def _batcher(pool: WritePool) -> _DurableBatches:
    try:
        table = _batches.get()
    except LookupError:
        table = {}
        _batches.set(table)
    batcher = table.get(pool)
    if batcher is None:
        batcher = table[pool] = _DurableBatches(pool)
    return batcher
