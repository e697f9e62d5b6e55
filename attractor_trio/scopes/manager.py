"""The manager loop handler (spec §4.11, S9.4-01): one stage that supervises a whole child run.

The child pipeline runs with :func:`attractor_trio.scopes.engine.run` as a task in a nursery this
handler owns, so the child lives inside the manager's attempt scope: cancelling the parent run
(or the manager's ``timeout``) cancels the child, and the child still writes its ``final.json``
as ``canceled`` — there is no way to leave an orphaned child behind. The child's logs root is
``<stage_dir>/child/``; a retried manager attempt archives it with the rest of the stage dir.

Each cycle *observes* the child through its run directory (new lines of ``progress.ndjson``;
``final.json`` or, for a child it started, the returned
:class:`~attractor_trio.scopes.engine.RunResult`), then decides, then
*waits* ``manager.poll_interval`` — waking at once when the child finishes. Decisions:

- the child ended → ``success`` ("Child completed") or ``fail`` carrying the child's own raw
  ``failure_reason`` and ``failure_class`` (the causal failure, never a wrapper);
- ``manager.stop_condition`` holds → the child is canceled and awaited, then ``success``;
- cycles exhausted (after one last look) → the child is canceled, then ``fail``
  ("Max cycles exceeded", class ``budget_exhausted``).

Decided where the spec is silent (a demanding user's expectations):

- The child's progress is the manager's progress: while waiting, the manager checks the child's
  liveness every second and bumps its own, so the stall watchdog never kills a supervisor whose
  child works — and never keeps one alive whose child is stalled.
- ``observe`` ingests telemetry into the context (``stack.child.*``, visible to the stop
  condition and returned as context updates). Without it the context is left alone, but the
  end of the child still ends the loop: the manager owns the task and knows when it returns.
- Without ``wait`` cycles follow each other immediately (``max_cycles`` becomes a budget).
- ``steer`` is accepted but not supported: a ``manager_steer_skipped`` event and a note say so.
- ``stack.child_autostart=false`` observes an existing run at node attr
  ``stack.child_logs_root`` (relative to the parent's workdir). The manager does not own that
  run, so it never cancels it; it only reports.
- A child pipeline that would (transitively) supervise itself fails as ``structural``.
- The child shares the parent's backend and interviewer (a sim script addresses child nodes by
  id too) and the parent run's registries (its transforms load the child pipeline); it runs
  without heartbeats, sinks or its own watchdog (the parent's covers it).
"""

from __future__ import annotations

import contextvars
import json
import os
from collections import ChainMap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from attrs import define, evolve, field, frozen

from ..core.outcome import Outcome, StageStatus
from ..core.vocabulary import CancelCause, FailureClass
from ..dot.attributes import close_matches
from ..dot.conditions import ConditionSyntaxError, evaluate_condition, parse_condition
from ..dot.graph import Graph, Node, Severity
from ..dot.pipeline import load
from ..dot.transforms import Transform
from ..dot.values import AttributeValueError, format_duration, parse_bool, parse_duration, parse_int
from ..errors import AttractorError, ValidationFailed
from ..handlers.base import AttemptInfo, Handler, require_attempt
from ..persist.atomic import CorruptFileError
from ..persist.final import FinalRecord, read_final
from ..persist.progress import PROGRESS_FILE_NAME
from .engine import RunHandle, RunResult, check_runnable
from .engine import run as run_pipeline
from .options import Registries

if TYPE_CHECKING:
    from ..context import Context

__all__ = [
    "ACTIONS",
    "CHILD_DIR",
    "ChildSnapshot",
    "ManagerConfigError",
    "ManagerLoopHandler",
    "ManagerSettings",
    "child_outcome",
    "child_snapshot",
    "fold_event",
    "read_settings",
]

ACTIONS: Final = ("observe", "steer", "wait")
DEFAULT_ACTIONS: Final = ("observe", "wait")
DEFAULT_POLL_INTERVAL: Final = 45.0
DEFAULT_MAX_CYCLES: Final = 1000
#: The child's logs root inside the manager's stage directory.
CHILD_DIR: Final = "child"
#: How often (seconds) a waiting manager relays the child's liveness to its own.
RELAY_SLICE: Final = 1.0
STEER_UNSUPPORTED: Final = (
    "manager.actions 'steer' is not supported: attractor-trio cannot write interventions into "
    "a running child stage, so the manager only observes and waits"
)

# The child DOT files being supervised by this task and its ancestors (recursion guard).
# trio copies contextvars into child tasks, so a nested child run sees its parents' files.
_SUPERVISED: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "attractor_trio_supervised", default=()
)


class ManagerConfigError(AttractorError):
    """The manager node (or its child pipeline) cannot be supervised as configured."""


# ------------------------------------------------------------------------------ settings


@frozen
class ManagerSettings:
    """The node's ``manager.*`` / ``stack.child_autostart`` attributes, parsed."""

    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_cycles: int = DEFAULT_MAX_CYCLES
    stop_condition: str = ""
    actions: tuple[str, ...] = DEFAULT_ACTIONS
    autostart: bool = True


def _where(graph: Graph, node: Node) -> str:
    if node.line:
        return f"{graph.path}:{node.line}:{node.col}: node '{node.id}'"
    return f"node '{node.id}'"


def read_settings(node: Node, graph: Graph) -> ManagerSettings:
    """Parse the manager attributes; a bad value raises :class:`ManagerConfigError` naming
    the node, the attribute, the value and what a valid one looks like."""
    where = _where(graph, node)

    def typed(key: str, parse: Any, default: Any, hint: str) -> Any:
        raw = node.attrs.get(key, "")
        if not raw.strip():
            return default
        try:
            value = parse(raw)
        except AttributeValueError as exc:
            raise ManagerConfigError(f"{where}: {key}: {exc}") from None
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ManagerConfigError(f"{where}: {key}={raw!r} must be {hint}")
        return value

    stop = node.attrs.get("manager.stop_condition", "").strip()
    try:
        parse_condition(stop)
    except ConditionSyntaxError as exc:
        raise ManagerConfigError(f"{where}: manager.stop_condition: {exc}") from None
    return ManagerSettings(
        poll_interval=typed(
            "manager.poll_interval",
            parse_duration,
            DEFAULT_POLL_INTERVAL,
            "a duration > 0 like 30s or 5m",
        ),
        max_cycles=typed("manager.max_cycles", parse_int, DEFAULT_MAX_CYCLES, "at least 1"),
        stop_condition=stop,
        actions=_parse_actions(node.attrs.get("manager.actions", ""), where),
        autostart=typed("stack.child_autostart", parse_bool, True, "true or false"),
    )


def _parse_actions(raw: str, where: str) -> tuple[str, ...]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    for item in items:
        if item not in ACTIONS:
            close = close_matches(item, ACTIONS)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ManagerConfigError(
                f"{where}: manager.actions: unknown action {item!r}{hint}; "
                f"use a comma-separated list of {', '.join(ACTIONS)}"
            )
    return tuple(dict.fromkeys(items)) or DEFAULT_ACTIONS


# ------------------------------------------------------------------------------ telemetry


@frozen
class ChildSnapshot:
    """What one observation saw of the child run (pure data; equality = "nothing changed").

    ``status`` is ``running``, ``completed`` (final status success) or ``failed`` (fail or
    canceled); ``outcome`` is the child's final status once it ended. ``last_seq`` is the
    child's last event number: a new event is progress even when nothing else changed.
    """

    status: str = "running"
    outcome: str = ""
    current_node: str = ""
    completed_nodes: int = 0
    failure_reason: str = ""
    failure_class: str = ""
    last_seq: int = 0

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def context_updates(self, logs_root: Path) -> dict[str, Any]:
        return {
            "stack.child.status": self.status,
            "stack.child.outcome": self.outcome,
            "stack.child.current_node": self.current_node,
            "stack.child.completed_nodes": self.completed_nodes,
            "stack.child.failure_reason": self.failure_reason,
            "stack.child.logs_root": str(logs_root),
        }


def fold_event(view: ChildSnapshot, event: Mapping[str, Any]) -> ChildSnapshot:
    """One ``progress.ndjson`` envelope applied to a running child's view (pure). Events of
    parallel branches only count as activity."""
    seq = event.get("seq")
    view = evolve(view, last_seq=seq) if isinstance(seq, int) else view
    name, node_id = event.get("event"), event.get("node_id")
    if event.get("branch"):
        return view
    if name == "stage_started" and isinstance(node_id, str):
        return evolve(view, current_node=node_id)
    if name == "stage_completed":
        return evolve(view, completed_nodes=view.completed_nodes + 1)
    return view


def child_snapshot(view: ChildSnapshot, final: FinalRecord | RunResult | None) -> ChildSnapshot:
    """The child as seen through its event log, plus its final record once it ended."""
    if final is None:
        return view
    return evolve(
        view,
        status="completed" if final.status == "success" else "failed",
        outcome=final.status,
        completed_nodes=len(final.completed_nodes),
        failure_reason=final.failure_reason or "",
        failure_class=final.failure_class or "",
    )


def child_outcome(snapshot: ChildSnapshot, updates: dict[str, Any], notes: str = "") -> Outcome:
    """S4.11-09: the manager's outcome for a child that ended."""
    if snapshot.outcome == "success":
        return Outcome(
            StageStatus.SUCCESS, context_updates=updates, notes="Child completed" + notes
        )
    return Outcome(
        StageStatus.FAIL,
        context_updates=updates,
        failure_reason=snapshot.failure_reason or f"Child failed (status {snapshot.outcome})",
        failure_class=snapshot.failure_class,
        notes=f"Child failed: {snapshot.outcome}{notes}",
    )


@define
class _EventTail:
    """Reads the child's ``progress.ndjson`` incrementally (only new complete lines).

    The event log is the child's one unthrottled, per-event telemetry: ``live.json`` is
    throttled and, without heartbeats, can lag a whole stage behind.
    """

    path: Path
    view: ChildSnapshot = ChildSnapshot()
    offset: int = 0

    def read(self) -> ChildSnapshot:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            return self.view
        complete = data.rfind(b"\n") + 1  # a line still being written waits for next time
        for line in data[:complete].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash; readers skip it (contract.md §2)
            if isinstance(event, dict):
                self.view = fold_event(self.view, event)
        self.offset += complete
        return self.view


class _Child(Protocol):
    logs_root: Path
    done: trio.Event

    def snapshot(self) -> ChildSnapshot: ...
    def progress_mark(self) -> float | None: ...
    async def stop(self, reason: str) -> None: ...


@define
class _StartedChild:
    """A child run this manager started and owns (its task lives in the manager's nursery)."""

    graph: Graph
    dotfile: Path
    logs_root: Path
    workdir: Path
    run_id: str
    backend: Any
    interviewer: Any
    kill_grace: float
    #: The parent run's registries: the child is validated and run with them.
    registries: Registries
    #: Over the registries' handlers: this manager, for the child's own manager nodes.
    handlers: Mapping[str, Handler]
    #: The DOT files supervising this child (ancestors first), for the recursion guard.
    lineage: tuple[Path, ...]
    handle: RunHandle = field(factory=RunHandle)
    events: _EventTail = field(init=False)
    done: trio.Event = field(factory=trio.Event)
    result: RunResult | None = None
    error: str = ""

    def __attrs_post_init__(self) -> None:
        self.events = _EventTail(self.logs_root / PROGRESS_FILE_NAME)

    async def run(self) -> None:
        _SUPERVISED.set((*self.lineage, self.dotfile))
        try:
            self.result = await run_pipeline(
                self.graph,
                logs_root=self.logs_root,
                backend=self.backend,
                interviewer=self.interviewer,
                handlers=self.handlers,
                registries=self.registries,
                run_id=self.run_id,
                workdir=self.workdir,
                heartbeat_interval=None,
                kill_grace=self.kill_grace,
                handle=self.handle,
            )
        except Exception as exc:  # the child could not start at all (e.g. its lock is held)
            self.error = f"child pipeline {self.dotfile} could not start: {exc}"
        finally:
            self.done.set()

    def snapshot(self) -> ChildSnapshot:
        if self.error:
            return ChildSnapshot(
                "failed", "fail", failure_reason=self.error, failure_class=FailureClass.STRUCTURAL
            )
        return child_snapshot(self.events.read(), self.result)

    def progress_mark(self) -> float | None:
        # The engine has no public accessor for a run's liveness yet; reading it directly is
        # what lets child progress inside a long stage count as the manager's progress.
        run = self.handle._run
        return None if run is None else run.liveness.last_progress

    async def stop(self, reason: str) -> None:
        """Cancel the child and wait until it finalized (its ``final.json`` exists)."""
        self.handle.cancel(reason, CancelCause.SUPERVISOR)
        await self.done.wait()


@define
class _ObservedChild:
    """An existing run found at ``stack.child_logs_root``; not ours, so never canceled."""

    logs_root: Path
    done: trio.Event = field(factory=trio.Event)
    events: _EventTail = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.events = _EventTail(self.logs_root / PROGRESS_FILE_NAME)

    def snapshot(self) -> ChildSnapshot:
        return child_snapshot(self.events.read(), read_final(self.logs_root))

    def progress_mark(self) -> float | None:
        return None

    async def stop(self, reason: str) -> None:
        return None


# ------------------------------------------------------------------------------ the handler


class ManagerLoopHandler:
    """``stack.manager_loop`` (``shape=house``).

    ``backend``, ``interviewer`` and ``registries`` (the parent run's: custom handlers,
    rules, transforms, attributes, known types) go to the child run — its pipeline is loaded
    with the registries' transforms and validated with the rest; ``handlers`` go over the
    registries' handlers. Without ``registries`` the child gets the process-wide ones as of
    its start. The child's own manager nodes are handled by this same instance.
    """

    def __init__(
        self,
        backend: Any = None,
        interviewer: Any = None,
        handlers: Mapping[str, Handler] | None = None,
        *,
        registries: Registries | None = None,
    ) -> None:
        self.backend = backend
        self.interviewer = interviewer
        self.handlers = dict(handlers or {})
        self._registries = registries

    def child_registries(self) -> Registries:
        """What a child run is loaded, validated and run with."""
        base = Registries.default() if self._registries is None else self._registries
        return base.with_handlers(self.handlers)

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        attempt = require_attempt(node, logs_root)
        try:
            settings = read_settings(node, graph)
            child: _StartedChild | _ObservedChild = (
                self._started_child(node, graph, attempt)
                if settings.autostart
                else _observed_child(node, graph, attempt)
            )
        except ManagerConfigError as exc:
            return Outcome(
                StageStatus.FAIL, failure_reason=str(exc), failure_class=FailureClass.STRUCTURAL
            )
        supervisor = _Supervisor(node, context, settings, attempt, child)
        if isinstance(child, _ObservedChild):
            return await supervisor.run()
        attempt.emit(
            "manager_child_started",
            node_id=node.id,
            child_dotfile=str(child.dotfile),
            child_logs_root=str(child.logs_root),
            child_run_id=child.run_id,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.run)
            return await supervisor.run()

    def _started_child(self, node: Node, graph: Graph, attempt: AttemptInfo) -> _StartedChild:
        where = _where(graph, node)
        own = () if graph.path == "<string>" else (Path(graph.path).resolve(),)
        lineage = (*_SUPERVISED.get(), *own)
        dotfile = _child_dotfile(node, graph, attempt, where)
        if dotfile in lineage:
            raise ManagerConfigError(
                f"{where}: child pipeline {dotfile} is already being supervised by this run "
                "(a pipeline cannot supervise itself, directly or through its children)"
            )
        registries = self.child_registries()
        child_graph = _load_child(dotfile, where, registries.transforms)
        handlers = {"stack.manager_loop": self}
        try:
            check_runnable(
                child_graph,
                backend=self.backend,
                interviewer=self.interviewer,
                handlers=handlers,
                registries=registries,
            )
        except ValidationFailed as exc:
            errors = [d for d in exc.diagnostics if d.severity is Severity.ERROR]
            details = "\n".join(d.format(str(dotfile)) for d in errors)
            raise ManagerConfigError(f"{where}: child pipeline is invalid:\n{details}") from None
        except AttractorError as exc:
            raise ManagerConfigError(f"{where}: child pipeline {dotfile}: {exc}") from None
        return _StartedChild(
            graph=child_graph,
            dotfile=dotfile,
            logs_root=attempt.stage_dir / CHILD_DIR,
            workdir=_child_workdir(node, graph, attempt, where),
            run_id=f"{attempt.run_id or 'run'}-child",
            backend=self.backend,
            interviewer=self.interviewer,
            kill_grace=attempt.kill_grace,
            registries=registries,
            handlers=handlers,
            lineage=lineage,
        )


def _attr(node: Node, graph: Graph, key: str) -> str:
    """A node attribute overrides the graph attribute of the same name."""
    return (node.attrs.get(key) or graph.attrs.get(key) or "").strip()


def _child_dotfile(node: Node, graph: Graph, attempt: AttemptInfo, where: str) -> Path:
    raw = _attr(node, graph, "stack.child_dotfile")
    if not raw:
        raise ManagerConfigError(
            f"{where}: no child pipeline to supervise: set graph attribute "
            'stack.child_dotfile="child.dot" (or the node attribute of the same name)'
        )
    base = attempt.workdir if graph.path == "<string>" else Path(graph.path).parent
    return (base / os.path.expanduser(raw)).resolve()


def _load_child(dotfile: Path, where: str, transforms: Sequence[Transform]) -> Graph:
    if not dotfile.is_file():
        raise ManagerConfigError(
            f"{where}: child pipeline {dotfile} does not exist; stack.child_dotfile is "
            "resolved relative to the parent pipeline's directory"
        )
    try:
        return load(dotfile, transforms=transforms)
    except AttractorError as exc:
        raise ManagerConfigError(f"{where}: cannot load child pipeline: {exc}") from None


def _child_workdir(node: Node, graph: Graph, attempt: AttemptInfo, where: str) -> Path:
    raw = _attr(node, graph, "stack.child_workdir")
    return _directory(attempt, raw, "stack.child_workdir", where) if raw else attempt.workdir


def _directory(attempt: AttemptInfo, raw: str, key: str, where: str) -> Path:
    path = attempt.workdir / os.path.expanduser(raw)
    if not path.is_dir():
        raise ManagerConfigError(
            f"{where}: {key} {str(path)!r} is not a directory; fix the path (relative paths "
            "start at the parent run's workdir)"
        )
    return path


def _observed_child(node: Node, graph: Graph, attempt: AttemptInfo) -> _ObservedChild:
    where = _where(graph, node)
    raw = node.attrs.get("stack.child_logs_root", "").strip()
    if not raw:
        raise ManagerConfigError(
            f"{where}: stack.child_autostart=false but no stack.child_logs_root: name the logs "
            "root of the child run to observe, or let the manager start the child"
        )
    return _ObservedChild(_directory(attempt, raw, "stack.child_logs_root", where))


# ------------------------------------------------------------------------------ the loop


@define
class _Supervisor:
    """One execution of the loop: observe → decide → wait, for at most ``max_cycles``."""

    node: Node
    context: Context
    settings: ManagerSettings
    attempt: AttemptInfo
    child: _Child
    _last: ChildSnapshot | None = None
    _mark: float | None = None

    async def run(self) -> Outcome:
        settings = self.settings
        notes = ""
        if "steer" in settings.actions:
            notes = f"; {STEER_UNSUPPORTED}"
            self.attempt.emit(
                "manager_steer_skipped", node_id=self.node.id, reason=STEER_UNSUPPORTED
            )
        try:
            for cycle in range(1, settings.max_cycles + 1):
                snapshot, updates = self._observe()
                self.attempt.emit(
                    "manager_cycle",
                    node_id=self.node.id,
                    cycle=cycle,
                    child_status=snapshot.status,
                    child_node=snapshot.current_node,
                )
                if snapshot.finished:
                    return child_outcome(snapshot, updates, notes)
                if self._stop_condition_holds(updates):
                    return await self._stop_child(
                        "stop condition satisfied",
                        StageStatus.SUCCESS,
                        notes="Stop condition satisfied" + notes,
                    )
                await self._wait()
            snapshot, updates = self._observe()
            if snapshot.finished:
                return child_outcome(snapshot, updates, notes)
        except CorruptFileError as exc:
            return await self._stop_child(
                f"cannot read the child's run directory: {exc}",
                StageStatus.FAIL,
                failure_class=FailureClass.STRUCTURAL,
            )
        spent = f"{settings.max_cycles} cycles of {format_duration(settings.poll_interval)}"
        at = f" at node '{snapshot.current_node}'" if snapshot.current_node else ""
        return await self._stop_child(
            f"Max cycles exceeded: the child was still running{at} after {spent}",
            StageStatus.FAIL,
            failure_class=FailureClass.BUDGET_EXHAUSTED,
        )

    def _observe(self) -> tuple[ChildSnapshot, dict[str, Any]]:
        snapshot = self.child.snapshot()
        if snapshot != self._last:
            self._last = snapshot
            self.attempt.progress()
        observing = "observe" in self.settings.actions
        return snapshot, snapshot.context_updates(self.child.logs_root) if observing else {}

    def _stop_condition_holds(self, updates: dict[str, Any]) -> bool:
        condition = self.settings.stop_condition
        if not condition:
            return False
        return evaluate_condition(condition, "", "", ChainMap(updates, dict(self.context)))

    async def _wait(self) -> None:
        """Sleep ``poll_interval`` (not without ``wait``), waking when the child ends and
        relaying the child's liveness to the manager's every :data:`RELAY_SLICE` seconds."""
        if "wait" not in self.settings.actions:
            await trio.lowlevel.checkpoint()
            return
        deadline = trio.current_time() + self.settings.poll_interval
        while not self.child.done.is_set() and (left := deadline - trio.current_time()) > 0:
            with trio.move_on_after(min(RELAY_SLICE, left)):
                await self.child.done.wait()
            mark = self.child.progress_mark()
            if mark is not None and mark != self._mark:
                self._mark = mark
                self.attempt.progress()

    async def _stop_child(self, reason: str, status: StageStatus, **fields: Any) -> Outcome:
        """Cancel the child (if ours), wait for it to finalize, and report its final state."""
        await self.child.stop(f"manager '{self.node.id}': {reason}")
        try:
            updates = self._observe()[1]
        except CorruptFileError:
            updates = {}
        if status is StageStatus.FAIL:
            fields.setdefault("failure_reason", reason)
        return Outcome(status, context_updates=updates, **fields)
