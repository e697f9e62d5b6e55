"""Cycle breaker, loop-restart gate and causality end to end (issue 6), virtual time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from attractor_trio.scopes import engine

from .helpers import assert_envelope_invariants, graph_of, named, read_json, run_dot, sim

LOOP = """digraph loop { graph [loop_restart_signature_limit=3]
    start [shape=Mdiamond]; done [shape=Msquare]
    implement [prompt="x", retry_target=implement]; check [prompt="check"]
    start -> implement -> check
    check -> done [condition="outcome=success"]
    check -> implement [condition="outcome=fail"] }"""


def _failing(reasons: list[str], klass: str = "") -> list[dict[str, Any]]:
    return [
        {"outcome": "fail", "failure_reason": r, **({"failure_class": klass} if klass else {})}
        for r in reasons
    ]


async def test_same_deterministic_reason_breaks_the_cycle(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    reasons = [f"test_parse failed: {n} errors at commit a1b2c3{n}d" for n in range(10)]
    result = await run_dot(LOOP, root, steps={"check": _failing(reasons)})
    assert result.status == "fail" and result.exit_path == "cycle_breaker"
    assert result.failure_reason == reasons[2]  # the raw reason of the visit that tripped
    [trip] = named(root, "failure_cycle_break")
    assert (trip["node_id"], trip["count"], trip["limit"], trip["scope"]) == ("check", 3, 3, "main")
    final = read_json(root / "final.json")
    assert final["failure_signature"] == trip["signature"]
    assert final["failure_reason"] == reasons[2]
    assert_envelope_invariants(root)


async def test_transient_failures_never_trip_it(tmp_path: Path, autojump_clock: Any) -> None:
    source = LOOP.replace(
        "loop_restart_signature_limit=3", "loop_restart_signature_limit=3, max_node_visits=8"
    )
    root = tmp_path / "run"
    result = await run_dot(
        source, root, steps={"check": _failing(["connection reset by peer"] * 10)}
    )
    assert result.exit_path == "visit_limit"
    assert named(root, "failure_cycle_break") == []


async def test_counters_survive_resume(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    steps = {"check": [*_failing(["boom 1", "boom 2"]), {"stall": "forever"}]}
    with trio.move_on_after(100):
        await run_dot(LOOP, root, steps=steps)
    counts = read_json(root / "checkpoint.json")["failure_signatures"]
    assert list(counts.values()) == [2]
    (root / "final.json").unlink()
    result = await engine.resume(
        graph_of(LOOP),
        logs_root=root,
        heartbeat_interval=None,
        backend=sim({"check": _failing(["boom 3"])}),
    )
    assert result.exit_path == "cycle_breaker"  # the third, not the fifth, failure trips it


async def test_cycle_breaker_inside_a_branch(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph b { graph [loop_restart_signature_limit=2]
        start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        start -> par; par -> a -> join; par -> b -> join; join -> done
        b -> b [condition="outcome=fail"] }"""
    root = tmp_path / "run"
    result = await run_dot(
        source, root, steps={"b": _failing(["lint: E501 at line 1", "lint: E501 at line 2"])}
    )
    [trip] = named(root, "failure_cycle_break")
    assert trip["scope"] == "par/b" and trip["node_id"] == "b"
    results = read_json(root / "checkpoint.json")["context"]["parallel.results"]
    by_id = {r["id"]: r for r in results}
    assert by_id["b"]["status"] == "fail" and by_id["b"]["failure_reason"] == "lint: E501 at line 2"
    assert result.status == "success"  # wait_all: partial, the fan-in picks a


async def test_loop_restart_blocked_for_deterministic_failures(
    tmp_path: Path, autojump_clock: Any
) -> None:
    source = """digraph r { start [shape=Mdiamond]; done [shape=Msquare]; work [prompt="x"]
        start -> work
        work -> done [condition="outcome=success"]
        work -> work [condition="outcome=fail", loop_restart=true] }"""
    root = tmp_path / "run"
    result = await run_dot(source, root, steps={"work": _failing(["syntax error in main.py"])})
    assert result.status == "fail" and result.failure_reason == "syntax error in main.py"
    [blocked] = named(root, "loop_restart_blocked")
    assert blocked["failure_class"] == "deterministic"
    assert named(root, "loop_restart") == []


async def test_loop_restart_signature_breaker(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph r { graph [max_restarts=50, loop_restart_signature_limit=3]
        start [shape=Mdiamond]; done [shape=Msquare]; work [prompt="x"]
        start -> work
        work -> done [condition="outcome=success"]
        work -> work [condition="outcome=fail", loop_restart=true] }"""
    root = tmp_path / "run"
    result = await run_dot(source, root, steps={"work": _failing(["503 Service Unavailable"])})
    assert result.exit_path == "cycle_breaker"
    assert len(named(root, "loop_restart")) == 2


async def test_reason_survives_two_diamonds_and_a_fan_in(
    tmp_path: Path, autojump_clock: Any
) -> None:
    source = """digraph c { start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        d1 [shape=diamond]; d2 [shape=diamond]
        start -> par; par -> a -> join; par -> b -> join
        join -> d1 -> d2
        d2 -> done [condition="outcome=success"] }"""
    root = tmp_path / "run"
    steps = {"a": _failing(["TOKEN-a: compile error"]), "b": _failing(["TOKEN-b: compile error"])}
    result = await run_dot(source, root, steps=steps)
    assert result.status == "fail"
    assert "TOKEN-a" in result.failure_reason
    assert "TOKEN-a" in read_json(root / "final.json")["failure_reason"]


async def test_retry_target_loop_breaks_at_the_limit(tmp_path: Path, autojump_clock: Any) -> None:
    """fail → retry_target with the same deterministic reason (no fail edge at all)."""
    source = """digraph rt { graph [loop_restart_signature_limit=2]
        start [shape=Mdiamond]; done [shape=Msquare]
        prep [prompt="p"]; build [prompt="b", retry_target=prep]
        start -> prep -> build -> done }"""
    root = tmp_path / "run"
    result = await run_dot(
        source,
        root,
        steps={"build": _failing([f"ld: undefined symbol at offset {n}" for n in range(5)])},
    )
    assert result.exit_path == "cycle_breaker"
    assert [
        e["to_node"] for e in named(root, "edge_selected") if e["method"] == "retry_target"
    ] == ["prep"]


async def test_transient_hint_retries_deterministic_does_not(
    tmp_path: Path, autojump_clock: Any
) -> None:
    source = """digraph r { start [shape=Mdiamond]; done [shape=Msquare]; s [prompt="x", max_retries=2]
        start -> s -> done }"""
    root = tmp_path / "t"
    await run_dot(
        source,
        root,
        steps={
            "s": [
                {"outcome": "fail", "failure_reason": "x", "failure_class": "transient_infra"},
                {"outcome": "success"},
            ]
        },
    )
    assert len([e for e in named(root, "stage_attempt_started") if e["node_id"] == "s"]) == 2
    root = tmp_path / "d"
    await run_dot(
        source,
        root,
        steps={"s": [{"outcome": "fail", "failure_reason": "x", "failure_class": "deterministic"}]},
    )
    assert len([e for e in named(root, "stage_attempt_started") if e["node_id"] == "s"]) == 1
    assert named(root, "stage_retry_blocked")[0]["failure_class"] == "deterministic"


async def test_tool_reason_survives_diamonds_and_fan_in(tmp_path: Path) -> None:
    """A real failing tool's stderr token reaches final.json through two diamonds and a fan-in."""
    source = """digraph c { start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        d1 [shape=diamond]; d2 [shape=diamond]
        a [shape=parallelogram, tool_command="echo 'TOKEN-7f3: assertion failed' >&2; exit 1"]
        b [shape=parallelogram, tool_command="echo nope >&2; exit 2"]
        start -> par; par -> a -> join; par -> b -> join
        join -> d1 -> d2
        d2 -> done [condition="outcome=success"] }"""
    root = tmp_path / "run"
    with trio.fail_after(30):
        result = await run_dot(source, root, workdir=tmp_path)
    assert result.status == "fail"
    assert "TOKEN-7f3: assertion failed" in read_json(root / "final.json")["failure_reason"]
