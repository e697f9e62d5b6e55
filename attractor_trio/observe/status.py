"""What ``status``, ``runs`` and ``graph --run`` know about a run, read from its directory.

Two layers, so each decision is tested without files or processes:

* pure folds — :func:`fold_events` turns the event log into a :class:`RunView` (current stage,
  active attempts, retries, fan-out branches, last failure, per-node status);
  :func:`exit_code_for` maps a run's end to the exit code ``run`` would have returned;
* readers — :func:`read_report` (one run: ``manifest.json``, ``final.json``, ``live.json``,
  ``run.lock.json``, ``progress.ndjson``) and :func:`list_runs` (many runs, without scanning
  their logs, so listing stays cheap however long the runs were).

Why the event log and not only ``live.json``: ``live.json`` is throttled (it may lag a quarter
second behind), while every event is on disk the moment it is emitted. ``live.json`` is still
the fallback when there is no log yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from attrs import asdict, evolve, field, frozen

from ..core.exit_codes import (
    EXIT_FAIL,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_SIGHUP,
    EXIT_SIGINT,
    EXIT_SIGTERM,
)
from ..core.vocabulary import ExitPath
from ..errors import AttractorError
from ..events import TERMINAL_EVENTS
from ..persist.atomic import CorruptFileError
from ..persist.final import FinalRecord, read_final
from ..persist.live import read_live
from ..persist.lock import RunLockInfo, read_run_lock
from ..persist.manifest import MANIFEST_FILE_NAME, Manifest, read_manifest
from ..persist.progress import PROGRESS_FILE_NAME, read_progress
from .owner import OwnerState, owner_state

__all__ = [
    "TERMINAL_EVENTS",
    "ActiveAttempt",
    "BranchRow",
    "RunEntry",
    "RunReport",
    "RunView",
    "StageFailure",
    "exit_code_for",
    "fold_events",
    "list_runs",
    "parse_timestamp",
    "read_report",
    "read_status",
]

FINISHED_STATES: Final = frozenset({"success", "fail", "canceled"})


# ------------------------------------------------------------------------------ value objects


@frozen
class ActiveAttempt:
    """A stage attempt that started and has not finished."""

    node_id: str
    attempt_id: str
    attempt: int
    max_attempts: int  # 0 when unknown (``live.json`` does not record it)
    branch: str
    started_at: str

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], started_key: str) -> ActiveAttempt:
        """From a ``stage_attempt_started`` event (``started_key="ts"``) or a ``live.json``
        entry (``"started_at"``)."""
        return cls(
            node_id=str(data.get("node_id", "")),
            attempt_id=str(data.get("attempt_id", "")),
            attempt=int(data.get("attempt", 1)),
            max_attempts=int(data.get("max_attempts", 0)),
            branch=str(data.get("branch", "")),
            started_at=str(data.get(started_key, "")),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``live.json`` shape plus ``max_attempts``."""
        return asdict(self)


@frozen
class BranchRow:
    """One branch of a fan-out: ``status`` is ``running`` until ``parallel_branch_completed``."""

    node_id: str  # the fan-out (parallel) node
    branch_key: str
    parent: str  # the branch path the fan-out itself ran in ("" at top level)
    status: str
    duration_s: float | None
    started_at: str

    @property
    def path(self) -> str:
        """The branch path its events carry: ``<fanout>/<key>``, nested with ``/``."""
        own = f"{self.node_id}/{self.branch_key}"
        return f"{self.parent}/{own}" if self.parent else own

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "branch_key": self.branch_key,
            "branch": self.path,
            "status": self.status,
            "duration_s": self.duration_s,
        }


@frozen
class StageFailure:
    """The latest attempt that ended ``fail`` or ``retry``."""

    node_id: str
    branch: str
    failure_reason: str
    failure_class: str
    ts: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _str_dict(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@frozen
class RunView:
    """What the event log says about a run (see :func:`fold_events`)."""

    current_node: str = ""
    active: tuple[ActiveAttempt, ...] = ()
    retries: int = 0
    branches: tuple[BranchRow, ...] = ()
    last_failure: StageFailure | None = None
    #: node id → last finished status (``success|partial_success|retry|fail|skipped`` or
    #: ``canceled`` for an attempt stopped by cancellation), ``running`` while an attempt runs.
    node_status: dict[str, str] = field(factory=dict, converter=_str_dict)
    terminal: dict[str, Any] | None = None
    event_count: int = 0


# --------------------------------------------------------------------------------- the fold


class _Fold:
    """Mutable accumulator behind :func:`fold_events`; one method per event that matters."""

    def __init__(self) -> None:
        self.current_node = ""
        self.active: dict[str, ActiveAttempt] = {}
        self.retries = 0
        self.branches: dict[tuple[str, str, str], BranchRow] = {}
        self.last_failure: StageFailure | None = None
        self.finished: dict[str, str] = {}
        self.terminal: dict[str, Any] | None = None
        self.count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        self.count += 1
        name = event.get("event")
        handler = getattr(self, f"_on_{name}", None) if isinstance(name, str) else None
        if handler is not None:
            handler(event)

    def _on_stage_started(self, event: Mapping[str, Any]) -> None:
        if not event.get("branch"):
            self.current_node = str(event.get("node_id", ""))

    def _on_stage_attempt_started(self, event: Mapping[str, Any]) -> None:
        attempt = ActiveAttempt.from_mapping(event, started_key="ts")
        self.active[attempt.attempt_id] = attempt

    def _on_stage_attempt_finished(self, event: Mapping[str, Any]) -> None:
        self.active.pop(str(event.get("attempt_id", "")), None)
        status = str(event.get("status", ""))
        failure_class = str(event.get("failure_class") or "")
        node_id = str(event.get("node_id", ""))
        self.finished[node_id] = "canceled" if failure_class == "canceled" else status
        if status in ("fail", "retry"):
            self.last_failure = StageFailure(
                node_id=node_id,
                branch=str(event.get("branch", "")),
                failure_reason=str(event.get("failure_reason") or ""),
                failure_class=failure_class,
                ts=str(event.get("ts", "")),
            )

    def _on_stage_completed(self, event: Mapping[str, Any]) -> None:
        node_id = str(event.get("node_id", ""))
        if self.finished.get(node_id) != "canceled":  # keep why it ended, not just "fail"
            self.finished[node_id] = str(event.get("status", ""))

    def _on_stage_retrying(self, event: Mapping[str, Any]) -> None:
        self.retries += 1

    def _on_parallel_branch_started(self, event: Mapping[str, Any]) -> None:
        key = _branch_key(event)
        self.branches[key] = BranchRow(
            node_id=key[1],
            branch_key=key[2],
            parent=key[0],
            status="running",
            duration_s=None,
            started_at=str(event.get("ts", "")),
        )

    def _on_parallel_branch_completed(self, event: Mapping[str, Any]) -> None:
        key = _branch_key(event)
        duration = event.get("duration_s")
        row = self.branches.get(key) or BranchRow(key[1], key[2], key[0], "", None, "")
        self.branches[key] = evolve(
            row,
            status=str(event.get("status", "")),
            duration_s=float(duration) if isinstance(duration, int | float) else None,
        )

    def _on_pipeline_completed(self, event: Mapping[str, Any]) -> None:
        self.terminal = dict(event)
        self.active.clear()

    _on_pipeline_failed = _on_pipeline_completed

    def view(self) -> RunView:
        statuses = dict(self.finished)
        for attempt in self.active.values():
            statuses[attempt.node_id] = "running"
        return RunView(
            current_node=self.current_node,
            active=tuple(self.active.values()),
            retries=self.retries,
            branches=tuple(self.branches.values()),
            last_failure=self.last_failure,
            node_status=statuses,
            terminal=self.terminal,
            event_count=self.count,
        )


def _branch_key(event: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        str(event.get("branch", "")),
        str(event.get("node_id", "")),
        str(event.get("branch_key", "")),
    )


def fold_events(events: Iterable[Mapping[str, Any]]) -> RunView:
    """Summarize an event log (contract.md §4). Unknown events are counted and otherwise ignored,
    so a newer engine's log still folds."""
    fold = _Fold()
    for event in events:
        fold.feed(event)
    return fold.view()


def exit_code_for(status: str, exit_path: str, failure_reason: str) -> int:
    """The exit code ``run`` returns for a run that ended this way (contract.md §1).

    A canceled run's cause is only recorded in its reason ("run canceled: SIGINT"), so that
    is where SIGINT (130) and SIGHUP (129) are told from SIGTERM/``stop`` (143).
    """
    if exit_path == ExitPath.INTERNAL_ERROR:
        return EXIT_INTERNAL
    if status == "success":
        return EXIT_OK
    if status == "canceled":
        if "SIGINT" in failure_reason:
            return EXIT_SIGINT
        return EXIT_SIGHUP if "SIGHUP" in failure_reason else EXIT_SIGTERM
    return EXIT_FAIL


def terminal_exit_code(event: Mapping[str, Any]) -> int:
    """:func:`exit_code_for` of a ``pipeline_completed``/``pipeline_failed`` event."""
    return exit_code_for(
        str(event.get("status", "fail")),
        str(event.get("exit_path", ExitPath.COMPLETED if event.get("status") == "success" else "")),
        str(event.get("failure_reason") or ""),
    )


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 time from a run file, or ``None`` when absent or malformed."""
    try:
        parsed = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _seconds_between(start: str, end: str | datetime) -> float | None:
    begin = parse_timestamp(start)
    finish = parse_timestamp(end) if isinstance(end, str) else end
    if begin is None or finish is None:
        return None
    return max(0.0, (finish - begin).total_seconds())


# ------------------------------------------------------------------------------ one run


@frozen
class RunReport:
    """Everything ``status`` shows about one run."""

    logs_root: Path
    run_id: str
    name: str
    goal: str
    state: str
    current_node: str
    active: tuple[ActiveAttempt, ...]
    exit_path: str
    failure_reason: str
    failure_class: str
    start_time: str
    end_time: str
    elapsed_s: float | None
    owner_pid: int | None
    #: ``None`` when there is no lock (finished runs release it); ``False`` when the recorded
    #: owner process is gone, i.e. the run died unless ``final.json`` exists.
    owner_alive: bool | None
    view: RunView
    warnings: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def interrupted(self) -> bool:
        """The run stopped without a terminal record (killed, crashed); ``resume`` continues."""
        return not self.finished and self.owner_alive is not True

    def to_json(self) -> dict[str, Any]:
        """The contract.md §9 ``status --json`` object, plus extra keys (never fewer)."""
        failure = self.view.last_failure
        return {
            "run_id": self.run_id,
            # A dead run is never reported "running" (contract.md §10).
            "state": "interrupted" if self.interrupted else self.state,
            "current_node": self.current_node,
            "active_attempts": [attempt.to_json() for attempt in self.active],
            "failure_reason": self.failure_reason,
            "failure_class": self.failure_class,
            "logs_root": str(self.logs_root),
            "exit_path": self.exit_path,
            "name": self.name,
            "goal": self.goal,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "elapsed_s": None if self.elapsed_s is None else round(self.elapsed_s, 3),
            "retries": self.view.retries,
            "branches": [row.to_json() for row in self.view.branches],
            "last_failure": failure.to_json() if failure else None,
            "owner_pid": self.owner_pid,
            "owner_alive": self.owner_alive,
            "interrupted": self.interrupted,
            "warnings": list(self.warnings),
        }


def read_status(logs_root: Path) -> dict[str, Any]:
    """``{run_id, state, current_node, active_attempts, failure_reason, failure_class,
    logs_root, ...}`` — the ``status --json`` object."""
    return read_report(logs_root).to_json()


def read_events(logs_root: Path) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The log's complete events and warnings; a damaged log degrades to no events plus a
    warning, because a status report is most wanted exactly when something went wrong."""
    path = logs_root / PROGRESS_FILE_NAME
    try:
        return read_progress(path), ()
    except FileNotFoundError:
        return [], ()
    except CorruptFileError as exc:
        return [], (f"{exc}; stage details are unavailable",)


@frozen
class RunFiles:
    """The small JSON files of a run directory, as read at one moment."""

    final: FinalRecord | None
    live: dict[str, Any]
    lock: RunLockInfo | None
    manifest: Manifest | None
    #: ``None`` without a lock; else whether the recorded owner process still runs.
    owner_alive: bool | None

    @classmethod
    def read(cls, root: Path) -> RunFiles:
        """Raises :class:`AttractorError` naming a damaged file."""
        lock = read_run_lock(root)
        return cls(
            final=read_final(root),
            live=read_live(root) or {},
            lock=lock,
            manifest=read_manifest(root),
            owner_alive=None if lock is None else _owner_running(lock),
        )


def _owner_running(lock: RunLockInfo) -> bool:
    return owner_state(lock) is OwnerState.RUNNING


def read_report(
    logs_root: Path, *, now: datetime | None = None, with_events: bool = True
) -> RunReport:
    """Read one run directory (``with_events=False`` skips the event log, for listings).
    Raises :class:`AttractorError` when it holds no run, or names a damaged file."""
    files = RunFiles.read(logs_root)
    if files.final is None and not files.live and files.lock is None and files.manifest is None:
        raise AttractorError(
            f"{logs_root}: no manifest.json, live.json or final.json — not a run directory; "
            "pass the LOGS_ROOT that `attractor-trio run` printed"
        )
    events, warnings = read_events(logs_root) if with_events else ([], ())
    return build_report(logs_root, files, fold_events(events), warnings, now or datetime.now(UTC))


def build_report(
    root: Path, files: RunFiles, view: RunView, warnings: tuple[str, ...], now: datetime
) -> RunReport:
    """Combine the files and the event log (no IO). A finished run's record wins; a run
    whose owner is gone counts its elapsed time up to its last ``live.json`` update."""
    final, live, manifest, lock = files.final, files.live, files.manifest, files.lock
    start = manifest.start_time if manifest else (final.start_time if final else "")
    active: tuple[ActiveAttempt, ...] = ()
    if final is not None:
        end: str | datetime = final.end_time
        state = final.status
    else:
        end = now
        if files.owner_alive is not True and live.get("updated_at"):
            end = parse_timestamp(str(live["updated_at"])) or now
        state = str(live.get("state") or "starting")
        active = view.active if view.event_count else _live_attempts(live)
    run_id = _first(final and final.run_id, manifest and manifest.run_id, live.get("run_id"))
    return RunReport(
        logs_root=root,
        run_id=run_id or (lock.run_id if lock else ""),
        name=manifest.name if manifest else "",
        goal=manifest.goal if manifest else "",
        state=state,
        current_node=view.current_node or str(live.get("current_node") or ""),
        active=active,
        exit_path=final.exit_path if final else "",
        failure_reason=(final.failure_reason or "") if final else "",
        failure_class=(final.failure_class or "") if final else "",
        start_time=start,
        end_time=final.end_time if final else "",
        elapsed_s=_seconds_between(start, end),
        owner_pid=lock.pid if lock else None,
        owner_alive=files.owner_alive,
        view=view,
        warnings=warnings,
    )


def _first(*values: object) -> str:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return ""


def _live_attempts(live: Mapping[str, Any]) -> tuple[ActiveAttempt, ...]:
    attempts = live.get("active_attempts")
    if not isinstance(attempts, list):
        return ()
    return tuple(
        ActiveAttempt.from_mapping(item, started_key="started_at")
        for item in attempts
        if isinstance(item, dict)
    )


# ------------------------------------------------------------------------------ many runs


@frozen
class RunEntry:
    """One line of ``runs``: the run's report, or why its directory could not be read."""

    logs_root: Path
    report: RunReport | None
    error: str = ""

    @property
    def state(self) -> str:
        """The run's state, ``interrupted`` for a dead run, ``unknown`` when unreadable."""
        if self.report is None:
            return "unknown"
        return "interrupted" if self.report.interrupted else self.report.state

    def to_json(self) -> dict[str, Any]:
        report = self.report
        elapsed = report.elapsed_s if report else None
        return {
            "run_id": report.run_id if report else self.logs_root.name,
            "name": report.name if report else "",
            "state": self.state,
            "start_time": report.start_time if report else "",
            "duration_s": None if elapsed is None else round(elapsed, 3),
            "exit_path": report.exit_path if report else "",
            "failure_reason": report.failure_reason if report else "",
            "logs_root": str(self.logs_root),
            "error": self.error,
        }


def list_runs(directory: Path, *, now: datetime | None = None) -> list[RunEntry]:
    """Every subdirectory of ``directory`` holding a ``manifest.json``, oldest first (runs
    without a readable start time last). A damaged run directory becomes an entry with its
    error, never an exception."""
    if not directory.is_dir():
        raise AttractorError(
            f"{directory}: no such directory; pass the directory that holds your runs "
            "(default ./runs)"
        )
    entries = [
        _entry(child, now)
        for child in sorted(directory.iterdir())
        if child.is_dir() and (child / MANIFEST_FILE_NAME).exists()
    ]
    return sorted(entries, key=_start_key)


def _start_key(entry: RunEntry) -> tuple[bool, str]:
    start = entry.report.start_time if entry.report else ""
    return parse_timestamp(start) is None, start


def _entry(root: Path, now: datetime | None) -> RunEntry:
    try:
        return RunEntry(root, read_report(root, now=now, with_events=False))
    except (AttractorError, OSError, ValueError, TypeError) as exc:
        return RunEntry(root, None, error=str(exc))
