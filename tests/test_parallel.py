"""Parallel fan-out and fan-in end to end (issue 5), under virtual time unless real processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.aio.group_commit import read_records
from attractor_trio.context import Context
from attractor_trio.core.join import JoinConfig
from attractor_trio.core.outcome import Outcome
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.handlers import parallel
from attractor_trio.interviewers import Answer, QueueInterviewer
from attractor_trio.scopes import engine

from .helpers import (
    assert_envelope_invariants,
    events,
    fan_out_dot,
    graph_of,
    named,
    read_json,
    run_dot,
    sim,
)


def fanout(branches: str, attrs: str = "", extra: str = "") -> str:
    """A pipeline: start -> prep -> par[attrs] -> {branches} -> join -> after -> done."""
    return f"""
    digraph p {{
        start [shape=Mdiamond]
        done [shape=Msquare]
        prep [prompt="prep"]
        par [shape=component{", " + attrs if attrs else ""}]
        join [shape=tripleoctagon]
        after [prompt="after"]
        start -> prep -> par
        {branches}
        join -> after -> done
        {extra}
    }}"""


THREE = fanout("par -> a -> join\n par -> b -> join\n par -> c -> join")


async def test_p20_fan_out_and_fan_in_complete(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    result = await run_dot(THREE, root)
    assert result.status == "success"
    assert result.completed_nodes == ("start", "prep", "par", "join", "after", "done")
    checkpoint = read_json(root / "checkpoint.json")["context"]
    assert [r["id"] for r in checkpoint["parallel.results"]] == ["a", "b", "c"]
    assert checkpoint["parallel.success_count"] == 3 and checkpoint["parallel.fail_count"] == 0
    assert checkpoint["parallel.branch.b.status"] == "success"
    assert checkpoint["parallel.fan_in.best_id"] == "a"
    assert checkpoint["parallel.fan_in.best_outcome"] == "success"
    [started] = named(root, "parallel_started")
    assert (started["branch_count"], started["join_policy"], started["max_parallel"]) == (
        3,
        "wait_all",
        4,
    )
    assert sorted(e["branch_key"] for e in named(root, "parallel_branch_completed")) == [
        "a",
        "b",
        "c",
    ]
    # branch stage dirs and branch progress files, numbered from 1; copies in the run's log
    assert (root / "parallel" / "par" / "b" / "b" / "response.md").exists()
    branch_events = [
        json.loads(x) for x in (root / "parallel/par/b/progress.ndjson").read_text().splitlines()
    ]
    assert [e["seq"] for e in branch_events] == list(range(1, len(branch_events) + 1))
    assert {e["branch"] for e in branch_events} == {"par/b"}
    forwarded = [e for e in events(root) if e["branch"] == "par/b"]
    assert [e["event"] for e in forwarded] == [e["event"] for e in branch_events]
    assert_envelope_invariants(root)


async def test_multi_node_branches_with_conditionals(tmp_path: Path, autojump_clock: Any) -> None:
    source = fanout(
        'par -> a1 -> a2 -> gate\n gate -> a3 [condition="outcome=success"]\n'
        ' gate -> join [condition="outcome!=success"]\n a3 -> join\n par -> b1 -> join',
        extra="gate [shape=diamond]",
    )
    root = tmp_path / "run"
    result = await run_dot(source, root)
    assert result.status == "success"
    ran = [e["node_id"] for e in named(root, "stage_attempt_started") if e["branch"] == "par/a1"]
    assert ran == ["a1", "a2", "gate", "a3"]
    results = read_json(root / "checkpoint.json")["context"]["parallel.results"]
    assert results[0]["last_node"] == "a3"


async def test_wait_all_with_a_failure_is_partial(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    steps = {"b": [{"outcome": "fail", "failure_reason": "lint: 3 errors"}]}
    result = await run_dot(THREE, root, steps=steps)
    assert result.status == "success"
    [done] = named(root, "parallel_completed")
    assert (done["status"], done["success_count"], done["failure_count"]) == (
        "partial_success",
        2,
        1,
    )
    context = read_json(root / "checkpoint.json")["context"]
    assert context["parallel.fan_in.best_id"] in ("a", "c")


async def test_all_branches_failing_fails_with_the_raw_cause(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    steps = {
        n: [{"outcome": "fail", "failure_reason": f"{n}: compile error E{i}"}]
        for i, n in enumerate("abc")
    }
    result = await run_dot(THREE, root, steps=steps)
    assert result.status == "fail"
    assert result.failure_reason == "a: compile error E0"
    assert "after" not in result.completed_nodes


async def test_first_success_cancels_the_losers(tmp_path: Path, autojump_clock: Any) -> None:
    source = fanout(
        "par -> a -> join\n par -> b -> join\n par -> c -> join",
        attrs='join_policy="first_success"',
    )
    root = tmp_path / "run"
    steps = {"a": [{"stall": "forever"}], "b": [{"delay": "5s"}], "c": [{"stall": "forever"}]}
    result = await run_dot(source, root, steps=steps)
    assert result.status == "success"
    statuses = {e["branch_key"]: e["status"] for e in named(root, "parallel_branch_completed")}
    assert statuses == {"a": "canceled", "b": "success", "c": "canceled"}
    [done] = named(root, "parallel_completed")
    assert done["canceled_count"] == 2 and done["success_count"] == 1
    exits = named(root, "cancellation_exit")
    assert sorted(e["node_id"] for e in exits) == ["a", "c"]
    assert {e["scope"] for e in exits} == {"branch"}
    assert [r["id"] for r in read_records(root / "parallel/par/results.ndjson")] == ["b"]


class _CancelsTheRunWhenCanceled:
    """A stage that waits forever and, when canceled, cancels the whole run before it goes."""

    def __init__(self, handle: engine.RunHandle) -> None:
        self.handle = handle

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        try:
            await trio.sleep_forever()
        finally:
            self.handle.cancel("stopped by the loser's cleanup")
        raise AssertionError("unreachable")


async def test_a_loser_is_a_branch_cancel_by_its_scope_not_by_the_reason_s_wording(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reason text is for people: reworded, the loser is still recognised, even when the
    # run is canceled too by the time the attempt records its exit.
    monkeypatch.setattr(parallel, "_LOSER", "no longer needed")
    source = fanout(
        "par -> a -> join\n par -> b -> join",
        attrs='join_policy="first_success"',
        extra='a [type="hold"]',
    )
    root = tmp_path / "run"
    handle = engine.RunHandle()
    hold = _CancelsTheRunWhenCanceled(handle)
    steps = {"b": [{"delay": "5s"}]}

    result = await run_dot(source, root, steps=steps, handle=handle, handlers={"hold": hold})

    assert result.status == "canceled"
    [loser] = [e for e in named(root, "cancellation_exit") if e["node_id"] == "a"]
    assert loser["reason"].startswith("no longer needed")
    assert loser["scope"] == "branch"


async def test_fail_fast_cancels_siblings_and_fails(tmp_path: Path, autojump_clock: Any) -> None:
    source = fanout("par -> a -> join\n par -> b -> join", attrs='error_policy="fail_fast"')
    root = tmp_path / "run"
    steps = {"a": [{"stall": "forever"}], "b": [{"outcome": "fail", "failure_reason": "boom"}]}
    result = await run_dot(source, root, steps=steps)
    assert result.status == "fail" and result.failure_reason == "boom"
    statuses = {e["branch_key"]: e["status"] for e in named(root, "parallel_branch_completed")}
    assert statuses == {"a": "canceled", "b": "fail"}


async def test_k_of_n_and_quorum(tmp_path: Path, autojump_clock: Any) -> None:
    branches = "\n".join(f"par -> b{i} -> join" for i in range(4))
    steps = {
        "b0": [{"delay": "1s"}],
        "b1": [{"delay": "2s"}],
        "b2": [{"stall": "forever"}],
        "b3": [{"stall": "forever"}],
    }
    for attrs in ('join_policy="k_of_n", k=2', 'join_policy="quorum", quorum_fraction=0.5'):
        root = tmp_path / attrs.split('"')[1]
        result = await run_dot(fanout(branches, attrs=attrs), root, steps=steps)
        assert result.status == "success"
        [done] = named(root, "parallel_completed")
        assert (done["success_count"], done["canceled_count"]) == (2, 2)


async def test_ignore_drops_failed_branches_but_counts_them(
    tmp_path: Path, autojump_clock: Any
) -> None:
    source = fanout("par -> a -> join\n par -> b -> join", attrs='error_policy="ignore"')
    root = tmp_path / "run"
    result = await run_dot(source, root, steps={"a": [{"outcome": "fail", "failure_reason": "x"}]})
    assert result.status == "success"
    context = read_json(root / "checkpoint.json")["context"]
    assert [r["id"] for r in context["parallel.results"]] == ["b"]
    assert context["parallel.fail_count"] == 1


async def test_max_parallel_bounds_concurrency(tmp_path: Path, autojump_clock: Any) -> None:
    branches = "\n".join(f"par -> b{i} -> join" for i in range(7))
    root = tmp_path / "run"
    steps = {f"b{i}": [{"delay": "10s"}] for i in range(7)}
    start = trio.current_time()
    await run_dot(fanout(branches, attrs="max_parallel=2"), root, steps=steps)
    running = peak = 0
    for event in events(root):
        if event["event"] == "parallel_branch_started":
            running += 1
            peak = max(peak, running)
        elif event["event"] == "parallel_branch_completed":
            running -= 1
    assert peak == 2
    assert trio.current_time() - start == pytest.approx(40, abs=1)  # ceil(7/2) * 10s


async def test_branch_timeout(tmp_path: Path, autojump_clock: Any) -> None:
    source = fanout("par -> a -> join\n par -> b -> join", attrs='branch_timeout="30s"')
    root = tmp_path / "run"
    await run_dot(source, root, steps={"a": [{"stall": "forever"}]})
    results = read_json(root / "checkpoint.json")["context"]["parallel.results"]
    assert results[0]["status"] == "fail" and "timed out after 30s" in results[0]["failure_reason"]
    assert results[0]["failure_class"] == "transient_infra"


async def test_a_branch_without_a_timeout_opens_no_timeout_scope(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel scope per branch for an infinite deadline was work for nothing (issue #22)."""
    timers: list[float] = []
    real = trio.move_on_after

    def recording(seconds: float, **kwargs: Any) -> trio.CancelScope:
        timers.append(seconds)
        return real(seconds, **kwargs)

    monkeypatch.setattr(trio, "move_on_after", recording)
    assert (await run_dot(THREE, tmp_path / "untimed")).status == "success"
    assert timers == []
    timed = fanout("par -> a -> join\n par -> b -> join", attrs='branch_timeout="30s"')
    assert (await run_dot(timed, tmp_path / "timed")).status == "success"
    assert timers == [30.0, 30.0]


async def test_branches_no_join_can_make_losers_open_no_cancel_scope(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait_all`` under ``continue`` decides when the last branch is recorded: no branch is
    ever cancelled as a loser, so none gets a cancel scope of its own (issue #22: making,
    entering and leaving one was ~3 % of a wide fan-out's start). A threshold policy that
    runs the same branches to the same end still gives each its scope."""
    made: list[int] = []
    real = trio.CancelScope

    def recording(*args: Any, **kwargs: Any) -> trio.CancelScope:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(trio, "CancelScope", recording)
    assert (await run_dot(THREE, tmp_path / "wait_all")).status == "success"
    waiting_all = len(made)
    k_of_3 = THREE.replace("shape=component", 'shape=component, join_policy="k_of_n", k=3')
    assert (await run_dot(k_of_3, tmp_path / "k_of_n")).status == "success"
    assert len(made) - waiting_all == waiting_all + 3
    assert JoinConfig(total=3).may_decide_early is False
    assert JoinConfig(total=3, error_policy="ignore").may_decide_early is False
    assert JoinConfig(total=3, error_policy="fail_fast").may_decide_early is True
    for policy in ("first_success", "k_of_n", "quorum"):
        assert JoinConfig(total=3, policy=policy).may_decide_early is True


async def test_nested_fan_out(tmp_path: Path, autojump_clock: Any) -> None:
    source = fanout(
        "par -> outer_a -> inner\n inner -> x -> inner_join\n inner -> y -> inner_join\n"
        " inner_join -> join\n par -> outer_b -> join",
        extra="inner [shape=component]\n inner_join [shape=tripleoctagon]",
    )
    root = tmp_path / "run"
    result = await run_dot(source, root)
    assert result.status == "success"
    nested = {e["branch"] for e in named(root, "stage_attempt_started")}
    assert {"par/outer_a", "par/outer_a/inner/x", "par/outer_a/inner/y", "par/outer_b"} <= nested
    assert (root / "parallel/par/outer_a/parallel/inner/x/x/status.json").exists()


async def test_human_gate_inside_a_branch(tmp_path: Path, autojump_clock: Any) -> None:
    source = fanout(
        'par -> ask -> join\n par -> b -> join\n ask -> join [label="[O] OK"]',
        extra='ask [shape=hexagon, label="OK?"]',
    )
    source = source.replace("par -> ask -> join", "par -> ask")
    root = tmp_path / "run"
    result = await run_dot(source, root, interviewer=QueueInterviewer([Answer(value="O")]))
    assert result.status == "success"


async def test_parallel_without_fan_in_ends_the_run(tmp_path: Path, autojump_clock: Any) -> None:
    source = """digraph p { start [shape=Mdiamond]; done [shape=Msquare]; par [shape=component]
        start -> par; par -> a -> done; par -> b -> done }"""
    root = tmp_path / "run"
    result = await run_dot(source, root)
    assert result.status == "success"
    assert "done" not in [e["node_id"] for e in named(root, "stage_attempt_started")]


async def _interrupted_in_fan_out(root: Path) -> list[dict[str, Any]]:
    """THREE run until a and b have finished and c never will; then the run is killed (its
    final.json removed, as if it had never been written). The records of a and b."""
    with trio.move_on_after(100):
        await run_dot(THREE, root, steps={"c": [{"stall": "forever"}]})
    (root / "final.json").unlink()
    records = read_records(root / "parallel/par/results.ndjson")
    assert sorted(r["id"] for r in records) == ["a", "b"]
    return records


async def _resume_and_count_starts(root: Path) -> dict[str, int]:
    result = await engine.resume(
        graph_of(THREE), logs_root=root, backend=sim(), heartbeat_interval=None
    )
    assert result.status == "success"
    starts = [e["node_id"] for e in named(root, "stage_attempt_started")]
    return {node: starts.count(node) for node in "abc"}


async def test_resume_mid_fan_out_reruns_only_unfinished_branches(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    await _interrupted_in_fan_out(root)
    assert await _resume_and_count_starts(root) == {"a": 1, "b": 1, "c": 2}


@pytest.mark.parametrize(
    ("edit", "starts"),
    [
        # recorded by another visit (or attempt) of the fan-out: not this execution's results
        (lambda r: {**r, "token": "7.1"}, {"a": 2, "b": 2, "c": 2}),
        # not a finished branch's result (damaged): that branch runs again, the join is not
        # hurt — and its stage, which finished in this execution, is adopted, not re-executed
        (lambda r: {**r, "status": "exploded"} if r["id"] == "a" else r, {"a": 1, "b": 1, "c": 2}),
    ],
    ids=["another-visit", "not-a-result"],
)
async def test_resume_reuses_only_this_executions_valid_results(
    tmp_path: Path, autojump_clock: Any, edit: Any, starts: dict[str, int]
) -> None:
    root = tmp_path / "run"
    records = await _interrupted_in_fan_out(root)
    log = root / "parallel/par/results.ndjson"
    log.write_text("".join(json.dumps(edit(r)) + "\n" for r in records))
    if edit(records[0]).get("token") == "7.1":  # another visit wrote the stage markers too
        for marker in (root / "parallel/par").rglob(".attempt.json"):
            marker.write_text(json.dumps({**json.loads(marker.read_text()), "epoch": "/par@7.1"}))
    assert await _resume_and_count_starts(root) == starts


async def test_resume_reads_the_result_json_files_of_older_engines(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    for record in await _interrupted_in_fan_out(root):
        (root / "parallel/par" / record["id"] / "result.json").write_text(json.dumps(record))
    (root / "parallel/par/results.ndjson").unlink()
    assert await _resume_and_count_starts(root) == {"a": 1, "b": 1, "c": 2}


async def test_one_busy_branch_keeps_the_watchdog_quiet(
    tmp_path: Path, autojump_clock: Any
) -> None:
    root = tmp_path / "run"
    steps = {"a": [{"stall": "300s"}], "b": [{"delay": "400s"}]}
    result = await run_dot(THREE, root, steps=steps, stall_timeout=120)
    assert result.status == "success"


async def test_all_silent_branches_trip_the_watchdog(tmp_path: Path, autojump_clock: Any) -> None:
    root = tmp_path / "run"
    steps = {n: [{"stall": "forever"}] for n in "abc"}
    result = await run_dot(THREE, root, steps=steps, stall_timeout=120)
    assert result.exit_path == "watchdog"
    [timeout] = named(root, "watchdog_timeout")
    assert sorted(a["node_id"] for a in timeout["active_attempts"]) == ["a", "b", "c", "par"]
    assert {e["scope"] for e in named(root, "cancellation_exit")} == {"run"}
    assert_envelope_invariants(root)


@pytest.mark.slow
async def test_first_success_kills_loser_processes(tmp_path: Path) -> None:
    source = fanout(
        "par -> slow1 -> join\n par -> fast -> join\n par -> slow2 -> join",
        attrs='join_policy="first_success"',
        extra=(
            'slow1 [shape=parallelogram, tool_command="echo $$ > slow1.pid; sleep 30"]\n'
            'slow2 [shape=parallelogram, tool_command="sleep 30 & echo $! > slow2.pid; wait"]\n'
            'fast [shape=parallelogram, tool_command="sleep 0.5"]'
        ),
    )
    root = tmp_path / "run"
    began = time.monotonic()
    with trio.fail_after(20):
        result = await run_dot(source, root, workdir=tmp_path, kill_grace=1.0)
    assert result.status == "success"
    assert time.monotonic() - began < 10
    for pidfile in ("slow1.pid", "slow2.pid"):
        pid = int((tmp_path / pidfile).read_text())
        assert not _alive(pid), pidfile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (nobody reaps orphans in some sandboxes) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class _Scheduling(trio.abc.Instrument):
    """Counts task steps and scheduler rounds (each round ends in one wait for IO)."""

    def __init__(self) -> None:
        self.steps = 0
        self.rounds = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.rounds += 1


async def _scheduling_of_a_fan_out(root: Path, branches: int) -> _Scheduling:
    steps = {f"b{index}": [{"delay": "10s"}] for index in range(branches)}
    counted = _Scheduling()
    trio.lowlevel.add_instrument(counted)
    try:
        result = await run_dot(fan_out_dot(branches), root, steps=steps)
    finally:
        trio.lowlevel.remove_instrument(counted)
    assert result.status == "success"
    return counted


async def test_branches_starting_together_do_not_each_cost_a_scheduler_round(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Issue #22: the dispatcher took each free slot through the scheduler, and each branch's
    traversal yielded again right after its log was made: 1,000 branches waited out 2,000
    scheduler trips on the trio thread before the last could begin its work. Now a branch
    adds no scheduler round of its own (it was one each) and 7 task steps (it was 9)."""
    few = await _scheduling_of_a_fan_out(tmp_path / "few", 20)
    many = await _scheduling_of_a_fan_out(tmp_path / "many", 60)
    assert many.rounds - few.rounds < 10
    assert (many.steps - few.steps) / 40 <= 7.5
    # Declaration order is kept although the branches' tasks start together.
    started = [e["branch_key"] for e in named(tmp_path / "many", "parallel_branch_started")]
    assert started == [f"b{index}" for index in range(60)]
