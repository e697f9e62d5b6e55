"""Runs that outlive the terminal, and the options a resume reuses (contract.md §10).

``run --detach``/``resume --detach`` start the same command again without ``--detach`` in a new
session (``start_new_session``: no controlling terminal, so closing it sends no SIGHUP), with
stdin closed and console output appended to ``LOGS_ROOT/run.log``. The parent validates
everything first (bad input still exits 2 in the foreground, with no run directory), then waits
until the child owns the run (its pid in ``run.lock.json``) and exits 0, printing the logs root
and the pid. ``status --follow LOGS_ROOT`` re-attaches.

A run records the run options it was started with in its manifest; ``resume`` reuses each one
unless it is given again, so a resumed run keeps its backend, stall timeout, kill grace and
work directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

from ..core.exit_codes import EXIT_OK
from ..errors import ConfigError

__all__ = ["detach", "prepare_logs_root", "recorded_options", "reuse_recorded_options"]

#: Options whose values are paths (recorded absolute, so a resume from elsewhere finds them).
_PATHS = ("config_path", "sim_script", "workdir")
#: Options recorded in the manifest, in groups that are reused (or overridden) together.
_GROUPS = (
    ("backend", "simulate", "sim_script"),
    ("auto_approve", "interviewer"),
    ("config_path",),
    ("stall_timeout",),
    ("heartbeat_interval",),
    ("kill_grace",),
    ("workdir",),
    ("seed",),
    ("pass_env",),
    ("executor", "ray_address"),
)
_STARTED_WAIT_S = 60.0


def recorded_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The run options worth recording (given ones only), as JSON values."""
    recorded: dict[str, Any] = {}
    for group in _GROUPS:
        for key in group:
            value = opts.get(key)
            if not _given(value):
                continue
            if key in _PATHS:
                value = os.path.abspath(str(value))
            recorded[key] = list(value) if isinstance(value, tuple) else value
    return recorded


def reuse_recorded_options(opts: dict[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """``opts`` with every option group not given on the command line taken from the run."""
    merged = dict(opts)
    for group in _GROUPS:
        if any(_given(opts.get(key)) for key in group):
            continue  # given again: the new values win, the whole group
        for key in group:
            if key in recorded:
                value = recorded[key]
                merged[key] = Path(value) if key in _PATHS else value
    return merged


def _given(value: Any) -> bool:
    """Whether an option was given: click reports an absent flag as ``False`` and an absent
    repeatable option as ``()``."""
    return value is not None and value is not False and value != ()


def prepare_logs_root(root: Path) -> None:
    """Create the logs root once everything else is validated; a logs root that cannot be
    created (below a regular file, in a place this user cannot write) is one line and no
    directory (contract.md §10)."""
    probe = root.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"--logs-root {root}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--logs-root {root}: {probe} is not writable (permission denied)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--logs-root {root}: cannot create it: {exc.strerror or exc}") from None


def detach(extra: list[str], root: Path) -> NoReturn:
    """Start this command again in its own session; exit 0 once it owns the run."""
    argv = _own_argv() + extra
    try:
        root.mkdir(parents=True, exist_ok=True)
        log = open(root / "run.log", "ab")  # noqa: SIM115 - handed to the child
    except OSError as exc:
        raise ConfigError(f"{root}: cannot write run.log: {exc.strerror or exc}") from None
    with log:
        child = subprocess.Popen(
            [sys.executable, "-m", "attractor_trio", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    code = _wait_until_started(root, child)
    if code is not None:
        click.echo(
            f"attractor-trio: error: the detached run exited with code {code} before it "
            f"started; see {root / 'run.log'}",
            err=True,
        )
        sys.exit(code)
    click.echo(f"logs root: {root}\npid: {child.pid}", err=True)
    click.echo(f"detached; follow it with `attractor-trio status --follow {root}`", err=True)
    sys.exit(EXIT_OK)


def _own_argv() -> list[str]:
    """This process's arguments from the subcommand on, without ``--detach``."""
    args = sys.argv[1:]
    start = next((i for i, arg in enumerate(args) if arg in ("run", "resume")), 0)
    return [arg for arg in args[start:] if arg != "--detach"]


def _wait_until_started(root: Path, child: subprocess.Popen[bytes]) -> int | None:
    """``None`` once the child's pid is in ``run.lock.json``; its exit code if it ended first."""
    from ..persist.atomic import CorruptFileError
    from ..persist.lock import read_run_lock

    deadline = time.monotonic() + _STARTED_WAIT_S
    while time.monotonic() < deadline:
        code = child.poll()
        try:
            lock = read_run_lock(root)
        except CorruptFileError:  # a stale lock being replaced: look again
            lock = None
        if lock is not None and lock.pid == child.pid:
            return None
        if code is not None:
            return None if (root / "final.json").exists() and code in (0, 1) else code
        time.sleep(0.02)
    return None  # still starting after a minute: it owns its session; report it as started
