"""The tool handler (spec §4.10, contract.md §3): ``bash -c <tool_command>`` as a process group.

The process gets the ``ATTRACTOR_*`` environment, runs in the attempt's workdir with stdin
closed, and writes ``stdout.log``/``stderr.log`` in the stage directory. The outcome is decided
by :func:`tool_outcome`, a pure function of what was observed:

* a valid status file decides — found by status ingestion (:mod:`~attractor_trio.persist.status`,
  contract.md §3): ``$ATTRACTOR_STATUS_PATH``, else ``$ATTRACTOR_WORKDIR/status.json``, else
  ``$ATTRACTOR_WORKDIR/.attractor/status.json``, each gated by its ownership keys. An invalid
  or foreign canonical file fails the stage as ``deterministic``: rerunning the same command
  writes the same bad file;
* else exit 0 is ``success`` and anything else ``fail``, with a reason that names the exit code
  (or the signal) and the tail of stderr — or of stdout when stderr is empty, since many tools
  (pytest, make) report their errors there (AMBIG-24).

``tool.output`` (always set, also on failure) is this attempt's stdout with trailing newlines
removed, as shell command substitution does, so ``condition="context.tool.output=ok"`` matches
``echo ok``. Beyond 10 KiB it keeps the head and the tail around an explicit marker that names
the full log. Every attempt that ran a process (or adopted an orphan) emits one
``status_ingestion_decision`` event. Stale status files are removed from all three places
before the process starts — but not when adopting, since the orphan may have written them.

Crash journal: the command runs under a tiny ``bash`` wrapper that first *claims* its attempt
(creates ``<stage root>/.tool-claims/<attempt_id>`` holding its pid, by ``ln``, which fails if
the file exists), records its pid in ``.tool-started``, runs the command, and records the exit
code in ``.tool-exit`` (atomically, by rename). The wrapper is in the stage's process group,
not in the engine, so it finishes even when the engine is SIGKILLed. A resumed run then
*adopts* the orphaned attempt (:meth:`ToolHandler.adopt`): it waits for the orphan and uses
its recorded exit code instead of running the command a second time. When the orphan has not
claimed yet (the engine died between spawning ``bash`` and ``bash`` starting, and the resumed
engine got there first) the resumed run claims the attempt itself, as ``revoked``: the late
orphan then exits without running anything, and the command runs once, in the new attempt.
Either way a command is never run twice because the engine died. Not so on an executor
(contract.md §10): a remote attempt dies with its driver, and its journal reaches the driver
only with its other files, perhaps partly (``executors.base.orphans_outlive_the_driver``), so
``resume`` runs it again as a new attempt instead of adopting it.

The node ``timeout`` is not handled here: the engine's attempt scope carries the deadline, and
:func:`~attractor_trio.aio.process.run_in_process_group` kills the whole group before the
cancellation propagates.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import trio
from attrs import frozen

from ..aio.process import ProcessResult, live_group_members
from ..backends.executors.base import orphans_outlive_the_driver, run_stage_process
from ..core.failures import DETERMINISTIC, STRUCTURAL
from ..core.outcome import Outcome, StageStatus, StatusFileError
from ..dot.graph import Graph, Node
from ..persist.atomic import write_bytes_atomic
from ..persist.logtext import decode_head, decode_tail, file_size, tail_text
from ..persist.status import (
    clear_stale_status,
    ingest_status,
    read_status_file,
)
from ..stage_env import stage_environment
from .base import AttemptInfo, require_attempt

if TYPE_CHECKING:
    from ..context import Context

__all__ = [
    "OUTPUT_LIMIT_BYTES",
    "ToolHandler",
    "clip_output",
    "read_status_file",
    "tail_text",
    "tool_outcome",
]

#: ``tool.output`` keeps at most this many bytes of stdout (half head, half tail).
OUTPUT_LIMIT_BYTES = 10 * 1024
#: The failure reason quotes at most this much of the end of stderr.
TAIL_BYTES = 2 * 1024


@final
class ToolHandler:
    """Runs a node's ``tool_command`` (S4.10-01..05)."""

    def runs_one_process(self, node: Node) -> bool:
        """The attempt *is* its process: on a cluster it starts when a node starts it
        (contract.md §10, ``executors.defers_start``)."""
        return True

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        command = node.tool_command
        if not command.strip():
            return Outcome(
                StageStatus.FAIL,
                failure_reason="No tool_command specified",
                failure_class=STRUCTURAL,
            )
        attempt = require_attempt(node, logs_root)
        try:
            logs = _prepare_stage_dir(attempt)
        except StatusFileError as exc:
            return Outcome(StageStatus.FAIL, failure_reason=str(exc), failure_class=DETERMINISTIC)
        journal = _Journal(attempt)
        journal.clear()
        try:
            result = await run_stage_process(
                journal.argv(command),
                cwd=attempt.workdir,
                env=stage_environment(attempt),
                stdout_path=logs.stdout,
                stderr_path=logs.stderr,
                kill_grace=attempt.kill_grace,
                on_output=attempt.progress,
            )
        except OSError as exc:
            return Outcome(
                StageStatus.FAIL,
                failure_reason=f"tool could not start (bash -c in {attempt.workdir}): {exc}",
            )
        result = journal.refine(result)
        return await _outcome_from_logs(command, result, logs, attempt)

    async def adopt(
        self, node: Node, context: Context, graph: Graph, attempt: AttemptInfo
    ) -> Outcome | None:
        """The outcome of an attempt a crashed engine left running, or ``None`` to re-run.

        Waits (inside the attempt's scope: its deadline and the run's cancellation apply)
        while the orphan is alive; kills its group if cancelled meanwhile.
        """
        if not orphans_outlive_the_driver():
            return None  # remote: it died with the driver; a new attempt runs it (contract.md §10)
        journal = _Journal(attempt)
        pid = journal.started_pid() or journal.claimed_pid()
        if pid is None:
            if journal.revoke():
                return None  # it never started, and now never will: run the command anew
            pid = journal.claimed_pid()  # it claimed just now
            if pid is None:
                return None  # revoked by an earlier resume
        try:
            # Polling is the only way to watch a process that is not our child.
            while journal.exit_code() is None and live_group_members(pid):  # noqa: ASYNC110
                await trio.sleep(_ADOPT_POLL_S)
        except BaseException:
            _kill_group(pid)
            raise
        code = journal.exit_code()
        if code is None or code == _LOST_ITS_PIPE:
            # With secrets, output runs through the engine's pipes (contract.md §10): an orphan
            # that wrote after the engine died was killed by SIGPIPE. It was interrupted, not
            # finished, so it runs again as a new attempt like any interrupted stage.
            return None
        logs = _StageLogs(attempt.stage_dir / "stdout.log", attempt.stage_dir / "stderr.log", 0, 0)
        result = journal.refine(ProcessResult(code, False, 0.0, 0, 0))
        outcome = await _outcome_from_logs(node.tool_command, result, logs, attempt)
        note = "adopted the attempt left running by a crashed engine"
        return outcome.evolve(notes=f"{outcome.notes}; {note}" if outcome.notes else note)


async def _outcome_from_logs(
    command: str, result: ProcessResult, logs: _StageLogs, attempt: AttemptInfo
) -> Outcome:
    decision = await ingest_status(attempt)
    return tool_outcome(
        command,
        result,
        output=logs.read_output(),
        stderr_tail=tail_text(logs.read_tail(logs.stderr, logs.stderr_start)),
        stdout_tail=tail_text(logs.read_tail(logs.stdout, logs.stdout_start)),
        status=decision.status_or_error(),
    )


_ADOPT_POLL_S = 0.05
#: The exit code a shell reports for a command killed by SIGPIPE.
_LOST_ITS_PIPE = 128 + signal.SIGPIPE
# $1 command, $2 exit-code file, $3 started file, $4 claim file. The claim comes first: a
# wrapper that loses it to a resumed engine's "revoked" exits without running the command (and
# nobody waits for it); losing it to anything else is an error. The command runs as a child so
# the wrapper can outlive it; the wrapper ignores SIGTERM (set after the fork, so the command
# keeps the default) and waits, which keeps the grace period for the command itself: SIGTERM
# reaches the whole group, the wrapper stays the live leader until the command exits or
# SIGKILL comes.
# A command that died by a signal has that signal re-raised on the wrapper, so the engine
# still reports "killed by signal".
_CLAIMS_DIR = ".tool-claims"
_REVOKED = b"revoked"
_WRAPPER = (
    'if ! { printf "%s" "$$" > "$4.$$" && ln "$4.$$" "$4"; } 2>/dev/null; then '
    'rm -f "$4.$$"; [ "$(cat "$4" 2>/dev/null)" = revoked ] && exit 0; '
    'echo "attractor-tool: cannot claim the attempt ($4)" >&2; exit 125; fi; rm -f "$4.$$"; '
    'printf "%s" "$$" > "$3"; bash -c "$1" & child=$!; trap "" TERM; '
    'wait "$child" 2>/dev/null; code=$?; '
    'printf "%s\\n" "$code" > "$2.tmp" && mv -f "$2.tmp" "$2"; '
    'if [ "$code" -gt 128 ] && [ "$code" -lt 160 ]; then '
    'trap - "$((code - 128))"; kill -s "$((code - 128))" "$$"; fi; '
    'exit "$code"'
)


class _Journal:
    """The claim, ``.tool-started`` and ``.tool-exit``: what survives the engine's own death.

    Claims live beside the stage dirs, one per attempt id, and are never removed: archiving a
    stage dir for the next attempt must not hand a late orphan an unclaimed attempt.
    """

    def __init__(self, attempt: AttemptInfo) -> None:
        stage_dir = attempt.stage_dir
        self.started = stage_dir / ".tool-started"
        self.exit = stage_dir / ".tool-exit"
        self.claim = stage_dir.parent / _CLAIMS_DIR / attempt.attempt_id

    def argv(self, command: str) -> list[str]:
        self.claim.parent.mkdir(parents=True, exist_ok=True)
        return [
            "bash",
            "-c",
            _WRAPPER,
            "attractor-tool",
            command,
            str(self.exit),
            str(self.started),
            str(self.claim),
        ]

    def revoke(self) -> bool:
        """Claim the attempt for nobody; ``False`` when its wrapper claimed it first."""
        self.claim.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_bytes_atomic(self.claim, _REVOKED, exclusive=True, durable=False)
        except FileExistsError:
            return False
        return True

    def claimed_pid(self) -> int | None:
        """The wrapper's pid from its claim; ``None`` when unclaimed or revoked."""
        return _recorded_int(self.claim)

    def clear(self) -> None:
        for path in (self.started, self.exit, self.exit.with_name(".tool-exit.tmp")):
            path.unlink(missing_ok=True)

    def started_pid(self) -> int | None:
        return _recorded_int(self.started)

    def exit_code(self) -> int | None:
        return _recorded_int(self.exit)

    def refine(self, result: ProcessResult) -> ProcessResult:
        """Prefer the command's own exit code (recorded by the wrapper) when there is one."""
        code = self.exit_code()
        if code is None or result.signaled or code == result.exit_code:
            return result
        return ProcessResult(
            code, False, result.duration_s, result.stdout_bytes, result.stderr_bytes
        )


def _recorded_int(path: Path) -> int | None:
    """The number a wrapper wrote to ``path``; ``None`` when absent or not (yet) a number."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tool_outcome(
    command: str,
    result: ProcessResult,
    *,
    output: str,
    stderr_tail: str,
    stdout_tail: str,
    status: Outcome | StatusFileError | None,
) -> Outcome:
    """The stage's outcome from the process result, its output and the status file (if any)."""
    updates: dict[str, Any] = {"tool.output": output, "tool.exit_code": result.exit_code}
    exit_summary = _exit_summary(result, stderr_tail, stdout_tail)
    if isinstance(status, StatusFileError):
        return Outcome(
            StageStatus.FAIL,
            context_updates=updates,
            failure_reason=str(status),
            failure_class=DETERMINISTIC,
        )
    if status is not None:
        return _from_status_file(command, status, updates, exit_summary)
    if result.exit_code == 0:
        return Outcome(
            StageStatus.SUCCESS, context_updates=updates, notes=f"Tool completed: {command}"
        )
    return Outcome(StageStatus.FAIL, context_updates=updates, failure_reason=exit_summary)


def _from_status_file(
    command: str, status: Outcome, updates: dict[str, Any], exit_summary: str
) -> Outcome:
    """The status file decides; the tool keys are kept unless the file sets them itself.

    A ``fail``/``retry`` without a reason would reach ``final.json`` as an empty reason, so it
    gets one that says what happened.
    """
    reason = status.failure_reason
    if not reason and status.status in (StageStatus.FAIL, StageStatus.RETRY):
        reason = f"status file says {status.status.value} without failure_reason; {exit_summary}"
    return status.evolve(
        context_updates={**updates, **status.context_updates},
        notes=status.notes or f"Tool completed: {command}",
        failure_reason=reason,
    )


def _exit_summary(result: ProcessResult, stderr_tail: str, stdout_tail: str) -> str:
    """``tool exited with code 2: <stderr tail>`` — the reason a failed tool stage carries."""
    if result.signaled:
        head = f"tool killed by signal {result.signal_name}"
    else:
        head = f"tool exited with code {result.exit_code}"
    if stderr_tail:
        return f"{head}: {stderr_tail}"
    if stdout_tail:
        return f"{head} (stderr empty; end of stdout: {stdout_tail})"
    return f"{head} (no output)"


def clip_output(data: bytes, limit: int = OUTPUT_LIMIT_BYTES, *, full_log: str = "") -> str:
    """``data`` as text, at most ``limit`` bytes of it: head and tail around a marker."""
    half = limit // 2
    if len(data) <= limit:
        return _join_clipped(data, b"", 0, full_log)
    return _join_clipped(data[:half], data[len(data) - half :], len(data) - 2 * half, full_log)


def _join_clipped(head: bytes, tail: bytes, omitted: int, full_log: str) -> str:
    if not omitted:
        return decode_head(head + tail).rstrip("\r\n")
    where = f"; full output in {full_log}" if full_log else ""
    marker = f"\n[... {omitted} bytes truncated{where} ...]\n"
    return (decode_head(head) + marker + decode_tail(tail)).rstrip("\r\n")


@frozen
class _StageLogs:
    """The attempt's log files and where this attempt's output starts in them."""

    stdout: Path
    stderr: Path
    stdout_start: int
    stderr_start: int

    def read_output(self) -> str:
        """This attempt's stdout for ``tool.output``; reads at most the head and the tail."""
        size = file_size(self.stdout)
        length = size - self.stdout_start
        half = OUTPUT_LIMIT_BYTES // 2
        if length <= OUTPUT_LIMIT_BYTES:
            return _join_clipped(_read(self.stdout, self.stdout_start, length), b"", 0, "")
        head = _read(self.stdout, self.stdout_start, half)
        tail = _read(self.stdout, size - half, half)
        return _join_clipped(head, tail, length - 2 * half, str(self.stdout))

    def read_tail(self, path: Path, start: int) -> bytes:
        """The last :data:`TAIL_BYTES` this attempt wrote to ``path``."""
        offset = max(start, file_size(path) - TAIL_BYTES)
        return _read(path, offset, TAIL_BYTES)


def _read(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``; empty if the command deleted or replaced its log."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    except OSError:
        return b""


def _prepare_stage_dir(attempt: AttemptInfo) -> _StageLogs:
    """Create the stage dir, drop stale status files, note where this attempt's logs begin.

    Raises :class:`StatusFileError` when a stale status file cannot be removed.
    """
    attempt.stage_dir.mkdir(parents=True, exist_ok=True)
    clear_stale_status(attempt)
    stdout, stderr = attempt.stage_dir / "stdout.log", attempt.stage_dir / "stderr.log"
    return _StageLogs(stdout, stderr, file_size(stdout), file_size(stderr))
