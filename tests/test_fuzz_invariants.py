"""``attractor_trio.testing`` (issue 10): schedules, the harness, the invariant checker, and the
fuzz property that ties them together.

The checker is tested first against runs damaged on purpose (each invariant must fire on
exactly the damage it describes), then the harness step by step, then the property: any
generated pipeline under any generated schedule satisfies every invariant. The property runs
``ATTRACTOR_FUZZ_EXAMPLES`` examples (default 50, the CI profile; ``nox -s fuzz`` raises it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from attractor_trio.dot.validate import validate
from attractor_trio.testing import (
    INVARIANTS,
    STEP_KINDS,
    Observation,
    Schedule,
    ScheduledBackend,
    Step,
    Violation,
    check_invariants,
    pipelines,
    run_schedule,
    schedules,
)
from attractor_trio.testing.harness import Performed
from attractor_trio.testing.strategies import scheduled_nodes, steps

from .helpers import graph_of

EXAMPLES = int(os.environ.get("ATTRACTOR_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LINEAR = """digraph lin { start [shape=Mdiamond]; done [shape=Msquare]
    a [prompt="a"]; b [prompt="b"]; start -> a -> b -> done }"""
ONE = """digraph one { start [shape=Mdiamond]; done [shape=Msquare]
    a [prompt="a", timeout="5s"]; start -> a -> done }"""


def names(violations: list[Violation]) -> set[str]:
    return {v.invariant for v in violations}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """``run(dot, schedule, **options)`` → Observation, each in a fresh logs root."""
    count = iter(range(1000))

    def go(dot: str, schedule: Schedule | None = None, **options: Any) -> Observation:
        root = tmp_path / f"run{next(count)}"
        return run_schedule(graph_of(dot), schedule or Schedule(), root, **options)

    yield go


# ------------------------------------------------------------------------------ schedules


@given(st.data())
def test_schedule_json_round_trips(data: st.DataObject) -> None:
    graph = data.draw(pipelines(max_nodes=5))
    schedule = data.draw(schedules(graph))
    doc = json.loads(json.dumps(schedule.to_json()))
    assert Schedule.from_json(doc) == schedule


def test_schedule_steps_repeat_the_last_and_default_to_success() -> None:
    fail = Step("fail", reason="x")
    schedule = Schedule({"a": (fail, Step("success", delay=2))})
    assert [schedule.step_for("a", i) for i in range(3)] == [fail, Step(delay=2), Step(delay=2)]
    assert schedule.step_for("other", 0) == Step()
    assert schedule.non_default_steps == 2
    assert Schedule({"a": (Step(),)}).non_default_steps == 0


def test_describe_is_a_readable_reproducer() -> None:
    schedule = Schedule(
        {"b": (Step("fail", "deterministic", "tests fail"), Step(delay=1.5))}, cancel_at=7
    )
    text = schedule.describe()
    assert "b: #1 fail class=deterministic reason='tests fail'; #2 success after 1.5s" in text
    assert "cancel the run at t=7s" in text
    assert "seq 4" in Schedule(cancel_after_event=4).describe()
    assert "every stage succeeds" in Schedule().describe()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"steps": {"a": [{"kind": "explode"}]}}, "schedule.steps.a[0]: unknown step kind"),
        ({"steps": {"a": []}}, "schedule.steps.a: expected a non-empty list"),
        ({"stepz": {}}, "unknown key(s) 'stepz'"),
        ({"cancel_at": "soon"}, "'cancel_at' must be a number"),
        ({"cancel_after_event": 1.5}, "'cancel_after_event' must be an integer"),
        ({"steps": {"a": [{"kind": "fail", "delay": -1}]}}, "delay must be a finite number"),
    ],
)
def test_malformed_schedules_say_what_is_wrong(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Schedule.from_json(doc)


@settings(max_examples=30)
@given(graph=pipelines())
def test_generated_pipelines_validate(graph: Any) -> None:
    errors = [d for d in validate(graph) if d.severity.value == "error"]
    assert not errors, graph.source


@given(st.data())
def test_step_strategy_only_times_out_nodes_with_a_timeout(data: st.DataObject) -> None:
    graph = data.draw(pipelines())
    schedule = data.draw(schedules(graph, allow_cancel=False))
    timeouts = {n.id for n in scheduled_nodes(graph) if n.timeout is not None}
    assert schedule.cancel_at is None and schedule.cancel_after_event is None
    for node_id, node_steps in schedule.steps.items():
        assert all(s.kind != "timeout" or node_id in timeouts for s in node_steps)
    assert data.draw(steps(timeout=False)).kind in STEP_KINDS


# ------------------------------------------------------------------------------- harness


def attempts(obs: Observation, node: str) -> list[dict[str, Any]]:
    return [
        e for e in obs.events if e["event"] == "stage_attempt_finished" and e["node_id"] == node
    ]


@pytest.mark.parametrize(
    ("step", "status", "reason"),
    [
        (Step("success"), "success", ""),
        (Step("partial"), "partial_success", ""),
        (Step("fail", "deterministic", "red"), "fail", "red"),
        (Step("retry", reason="again"), "retry", "again"),
        (Step("raise", reason="kaboom"), "fail", "handler raised ScheduledError: kaboom"),
        (Step("timeout"), "fail", "stage 'a' timed out after 5s"),
        (Step("fail"), "fail", "scheduled fail of a on call 1"),
    ],
)
def test_each_step_kind_is_logged_as_its_outcome(
    run: Any, step: Step, status: str, reason: str
) -> None:
    obs = run(ONE, Schedule({"a": (step,)}))
    [finished] = attempts(obs, "a")
    assert (finished["status"], finished["failure_reason"]) == (status, reason)
    assert check_invariants(obs) == []


def test_delay_works_in_virtual_time_and_reports_progress(run: Any) -> None:
    obs = run(LINEAR, Schedule({"a": (Step(delay=600),)}), stall_timeout=5)
    assert obs.result is not None and obs.result.status == "success"
    assert obs.elapsed == pytest.approx(600)
    assert not [e for e in obs.events if e["event"] == "watchdog_timeout"]


@pytest.mark.parametrize(("first", "second"), [(0.1, 1000.0), (0.3, 0.9), (1000.1, 0.7)])
def test_awkward_float_delays_still_end(run: Any, first: float, second: float) -> None:
    """Deadlines like 0.3 + 0.9 are not exactly representable; work must not spin on them."""
    obs = run(LINEAR, Schedule({"a": (Step(delay=first),), "b": (Step(delay=second),)}))
    assert obs.frozen_at is None and not obs.hung
    assert obs.elapsed == pytest.approx(first + second)


def test_a_stall_is_ended_by_the_watchdog(run: Any) -> None:
    obs = run(LINEAR, Schedule({"b": (Step("stall"),)}), stall_timeout=30)
    assert obs.result is not None and obs.result.exit_path == "watchdog"
    assert obs.elapsed == pytest.approx(30)
    assert check_invariants(obs) == []


def test_cancel_at_cancels_at_that_virtual_time(run: Any) -> None:
    obs = run(LINEAR, Schedule({"a": (Step(delay=100),)}, cancel_at=40))
    assert obs.result is not None and obs.result.status == "canceled"
    assert obs.elapsed == pytest.approx(40)
    assert obs.cancel_reason == "fuzz schedule: cancel at t=40s"
    assert check_invariants(obs) == []


def test_cancel_after_event_cancels_when_that_seq_is_emitted(run: Any) -> None:
    obs = run(LINEAR, Schedule(cancel_after_event=9))
    assert obs.cancel_seq == 9 and obs.events[8]["event"] == "stage_attempt_started"
    assert obs.result is not None and obs.result.status == "canceled"
    assert [e["event"] for e in obs.events[9:11]] == ["cancellation_exit", "stage_attempt_finished"]


def test_a_run_outliving_the_time_limit_is_hung_and_still_finalized(run: Any) -> None:
    obs = run(LINEAR, Schedule({"a": (Step("stall"),)}), stall_timeout=None, time_limit=100)
    assert obs.hung and obs.elapsed == pytest.approx(100)
    assert obs.result is not None and obs.result.status == "canceled"
    assert check_invariants(obs) == []


def test_a_zero_time_loop_is_stopped_by_the_event_budget(run: Any) -> None:
    loop = """digraph l { start [shape=Mdiamond]; done [shape=Msquare]; a [prompt="a"]
        start -> a -> done; a -> a [condition="outcome=fail"] }"""
    transient = Schedule({"a": (Step("fail", "transient_infra"),)})
    obs = run(loop, transient, max_events=300)
    assert obs.hung and obs.elapsed == 0
    assert obs.result is not None and obs.result.status == "canceled"
    assert 300 <= len(obs.events) < 320


class BusyHandler:
    """Never waits: a checkpoint lets other tasks run, but virtual time cannot move on."""

    async def execute(self, node: Any, context: Any, graph: Any, logs_root: Path) -> Any:
        while True:  # the busy loop is the point
            await trio.lowlevel.checkpoint()


def test_a_busy_loop_freezing_virtual_time_is_reported_not_hung_for_real(run: Any) -> None:
    started = time.perf_counter()
    obs = run(LINEAR, handlers={"codergen": BusyHandler()})
    assert time.perf_counter() - started < 5
    assert obs.hung and obs.frozen_at == 0
    assert obs.result is not None and obs.result.status == "canceled"
    assert names(check_invariants(obs)) == {"virtual_time_frozen"}


def test_backend_mode_runs_the_real_codergen_handler(run: Any) -> None:
    schedule = Schedule({"a": (Step("fail", reason="nope"), Step())})
    obs = run(LINEAR, schedule, backend=ScheduledBackend(schedule))
    assert (obs.logs_root / "a" / "prompt.md").exists()  # written by CodergenHandler
    assert [e["status"] for e in attempts(obs, "a")] == ["fail"]
    assert obs.result is not None and obs.result.failure_reason == "nope"
    assert [p.node_id for p in obs.performed] == ["a"]


# ------------------------------------------------ the checker fires on the damage it names


@pytest.fixture
def clean(run: Any) -> Observation:
    """A failed run (so causality applies) with a retry, ready to be damaged."""
    source = """digraph c { start [shape=Mdiamond]; done [shape=Msquare]
        a [prompt="a", max_retries=1]; b [prompt="b"]; start -> a -> b -> done }"""
    schedule = Schedule(
        {"a": (Step("fail", reason="flaky"), Step()), "b": (Step("fail", "deterministic", "red"),)}
    )
    obs: Observation = run(source, schedule)
    assert check_invariants(obs) == []
    assert obs.result is not None and obs.result.exit_path == "stage_failed"
    return obs


def renumber(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "seq": i} for i, e in enumerate(events, start=1)]


def without(obs: Observation, name: str, node: str = "") -> Observation:
    """The log with the first ``name`` event (of ``node``) dropped, renumbered."""
    index = next(
        i for i, e in enumerate(obs.events) if e["event"] == name and e.get("node_id", "") == node
    )
    return evolve(obs, events=renumber(obs.events[:index] + obs.events[index + 1 :]))


def evolve(obs: Observation, **changes: Any) -> Observation:
    if "events" in changes and "stream" not in changes:
        changes["stream"] = changes["events"]
    return attrs.evolve(obs, **changes)


def edit_json(path: Path, **changes: Any) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def finished_id(obs: Observation, node: str) -> str:
    return str(attempts(obs, node)[0]["attempt_id"])


def test_every_named_invariant_is_documented() -> None:
    assert all(INVARIANTS.values())
    assert "cancellation_swallowed" in INVARIANTS and "json_unparsable" in INVARIANTS


def test_seq_gaps(clean: Observation) -> None:
    gap = evolve(clean, events=clean.events[:3] + clean.events[4:])
    assert "seq_not_gapless" in names(check_invariants(gap))


def test_terminal_event_missing_duplicated_or_not_last(clean: Observation) -> None:
    evs = clean.events
    assert "terminal_missing" in names(check_invariants(evolve(clean, events=evs[:-1])))
    twice = renumber([*evs, evs[-1]])
    assert "terminal_not_unique" in names(check_invariants(evolve(clean, events=twice)))
    late = renumber([*evs, {**evs[3], "event": "checkpoint_saved"}])
    assert "event_after_terminal" in names(check_invariants(evolve(clean, events=late)))


def test_envelope_and_event_fields(clean: Observation) -> None:
    evs = [dict(e) for e in clean.events]
    del evs[0]["ts"]
    evs[2].pop("attempt_id")
    found = names(check_invariants(evolve(clean, events=evs)))
    assert {"envelope_incomplete", "event_fields_missing"} <= found


def test_event_stream_must_equal_the_log(clean: Observation) -> None:
    stream = clean.stream[:-1]
    assert names(check_invariants(attrs.evolve(clean, stream=stream))) == {"event_stream_mismatch"}


def test_heartbeat_after_its_attempt_finished(clean: Observation) -> None:
    attempt = finished_id(clean, "a")
    beat = {
        "event": "stage_heartbeat",
        "branch": "",
        "run_id": clean.events[0]["run_id"],
        "ts": "x",
        "node_id": "a",
        "attempt_id": attempt,
        "elapsed_s": 1,
        "idle_s": 1,
    }
    evs = renumber([*clean.events[:-1], beat, clean.events[-1]])
    found = check_invariants(evolve(clean, events=evs))
    assert names(found) == {"heartbeat_after_attempt_end"}


def test_attempt_started_after_cancel(clean: Observation) -> None:
    found = check_invariants(attrs.evolve(clean, cancel_seq=2))
    assert "attempt_after_cancel" in names(found)


def test_a_start_announced_for_an_attempt_queued_before_the_cancel_is_not_new_work() -> None:
    """contract.md §10: an attempt submitted to a cluster and canceled while queued has its
    ``stage_attempt_started`` announced at its end, after the cancel request."""
    from attractor_trio.testing.invariants import check_no_attempt_after_cancel

    def event(seq: int, name: str, attempt: str = "") -> dict[str, Any]:
        return {"seq": seq, "event": name, "branch": "", "node_id": "t", "attempt_id": attempt}

    evs = [
        event(1, "pipeline_started"),
        event(2, "stage_queued", "t-1"),
        event(3, "stage_attempt_started", "t-1"),
        event(4, "stage_attempt_started", "t-2"),
    ]
    found = list(check_no_attempt_after_cancel(evs, cancel_seq=2))
    assert len(found) == 1 and found[0].detail.startswith("seq 4 ")  # t-2, never queued


def test_attempt_never_finished(clean: Observation) -> None:
    assert "attempt_not_closed" in names(
        check_invariants(without(clean, "stage_attempt_finished", "b"))
    )


def test_cancel_requested_but_the_run_went_on(run: Any) -> None:
    obs = run(LINEAR)
    assert obs.result is not None and obs.result.status == "success"
    found = check_invariants(attrs.evolve(obs, cancel_seq=3))
    assert {"run_not_canceled", "attempt_after_cancel"} <= names(found)
    # A cancel that arrives with the terminal event is too late to matter.
    assert check_invariants(attrs.evolve(obs, cancel_seq=len(obs.events))) == []


def test_canceled_without_anyone_asking(run: Any) -> None:
    obs = run(LINEAR, Schedule(cancel_at=0))
    assert obs.result is not None and obs.result.status == "canceled"
    assert names(check_invariants(attrs.evolve(obs, cancel_seq=None))) == {
        "canceled_without_request"
    }


def test_unparsable_json_anywhere_under_the_logs_root(clean: Observation) -> None:
    (clean.logs_root / "b" / "status.json").write_text('{"outcome": "fa')
    found = check_invariants(clean)
    assert [v.invariant for v in found] == ["json_unparsable"]
    assert "b/status.json" in found[0].detail


def test_fan_out_results_must_be_whole_and_recorded_once(run: Any) -> None:
    source = """digraph f { start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        start -> par; par -> a -> join; par -> b -> join; join -> done }"""
    obs: Observation = run(source)
    assert check_invariants(obs) == []
    log = obs.logs_root / "parallel" / "par" / "results.ndjson"
    first = log.read_text().splitlines()[0]
    log.write_text(f"{log.read_text()}{first}\n[]\n" + '{"id": "a", "sta\n')
    found = [v for v in check_invariants(obs) if v.invariant == "branch_result_invalid"]
    assert [v.detail.split(": ", 1)[1] for v in found] == [
        f"branch {json.loads(first)['id']!r} recorded twice",
        "not a branch result (id, status, token)",
        "not JSON",
    ]
    assert all(v.detail.startswith("parallel/par/results.ndjson line ") for v in found)


def test_final_missing_invalid_or_disagreeing(clean: Observation) -> None:
    final = clean.logs_root / "final.json"
    edit_json(final, failure_reason="something else")
    assert "final_mismatch" in names(check_invariants(clean))
    edit_json(final, status="exploded")
    assert "final_invalid" in names(check_invariants(clean))
    final.unlink()
    assert "final_missing" in names(check_invariants(clean))


def test_completed_nodes_and_status_files(clean: Observation) -> None:
    edit_json(clean.logs_root / "checkpoint.json", completed_nodes=["start", "a", "zzz", "b"])
    found = names(check_invariants(clean))
    assert {"completed_nodes_mismatch", "stage_status_missing"} <= found


def test_live_state_and_lock(clean: Observation) -> None:
    edit_json(clean.logs_root / "live.json", state="running")
    (clean.logs_root / "run.lock.json").write_text("{}")
    assert names(check_invariants(clean)) == {"live_state_mismatch", "lock_left_behind"}


def test_failure_reason_must_be_a_failed_attempts_raw_reason(clean: Observation) -> None:
    edit_json(clean.logs_root / "final.json", failure_reason="stage failed")
    evs = [dict(e) for e in clean.events]
    evs[-1]["failure_reason"] = "stage failed"
    found = check_invariants(evolve(clean, events=evs))
    assert "failure_reason_not_causal" in names(found)


def test_logged_outcome_must_match_the_performed_step(clean: Observation) -> None:
    record = next(p for p in clean.performed if p.node_id == "b")
    lied = attrs.evolve(record, step=Step("success"))
    performed = tuple(lied if p is record else p for p in clean.performed)
    found = check_invariants(attrs.evolve(clean, performed=performed))
    assert names(found) == {"attempt_outcome_mismatch"}
    stalled = attrs.evolve(record, step=Step("stall"))
    found = check_invariants(
        attrs.evolve(clean, performed=(stalled,), cancel_seq=len(clean.events))
    )
    assert names(found) == {"cancellation_swallowed"}


def test_exceptions_out_of_the_run(clean: Observation) -> None:
    assert names(check_invariants(attrs.evolve(clean, error=ValueError("x")))) == {"run_raised"}
    late = RuntimeError("event 'x' emitted after the terminal event")
    assert names(check_invariants(attrs.evolve(clean, error=late))) == {"event_after_terminal"}


def test_performed_records_name_attempts() -> None:
    record = Performed("a", "a-1-abc", 0, Step())
    assert (record.node_id, record.attempt_id, record.index) == ("a", "a-1-abc", 0)


# ------------------------------------------------------------------------------ property


@st.composite
def examples(draw: st.DrawFn) -> tuple[Any, Schedule, dict[str, Any]]:
    graph = draw(pipelines())
    schedule = draw(schedules(graph))
    options: dict[str, Any] = {
        "heartbeat_interval": draw(st.sampled_from([10.0, None, 2.5, 0.5])),
        "stall_timeout": draw(st.sampled_from([120.0, 20.0, None])),
    }
    if draw(st.booleans()):
        options["backend"] = ScheduledBackend(schedule)
    return graph, schedule, options


@FUZZ
@given(example=examples())
def test_every_run_satisfies_every_invariant(example: tuple[Any, Schedule, dict[str, Any]]) -> None:
    graph, schedule, options = example
    with tempfile.TemporaryDirectory() as scratch:
        obs = run_schedule(graph, schedule, Path(scratch) / "run", time_limit=7200, **options)
        found = check_invariants(obs)
        case = {"dot": graph.source, "schedule": schedule.to_json(), "options": _plain(options)}
        note(f"regression case:\n{json.dumps(case, indent=2)}\n{schedule.describe()}")
        assert found == []


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    return {k: ("scheduled" if k == "backend" else v) for k, v in options.items()}


def test_the_package_imports_without_hypothesis() -> None:
    """Replaying a stored schedule (the CLI, the regression cases) must not need Hypothesis."""
    code = (
        "import sys; import attractor_trio.testing as t; "
        "assert 'hypothesis' not in sys.modules; assert callable(t.schedules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
