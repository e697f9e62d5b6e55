"""Parallel fan-out properties (issue 5, contract.md §4/§5/§9) against an independent model.

Hypothesis draws a fan-out — 1 to 8 simulated branches, each ending ``success``,
``partial_success`` or ``fail`` after 0-50 virtual seconds — and a join policy, error policy
and ``max_parallel``. The pipeline runs through :func:`attractor_trio.scopes.engine.run` under
``MockClock(autojump_threshold=0)``; :func:`expected` recomputes, from the schedule alone, when
the join is decided and what it reports. Plain ``@given`` with ``trio.run`` inside, because
``hypothesis-trio`` does not work with current trio.

Why the model can be exact: finishing times are kept distinct (``assume``), and with the
autojump clock everything due at one virtual instant — a branch finishing, the join deciding,
the losers being cancelled — happens before the clock moves on. So a branch finishing before
the decision is recorded with its own status, and every later one is cancelled.

Nothing is read back from the run to build the model: queued branches get a ``max_parallel``
slot in declaration order (``test_queued_branches_start_in_declaration_order`` pins that
separately, since trio's scheduler shuffles tasks under Hypothesis).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from attrs import frozen
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from attractor_trio.core.join import ERROR_POLICIES, JOIN_POLICIES
from attractor_trio.scopes.engine import RunHandle

from .helpers import assert_envelope_invariants, events, read_json, run_dot

FAN_OUT = "par"
SUCCESS_LIKE = ("success", "partial_success")
QUORUM_FRACTIONS = ("0.25", "0.34", "0.5", "0.6", "0.75", "1")


@frozen
class Branch:
    key: str
    status: str  # success | partial_success | fail
    seconds: int


@frozen
class FanOut:
    branches: tuple[Branch, ...]
    join_policy: str
    error_policy: str
    max_parallel: int
    k: int
    quorum_fraction: str

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(b.key for b in self.branches)

    def dot(self) -> str:
        attrs = [
            "shape=component",
            f'join_policy="{self.join_policy}"',
            f'error_policy="{self.error_policy}"',
            f"max_parallel={self.max_parallel}",
            f"k={self.k}",
            f"quorum_fraction={self.quorum_fraction}",
        ]
        lines = [f"{FAN_OUT} -> {key} -> join" for key in self.keys]
        return (
            "digraph props { start [shape=Mdiamond]; done [shape=Msquare]\n"
            f"{FAN_OUT} [{', '.join(attrs)}]\n join [shape=tripleoctagon]\n"
            f"start -> {FAN_OUT}\n" + "\n".join(lines) + "\n join -> done }"
        )

    def sim_steps(self) -> dict[str, Any]:
        steps: dict[str, Any] = {}
        for b in self.branches:
            step: dict[str, Any] = {"outcome": b.status, "delay": f"{b.seconds}s"}
            if b.status == "fail":
                step["failure_reason"] = f"{b.key} broke"
            steps[b.key] = [step]
        return steps


# ------------------------------------------------------------------------------ the model


@frozen
class Timeline:
    """When each branch starts and finishes if nothing is cancelled (FIFO ``max_parallel``)."""

    start: dict[str, int]
    finish: dict[str, int]


def timeline(fan: FanOut, slot_order: Sequence[str]) -> Timeline:
    """Slots go to branches in ``slot_order``; a freed slot goes to the next one waiting."""
    seconds = {b.key: b.seconds for b in fan.branches}
    free_at = [0] * min(fan.max_parallel, len(slot_order))
    start: dict[str, int] = {}
    for key in slot_order:
        slot = min(range(len(free_at)), key=lambda i: free_at[i])
        start[key] = free_at[slot]
        free_at[slot] += seconds[key]
    finish = {key: start[key] + seconds[key] for key in slot_order}
    return Timeline(start, finish)


@frozen
class Expected:
    status: str
    success_count: int
    failure_count: int
    canceled_count: int
    decided_at: int
    recorded: tuple[str, ...]  # finished before the decision, in finishing order
    included: tuple[str, ...]  # parallel.results ids, in declaration order


def required_successes(fan: FanOut) -> int | None:
    n = len(fan.branches)
    if fan.join_policy == "wait_all":
        return None
    if fan.join_policy == "first_success":
        return 1
    if fan.join_policy == "k_of_n":
        return fan.k
    return max(1, math.ceil(Fraction(fan.quorum_fraction) * n))


def expected(fan: FanOut, times: Timeline) -> Expected:
    """Walk the branches in finishing order until the outcome is known (contract.md §5/§9)."""
    status_of = {b.key: b.status for b in fan.branches}
    n = len(fan.branches)
    need = required_successes(fan)
    successes = partials = failures = 0
    recorded: list[str] = []
    decision = ""
    for key in sorted(times.finish, key=times.finish.__getitem__):
        recorded.append(key)
        status = status_of[key]
        successes += status in SUCCESS_LIKE
        partials += status == "partial_success"
        failures += status == "fail"
        remaining = n - len(recorded)
        if fan.error_policy == "fail_fast" and status == "fail":
            decision = "fail"
        elif need is None:
            decision = "" if remaining else _wait_all(fan, successes, partials, failures)
        elif successes >= need:
            decision = "success"
        elif successes + remaining < need:
            decision = "fail"
        if decision:
            break
    ignored = {k for k in recorded if fan.error_policy == "ignore" and status_of[k] == "fail"}
    return Expected(
        status=decision,
        success_count=successes,
        failure_count=failures,
        canceled_count=n - len(recorded),
        decided_at=times.finish[recorded[-1]],
        recorded=tuple(recorded),
        included=tuple(k for k in fan.keys if k in recorded and k not in ignored),
    )


def _wait_all(fan: FanOut, successes: int, partials: int, failures: int) -> str:
    if successes == 0:
        return "fail"
    if partials or (failures and fan.error_policy != "ignore"):
        return "partial_success"
    return "success"


# ------------------------------------------------------------------------------- strategy


@st.composite
def fan_outs(draw: st.DrawFn) -> FanOut:
    count = draw(st.integers(1, 8))
    seconds = draw(st.lists(st.integers(0, 50), min_size=count, max_size=count, unique=True))
    statuses = draw(
        st.lists(
            st.sampled_from(("success", "partial_success", "fail")),
            min_size=count,
            max_size=count,
        )
    )
    return FanOut(
        branches=tuple(
            Branch(f"b{i}", status, secs)
            for i, (status, secs) in enumerate(zip(statuses, seconds, strict=True))
        ),
        join_policy=draw(st.sampled_from(JOIN_POLICIES)),
        error_policy=draw(st.sampled_from(ERROR_POLICIES)),
        max_parallel=draw(st.integers(1, 8)),
        k=draw(st.integers(1, count)),
        quorum_fraction=draw(st.sampled_from(QUORUM_FRACTIONS)),
    )


# -------------------------------------------------------------------------------- running


@frozen
class Observed:
    result: Any
    ended_at: float
    events: list[dict[str, Any]]
    context: dict[str, Any]


def run_virtually(fan: FanOut, logs_root: Path) -> Observed:
    async def main() -> tuple[Any, float]:
        result = await run_dot(fan.dot(), logs_root, steps=fan.sim_steps())
        return result, trio.current_time()

    result, ended = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    context = read_json(logs_root / "checkpoint.json")["context"]
    return Observed(result, ended, events(logs_root), context)


def fan_out_events(evs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == name and e.get("node_id") == FAN_OUT]


def start_order_seen(evs: list[dict[str, Any]]) -> list[str]:
    return [e["branch_key"] for e in fan_out_events(evs, "parallel_branch_started")]


def is_branch_event(event: dict[str, Any]) -> bool:
    """Anything a branch of the fan-out emitted, or the handler emitted about a branch."""
    inside = event["branch"] == FAN_OUT or event["branch"].startswith(FAN_OUT + "/")
    about = event["event"].startswith("parallel_branch_") and event.get("node_id") == FAN_OUT
    return inside or about


# ------------------------------------------------------------------------------ properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(fan=fan_outs())
def test_fan_out_matches_the_reference_model(fan: FanOut) -> None:
    times = timeline(fan, fan.keys)
    # Distinct finishing times keep the order of completion, hence the model, exact.
    assume(len(set(times.finish.values())) == len(fan.branches))
    want = expected(fan, times)
    with tempfile.TemporaryDirectory() as scratch:
        logs_root = Path(scratch) / "run"
        seen = run_virtually(fan, logs_root)
        check_join_outcome(fan, want, seen)
        check_lifecycle(fan, want, times, seen.events)
        assert_envelope_invariants(logs_root)


def check_join_outcome(fan: FanOut, want: Expected, seen: Observed) -> None:
    """(i) status and counts of ``parallel_completed`` and of the context equal the model's."""
    [done] = fan_out_events(seen.events, "parallel_completed")
    counts = (done["success_count"], done["failure_count"], done["canceled_count"])
    assert (done["status"], *counts) == (
        want.status,
        want.success_count,
        want.failure_count,
        want.canceled_count,
    ), f"model: {want}"
    context = seen.context
    assert [r["id"] for r in context["parallel.results"]] == list(want.included)
    assert (context["parallel.success_count"], context["parallel.fail_count"]) == counts[:2]
    status_of = {b.key: b.status for b in fan.branches}
    for key in fan.keys:
        branch_status = status_of[key] if key in want.recorded else "canceled"
        assert context[f"parallel.branch.{key}.status"] == branch_status, key
    # Losers are cancelled, not awaited: virtual time stops at the decision.
    assert seen.ended_at == pytest.approx(want.decided_at)
    assert seen.result.status == ("fail" if want.status == "fail" else "success")


def check_lifecycle(
    fan: FanOut, want: Expected, times: Timeline, evs: list[dict[str, Any]]
) -> None:
    """(ii) nothing from a branch after ``parallel_completed``; (iii) each started branch
    completes exactly once; the ``max_parallel`` bound holds throughout."""
    [done_at] = [i for i, e in enumerate(evs) if e["event"] == "parallel_completed"]
    late = [e for e in evs[done_at + 1 :] if is_branch_event(e)]
    assert not late, f"branch events after parallel_completed: {late}"
    started = start_order_seen(evs)
    completed = [e["branch_key"] for e in fan_out_events(evs, "parallel_branch_completed")]
    assert sorted(started) == sorted(set(started)) == sorted(completed)
    # Slots are handed out in declaration order, and none once the join is decided: what was
    # due before the decision started; what was due after it did not. A branch due at the
    # decision's instant starts only if that instant is 0 (the decider ended instantly while
    # slots were still being handed out) and it was handed its slot in time.
    due = [k for k in fan.keys if times.start[k] < want.decided_at]
    at_once = [k for k in fan.keys if times.start[k] == want.decided_at == 0]
    assert started[: len(due)] == due
    assert started[len(due) :] == at_once[: len(started) - len(due)]
    running = peak = 0
    for event in evs:
        if event.get("node_id") == FAN_OUT and event["event"] == "parallel_branch_started":
            running += 1
            peak = max(peak, running)
        elif event.get("node_id") == FAN_OUT and event["event"] == "parallel_branch_completed":
            running -= 1
    assert peak <= fan.max_parallel


# ------------------------------------------------------------------- the model, by example


def _fan(
    *branches: tuple[str, int], join: str = "wait_all", error: str = "continue", **kw: Any
) -> FanOut:
    return FanOut(
        branches=tuple(Branch(f"b{i}", s, t) for i, (s, t) in enumerate(branches)),
        join_policy=join,
        error_policy=error,
        max_parallel=kw.get("max_parallel", 8),
        k=kw.get("k", 1),
        quorum_fraction=kw.get("quorum_fraction", "0.5"),
    )


def test_model_queues_branches_fifo_per_free_slot() -> None:
    fan = _fan(("success", 5), ("success", 1), ("success", 3), ("success", 2), max_parallel=2)
    times = timeline(fan, fan.keys)
    assert times.start == {"b0": 0, "b1": 0, "b2": 1, "b3": 4}
    assert times.finish == {"b0": 5, "b1": 1, "b2": 4, "b3": 6}


def test_model_decides_at_the_first_point_the_outcome_is_known() -> None:
    fan = _fan(("fail", 1), ("success", 2), ("success", 3), ("fail", 4), join="k_of_n", k=2)
    want = expected(fan, timeline(fan, fan.keys))
    assert (want.status, want.decided_at, want.recorded) == ("success", 3, ("b0", "b1", "b2"))
    assert (want.success_count, want.failure_count, want.canceled_count) == (2, 1, 1)
    fast = _fan(("success", 3), ("fail", 1), ("success", 2), error="fail_fast")
    assert expected(fast, timeline(fast, fast.keys)).status == "fail"
    unreachable = _fan(
        ("fail", 1), ("fail", 2), ("success", 3), join="quorum", quorum_fraction="0.6"
    )
    want = expected(unreachable, timeline(unreachable, unreachable.keys))
    assert (want.status, want.decided_at, want.canceled_count) == ("fail", 2, 1)


def test_model_wait_all_and_ignore() -> None:
    partial = _fan(("success", 1), ("partial_success", 2))
    assert expected(partial, timeline(partial, partial.keys)).status == "partial_success"
    ignored = _fan(("success", 1), ("fail", 2), error="ignore")
    want = expected(ignored, timeline(ignored, ignored.keys))
    assert (want.status, want.included, want.failure_count) == ("success", ("b0",), 1)
    nothing = _fan(("fail", 1), ("fail", 2), error="ignore")
    assert expected(nothing, timeline(nothing, nothing.keys)).status == "fail"


# ------------------------------------------- scheduling, cancellation and their costs


def _queued_fan_out() -> FanOut:
    """``max_parallel=1``, first success wins; the slowest branch is declared first."""
    return _fan(
        ("success", 3), ("success", 2), ("success", 1), join="first_success", max_parallel=1
    )


def test_queued_branches_start_in_declaration_order(tmp_path: Path) -> None:
    """Not in whichever order trio's scheduler (random on purpose) happens to pick."""
    fan = _fan(("success", 3), ("success", 2), ("success", 1), max_parallel=1)
    orders = set()
    for attempt in range(8):
        seen = run_virtually(fan, tmp_path / f"run{attempt}")
        orders.add(tuple(start_order_seen(seen.events)))
    assert orders == {("b0", "b1", "b2")}


def test_no_branch_starts_once_the_join_is_decided(tmp_path: Path) -> None:
    fan = _queued_fan_out()
    seen = run_virtually(fan, tmp_path / "run")
    started = [e["branch_key"] for e in fan_out_events(seen.events, "parallel_branch_started")]
    attempts = [e for e in seen.events if e["event"] == "stage_attempt_started" and e["branch"]]
    assert len(started) == 1 and {e["node_id"] for e in attempts} == {started[0]}


def test_losers_are_cancelled_once_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = 120
    fan = _fan(
        *[("success", 1 + i) for i in range(count)], join="first_success", max_parallel=count
    )
    calls = 0
    cancel = trio.CancelScope.cancel

    def counting_cancel(self: trio.CancelScope, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        cancel(self, *args, **kwargs)

    monkeypatch.setattr(trio.CancelScope, "cancel", counting_cancel)
    seen = run_virtually(fan, tmp_path / "run")
    [done] = fan_out_events(seen.events, "parallel_completed")
    assert (done["success_count"], done["canceled_count"]) == (1, count - 1)
    assert calls <= 3 * count, f"{calls} CancelScope.cancel calls for {count} branches"


def test_run_cancellation_still_completes_every_started_branch(tmp_path: Path) -> None:
    fan = _fan(("success", 50), ("success", 60))
    logs_root = tmp_path / "run"
    handle = RunHandle()

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def stop_later() -> None:
                await trio.sleep(10)
                handle.cancel("stop requested")

            nursery.start_soon(stop_later)
            result = await run_dot(fan.dot(), logs_root, steps=fan.sim_steps(), handle=handle)
            assert result.status == "canceled"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    evs = events(logs_root)
    started = [e["branch_key"] for e in fan_out_events(evs, "parallel_branch_started")]
    completed = {
        e["branch_key"]: e["status"] for e in fan_out_events(evs, "parallel_branch_completed")
    }
    assert sorted(started) == ["b0", "b1"]
    assert completed == {"b0": "canceled", "b1": "canceled"}
