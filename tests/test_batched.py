"""Batched pool calls (``aio/batched.py``): many tasks' calls of one blocking function run as a
few write-pool jobs, each caller still getting its own result or exception, with the
semantics of a synchronous call (issue #22: a fan-out's branches creating their logs)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from attractor_trio.aio.batched import BatchedCall
from attractor_trio.aio.offload import WritePool

T = TypeVar("T")


def _calls_at_once(batched: BatchedCall[int, Any], count: int) -> dict[int, Any]:
    """``count`` tasks started together, each calling ``batched(index)``; results by index
    (an exception as the exception)."""
    results: dict[int, Any] = {}

    async def one(index: int) -> None:
        try:
            results[index] = await batched(index)
        except ValueError as exc:
            results[index] = exc

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index)

    trio.run(main)
    return results


def test_callers_starting_together_share_a_few_jobs_and_each_gets_its_own_result() -> None:
    threads: set[str] = set()

    def square(value: int) -> int:
        threads.add(threading.current_thread().name)
        return value * value

    batched = BatchedCall(square, chunk=8, jobs=2, pool=WritePool(4))
    results = _calls_at_once(batched, 50)
    assert results == {index: index * index for index in range(50)}
    # The first two callers find a slot free and go alone; the 48 queued behind them gather
    # into jobs of 8 as the slots come free (the two callers woken to lead the last jobs may
    # split the last 8 between them).
    assert batched.job_count in (2 + 48 // 8, 2 + 48 // 8 + 1)
    assert all(name.startswith("attractor-trio-write-") for name in threads)


def test_no_more_jobs_than_allowed_are_in_flight_at_once() -> None:
    inside, peak, lock = [0], [0], threading.Lock()

    def slow(value: int) -> int:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        threading.Event().wait(0.002)
        with lock:
            inside[0] -= 1
        return value

    batched = BatchedCall(slow, chunk=3, jobs=2, pool=WritePool(4))
    assert _calls_at_once(batched, 30) == {index: index for index in range(30)}
    # A job runs its calls one after another: at most one call per job in flight.
    assert peak[0] <= 2


class _GatedPool(WritePool):
    """Runs each job on the trio thread once ``gate`` is set; counts jobs in flight."""

    def __init__(self) -> None:
        super().__init__(1)
        self.gate = trio.Event()
        self.in_flight = 0
        self.peak = 0

    async def run(self, fn: Callable[[], T]) -> T:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.gate.wait()
            return fn()
        finally:
            self.in_flight -= 1


def test_a_caller_arriving_as_a_job_ends_does_not_start_a_job_beyond_the_limit() -> None:
    """A finished leader hands its slot to the first queued caller, so a caller arriving in the
    same scheduler round finds no free slot: never more than ``jobs`` jobs, i.e. never more
    than ``jobs * chunk`` results (a branch log's descriptors) outstanding. Tasks of one round
    run in random order, so the arrival falls before or after the hand-over: eight tries."""

    async def one_try() -> int:
        pool = _GatedPool()
        batched: BatchedCall[int, int] = BatchedCall(lambda v: v, chunk=1, jobs=1, pool=pool)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batched, 0)  # leads at once
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(batched, 1)  # queued behind it
            await trio.testing.wait_all_tasks_blocked()

            async def arrive_as_the_job_ends() -> None:
                await pool.gate.wait()
                await batched(2)

            nursery.start_soon(arrive_as_the_job_ends)
            await trio.testing.wait_all_tasks_blocked()
            pool.gate.set()
        return pool.peak

    async def main() -> list[int]:
        return [await one_try() for _ in range(8)]

    assert trio.run(main) == [1] * 8


def test_a_failing_call_fails_only_its_own_caller() -> None:
    def odd_fails(value: int) -> int:
        if value % 2:
            raise ValueError(f"odd {value}")
        return value

    results = _calls_at_once(BatchedCall(odd_fails, chunk=16, pool=WritePool(2)), 20)
    for index in range(20):
        if index % 2:
            assert isinstance(results[index], ValueError) and str(results[index]) == f"odd {index}"
        else:
            assert results[index] == index


def test_a_cancellation_waits_for_the_call_and_is_delivered_afterwards() -> None:
    """Like :meth:`WritePool.run`: a queued caller whose scope is cancelled still gets its
    call run and its result; the cancellation lands at its next checkpoint."""
    started, release = threading.Event(), threading.Event()
    done: list[int] = []

    def call(value: int) -> int:
        if value == 0:
            started.set()
            release.wait(5)
        done.append(value)
        return value

    batched = BatchedCall(call, chunk=4, jobs=1, pool=WritePool(2))

    async def main() -> tuple[Any, bool]:
        got: list[Any] = []
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def first() -> None:
                    await batched(0)

                async def queued() -> None:
                    got.append(await batched(1))  # waits behind the first job
                    await trio.lowlevel.checkpoint()  # the pending cancellation lands here
                    got.append("unreachable")

                nursery.start_soon(first)
                await trio.to_thread.run_sync(started.wait, 5)  # the one slot is taken
                nursery.start_soon(queued)
                await trio.testing.wait_all_tasks_blocked()  # ... and the second call queued
                scope.cancel()
                release.set()
        return got, scope.cancelled_caught

    got, caught = trio.run(main)
    assert sorted(done) == [0, 1]
    assert got == [1]
    assert caught


def test_under_a_mock_clock_the_calls_run_inline() -> None:
    batched: BatchedCall[int, str] = BatchedCall(
        lambda _: threading.current_thread().name, pool=WritePool(1)
    )

    async def main() -> str:
        name: str = await batched(0)
        return name

    clock = trio.testing.MockClock(autojump_threshold=0)
    assert trio.run(main, clock=clock) == threading.current_thread().name


@pytest.mark.parametrize(("chunk", "jobs"), [(0, 1), (1, 0)])
def test_a_chunk_or_job_count_below_one_is_refused(chunk: int, jobs: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchedCall(lambda value: value, chunk=chunk, jobs=jobs)
