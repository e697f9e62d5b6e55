"""A branch reaching its fan-in (``Traversal.run`` with ``stop_at``) checks cancellation there
without a trip through the scheduler (issue #22): a cancelled fan-out still stops its branch at
the fan-in, and an uncancelled branch ends without rescheduling itself first."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from attractor_trio import load
from attractor_trio.context import Context
from attractor_trio.core.vocabulary import ExitPath
from attractor_trio.scopes.traversal import BranchState, Traversal

_DOT = """digraph fan {
  start [shape=Mdiamond]; done [shape=Msquare]
  par [shape=component]; join [shape=tripleoctagon]
  b [prompt="work"]
  start -> par; par -> b -> join; join -> done
}
"""


def _branch_at_fan_in() -> Traversal:
    """A branch traversal whose next node is its fan-in, and that has never yielded (so a
    step before any other node would take a full checkpoint). No stage runs: no executor."""
    executor: Any = None
    return Traversal(
        graph=load(_DOT),
        state=BranchState(Context()),
        executor=executor,
        emit=lambda *_a, **_k: None,
        checkpoint=lambda _node: None,
        stop_at=frozenset({"join"}),
    )


def test_a_branch_at_its_fan_in_ends_without_a_scheduler_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trips: list[str] = []
    real = trio.lowlevel.checkpoint

    async def counted() -> None:
        trips.append("checkpoint")
        await real()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", counted)

    async def main() -> Any:
        return await _branch_at_fan_in().run("join", "b")

    stop = trio.run(main)
    assert stop.exit_path == ExitPath.COMPLETED
    assert trips == []


def test_a_cancelled_fan_out_still_stops_its_branch_at_the_fan_in() -> None:
    async def main() -> bool:
        with trio.CancelScope() as scope:
            scope.cancel()
            await _branch_at_fan_in().run("join", "b")
            return False  # not reached: the fan-in check raised Cancelled
        return scope.cancelled_caught

    assert trio.run(main)
