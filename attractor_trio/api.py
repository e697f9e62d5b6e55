"""Embedding a run in a trio application (CONTRACT §8): ``async with open_run(...) as run``.

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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from .core.vocabulary import CancelCause
from .dot.graph import Graph
from .events import TERMINAL_EVENTS
from .observe.typed_events import Event, event_from_envelope
from .scopes.engine import (
    RunHandle,
    RunResult,
    check_runnable,
    new_run_id,
    refuse_used_logs_root,
    run,
)

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

    async def _drive(self, graph: Graph, options: dict[str, Any]) -> None:
        try:
            self._result = await run(
                graph, logs_root=self.logs_root, run_id=self.run_id, handle=self.handle, **options
            )
        finally:
            self._done.set()
            self._changed.set()


@asynccontextmanager
async def open_run(
    graph: Graph,
    *,
    logs_root: str | os.PathLike[str],
    run_id: str | None = None,
    on_event: Observer | None = None,
    sinks: Sequence[Callable[[dict[str, Any]], None]] = (),
    **options: Any,
) -> AsyncIterator[RunController]:
    """Start ``graph`` in the background; yield a :class:`RunController`.

    ``options`` are :func:`~attractor_trio.scopes.engine.run`'s keyword arguments (``backend``,
    ``interviewer``, ``handlers``, ``context``, ``stall_timeout``, …). Raises
    :class:`~attractor_trio.errors.LogsRootInUseError` when ``logs_root`` holds a run.
    """
    check_runnable(graph, backend=options.get("backend"), handlers=options.get("handlers"))
    refuse_used_logs_root(Path(logs_root))  # raised here, not from the background task
    controller = RunController(
        Path(logs_root), run_id or new_run_id(), [on_event] if on_event else []
    )
    options["sinks"] = [*sinks, controller._sink]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(controller._drive, graph, options)
        try:
            yield controller
        except BaseException:
            controller.handle.cancel("the embedding application's block raised", CancelCause.API)
            raise
