"""The fuzz machinery finds planted bugs, and shrinks them to small reproducers (issue 10).

Each test plants one deliberately broken fake — they live only here — and asks Hypothesis's
``find`` for a schedule over a small pipeline under which the invariant checker reports the
bug. The search is derandomized (same examples on every run, so CI cannot flake) and the
shrunk schedule must need at most two non-default steps: a report that took fifty steps to
reproduce would be no help to whoever has to fix the bug.
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, find, settings

from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.handlers.base import AttemptInfo, current_attempt
from attractor_trio.persist import atomic
from attractor_trio.scopes import attempt as attempt_scope
from attractor_trio.testing import (
    Observation,
    Schedule,
    ScheduledBackend,
    ScheduledHandler,
    Step,
    Violation,
    check_invariants,
    run_schedule,
    schedules,
)

from .helpers import graph_of

PIPELINE = graph_of(
    """digraph planted { start [shape=Mdiamond]; done [shape=Msquare]
    a [prompt="a", max_retries=1]; b [prompt="b"]; start -> a -> b -> done }"""
)
SEARCH = settings(
    max_examples=300,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def observe(schedule: Schedule, **options: Any) -> tuple[Observation, list[Violation]]:
    with tempfile.TemporaryDirectory() as scratch:
        obs = run_schedule(PIPELINE, schedule, Path(scratch) / "run", **options)
        # The checker reads the run directory, so check before it disappears.
        return obs, check_invariants(obs)


def shrunk_counterexample(
    wanted: set[str], options: Callable[[Schedule], dict[str, Any]]
) -> tuple[Schedule, list[Violation]]:
    """The smallest schedule Hypothesis finds under which a ``wanted`` invariant breaks."""

    def broken(schedule: Schedule) -> bool:
        return bool(_reported(schedule, wanted, options))

    schedule = find(schedules(PIPELINE), broken, settings=SEARCH)
    found = _reported(schedule, wanted, options)
    print(f"planted bug found: {found[0].invariant}: {found[0].detail}\n{schedule.describe()}")
    return schedule, found


def _reported(
    schedule: Schedule, wanted: set[str], options: Callable[[Schedule], dict[str, Any]]
) -> list[Violation]:
    _obs, found = observe(schedule, **options(schedule))
    return [v for v in found if v.invariant in wanted]


def assert_small(schedule: Schedule, found: Iterable[Violation]) -> None:
    assert list(found)
    assert schedule.non_default_steps <= 2, schedule.describe()


# ------------------------------------------------------ (1) a helper task escapes its attempt


class LeakyHandler(ScheduledHandler):
    """Starts a progress reporter in the *system* nursery — outside the attempt's scope — so
    it outlives the attempt and keeps sending heartbeats for it."""

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        info = current_attempt()
        assert info is not None
        trio.lowlevel.spawn_system_task(self._report, info)
        return await super().execute(node, context, graph, logs_root)

    async def _report(self, info: AttemptInfo) -> None:
        # Off the schedule's grid (its steps last multiples of 0.5 s): a report in the very
        # instant the attempt ends would land before or after stage_attempt_finished as the
        # scheduler happens to order that tick, and the counterexample would not replay.
        await trio.sleep(0.25)
        while True:
            await trio.sleep(1.0)
            info.emit(
                "stage_heartbeat",
                node_id=info.node_id,
                attempt_id=info.attempt_id,
                elapsed_s=0.0,
                idle_s=0.0,
            )


def test_a_helper_task_escaping_its_attempt_is_found() -> None:
    schedule, found = shrunk_counterexample(
        {"heartbeat_after_attempt_end", "event_after_terminal"},
        lambda s: {"handlers": {"codergen": LeakyHandler(s)}},
    )
    assert_small(schedule, found)
    # Control: the same schedule is harmless with the honest handler.
    _obs, honest = observe(schedule)
    assert honest == []


# ------------------------------------------------------------- (2) JSON written in place


def torn_write_json(path: atomic.StrPath, obj: Any, *, compact: bool = False) -> None:
    """Truncates the target and writes it in two halves with a cancellation point between
    them, like ``await f.write(head); await f.write(tail)``: cancellation delivered there
    leaves half a document behind."""
    data = atomic.dumps_json(obj, compact=compact).encode("utf-8")
    half = len(data) // 2
    with open(path, "wb") as handle:
        handle.write(data[:half])
        if _cancel_pending():
            return
        handle.write(data[half:])


def _cancel_pending() -> bool:
    try:
        return trio.current_effective_deadline() == -math.inf
    except RuntimeError:  # not inside trio
        return False


@pytest.fixture
def torn_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace ``write_json_atomic`` everywhere it was imported."""
    original = atomic.write_json_atomic
    for name, module in list(sys.modules.items()):
        if name.startswith("attractor_trio") and vars(module).get("write_json_atomic") is original:
            monkeypatch.setattr(module, "write_json_atomic", torn_write_json)


@pytest.mark.usefixtures("torn_writes")
def test_a_writer_that_writes_json_in_place_is_found() -> None:
    schedule, found = shrunk_counterexample({"json_unparsable"}, lambda s: {})
    assert_small(schedule, found)
    # Only a cancelled write can tear: the schedule cancels (or stalls into the watchdog).
    assert "stall" in schedule.describe() or "cancel the run" in schedule.describe()


# --------------------------------------------------- (3) a backend swallows cancellation


class SwallowingBackend(ScheduledBackend):
    """Catches ``trio.Cancelled`` and reports success, as a careless ``except
    BaseException`` around a provider call would."""

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        try:
            return await super().run(node, prompt, context)
        except trio.Cancelled:
            return "done (honest)"


def test_a_backend_that_swallows_cancellation_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine re-delivers the cancellation after a handler returns and so masks the swallow
    # (see test_the_engine_masks_a_swallowing_backend): plant the bug with that defence off.
    async def no_defence() -> None:
        return None

    monkeypatch.setattr(attempt_scope, "redeliver_cancellation", no_defence)
    schedule, found = shrunk_counterexample(
        {"cancellation_swallowed", "attempt_after_cancel", "run_not_canceled"},
        lambda s: {"backend": SwallowingBackend(s)},
    )
    assert_small(schedule, found)


@pytest.mark.parametrize("heartbeat_interval", [None, 10.0])
def test_the_engine_masks_a_swallowing_backend(heartbeat_interval: float | None) -> None:
    """The engine's own defence: the swallowed stall is still recorded as canceled, with or
    without heartbeats."""
    schedule = Schedule({"a": (Step("stall"),)}, cancel_at=5)
    obs, found = observe(
        schedule, backend=SwallowingBackend(schedule), heartbeat_interval=heartbeat_interval
    )
    assert found == []
    assert obs.result is not None and obs.result.status == "canceled"
