"""Spec §11.12 cross-feature parity matrix: one place that names every row.

Parsing and validation rows go through ``load``/``validate`` and ``attractor-trio validate``;
execution rows run through both the Python API and ``attractor-trio run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import attractor_trio
from attractor_trio.cli.main import main
from attractor_trio.dot.graph import Severity

from .helpers import run_dot

P01 = "digraph p { start [shape=Mdiamond]; A; B; done [shape=Msquare]; start -> A -> B -> done }"
P02 = 'digraph p { graph [goal="Ship it", label="Release"] start [shape=Mdiamond] }'
P03 = """digraph p {
    plan [
        shape=box,
        prompt="Plan the work",
        timeout="900s",
        max_retries=2
    ]
}"""


def test_p01_parse_simple_linear_pipeline() -> None:
    graph = attractor_trio.load(P01)
    assert list(graph.nodes) == ["start", "A", "B", "done"]
    assert [(e.from_node, e.to_node) for e in graph.edges] == [
        ("start", "A"),
        ("A", "B"),
        ("B", "done"),
    ]


def test_p02_parse_graph_level_attributes() -> None:
    graph = attractor_trio.load(P02)
    assert (graph.goal, graph.label) == ("Ship it", "Release")


def test_p03_parse_multiline_node_attributes() -> None:
    node = attractor_trio.load(P03).nodes["plan"]
    assert (node.prompt, node.timeout, node.max_retries) == ("Plan the work", 900.0, 2)


def _rules(source: str) -> dict[str, Severity]:
    return {d.rule: d.severity for d in attractor_trio.validate(attractor_trio.load(source))}


def test_p04_missing_start_node_is_an_error() -> None:
    assert _rules("digraph p { a -> done; done [shape=Msquare] }")["start_node"] is Severity.ERROR


def test_p05_missing_exit_node_is_an_error() -> None:
    assert (
        _rules("digraph p { start [shape=Mdiamond]; start -> a }")["terminal_node"]
        is Severity.ERROR
    )


def test_p06_orphan_node_is_reported() -> None:
    source = "digraph p { start [shape=Mdiamond]; done [shape=Msquare]; start -> done; orphan }"
    diagnostics = attractor_trio.validate(attractor_trio.load(source))
    [orphan] = [d for d in diagnostics if d.rule == "reachability"]
    assert orphan.node_id == "orphan" and "orphan" in orphan.message
    assert orphan.severity is Severity.ERROR  # contract.md §9 decides ERROR (AMBIG-6)


def test_p18_stylesheet_applies_model_override_by_shape() -> None:
    source = """digraph p {
        graph [model_stylesheet="box { llm_model: \\"claude-opus-4-6\\" }"]
        a [shape=box]; b [shape=box, llm_model="mine"]; h [shape=hexagon]
    }"""
    nodes = attractor_trio.load(source).nodes
    assert nodes["a"].llm_model == "claude-opus-4-6"
    assert nodes["b"].llm_model == "mine"
    assert nodes["h"].llm_model == ""


def test_p19_goal_variable_expansion() -> None:
    source = 'digraph p { graph [goal="a CLI"]; a [prompt="Build $goal, then test $goal"] }'
    assert attractor_trio.load(source).nodes["a"].prompt == "Build a CLI, then test a CLI"


# --- execution rows: (row, dot, sim script, interviewer answers, expected nodes) ------------

P07 = "digraph p { start [shape=Mdiamond]; a; b; c; done [shape=Msquare]; start -> a -> b -> c -> done }"
P08 = """digraph p { start [shape=Mdiamond]; work; gate [shape=diamond]; ok; bad; done [shape=Msquare]
    start -> work -> gate
    gate -> ok [condition="outcome=success"]
    gate -> bad [condition="outcome=fail"]
    ok -> done; bad -> done }"""
P09 = "digraph p { start [shape=Mdiamond]; flaky [max_retries=2]; done [shape=Msquare]; start -> flaky -> done }"
P10 = """digraph p { start [shape=Mdiamond]; impl [goal_gate=true, retry_target=fix]; fix; done [shape=Msquare]
    start -> impl
    impl -> done [condition="outcome=success"]
    impl -> done [condition="outcome=fail"]
    fix -> impl }"""
P12 = """digraph p { start [shape=Mdiamond]; ask [shape=hexagon, label="Go?"]; yes; no; done [shape=Msquare]
    start -> ask; ask -> yes [label="[Y] Yes"]; ask -> no [label="[N] No"]; yes -> done; no -> done }"""
P13 = """digraph p { start [shape=Mdiamond]; s; heavy; cond; done [shape=Msquare]
    start -> s; s -> heavy [weight=9]; s -> cond [condition="outcome=success"]
    heavy -> done; cond -> done }"""
P14 = """digraph p { start [shape=Mdiamond]; s; light; heavy; done [shape=Msquare]
    start -> s; s -> light [weight=1]; s -> heavy [weight=5]; light -> done; heavy -> done }"""
P15 = """digraph p { start [shape=Mdiamond]; s; zeta; alpha; done [shape=Msquare]
    start -> s; s -> zeta; s -> alpha; zeta -> done; alpha -> done }"""
P16 = """digraph p { start [shape=Mdiamond]; produce; consume; done [shape=Msquare]
    start -> produce -> consume
    consume -> done [condition="context.ready=true"] }"""
P22 = (
    "digraph p { start [shape=Mdiamond]; done [shape=Msquare]; "
    + " ".join(f"n{i};" for i in range(12))
    + " start -> "
    + " -> ".join(f"n{i}" for i in range(12))
    + " -> done }"
)

EXECUTION = [
    ("P-07", P07, None, None, ["start", "a", "b", "c", "done"]),
    (
        "P-08",
        P08,
        {"work": [{"outcome": "fail", "failure_reason": "x"}]},
        None,
        ["start", "work", "gate", "bad", "done"],
    ),
    (
        "P-09",
        P09,
        {
            "flaky": [
                {"outcome": "fail", "failure_reason": "x"},
                {"outcome": "retry"},
                {"outcome": "success"},
            ]
        },
        None,
        ["start", "flaky", "done"],
    ),
    (
        "P-10",
        P10,
        {"impl": [{"outcome": "fail", "failure_reason": "red"}, {"outcome": "success"}]},
        None,
        ["start", "impl", "fix", "impl", "done"],
    ),
    ("P-11", P10, None, None, ["start", "impl", "done"]),
    ("P-12", P12, None, ["N"], ["start", "ask", "no", "done"]),
    ("P-13", P13, None, None, ["start", "s", "cond", "done"]),
    ("P-14", P14, None, None, ["start", "s", "heavy", "done"]),
    ("P-15", P15, None, None, ["start", "s", "alpha", "done"]),
    (
        "P-16",
        P16,
        {"produce": [{"outcome": "success", "context_updates": {"ready": True}}]},
        None,
        ["start", "produce", "consume", "done"],
    ),
    ("P-22", P22, None, None, ["start", *[f"n{i}" for i in range(12)], "done"]),
]


def _api_interviewer(answers: list[str] | None) -> Any:
    if answers is None:
        return None
    return attractor_trio.QueueInterviewer([attractor_trio.Answer(value=a) for a in answers])


@pytest.mark.parametrize(
    ("row", "dot", "steps", "answers", "expected"), EXECUTION, ids=[r[0] for r in EXECUTION]
)
async def test_execution_rows_through_the_api(
    tmp_path: Path,
    autojump_clock: Any,
    row: str,
    dot: str,
    steps: Any,
    answers: Any,
    expected: list[str],
) -> None:
    result = await run_dot(
        dot, tmp_path / "run", steps=steps, interviewer=_api_interviewer(answers)
    )
    assert result.status == "success", result.failure_reason
    assert list(result.completed_nodes) == expected


@pytest.mark.parametrize(
    ("row", "dot", "steps", "answers", "expected"), EXECUTION, ids=[r[0] for r in EXECUTION]
)
def test_execution_rows_through_the_cli(
    tmp_path: Path, row: str, dot: str, steps: Any, answers: Any, expected: list[str]
) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(dot)
    args = [
        "run",
        str(pipeline),
        "--simulate",
        "--logs-root",
        str(tmp_path / "run"),
        "--quiet",
        "--seed",
        "1",
    ]
    if steps:
        script = tmp_path / "sim.yaml"
        script.write_text(yaml.safe_dump({"nodes": steps}))
        args += ["--sim-script", str(script)]
    if answers:
        queue = tmp_path / "answers.txt"
        queue.write_text("\n".join(answers) + "\n")
        args += ["--interviewer", f"queue:{queue}"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["completed_nodes"] == expected


async def test_p17_checkpoint_resume_gives_the_same_result(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Interrupt after ``b``, resume: same completed nodes as a straight run, ``a`` not re-run."""
    import trio

    straight = await run_dot(P07, tmp_path / "straight")
    root = tmp_path / "run"
    with trio.move_on_after(60):
        await run_dot(P07, root, steps={"c": [{"stall": "forever"}]})
    (root / "final.json").unlink()
    resumed = await attractor_trio.resume(
        attractor_trio.load(P07),
        logs_root=root,
        backend=attractor_trio.SimulationBackend(),
        heartbeat_interval=None,
    )
    assert resumed.completed_nodes == straight.completed_nodes


P20 = """digraph p { start [shape=Mdiamond]; done [shape=Msquare]; par [shape=component]
    join [shape=tripleoctagon]; start -> par; par -> a -> join; par -> b -> join; join -> done }"""


async def test_p20_parallel_fan_out_and_fan_in(tmp_path: Path, autojump_clock: Any) -> None:
    result = await run_dot(P20, tmp_path / "run")
    assert list(result.completed_nodes) == ["start", "par", "join", "done"]
    context = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["context"]
    assert [r["id"] for r in context["parallel.results"]] == ["a", "b"]


def test_p20_through_the_cli(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(P20)
    args = ["run", str(pipeline), "--simulate", "--logs-root", str(tmp_path / "run"), "--quiet"]
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0


async def test_p21_custom_handler(tmp_path: Path, autojump_clock: Any) -> None:
    class Stamp:
        """Writes a custom attribute into the context."""

        async def execute(self, node: Any, context: Any, graph: Any, logs_root: Any) -> Any:
            return attractor_trio.Outcome("success", context_updates={"stamp": node.attrs["mark"]})

    dot = (
        'digraph p { start [shape=Mdiamond]; s [type="stamp", mark="X"]; done [shape=Msquare];'
        " start -> s -> done }"
    )
    result = await run_dot(
        dot, tmp_path / "run", handlers={"stamp": Stamp()}, require_backend=False
    )
    assert result.status == "success"
    checkpoint = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert checkpoint["context"]["stamp"] == "X"
