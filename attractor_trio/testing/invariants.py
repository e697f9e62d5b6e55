"""The invariant checker: what must hold for *every* run, whatever its schedule.

:func:`check_invariants` reads the run directory once (:class:`~.harness.RunFiles`) and hands
plain data to pure checks, one per invariant, each returning :class:`Violation` records whose
``invariant`` names are stable (the fuzzer groups and the tests assert on them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from attrs import frozen

from ..core.vocabulary import ExitPath, FailureClass
from ..events import TERMINAL_EVENTS
from ..persist.final import FinalRecord
from .harness import Observation, Performed, RunFiles, default_reason
from .schedules import Step

__all__ = [
    "CAUSAL_EXIT_PATHS",
    "EVENT_FIELDS",
    "INVARIANTS",
    "RunFiles",
    "Violation",
    "check_invariants",
    "leaf_failure_reasons",
]


@frozen
class Violation:
    """One broken invariant: its stable name (a key of :data:`INVARIANTS`) and what was seen."""

    invariant: str
    detail: str


#: Every invariant name :func:`check_invariants` can report, with what it means.
INVARIANTS: Final[Mapping[str, str]] = {
    "run_raised": "engine.run raised instead of finalizing and returning a result",
    "seq_not_gapless": "event seq must start at 1 and increase by exactly 1 (§4)",
    "envelope_incomplete": "every event carries seq, ts, run_id, event, branch (§4)",
    "event_fields_missing": "an event lacks a field contract.md §4 lists for it",
    "terminal_missing": "the run has no pipeline_completed/pipeline_failed event (§4)",
    "terminal_not_unique": "more than one terminal event (§4)",
    "event_after_terminal": "an event was emitted after the terminal event (§4)",
    "event_stream_mismatch": "the Python event stream differs from progress.ndjson (§4)",
    "heartbeat_after_attempt_end": "stage_heartbeat for an attempt after it finished (§4)",
    "attempt_after_cancel": "stage_attempt_started after cancellation or a watchdog timeout (§4)",
    "attempt_not_closed": "an attempt has no (or several) stage_attempt_finished (§4)",
    "run_not_canceled": "the run went on after a cancel request and did not end canceled (§5)",
    "canceled_without_request": "final says canceled though nobody cancelled the run",
    "final_missing": "final.json does not exist after the run (§2)",
    "final_invalid": "final.json is not a valid final record (§2)",
    "final_mismatch": "final.json disagrees with the terminal event or the RunResult (§2)",
    "completed_nodes_mismatch": "final.completed_nodes differs from the checkpoint's (§2)",
    "stage_status_missing": "a completed stage has no status.json (§2)",
    "json_unparsable": "a JSON file under LOGS_ROOT does not parse (§2 atomic writes)",
    "progress_line_unparsable": "a progress.ndjson line does not parse (§2)",
    "branch_result_invalid": "a results.ndjson line is not a branch result, or repeats one",
    "live_state_mismatch": "live.json state differs from final.json status (§2)",
    "lock_left_behind": "run.lock.json still exists after the run ended (§2)",
    "failure_reason_not_causal": "final failure_reason is not a failed attempt's raw reason (§5)",
    "attempt_outcome_mismatch": "an attempt's logged status contradicts the step it performed",
    "cancellation_swallowed": "a stalled attempt ended without cancellation or a timeout",
    "virtual_time_frozen": "a task busy-looped without waiting: the run hangs under MockClock",
}

#: contract.md §4 fields per event (§9 adds ``scope`` to ``cancellation_exit``).
_FIELDS_TEXT: Final = {
    "pipeline_started": "name goal logs_root resumed",
    "pipeline_resumed": "at_node previous_final previous_exit_path from_node",
    "stage_started": "node_id handler index",
    "stage_completed": "node_id handler index status duration_s",
    "stage_attempt_started": "node_id attempt max_attempts attempt_id",
    "stage_heartbeat": "node_id attempt_id elapsed_s idle_s",
    "stage_attempt_finished": "node_id attempt_id status failure_reason failure_class",
    "stage_retrying": "node_id attempt delay_s",
    "stage_retry_blocked": "node_id failure_class failure_reason",
    "status_ingestion_decision": "node_id attempt_id source copied rejected",
    "edge_selected": "from_node to_node method",
    "parallel_started": "node_id branch_count join_policy error_policy max_parallel",
    "parallel_completed": "node_id status success_count failure_count canceled_count duration_s",
    "parallel_branch_started": "node_id branch_key index",
    "parallel_branch_completed": "node_id branch_key index status duration_s",
    "checkpoint_saved": "node_id",
    "watchdog_timeout": "stall_timeout_s idle_s active_attempts",
    "cancellation_exit": "node_id attempt_id reason scope",
    "failure_cycle_break": "node_id signature count limit scope",
    "loop_restart": "from_node to_node restart new_logs_root",
    "pipeline_completed": "status duration_s",
    "pipeline_failed": "status failure_reason failure_class exit_path duration_s",
}
EVENT_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    event: tuple(fields.split()) for event, fields in _FIELDS_TEXT.items()
}
ENVELOPE: Final = ("seq", "ts", "run_id", "event", "branch")
#: Exit paths whose ``failure_reason`` must be the raw reason of a failed attempt (§5).
CAUSAL_EXIT_PATHS: Final = frozenset(
    {ExitPath.STAGE_FAILED, ExitPath.GOAL_GATE_UNSATISFIED, ExitPath.CYCLE_BREAKER}
)
#: Handlers that only pass on (or aggregate) other stages' outcomes: not a failure's cause.
_NON_LEAF_HANDLERS: Final = frozenset(
    {"start", "exit", "conditional", "parallel", "parallel.fan_in"}
)
#: Events that mean the engine went on working after a cancel request. ``edge_selected`` is
#: not one: routing right after the last stage may still end the run without another
#: checkpoint (e.g. a blocked ``loop_restart`` edge ends it as ``stage_failed``), which is the
#: same race as a cancel arriving while the last stage finishes.
_WORK_EVENTS: Final = frozenset(
    {"stage_started", "stage_attempt_started", "stage_retrying", "loop_restart"}
)
#: The status an attempt must log for the step it performed (stall/timeout: none).
_EXPECTED_STATUS: Final[Mapping[str, str]] = {
    "success": "success",
    "partial": "partial_success",
    "fail": "fail",
    "retry": "retry",
    "raise": "fail",
}

Event = dict[str, Any]


# ------------------------------------------------------------------------------ checking


def check_invariants(obs: Observation) -> list[Violation]:
    """Check one run against contract.md §4 and §2 (and §5's cancellation and causality rules).

    Events (§4): ``seq`` starts at 1 without gaps; every envelope is complete and every event
    carries its listed fields; exactly one terminal event, last; the event stream equals the
    log; no ``stage_heartbeat`` for an attempt after its ``stage_attempt_finished``; no
    ``stage_attempt_started`` once run cancellation was requested (the harness's cancel
    ``seq``), a run-scope ``cancellation_exit`` or a ``watchdog_timeout`` appeared; every
    started attempt finishes exactly once, after it started.
    Files (§2): every ``*.json`` under LOGS_ROOT parses, as does every ``progress.ndjson``
    line; every fan-out's ``results.ndjson`` line is a branch result, none repeated;
    ``final.json`` exists, is a valid record, and matches the terminal event and the
    ``RunResult``; its ``completed_nodes`` equal the checkpoint's; each completed stage has a
    ``status.json``; ``live.json`` ends in the final state; ``run.lock.json`` is gone.
    Semantics (§5): a run cancelled and then still working ends ``canceled`` (exit path
    ``canceled``, or ``watchdog`` when that fired first), and no run ends ``canceled``
    unasked; a ``stage_failed``/``goal_gate_unsatisfied``/``cycle_breaker`` failure carries
    the raw reason of a failed attempt; each attempt's logged status agrees with the step the
    scheduled handler performed (a stall only ends by cancellation or a timeout).
    ``run_raised`` reports an exception out of ``engine.run``; ``virtual_time_frozen`` a task
    that busy-looped (it would hang any MockClock test, and the watchdog with it). A run that
    merely hung (``obs.hung``, e.g. a stall with the watchdog off) is not a violation here:
    whether a schedule should terminate is the caller's judgement.
    """
    files = RunFiles.read(obs.logs_root)
    events = obs.events
    return [
        *_error(obs),
        *check_envelopes(events),
        *check_terminal(events),
        *check_stream(events, obs.stream),
        *check_heartbeats(events),
        *check_no_attempt_after_cancel(events, obs.cancel_seq),
        *check_attempts_closed(events),
        *check_cancel_honored(events, obs.cancel_seq, files.final),
        *check_files(files),
        *check_final(events, files, obs),
        *check_causality(events, files.final),
        *check_performed(events, obs.performed, obs.cancel_seq),
    ]


def _error(obs: Observation) -> Iterator[Violation]:
    error = obs.error
    if obs.frozen_at is not None:
        yield Violation(
            "virtual_time_frozen",
            f"at t={obs.frozen_at:g}s some task kept running without ever waiting and without "
            "emitting events (a busy loop, or a sleep whose deadline rounds to 'now'); the run "
            "was cancelled by the harness",
        )
    if error is None:
        return
    text = f"{type(error).__name__}: {error}"
    if "after the terminal event" in str(error):
        yield Violation("event_after_terminal", f"an emit after the terminal event raised {text}")
    else:
        yield Violation("run_raised", text)


def check_envelopes(events: Sequence[Event]) -> Iterator[Violation]:
    seqs = [e.get("seq") for e in events]
    if seqs != list(range(1, len(events) + 1)):
        yield Violation("seq_not_gapless", f"seq values {_preview(seqs)}")
    run_ids = {e.get("run_id") for e in events}
    if len(run_ids) > 1:
        yield Violation(
            "envelope_incomplete", f"several run_ids in one log: {sorted(map(str, run_ids))}"
        )
    for event in events:
        missing = [key for key in ENVELOPE if key not in event]
        if missing:
            yield Violation("envelope_incomplete", f"{_where(event)} lacks {', '.join(missing)}")
            continue
        wanted = EVENT_FIELDS.get(event["event"], ())
        absent = [key for key in wanted if key not in event]
        if absent:
            yield Violation("event_fields_missing", f"{_where(event)} lacks {', '.join(absent)}")


def check_terminal(events: Sequence[Event]) -> Iterator[Violation]:
    """Exactly one terminal event, last — in each segment of a resumed run (contract.md §10)."""
    from ..recovery import segments

    for segment in segments(events):
        yield from _check_segment_terminal(segment)


def _check_segment_terminal(events: Sequence[Event]) -> Iterator[Violation]:
    terminal = [i for i, e in enumerate(events) if e.get("event") in TERMINAL_EVENTS]
    if not terminal:
        yield Violation("terminal_missing", "no pipeline_completed/pipeline_failed event")
        return
    if len(terminal) > 1:
        yield Violation("terminal_not_unique", f"terminal events at seq {_seqs(events, terminal)}")
    after = events[terminal[0] + 1 :]
    late = [e for e in after if e.get("event") not in TERMINAL_EVENTS]
    if late:
        yield Violation("event_after_terminal", f"{_where(late[0])} after the terminal event")


def check_stream(events: Sequence[Event], stream: Sequence[Event]) -> Iterator[Violation]:
    if stream and list(stream) != list(events):
        first = next(
            (i for i, (a, b) in enumerate(zip(stream, events, strict=False)) if a != b),
            min(len(stream), len(events)),
        )
        yield Violation(
            "event_stream_mismatch",
            f"{len(stream)} streamed vs {len(events)} logged events; first difference at index "
            f"{first}",
        )


def check_heartbeats(events: Sequence[Event]) -> Iterator[Violation]:
    finished: dict[str, int] = {}
    for event in events:
        name, attempt = event.get("event"), event.get("attempt_id")
        if name == "stage_attempt_finished" and isinstance(attempt, str):
            finished.setdefault(attempt, event["seq"])
        elif name == "stage_heartbeat" and attempt in finished:
            yield Violation(
                "heartbeat_after_attempt_end",
                f"{_where(event)} for attempt {attempt}, which finished at seq {finished[attempt]}",
            )


def cancel_point(events: Sequence[Event], cancel_seq: int | None) -> tuple[int, str] | None:
    """The first ``seq`` after which no attempt may start, and why."""
    points = [] if cancel_seq is None else [(cancel_seq, "the harness cancelled the run")]
    for event in events:
        name = event.get("event")
        if name == "watchdog_timeout" or (
            name == "cancellation_exit" and event.get("scope", "run") == "run"
        ):
            points.append((int(event["seq"]), f"{name} at seq {event['seq']}"))
            break
    return min(points) if points else None


def check_no_attempt_after_cancel(
    events: Sequence[Event], cancel_seq: int | None
) -> Iterator[Violation]:
    """Per segment: a resume of a cancelled run starts attempts again, legitimately."""
    from ..recovery import segments

    for segment in segments(events):
        point = cancel_point(segment, cancel_seq)
        if point is None:
            continue
        seq, why = point
        # Submitted to a cluster before the cancel (contract.md §10): its start, announced when
        # it ends, is not new work.
        queued = {
            e.get("attempt_id")
            for e in segment
            if e.get("event") == "stage_queued" and e["seq"] <= seq
        }
        for event in segment:
            if (
                event.get("event") == "stage_attempt_started"
                and event["seq"] > seq
                and event.get("attempt_id") not in queued
            ):
                yield Violation("attempt_after_cancel", f"{_where(event)} after {why} (seq {seq})")


def check_attempts_closed(events: Sequence[Event]) -> Iterator[Violation]:
    started: dict[str, int] = {}
    finished: dict[str, list[int]] = {}
    for event in events:
        attempt = event.get("attempt_id")
        if event.get("event") == "stage_attempt_started":
            started[str(attempt)] = event["seq"]
        elif event.get("event") == "stage_attempt_finished" and not event.get("adopted"):
            finished.setdefault(str(attempt), []).append(event["seq"])
    for attempt, seq in started.items():
        ends = finished.get(attempt, [])
        if len(ends) != 1 or ends[0] < seq:
            yield Violation(
                "attempt_not_closed",
                f"attempt {attempt} (started at seq {seq}) finished at seq {ends or 'never'}",
            )
    for attempt in finished.keys() - started.keys():
        yield Violation("attempt_not_closed", f"attempt {attempt} finished but never started")


def check_cancel_honored(
    events: Sequence[Event], cancel_seq: int | None, final: FinalRecord | None
) -> Iterator[Violation]:
    if final is None:
        return
    watchdog = any(e.get("event") == "watchdog_timeout" for e in events)
    if final.status == "canceled":
        if final.exit_path != ExitPath.CANCELED:
            yield Violation("final_mismatch", f"canceled run has exit_path {final.exit_path!r}")
        if cancel_seq is None and not watchdog:
            yield Violation("canceled_without_request", f"final: {final.failure_reason!r}")
        return
    terminal = _terminal_seq(events)
    if cancel_seq is None or terminal is None or cancel_seq >= terminal:
        return
    if final.exit_path == ExitPath.WATCHDOG and watchdog:
        return
    work = [e for e in events if e["seq"] > cancel_seq and e.get("event") in _WORK_EVENTS]
    if work:
        yield Violation(
            "run_not_canceled",
            f"cancel requested at seq {cancel_seq}, then {_where(work[0])}, yet final status is "
            f"{final.status!r} (exit_path {final.exit_path!r})",
        )


def check_files(files: RunFiles) -> Iterator[Violation]:
    for rel, problem in files.unparsable_json:
        yield Violation("json_unparsable", f"{rel}: {problem}")
    for line in files.bad_progress_lines:
        yield Violation("progress_line_unparsable", f"progress.ndjson line {line}")
    for problem in files.bad_branch_results:
        yield Violation("branch_result_invalid", problem)
    if files.lock_exists:
        yield Violation("lock_left_behind", "run.lock.json exists after the run ended")
    if files.final is None:
        kind = "final_missing" if files.final_problem == "missing" else "final_invalid"
        yield Violation(kind, files.final_problem)
        return
    if files.live is not None and files.live.get("state") != files.final.status:
        yield Violation(
            "live_state_mismatch",
            f"live.json state {files.live.get('state')!r}, final status {files.final.status!r}",
        )
    checkpoint = files.checkpoint
    if checkpoint is None:
        return
    completed = list(checkpoint.get("completed_nodes", []))
    if completed != list(files.final.completed_nodes):
        yield Violation(
            "completed_nodes_mismatch",
            f"final {list(files.final.completed_nodes)} vs checkpoint {completed}",
        )
    for node in dict.fromkeys(completed):
        if node not in files.status_dirs:
            yield Violation("stage_status_missing", f"completed stage {node!r} has no status.json")


def check_final(events: Sequence[Event], files: RunFiles, obs: Observation) -> Iterator[Violation]:
    final = files.final
    if final is None:
        return
    terminal = next((e for e in reversed(events) if e.get("event") in TERMINAL_EVENTS), None)
    if terminal is not None:
        yield from _final_vs_terminal(final, terminal)
    result = obs.result
    if result is not None:
        pairs = {
            "status": (result.status, final.status),
            "exit_path": (result.exit_path, final.exit_path),
            "failure_reason": (result.failure_reason, final.failure_reason or ""),
            "completed_nodes": (list(result.completed_nodes), list(final.completed_nodes)),
        }
        for key, (got, want) in pairs.items():
            if got != want:
                yield Violation("final_mismatch", f"RunResult.{key} {got!r} vs final {want!r}")


def _final_vs_terminal(final: FinalRecord, terminal: Event) -> Iterator[Violation]:
    if terminal["event"] == "pipeline_completed":
        if final.status != "success":
            yield Violation("final_mismatch", f"pipeline_completed but final is {final.status!r}")
        return
    pairs = {
        "status": (terminal.get("status"), final.status),
        "exit_path": (terminal.get("exit_path"), final.exit_path),
        "failure_reason": (terminal.get("failure_reason") or "", final.failure_reason or ""),
        "failure_class": (terminal.get("failure_class") or "", final.failure_class or ""),
    }
    for key, (logged, written) in pairs.items():
        if logged != written:
            yield Violation(
                "final_mismatch", f"pipeline_failed.{key} {logged!r} vs final.json {written!r}"
            )


def check_causality(events: Sequence[Event], final: FinalRecord | None) -> Iterator[Violation]:
    if final is None or final.status != "fail" or final.exit_path not in CAUSAL_EXIT_PATHS:
        return
    reason = final.failure_reason or ""
    raw = leaf_failure_reasons(events)
    if not reason or not any(r in reason for r in raw):
        yield Violation(
            "failure_reason_not_causal",
            f"exit_path {final.exit_path}: failure_reason {reason!r} is none of the failed "
            f"attempts' reasons {_preview(sorted(raw))}",
        )


def leaf_failure_reasons(events: Sequence[Event]) -> set[str]:
    """Raw reasons of failed attempts of stages that do work themselves (not pass-through or
    aggregating nodes), excluding attempts stopped by cancellation."""
    handler_of: dict[tuple[str, str], str] = {}
    canceled = {e.get("attempt_id") for e in events if e.get("event") == "cancellation_exit"}
    reasons = set()
    for event in events:
        key = (str(event.get("branch", "")), str(event.get("node_id", "")))
        if event.get("event") == "stage_started":
            handler_of[key] = str(event.get("handler", ""))
        elif (
            event.get("event") == "stage_attempt_finished"
            and event.get("status") in ("fail", "retry")
            and event.get("attempt_id") not in canceled
            and handler_of.get(key) not in _NON_LEAF_HANDLERS
            and event.get("failure_reason")
        ):
            reasons.add(str(event["failure_reason"]))
    return reasons


def check_performed(
    events: Sequence[Event], performed: Sequence[Performed], cancel_seq: int | None
) -> Iterator[Violation]:
    """Each attempt a scheduled handler served must be logged as its step dictates."""
    steps = {p.attempt_id: p for p in performed}
    canceled = {e.get("attempt_id") for e in events if e.get("event") == "cancellation_exit"}
    for event in events:
        attempt = event.get("attempt_id")
        if event.get("event") != "stage_attempt_finished" or attempt not in steps:
            continue
        if attempt in canceled or _timed_out(event):
            continue
        record = steps[str(attempt)]
        problem = _mismatch(record, event)
        if problem:
            kind = (
                "cancellation_swallowed"
                if record.step.kind in ("stall", "timeout") and cancel_seq is not None
                else "attempt_outcome_mismatch"
            )
            yield Violation(kind, f"{_where(event)}: {problem}")


def _timed_out(event: Event) -> bool:
    return event.get("failure_class") == FailureClass.TRANSIENT_INFRA and "timed out" in str(
        event.get("failure_reason", "")
    )


def _mismatch(record: Performed, event: Event) -> str:
    step: Step = record.step
    status = event.get("status")
    expected = step.outcome or _EXPECTED_STATUS.get(step.kind)
    if expected is None:
        return (
            f"node {record.node_id} was scheduled to {step.kind}, which only cancellation or a "
            f"timeout can end, but its attempt finished {status!r}"
        )
    if status != expected:
        return f"step {step.describe()!r} should log status {expected!r}, logged {status!r}"
    if step.kind in ("fail", "retry", "raise"):
        reason = default_reason(step, record.node_id, record.index)
        if reason not in str(event.get("failure_reason", "")):
            return f"failure_reason {event.get('failure_reason')!r} lost the raw {reason!r}"
    return ""


def _terminal_seq(events: Sequence[Event]) -> int | None:
    for event in events:
        if event.get("event") in TERMINAL_EVENTS:
            return int(event["seq"])
    return None


def _where(event: Event) -> str:
    node = event.get("node_id")
    suffix = f" ({node})" if node else ""
    return f"seq {event.get('seq')} {event.get('event')}{suffix}"


def _seqs(events: Sequence[Event], indices: Sequence[int]) -> list[Any]:
    return [events[i].get("seq") for i in indices]


def _preview(values: Sequence[Any], limit: int = 12) -> str:
    shown = ", ".join(map(repr, values[:limit]))
    return f"[{shown}{', …' if len(values) > limit else ''}]"
