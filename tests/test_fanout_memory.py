"""A fan-out does not keep what its finished branches no longer need (issue #22).

With 10,000 branches every per-branch leftover is 10,000 of them. A finished branch keeps its
result (the join and ``parallel.results`` need it) but not its cancel scope, which only serves
to cancel a branch that is still running.
"""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from attractor_trio.handlers import parallel

from .helpers import fan_out_dot, run_dot, when_every_branch_started

BRANCHES = 30


def test_finished_branches_release_their_cancel_scopes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scopes: list[weakref.ref[trio.CancelScope]] = []
    real = trio.CancelScope

    def recording(*args: Any, **kwargs: Any) -> trio.CancelScope:
        scope = real(*args, **kwargs)
        if sys._getframe(1).f_code.co_filename == parallel.__file__:  # a branch's scope
            scopes.append(weakref.ref(scope))
        return scope

    monkeypatch.setattr(trio, "CancelScope", recording)
    alive_when_only_b0_runs: list[int] = []
    completed = 0

    def watch(event: dict[str, Any]) -> None:
        nonlocal completed
        if event["event"] == "parallel_branch_completed":
            completed += 1
            if completed == BRANCHES - 1:  # every branch but the slow one is done
                gc.collect()
                alive_when_only_b0_runs.append(sum(ref() is not None for ref in scopes))

    steps = {"b0": [{"delay": "60s"}]}

    async def main() -> None:
        # A join that can make losers (so each branch gets a scope), run to the same end.
        dot = fan_out_dot(BRANCHES).replace(
            "shape=component", f'shape=component, join_policy="k_of_n", k={BRANCHES}'
        )
        result = await run_dot(dot, tmp_path / "run", steps=steps, sinks=[watch])
        assert result.status == "success"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(scopes) == BRANCHES  # one per branch was made
    # The slow branch's scope, and the one of the branch whose completion is being reported.
    assert alive_when_only_b0_runs == [2]


def _tracked_objects_with_every_branch_waiting(root: Path, branches: int) -> int:
    """How many objects the collector tracks once every branch of a fan-out is in its stage."""
    counted: list[int] = []

    def count_tracked() -> None:
        gc.collect()
        counted.append(len(gc.get_objects()))

    watch = when_every_branch_started(branches, count_tracked)
    steps = {f"b{index}": [{"delay": "60s"}] for index in range(branches)}

    async def main() -> None:
        result = await run_dot(fan_out_dot(branches), root, steps=steps, sinks=[watch])
        assert result.status == "success"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    [count] = counted
    return count


def test_a_waiting_branch_holds_few_objects_for_the_collector(tmp_path: Path) -> None:
    """Every object a waiting branch keeps is walked by each collection while a wide fan-out
    starts and finishes, on the trio thread (issue #22). A branch's never-checkpointed state
    holds plain containers, not journaled ones, and its executor and traversal share one
    emitter and the run's callables: 109 tracked objects per waiting branch before, 96 now
    (under the virtual clock; 101 and 85 on the real one)."""
    few = _tracked_objects_with_every_branch_waiting(tmp_path / "few", 10)
    many = _tracked_objects_with_every_branch_waiting(tmp_path / "many", 40)
    per_branch = (many - few) / 30
    assert per_branch <= 100, per_branch
