"""Liveness tree and watchdog under virtual time (no real sleeping)."""

from __future__ import annotations

from typing import Any

import trio

from attractor_trio.scopes.liveness import Liveness
from attractor_trio.scopes.watchdog import watch


def test_bump_reaches_every_ancestor() -> None:
    now = [0.0]
    root = Liveness(clock=lambda: now[0])
    branch = root.child("fan/a")
    attempt = branch.child("a-1")
    sibling = root.child("fan/b")
    now[0] = 50.0
    attempt.bump()
    assert (root.idle(), branch.idle(), attempt.idle()) == (0.0, 0.0, 0.0)
    assert sibling.idle() == 50.0


def test_holds_keep_a_node_and_its_ancestors_alive() -> None:
    now = [0.0]
    root = Liveness(clock=lambda: now[0])
    gate = root.child("gate")
    gate.hold(1)
    now[0] = 1000.0
    assert root.idle() == 0.0
    gate.hold(-1)
    now[0] = 1010.0
    assert root.idle() == 10.0


def test_idle_attempts_report() -> None:
    now = [0.0]
    root = Liveness(clock=lambda: now[0])
    branch = root.child("fan/a")
    branch.open_attempt("a-1", {"node_id": "a"})
    now[0] = 7.0
    assert root.idle_attempts() == [{"node_id": "a", "idle_s": 7.0}]
    branch.close_attempt("a-1")
    assert root.idle_attempts() == []


async def _fake_attempt(node: Liveness, every: float | None, lasts: float) -> None:
    """A fake stage: makes progress every ``every`` seconds (never if None) for ``lasts``."""
    with trio.move_on_after(lasts):
        while True:
            await trio.sleep(every if every is not None else lasts * 2)
            node.bump()


async def _run_siblings(schedules: list[float | None], stall: float, lasts: float) -> float | None:
    root = Liveness()
    fired: list[float] = []
    async with trio.open_nursery() as nursery:
        for index, every in enumerate(schedules):
            nursery.start_soon(_fake_attempt, root.child(f"b{index}"), every, lasts)

        def stalled(idle: float) -> None:
            fired.append(trio.current_time())
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch, root, stall, stalled)
        await trio.sleep(lasts + stall + 1)
        nursery.cancel_scope.cancel()
    return fired[0] if fired else None


async def test_one_busy_branch_keeps_the_run_alive(autojump_clock: Any) -> None:
    start = trio.current_time()
    fired = await _run_siblings([None, None, 5.0, None], stall=30, lasts=600)
    assert fired is None or fired - start >= 600


async def test_all_silent_branches_trip_the_watchdog_at_stall_timeout(autojump_clock: Any) -> None:
    start = trio.current_time()
    fired = await _run_siblings([None, None, None], stall=30, lasts=600)
    assert fired is not None and fired - start == 30


async def test_watchdog_fires_not_before_stall_after_last_progress(autojump_clock: Any) -> None:
    start = trio.current_time()
    # progress every 10s for the first 100s (one branch), then everything goes silent
    fired = await _run_siblings([10.0, None], stall=45, lasts=100)
    assert fired is not None
    assert 100 + 45 - 10 <= fired - start <= 100 + 45
