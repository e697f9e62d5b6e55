"""The engine through the Python API: parity rows P-07…P-17, P-21, P-22 and the run directory.

Simulated stages under ``autojump_clock``: retries, backoff and timeouts cost no real time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.errors import ConfigError, ValidationFailed
from attractor_trio.interviewers import Answer, QueueInterviewer
from attractor_trio.persist.checkpoint import CheckpointError, load_checkpoint
from attractor_trio.scopes import engine

from .helpers import assert_envelope_invariants, events, graph_of, named, read_json, run_dot

LINEAR = """
digraph linear {
    graph [goal="ship it"]
    start [shape=Mdiamond]
    a [prompt="do a for $goal"]
    b [prompt="do b"]
    c [prompt="do c"]
    done [shape=Msquare]
    start -> a -> b -> c -> done
}
"""


async def test_p07_linear_pipeline_end_to_end(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    result = await run_dot(LINEAR, root)
    assert result.status == "success"
    assert result.exit_path == "completed"
    assert result.completed_nodes == ("start", "a", "b", "c", "done")
    assert (root / "a" / "prompt.md").read_text() == "do a for ship it"  # nothing to carry yet
    assert (root / "b" / "prompt.md").read_text().endswith("do b")
    assert "- a: success" in (root / "b" / "prompt.md").read_text()  # compact preamble
    assert "[Simulated] Response for stage: a" in (root / "a" / "response.md").read_text()
    assert read_json(root / "a" / "status.json")["outcome"] == "success"
    final = read_json(root / "final.json")
    assert final["status"] == "success" and final["completed_nodes"][-1] == "done"
    manifest = read_json(root / "manifest.json")
    assert manifest["name"] == "linear" and manifest["goal"] == "ship it"
    assert (root / "graph.dot").read_text() == LINEAR
    assert not (root / "run.lock.json").exists()
    assert_envelope_invariants(root)


async def test_exit_node_runs_and_is_checkpointed(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    await run_dot(LINEAR, root)
    checkpoint = load_checkpoint(root)
    assert checkpoint.current_node == "done"
    assert (root / "done" / "status.json").exists()


BRANCH = """
digraph branch {
    start [shape=Mdiamond]
    implement [prompt="implement"]
    validate [prompt="validate"]
    gate [shape=diamond]
    exit [shape=Msquare]
    start -> implement -> validate -> gate
    gate -> exit [condition="outcome=success"]
    gate -> implement [condition="outcome!=success"]
}
"""


async def test_p08_conditional_branching_takes_both_paths(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    steps = {
        "validate": [
            {"outcome": "fail", "failure_reason": "2 tests failed"},
            {"outcome": "success"},
        ]
    }
    result = await run_dot(BRANCH, root, steps=steps)
    assert result.status == "success"
    assert result.completed_nodes == (
        "start",
        "implement",
        "validate",
        "gate",
        "implement",
        "validate",
        "gate",
        "exit",
    )
    hops = [(e["from_node"], e["to_node"], e["method"]) for e in named(root, "edge_selected")]
    assert ("gate", "implement", "condition") in hops
    assert ("gate", "exit", "condition") in hops


RETRY = """
digraph retry {
    start [shape=Mdiamond]
    flaky [prompt="x", max_retries=2]
    exit [shape=Msquare]
    start -> flaky -> exit
}
"""


async def test_p09_retry_on_failure(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    steps = {
        "flaky": [
            {"outcome": "fail", "failure_reason": "boom 1"},
            {"outcome": "retry", "failure_reason": "boom 2"},
            {"outcome": "success"},
        ]
    }
    result = await run_dot(RETRY, root, steps=steps)
    assert result.status == "success"
    attempts = [e for e in named(root, "stage_attempt_started") if e["node_id"] == "flaky"]
    assert [(e["attempt"], e["max_attempts"]) for e in attempts] == [(1, 3), (2, 3), (3, 3)]
    assert [e["attempt"] for e in named(root, "stage_retrying")] == [2, 3]
    assert read_json(root / "flaky" / "attempt-1" / "status.json")["failure_reason"] == "boom 1"
    assert read_json(root / "flaky" / "attempt-2" / "status.json")["failure_reason"] == "boom 2"
    assert read_json(root / "flaky" / "status.json")["outcome"] == "success"
    assert load_checkpoint(root).node_retries["flaky"] == 0


def _journal_creates_and_renames(monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """``create <path>`` for every exclusive create of a file that is not a temp (a file
    written in place), ``rename <path>`` for every ``os.replace``, relative to ``root``."""
    import os

    from attractor_trio.persist.atomic import is_temp_file_name

    journal: list[str] = []
    real_open, real_replace = os.open, os.replace

    def open_(path: str, flags: int, *args: Any) -> int:
        if flags & os.O_EXCL and not is_temp_file_name(os.path.basename(path)):
            journal.append(f"create {os.path.relpath(path, root)}")
        return real_open(path, flags, *args)

    def replace(source: str, target: str) -> None:
        journal.append(f"rename {os.path.relpath(target, root)}")
        real_replace(source, target)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", replace)
    return journal


async def test_only_the_attempt_that_made_the_stage_dir_writes_its_files_in_place(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """contract.md §2: ``prompt.md``, ``response.md`` and the first ``.attempt.json`` of the
    attempt whose ``mkdir`` made the stage dir are created in place; a retry in the same dir
    (its predecessor's files archived) writes them by temp and rename."""
    root = tmp_path / "run"
    journal = _journal_creates_and_renames(monkeypatch, root)
    steps = {"flaky": [{"outcome": "fail", "failure_reason": "boom 1"}, {}]}
    result = await run_dot(RETRY, root, steps=steps)
    monkeypatch.undo()
    assert result.status == "success"
    flaky = [entry for entry in journal if " flaky/" in entry]
    assert flaky == [
        "create flaky/prompt.md",  # attempt 1: its mkdir made the dir
        "create flaky/.attempt.json",
        "rename flaky/status.json",  # its outcome, on disk during the backoff
        "rename flaky/prompt.md",  # attempt 2: attempt 1's files are in attempt-1/
        "rename flaky/response.md",
        "rename flaky/.attempt.json",
        "rename flaky/status.json",
    ]
    assert (root / "flaky" / "attempt-1" / "prompt.md").read_text().endswith("x")
    assert read_json(root / "flaky" / "attempt-1" / ".attempt.json")["number"] == 1
    assert read_json(root / "flaky" / ".attempt.json")["number"] == 2
    assert (root / "flaky" / "response.md").read_text() == "[Simulated] Response for stage: flaky"


async def test_a_marked_start_is_created_in_place_and_the_finished_marker_replaces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool attempt marks its start too (it can adopt a running orphan): that first marker
    is created in place in the dir its ``mkdir`` made, the finished one replaces it by rename
    — a torn finished marker must never take the place of a whole start marker."""
    source = """digraph T {
        start [shape=Mdiamond]
        exit [shape=Msquare]
        t1 [shape=parallelogram, tool_command="true"]
        start -> t1 -> exit
    }"""
    root = tmp_path / "run"
    journal = _journal_creates_and_renames(monkeypatch, root)
    result = await run_dot(source, root)
    monkeypatch.undo()
    assert result.status == "success"
    markers = [entry for entry in journal if entry.endswith("t1/.attempt.json")]
    assert markers == ["create t1/.attempt.json", "rename t1/.attempt.json"]
    assert read_json(root / "t1" / ".attempt.json")["finished"] is True


async def test_checkpoint_stores_only_the_routing_fields_of_each_outcome(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The checkpoint is rewritten after every stage, so each outcome keeps only what resume
    routes on (empty fields left out) and the file is one unindented line; notes stay in the
    stage's status.json and context updates in the checkpoint's context."""
    root = tmp_path / "run"
    failing = {"outcome": "fail", "failure_reason": "tests failed: 3 of 9"}
    steps = {"c": [{**failing, "failure_class": "deterministic"}]}
    result = await run_dot(LINEAR, root, steps=steps)
    assert result.status == "fail"
    text = (root / "checkpoint.json").read_text()
    assert text.count("\n") == 1 and text.endswith("}\n")
    outcomes = json.loads(text)["node_outcomes"]
    assert outcomes["a"] == {"status": "success"}
    assert outcomes["c"] == {
        "status": "fail",
        "failure_reason": "tests failed: 3 of 9",
        "failure_class": "deterministic",
    }
    assert read_json(root / "a" / "status.json")["notes"]  # the notes are kept there


async def test_retries_exhausted_keep_the_raw_reason(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    steps = {"flaky": [{"outcome": "fail", "failure_reason": "compile error in main.c:12"}]}
    result = await run_dot(RETRY, root, steps=steps)
    assert result.status == "fail"
    assert result.exit_path == "stage_failed"
    assert result.failure_reason == "compile error in main.c:12"
    final = read_json(root / "final.json")
    assert final["failure_reason"] == "compile error in main.c:12"
    assert final["failure_signature"].startswith("flaky|")
    assert len(named(root, "stage_attempt_started")) == 1 + 3  # start, flaky x3


async def test_deterministic_failure_is_not_retried(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    steps = {
        "flaky": [{"outcome": "fail", "failure_reason": "bad", "failure_class": "deterministic"}]
    }
    result = await run_dot(RETRY, root, steps=steps)
    assert result.status == "fail"
    assert [e["node_id"] for e in named(root, "stage_retry_blocked")] == ["flaky"]
    assert len([e for e in named(root, "stage_attempt_started") if e["node_id"] == "flaky"]) == 1


GATE = """
digraph gate {
    start [shape=Mdiamond]
    implement [prompt="x", goal_gate=true, retry_target="fix"]
    fix [prompt="fix it"]
    exit [shape=Msquare]
    start -> implement
    implement -> exit
    fix -> implement
}
"""


async def test_p10_goal_gate_blocks_exit_and_jumps_to_retry_target(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    steps = {"implement": [{"outcome": "partial_success"}, {"outcome": "success"}]}
    # partial_success satisfies a gate; make the first visit fail instead but route onward.
    source = GATE.replace(
        "implement -> exit",
        'implement -> exit [condition="outcome=fail"]\n'
        '    implement -> exit [condition="outcome=success"]',
    )
    steps = {
        "implement": [{"outcome": "fail", "failure_reason": "tests red"}, {"outcome": "success"}]
    }
    result = await run_dot(source, root, steps=steps)
    assert result.status == "success"
    assert result.completed_nodes == ("start", "implement", "fix", "implement", "exit")
    methods = [e["method"] for e in named(root, "edge_selected")]
    assert "goal_gate_retry" in methods


async def test_p10_goal_gate_without_target_fails_with_cause(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    source = """
    digraph g {
        start [shape=Mdiamond]
        implement [prompt="x", goal_gate=true]
        exit [shape=Msquare]
        start -> implement
        implement -> exit [condition="outcome=fail"]
        implement -> exit [condition="outcome=success"]
    }"""
    steps = {"implement": [{"outcome": "fail", "failure_reason": "tests red"}]}
    result = await run_dot(source, root, steps=steps)
    assert result.status == "fail"
    assert result.exit_path == "goal_gate_unsatisfied"
    assert result.failure_reason == "tests red"
    assert_envelope_invariants(root)


async def test_p11_goal_gate_allows_exit_when_satisfied(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    result = await run_dot(GATE, root)
    assert result.status == "success"
    assert result.completed_nodes == ("start", "implement", "exit")


HUMAN = """
digraph human {
    start [shape=Mdiamond]
    review [shape=hexagon, label="Ship it?"]
    ship [prompt="ship"]
    fix [prompt="fix"]
    exit [shape=Msquare]
    start -> review
    review -> ship [label="[A] Approve"]
    review -> fix [label="[F] Fix"]
    ship -> exit
    fix -> review
}
"""


async def test_p12_human_gate_routes_on_selection(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    interviewer = QueueInterviewer([Answer(value="F"), Answer(value="A")])
    result = await run_dot(HUMAN, root, interviewer=interviewer)
    assert result.status == "success"
    assert result.completed_nodes == ("start", "review", "fix", "review", "ship", "exit")
    assert len(named(root, "interview_started")) == 2


EDGES = """
digraph edges {
    start [shape=Mdiamond]
    pick [prompt="x"]
    heavy [prompt="x"]
    cond [prompt="x"]
    alpha [prompt="x"]
    beta [prompt="x"]
    exit [shape=Msquare]
    start -> pick
    %s
    heavy -> exit
    cond -> exit
    alpha -> exit
    beta -> exit
}
"""


@pytest.mark.parametrize(
    ("edges", "expected", "method"),
    [
        # P-13: a matching condition beats a heavier unconditional edge
        (
            'pick -> heavy [weight=10]\n pick -> cond [condition="outcome=success"]',
            "cond",
            "condition",
        ),
        # P-14: weight breaks ties among unconditional edges
        ("pick -> alpha [weight=1]\n pick -> heavy [weight=5]", "heavy", "weight"),
        # P-15: lexical tiebreak as the final fallback
        ("pick -> beta\n pick -> alpha", "alpha", "lexical"),
    ],
)
async def test_p13_p14_p15_edge_selection(
    tmp_path: Path, autojump_clock: Any, edges: str, expected: str, method: str
) -> None:
    root = tmp_path / "run"
    source = EDGES % edges
    for unused in ("heavy", "cond", "alpha", "beta"):
        if f"-> {unused}" not in edges:
            source = source.replace(f"    {unused} -> exit\n", "").replace(
                f'    {unused} [prompt="x"]\n', ""
            )
    result = await run_dot(source, root)
    assert result.completed_nodes[2] == expected
    hop = next(e for e in named(root, "edge_selected") if e["from_node"] == "pick")
    assert hop["method"] == method


CONTEXT = """
digraph ctx {
    start [shape=Mdiamond]
    produce [prompt="x"]
    consume [prompt="x"]
    yes [prompt="x"]
    exit [shape=Msquare]
    start -> produce -> consume
    consume -> yes [condition="context.tests_passed=true"]
    yes -> exit
}
"""


async def test_p16_context_updates_visible_to_the_next_stage(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    steps = {"produce": [{"outcome": "success", "context_updates": {"tests_passed": True}}]}
    result = await run_dot(CONTEXT, root, steps=steps)
    assert result.status == "success"
    assert "yes" in result.completed_nodes
    assert load_checkpoint(root).context["tests_passed"] is True


async def test_no_route_fails_loudly(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    result = await run_dot(CONTEXT, root)  # tests_passed never set: no edge matches
    assert result.status == "fail"
    assert result.exit_path == "no_route"
    assert "consume" in result.failure_reason


async def test_p17_resume_after_interruption_gives_the_same_result(
    tmp_path: Path, autojump_clock: Any
) -> None:
    straight = await run_dot(LINEAR, tmp_path / "straight")
    root = tmp_path / "run"
    with trio.move_on_after(10):
        await run_dot(LINEAR, root, steps={"c": [{"stall": "forever"}]})
    assert read_json(root / "final.json")["status"] == "canceled"
    (root / "final.json").unlink()  # as if the process had died before finalizing
    result = await engine.resume(
        graph_of(LINEAR), logs_root=root, backend=engine_sim(), heartbeat_interval=None
    )
    assert result.status == straight.status == "success"
    assert result.completed_nodes == straight.completed_nodes
    starts = [e["node_id"] for e in named(root, "stage_attempt_started")]
    assert starts.count("a") == 1 and starts.count("b") == 1  # not re-executed
    assert named(root, "pipeline_started")[-1]["resumed"] is True


class _StallingStart:
    """A start stage that never finishes: the run dies before its first checkpoint."""

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover


async def test_a_run_that_died_before_its_first_checkpoint_resumes_from_the_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Killed between ``manifest.json`` and the first checkpoint, a run is neither new (``run``
    refuses the directory) nor resumable from a checkpoint; resume starts it from the start
    node with the context it was started with, instead of leaving it stuck."""
    root = tmp_path / "run"
    with trio.move_on_after(10):
        await run_dot(LINEAR, root, handlers={"start": _StallingStart()}, context={"ticket": "T-9"})
    (root / "final.json").unlink()  # as if the process had died before finalizing
    assert not (root / "checkpoint.json").exists()
    result = await engine.resume(
        graph_of(LINEAR), logs_root=root, backend=engine_sim(), heartbeat_interval=None
    )
    assert result.status == "success"
    assert result.completed_nodes == ("start", "a", "b", "c", "done")
    assert result.run_id == read_json(root / "manifest.json")["run_id"]
    context = load_checkpoint(root).context
    assert context["ticket"] == "T-9" and context["graph.goal"] == "ship it"
    assert named(root, "pipeline_started")[-1]["resumed"] is True


async def test_a_manifest_without_its_start_context_is_not_resumed_from_the_start(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """An older manifest does not record the starting context; guessing it would silently drop
    ``--set`` values, so resume refuses as before."""
    root = tmp_path / "run"
    with trio.move_on_after(10):
        await run_dot(LINEAR, root, handlers={"start": _StallingStart()})
    (root / "final.json").unlink()
    doc = read_json(root / "manifest.json")
    del doc["context"]
    (root / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        await engine.resume(graph_of(LINEAR), logs_root=root, backend=engine_sim())


def engine_sim() -> Any:
    from .helpers import sim

    return sim()


async def test_resuming_a_finished_run_is_a_no_op(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    await run_dot(LINEAR, root)
    before = (root / "progress.ndjson").read_text()
    result = await engine.resume(graph_of(LINEAR), logs_root=root, backend=engine_sim())
    assert result.status == "success"
    assert (root / "progress.ndjson").read_text() == before


class Doubler:
    """A custom handler (P-21): reads a custom attribute, writes context."""

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        value = int(node.attrs["custom_attr"]) * 2
        return Outcome(StageStatus.SUCCESS, context_updates={"doubled": value})


async def test_p21_custom_handler_registration(tmp_path: Path, autojump_clock: Any) -> None:
    source = """
    digraph custom {
        start [shape=Mdiamond]
        my_node [type="my_custom_type", shape=box, custom_attr="21"]
        exit [shape=Msquare]
        start -> my_node -> exit
    }"""
    engine.register_handler("my_custom_type", Doubler())
    try:
        root = tmp_path / "run"
        result = await run_dot(source, root, require_backend=False)
    finally:
        engine.clear_handlers()
    assert result.status == "success"
    assert load_checkpoint(root).context["doubled"] == 42


async def test_p22_pipeline_with_many_nodes(tmp_path: Path, autojump_clock: Any) -> None:
    names = [f"s{i}" for i in range(15)]
    body = "\n".join(f'{n} [prompt="{n}"]' for n in names)
    chain = " -> ".join(["start", *names, "exit"])
    source = f"digraph many {{ start [shape=Mdiamond]\n exit [shape=Msquare]\n{body}\n{chain} }}"
    result = await run_dot(source, tmp_path / "run")
    assert result.status == "success"
    assert len(result.completed_nodes) == 17


async def test_handler_exception_becomes_fail(tmp_path: Path, autojump_clock: Any) -> None:
    class Broken:
        async def execute(self, *args: Any) -> Outcome:
            raise KeyError("missing")

    root = tmp_path / "run"
    source = LINEAR.replace('b [prompt="do b"]', 'b [type="broken"]')
    result = await run_dot(source, root, handlers={"broken": Broken()})
    assert result.status == "fail"
    assert "KeyError" in result.failure_reason


async def test_node_timeout_fails_the_attempt_as_transient(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    source = LINEAR.replace('b [prompt="do b"]', 'b [prompt="b", timeout="5s"]')
    result = await run_dot(source, root, steps={"b": [{"stall": "forever"}]})
    assert result.status == "fail"
    assert "timed out after 5s" in result.failure_reason
    finished = [e for e in named(root, "stage_attempt_finished") if e["node_id"] == "b"]
    assert finished[0]["failure_class"] == "transient_infra"


async def test_caller_cancellation_still_writes_final_json(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    with trio.move_on_after(30):
        await run_dot(LINEAR, root, steps={"b": [{"stall": "forever"}]})
    final = read_json(root / "final.json")
    assert final["status"] == "canceled" and final["exit_path"] == "canceled"
    exits = named(root, "cancellation_exit")
    assert [e["node_id"] for e in exits] == ["b"]
    assert_envelope_invariants(root)
    assert not (root / "run.lock.json").exists()


async def test_watchdog_fails_a_silent_run(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    result = await run_dot(LINEAR, root, steps={"b": [{"stall": "forever"}]}, stall_timeout=60)
    assert result.status == "fail"
    assert result.exit_path == "watchdog"
    assert result.failure_class == "transient_infra"
    [timeout] = named(root, "watchdog_timeout")
    assert [a["node_id"] for a in timeout["active_attempts"]] == ["b"]
    # no attempt starts after the watchdog fired
    after = [e for e in events(root) if e["seq"] > timeout["seq"]]
    assert not [e for e in after if e["event"] == "stage_attempt_started"]


async def test_working_stage_keeps_the_watchdog_quiet(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    result = await run_dot(LINEAR, root, steps={"b": [{"delay": "10m"}]}, stall_timeout=60)
    assert result.status == "success"


async def test_heartbeats_stop_with_their_attempt(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    await run_dot(LINEAR, root, steps={"b": [{"delay": "95s"}]}, heartbeat_interval=10)
    beats = named(root, "stage_heartbeat")
    assert {b["node_id"] for b in beats} == {"b"}
    assert 8 <= len(beats) <= 10
    assert_envelope_invariants(root)


class _SpawnCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


@pytest.mark.parametrize("stages", [5, 25])
async def test_heartbeats_take_one_task_per_run_not_one_per_attempt(
    tmp_path: Path, autojump_clock: Any, stages: int
) -> None:
    """Issue #22: a task (and a nursery) per attempt for its heartbeat was 4 to 9 % of the trio
    thread in a 1,000-branch fan-out; the run's one heartbeat task beats for every attempt."""
    ids = [f"s{i}" for i in range(stages)]
    dot = (
        "digraph many { start [shape=Mdiamond]; done [shape=Msquare]; "
        + " ".join(f'{i} [prompt="p"];' for i in ids)
        + " start -> " + " -> ".join(ids) + " -> done }"
    )  # fmt: skip
    spawned = {}
    for interval in (None, 10):
        counter = _SpawnCounter()
        trio.lowlevel.add_instrument(counter)
        try:
            await run_dot(dot, tmp_path / f"run-{interval}", heartbeat_interval=interval)
        finally:
            trio.lowlevel.remove_instrument(counter)
        spawned[interval] = counter.spawned
    assert spawned[10] == spawned[None] + 1


async def test_codergen_without_backend_is_refused_before_creating_anything(
    tmp_path: Path,
) -> None:
    root = tmp_path / "run"
    with pytest.raises(ConfigError, match="--simulate"):
        await engine.run(graph_of(LINEAR), logs_root=root)
    assert not root.exists()


async def test_invalid_graph_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with pytest.raises(ValidationFailed):
        await engine.run(graph_of("digraph g { a -> b }"), logs_root=root, backend=engine_sim())
    assert not root.exists()


async def test_loop_restart_uses_fresh_stage_dirs_and_is_bounded(
    tmp_path: Path, autojump_clock: Any
) -> None:
    source = """
    digraph restart {
        graph [max_restarts=2, loop_restart_signature_limit=10]
        start [shape=Mdiamond]
        work [prompt="x"]
        exit [shape=Msquare]
        start -> work
        work -> exit [condition="outcome=success"]
        work -> work [condition="outcome=fail", loop_restart=true]
    }"""
    root = tmp_path / "run"
    steps = {
        "work": [
            {"outcome": "fail", "failure_reason": "connection reset by peer"},
            {"outcome": "success"},
        ]
    }
    result = await run_dot(source, root, steps=steps)
    assert result.status == "success"
    assert (root / "restart-1" / "work" / "status.json").exists()
    [restart] = named(root, "loop_restart")
    assert restart["restart"] == 1 and restart["new_logs_root"].endswith("restart-1")

    root2 = tmp_path / "run2"
    result = await run_dot(
        source,
        root2,
        steps={
            "work": [{"outcome": "fail", "failure_reason": "x", "failure_class": "transient_infra"}]
        },
    )
    assert result.status == "fail"
    assert "max_restarts" in result.failure_reason
    assert len(named(root2, "loop_restart")) == 2


async def test_resume_repairs_a_missing_terminal_event(tmp_path: Path, autojump_clock: Any) -> None:
    """A crash between final.json and the terminal event: resume writes the event, once."""
    root = tmp_path / "run"
    await run_dot(LINEAR, root)
    lines = (root / "progress.ndjson").read_text().splitlines()
    (root / "progress.ndjson").write_text("\n".join(lines[:-1]) + "\n")
    await engine.resume(graph_of(LINEAR), logs_root=root, backend=engine_sim())
    await engine.resume(graph_of(LINEAR), logs_root=root, backend=engine_sim())
    assert_envelope_invariants(root)
    assert events(root)[-1]["event"] == "pipeline_completed"


async def test_handlers_reach_the_artifact_store(tmp_path: Path, autojump_clock: Any) -> None:
    """Spec S5.5: large outputs go to the store; file-backed past the threshold."""
    from attractor_trio.handlers.base import current_attempt

    class Producer:
        async def execute(
            self, node: Node, context: Context, graph: Graph, logs_root: Path
        ) -> Outcome:
            attempt = current_attempt()
            assert attempt is not None
            attempt.artifacts.store("big", "big blob", "x" * 200_000)
            attempt.artifacts.store("small", "small", {"k": 1})
            return Outcome(StageStatus.SUCCESS)

    root = tmp_path / "run"
    source = LINEAR.replace('b [prompt="do b"]', 'b [type="producer"]')
    await run_dot(source, root, handlers={"producer": Producer()})
    assert (root / "artifacts" / "big.json").exists()
    assert not (root / "artifacts" / "small.json").exists()
    assert named(root, "pipeline_completed")[0]["artifact_count"] == 2


async def test_resume_degrades_full_fidelity_once(tmp_path: Path, autojump_clock: Any) -> None:
    """Spec S5.3-06: sessions do not survive a crash, so the first resumed stage gets a summary."""
    source = LINEAR.replace(
        'graph [goal="ship it"]', 'graph [goal="ship it", default_fidelity="full"]'
    )
    root = tmp_path / "run"
    with trio.move_on_after(10):
        await run_dot(source, root, steps={"b": [{"stall": "forever"}]})
    (root / "final.json").unlink()
    seen: list[str] = []

    class Spy:
        async def run(self, node: Node, prompt: str, context: Context) -> str:
            seen.append(f"{node.id}:{context.get('internal.fidelity')}")
            return "ok"

    await engine.resume(graph_of(source), logs_root=root, backend=Spy(), heartbeat_interval=None)
    assert seen == ["b:summary:high", "c:full"]


async def test_human_gate_without_an_interviewer_fails_clearly(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    result = await run_dot(HUMAN, root)
    assert result.status == "fail"
    assert "not a TTY" in result.failure_reason and "--auto-approve" in result.failure_reason


async def test_unregistered_explicit_type_is_refused(tmp_path: Path) -> None:
    source = LINEAR.replace('b [prompt="do b"]', 'b [type="no_such_handler"]')
    with pytest.raises(ConfigError, match="no_such_handler"):
        await run_dot(source, tmp_path / "run")
    assert not (tmp_path / "run").exists()


async def test_max_node_visits_bounds_a_loop(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph loop { graph [max_node_visits=3, loop_restart_signature_limit=0]
        start [shape=Mdiamond]; exit [shape=Msquare]; work [prompt="x"]
        start -> work
        work -> work [condition="outcome=fail"]
        work -> exit [condition="outcome=success"] }"""
    root = tmp_path / "run"
    result = await run_dot(
        source, root, steps={"work": [{"outcome": "fail", "failure_reason": "nope"}]}
    )
    assert result.status == "fail" and result.exit_path == "visit_limit"
    assert [e["node_id"] for e in named(root, "stage_attempt_started")].count("work") == 3


async def test_graph_attributes_are_mirrored_into_the_context(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    await run_dot(LINEAR, root, context={"ticket": "ABC-1"})
    context = load_checkpoint(root).context
    assert context["graph.goal"] == "ship it"
    assert context["ticket"] == "ABC-1"
    assert context["internal.run_id"] == read_json(root / "manifest.json")["run_id"]


async def test_internal_error_still_finalizes(
    tmp_path: Path, autojump_clock: Any, monkeypatch: Any
) -> None:
    """A bug in the engine: final.json says internal_error and the traceback is kept."""
    from attractor_trio.scopes import traversal

    def broken_route(*args: Any) -> Any:
        raise RuntimeError("routing bug")

    monkeypatch.setattr(traversal, "route", broken_route)
    root = tmp_path / "run"
    result = await run_dot(LINEAR, root)
    assert result.exit_path == "internal_error"
    assert "routing bug" in (root / "internal-error.txt").read_text()
    assert read_json(root / "final.json")["exit_path"] == "internal_error"
    assert_envelope_invariants(root)


async def test_heartbeats_do_not_keep_a_stalled_run_alive(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    result = await run_dot(
        LINEAR, root, steps={"b": [{"stall": "forever"}]}, stall_timeout=60, heartbeat_interval=5
    )
    assert result.exit_path == "watchdog"
    assert len(named(root, "stage_heartbeat")) >= 10
    assert_envelope_invariants(root)


async def test_goal_gate_inside_a_branch_blocks_exit(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        gated [prompt="x", goal_gate=true]; other [prompt="y"]
        start -> par; par -> gated -> join; par -> other -> join; join -> done }"""
    root = tmp_path / "run"
    result = await run_dot(
        source, root, steps={"gated": [{"outcome": "fail", "failure_reason": "red"}]}
    )
    assert result.status == "fail" and result.exit_path == "goal_gate_unsatisfied"
    assert result.failure_reason == "red"


async def test_watchdog_pauses_while_a_human_gate_waits(
    tmp_path: Path, autojump_clock: Any
) -> None:
    from attractor_trio.interviewers import CallbackInterviewer

    async def slow_person(question: Any) -> Answer:
        await trio.sleep(20 * 60)  # a person taking 20 minutes; the stall timeout is 1 minute
        return Answer(value="A")

    root = tmp_path / "run"
    result = await run_dot(
        HUMAN, root, interviewer=CallbackInterviewer(slow_person), stall_timeout=60
    )
    assert result.status == "success"
    assert named(root, "watchdog_timeout") == []


async def test_status_saying_canceled_fails_without_retry(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """contract.md §9: only real cancellation makes a run canceled."""
    root = tmp_path / "run"
    steps = {
        "flaky": [
            {"outcome": "fail", "failure_reason": "user aborted", "failure_class": "canceled"}
        ]
    }
    result = await run_dot(RETRY, root, steps=steps)
    assert result.status == "fail" and result.exit_path == "stage_failed"
    assert len([e for e in named(root, "stage_attempt_started") if e["node_id"] == "flaky"]) == 1


async def test_fan_in_asks_the_backend_to_rank(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph f { start [shape=Mdiamond]; done [shape=Msquare]; par [shape=component]
        join [shape=tripleoctagon, prompt="Pick the most thorough review"]
        start -> par; par -> a -> join; par -> b -> join; par -> c -> join; join -> done }"""
    asked: list[str] = []

    class Ranker:
        async def run(self, node: Node, prompt: str, context: Context) -> str:
            if node.id == "join":
                asked.append(prompt)
                return "c\nbecause it covers the edge cases"
            return f"review by {node.id}"

    root = tmp_path / "run"
    await run_dot(source, root, backend=Ranker())
    assert "Pick the most thorough review" in asked[0] and "- a: success" in asked[0]
    context = load_checkpoint(root).context
    assert context["parallel.fan_in.best_id"] == "c"


def test_the_attempt_marker_is_replaced_atomically_never_rewritten_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``.attempt.json`` is a JSON file in LOGS_ROOT like any other (contract.md §2): a SIGKILL
    between truncating it and writing it again used to leave it empty. Replaced by rename, the
    file's inode changes with every write, and a failed write leaves the old marker whole."""
    from attractor_trio.persist import atomic
    from attractor_trio.scopes import attempt as attempt_module

    stage_dir = tmp_path / "t1"
    first_marker = attempt_module._Marker("t1", 1, 1, "t1-1-aaa", "")
    first_marker.write(stage_dir, finished=False)
    marker = stage_dir / ".attempt.json"
    first = marker.stat().st_ino
    first_marker.write(stage_dir, finished=True)
    assert marker.stat().st_ino != first
    assert read_json(marker)["finished"] is True

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_all", disk_full)
    with pytest.raises(OSError):
        attempt_module._Marker("t1", 2, 2, "t1-2-bbb", "").write(stage_dir, finished=False)
    assert read_json(marker) == {
        "node_id": "t1",
        "number": 1,
        "attempt": 1,
        "attempt_id": "t1-1-aaa",
        "epoch": "",
        "finished": True,
        "interrupted": False,
    }
    assert sorted(p.name for p in stage_dir.iterdir()) == [".attempt.json"]


async def test_long_runs_keep_200_summary_entries_and_count_them_all(tmp_path: Path) -> None:
    stages = 205
    chain = " -> ".join(f"s{i}" for i in range(stages))
    source = f"digraph G {{ start [shape=Mdiamond] exit [shape=Msquare] start -> {chain} -> exit }}"
    result = await run_dot(source, tmp_path / "run")
    assert result.status == "success"
    context = load_checkpoint(tmp_path / "run").context
    assert len(context["internal.completed_summary"]) == 200
    assert context["internal.completed_summary"][-1][0] == "exit"
    assert context["internal.completed_count"] == stages + 1  # exit too; start is not listed
    prompt = (tmp_path / "run" / f"s{stages - 1}" / "prompt.md").read_text()
    assert f"Completed stages ({stages - 1}):" in prompt  # s0..s203 before s204
    assert f"- ({stages - 1 - 20} earlier stages omitted)" in prompt  # compact shows 20
