"""Orphan guard for a remote stage process (contract.md §10: no process survives on any node).

Run as a *file* (``python -I _guard.py WORKER GRACE PIDFILE -- ARGV…``), not as a module, so it
starts in milliseconds without importing the engine. It leads the stage's process group on a Ray
worker and runs the command as its child in that group; it ignores the group's SIGTERM itself
(the command gets it and has its grace) and ends the way the command ended (same exit code, same
signal), so to the attempt code it looks like the command.

Why a *sentinel*: when the Ray worker that started the group dies — ``ray.cancel(force=True)``,
a crashed worker, a lost node, a dead driver — nothing inside it can clean up any more, and Ray
SIGKILLs the worker's direct children (the guard) with it. So the guard forks a sentinel in a
process group of its own, which Ray does not know about. The sentinel watches the worker: if it
dies while the stage's group still has live members, the sentinel ends the group (SIGTERM,
``GRACE`` seconds, SIGKILL). Once the group is gone (the normal end) the sentinel exits.
"""

import os
import signal
import subprocess
import sys
import time

_POLL_S = 0.1


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's PID 1 may never reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def _sentinel(worker: int, pgid: int, grace: float) -> None:
    """Never returns: watch ``worker``; end group ``pgid`` if it dies first."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while _group_alive(pgid):
        if not _running(worker):
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.02)
            _signal_group(pgid, signal.SIGKILL)
            break
        time.sleep(_POLL_S)
    os._exit(0)


def main(argv: list[str]) -> int:
    worker, grace, pidfile = int(argv[0]), float(argv[1]), argv[2]
    command = argv[4:]
    group = os.getpgid(0)
    if os.fork() == 0:
        _sentinel(worker, group, grace)
    signal.signal(signal.SIGTERM, lambda *_: None)  # a handler, not SIG_IGN: exec resets it
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(group))
    os.replace(pidfile + ".tmp", pidfile)
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        sys.stderr.write(f"attractor-trio: cannot start {command[0]!r}: {exc}\n")
        return 127
    code = child.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
