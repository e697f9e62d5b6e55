"""A whole agent-loop attempt as one Ray task (contract.md §10): both ends of the trip.

Driver (:func:`session_task_spec`): the attempt's ``remote_session.SessionSpec`` with every
logs-root path replaced by ``_staging``'s placeholder (its stage dir's files travel as inputs),
exactly as for a one-process attempt.

Node (:func:`session_stream`, a Ray streaming-generator task): the same ``ApiBackend`` →
``AgentLoopBackend`` code as locally runs under trio in a thread of the worker — model calls
from here, file tools on the work directory (shared, or the node's copy with
``upload_workdir``), the stage dir a node-local mirror. Its ``shell`` commands run on this node
through :class:`_GuardedLocal`: each one a process group led by the orphan guard
(``_guard.py``), whose sentinel ends it if the worker dies, and whose group id is recorded in
the attempt's scratch dir so that the driver's cancel request (``_remote.end_groups``) finds
every group still running. Every :data:`~._remote.POLL_S` the generator yields the session's
events (``event``) in order and whether it made progress (``progress``: stream data, tool
output); at the end the mirror's new files (``file``) and the result (``result`` with the
session's end as plain data, ``remote_session.run_session_to_wire``; with an upload the patch).
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import _staging
from ._remote import _GUARD, POLL_S, remote_task
from ._upload import unpack
from .base import StageContext

__all__ = ["session_stream", "session_task_spec"]

_PATH_FIELDS = ("logs_root", "stage_dir", "workdir")


def session_task_spec(stage: StageContext, session: Any, kill_grace: float) -> dict[str, Any]:
    """What the node gets (no path under the logs root: ``_staging.Outbound``)."""
    import secrets

    spec: dict[str, Any] = {
        "kill_grace": kill_grace,
        "dirs": [],
        "inputs": [],
        "token": secrets.token_hex(8),
        "argv": [],
        "cwd": str(session.attempt["workdir"]),
        "env": dict(session.env),
    }
    attempt = {k: str(v) if k in _PATH_FIELDS else v for k, v in session.attempt.items()}
    if stage.logs_root is not None and stage.stage_dir is not None:
        outbound = _staging.Outbound(stage.logs_root, Path(attempt["workdir"]), stage.stage_dir)
        attempt.update({k: outbound.rewrite(attempt[k]) for k in _PATH_FIELDS})
        spec["env"] = {k: outbound.rewrite(v) for k, v in spec["env"].items()}
        spec["inputs"] = outbound.inputs(exclude=())
        spec["dirs"] = sorted(outbound.dirs | {os.path.dirname(p) for p, _ in spec["inputs"]})
    spec["session"] = attrs.evolve(session, attempt=attempt, env={})
    return spec


def session_stream(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A Ray streaming-generator task body (see the module docstring)."""
    # The engine's model and tool code loads before the start is reported: from the start on
    # the watchdog counts, and a cold worker's imports are not the session's silence.
    from .. import remote_session  # noqa: F401

    yield from remote_task(spec, _supervise)


def _supervise(spec: dict[str, Any], tmp: Path) -> Iterator[dict[str, Any]]:
    spec, finish = unpack(spec, tmp)  # upload_workdir: cwd/env moved to the node's copy
    mirror = tmp / "logs"
    before = _staging.place_inputs(mirror, spec["dirs"], spec["inputs"])
    session = spec["session"]
    attempt = dict(session.attempt)
    for key in ("logs_root", "stage_dir"):
        attempt[key] = Path(_staging.substitute(attempt[key], mirror))
    attempt["workdir"] = Path(spec["cwd"])
    session = attrs.evolve(
        session, attempt=attempt, env=_staging.substitute_env(spec["env"], mirror)
    )
    items: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    progressed = threading.Event()
    outcome: dict[str, Any] = {}
    done = threading.Event()
    runner = _GuardedLocal(tmp, float(spec["kill_grace"]))
    thread = threading.Thread(
        target=_run,
        args=(session, runner, items, progressed, outcome, done),
        name="attractor-session",
        daemon=True,
    )
    thread.start()
    while True:
        finished = done.wait(POLL_S)
        while not items.empty():
            yield items.get()
        if progressed.is_set():
            progressed.clear()
            yield {"kind": "progress"}
        if finished:
            break
    thread.join()
    if finish is not None:
        finish(outcome)
    yield from _staging.changed_files(mirror, before)
    yield outcome


def _run(
    session: Any,
    runner: _GuardedLocal,
    items: queue.SimpleQueue[dict[str, Any]],
    progressed: threading.Event,
    outcome: dict[str, Any],
    done: threading.Event,
) -> None:
    """The session under trio in this thread; its events and progress into ``items``."""
    import trio

    from ..remote_session import run_session_to_wire
    from .base import use_executor

    def emit(name: str, **fields: Any) -> None:
        items.put({"kind": "event", "name": name, "fields": fields})

    async def main() -> dict[str, Any]:
        with use_executor(runner):
            return await run_session_to_wire(session, emit=emit, progress=progressed.set)

    try:
        outcome.update(kind="result", session=trio.run(main))
    except BaseException as exc:  # an engine bug must still end the attempt, with its reason
        outcome.update(kind="crash", message=f"{type(exc).__name__}: {exc}")
    finally:
        done.set()


class _GuardedLocal:
    """The node's executor for the session's stage processes: a local process group, led by
    the orphan guard (whose sentinel ends it if this worker dies), its group id recorded in the
    attempt's scratch dir for the driver's cancel request."""

    defers_start = False

    def __init__(self, scratch: Path, kill_grace: float) -> None:
        self._scratch = scratch
        self._kill_grace = kill_grace
        self._numbers = itertools.count(1)

    async def run_process(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout_path: Path,
        stderr_path: Path,
        kill_grace: float,
        on_output: Callable[[], None] | None,
        resources: Mapping[str, float],
    ) -> Any:
        from ...aio.process import run_in_process_group

        pidfile = self._scratch / f"group-{next(self._numbers)}.pid"
        guarded = [sys.executable, "-I", _GUARD, str(os.getpid()), str(kill_grace), str(pidfile)]
        try:
            return await run_in_process_group(
                [*guarded, "--", *argv],
                cwd=cwd,
                env=env,
                stdout_path=stdout_path,
                stderr_path=stderr_path,
                kill_grace=kill_grace,
                on_output=on_output,
            )
        finally:
            pidfile.unlink(missing_ok=True)
