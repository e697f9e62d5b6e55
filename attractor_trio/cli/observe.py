"""``status [--follow] [--json]``, ``runs [DIR]`` and ``graph PIPELINE.dot`` (contract.md §1, §9).

Observing is read-only and runs in another process than the run, so everything here reads
files the run writes atomically (``final.json``, ``live.json``, the lock) or appends to
(``progress.ndjson``), and never holds one open between looks: ``live.json`` is replaced by
rename on every update, and a held descriptor would keep showing the old file.

``status --follow`` polls ``progress.ndjson`` (the stdlib has no portable file-change wait)
and consumes only complete lines, keeping a partial last line until its newline arrives. It
ends when the terminal event arrives — with the exit code ``run`` itself would have returned —
or when the run's owner process is gone without one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click
from attrs import frozen

from ..core.exit_codes import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ..dot.graph import Graph
from ..errors import AttractorError, error_line
from ..observe.display import describe, summary_line
from ..observe.owner import OwnerState, owner_state
from ..observe.status import (
    TERMINAL_EVENTS,
    RunEntry,
    RunReport,
    exit_code_for,
    list_runs,
    parse_timestamp,
    read_report,
    terminal_exit_code,
)
from ..persist.final import FinalRecord, read_final
from ..persist.lock import read_run_lock
from ..persist.progress import PROGRESS_FILE_NAME
from .run import max_input_size_option

__all__ = [
    "FollowEnd",
    "ProgressTail",
    "follow_run",
    "format_duration_human",
    "format_report",
    "format_runs",
    "graph_command",
    "quiet_verdict",
    "register",
    "runs_command",
    "split_complete_lines",
    "status_command",
]

POLL_INTERVAL_S: Final = 0.2
#: How long ``--follow`` waits for a run that has neither a lock nor events yet (``run``
#: creates the directory a moment before it takes the lock).
STARTUP_GRACE_S: Final = 10.0
REASON_WIDTH: Final = 60


# ------------------------------------------------------------------------ tailing the log


def split_complete_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """``(complete lines without their newline, the unterminated rest)``."""
    *lines, rest = data.split(b"\n")
    return lines, rest


class ProgressTail:
    """Reads the events appended to ``progress.ndjson`` since the last :meth:`poll`.

    Only newline-terminated lines are consumed; a partial last line (a write in progress, or
    a torn line after a crash) is kept and completed by the next read. The file is opened per
    poll. If it shrank (``resume`` cuts a torn last line off before appending), the partial
    line is dropped and reading continues after the last complete line; events are never
    repeated because anything at or below the last seen ``seq`` is skipped.
    """

    def __init__(self, path: Path, on_bad_line: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.on_bad_line = on_bad_line
        self.last_seq = 0
        self.seen = 0
        self._offset = 0  # bytes read so far, including the pending partial line
        self._pending = b""
        self._line_no = 0

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._offset:
                    self._offset -= len(self._pending)
                    self._pending = b""
                    if size < self._offset:  # replaced by a shorter file: start over
                        self._offset, self._line_no = 0, 0
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines, self._pending = split_complete_lines(self._pending + data)
        return [event for line in lines if (event := self._accept(line)) is not None]

    def _accept(self, line: bytes) -> dict[str, Any] | None:
        self._line_no += 1
        if not line.strip():
            return None
        try:
            event = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            event = None
        seq = event.get("seq") if isinstance(event, dict) else None
        if not isinstance(event, dict) or not isinstance(seq, int) or "event" not in event:
            if self.on_bad_line is not None:
                self.on_bad_line(
                    f"{self.path}:{self._line_no}:1: warning: skipped a line that is not a "
                    "JSON event"
                )
            return None
        if seq <= self.last_seq:
            return None
        self.last_seq = seq
        self.seen += 1
        return event


# ----------------------------------------------------------------------------- following


@frozen
class FollowEnd:
    """How following ended: the exit code, and a message when no terminal event was seen."""

    exit_code: int
    message: str = ""


def quiet_verdict(
    root: Path,
    owner: OwnerState | None,
    final: FinalRecord | None,
    seen_events: int,
    waited_s: float,
    startup_grace_s: float = STARTUP_GRACE_S,
) -> FollowEnd | None:
    """Whether to stop following after a poll that brought no terminal event (no IO).

    ``owner`` is ``None`` when there is no lock file. The owner must be observed *before*
    the poll: it writes ``final.json``, then the terminal event, then drops the lock, so an
    owner seen gone before a read that still lacks the terminal event will never write it.
    """
    if owner is OwnerState.RUNNING:
        return None
    if final is not None:
        return FollowEnd(
            exit_code_for(final.status, final.exit_path, final.failure_reason or ""),
            f"attractor-trio: run {final.run_id} ended {final.status} ({final.exit_path}) "
            f"but its log has no terminal event (final.json says so)",
        )
    if owner is None and not seen_events and waited_s < startup_grace_s:
        return None  # the run may be about to take its lock
    why = "no process owns it (no run.lock.json)" if owner is None else "its process is gone"
    return FollowEnd(
        EXIT_FAIL,
        f"attractor-trio: error: the run in {root} is not running: {why} and there is no "
        f"final.json, so it died (killed or crashed); continue it with "
        f"`attractor-trio resume {root}`",
    )


def _owner(root: Path) -> OwnerState | None:
    lock = read_run_lock(root)
    return None if lock is None else owner_state(lock)


def follow_run(
    root: Path,
    on_event: Callable[[dict[str, Any]], None],
    *,
    poll_interval: float = POLL_INTERVAL_S,
    startup_grace_s: float = STARTUP_GRACE_S,
    on_bad_line: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FollowEnd:
    """Hand every event of the run to ``on_event`` — those already written, then new ones as
    they are appended — until the terminal event, and say how the run ended."""
    tail = ProgressTail(root / PROGRESS_FILE_NAME, on_bad_line)
    started = clock()
    segments_ended = 0
    while True:
        owner = _owner(root)
        events = tail.poll()
        for index, event in enumerate(events):
            on_event(event)
            if event["event"] not in TERMINAL_EVENTS:
                continue
            segments_ended += 1
            if _run_ended(root, segments_ended, events[index + 1 :]):
                return FollowEnd(terminal_exit_code(event))
        waited = clock() - started
        end = quiet_verdict(root, owner, read_final(root), tail.seen, waited, startup_grace_s)
        if end is not None:
            return end
        sleep(poll_interval)


def _run_ended(root: Path, segment: int, rest: list[dict[str, Any]]) -> bool:
    """Whether the terminal event that ended the ``segment``-th segment ends the run: not when
    the log goes on (``pipeline_resumed``), nor when a resume has already moved that
    segment's record aside as ``final-<segment>.json`` (contract.md §10)."""
    return not rest and not (root / f"final-{segment}.json").exists()


# ------------------------------------------------------------------------------ formatting


def format_duration_human(seconds: float | None) -> str:
    """``0.42s``, ``12.3s``, ``4m 05s``, ``2h 03m`` — for people, not for parsing."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _short_time(timestamp: str) -> str:
    return timestamp[:19].replace("T", " ") + "Z" if len(timestamp) >= 19 else timestamp or "-"


def _truncate(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _state_line(report: RunReport) -> str:
    if report.finished:
        return f"{report.state} ({report.exit_path})"
    if report.interrupted:
        pid = f"process {report.owner_pid}" if report.owner_pid else "its process"
        return (
            f"interrupted — last state {report.state}, {pid} is gone and there is no "
            f"final.json; continue with `attractor-trio resume {report.logs_root}`"
        )
    return report.state


def _attempt_lines(report: RunReport, now: datetime) -> list[str]:
    lines = []
    for attempt in report.active:
        where = f" [{attempt.branch}]" if attempt.branch else ""
        of = f"/{attempt.max_attempts}" if attempt.max_attempts else ""
        started = parse_timestamp(attempt.started_at)
        running = (
            f", running {format_duration_human((now - started).total_seconds())}"
            if started is not None
            else ""
        )
        lines.append(f"  {attempt.node_id}{where}: attempt {attempt.attempt}{of}{running}")
    return lines


def _branch_lines(report: RunReport, now: datetime) -> list[str]:
    rows = report.view.branches
    width = max((len(row.path) for row in rows), default=0)
    lines = []
    for row in rows:
        started = parse_timestamp(row.started_at)
        duration = row.duration_s
        if duration is None and row.status == "running" and started is not None:
            duration = (now - started).total_seconds()
        lines.append(f"  {row.path:<{width}}  {row.status:<15} {format_duration_human(duration)}")
    return lines


def format_report(report: RunReport, now: datetime | None = None) -> str:
    """The readable ``status`` summary."""
    now = now or datetime.now(UTC)
    name = f" ({report.name})" if report.name else ""
    lines = [f"run:      {report.run_id}{name}", f"state:    {_state_line(report)}"]
    if report.current_node:
        last = " (last)" if report.finished or report.interrupted else ""
        lines.append(f"stage:    {report.current_node}{last}")
    attempts = _attempt_lines(report, now)
    if attempts:
        lines += ["active:", *attempts]
    started = f" (started {_short_time(report.start_time)})" if report.start_time else ""
    lines.append(f"elapsed:  {format_duration_human(report.elapsed_s)}{started}")
    lines.append(f"retries:  {report.view.retries}")
    branches = _branch_lines(report, now)
    if branches:
        lines += ["branches:", *branches]
    lines += _failure_lines(report)
    lines += [f"warning:  {warning}" for warning in report.warnings]
    lines.append(f"logs:     {report.logs_root}")
    return "\n".join(lines)


def _failure_lines(report: RunReport) -> list[str]:
    """The run's failure reason, and the last failing stage (once, when they agree)."""
    lines = []
    failure = report.view.last_failure
    stage = ""
    if failure is not None:
        stage = failure.node_id + (f" [{failure.branch}]" if failure.branch else "")
    if report.failure_reason:
        klass = f" [{report.failure_class}]" if report.failure_class else ""
        same = failure is not None and failure.failure_reason == report.failure_reason
        at = f" (at {stage})" if same else ""
        lines.append(f"reason:   {report.failure_reason}{klass}{at}")
        if same:
            return lines
    if failure is not None:
        klass = f" [{failure.failure_class}]" if failure.failure_class else ""
        lines.append(f"last failure: {stage}: {failure.failure_reason}{klass}")
    return lines


def _relative(message: str, root: Path) -> str:
    """The run directory is the row's subject; file names inside it are enough."""
    return message.replace(f"{root}{os.sep}", "")


def format_runs(entries: list[RunEntry]) -> str:
    """One aligned line per run, with a header."""
    rows = [("RUN ID", "PIPELINE", "STATE", "STARTED", "DURATION", "REASON")]
    for entry in entries:
        data = entry.to_json()
        rows.append(
            (
                data["run_id"],
                data["name"] or "-",
                data["state"],
                _short_time(data["start_time"]),
                format_duration_human(data["duration_s"]),
                _truncate(
                    _relative(entry.error, entry.logs_root) or data["failure_reason"], REASON_WIDTH
                ),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in rows
    )


# ------------------------------------------------------------------------------ commands


def _event_line(event: dict[str, Any]) -> str | None:
    line = describe(event)
    return None if line is None else f"{str(event.get('ts', ''))[11:19]} {line}"


def _follow(root: Path, as_json: bool, quiet: bool = False) -> int:
    """Stream the run's events; ``quiet`` shows none of them, only how the run ended (the
    same line as ``run --quiet``) or why following stopped."""
    last_terminal: dict[str, Any] = {}

    def show(event: dict[str, Any]) -> None:
        if quiet:
            if event["event"] in TERMINAL_EVENTS:
                last_terminal.update(event)
        elif as_json:
            click.echo(json.dumps(event, ensure_ascii=False))
        elif (line := _event_line(event)) is not None:
            click.echo(line)

    def warn(message: str) -> None:
        click.echo(message, err=True)

    if not quiet:
        click.echo(f"following {root} (Ctrl-C stops following, not the run)", err=True)
    try:
        end = follow_run(root, show, on_bad_line=warn)
    except KeyboardInterrupt:
        click.echo("stopped following; the run goes on", err=True)
        return EXIT_INTERRUPTED
    if end.message:
        click.echo(end.message, err=True)
    elif quiet and last_terminal:
        click.echo(_terminal_line(root, last_terminal), err=True)
    return end.exit_code


def _terminal_line(root: Path, event: dict[str, Any]) -> str:
    """``run --quiet``'s last line, from the terminal event a follower saw."""
    status = str(event.get("status", ""))
    exit_path = str(event.get("exit_path") or ("completed" if status == "success" else ""))
    return summary_line(status, exit_path, root, str(event.get("failure_reason") or ""))


def _quiet_state_line(report: RunReport) -> str:
    """``status --quiet``: the state on one line; a finished run's is ``run --quiet``'s."""
    if report.finished:
        return summary_line(report.state, report.exit_path, report.logs_root, report.failure_reason)
    at = f" at {report.current_node}" if report.current_node and not report.interrupted else ""
    return f"attractor-trio: {_state_line(report)}{at} in {report.logs_root}"


@click.command("status")
@click.argument(
    "logs_root", metavar="LOGS_ROOT", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--follow", "-f", is_flag=True, help="Stream events until the run ends; exit like `run`."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (with --follow: NDJSON).")
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="One line: the run's state (with --follow: only errors and how the run ended).",
)
def status_command(logs_root: Path, follow: bool, as_json: bool, quiet: bool) -> None:
    """Show the state of the run in LOGS_ROOT, or follow it to its end.

    With --follow the exit code is the run's: 0 success, 1 fail (or the run died), 129/130/143
    canceled by SIGHUP/SIGINT/SIGTERM, 70 internal error.
    """
    try:
        if follow:
            code = _follow(logs_root, as_json, quiet and not as_json)
        else:
            report = read_report(logs_root)
            if quiet and not as_json:
                click.echo(_quiet_state_line(report))
            elif as_json:
                click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
            else:
                click.echo(format_report(report))
            code = EXIT_OK
    except AttractorError as exc:
        click.echo(error_line(exc), err=True)
        code = EXIT_USAGE
    sys.exit(code)


@click.command("runs")
@click.argument(
    "directory", metavar="[DIR]", default="runs", type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
def runs_command(directory: Path, as_json: bool) -> None:
    """List the runs under DIR (default ./runs), oldest first."""
    try:
        entries = list_runs(directory)
    except AttractorError as exc:
        click.echo(error_line(exc), err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps([entry.to_json() for entry in entries], indent=2))
    elif entries:
        click.echo(format_runs(entries))
    else:
        click.echo(f"no runs in {directory}", err=True)
    sys.exit(EXIT_OK)


@click.command("graph")
@click.argument(
    "pipeline", metavar="PIPELINE.dot", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--run",
    "run_root",
    metavar="LOGS_ROOT",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Color the nodes by this run's stage statuses.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file: .dot (always), .svg/.png/.pdf (needs Graphviz).",
)
@max_input_size_option
def graph_command(pipeline: Path, run_root: Path | None, output: Path, max_input_size: int) -> None:
    """Render PIPELINE.dot, optionally colored by a run: green success, red fail, yellow
    running, grey canceled, orange partial success, white not reached."""
    from ..observe.render import GraphvizError, output_format, render_dot, write_rendering

    try:
        fmt = output_format(output)
        _check_output_dir(output)
        text = render_dot(*_graph_and_statuses(pipeline, run_root, max_input_size))
        write_rendering(text, output, fmt)
    except GraphvizError as exc:
        click.echo(error_line(exc), err=True)
        sys.exit(EXIT_FAIL)
    except OSError as exc:
        click.echo(f"attractor-trio: error: -o {output}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    except AttractorError as exc:
        message = str(exc)
        prefix = "" if message.startswith(str(pipeline)) else "attractor-trio: error: "
        click.echo(f"{prefix}{message}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"wrote {output}", err=True)
    sys.exit(EXIT_OK)


def _check_output_dir(output: Path) -> None:
    """``-o`` into a missing directory (or below a file) is a usage error, checked before
    anything is rendered (contract.md §10)."""
    parent = output.absolute().parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise AttractorError(f"-o {output}: the directory {parent} {what}")


def _graph_and_statuses(
    pipeline: Path, run_root: Path | None, max_input_size: int
) -> tuple[Graph, dict[str, str] | None]:
    from ..dot import load_dot
    from ..observe.status import fold_events, read_events
    from ..persist.manifest import dot_sha256, read_manifest

    graph = load_dot(pipeline, max_size=max_input_size)
    if run_root is None:
        return graph, None
    manifest = read_manifest(run_root)
    if manifest is None:
        raise AttractorError(
            f"{run_root}: no manifest.json — not a run directory; pass the LOGS_ROOT that "
            "`attractor-trio run` printed"
        )
    if manifest.dot_sha256 != dot_sha256(graph.source):
        click.echo(
            f"attractor-trio: warning: run {manifest.run_id} used a different version of "
            f"{pipeline} (see {run_root / 'graph.dot'}); colors may not match",
            err=True,
        )
    events, warnings = read_events(run_root)
    for warning in warnings:
        click.echo(f"attractor-trio: warning: {warning}", err=True)
    return graph, fold_events(events).node_status


def register(group: click.Group) -> None:
    """Add ``status``, ``runs`` and ``graph`` to ``group`` (the ``attractor-trio`` command)."""
    for command in (status_command, runs_command, graph_command):
        group.add_command(command)
