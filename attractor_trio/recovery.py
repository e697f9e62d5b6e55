"""Resuming an ended or interrupted run (contract.md §10 "Recovery").

A run's history is a list of *segments*: the first ``run`` and every ``resume`` after it. Each
segment ends with exactly one terminal event and one final record. When a segment is resumed,
its ``final.json`` becomes ``final-<k>.json`` (k = 1, 2, …) and the new segment opens with a
``pipeline_resumed`` event. A segment whose engine died (SIGKILL, power loss) has no final
record; resuming it first closes it honestly — a ``final-<k>.json`` and a terminal event that
say the engine died — so that every reader can rely on "one terminal event per segment".
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .core.vocabulary import ExitPath, FailureClass
from .errors import ConfigError
from .events import TERMINAL_EVENTS
from .persist.atomic import fsync_directory, utc_timestamp
from .persist.final import FINAL_FILE_NAME, FinalRecord, write_final
from .persist.progress import ProgressWriter, read_progress

__all__ = [
    "DIED_REASON",
    "RESUMABLE_EXIT_PATHS",
    "NotResumableError",
    "archive_final",
    "check_resumable",
    "close_dead_segment",
    "emit_terminal",
    "segments",
]

#: Ended runs that ``resume`` continues without ``--from``: interrupted, not decided.
RESUMABLE_EXIT_PATHS: Final = frozenset(
    {ExitPath.CANCELED, ExitPath.WATCHDOG, ExitPath.INTERNAL_ERROR}
)
DIED_REASON: Final = (
    "the engine died without writing final.json (killed, crashed or lost power); resumed"
)
_ARCHIVED = re.compile(r"final-(\d+)\.json")


class NotResumableError(ConfigError):
    """A run that failed on its own terms: continuing it needs ``--from NODE`` (exit 2)."""


def check_resumable(root: Path, final: FinalRecord) -> None:
    """Raise :class:`NotResumableError` unless ``final`` is an interruption."""
    if final.status == "canceled" or final.exit_path in RESUMABLE_EXIT_PATHS:
        return
    raise NotResumableError(
        f"run {final.run_id} failed ({final.exit_path}: {final.failure_reason or 'no reason'}); "
        f"resuming would fail the same way — continue at a node of your choice with "
        f"`attractor-trio resume {root} --from NODE`"
    )


def _next_index(root: Path) -> int:
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _ARCHIVED.fullmatch(p.name))]
    return max(taken, default=0) + 1


def archive_final(root: Path) -> str:
    """Rename ``final.json`` to the next ``final-<k>.json``; return the new name."""
    name = f"final-{_next_index(root)}.json"
    os.rename(root / FINAL_FILE_NAME, root / name)
    fsync_directory(root)
    return name


def close_dead_segment(root: Path, run_id: str, completed: Sequence[str]) -> str:
    """Close the last segment of a run whose engine died: ``final-<k>.json`` plus its terminal
    event. Returns the record's name, or ``""`` when there was nothing to close (no event, or
    the last segment already ended)."""
    path = root / "progress.ndjson"
    events = read_progress(path) if path.exists() else []
    if not events or events[-1]["event"] in TERMINAL_EVENTS:
        return ""
    started = next(
        (e["ts"] for e in reversed(events) if e["event"] == "pipeline_started"), events[0]["ts"]
    )
    record = FinalRecord(
        run_id=run_id,
        status="fail",
        exit_path=ExitPath.INTERNAL_ERROR,
        completed_nodes=completed,
        start_time=str(started),
        end_time=utc_timestamp(),
        duration_s=0.0,
        failure_reason=DIED_REASON,
        failure_class=FailureClass.TRANSIENT_INFRA,
    )
    name = f"final-{_next_index(root)}.json"
    write_final(root, record, name=name)
    emit_terminal(path, record)
    return name


def emit_terminal(path: Path, final: FinalRecord) -> None:
    """Append the terminal event that ``final`` implies to the log at ``path``."""
    writer = ProgressWriter.resume(path, final.run_id)
    try:
        if final.status == "success":
            writer.emit("pipeline_completed", status="success", duration_s=final.duration_s)
        else:
            writer.emit(
                "pipeline_failed",
                status=final.status,
                failure_reason=final.failure_reason or "",
                failure_class=final.failure_class or "",
                exit_path=final.exit_path,
                duration_s=final.duration_s,
            )
        writer.sync()
    finally:
        writer.close()


def segments(events: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split a run's events at each ``pipeline_resumed`` (which opens a new segment)."""
    parts: list[list[dict[str, Any]]] = [[]]
    for event in events:
        if event.get("event") == "pipeline_resumed" and parts[-1]:
            parts.append([])
        parts[-1].append(event)
    return parts
