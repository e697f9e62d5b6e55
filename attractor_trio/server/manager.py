"""The server's runs: one registry, every run in its own scope under one server nursery.

Why a nursery owned by the manager and not by the request that submitted the run: a run
outlives the ``POST /pipelines`` request, but must not outlive the server. Each run is a task
in the manager's nursery wrapping :func:`~attractor_trio.api.open_run` (its own nursery and run
scope), so runs are independent of one another, a request that disconnects cancels nothing,
and shutting the manager down cancels every run and still gets each ``final.json`` written.

Options parsing is a pure function (:func:`parse_options`); the registry only starts, finds,
cancels and waits.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, final

import trio
from attrs import field, frozen

from ..api import RunController, open_run
from ..backends.simulate import SimScript, SimulationBackend, parse_sim_script
from ..core.vocabulary import CancelCause, ExitPath, FailureClass
from ..dot.graph import Graph
from ..dot.values import AttributeValueError, parse_duration
from ..errors import AttractorError, ConfigError
from ..interviewers import Interviewer
from ..observe.status import read_status
from ..persist.manifest import MANIFEST_FILE_NAME
from ..scopes.engine import check_runnable, new_run_id
from ..scopes.options import RunOptions
from .http_interviewer import HttpInterviewer

__all__ = [
    "OPTION_KEYS",
    "OptionsError",
    "RunManager",
    "ServedRun",
    "ServerClosing",
    "SubmissionOptions",
    "open_run_manager",
    "parse_options",
]

log = logging.getLogger("attractor_trio.server")

OPTION_KEYS: Final = ("simulate", "sim_script", "context", "stall_timeout")
#: What a run directory under the runs root may be called (and so a ``{id}`` in a URL).
RUN_DIR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_STALL_TIMEOUT: Final = 600.0
#: The ``argv`` recorded in a served run's manifest.
SERVER_ARGV: Final = ("attractor-trio", "serve", "POST /pipelines")
HTTP_CANCEL_REASON: Final = "canceled over HTTP (POST /pipelines/{id}/cancel)"
SHUTDOWN_REASON: Final = "server shutting down"
#: Used only to ask check_runnable "is anything *besides* a backend missing?".


class ServerClosing(RuntimeError):
    """The server is shutting down and starts no new runs (HTTP 503)."""


class OptionsError(ValueError):
    """``options`` of a submission are malformed (HTTP 400); the message names the key."""


def _dict_of(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@final
@frozen
class SubmissionOptions:
    """What a submission may choose. ``simulate`` defaults to true: server mode has no
    provider configuration yet, so the simulation backend is the only codergen backend.

    :meth:`run_options` turns it into the engine's :class:`~attractor_trio.RunOptions`.
    """

    simulate: bool = True
    sim_script: SimScript | None = None
    context: dict[str, Any] = field(factory=dict, converter=_dict_of)
    #: Seconds without progress before the watchdog fails the run; ``0`` disables it.
    stall_timeout: float = DEFAULT_STALL_TIMEOUT

    def run_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``open_run`` (heartbeat as the CLI derives it)."""
        stall = self.stall_timeout
        backend = SimulationBackend(self.sim_script) if self.simulate else None
        return {
            "backend": backend,
            "context": self.context,
            "stall_timeout": stall or None,
            "heartbeat_interval": min(stall / 3, 30.0) if stall else 30.0,
        }

    def run_options(
        self, *, logs_root: Path, run_id: str, interviewer: Interviewer | None = None
    ) -> RunOptions:
        """The engine's options for this submission's run (see :meth:`run_settings`)."""
        return RunOptions(
            logs_root=logs_root,
            run_id=run_id,
            interviewer=interviewer,
            argv=SERVER_ARGV,
            **self.run_settings(),
        )


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise OptionsError(
            'options.stall_timeout must be a duration like "10m" or a number of seconds'
        )
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except AttributeValueError as exc:
            raise OptionsError(f"options.stall_timeout: {exc}") from None
    else:
        seconds = float(value)
    if seconds < 0 or not math.isfinite(seconds):
        raise OptionsError("options.stall_timeout must be a finite, non-negative duration")
    return seconds


def parse_options(raw: object) -> SubmissionOptions:
    """Validate the ``options`` object of ``POST /pipelines`` (``None`` = all defaults)."""
    if raw is None:
        return SubmissionOptions()
    if not isinstance(raw, Mapping):
        raise OptionsError(f"options must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in OPTION_KEYS)
    if unknown:
        raise OptionsError(
            f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(OPTION_KEYS)}"
        )
    simulate = raw.get("simulate", True)
    if not isinstance(simulate, bool):
        raise OptionsError("options.simulate must be true or false")
    context = raw.get("context", {})
    if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
        raise OptionsError("options.context must be a JSON object of context keys to values")
    script = raw.get("sim_script")
    if script is not None and not simulate:
        raise OptionsError(
            "options.sim_script scripts the simulation backend; it needs simulate=true"
        )
    try:
        sim_script = None if script is None else parse_sim_script(script, source="sim_script")
    except ConfigError as exc:
        raise OptionsError(f"options.{exc}") from None
    stall = raw.get("stall_timeout", DEFAULT_STALL_TIMEOUT)
    return SubmissionOptions(simulate, sim_script, dict(context), _duration(stall))


def check_submission(graph: Graph, options: SubmissionOptions) -> None:
    """Everything that must hold before a run directory is created (HTTP 400 otherwise).

    A missing backend gets a server-mode message: the engine's own names CLI flags.
    """
    backend = options.run_settings()["backend"]
    if backend is not None:
        check_runnable(graph, backend=backend)
        return
    check_runnable(graph, require_backend=False)
    try:
        check_runnable(graph, backend=None)
    except ConfigError:
        raise ConfigError(
            "the pipeline has codergen stages but options.simulate is false; server mode "
            "has no provider configuration yet, so submit it with options.simulate=true"
        ) from None


def _disk_status(run_id: str, root: Path) -> dict[str, Any]:
    try:
        doc = read_status(root)
    except AttractorError as exc:
        doc = {"run_id": run_id, "state": "unknown", "failure_reason": str(exc)}
    return {"id": run_id, **doc}


class ServedRun:
    """One run the server started: where it lives, its controller and its human gates."""

    def __init__(self, run_id: str, logs_root: Path, graph: Graph) -> None:
        self.id = run_id
        self.logs_root = logs_root
        self.graph = graph
        self.interviewer = HttpInterviewer()
        self.controller: RunController | None = None
        self.finished = trio.Event()
        #: Set when the run task itself failed (an engine bug); final.json may then be absent.
        self.error = ""

    def status(self) -> dict[str, Any]:
        """The ``status --json`` object plus ``id`` (``starting`` before any file exists)."""
        try:
            doc = read_status(self.logs_root)
        except AttractorError:
            failed = bool(self.error)
            doc = {
                "run_id": self.id,
                "state": "fail" if failed else "starting",
                "current_node": "",
                "active_attempts": [],
                "failure_reason": self.error,
                "failure_class": FailureClass.STRUCTURAL if failed else "",
                "exit_path": ExitPath.INTERNAL_ERROR if failed else "",
                "logs_root": str(self.logs_root),
            }
        return {"id": self.id, **doc}

    def cancel(self, reason: str, cause: CancelCause) -> None:
        if self.controller is not None and not self.finished.is_set():
            self.controller.handle.cancel(reason, cause)


class RunManager:
    """Starts runs under ``runs_dir/<id>`` in one nursery; finds, lists and cancels them."""

    def __init__(self, runs_dir: Path, nursery: trio.Nursery) -> None:
        self.runs_dir = runs_dir
        self._nursery = nursery
        self._runs: dict[str, ServedRun] = {}
        self.closing = False

    def get(self, run_id: str) -> ServedRun | None:
        return self._runs.get(run_id)

    def runs(self) -> list[ServedRun]:
        """Every run this server process started, oldest first."""
        return list(self._runs.values())

    def on_disk(self, run_id: str) -> Path | None:
        """The logs root of run ``run_id`` under the runs root (started by this process or an
        earlier one), or ``None``. Ids are plain names: ``..`` and the like never match."""
        if not RUN_DIR_NAME.fullmatch(run_id):
            return None
        root = self.runs_dir / run_id
        return root if (root / MANIFEST_FILE_NAME).is_file() else None

    async def status_on_disk(self, run_id: str) -> dict[str, Any] | None:
        """``status --json`` plus ``id`` of a run under the runs root, or ``None``."""
        root = self.on_disk(run_id)
        if root is None:
            return None
        return await trio.to_thread.run_sync(_disk_status, run_id, root)

    async def listing(self) -> list[dict[str, Any]]:
        """The status of every run under the runs root — runs of earlier server processes
        included (contract.md §10) — in id (= start time) order, then any run of this process
        whose directory does not exist yet. Read in a worker thread: a big runs root must
        not stall the event loop."""
        hosted = dict(self._runs)

        def scan() -> list[dict[str, Any]]:
            try:
                names = sorted(entry.name for entry in os.scandir(self.runs_dir) if entry.is_dir())
            except FileNotFoundError:
                names = []
            found: list[dict[str, Any]] = []
            for name in names:
                served = hosted.pop(name, None)
                if served is not None:
                    found.append(served.status())
                elif self.on_disk(name) is not None:
                    found.append(_disk_status(name, self.runs_dir / name))
            return found + [served.status() for served in hosted.values()]

        return await trio.to_thread.run_sync(scan)

    async def submit(self, graph: Graph, options: SubmissionOptions) -> ServedRun:
        """Start ``graph``; returns once the run task exists (its files follow promptly).

        Raises ``ValidationFailed``/``ConfigError`` before creating anything, and
        :class:`ServerClosing` once :meth:`shutdown` has begun.
        """
        if self.closing:
            raise ServerClosing("the server is shutting down and starts no new runs")
        check_submission(graph, options)
        run_id = self._fresh_id()
        served = ServedRun(run_id, self.runs_dir / run_id, graph)
        self._runs[served.id] = served
        try:
            run_options = options.run_options(
                logs_root=served.logs_root, run_id=served.id, interviewer=served.interviewer
            )
            await self._nursery.start(self._host, served, run_options)
        except BaseException:
            del self._runs[served.id]
            raise
        return served

    async def shutdown(self, grace: float) -> None:
        """Refuse new runs, cancel every run and wait (at most ``grace`` seconds) until each
        has finalized."""
        self.closing = True
        runs = self.runs()
        for served in runs:
            served.cancel(SHUTDOWN_REASON, CancelCause.SHUTDOWN)
        with trio.move_on_after(grace):
            for served in runs:
                await served.finished.wait()

    def _fresh_id(self) -> str:
        while True:
            run_id = new_run_id()
            if run_id not in self._runs and not (self.runs_dir / run_id).exists():
                return run_id

    async def _host(
        self,
        served: ServedRun,
        options: RunOptions,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The run's own scope. A failure after the start is recorded, never raised: one
        broken run must not take the server and every other run down with it."""
        started = False
        try:
            async with open_run(served.graph, options) as controller:
                served.controller = controller
                task_status.started()
                started = True
        except* Exception as group:
            if not started:
                raise
            served.error = f"internal server error: {group.exceptions[0]!r}"
            log.error("run %s failed inside the server", served.id, exc_info=group)
        finally:
            served.finished.set()


@asynccontextmanager
async def open_run_manager(
    runs_dir: str | Path, *, shutdown_grace: float = 30.0
) -> AsyncIterator[RunManager]:
    """A :class:`RunManager` whose runs live in this block's nursery.

    Leaving the block normally cancels every run and waits up to ``shutdown_grace`` for
    their ``final.json``; leaving it by an exception or cancellation cancels them at once
    (the engine still finalizes each run, shielded and bounded).
    """
    async with trio.open_nursery() as nursery:
        manager = RunManager(Path(runs_dir), nursery)
        yield manager
        await manager.shutdown(shutdown_grace)
        nursery.cancel_scope.cancel()
