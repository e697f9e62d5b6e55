"""``attractor-trio stop LOGS_ROOT [--grace DURATION]`` (contract.md §1, §9).

Why SIGTERM to the pid in ``run.lock.json`` and not something cleverer: the owner (``run``,
``resume``, an embedding app) already turns SIGTERM into run cancellation — stages are
cancelled, process groups killed, ``final.json`` written (``status=canceled``, exit 143). ``stop``
only has to find the owner, decide whether signalling it is right, and wait for the proof that
the run ended: ``final.json``.

The decision is a pure function of what the directory and ``/proc`` show (:func:`decide`), so
each case is tested without processes; :func:`stop_command` does the IO around it. Two hazards
shape the decision:

* **An already finished run is left untouched** — no signal: the lock can outlive
  ``final.json`` by a moment (the owner writes ``final.json``, then its terminal event, then
  releases the lock), and that owner must not be killed while it finishes.
* **A dead owner's pid can be recycled.** The lock records no process start time, so a live
  process with that pid may be unrelated. When ``/proc`` says the process started after the
  lock was taken, it cannot be the owner, and it is not signalled. A zombie is a dead owner.
"""

from __future__ import annotations

import enum
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click
from attrs import frozen

from ..core.exit_codes import EXIT_NOT_STOPPED, EXIT_STOPPED, EXIT_USAGE
from ..dot.values import AttributeValueError, format_duration, parse_duration
from ..errors import AttractorError, error_line
from ..observe.owner import OwnerState, owner_state
from ..persist.final import FinalRecord, read_final
from ..persist.lock import LOCK_FILE_NAME, RunLockInfo, read_run_lock

__all__ = [
    "Action",
    "Decision",
    "OwnerState",
    "decide",
    "owner_state",
    "register",
    "stop_command",
    "wait_for_final",
]

DEFAULT_GRACE: Final = "30s"
#: How often ``final.json`` and the owner are looked at while waiting.
POLL_INTERVAL_S: Final = 0.05


class Action(enum.Enum):
    FINISHED = "finished"  # final.json exists: exit 0, no signal
    SIGNAL = "signal"  # SIGTERM the owner, wait for final.json
    STALE = "stale"  # lock without a live owner, no final.json: exit 1
    NOT_A_RUN = "not_a_run"  # neither lock nor final.json: exit 2


@frozen
class Decision:
    action: Action
    message: str = ""


def decide(
    root: Path,
    final: FinalRecord | None,
    lock: RunLockInfo | None,
    owner: OwnerState,
    has_manifest: bool = False,
) -> Decision:
    """What ``stop`` does, from what it observed (no IO)."""
    if final is not None:
        return Decision(
            Action.FINISHED,
            f"attractor-trio: run {final.run_id} already finished ({final.status}, "
            f"{final.exit_path}); nothing to stop",
        )
    if lock is None:
        hint = (
            f"it holds a run that is not running and did not finish; continue it with "
            f"`attractor-trio resume {root}`"
            if has_manifest
            else "pass the LOGS_ROOT that `attractor-trio run` printed"
        )
        return Decision(
            Action.NOT_A_RUN,
            f"attractor-trio: error: {root}: no {LOCK_FILE_NAME} and no final.json, so there "
            f"is no run to stop; {hint}",
        )
    if owner is OwnerState.RUNNING:
        return Decision(Action.SIGNAL)
    why = (
        "is gone"
        if owner is OwnerState.GONE
        else "is gone (that pid now belongs to a process started after the run)"
    )
    return Decision(
        Action.STALE,
        f"attractor-trio: error: run {lock.run_id} is not running: its process {lock.pid} "
        f"{why} and there is no final.json, so the run died (killed or crashed); continue "
        f"it with `attractor-trio resume {root}`",
    )


# ------------------------------------------------------------------------------ waiting


@frozen
class WaitResult:
    """How the wait ended: ``final`` is set when the run finished; else ``owner_died`` tells
    a dead owner (no final.json will ever come) from a timeout."""

    final: FinalRecord | None
    owner_died: bool = False


def wait_for_final(
    root: Path,
    lock: RunLockInfo,
    grace: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Poll for ``final.json`` for up to ``grace`` seconds; give up early if the owner dies.

    Polling because the owner is another process and the stdlib has no file-change wait. The
    owner writes ``final.json`` before it exits, so "owner gone" is checked *before* the last
    read: a run that finished and exited between two polls is still reported as finished.
    """
    deadline = clock() + grace
    while True:
        gone = owner_state(lock) is not OwnerState.RUNNING
        final = read_final(root)
        if final is not None or gone:
            return WaitResult(final, owner_died=final is None)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(None)
        sleep(min(POLL_INTERVAL_S, remaining))


# ------------------------------------------------------------------------------ command


@click.command("stop")
@click.argument(
    "logs_root", metavar="LOGS_ROOT", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--grace",
    default=DEFAULT_GRACE,
    show_default=True,
    help="How long to wait for the run to write final.json after SIGTERM.",
)
def stop_command(logs_root: Path, grace: str) -> None:
    """Ask a running run to cancel gracefully; exit once final.json exists.

    Exit 0 when the run has ended (also if it had already), 1 when it did not end within
    --grace or died without final.json, 2 when LOGS_ROOT holds no run.
    """
    try:
        seconds = parse_duration(grace)
    except AttributeValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grace") from None
    try:
        code, message = _stop(logs_root, seconds)
    except AttractorError as exc:  # a corrupt lock or final.json: say which and what is wrong
        code, message = EXIT_USAGE, error_line(exc)
    click.echo(message, err=True)
    sys.exit(code)


def _stop(root: Path, grace: float) -> tuple[int, str]:
    final = read_final(root)
    lock = read_run_lock(root) if final is None else None
    owner = owner_state(lock) if lock is not None else OwnerState.GONE
    if lock is not None and owner is not OwnerState.RUNNING:
        final = read_final(root)  # it may have finished between the two reads
    decision = decide(root, final, lock, owner, (root / "manifest.json").exists())
    if decision.action is Action.FINISHED:
        return EXIT_STOPPED, decision.message
    if decision.action is Action.NOT_A_RUN:
        return EXIT_USAGE, decision.message
    if decision.action is Action.STALE or lock is None:
        return EXIT_NOT_STOPPED, decision.message
    return _signal_and_wait(root, lock, grace)


def _signal_and_wait(root: Path, lock: RunLockInfo, grace: float) -> tuple[int, str]:
    try:
        os.kill(lock.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended just now; the wait below sees whether final.json was written
    except PermissionError:
        return EXIT_NOT_STOPPED, (
            f"attractor-trio: error: not permitted to signal process {lock.pid} (run "
            f"{lock.run_id}); stop it as the user that started it"
        )
    click.echo(
        f"attractor-trio: sent SIGTERM to process {lock.pid} (run {lock.run_id}); waiting up "
        f"to {format_duration(grace)} for {root / 'final.json'}",
        err=True,
    )
    result = wait_for_final(root, lock, grace)
    if result.final is not None:
        final = result.final
        reason = f" — {final.failure_reason}" if final.failure_reason else ""
        return EXIT_STOPPED, (
            f"attractor-trio: run {final.run_id} ended: {final.status} ({final.exit_path}){reason}"
        )
    if result.owner_died:
        return EXIT_NOT_STOPPED, (
            f"attractor-trio: error: process {lock.pid} of run {lock.run_id} exited without "
            f"writing final.json (killed?); continue the run with "
            f"`attractor-trio resume {root}`"
        )
    return EXIT_NOT_STOPPED, (
        f"attractor-trio: error: run {lock.run_id} (process {lock.pid}) did not finish within "
        f"{format_duration(grace)}; it may still be stopping its stages (see `attractor-trio "
        f"status {root}`). Wait longer with `attractor-trio stop {root} --grace 2m`, or force "
        f"it with `kill -KILL {lock.pid}` and continue later with `attractor-trio resume {root}`"
    )


def register(group: click.Group) -> None:
    group.add_command(stop_command)
