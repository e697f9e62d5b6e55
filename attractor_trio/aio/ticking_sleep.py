"""Sleep while reporting progress at least every slice, for every sleeper from one task.

The simulator's ``delay`` works for a while and counts as progress (contract.md §4), so it
used to sleep in 0.25 s slices, calling its progress callback between them. Each slice was a
``trio.sleep``: a cancel scope whose deadline expiry is delivered as ``Cancelled`` through the
sleeper's whole stack — four task wake-ups and four cancel scopes per simulated second. In a
1,000-branch fan-out that was about a tenth of the trio thread's time, most of it while
branches were finishing (issue #22).

Here every sleeper parks with :func:`trio.lowlevel.wait_task_rescheduled` and one system task
per event loop (per ``trio.run``, shared by every run in it) keeps them in a heap: it calls each
sleeper's progress callback when its tick falls due (ticks due within :data:`TICK_SLACK` of one
another are taken together, a little early, so a wide fan-out's ticks cost a handful of
wake-ups instead of one each), and reschedules the sleeper at its deadline — never before it.
The sleeper's task is woken once, at the end. Cancellation stays prompt: the abort callback
takes the sleeper off the heap at once (the entry is dropped lazily, having let go of the task
and the callback).
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Final, NoReturn

import trio

__all__ = ["TICK_SLACK", "sleep_reporting_progress"]

#: A tick due within this many seconds of the one being served is served with it (early).
TICK_SLACK: Final = 0.025


class _Sleeper:
    """One parked task: when it wakes (``deadline``) and when its next tick is due."""

    __slots__ = ("deadline", "error", "progress", "slice", "task")

    def __init__(
        self,
        task: trio.lowlevel.Task,
        deadline: float,
        slice_s: float,
        progress: Callable[[], None],
    ) -> None:
        self.task: trio.lowlevel.Task | None = task
        self.deadline = deadline
        self.slice = slice_s
        self.progress: Callable[[], None] | None = progress
        #: What ``progress`` raised in the ticker's task, for the sleeper to raise.
        self.error: BaseException | None = None


class _Ticker:
    """The event loop's heap of sleepers and the one system task that serves it."""

    def __init__(self) -> None:
        #: ``(when, seq, sleeper)``: ``when`` is the sleeper's next tick or its deadline.
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._seq = itertools.count()
        self._scope: trio.CancelScope | None = None

    def push(self, when: float, sleeper: _Sleeper) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), sleeper))
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    async def run(self) -> NoReturn:
        while True:
            with trio.CancelScope(deadline=self._heap[0][0] if self._heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            self._serve(trio.current_time())

    def _serve(self, now: float) -> None:
        """Wake the sleepers whose deadline has come, tick those whose tick is due within the
        slack; each is served at most once per call (its next turn is queued afterwards, so
        a slice shorter than the slack cannot spin here)."""
        heap = self._heap
        horizon = now + TICK_SLACK
        again: list[tuple[float, _Sleeper]] = []
        while heap and heap[0][0] <= horizon:
            when, _, sleeper = heapq.heappop(heap)
            task = sleeper.task
            if task is None:
                continue  # cancelled
            if sleeper.deadline <= now:
                sleeper.task = sleeper.progress = None
                trio.lowlevel.reschedule(task)
            elif when == sleeper.deadline:
                again.append((when, sleeper))  # its end is near, but not yet: never wake early
            elif self._tick(sleeper, task):
                again.append((min(now + sleeper.slice, sleeper.deadline), sleeper))
        for when, sleeper in again:
            heapq.heappush(heap, (when, next(self._seq), sleeper))

    @staticmethod
    def _tick(sleeper: _Sleeper, task: trio.lowlevel.Task) -> bool:
        """Report progress for ``sleeper``; whether it sleeps on (its callback did not fail)."""
        progress = sleeper.progress
        assert progress is not None
        try:
            progress()
        except Exception as exc:  # the sleeper's own failure: it raises it, not the run
            sleeper.error = exc
            sleeper.task = sleeper.progress = None
            trio.lowlevel.reschedule(task)
            return False
        return True


_TICKER: trio.lowlevel.RunVar[_Ticker] = trio.lowlevel.RunVar("attractor_trio.ticking_sleep")


def _ticker() -> _Ticker:
    try:
        return _TICKER.get()
    except LookupError:
        ticker = _Ticker()
        _TICKER.set(ticker)
        # A fresh context: the task must not keep the first sleeper's context variables alive.
        trio.lowlevel.spawn_system_task(
            ticker.run, name="attractor_trio.ticking_sleep", context=contextvars.Context()
        )
        return ticker


async def sleep_reporting_progress(
    seconds: float, progress: Callable[[], None], slice_s: float
) -> None:
    """Sleep ``seconds``, calling ``progress`` now, at least every ``slice_s`` and at the end.

    Like ``trio.sleep`` it is a checkpoint and cancellable at any moment; a ``progress`` that
    raises ends the sleep with its exception, in the sleeping task.
    """
    if not slice_s > 0:
        raise ValueError(f"the progress slice must be positive, got {slice_s!r}")
    progress()
    if seconds <= 0:
        await trio.lowlevel.checkpoint()
        progress()
        return
    now = trio.current_time()
    task = trio.lowlevel.current_task()
    sleeper = _Sleeper(task, now + seconds, slice_s, progress)
    _ticker().push(min(now + slice_s, sleeper.deadline), sleeper)

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        sleeper.task = sleeper.progress = None
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)
    if sleeper.error is not None:
        raise sleeper.error
    progress()
