"""One task beats for every running attempt of a run (scopes/heartbeats.py, issue #22).

Virtual time (``autojump_clock``): the exact instants of each heartbeat are asserted.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.core.attempt import AttemptInfo
from attractor_trio.scopes.heartbeats import Heartbeats
from attractor_trio.scopes.liveness import Liveness


class _Pending:
    pending = True


def _info(node: str, **changes: Any) -> AttemptInfo:
    return AttemptInfo(
        run_id="r",
        node_id=node,
        attempt=1,
        max_attempts=1,
        attempt_id=f"{node}-1-x",
        logs_root=Path("/nonexistent"),
        stage_dir=Path("/nonexistent") / node,
        workdir=Path("/nonexistent"),
        **changes,
    )


class _Log:
    def __init__(self) -> None:
        self.beats: list[tuple[float, str, float]] = []

    def emit(self, event: str, **fields: Any) -> None:
        assert event == "stage_heartbeat"
        self.beats.append((trio.current_time(), fields["node_id"], fields["elapsed_s"]))


@asynccontextmanager
async def _running(interval: float) -> AsyncIterator[Heartbeats]:
    """A heartbeat queue with its task running, stopped when the block ends."""
    beats = Heartbeats(interval)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(beats.run)
        yield beats
        nursery.cancel_scope.cancel()


async def test_each_attempt_beats_every_interval_from_its_own_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = _Log()
    async with _running(10.0) as beats:
        t0 = trio.current_time()
        a = beats.start(_info("a"), Liveness(), log.emit)
        await trio.sleep(3)
        b = beats.start(_info("b"), Liveness(), log.emit)
        await trio.sleep(25)
        Heartbeats.stop(a)
        await trio.sleep(20)
        Heartbeats.stop(b)
        await trio.sleep(100)
    got = [(round(t - t0, 6), node, elapsed) for t, node, elapsed in log.beats]
    assert got == [
        (10.0, "a", 10.0),
        (13.0, "b", 10.0),
        (20.0, "a", 20.0),
        (23.0, "b", 20.0),
        (33.0, "b", 30.0),
        (43.0, "b", 40.0),
    ]


async def test_a_stopped_attempt_never_beats_even_when_due_in_the_same_instant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = _Log()
    async with _running(5.0) as beats:
        beat = beats.start(_info("a"), Liveness(), log.emit)
        await trio.sleep_until(beat.due)  # the run task and this one wake in the same tick
        Heartbeats.stop(beat)
        beaten_before_stop = len(log.beats)  # 0 or 1: whichever task the tick ran first
        await trio.sleep(60)
    assert beaten_before_stop <= 1
    assert len(log.beats) == beaten_before_stop


async def test_a_stopped_attempt_is_released_before_its_entry_leaves_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A wide fan-out's finished branches must not stay alive for up to an interval."""
    live = Liveness()
    watched = weakref.ref(live)
    async with _running(30.0) as beats:
        beat = beats.start(_info("a"), live, _Log().emit)
        del live
        Heartbeats.stop(beat)
        gc.collect()
        assert watched() is None


async def test_an_idle_queue_waits_and_wakes_for_the_next_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = _Log()
    async with _running(7.0) as beats:
        await trio.sleep(1000)  # nothing running: no beat, no busy loop (autojump would hang)
        t0 = trio.current_time()
        beats.start(_info("late"), Liveness(), log.emit)
        await trio.sleep(7.5)
    assert [(round(t - t0, 6), node) for t, node, _ in log.beats] == [(7.0, "late")]


async def test_an_attempt_still_queued_for_a_remote_node_does_not_beat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = _Log()
    async with _running(2.0) as beats:
        beats.start(_info("queued", start=_Pending()), Liveness(), log.emit)
        beats.start(_info("running"), Liveness(), log.emit)
        await trio.sleep(5)
    assert [node for _, node, _ in log.beats] == ["running", "running"]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Heartbeats(0.0)
