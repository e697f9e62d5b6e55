"""The public entry points: ``run``, ``resume``, ``check_runnable`` and handler registration.

INITIALIZE (lock, manifest, context, event hub) happens here; EXECUTE and FINALIZE happen in
:class:`~.scopes.run.RunScope` (the root of the scope tree), driven by :func:`~.scopes.run.drive`.
The lock is released only after finalization, in this module's ``finally``.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..context import Context
from ..core.outcome import Outcome
from ..core.redaction import register_environment
from ..core.routing import Stop, after_fan_out, route
from ..core.vocabulary import DEFAULT_KILL_GRACE
from ..dot.graph import Graph
from ..dot.validate import register_known_type, unregister_known_type, validate_or_raise
from ..errors import AttractorError, ConfigError, LogsRootInUseError
from ..events import TERMINAL_EVENTS, EventHub, EventSink
from ..handlers.base import Handler, HandlerRegistry
from ..interviewers import Interviewer
from ..persist.atomic import cleanup_temp_files
from ..persist.checkpoint import CHECKPOINT_FILE_NAME, Checkpoint, load_checkpoint
from ..persist.final import FinalRecord, read_final
from ..persist.live import LiveWriter
from ..persist.lock import RunLock, acquire_run_lock
from ..persist.manifest import MANIFEST_FILE_NAME, Manifest, read_manifest, write_manifest
from ..persist.progress import ProgressWriter, read_progress
from ..providers.base import CodergenBackend
from ..recovery import archive_final, check_resumable, close_dead_segment, emit_terminal
from ..scopes.options import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_PARALLEL,
    Registries,
    RunOptions,
    forget_default_handlers,
    seed_default_handler,
)
from ..stage_env import use_env_passes
from ..workspace import (
    CheckedRepository,
    Workspace,
    WorkspaceConfig,
    check_repository,
    plan_workspace,
)
from ..workspace.resume import resume_workspace
from .retention import DEFAULT_ATTEMPT_RETENTION
from .run import RunHandle, RunResult, RunScope, UnboundRunner, drive
from .traversal import TraversalState

__all__ = [
    "Registries",
    "RunHandle",
    "RunOptions",
    "RunResult",
    "check_runnable",
    "clear_handlers",
    "new_run_id",
    "register_handler",
    "resume",
    "resume_run",
    "run",
    "start_run",
]


def register_handler(type_name: str, handler: Handler) -> None:
    """Register a custom handler for every later run (spec S4.12-01); replaces an existing one.

    A convenience: it seeds :meth:`Registries.default`, the registries of a run that names
    none (``RunOptions(registries=...)`` or ``handlers=`` give one run its own).
    """
    HandlerRegistry().register(type_name, handler)  # validates the shape
    seed_default_handler(type_name, handler)
    register_known_type(type_name)


def clear_handlers() -> None:
    """Forget every handler registered with :func:`register_handler` (tests, embedding)."""
    for name in forget_default_handlers():
        unregister_known_type(name)


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def check_runnable(
    graph: Graph,
    *,
    backend: CodergenBackend | None = None,
    interviewer: Interviewer | None = None,
    handlers: Mapping[str, Handler] | None = None,
    require_backend: bool = True,
    registries: Registries | None = None,
) -> None:
    """Everything that must hold before a run directory is created (exit 2 otherwise).

    ``require_backend=False`` accepts codergen stages without a backend (their handler is
    replaced, or the caller checks the backend itself). ``registries`` are the run's
    extensions (default: the process-wide registrations); ``handlers`` go over them."""
    registries = (Registries.default() if registries is None else registries).with_handlers(
        handlers or {}
    )
    registry = _build_registry(backend, interviewer, registries)
    validate_or_raise(
        graph,
        rules=registries.rules,
        handler_types=registries.handler_types(),
        attributes=registries.attributes,
    )
    unknown = [n for n in graph if n.type and n.type not in registry]
    if unknown:
        node = unknown[0]
        raise ConfigError(
            f"{graph.path}:{node.line}:{node.col}: node '{node.id}' has type '{node.type}', "
            "but no handler is registered for it; register one with "
            "attractor_trio.register_handler(), or fix the type (built-in types: "
            f"{', '.join(sorted(registry.types()))})"
        )
    stages = _needs_backend(graph, registry)
    if backend is None and stages and require_backend:
        shown = ", ".join(stages[:5]) + (" …" if len(stages) > 5 else "")
        raise ConfigError(
            f"pipeline has codergen stages ({shown}) but no backend: pass --simulate "
            "(or --backend simulate) to simulate them, or --config FILE naming a provider"
        )
    check = getattr(backend, "check", None)
    if stages and callable(check):
        check(graph)  # the backend refuses stages it cannot serve, before anything runs


def _default_registry(
    backend: CodergenBackend | None,
    interviewer: Interviewer | None,
    registries: Registries,
) -> HandlerRegistry:
    """The built-in handlers; a manager's child runs get the run's ``registries`` too."""
    from ..handlers.codergen import CodergenHandler
    from ..handlers.fan_in import FanInHandler
    from ..handlers.human import WaitHumanHandler
    from ..handlers.parallel import ParallelHandler
    from ..handlers.simple import ConditionalHandler, ExitHandler, StartHandler
    from ..handlers.tool import ToolHandler
    from ..interviewers import NonInteractiveInterviewer
    from .manager import ManagerLoopHandler

    registry = HandlerRegistry()
    registry.register("start", StartHandler())
    registry.register("exit", ExitHandler())
    registry.register("conditional", ConditionalHandler())
    registry.register("codergen", CodergenHandler(backend))
    registry.register("tool", ToolHandler())
    # No interviewer: a human gate fails with a clear reason instead of blocking forever.
    registry.register("wait.human", WaitHumanHandler(interviewer or NonInteractiveInterviewer()))
    # Bound to the run when it starts (it needs the run to execute branches).
    registry.register("parallel", ParallelHandler(UnboundRunner()))
    registry.register("parallel.fan_in", FanInHandler(backend))
    registry.register(
        "stack.manager_loop", ManagerLoopHandler(backend, interviewer, registries=registries)
    )
    return registry


def _needs_backend(graph: Graph, registry: HandlerRegistry) -> list[str]:
    return [n.id for n in graph if registry.resolve_type(n) == "codergen"]


# ----------------------------------------------------------------------------------- public


async def run(
    graph: Graph,
    *,
    logs_root: str | os.PathLike[str],
    backend: CodergenBackend | None = None,
    interviewer: Interviewer | None = None,
    handlers: Mapping[str, Handler] | None = None,
    registries: Registries | None = None,
    context: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
    heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
    kill_grace: float = DEFAULT_KILL_GRACE,
    sinks: Sequence[EventSink] = (),
    seed: int | None = None,
    argv: Sequence[str] = (),
    require_backend: bool = True,
    stall_timeout: float | None = None,
    handle: RunHandle | None = None,
    max_parallel_default: int = DEFAULT_MAX_PARALLEL,
    attempt_retention: int = DEFAULT_ATTEMPT_RETENTION,
    options: Mapping[str, Any] | None = None,
    pass_env: Sequence[str] = (),
    workspace: WorkspaceConfig | None = None,
) -> RunResult:
    """Execute ``graph`` (already parsed and transformed) and return its :class:`RunResult`.

    The keywords are the fields of :class:`RunOptions` (``options`` is its
    ``manifest_options``); :func:`start_run` takes the value itself. Raises
    ``ValidationFailed``/``ConfigError`` before creating anything when the graph cannot run,
    and :class:`LogsRootInUseError` when ``logs_root`` already holds a run. Cancelling the
    caller's scope cancels the run and still writes ``final.json``.
    """
    return await start_run(
        graph,
        RunOptions(
            logs_root=logs_root,
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
            handle=handle,
            argv=argv,
            require_backend=require_backend,
            manifest_options=options,
        ),
    )


async def start_run(graph: Graph, options: RunOptions) -> RunResult:
    """Execute ``graph`` as ``options`` say: the one entry every front end ends in."""
    o = options
    registry = _build_registry(o.backend, o.interviewer, o.run_registries())
    check_runnable(
        graph,
        backend=o.backend,
        handlers=o.handlers,
        require_backend=o.require_backend,
        registries=o.registries,
    )
    _register_secrets(o.backend)
    root = o.logs_root
    refuse_used_logs_root(root)
    run_id = o.run_id or new_run_id()
    checked = await _check_workspace(o.workspace, run_id, o.workdir, o.kill_grace, root)
    lock = _take_ownership(root, run_id)
    try:
        planned = await _plan_workspace(checked, o.workspace, run_id, root, o.kill_grace)
        write_manifest(
            root,
            run_id=run_id,
            name=graph.name,
            label=graph.label,
            goal=graph.goal,
            dot_path=None if graph.path == "<string>" else graph.path,
            dot_source=graph.source,
            argv=list(o.argv),
            context=_starting_context(o.context),
            options=o.manifest_options,
        )
        the_run = _scope(
            graph,
            registry,
            TraversalState(context=_initial_context(graph, run_id, o.context)),
            ProgressWriter(root / "progress.ndjson", run_id),
            resumed=False,
            options=o,
        )
        if planned is not None:
            await planned.open()
            the_run.workspace = planned
        start = _start_node(graph)
        with use_env_passes(o.pass_env):
            return await drive(the_run, start)
    finally:
        lock.release()


async def resume(
    graph: Graph,
    *,
    logs_root: str | os.PathLike[str],
    backend: CodergenBackend | None = None,
    interviewer: Interviewer | None = None,
    handlers: Mapping[str, Handler] | None = None,
    registries: Registries | None = None,
    workdir: str | os.PathLike[str] | None = None,
    heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
    kill_grace: float = DEFAULT_KILL_GRACE,
    sinks: Sequence[EventSink] = (),
    seed: int | None = None,
    require_backend: bool = True,
    stall_timeout: float | None = None,
    handle: RunHandle | None = None,
    max_parallel_default: int = DEFAULT_MAX_PARALLEL,
    attempt_retention: int = DEFAULT_ATTEMPT_RETENTION,
    from_node: str | None = None,
    context: Mapping[str, Any] | None = None,
    pass_env: Sequence[str] = (),
) -> RunResult:
    """Continue a run from ``checkpoint.json``; completed stages are not re-executed.

    Continues a run that was canceled, stalled, hit an internal error or died (contract.md §10);
    ``from_node`` continues any run at that node with the checkpoint's context. A successful
    run (without ``from_node``) is returned as it finished, untouched; any other failure
    raises :class:`~.recovery.NotResumableError` (it names ``--from``). ``context`` overrides
    keys of the checkpoint's context (``resume --set``). :func:`resume_run` takes a
    :class:`RunOptions` instead of the keywords.
    """
    options = RunOptions(
        logs_root=logs_root,
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
        sinks=sinks,
        handle=handle,
        require_backend=require_backend,
    )
    return await resume_run(graph, options, from_node=from_node)


async def resume_run(
    graph: Graph, options: RunOptions, *, from_node: str | None = None
) -> RunResult:
    """:func:`resume` with a :class:`RunOptions` (its ``run_id``, ``argv``, ``workspace`` and
    ``manifest_options`` are the run's own and are not taken from ``options``)."""
    o = options
    root = o.logs_root
    final = read_final(root)
    if final is not None:
        _repair_terminal_event(root, final)
        if from_node is None and final.status == "success":
            return _result_of(final, root)
        if from_node is None:
            check_resumable(root, final)
    if from_node is not None and from_node not in graph.nodes:
        raise ConfigError(
            f"--from {from_node}: no node '{from_node}' in the pipeline (nodes: "
            f"{', '.join(sorted(graph.nodes))})"
        )
    source = _resume_source(root)
    registry = _build_registry(o.backend, o.interviewer, o.run_registries())
    check_runnable(
        graph,
        backend=o.backend,
        handlers=o.handlers,
        require_backend=o.require_backend,
        registries=o.registries,
    )
    _register_secrets(o.backend)
    run_id = source.run_id
    lock = _take_ownership(root, run_id)
    try:
        if isinstance(source, Checkpoint):
            state, current = _state_from_checkpoint(source, graph), source.current_node
        else:
            state, current = _state_before_first_checkpoint(graph, source), None
        state.context.apply_updates(dict(o.context))  # `resume --set`
        previous = _close_previous_segment(root, final, run_id, state.completed_nodes)
        the_run = _scope(
            graph,
            registry,
            state,
            ProgressWriter.resume(root / "progress.ndjson", run_id),
            resumed=True,
            options=o,
        )
        the_run.resumed_from = {
            "previous_final": previous,
            "previous_exit_path": final.exit_path if final else "died",
            "from_node": from_node or "",
        }
        the_run.workspace = await resume_workspace(
            root,
            source.workspace if isinstance(source, Checkpoint) else None,
            run_id=run_id,
            stage_root=the_run.stage_root(),
            node_attempts=state.node_attempts,
            kill_grace=o.kill_grace,
        )
        if from_node is not None and the_run.workspace is not None:
            # Back to the commit before NODE's first visit (contract.md §10).
            await the_run.workspace.rewind(from_node)
        with use_env_passes(o.pass_env):
            if from_node is not None:
                return await drive(the_run, from_node, current or "")
            if current is None:
                return await drive(the_run, _start_node(graph))
            try:
                start, predecessor = _resume_point(graph, state, current)
            except _ResumeStop as stopped:
                return await drive(the_run, None, preset=stopped.stop)
            return await drive(the_run, start, predecessor)
    finally:
        lock.release()


# ---------------------------------------------------------------------------------- helpers


def _register_secrets(backend: object) -> None:
    """Before the run writes anything: the secrets of the environment and of the backend's
    configuration (its providers' ``api_key_env``) are redacted from now on (contract.md §10)."""
    method = getattr(backend, "secret_env_names", None)
    names = method() if callable(method) else ()
    register_environment(os.environ, names)
    own = getattr(backend, "env", None)  # a backend given its own environment (the API one)
    if isinstance(own, Mapping) and own is not os.environ:
        register_environment(own, names)


def _build_registry(
    backend: CodergenBackend | None,
    interviewer: Interviewer | None,
    registries: Registries,
) -> HandlerRegistry:
    """The run's handler registry: the built-ins, then the custom handlers of ``registries``."""
    registry = _default_registry(backend, interviewer, registries)
    for name, handler in registries.handlers.items():
        registry.register(name, handler)
    return registry


def _scope(
    graph: Graph,
    registry: HandlerRegistry,
    state: TraversalState,
    writer: ProgressWriter,
    *,
    resumed: bool,
    options: RunOptions,
) -> RunScope:
    """The run scope for ``run``/``resume`` (the options both take)."""
    o = options
    scope = RunScope(
        graph=graph,
        logs_root=o.logs_root,
        run_id=writer.run_id,
        registry=registry,
        state=state,
        hub=EventHub(writer, LiveWriter(o.logs_root, writer.run_id), list(o.sinks)),
        heartbeat_interval=o.heartbeat_interval,
        kill_grace=o.kill_grace,
        workdir=o.workdir or Path.cwd(),
        rng=random.Random(o.seed),
        resumed=resumed,
        stall_timeout=o.stall_timeout,
        max_parallel_default=o.max_parallel_default,
        attempt_retention=o.attempt_retention,
    )
    if o.handle is not None:
        o.handle._attach(scope)
    return scope


def _repair_terminal_event(root: Path, final: FinalRecord) -> None:
    """A crash between ``final.json`` and the terminal event left the log without its last
    line; write it now so "exactly one terminal event, last" holds for every finished run."""
    path = root / "progress.ndjson"
    events = read_progress(path) if path.exists() else []
    if events and events[-1]["event"] in TERMINAL_EVENTS:
        return
    emit_terminal(path, final)


def _result_of(final: FinalRecord, root: Path) -> RunResult:
    return RunResult(
        status=final.status,
        completed_nodes=tuple(final.completed_nodes),
        failure_reason=final.failure_reason or "",
        failure_class=final.failure_class or "",
        exit_path=final.exit_path,
        logs_root=root,
        run_id=final.run_id,
    )


def _close_previous_segment(
    root: Path, final: FinalRecord | None, run_id: str, completed: list[str]
) -> str:
    """Keep the ended segment's record as ``final-<k>.json`` (a dead one gets one written)."""
    if final is not None:
        return archive_final(root)
    return close_dead_segment(root, run_id, completed)


def refuse_used_logs_root(root: Path) -> None:
    """A logs root that holds a run (its manifest) is never reused (contract.md §10); checked
    before any file is touched."""
    if (root / MANIFEST_FILE_NAME).exists() or (root / CHECKPOINT_FILE_NAME).exists():
        raise LogsRootInUseError(
            f"{root} already holds a run; continue it with `attractor-trio resume {root}` "
            "(or resume() from Python) or choose another logs root"
        )


async def _check_workspace(
    config: WorkspaceConfig | None,
    run_id: str,
    workdir: str | os.PathLike[str] | None,
    kill_grace: float,
    root: Path,
) -> CheckedRepository | None:
    """contract.md §10: refuse a missing git, a non-repository, no commits or a dirty tree
    before anything is created (``ConfigError``, exit 2)."""
    if config is None:
        return None
    where = Path(workdir) if workdir else None
    return await check_repository(
        config, run_id=run_id, workdir=where, kill_grace=kill_grace, logs_root=root
    )


async def _plan_workspace(
    checked: CheckedRepository | None,
    config: WorkspaceConfig | None,
    run_id: str,
    root: Path,
    kill_grace: float,
) -> Workspace | None:
    if checked is None or config is None:
        return None
    return await plan_workspace(
        checked, config, run_id=run_id, logs_root=root, kill_grace=kill_grace
    )


def _take_ownership(root: Path, run_id: str) -> RunLock:
    """Create the logs root, lock it, and drop temp files a crashed writer left behind."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{root}: cannot create the logs root: {exc.strerror or exc}") from None
    lock = acquire_run_lock(root, run_id)
    cleanup_temp_files(root)
    return lock


def _start_node(graph: Graph) -> str:
    starts = graph.start_nodes()
    if not starts:
        raise AttractorError("no start node (shape=Mdiamond, or id start in any case)")
    return starts[0].id


def _initial_context(graph: Graph, run_id: str, initial: Mapping[str, Any] | None) -> Context:
    ctx = Context()
    for key, value in graph.attrs.items():
        ctx.set(f"graph.{key}", value)
    ctx.set("internal.run_id", run_id)
    ctx.apply_updates(initial or {})
    return ctx


def _starting_context(initial: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's starting context as the manifest records it (coerced as checkpoints are)."""
    ctx = Context()
    ctx.apply_updates(initial or {})
    return ctx.snapshot()


def _resume_source(root: Path) -> Checkpoint | Manifest:
    """What a resume starts from: the checkpoint; or, when the run has none yet, its manifest
    if that records the starting context (else :func:`load_checkpoint` raises its "nothing
    to resume" error)."""
    if not (root / CHECKPOINT_FILE_NAME).exists():
        manifest = read_manifest(root)
        if manifest is not None and manifest.context is not None:
            return manifest
    return load_checkpoint(root)


def _state_before_first_checkpoint(graph: Graph, manifest: Manifest) -> TraversalState:
    """A run that died between its manifest and its first checkpoint completed no stage, so it
    starts over from the start node with the context its manifest recorded — otherwise it
    would be stuck: ``run`` refuses a directory with a manifest, and there is no checkpoint."""
    context = _initial_context(graph, manifest.run_id, manifest.context)
    return TraversalState(context=context)


def _state_from_checkpoint(checkpoint: Checkpoint, graph: Graph) -> TraversalState:
    context = Context.from_snapshot(checkpoint.context, checkpoint.logs)
    context.set("internal.resume_degrade_fidelity", True)
    extra = checkpoint.extra
    return TraversalState(
        context=context,
        completed_nodes=list(checkpoint.completed_nodes),
        node_outcomes={
            k: Outcome.from_json(v, source=f"checkpoint node_outcomes[{k!r}]")
            for k, v in checkpoint.node_outcomes.items()
        },
        node_retries=dict(checkpoint.node_retries),
        node_attempts={str(k): int(v) for k, v in dict(extra.get("node_attempts", {})).items()},
        visits=dict(checkpoint.visits),
        failure_signatures=dict(checkpoint.failure_signatures),
        current_node=checkpoint.current_node,
        restart_count=int(extra.get("restart_count", 0)),
        restart_signatures={
            str(k): int(v) for k, v in dict(extra.get("restart_failure_signatures", {})).items()
        },
    )


def _resume_point(graph: Graph, state: TraversalState, current: str) -> tuple[str | None, str]:
    """Where a resumed run continues: re-route from the checkpointed node's outcome (S5.3-05)."""
    if current not in graph.nodes:
        raise AttractorError(
            f"checkpoint names node '{current}', which is not in the pipeline; "
            "resume with the pipeline the run was started with (LOGS_ROOT/graph.dot)"
        )
    if graph.is_terminal(current):
        return None, current
    outcome = state.node_outcomes.get(current)
    if outcome is None:
        raise AttractorError(f"checkpoint has no recorded outcome for node '{current}'")
    # The same decision the traversal makes (a parallel node jumps to its fan-in).
    jump = (
        after_fan_out(graph, current, outcome)
        if graph.node(current).handler_type == "parallel"
        else None
    )
    decision = jump if jump is not None else route(graph, current, outcome, state.context)
    if isinstance(decision, Stop):
        raise _ResumeStop(decision)
    return decision.to_node, current


class _ResumeStop(AttractorError):
    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.failure_reason)
        self.stop = stop
