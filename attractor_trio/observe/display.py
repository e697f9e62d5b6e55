"""Human progress display for ``run``/``resume``: plain lines, or a rich live panel on a TTY.

Both are event sinks: they see exactly the events written to ``progress.ndjson``, so what a
user watches is what the run records.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["JsonLines", "PlainDisplay", "RichDisplay", "describe", "summary_line"]

#: Records for machines (``progress.ndjson``, ``--json``, SSE), not lines for people: which
#: status file decided an attempt is bookkeeping; a rejected file shows in the attempt's
#: failure reason anyway.
_QUIET_EVENTS = frozenset(
    {
        "stage_heartbeat",
        "checkpoint_saved",
        "stage_started",
        "stage_completed",
        "status_ingestion_decision",
    }
)


def describe(event: dict[str, Any]) -> str | None:
    """One human line for an event, or ``None`` for events not worth a line."""
    name = event["event"]
    where = f"[{event['branch']}] " if event.get("branch") else ""
    node = event.get("node_id", "")
    if name == "pipeline_started":
        verb = "resumed" if event.get("resumed") else "started"
        return f"pipeline {event['name']} {verb} (logs: {event['logs_root']})"
    if name == "stage_attempt_started":
        return f"{where}▶ {node} attempt {event['attempt']}/{event['max_attempts']}"
    if name == "stage_attempt_finished":
        reason = f" — {event['failure_reason']}" if event.get("failure_reason") else ""
        return f"{where}  {node} → {event['status']}{reason}"
    if name == "stage_retrying":
        return f"{where}  {node}: retrying in {event['delay_s']}s (attempt {event['attempt']})"
    if name == "stage_retry_blocked":
        return f"{where}  {node}: not retried ({event['failure_class']})"
    if name == "edge_selected":
        return f"{where}  {event['from_node']} → {event['to_node']} ({event['method']})"
    if name in ("pipeline_completed", "pipeline_failed"):
        reason = f": {event['failure_reason']}" if event.get("failure_reason") else ""
        return f"pipeline {event['status']} after {event['duration_s']}s{reason}"
    if name == "agent_tool_call":
        failed = " (error)" if event.get("is_error") else ""
        return f"{where}  {node}: tool {event['tool']}{failed}"
    if name == "agent_loop_detected":
        return f"{where}  {node}: agent repeating {event.get('tools')}; warned it"
    if name in _QUIET_EVENTS:
        return None
    fields = {k: v for k, v in event.items() if k not in ("seq", "ts", "run_id", "event", "branch")}
    return f"{where}{name} {json.dumps(fields, ensure_ascii=False)}"


class JsonLines:
    """``--json``: every event as one NDJSON line on stdout, nothing else there."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.stream.flush()


def summary_line(status: str, exit_path: str, logs_root: object, failure_reason: str) -> str:
    """The one line ``--quiet`` prints when a run ends (``run``, ``resume``, ``status``):
    how it ended, where its files are, and why it failed."""
    reason = f" — {failure_reason}" if failure_reason else ""
    return f"attractor-trio: {status} ({exit_path}) in {logs_root}{reason}"


class PlainDisplay:
    """Timestamped lines on stderr when it is not a terminal (``quiet``: only the terminal
    event's line; the CLI's ``--quiet`` uses no display at all, see :func:`summary_line`)."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def __call__(self, event: dict[str, Any]) -> None:
        terminal = event["event"] in ("pipeline_completed", "pipeline_failed")
        if self.quiet and not terminal:
            return
        line = describe(event)
        if line is not None:
            self.stream.write(f"{event['ts'][11:19]} {line}\n")
            self.stream.flush()


class RichDisplay:
    """A live panel of active attempts (stage, attempt, elapsed) above the event lines."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.active: dict[str, dict[str, Any]] = {}
        self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
        self.started = False

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.started:
            self.live.start()
            self.started = True
        name = event["event"]
        if name == "stage_attempt_started":
            self.active[event["attempt_id"]] = {**event, "t0": time.monotonic()}
        elif name == "stage_attempt_finished":
            self.active.pop(event["attempt_id"], None)
        line = describe(event)
        if line is not None:
            self.live.console.print(line, highlight=False, markup=False)
        self.live.update(self._table())
        if name in ("pipeline_completed", "pipeline_failed"):
            self.close()

    def close(self) -> None:
        if self.started:
            self.live.stop()
            self.started = False

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for attempt in self.active.values():
            where = f"[{attempt['branch']}] " if attempt["branch"] else ""
            elapsed = now - attempt["t0"]
            table.add_row(
                f"⏳ {where}{attempt['node_id']}",
                f"attempt {attempt['attempt']}/{attempt['max_attempts']}",
                f"{elapsed:5.1f}s",
            )
        return table
