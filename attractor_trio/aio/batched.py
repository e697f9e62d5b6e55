"""One blocking call that many tasks make at once, run as a few write-pool jobs.

Why: every job handed to the write pool costs the trio thread a hand-over each way — the pool
thread's wake-up, the GIL it then competes for, and the ``run_sync_soon`` that wakes the
waiting task — which is more than a small job itself. A 1,000-branch fan-out's branches all
start together and each creates its own ``progress.ndjson`` (its directory and the file);
as a job each, the hand-overs were a large part of the trio thread's time before the last
branch could begin its work (issue #22). Grouped, a few dozen jobs do the same calls.

How: no thread or lock of its own; the queue lives on the trio thread. A caller that finds a
job slot free (fewer than ``jobs`` in flight) *leads*: it takes its own call and up to
``chunk - 1`` queued ones and runs them, one after another, as one pool job. Callers that find
every slot taken queue and wait. When a job ends, its leader wakes the callers whose calls it
ran, with their results, and hands its slot to the first caller still queued, which leads the
next job (a caller arriving meanwhile finds no slot free: never more than ``jobs`` jobs, and
``jobs * chunk`` results not yet taken). So while a job is in flight the next one's calls
gather, and the first callers, who found the slots free, do not wait for company.

Each call keeps the semantics of :meth:`WritePool.run`, i.e. of a synchronous call: the caller
waits until its call has run (a cancellation is delivered at the caller's next checkpoint,
never in the middle), and gets its own result or its own exception — one failing call does
not fail the others in its job. Every call passes through the scheduler (the caller waits for
a pool thread or for its leader), so a caller has just let other tasks run when it returns.
Under a virtual clock the pool runs jobs inline, and so does this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Generic, TypeVar

import trio

from .offload import WritePool, write_pool

__all__ = ["BatchedCall"]

A = TypeVar("A")
R = TypeVar("R")

#: At most this many calls per job: the first results come back while later calls still run.
DEFAULT_CHUNK: Final = 32
#: Jobs in flight at once. Two let one job's calls gather while the other runs; the calls of
#: a fan-out mostly create entries in one directory, which the kernel serializes anyway.
DEFAULT_JOBS: Final = 2


class _Call:
    """One caller's argument, its task while it waits, and then its result."""

    __slots__ = ("arg", "result", "task")

    def __init__(self, arg: Any) -> None:
        self.arg = arg
        self.task: trio.lowlevel.Task | None = None
        #: ``None`` until the call has run, then ``(True, value)`` or ``(False, exception)``;
        #: a woken caller without one leads the next job.
        self.result: tuple[bool, Any] | None = None


class BatchedCall(Generic[A, R]):
    """``await batched(arg)`` runs ``fn(arg)`` on the write pool, grouped with other callers'
    calls (see the module's docstring). One instance per ``fn``, shared by its callers; use it
    from one trio run at a time."""

    def __init__(
        self,
        fn: Callable[[A], R],
        *,
        chunk: int = DEFAULT_CHUNK,
        jobs: int = DEFAULT_JOBS,
        pool: WritePool = write_pool,
    ) -> None:
        if chunk < 1 or jobs < 1:
            raise ValueError(f"chunk and jobs must be at least 1, got {chunk} and {jobs}")
        self.fn = fn
        self.chunk = chunk
        self.jobs = jobs
        self._pool = pool
        self._queued: deque[_Call] = deque()
        self._in_flight = 0
        #: How many jobs have run (for tests and benchmarks).
        self.job_count = 0

    async def __call__(self, arg: A) -> R:
        call = _Call(arg)
        if self._in_flight < self.jobs:
            self._in_flight += 1  # a free slot: lead a job now
        else:
            call.task = trio.lowlevel.current_task()
            self._queued.append(call)
            await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        if call.result is None:  # holding a slot (its own, or one a finished leader handed on)
            await self._lead(call)
        assert call.result is not None
        succeeded, value = call.result
        if not succeeded:
            raise value
        return value  # type: ignore[no-any-return]

    async def _lead(self, own: _Call) -> None:
        """Run ``own`` and the first queued calls as one job, holding a slot; then hand the
        slot to the first caller still queued, or free it."""
        batch = [own]
        queued = self._queued
        while queued and len(batch) < self.chunk:
            batch.append(queued.popleft())
        self.job_count += 1
        try:
            results = await self._pool.run(partial(_run_each, self.fn, [c.arg for c in batch]))
        except BaseException as exc:  # not from a call (each is captured): fail them all
            results = [(False, exc)] * len(batch)
        for call, result in zip(batch, results, strict=True):
            call.result = result
            if call is not own:
                assert call.task is not None
                trio.lowlevel.reschedule(call.task)
        if queued:  # the slot passes on: no caller arriving meanwhile can take it
            leader = queued.popleft().task
            assert leader is not None
            trio.lowlevel.reschedule(leader)
        else:
            self._in_flight -= 1


def _run_each(fn: Callable[[Any], Any], args: list[Any]) -> list[tuple[bool, Any]]:
    """On the pool thread: every call, each result or exception captured on its own."""
    results: list[tuple[bool, Any]] = []
    for arg in args:
        try:
            results.append((True, fn(arg)))
        except BaseException as exc:  # handed to its caller, which raises it
            results.append((False, exc))
    return results


def _cannot_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
