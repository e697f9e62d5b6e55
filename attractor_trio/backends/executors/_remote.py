"""The worker side of a Ray attempt: the same process-group code, output streamed back.

Runs inside a Ray task on some node. The stage process runs through
:func:`~attractor_trio.aio.process.run_in_process_group` exactly as locally (own process
group, SIGTERM → grace → SIGKILL, leftovers killed), led by the orphan guard (``_guard.py``) so
that a killed worker cannot leave it behind. Its output goes to worker-local files; this
generator yields what is new every :data:`POLL_S` (so the driver writes the stage dir — no
shared filesystem needed for logs — well within contract.md §10's 1 s), then the result.

Items are plain dicts (cheap to serialize): ``started`` (node id, host, pid), ``group`` (the
guard's pid = the group id, for the driver's kill request), ``out`` (stream 1/2, bytes),
``result`` (exit code, duration) or ``error`` (an OSError starting the process).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._upload import unpack

POLL_S = 0.2
_CHUNK = 256 * 1024
_GUARD = str(Path(__file__).with_name("_guard.py"))


def attempt_stream(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A Ray streaming-generator task body (see the module docstring)."""
    import ray

    yield {
        "kind": "started",
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="attractor-remote-"))
    try:
        yield from _supervise(spec, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _supervise(spec: dict[str, Any], tmp: Path) -> Iterator[dict[str, Any]]:
    spec, finish = unpack(spec, tmp)  # upload_workdir: run in the node's copy of the work dir
    logs = (tmp / "stdout.log", tmp / "stderr.log")
    for log in logs:
        log.touch()
    pidfile = tmp / "group.pid"
    argv = [sys.executable, "-I", _GUARD, str(os.getpid()), str(spec["kill_grace"]), str(pidfile)]
    argv += ["--", *spec["argv"]]
    outcome: dict[str, Any] = {}
    done = threading.Event()
    thread = threading.Thread(
        target=_run, args=(argv, spec, logs, outcome, done), name="attractor-stage", daemon=True
    )
    thread.start()
    offsets = [0, 0]
    group_sent = False
    while True:
        finished = done.wait(POLL_S)
        if not group_sent and pidfile.exists():
            pid = _read_int(pidfile)
            if pid is not None:
                group_sent = True
                yield {"kind": "group", "pgid": pid}
        yield from _new_output(logs, offsets)
        if finished:
            break
    thread.join()
    if finish is not None:
        finish(outcome)  # the stage's changes to the copy, as a patch for the driver
    yield outcome


def _run(
    argv: list[str],
    spec: dict[str, Any],
    logs: tuple[Path, Path],
    outcome: dict[str, Any],
    done: threading.Event,
) -> None:
    """The stage process under trio in this thread, as the local executor runs it."""
    import trio

    from ...aio.process import run_in_process_group

    try:
        result = trio.run(
            lambda: run_in_process_group(
                argv,
                cwd=Path(spec["cwd"]),
                env=spec["env"],
                stdout_path=logs[0],
                stderr_path=logs[1],
                kill_grace=spec["kill_grace"],
            )
        )
        outcome.update(kind="result", exit_code=result.exit_code, duration_s=result.duration_s)
    except OSError as exc:
        outcome.update(kind="error", errno=exc.errno or 0, message=str(exc))
    finally:
        done.set()


def _new_output(logs: tuple[Path, Path], offsets: list[int]) -> Iterator[dict[str, Any]]:
    for index, log in enumerate(logs):
        with open(log, "rb") as f:
            f.seek(offsets[index])
            while data := f.read(_CHUNK):
                offsets[index] += len(data)
                yield {"kind": "out", "stream": index + 1, "data": data}


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def end_group(pgid: int, grace: float, kill_now: bool) -> bool:
    """Runs on the attempt's node: SIGTERM → grace → SIGKILL the group; ``True`` once it is gone.

    The driver asks for this when it cancels an attempt, so cancellation reaches the remote
    process group within the kill grace even when the worker itself is slow to die."""
    import signal
    import time

    from ...aio.process import live_group_members

    def alive() -> bool:  # zombies count as gone: a container's PID 1 may never reap them
        return bool(live_group_members(pgid))

    def signal_group(sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass

    signal_group(signal.SIGKILL if kill_now else signal.SIGTERM)
    deadline = time.monotonic() + (0 if kill_now else grace)
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    signal_group(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive()
