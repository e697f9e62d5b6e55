"""Typed events for the Python API (contract.md §4, §8): one class per event name.

The event log is NDJSON envelopes; embedding applications get these frozen values instead.
Each class is named after the spec's event (``PipelineStarted`` for ``pipeline_started``),
carries the envelope (``seq``, ``ts``, ``run_id``, ``branch``) and the event's own fields in
``data`` (also readable as attributes: ``event.node_id``). Unknown names (newer engines, custom
handlers) become plain :class:`Event`, never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from attrs import field, frozen

__all__ = ["EVENT_TYPES", "Event", "event_from_envelope"]

_ENVELOPE = ("seq", "ts", "run_id", "event", "branch")


@frozen
class Event:
    """One event of a run. ``name`` is the wire name (``stage_started``)."""

    name: str
    seq: int
    ts: str
    run_id: str
    branch: str = ""
    data: Mapping[str, Any] = field(factory=dict)

    wire_name: ClassVar[str] = ""

    def __getattr__(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {key!r}") from None

    @property
    def description(self) -> str:
        """A one-line human description (spec S9.6-16 ``event.description``)."""
        from .display import describe

        return describe(self.to_envelope()) or self.name

    def to_envelope(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "run_id": self.run_id,
            "event": self.name,
            "branch": self.branch,
            **self.data,
        }


def _event_type(class_name: str, wire: str, doc: str) -> type[Event]:
    return type(class_name, (Event,), {"__doc__": doc, "wire_name": wire, "__slots__": ()})


_NAMES = {
    "pipeline_started": ("PipelineStarted", "The run began (or resumed)."),
    "pipeline_resumed": ("PipelineResumed", "A resume opened a new segment of the run's log."),
    "pipeline_completed": ("PipelineCompleted", "The run succeeded; always the last event."),
    "pipeline_failed": ("PipelineFailed", "The run failed or was canceled; always the last event."),
    "stage_started": ("StageStarted", "A node began executing."),
    "stage_completed": ("StageCompleted", "A node finished (after its retries)."),
    "stage_attempt_started": ("StageAttemptStarted", "One attempt of a node began."),
    "stage_attempt_finished": ("StageAttemptFinished", "One attempt of a node ended."),
    "stage_heartbeat": ("StageHeartbeat", "An attempt is still running (a report, not progress)."),
    "stage_queued": (
        "StageQueued",
        "An attempt waits for cluster resources (--executor ray); its stage_attempt_started "
        "(with ray_node_id) follows when a node starts it.",
    ),
    "stage_retrying": ("StageRetrying", "A failed attempt will be retried after a delay."),
    "stage_retry_blocked": ("StageRetryBlocked", "A failure's class forbids a retry."),
    "status_ingestion_decision": ("StatusIngestionDecision", "Which status file decided."),
    "edge_selected": ("EdgeSelected", "Routing chose the next node."),
    "parallel_started": ("ParallelStarted", "A fan-out began."),
    "parallel_completed": ("ParallelCompleted", "A fan-out finished."),
    "parallel_branch_started": ("ParallelBranchStarted", "A fan-out branch began."),
    "parallel_branch_completed": ("ParallelBranchCompleted", "A fan-out branch ended."),
    "interview_started": ("InterviewStarted", "A human gate asked its question."),
    "interview_completed": ("InterviewCompleted", "A human gate got its answer."),
    "interview_timeout": ("InterviewTimeout", "A human gate timed out."),
    "checkpoint_saved": ("CheckpointSaved", "checkpoint.json was written."),
    "watchdog_timeout": ("WatchdogTimeout", "Nothing made progress for the stall timeout."),
    "cancellation_exit": ("CancellationExit", "An attempt or branch was stopped by cancellation."),
    "failure_cycle_break": ("FailureCycleBreak", "The cycle breaker ended a loop."),
    "llm_failover": ("LlmFailover", "A provider failed and another took over."),
    "llm_failover_blocked": ("LlmFailoverBlocked", "A pinned provider failed; no failover."),
    "loop_restart": ("LoopRestart", "A loop_restart edge started a fresh iteration."),
    "agent_tool_call": ("AgentToolCall", "A coding agent called one of its tools."),
    "agent_loop_detected": ("AgentLoopDetected", "A coding agent repeated the same calls."),
    "llm_retry": ("LlmRetry", "A provider call is retried after a delay."),
}

EVENT_TYPES: dict[str, type[Event]] = {
    wire: _event_type(cls, wire, doc) for wire, (cls, doc) in _NAMES.items()
}
globals().update({t.__name__: t for t in EVENT_TYPES.values()})
__all__ += sorted(t.__name__ for t in EVENT_TYPES.values())


def event_from_envelope(envelope: Mapping[str, Any]) -> Event:
    """The typed event for one NDJSON envelope."""
    cls = EVENT_TYPES.get(str(envelope.get("event")), Event)
    return cls(
        name=str(envelope["event"]),
        seq=int(envelope["seq"]),
        ts=str(envelope["ts"]),
        run_id=str(envelope["run_id"]),
        branch=str(envelope.get("branch", "")),
        data={k: v for k, v in envelope.items() if k not in _ENVELOPE},
    )
