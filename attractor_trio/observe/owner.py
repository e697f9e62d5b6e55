"""Whether the process recorded in ``run.lock.json`` still runs (contract.md §1).

A pid alone is not proof: the owner may be a zombie nobody reaped, or the kernel may have
given its pid to a process started after the lock was taken (pid recycling). ``/proc`` tells
both apart; without ``/proc``, ``kill(pid, 0)`` is trusted. ``stop`` and the status reports
both ask here, so the two never disagree about a run's owner.
"""

from __future__ import annotations

import enum
import os
from datetime import datetime
from typing import Final

from ..aio.process import proc_stat_fields
from ..persist.lock import RunLockInfo, is_pid_alive

__all__ = ["OwnerState", "owner_state"]

#: ``/proc`` start times are derived from the boot time in whole seconds; a process that
#: started more than this after the lock was taken is certainly not its owner.
_START_TIME_SLACK_S: Final = 2.0


class OwnerState(enum.Enum):
    """What became of the process recorded in ``run.lock.json``."""

    RUNNING = "running"
    GONE = "gone"  # no such process, or a zombie nobody reaped
    RECYCLED = "recycled"  # the pid now belongs to a process started after the lock


# ------------------------------------------------------------------------- the owner process


def owner_state(lock: RunLockInfo) -> OwnerState:
    """Whether the lock's owner still runs; see the module docstring for the pid hazards."""
    if not is_pid_alive(lock.pid):
        return OwnerState.GONE
    stat = _read_proc_stat(lock.pid)
    if stat is None:  # no /proc (or the process just vanished): trust kill(0)
        return OwnerState.RUNNING if is_pid_alive(lock.pid) else OwnerState.GONE
    state, started = stat
    if state in ("Z", "X"):
        return OwnerState.GONE
    acquired = _epoch(lock.acquired_at)
    if started is not None and acquired is not None and started > acquired + _START_TIME_SLACK_S:
        return OwnerState.RECYCLED
    return OwnerState.RUNNING


def _read_proc_stat(pid: int) -> tuple[str, float | None] | None:
    """``(state, start time as a Unix time)`` from ``/proc/<pid>/stat``; ``None`` if unreadable."""
    fields = proc_stat_fields(pid)
    if not fields:
        return None
    # Field 22 (starttime, clock ticks since boot) is index 19 of what follows the comm.
    state = fields[0].decode("ascii", "replace")
    boot = _boot_time()
    if len(fields) < 20 or boot is None:
        return state, None
    try:
        ticks = int(fields[19])
        return state, boot + ticks / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return state, None


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _epoch(timestamp: str) -> float | None:
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None
