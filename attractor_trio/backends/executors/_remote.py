"""The worker side of a Ray attempt: the same process-group code, output streamed back.

Runs inside a Ray task on some node. The stage process runs through
:func:`~attractor_trio.aio.process.run_in_process_group` exactly as locally (own process
group, SIGTERM → grace → SIGKILL, leftovers killed), led by the orphan guard (``_guard.py``) so
that a killed worker cannot leave it behind. Its output goes to worker-local files; this
generator yields what is new every :data:`POLL_S` (so the driver writes the stage dir — no
shared filesystem needed for logs — well within contract.md §10's 1 s), then the result.

Nothing is written under the driver's logs root (``_staging.py``): the stage runs against a
node-local mirror of its stage dir, and the files it wrote there travel back before the result.
With ``upload_workdir`` (``_upload.py``) it runs in a node-local copy of the work directory too,
and the result carries the patch of its changes.

Items are plain dicts (cheap to serialize): ``started`` (node id, host, pid), ``group`` (the
guard's pid = the group id, for the driver's kill request), ``out`` (stream 1/2, bytes),
``file`` (a new or changed file of the mirror: relative path, chunk, last), then ``result``
(exit code, duration, with an upload the ``patch``), ``refused`` (the patch is over the limit)
or ``error`` (an OSError starting the process).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import _staging
from ._upload import unpack

POLL_S = 0.2
_CHUNK = 256 * 1024
_GUARD = str(Path(__file__).with_name("_guard.py"))


def attempt_stream(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A Ray streaming-generator task body (see the module docstring)."""
    yield from remote_task(spec, _supervise)


def remote_task(
    spec: dict[str, Any], supervise: Callable[[dict[str, Any], Path], Iterator[dict[str, Any]]]
) -> Iterator[dict[str, Any]]:
    """The frame of every remote task: a scratch dir, the ``started`` report, ``supervise``'s
    messages, the scratch dir removed. Shared by one-process attempts and agent sessions."""
    import ray

    # Named after the attempt, and made before the start is reported, so that the driver's
    # end_group finds the process group here even if it is canceled before it heard the pgid.
    tmp = Path(tempfile.mkdtemp(prefix=_scratch_prefix(spec.get("token", ""))))
    try:
        yield {
            "kind": "started",
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        yield from supervise(spec, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _scratch_prefix(token: str) -> str:
    return f"attractor-remote-{token}-" if token else "attractor-remote-"


def _find_group(token: str, within: float = 2.0) -> int | None:
    """The group an attempt's scratch dir records; waits ``within`` for the guard to write it
    (it does in milliseconds); ``None`` when the attempt left no scratch dir or no group."""
    import glob
    import time

    if not token:
        return None
    pattern = os.path.join(tempfile.gettempdir(), _scratch_prefix(token) + "*")
    deadline = time.monotonic() + within
    while scratch := glob.glob(pattern):
        for directory in scratch:
            pid = _read_int(Path(directory) / "group.pid")
            if pid is not None:
                return pid
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
    return None


def _remove_scratch(token: str) -> None:
    """A force-killed worker cannot remove its scratch dir: the driver's end request does."""
    import glob

    if token:
        pattern = os.path.join(tempfile.gettempdir(), _scratch_prefix(token) + "*")
        for directory in glob.glob(pattern):
            shutil.rmtree(directory, ignore_errors=True)


def _supervise(spec: dict[str, Any], tmp: Path) -> Iterator[dict[str, Any]]:
    # Two rewrites of driver paths, which never overlap: the driver already replaced every
    # logs-root path outside the work directory by the placeholder (``_staging.Outbound``), and
    # upload_workdir moves the work-directory paths — also a work directory inside the logs
    # root (a git workspace's worktree), which the driver left as it was — to the node's copy.
    spec, finish = unpack(spec, tmp)
    mirror = tmp / "logs"
    before = _staging.place_inputs(mirror, spec["dirs"], spec["inputs"])
    spec = {
        **spec,
        "argv": _staging.substitute_all(spec["argv"], mirror),
        "env": _staging.substitute_env(spec["env"], mirror),
        "cwd": _staging.substitute(spec["cwd"], mirror),
    }
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
    yield from _staging.changed_files(mirror, before)
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


def end_group(pgid: int | None, grace: float, kill_now: bool, token: str) -> bool:
    """Runs on the attempt's node: SIGTERM → grace → SIGKILL the group; ``True`` once it is gone.

    The driver asks for this when it cancels an attempt, so cancellation reaches the remote
    process group within the kill grace even when the worker itself is slow to die. Without
    ``pgid`` (canceled before the driver heard it) the group is found through the attempt's
    scratch dir (``token``)."""
    try:
        return _end_group(pgid if pgid is not None else _find_group(token), grace, kill_now)
    finally:
        _remove_scratch(token)


def end_groups(grace: float, kill_now: bool, token: str) -> bool:
    """Runs on the node of a whole agent-loop attempt (``_session.py``): ends every process
    group its session still runs (each recorded in the attempt's scratch dir while it runs),
    as :func:`end_group` ends one; ``True`` once they are all gone."""
    import glob

    try:
        pattern = os.path.join(tempfile.gettempdir(), _scratch_prefix(token) + "*", "group-*.pid")
        pids = [_read_int(Path(p)) for p in glob.glob(pattern)] if token else []
        return _end_groups([p for p in pids if p is not None], grace, kill_now)
    finally:
        _remove_scratch(token)


def _end_group(pgid: int | None, grace: float, kill_now: bool) -> bool:
    return _end_groups([] if pgid is None else [pgid], grace, kill_now)


def _end_groups(pgids: list[int], grace: float, kill_now: bool) -> bool:
    if not pgids:
        return True
    import signal
    import time

    from ...aio.process import live_group_members

    def alive() -> bool:  # zombies count as gone: a container's PID 1 may never reap them
        return any(live_group_members(pgid) for pgid in pgids)

    def signal_group(sig: int) -> None:
        for pgid in pgids:
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
