"""``aio/ticking_sleep.py``: many sleepers reporting progress, served by one ticker task."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import trio
import trio.testing

from attractor_trio.aio.ticking_sleep import TICK_SLACK, sleep_reporting_progress

SLICE = 0.25


class _Steps(trio.abc.Instrument):
    """Counts the steps (resumptions) of each task while installed."""

    def __init__(self) -> None:
        self.by_task: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.by_task[task] = self.by_task.get(task, 0) + 1


async def test_progress_comes_every_slice_and_the_sleep_ends_exactly_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []
    start = trio.current_time()
    await sleep_reporting_progress(2.0, lambda: calls.append(trio.current_time()), SLICE)
    assert trio.current_time() - start == pytest.approx(2.0)
    assert calls[0] == start
    assert calls[-1] == trio.current_time()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps) <= SLICE + 1e-9
    assert min(gaps[:-1]) >= SLICE - TICK_SLACK - 1e-9  # early by the slack at most


async def test_a_sleeper_is_woken_once_however_many_slices_it_sleeps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The slices used to be ``trio.sleep`` calls: the sleeping task resumed every 0.25 s,
    each time through a cancel scope's expiry — 4 wake-ups a simulated second per branch."""
    steps = _Steps()
    ticks: list[float] = []
    trio.lowlevel.add_instrument(steps)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleep_reporting_progress, 5.0, lambda: ticks.append(0.0), SLICE)
    trio.lowlevel.remove_instrument(steps)
    sleeper = [task for task in steps.by_task if task.name.endswith("sleep_reporting_progress")]
    assert len(sleeper) == 1
    assert steps.by_task[sleeper[0]] <= 2  # it starts, it is woken at the end
    assert len(ticks) >= 5.0 / SLICE


async def test_ticks_falling_due_together_are_served_by_one_wake_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """200 sleepers started 0.1 ms apart: their ticks are taken together, the ticker task
    steps a few times per slice, not once per sleeper and tick."""
    steps = _Steps()
    ticks = [0] * 200
    async with trio.open_nursery() as nursery:
        await sleep_reporting_progress(0.001, lambda: None, SLICE)  # the ticker exists
        trio.lowlevel.add_instrument(steps)
        for index in range(200):
            nursery.start_soon(sleep_reporting_progress, 1.0, _counter(ticks, index), SLICE)
            await trio.sleep(0.0001)
    trio.lowlevel.remove_instrument(steps)
    ticker = [task for task in steps.by_task if task.name == "attractor_trio.ticking_sleep"]
    assert len(ticker) == 1
    # Every sleeper ticks at least every slice: at its start, ≥ 3 times, and at its end.
    assert min(ticks) >= 1 + 3 + 1
    # 200 deadlines 0.1 ms apart fall into a handful of wake-ups too (each serves the ends
    # already reached); the ticks of 0.02 s of starts are one wake-up per slice.
    assert steps.by_task[ticker[0]] <= 200 + 20
    assert sum(steps.by_task.values()) <= 3 * 200 + 250


def _counter(ticks: list[int], index: int) -> Callable[[], None]:
    def tick() -> None:
        ticks[index] += 1

    return tick


async def test_a_slice_shorter_than_the_tick_slack_still_ticks_every_slice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tick is queued again only after the ticker's round: with a slice below the slack,
    re-queueing it within the round served it over and over at the same instant."""
    calls: list[float] = []
    slice_s = TICK_SLACK / 5
    with trio.fail_after(10):
        await sleep_reporting_progress(0.1, lambda: calls.append(trio.current_time()), slice_s)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps) <= slice_s + 1e-9
    assert len(calls) <= 0.1 / slice_s + 3  # once per slice, not over and over


async def test_a_cancelled_sleeper_returns_at_once_and_gets_no_more_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []
    start = trio.current_time()
    with trio.move_on_after(0.6) as scope:
        await sleep_reporting_progress(10.0, lambda: calls.append(trio.current_time()), SLICE)
    assert scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(0.6)
    cancelled_at = trio.current_time()
    await trio.sleep(2.0)  # the ticker would have ticked it 8 more times
    assert all(at <= cancelled_at for at in calls)


async def test_progress_that_raises_ends_the_sleep_with_its_error_in_the_sleeper(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    def progress() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("progress failed")

    start = trio.current_time()
    with pytest.raises(RuntimeError, match="progress failed"):
        await sleep_reporting_progress(10.0, progress, SLICE)
    assert trio.current_time() - start == pytest.approx(2 * SLICE)
    # The ticker survives it and serves the next sleeper.
    await sleep_reporting_progress(1.0, lambda: None, SLICE)
    assert trio.current_time() - start == pytest.approx(2 * SLICE + 1.0)


async def test_an_earlier_sleeper_arriving_while_the_ticker_waits_is_served_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ends: dict[str, float] = {}

    async def sleeper(name: str, seconds: float) -> None:
        await sleep_reporting_progress(seconds, lambda: None, 100.0)
        ends[name] = trio.current_time()

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, "long", 50.0)
        await trio.sleep(1.0)  # the ticker now waits for the long sleeper's end
        nursery.start_soon(sleeper, "short", 2.0)
    assert ends["short"] - start == pytest.approx(3.0)
    assert ends["long"] - start == pytest.approx(50.0)


async def test_a_zero_sleep_is_a_checkpoint_with_progress_before_and_after() -> None:
    calls: list[int] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await sleep_reporting_progress(0.0, lambda: calls.append(1), SLICE)
    assert calls == [1]
    await sleep_reporting_progress(0.0, lambda: calls.append(2), SLICE)
    assert calls == [1, 2, 2]


async def test_a_slice_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="slice"):
        await sleep_reporting_progress(1.0, lambda: None, 0.0)
