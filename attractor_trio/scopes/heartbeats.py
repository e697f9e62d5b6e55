"""``stage_heartbeat`` for every running attempt of a run, from one task.

Each attempt used to run its own heartbeat task in a nursery beside its handler: a nursery, a
task and a cancellation per attempt, 4 to 9 % of the trio thread in a 1,000-branch fan-out (issue
#22) although a stage shorter than the interval never sends a heartbeat. All attempts of a run
share one interval, so their heartbeats fall due in the order the attempts started, and stay in
that order when each is re-armed by the same interval: one FIFO queue and one task that sleeps
until its head is due is enough — no heap, no task per attempt.

An attempt is taken off (:meth:`Heartbeats.stop`) when its handler returns or is cancelled,
before its ``stage_attempt_finished`` is emitted, so no heartbeat can follow it (contract.md
§4). A stopped entry stays in the queue until it reaches the head (at most one interval) but
drops what it refers to at once, so a wide fan-out's finished branches are not kept alive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import trio

from ..core.attempt import AttemptInfo
from .liveness import Liveness

__all__ = ["Beat", "Heartbeats"]


class Beat:
    """One running attempt's place in the queue."""

    __slots__ = ("due", "emit", "info", "live", "started")

    def __init__(
        self,
        info: AttemptInfo,
        live: Liveness,
        emit: Callable[..., Any],
        started: float,
        due: float,
    ) -> None:
        self.info: AttemptInfo | None = info
        self.live = live
        self.emit = emit
        self.started = started
        self.due = due


class Heartbeats:
    """The run's heartbeat queue; :meth:`run` is its one task (in the run's nursery)."""

    def __init__(self, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval!r}")
        self.interval = interval
        self._queue: deque[Beat] = deque()
        self._wake: trio.Event | None = None

    def start(self, info: AttemptInfo, live: Liveness, emit: Callable[..., Any]) -> Beat:
        """Beat for ``info`` every interval from now on, through ``emit``, until :meth:`stop`."""
        now = trio.current_time()
        beat = Beat(info, live, emit, now, now + self.interval)
        self._queue.append(beat)
        if self._wake is not None:
            self._wake.set()
        return beat

    @staticmethod
    def stop(beat: Beat) -> None:
        """No heartbeat for this attempt from now on (synchronous: nothing can slip in)."""
        beat.info = None
        beat.live = beat.emit = None  # type: ignore[assignment]

    async def run(self) -> NoReturn:
        queue = self._queue
        while True:
            if not queue:
                self._wake = trio.Event()
                await self._wake.wait()
                self._wake = None
                continue
            head = queue[0]
            if head.info is None:
                queue.popleft()
                continue
            now = trio.current_time()
            if head.due > now:
                await trio.sleep_until(head.due)
                continue
            queue.popleft()
            head.due += self.interval
            queue.append(head)
            self._beat(head, now)

    @staticmethod
    def _beat(beat: Beat, now: float) -> None:
        info = beat.info
        assert info is not None
        if info.start is not None and info.start.pending:
            return  # queued for a remote node: not started, nothing to report yet
        beat.emit(
            "stage_heartbeat",
            node_id=info.node_id,
            attempt_id=info.attempt_id,
            elapsed_s=round(now - beat.started, 3),
            idle_s=round(beat.live.idle(), 3),
        )
