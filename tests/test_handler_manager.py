"""The manager loop handler (spec §4.11): a stage supervising a real child run.

The child is an actual :func:`attractor_trio.scopes.engine.run` of simulated codergen stages (sim
``delay``/``stall`` steps), all under ``autojump_clock``: poll intervals, stage work and stalls
cost no real time, and ``trio.current_time()`` tells exactly when the manager returned.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.dot.pipeline import load
from attractor_trio.handlers.base import AttemptInfo, reset_attempt, set_attempt
from attractor_trio.persist.final import FinalRecord, read_final
from attractor_trio.persist.lock import acquire_run_lock
from attractor_trio.scopes import engine
from attractor_trio.scopes.manager import (
    STEER_UNSUPPORTED,
    ChildSnapshot,
    ManagerConfigError,
    ManagerLoopHandler,
    ManagerSettings,
    child_outcome,
    child_snapshot,
    fold_event,
    read_settings,
)
from tests.helpers import named, sim

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CHILD_DOT = """
digraph Child {
    graph [goal="build it"]
    start [shape=Mdiamond]
    exit  [shape=Msquare]
    plan [prompt="plan"]
    implement [prompt="implement"]
    start -> plan -> implement -> exit
}
"""


class Recorder:
    """Stands in for the engine's attempt plumbing: records events and progress times."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.progress_times: list[float] = []

    def emit(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def progress(self) -> None:
        self.progress_times.append(trio.current_time())

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    rec = Recorder()
    workdir = tmp_path / "work"
    workdir.mkdir()
    info = AttemptInfo(
        run_id="run-7",
        node_id="supervise",
        attempt=1,
        max_attempts=1,
        attempt_id="supervise-1-abc",
        logs_root=tmp_path / "logs",
        stage_dir=tmp_path / "logs" / "supervise",
        workdir=workdir,
        emit=rec.emit,
        progress=rec.progress,
        kill_grace=0.1,
    )
    token = set_attempt(info)
    yield rec
    reset_attempt(token)


def parent_graph(tmp_path: Path, node: Node, child_source: str = CHILD_DOT) -> Graph:
    """A parent graph 'loaded' from tmp_path/parent.dot with child.dot beside it."""
    (tmp_path / "child.dot").write_text(child_source)
    return Graph(
        "Parent",
        attrs={"stack.child_dotfile": "child.dot"},
        nodes={node.id: node},
        path=str(tmp_path / "parent.dot"),
    )


def manager(**attrs: str) -> Node:
    return Node("supervise", {"shape": "house", "manager.poll_interval": "1s", **attrs})


async def supervise(
    tmp_path: Path,
    node: Node,
    steps: dict[str, Any] | None = None,
    *,
    graph: Graph | None = None,
    context: Context | None = None,
) -> Outcome:
    graph = graph if graph is not None else parent_graph(tmp_path, node)
    handler = ManagerLoopHandler(sim(steps), None)
    return await handler.execute(node, context or Context(), graph, tmp_path / "logs")


def child_final(tmp_path: Path) -> FinalRecord:
    final = read_final(tmp_path / "logs" / "supervise" / "child")
    assert final is not None, "the child must always finalize"
    return final


# ----------------------------------------------------------------------- child ends


async def test_child_success_is_manager_success(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    outcome = await supervise(tmp_path, manager(), {"plan": {"delay": "3s"}})

    assert outcome.status is StageStatus.SUCCESS
    assert outcome.notes == "Child completed"
    updates = outcome.context_updates
    assert updates["stack.child.status"] == "completed"
    assert updates["stack.child.outcome"] == "success"
    assert updates["stack.child.completed_nodes"] == 4  # start, plan, implement, exit
    assert updates["stack.child.current_node"] == "exit"
    assert updates["stack.child.logs_root"] == str(tmp_path / "logs" / "supervise" / "child")
    final = child_final(tmp_path)
    assert final.status == "success"
    assert final.run_id == "run-7-child"
    assert (tmp_path / "logs" / "supervise" / "child" / "plan" / "response.md").exists()
    started = recorder.named("manager_child_started")
    assert started and started[0]["child_dotfile"] == str((tmp_path / "child.dot").resolve())


async def test_child_failure_reason_and_class_propagate_raw(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    reason = "2 tests failed: test_parse, test_render"
    steps = {
        "implement": {"outcome": "fail", "failure_reason": reason, "failure_class": "deterministic"}
    }

    outcome = await supervise(tmp_path, manager(), steps)

    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason == reason
    assert outcome.failure_class == "deterministic"
    assert outcome.context_updates["stack.child.status"] == "failed"
    assert outcome.context_updates["stack.child.outcome"] == "fail"
    assert outcome.context_updates["stack.child.failure_reason"] == reason
    assert child_final(tmp_path).failure_reason == reason


async def test_manager_wakes_as_soon_as_the_child_finishes(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.poll_interval": "45s"})

    outcome = await supervise(tmp_path, node, {"plan": {"delay": "3s"}})

    assert outcome.status is StageStatus.SUCCESS
    assert trio.current_time() < 4.0, "must not sleep out the 45s poll interval"
    assert [c["child_status"] for c in recorder.named("manager_cycle")] == [
        "running",
        "completed",
    ]


async def test_child_that_finishes_during_the_last_wait_reports_its_result(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.poll_interval": "10s", "manager.max_cycles": "1"})

    outcome = await supervise(tmp_path, node, {"plan": {"delay": "3s"}})

    assert outcome.status is StageStatus.SUCCESS
    assert outcome.notes == "Child completed"


# ----------------------------------------------------------------------- the manager ends it


async def test_stop_condition_cancels_the_child_and_succeeds(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.stop_condition": "context.stack.child.current_node=implement"})
    steps = {"plan": {"delay": "5s"}, "implement": {"delay": "1000s"}}

    outcome = await supervise(tmp_path, node, steps)

    assert outcome.status is StageStatus.SUCCESS
    assert outcome.notes == "Stop condition satisfied"
    assert trio.current_time() < 10
    final = child_final(tmp_path)
    assert final.status == "canceled"
    assert "stop condition satisfied" in (final.failure_reason or "")
    assert outcome.context_updates["stack.child.outcome"] == "canceled"


async def test_stop_condition_sees_the_parent_context(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.stop_condition": "context.abort=true"})
    context = Context({"abort": True})

    outcome = await supervise(tmp_path, node, {"plan": {"stall": "forever"}}, context=context)

    assert outcome.notes == "Stop condition satisfied"
    assert child_final(tmp_path).status == "canceled"


async def test_max_cycles_exhausted_cancels_the_child_and_fails(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.poll_interval": "10s", "manager.max_cycles": "3"})

    outcome = await supervise(tmp_path, node, {"plan": {"stall": "forever"}})

    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason.startswith("Max cycles exceeded")
    assert "node 'plan'" in outcome.failure_reason
    assert outcome.failure_class == "budget_exhausted"
    assert 30 <= trio.current_time() < 31
    assert len(recorder.named("manager_cycle")) == 3
    assert child_final(tmp_path).status == "canceled"


async def test_without_wait_cycles_do_not_sleep(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.actions": "observe", "manager.max_cycles": "5"})

    outcome = await supervise(tmp_path, node, {"plan": {"stall": "forever"}})

    assert outcome.failure_reason.startswith("Max cycles exceeded")
    assert trio.current_time() < 1


async def test_cancelling_the_parent_cancels_the_child(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    with trio.move_on_after(5) as scope:
        await supervise(tmp_path, manager(), {"plan": {"stall": "forever"}})

    assert scope.cancelled_caught
    final = child_final(tmp_path)
    assert final.status == "canceled"
    assert final.exit_path == "canceled"


# ----------------------------------------------------------------------- progress relay


async def test_child_work_is_the_managers_progress(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.poll_interval": "60s"})

    await supervise(tmp_path, node, {"plan": {"delay": "10s"}})

    during = [t for t in recorder.progress_times if t <= 10]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert during and during[-1] >= 9, "progress must be relayed while the child works"
    assert max(gaps) <= 1.01, "no silence longer than the relay slice while the child works"


async def test_a_stalled_child_does_not_keep_the_manager_alive(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.poll_interval": "5s", "manager.max_cycles": "6"})

    await supervise(tmp_path, node, {"plan": {"stall": "forever"}})

    # The child's start is seen at the latest by the second cycle (t=5); then it is silent,
    # and so must the manager be until it cancels the child at t=30.
    assert recorder.progress_times
    assert max(t for t in recorder.progress_times if t < 30) <= 5, "stalled child: no progress"


async def test_watchdog_spares_a_supervisor_whose_child_works(
    tmp_path: Path, autojump_clock: Any
) -> None:
    graph = load(EXAMPLES / "supervisor.dot")
    backend = sim({"implement": {"delay": "40s"}})

    result = await engine.run(
        graph.evolve(
            nodes={
                **graph.nodes,
                "supervise": _with(graph.nodes["supervise"], **{"manager.poll_interval": "60s"}),
            }
        ),
        logs_root=tmp_path / "logs",
        backend=backend,
        handlers={"stack.manager_loop": ManagerLoopHandler(backend, None)},
        heartbeat_interval=None,
        workdir=tmp_path,
        stall_timeout=5,
    )

    assert result.status == "success", result.failure_reason


async def test_watchdog_stops_a_supervisor_whose_child_stalls(
    tmp_path: Path, autojump_clock: Any
) -> None:
    graph = load(EXAMPLES / "supervisor.dot")
    backend = sim({"implement": {"stall": "forever"}})

    result = await engine.run(
        graph,
        logs_root=tmp_path / "logs",
        backend=backend,
        handlers={"stack.manager_loop": ManagerLoopHandler(backend, None)},
        heartbeat_interval=None,
        workdir=tmp_path,
        stall_timeout=5,
    )

    assert result.exit_path == "watchdog"
    child = read_final(tmp_path / "logs" / "supervise" / "child")
    assert child is not None and child.exit_path == "watchdog"  # stopped by the parent's


def _with(node: Node, **attrs: str) -> Node:
    return Node(node.id, {**node.attrs, **attrs}, node.subgraph_classes, node.line, node.col)


# ----------------------------------------------------------------------- actions


async def test_steer_is_recorded_as_unsupported_not_ignored(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager(**{"manager.actions": "observe,steer,wait"})

    outcome = await supervise(tmp_path, node)

    assert outcome.status is StageStatus.SUCCESS
    assert recorder.named("manager_steer_skipped") == [
        {"node_id": "supervise", "reason": STEER_UNSUPPORTED}
    ]
    assert "steer" in outcome.notes and "not supported" in outcome.notes


async def test_without_observe_the_context_is_left_alone(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    outcome = await supervise(tmp_path, manager(**{"manager.actions": "wait"}))

    assert outcome.status is StageStatus.SUCCESS
    assert outcome.context_updates == {}


# ----------------------------------------------------------------------- bad configuration


async def test_missing_child_file_fails_clearly(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    node = manager()
    graph = parent_graph(tmp_path, node).evolve(attrs={"stack.child_dotfile": "nope.dot"})

    outcome = await supervise(tmp_path, node, graph=graph)

    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_class == "structural"
    assert str(tmp_path / "nope.dot") in outcome.failure_reason
    assert "does not exist" in outcome.failure_reason
    assert not (tmp_path / "logs" / "supervise" / "child").exists()


async def test_no_child_dotfile_fails_clearly(tmp_path: Path, recorder: Recorder) -> None:
    node = manager()
    graph = parent_graph(tmp_path, node).evolve(attrs={})

    outcome = await supervise(tmp_path, node, graph=graph)

    assert outcome.status is StageStatus.FAIL
    assert "stack.child_dotfile" in outcome.failure_reason


async def test_node_attribute_overrides_the_graph_child_dotfile(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    (tmp_path / "other.dot").write_text(CHILD_DOT.replace("implement", "build"))
    node = manager(**{"stack.child_dotfile": "other.dot"})

    outcome = await supervise(tmp_path, node)

    assert outcome.status is StageStatus.SUCCESS
    assert "build" in child_final(tmp_path).completed_nodes


async def test_unparsable_child_names_file_line_and_column(
    tmp_path: Path, recorder: Recorder
) -> None:
    node = manager()

    outcome = await supervise(
        tmp_path, node, graph=parent_graph(tmp_path, node, "digraph {\n a -> \n}")
    )

    assert outcome.failure_class == "structural"
    assert f"{tmp_path / 'child.dot'}:3:" in outcome.failure_reason


async def test_invalid_child_lists_its_validation_errors(
    tmp_path: Path, recorder: Recorder
) -> None:
    node = manager()
    no_start = "digraph C { exit [shape=Msquare]; work -> exit }"

    outcome = await supervise(tmp_path, node, graph=parent_graph(tmp_path, node, no_start))

    assert outcome.failure_class == "structural"
    assert "child pipeline is invalid" in outcome.failure_reason
    assert str(tmp_path / "child.dot") in outcome.failure_reason
    assert "start" in outcome.failure_reason


async def test_a_pipeline_cannot_supervise_itself(tmp_path: Path, recorder: Recorder) -> None:
    node = manager()
    graph = parent_graph(tmp_path, node).evolve(attrs={"stack.child_dotfile": "parent.dot"})

    outcome = await supervise(tmp_path, node, graph=graph)

    assert outcome.failure_class == "structural"
    assert "cannot supervise itself" in outcome.failure_reason


async def test_supervision_cycles_are_refused_at_any_depth(
    tmp_path: Path, autojump_clock: Any
) -> None:
    a_dot = 'digraph A { graph [stack.child_dotfile="b.dot"]; s [shape=Mdiamond];'
    a_dot += ' m [shape=house, manager.poll_interval="1s"]; e [shape=Msquare]; s -> m -> e }'
    (tmp_path / "a.dot").write_text(a_dot)
    (tmp_path / "b.dot").write_text(a_dot.replace("A {", "B {").replace("b.dot", "a.dot"))
    backend = sim()

    result = await engine.run(
        load(tmp_path / "a.dot"),
        logs_root=tmp_path / "logs",
        backend=backend,
        handlers={"stack.manager_loop": ManagerLoopHandler(backend)},
        heartbeat_interval=None,
        workdir=tmp_path,
    )

    assert result.status == "fail"
    assert "cannot supervise itself" in result.failure_reason
    assert str(tmp_path / "a.dot") in result.failure_reason
    grandchild = tmp_path / "logs" / "m" / "child" / "m" / "child"
    assert not grandchild.exists(), "the cycle must be refused before a grandchild starts"


async def test_child_that_cannot_start_fails_the_manager(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    held = tmp_path / "logs" / "supervise" / "child"
    held.mkdir(parents=True)
    acquire_run_lock(held, "someone-else")  # a live owner: this very process

    outcome = await supervise(tmp_path, manager())

    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_class == "structural"
    assert outcome.failure_reason.startswith(f"child pipeline {tmp_path / 'child.dot'} could not")


async def test_child_workdir_must_exist(tmp_path: Path, recorder: Recorder) -> None:
    node = manager(**{"stack.child_workdir": "missing"})

    outcome = await supervise(tmp_path, node)

    assert outcome.failure_class == "structural"
    assert "stack.child_workdir" in outcome.failure_reason


async def test_bad_manager_attribute_fails_before_starting_a_child(
    tmp_path: Path, recorder: Recorder
) -> None:
    outcome = await supervise(tmp_path, manager(**{"manager.poll_interval": "soon"}))

    assert outcome.failure_class == "structural"
    assert "manager.poll_interval" in outcome.failure_reason
    assert not (tmp_path / "logs" / "supervise" / "child").exists()


# ----------------------------------------------------------------------- observe-only mode


async def test_observes_an_existing_child_run(
    tmp_path: Path, recorder: Recorder, autojump_clock: Any
) -> None:
    child_root = tmp_path / "work" / "elsewhere"
    await engine.run(
        load(CHILD_DOT),
        logs_root=child_root,
        backend=sim(),
        heartbeat_interval=None,
        workdir=tmp_path,
    )
    node = manager(**{"stack.child_autostart": "false", "stack.child_logs_root": "elsewhere"})

    outcome = await supervise(tmp_path, node)

    assert outcome.status is StageStatus.SUCCESS
    assert outcome.context_updates["stack.child.completed_nodes"] == 4
    assert outcome.context_updates["stack.child.logs_root"] == str(child_root)


async def test_observe_only_without_a_logs_root_fails_clearly(
    tmp_path: Path, recorder: Recorder
) -> None:
    outcome = await supervise(tmp_path, manager(**{"stack.child_autostart": "false"}))

    assert outcome.failure_class == "structural"
    assert "stack.child_logs_root" in outcome.failure_reason


async def test_observe_only_with_a_corrupt_final_json_fails_clearly(
    tmp_path: Path, recorder: Recorder
) -> None:
    root = tmp_path / "work" / "broken"
    root.mkdir()
    (root / "final.json").write_text("{not json")
    node = manager(**{"stack.child_autostart": "false", "stack.child_logs_root": "broken"})

    outcome = await supervise(tmp_path, node)

    assert outcome.failure_class == "structural"
    assert str(root / "final.json") in outcome.failure_reason


# ----------------------------------------------------------------------- end to end


async def test_supervisor_example_end_to_end(tmp_path: Path, autojump_clock: Any) -> None:
    backend = sim({"plan": {"delay": "3s"}, "implement": {"delay": "4s"}})
    logs = tmp_path / "logs"

    result = await engine.run(
        load(EXAMPLES / "supervisor.dot"),
        logs_root=logs,
        backend=backend,
        handlers={"stack.manager_loop": ManagerLoopHandler(backend, None)},
        heartbeat_interval=None,
        workdir=tmp_path,
        run_id="parent",
    )

    assert result.status == "success"
    assert result.completed_nodes == ("start", "supervise", "exit")
    child = read_final(logs / "supervise" / "child")
    assert child is not None and child.status == "success" and child.run_id == "parent-child"
    cycles = named(logs, "manager_cycle")
    assert cycles[-1]["child_status"] == "completed"
    assert len(cycles) >= 4  # plan and implement take 7s; poll interval 2s


async def test_supervisor_example_routes_a_child_failure_to_triage(
    tmp_path: Path, autojump_clock: Any
) -> None:
    backend = sim(
        {
            "test": {
                "outcome": "fail",
                "failure_reason": "3 tests fail",
                "failure_class": "deterministic",
            }
        }
    )
    logs = tmp_path / "logs"

    result = await engine.run(
        load(EXAMPLES / "supervisor.dot"),
        logs_root=logs,
        backend=backend,
        handlers={"stack.manager_loop": ManagerLoopHandler(backend, None)},
        heartbeat_interval=None,
        workdir=tmp_path,
    )

    assert result.status == "success"
    assert "triage" in result.completed_nodes


# ----------------------------------------------------------------------- pure parts


def test_settings_defaults_follow_the_spec() -> None:
    settings = read_settings(Node("m", {"shape": "house"}), Graph("g"))

    assert settings == ManagerSettings(45.0, 1000, "", ("observe", "wait"), True)


def test_settings_are_parsed() -> None:
    node = Node(
        "m",
        {
            "manager.poll_interval": "2m",
            "manager.max_cycles": "7",
            "manager.stop_condition": "context.done=true",
            "manager.actions": "wait, observe",
            "stack.child_autostart": "false",
        },
    )

    settings = read_settings(node, Graph("g"))

    assert settings == ManagerSettings(120.0, 7, "context.done=true", ("wait", "observe"), False)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"manager.actions": "observe,stear"}, "did you mean 'steer'"),
        ({"manager.max_cycles": "0"}, "manager.max_cycles='0' must be at least 1"),
        ({"manager.max_cycles": "many"}, "invalid integer 'many'"),
        ({"manager.poll_interval": "0s"}, "must be a duration > 0"),
        ({"manager.stop_condition": "outcome==success"}, "manager.stop_condition"),
        ({"stack.child_autostart": "maybe"}, "invalid boolean 'maybe'"),
    ],
)
def test_bad_settings_name_the_node_and_attribute(attrs: dict[str, str], expected: str) -> None:
    node = Node("m", attrs, line=4, col=5)

    with pytest.raises(ManagerConfigError) as info:
        read_settings(node, Graph("g", path="p.dot"))

    assert str(info.value).startswith("p.dot:4:5: node 'm': ")
    assert expected in str(info.value)


def test_event_log_folds_into_the_child_view() -> None:
    events = [
        {"seq": 1, "event": "pipeline_started", "branch": ""},
        {"seq": 2, "event": "stage_started", "branch": "", "node_id": "start"},
        {"seq": 3, "event": "stage_completed", "branch": "", "node_id": "start"},
        {"seq": 4, "event": "stage_started", "branch": "", "node_id": "fan"},
        {"seq": 5, "event": "stage_started", "branch": "fan/a", "node_id": "a"},
        {"seq": 6, "event": "stage_completed", "branch": "fan/a", "node_id": "a"},
    ]
    view = ChildSnapshot()
    for event in events:
        view = fold_event(view, event)

    assert view == ChildSnapshot("running", "", "fan", 1, last_seq=6)
    assert child_snapshot(view, None) == view
    assert not view.finished


def test_snapshot_before_the_child_wrote_anything() -> None:
    assert child_snapshot(ChildSnapshot(), None) == ChildSnapshot()


@pytest.mark.parametrize(
    ("status", "child_status"),
    [("success", "completed"), ("fail", "failed"), ("canceled", "failed")],
)
def test_snapshot_of_a_finished_child(status: str, child_status: str) -> None:
    final = FinalRecord(
        run_id="r",
        status=status,
        exit_path="completed" if status == "success" else "canceled",
        completed_nodes=("start", "a"),
        start_time="t",
        end_time="t",
        duration_s=1,
        failure_reason=None if status == "success" else "why",
        failure_class=None,
    )

    snap = child_snapshot(ChildSnapshot(current_node="a"), final)

    assert (snap.status, snap.outcome, snap.completed_nodes) == (child_status, status, 2)
    assert snap.failure_reason == ("" if status == "success" else "why")
    assert snap.finished


def test_child_outcome_without_a_reason_still_says_why() -> None:
    outcome = child_outcome(ChildSnapshot("failed", "canceled"), {})

    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason == "Child failed (status canceled)"
