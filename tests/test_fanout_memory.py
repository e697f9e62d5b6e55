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

from .helpers import fan_out_dot, run_dot

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
        result = await run_dot(fan_out_dot(BRANCHES), tmp_path / "run", steps=steps, sinks=[watch])
        assert result.status == "success"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(scopes) == BRANCHES  # one per branch was made
    # The slow branch's scope, and the one of the branch whose completion is being reported.
    assert alive_when_only_b0_runs == [2]
