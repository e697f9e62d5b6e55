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
from typing import Any, Final, TypeVar

import trio

from ..core import redaction
from ..persist.atomic import fsync_directory_fd, replacing, write_all

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


async def write_bytes_durably(path: Path, data: bytes, pool: WritePool = write_pool) -> None:
    """:func:`~attractor_trio.persist.atomic.write_bytes_atomic` on ``pool``: the same temp
    file, fsync, rename and directory fsync, in the same order, as one job.

    The whole recipe runs on a pool thread, descriptors included, so a descriptor is open only
    while a thread works on it: at most two per pool thread, however many writes wait. When
    the temp file was opened here and only its fsyncs went to the pool, each waiting write held
    its temp file open, and a thousand branches finishing together on a slow disk ran out of
    descriptors (EMFILE; issue #22). Measured on the 2-core machine (1,000 branches of 1 s):
    the trio thread's CPU 3-6 % lower, the fan-out's duration unchanged within the noise.
    """
    data = redaction.file_bytes(path, data)
    await pool.run(partial(_write_durably, path, data))


def _write_durably(path: Path, data: bytes) -> None:
    """The recipe of :func:`~attractor_trio.persist.atomic.write_bytes_atomic` (``data``
    already redacted), on the calling thread.

    A missing parent directory is created here, on the pool thread, and only when the write
    failed without it (a retry of the whole recipe is harmless: nothing was renamed). A
    branch's stage dir exists when its ``status.json`` is written (the attempt made it), so a
    ``mkdir`` beforehand on the trio thread found it there every time: 3 % of that thread's
    time in a 1,000-branch fan-out (issue #22)."""
    try:
        _replace_durably(path, data)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_durably(path, data)


def _replace_durably(path: Path, data: bytes) -> None:
    with replacing(path) as fd:
        write_all(fd, data)
        os.fsync(fd)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_directory_fd(directory)
    finally:
        os.close(directory)
