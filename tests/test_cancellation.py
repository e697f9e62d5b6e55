"""Cancellation precedence and cancellation at every phase (issue 4; httpcore's
``test_cancellations.py`` style): whatever moment the run is cancelled at, the run directory is
consistent, ``final.json`` says ``canceled`` and no new attempt starts afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.core.outcome import Outcome
from attractor_trio.persist.checkpoint import write_checkpoint_bytes
from attractor_trio.scopes import attempt as attempt_module
from attractor_trio.scopes import engine
from attractor_trio.scopes import run as run_module
from attractor_trio.scopes import traversal as traversal_module

from .helpers import assert_envelope_invariants, events, named, read_json, run_dot

LINEAR = """digraph c { start [shape=Mdiamond]; done [shape=Msquare]
    a [prompt="a"]; b [prompt="b", max_retries=3, retry_policy="patient"]; c [prompt="c"]
    start -> a -> b -> c -> done }"""


def _after_cancel(root: Path) -> list[dict[str, Any]]:
    evs = events(root)
    first = next(
        i
        for i, e in enumerate(evs)
        if e["event"] == "cancellation_exit"
        or (e["event"] == "pipeline_failed" and e["status"] == "canceled")
    )
    return evs[first:]


def _assert_consistent_cancel(root: Path) -> None:
    final = read_json(root / "final.json")
    assert final["status"] == "canceled" and final["exit_path"] == "canceled"
    for path in root.rglob("*.json"):
        json.loads(path.read_text())
    assert not [e for e in _after_cancel(root) if e["event"] == "stage_attempt_started"]
    assert_envelope_invariants(root)
    checkpoint = read_json(root / "checkpoint.json")
    for node in checkpoint["completed_nodes"]:
        assert (root / node / "status.json").exists(), node


def _cancel_when_checkpointing(
    monkeypatch: Any, node_id: str, scope_box: list[trio.CancelScope]
) -> None:
    """Cancel ``scope_box[0]`` while the checkpoint that records ``node_id`` is being written."""
    real_save = write_checkpoint_bytes

    def save_then_cancel(root_: Any, data: bytes) -> Any:
        if json.loads(data)["current_node"] == node_id:
            scope_box[0].cancel()
        return real_save(root_, data)

    monkeypatch.setattr(run_module, "write_checkpoint_bytes", save_then_cancel)


async def test_cancel_during_backoff_sleep_starts_no_retry(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    steps = {"b": [{"outcome": "fail", "failure_reason": "flaky"}]}
    with trio.move_on_after(1.0):  # patient backoff: 2s before the first retry
        await run_dot(LINEAR, root, steps=steps)
    _assert_consistent_cancel(root)
    assert [e["node_id"] for e in named(root, "stage_retrying")] == ["b"]
    assert [e["node_id"] for e in named(root, "stage_attempt_started")].count("b") == 1


async def test_cancel_beats_goal_gate_retry(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
        gate [prompt="x", goal_gate=true, retry_target=fix]; fix [prompt="fix"]
        start -> gate
        gate -> done [condition="outcome=fail"]
        gate -> done [condition="outcome=success"]
        fix -> gate }"""
    root = tmp_path / "run"
    handle = engine.RunHandle()

    class CancelAtExit:
        """A backend that asks to cancel the run while the gate's failure is being recorded."""

        def __init__(self) -> None:
            self.calls: list[str] = []

        async def run(self, node: Any, prompt: str, context: Any) -> Any:
            self.calls.append(node.id)
            if node.id == "gate":
                handle.cancel("SIGTERM")
                return Outcome("fail", failure_reason="red")
            return "ok"

    backend = CancelAtExit()
    result = await run_dot(source, root, backend=backend, handle=handle)
    assert result.status == "canceled"
    assert "fix" not in backend.calls
    _assert_consistent_cancel(root)


async def test_cancel_beats_loop_restart(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph r { start [shape=Mdiamond]; done [shape=Msquare]; work [prompt="x"]
        start -> work
        work -> done [condition="outcome=success"]
        work -> work [condition="outcome=fail", loop_restart=true] }"""
    root = tmp_path / "run"
    handle = engine.RunHandle()

    class FailThenCancel:
        async def run(self, node: Any, prompt: str, context: Any) -> Any:
            handle.cancel("SIGINT")
            return Outcome("fail", failure_reason="infra blip", failure_class="transient_infra")

    result = await run_dot(source, root, backend=FailThenCancel(), handle=handle)
    assert result.status == "canceled"
    assert named(root, "loop_restart") == []
    assert not (root / "restart-1").exists()


@pytest.mark.parametrize("phase", ["before_start", "mid_output", "status_write", "checkpoint"])
async def test_cancel_at_every_phase(
    tmp_path: Path, autojump_clock: Any, monkeypatch: Any, phase: str
) -> None:
    """A fake that stalls (or requests cancel) at one phase of stage ``b``; the run directory
    stays consistent and ``final.json`` says canceled."""
    root = tmp_path / "run"
    scope_box: list[trio.CancelScope] = []

    def arm(scope: trio.CancelScope) -> None:
        scope_box.append(scope)

    steps: dict[str, Any] = {}
    if phase == "before_start":
        real = attempt_module.StageExecutor._attempt

        async def stall_before(self: Any, node: Any, *args: Any) -> Any:
            if node.id == "b":
                scope_box[0].cancel()
                await trio.sleep_forever()
            return await real(self, node, *args)

        monkeypatch.setattr(attempt_module.StageExecutor, "_attempt", stall_before)
    elif phase == "mid_output":
        steps = {"b": [{"delay": "10s"}]}

        async def cancel_soon() -> None:
            await trio.sleep(5)
            scope_box[0].cancel()

    elif phase == "status_write":
        real_write = attempt_module.StageExecutor._write_final_status

        def write_then_cancel(self: Any, path: str | Path, outcome: Any) -> None:
            if Path(path).parent.name == "b":  # (the plan's path text, or a Path)
                scope_box[0].cancel()
            real_write(self, path, outcome)

        monkeypatch.setattr(attempt_module.StageExecutor, "_write_final_status", write_then_cancel)
    else:
        _cancel_when_checkpointing(monkeypatch, "b", scope_box)

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            arm(scope)
            if phase == "mid_output":
                nursery.start_soon(cancel_soon)
            await run_dot(LINEAR, root, steps=steps)
        nursery.cancel_scope.cancel()
    _assert_consistent_cancel(root)
    started = [e["node_id"] for e in named(root, "stage_attempt_started")]
    assert "c" not in started
    if phase == "checkpoint":
        assert read_json(root / "checkpoint.json")["current_node"] == "b"


# --- the traversal's step checkpoint (scopes/traversal.py) -----------------------------------


def _chain(stages: int) -> str:
    ids = [f"s{i}" for i in range(stages)]
    nodes = "; ".join(f'{node} [prompt="p"]' for node in ids)
    return (
        "digraph y { start [shape=Mdiamond]; done [shape=Msquare]; "
        f"{nodes}; {' -> '.join(['start', *ids, 'done'])} }}"
    )


async def _steps_of_a_sibling_during(root: Path) -> int:
    """How many times a sibling task got to run while a 30-stage synchronous chain ran."""
    ran = 0
    done = False

    async def sibling() -> None:
        nonlocal ran
        while not done:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sibling)
        await trio.lowlevel.checkpoint()
        ran = 0
        result = await run_dot(_chain(30), root)
        done = True
    assert result.status == "success"
    return ran


async def test_a_synchronous_chain_yields_to_other_tasks_once_per_interval(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Simulated stages never wait on anything: the traversal alone decides when the run's
    other tasks get to run. With no interval it hands over before every step; with one
    longer than the whole run, only at its first step — the trip through the scheduler is
    what the interval rations, and the default keeps the wait short."""
    monkeypatch.setattr(traversal_module, "YIELD_INTERVAL_S", 0.0)
    every_step = await _steps_of_a_sibling_during(tmp_path / "every")
    monkeypatch.setattr(traversal_module, "YIELD_INTERVAL_S", 3600.0)
    rationed = await _steps_of_a_sibling_during(tmp_path / "rationed")
    assert every_step >= 32  # start, 30 stages, done
    assert rationed < 5  # the run's own few awaits (lock, start), not one per stage
    assert traversal_module.YIELD_INTERVAL_S == 3600.0
    monkeypatch.undo()
    assert 0 < traversal_module.YIELD_INTERVAL_S <= 0.01


async def test_a_cancel_stops_a_synchronous_chain_at_the_next_step_without_a_yield(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Between two yields the traversal still checks for cancellation before every step: a
    cancel requested while ``a`` is recorded lets no later stage start."""
    monkeypatch.setattr(traversal_module, "YIELD_INTERVAL_S", 3600.0)
    root = tmp_path / "run"
    scope_box: list[trio.CancelScope] = []
    _cancel_when_checkpointing(monkeypatch, "a", scope_box)
    with trio.CancelScope() as scope:
        scope_box.append(scope)
        await run_dot(LINEAR, root)
    _assert_consistent_cancel(root)
    assert [e["node_id"] for e in named(root, "stage_started")] == ["start", "a"]
