"""Embedding a run in a trio application (contract.md §8): ``async with open_run(...) as run``.

``open_run`` opens a nursery, so the usual trio contract applies: the block does not exit until
the run has finished (leave early with ``await run.cancel()``), and an exception raised inside
the block cancels the run and comes out of the ``async with`` wrapped in an
``ExceptionGroup`` (handle it with ``except*``). Problems that stop the run from starting
(invalid graph, missing backend) are raised by ``open_run`` itself, before any nursery, as
plain exceptions; everything that happens during the run is in the :class:`RunResult` that
``await run.wait()`` returns — the run never raises into the nursery.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import trio

from .core.vocabulary import DEFAULT_KILL_GRACE, CancelCause
from .dot.graph import Graph
from .events import TERMINAL_EVENTS, EventSink
from .handlers.base import Handler
from .interviewers import Interviewer
from .observe.typed_events import Event, event_from_envelope
from .providers.base import CodergenBackend
from .scopes.engine import (
    RunHandle,
    RunResult,
    check_runnable,
    new_run_id,
    refuse_used_logs_root,
    start_run,
)
from .scopes.options import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_PARALLEL, Registries, RunOptions
from .scopes.retention import DEFAULT_ATTEMPT_RETENTION
from .workspace import WorkspaceConfig

__all__ = ["RunController", "open_run"]

Observer = Callable[[Event], None]


class RunController:
    """A run in progress: its events, its result, and a way to stop it."""

    def __init__(self, logs_root: Path, run_id: str, observers: Sequence[Observer] = ()) -> None:
        self.logs_root = logs_root
        self.run_id = run_id
        self.handle = RunHandle()
        self._observers = list(observers)
        self._log: list[Event] = []
        self._changed = trio.Event()
        self._done = trio.Event()
        self._result: RunResult | None = None

    def on_event(self, observer: Observer) -> None:
        """Call ``observer(event)`` for every later event (spec S9.6-16 observer callback)."""
        self._observers.append(observer)

    async def events(self) -> AsyncIterator[Event]:
        """Every event from the first, then live ones, ending after the terminal event.

        Each call is an independent subscription; a slow consumer never slows the run (events
        are kept, not queued with back-pressure).
        """
        index = 0
        while True:
            while index < len(self._log):
                event = self._log[index]
                index += 1
                yield event
                if event.name in TERMINAL_EVENTS:
                    return
            if self._done.is_set():
                return
            changed = self._changed
            await changed.wait()

    async def cancel(self, reason: str = "canceled through the API") -> RunResult:
        """Cancel the run and wait until it has finalized (``final.json`` written)."""
        self.handle.cancel(reason, CancelCause.API)
        return await self.wait()

    async def wait(self) -> RunResult:
        await self._done.wait()
        assert self._result is not None
        return self._result

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _sink(self, envelope: dict[str, Any]) -> None:
        event = event_from_envelope(envelope)
        self._log.append(event)
        for observer in self._observers:
            observer(event)
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def _drive(self, graph: Graph, options: RunOptions) -> None:
        try:
            self._result = await start_run(graph, options)
        finally:
            self._done.set()
            self._changed.set()


@asynccontextmanager
async def open_run(
    graph: Graph,
    run_options: RunOptions | None = None,
    /,
    *,
    logs_root: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    on_event: Observer | None = None,
    sinks: Sequence[EventSink] = (),
    backend: CodergenBackend | None = None,
    interviewer: Interviewer | None = None,
    handlers: Mapping[str, Handler] | None = None,
    registries: Registries | None = None,
    context: Mapping[str, Any] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
    stall_timeout: float | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
    max_parallel_default: int = DEFAULT_MAX_PARALLEL,
    attempt_retention: int = DEFAULT_ATTEMPT_RETENTION,
    pass_env: Sequence[str] = (),
    seed: int | None = None,
    workspace: WorkspaceConfig | None = None,
    argv: Sequence[str] = (),
    require_backend: bool = True,
    options: Mapping[str, Any] | None = None,
) -> AsyncIterator[RunController]:
    """Start ``graph`` in the background; yield a :class:`RunController`.

    Say how to run it either with a :class:`~attractor_trio.RunOptions` (the server builds
    one) or with the keywords of :func:`~attractor_trio.scopes.engine.run` — the fields of
    ``RunOptions``, ``options`` being its ``manifest_options`` — not both (``TypeError``);
    ``on_event`` goes with either. The controller adds its own event sink and handle. Raises
    :class:`~attractor_trio.errors.LogsRootInUseError` when ``logs_root`` holds a run.
    """
    keywords = RunOptions(
        logs_root=logs_root if logs_root is not None else _NO_LOGS_ROOT,
        run_id=run_id,
        backend=backend,
        interviewer=interviewer,
        handlers=handlers,
        registries=registries,
        context=context,
        workdir=workdir,
        heartbeat_interval=heartbeat_interval,
        stall_timeout=stall_timeout,
        kill_grace=kill_grace,
        max_parallel_default=max_parallel_default,
        attempt_retention=attempt_retention,
        pass_env=pass_env,
        seed=seed,
        workspace=workspace,
        sinks=sinks,
        argv=argv,
        require_backend=require_backend,
        manifest_options=options,
    )
    if run_options is None:
        if logs_root is None:
            raise TypeError("open_run() needs logs_root= (or a RunOptions)")
        run_options = keywords
    elif keywords != RunOptions(logs_root=_NO_LOGS_ROOT):
        raise TypeError("open_run(): pass a RunOptions or keywords, not both")
    async with _open(graph, run_options, on_event) as controller:
        yield controller


#: Stands for "no ``logs_root`` keyword" while the keywords are compared with the defaults.
_NO_LOGS_ROOT: Final = Path("<none>")


@asynccontextmanager
async def _open(
    graph: Graph, options: RunOptions, on_event: Observer | None
) -> AsyncIterator[RunController]:
    check_runnable(
        graph,
        backend=options.backend,
        handlers=options.handlers,
        require_backend=options.require_backend,
        registries=options.registries,
    )
    refuse_used_logs_root(options.logs_root)  # raised here, not from the background task
    controller = RunController(
        options.logs_root, options.run_id or new_run_id(), [on_event] if on_event else []
    )
    options = options.evolve(
        run_id=controller.run_id,
        handle=controller.handle,
        sinks=(*options.sinks, controller._sink),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(controller._drive, graph, options)
        try:
            yield controller
        except BaseException:
            controller.handle.cancel("the embedding application's block raised", CancelCause.API)
            raise
