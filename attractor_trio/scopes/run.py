"""The run scope: the root of the scope tree (ARCHITECTURE "The scope tree of one run").

:class:`RunScope` owns the run's cancel scope, the watchdog, the event hub and the finalizer.
Whatever ends the run — the last stage, a routing stop, a signal, the caller's own
cancellation, a bug — :func:`drive` finalizes exactly once, after every background task has
stopped: ``final.json``, then the terminal event. Finalization is synchronous (there is no
checkpoint in it), so no cancellation can interrupt it; ``final.json`` cannot be missing on any
exit path because there is only one place that writes it and every path goes through it.
"""

from __future__ import annotations

import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import trio
from attrs import define, field, frozen

from ..aio.batched import BatchedCall
from ..aio.event_flush import buffered_events
from ..aio.process import use_grace_skip
from ..context import Context
from ..core import redaction
from ..core.cycles import CycleBreaker, LoopRestartGate
from ..core.failures import classify_failure, failure_signature
from ..core.outcome import Outcome, StageStatus
from ..core.retry import RetryPolicy
from ..core.routing import Advance, Stop
from ..core.vocabulary import CancelCause, ExitPath, FailureClass
from ..dot.graph import Graph
from ..dot.values import format_duration
from ..events import BRANCH_SET_UP_CHUNK, BRANCH_SET_UP_JOBS, EventHub, create_branch_log
from ..handlers.base import AttemptInfo, HandlerRegistry
from ..handlers.parallel import BranchResult, ParallelHandler
from ..persist.artifacts import ArtifactStore
from ..persist.atomic import utc_timestamp
from ..persist.checkpoint import CheckpointEncoder, checkpoint_writer, write_checkpoint_bytes
from ..persist.commit import DirectorySyncs
from ..persist.final import FinalRecord, write_final
from ..persist.paths import child
from ..persist.progress import PROGRESS_FILE_NAME
from ..persist.recycling import RecyclingWriter
from ..persist.sweep import FallbackSweep
from .attempt import StageExecutor
from .cancel import only_cancelled
from .heartbeats import Heartbeats
from .liveness import Liveness
from .retention import DEFAULT_ATTEMPT_RETENTION
from .traversal import BranchState, Traversal, TraversalState
from .watchdog import watch

__all__ = ["RunHandle", "RunResult", "RunScope", "UnboundRunner", "drive"]


class RunHandle:
    """Lets a caller (the CLI's signal task, an embedding app) cancel a run by reason.

    A cancel that arrives before the run has started is remembered and applied at start.
    """

    def __init__(self) -> None:
        self._run: RunScope | None = None
        self._pending: str = ""
        self._pending_cause = CancelCause.API
        self.grace_skipped = False

    def cancel(self, reason: str, cause: CancelCause = CancelCause.API) -> None:
        """Cancel with ``reason`` (the text ``final.json`` reports) and ``cause`` (what decides
        the outcome; the default is an embedding application's request)."""
        if self._run is not None:
            self._run.cancel(reason, cause)
        elif not self._pending:
            self._pending, self._pending_cause = reason, cause

    def skip_grace(self) -> None:
        """A second SIGINT: stage processes get SIGKILL without waiting for the grace."""
        self.grace_skipped = True
        if self._run is not None:
            self._run.grace_skip.set()

    def _attach(self, run: RunScope) -> None:
        self._run = run
        if self.grace_skipped:
            run.grace_skip.set()
        if self._pending:
            run.cancel(self._pending, self._pending_cause)


@frozen
class RunResult:
    """What ``run`` returns; mirrors ``final.json``."""

    status: str
    completed_nodes: tuple[str, ...]
    failure_reason: str
    failure_class: str
    exit_path: str
    logs_root: Path
    run_id: str

    @property
    def exit_code(self) -> int:
        return {"success": 0, "fail": 1}.get(self.status, 1)


@define
class _Finish:
    status: str
    exit_path: str
    failure_reason: str = ""
    failure_class: str = ""
    #: The causal node when it is not the last stage run (see :attr:`Stop.node_id`).
    node_id: str = ""


#: A branch's set-up (:func:`_set_up_branch`): its log, its first stage's dir (``None``: it
#: runs none), and the work directory's fallback sweep with the ticket the branch drew
#: (``None``: its first attempt clears them itself).
_SetUp = tuple[Path, "Path | None", "tuple[FallbackSweep, int] | None"]


def _set_up_branch(paths: _SetUp) -> tuple[tuple[int, int], bool, bool]:
    """A fan-out branch's files, blocking (for the write pool): its ``progress.ndjson`` made
    with its directory and opened (:func:`create_branch_log`), the stage dir of its first
    node — and whether this call made that dir, and whether the work directory's stale status
    files are known removed for its first attempt (``persist/sweep.py``).

    Why here: ``mkdir`` is the slowest call a starting branch makes (35 µs on an idle ext4,
    hundreds while other processes write), and on the trio thread every other branch waits
    it out; here it overlaps with their work, in the job that makes the branch's log anyway.
    The attempt that runs the stage then knows the dir as one its own ``mkdir`` made
    (``StageExecutor.made_stage_dir``). A dir that exists already (a resumed fan-out) or
    cannot be made is left to the attempt, which lists it or fails on it as it always did.
    The same holds for the fallbacks: one removal here serves the branches whose set-ups
    asked before it began (contract.md §3 rule 1), instead of two ``unlink`` calls per
    branch on the trio thread; only for a stage dir this call made (the attempt that takes
    it is the first, and the only one the sweep serves)."""
    log, first_stage_dir, sweep = paths
    opened = create_branch_log(log)
    if first_stage_dir is None:
        return opened, False, False
    try:
        os.mkdir(first_stage_dir)
    except OSError:
        return opened, False, False
    return opened, True, sweep is not None and sweep[0].sweep(sweep[1])


def _remove_unused(stage_dir: Path) -> None:
    """Remove a stage dir the branch's set-up made for a stage that never started (empty: a
    cancelled run leaves no stage dir that no attempt used, as before)."""
    try:
        os.rmdir(stage_dir)
    except OSError:
        pass


def _no_checkpoint(_node_id: str) -> None:
    """A branch's traversal checkpoints nothing: the fan-out records its branches' results."""


class UnboundRunner:
    """Placeholder until a run binds the parallel handler to itself."""

    max_parallel_default = 4

    async def run_branch(self, **_: Any) -> BranchResult:
        raise RuntimeError("parallel handler used outside a run")


@define
class RunScope:
    graph: Graph
    logs_root: Path
    run_id: str
    registry: HandlerRegistry
    state: TraversalState
    hub: EventHub
    heartbeat_interval: float | None
    kill_grace: float
    workdir: Path
    rng: random.Random
    resumed: bool
    stall_timeout: float | None = None
    start_time: str = field(factory=utc_timestamp)
    started: float = field(factory=time.monotonic)
    scope: trio.CancelScope = field(factory=trio.CancelScope)
    cancel_reason: str = ""
    #: Who canceled the run; ``None`` until someone does (the first cancel wins).
    cancel_cause: CancelCause | None = None
    traversal: Traversal | None = None
    liveness: Liveness = field(factory=Liveness)
    grace_skip: trio.Event = field(factory=trio.Event)
    artifacts: ArtifactStore | None = None
    #: ``pipeline_resumed`` fields when this run continues an earlier segment (contract.md §10).
    resumed_from: dict[str, Any] | None = None

    max_parallel_default: int = 4
    #: Archived ``attempt-<n>/`` dirs kept per stage dir (run config ``retention.attempts``).
    attempt_retention: int = DEFAULT_ATTEMPT_RETENTION
    #: The run's git workspace (contract.md §10): stages run in its worktree; ``None`` without.
    workspace: Any = None
    _checkpoints: CheckpointEncoder = field(factory=lambda: CheckpointEncoder(_compact))
    _breaker: CycleBreaker | None = None
    #: Directory fsyncs the main traversal's stage owes its checkpoint (persist/commit.py).
    owed: DirectorySyncs = field(factory=DirectorySyncs)
    _checkpoint_file: RecyclingWriter | None = None
    #: One queue and one task for every attempt's ``stage_heartbeat`` (``None``: no heartbeats).
    heartbeats: Heartbeats | None = field(default=None, init=False)
    #: Makes each fan-out branch's files on the write pool (:func:`_set_up_branch`), those of
    #: branches starting together in one job (``aio/batched.py``). Each call returns an open
    #: descriptor, and up to ``(jobs + 1) * chunk`` of them are open before the hub takes them
    #: over (``events.SET_UP_DESCRIPTORS``, which the hub's budget of kept logs leaves room
    #: for): small jobs, so a process held to 64 descriptors still runs a wide fan-out
    #: (``test_fanout_scale``).
    _branch_set_ups: BatchedCall[_SetUp, tuple[tuple[int, int], bool, bool]] = field(
        factory=lambda: BatchedCall(
            _set_up_branch, chunk=BRANCH_SET_UP_CHUNK, jobs=BRANCH_SET_UP_JOBS
        ),
        init=False,
    )
    #: Whether the run is cancelled: one callable for every executor of the run.
    _run_cancelled: Callable[[], bool] = field(init=False, repr=False)
    #: Retry policies by their spelling, for every executor of the run (one graph, so one
    #: answer): a fan-out's branches each built their own from the same node attributes.
    _policies: dict[tuple[str, str | None], RetryPolicy] = field(
        factory=dict, init=False, repr=False
    )
    #: The run's work directory's stale status files, removed for many starting branches at
    #: once (``persist/sweep.py``); made on the first fan-out without a git workspace.
    _fallback_sweep: FallbackSweep | None = field(default=None, init=False, repr=False)

    @property
    def breaker(self) -> CycleBreaker:
        """One cycle breaker for the run and its branches (counts survive resume)."""
        if self._breaker is None:
            self._breaker = CycleBreaker(
                self.graph.loop_restart_signature_limit, self.state.failure_signatures
            )
        return self._breaker

    def __attrs_post_init__(self) -> None:
        self._run_cancelled = lambda: self.scope.cancel_called
        if self.heartbeat_interval:
            self.heartbeats = Heartbeats(self.heartbeat_interval)
        if self.artifacts is None:
            self.artifacts = ArtifactStore(self.logs_root)
        handler = self.registry.resolve_type_handler("parallel")
        if isinstance(handler, ParallelHandler) and isinstance(handler.runner, UnboundRunner):
            self.registry.register("parallel", ParallelHandler(self))

    async def run_branch(
        self,
        *,
        start: str,
        stop_at: frozenset[str],
        context: Context,
        branch: str,
        stage_root: Path,
        attempt: AttemptInfo,
        loser_scope: trio.CancelScope | None = None,
    ) -> BranchResult:
        """One parallel branch: its own traversal, events, stage dirs and liveness node.

        ``loser_scope`` is the scope the fan-out cancels when this branch is no longer needed:
        an attempt it cancels says ``scope: branch`` (data, not the reason's wording)."""
        log = child(stage_root, PROGRESS_FILE_NAME)
        first = child(stage_root, start) if self._runs_a_stage(start, stop_at) else None
        sweep = self._sweep_ticket(attempt)
        opened, made, swept = await self._branch_set_ups((log, first, sweep))
        yielded_at = time.monotonic()  # that wait went through the scheduler
        self.hub.open_branch(branch, log, opened)
        executor: StageExecutor | None = None
        try:
            state = BranchState(context=context)
            parent = attempt.liveness if attempt.liveness is not None else self.liveness
            emit = self.hub.bind(branch)  # one emitter for the branch's executor and traversal
            executor = self.executor(state, stage_root=stage_root, branch=branch, emit=emit)
            executor.made_stage_dir = start if made else ""
            executor.fallbacks_swept = swept
            if loser_scope is not None:
                executor.branch_cancelled = lambda: loser_scope.cancel_called
            if attempt.workspace is not None:  # its own worktree, from the fan-out's head
                key = branch.rsplit("/", 1)[-1]
                executor.workspace = await attempt.workspace.branch_workspace(
                    key, stage_root / "worktree"
                )
                executor.workdir = executor.workspace.workdir
            executor.liveness = parent.child(branch)
            executor.epoch = f"{attempt.branch}/{attempt.node_id}@{attempt.visit}.{attempt.attempt}"
            traversal = Traversal(
                graph=self.graph,
                state=state,
                executor=executor,
                emit=emit,
                checkpoint=_no_checkpoint,
                stop_at=stop_at,
                breaker=self.breaker,
                scope_name=branch,
                yielded_at=yielded_at,
            )
            stop = await traversal.run(start)
        finally:
            self.hub.close_branch(branch)
            if first is not None and made and (executor is None or executor.made_stage_dir):
                _remove_unused(first)  # its stage never started (a cancellation came first)
        # Goal gates visited inside a branch count like any other visited gate (S3.4-01).
        for node_id, branch_outcome in state.node_outcomes.items():
            if self.graph.nodes[node_id].goal_gate:
                self.state.node_outcomes[node_id] = branch_outcome
        last = state.current_node
        if stop.failed:
            outcome = Outcome(
                StageStatus.FAIL,
                failure_reason=stop.failure_reason,
                failure_class=stop.failure_class,
                notes=f"branch stopped: {stop.exit_path}",
            )
        else:
            outcome = state.node_outcomes.get(last) or Outcome(
                StageStatus.SUCCESS, notes="empty branch"
            )
        return BranchResult(outcome, last, tuple(state.completed_nodes))

    def _sweep_ticket(self, attempt: AttemptInfo) -> tuple[FallbackSweep, int] | None:
        """The fallback sweep a branch's set-up may do for its first attempt, with the branch's
        ticket; ``None`` when the branch works in a git worktree of its own."""
        if attempt.workspace is not None or self.workspace is not None:
            return None
        if self._fallback_sweep is None:
            self._fallback_sweep = FallbackSweep(self.workdir)
        return self._fallback_sweep, self._fallback_sweep.ticket()

    def _runs_a_stage(self, node_id: str, stop_at: frozenset[str]) -> bool:
        """Whether a branch starting at ``node_id`` runs it as its first stage (it is not the
        fan-in, nor a terminal node a branch stops before)."""
        return node_id not in stop_at and not self.graph.is_terminal(node_id)

    async def watchdog(self, stall: float) -> None:
        """Cancel the run when nothing anywhere has made progress for ``stall`` seconds."""

        def stalled(idle: float) -> None:
            self.hub.emit(
                "watchdog_timeout",
                stall_timeout_s=stall,
                idle_s=round(idle, 3),
                active_attempts=self.liveness.idle_attempts(),
            )
            self.cancel(f"watchdog: no progress for {format_duration(stall)}", CancelCause.WATCHDOG)

        await watch(self.liveness, stall, stalled)

    def cancel(self, reason: str, cause: CancelCause = CancelCause.API) -> None:
        """Cancel the run; the first reason and cause win (the cause decides ``exit_path``)."""
        if not self.cancel_reason:
            self.cancel_reason = reason
        if self.cancel_cause is None:
            self.cancel_cause = cause
        self.scope.cancel(reason=reason)

    def stage_root(self) -> Path:
        count = self.state.restart_count
        return self.logs_root / f"restart-{count}" if count else self.logs_root

    def _emitter(self, branch: str) -> Callable[..., Any]:
        """``emit(event, **fields)`` for ``branch``'s events. The main line's is the hub's own
        ``emit`` (its ``branch`` defaults to the main line's ``""``): a forwarding closure was
        one more call and one more copy of the fields for every event of every stage."""
        return self.hub.bind(branch) if branch else self.hub.emit

    def executor(
        self,
        state: TraversalState | None = None,
        stage_root: Path | None = None,
        branch: str = "",
        emit: Callable[..., Any] | None = None,
    ) -> StageExecutor:
        """A stage executor for the main line or for ``branch`` (``emit``: the branch's
        emitter, when the caller has bound one already)."""
        state = state or self.state
        return StageExecutor(
            graph=self.graph,
            registry=self.registry,
            context=state.context,
            emit=emit or self._emitter(branch),
            run_id=self.run_id,
            stage_root=stage_root or self.stage_root(),
            workdir=self.workspace.workdir if self.workspace is not None else self.workdir,
            workspace=self.workspace,
            node_retries=state.node_retries,
            node_attempts=state.node_attempts,
            branch=branch,
            run_cancelled=self._run_cancelled,
            policies=self._policies,
            rng=self.rng,
            heartbeats=self.heartbeats,
            kill_grace=self.kill_grace,
            liveness=self.liveness,
            artifacts=self.artifacts,
            attempt_retention=self.attempt_retention,
            owed=None if branch else self.owed,
        )

    def save_checkpoint(self, node_id: str) -> None:
        state = self.state
        data = self._checkpoints.encode(
            run_id=self.run_id,
            current_node=node_id,
            completed_nodes=state.completed_nodes,
            node_retries=state.node_retries,
            context_json=state.context.snapshot_pieces(),
            logs=state.context.logs,
            node_outcomes=state.node_outcomes,
            visits=state.visits,
            failure_signatures=self.breaker.counts,
            restart_count=state.restart_count,
            restart_failure_signatures=state.restart_signatures,
            node_attempts=state.node_attempts,
            workspace=self.workspace.checkpoint_json() if self.workspace is not None else None,
        )
        if self._checkpoint_file is None:
            self._checkpoint_file = checkpoint_writer(self.logs_root, self.owed)
        write_checkpoint_bytes(self._checkpoint_file, data)
        self.hub.emit_fields("checkpoint_saved", "", {"node_id": node_id})  # (no ** repacking)

    def _settle_checkpoint_file(self) -> None:
        """Before ``final.json``: pay the directory fsyncs a stage that ended without its
        checkpoint still owes (canceled, a bug), and remove the checkpoint's spare inode. A disk
        error here must not stop ``final.json`` from being attempted (it reports the run's end,
        and its own fsyncs meet the same disk), so it is left to that write to surface."""
        try:
            self.owed.sync()
            if self._checkpoint_file is not None:
                self._checkpoint_file.close()
        except OSError:
            pass

    async def loop_restart(self, advance: Advance) -> Stop | None:
        await trio.lowlevel.checkpoint()  # a cancelled run never restarts
        state = self.state
        if state.restart_count >= self.graph.max_restarts:
            return Stop(
                ExitPath.STAGE_FAILED,
                f"loop_restart limit reached: {state.restart_count} restarts "
                f"(graph max_restarts={self.graph.max_restarts})",
                FailureClass.STRUCTURAL,
            )
        state.restart_count += 1
        new_root = self.stage_root()
        new_root.mkdir(parents=True, exist_ok=True)
        self.hub.emit(
            "loop_restart",
            from_node=state.current_node,
            to_node=advance.to_node,
            restart=state.restart_count,
            new_logs_root=str(new_root),
        )
        # A restart is a fresh attempt at the loop: retry budgets, outcomes and visit counts
        # start over; the context is kept (it carries what the loop learned).
        state.node_retries.clear()
        state.node_outcomes.clear()
        state.visits.clear()
        if self.traversal is not None:
            self.traversal.executor = self.executor()
        return None

    async def execute(self, start_node: str, predecessor: str = "") -> Stop:
        self.traversal = Traversal(
            graph=self.graph,
            state=self.state,
            executor=self.executor(),
            emit=self._emitter(""),
            checkpoint=self.save_checkpoint,
            on_loop_restart=self.loop_restart,
            breaker=self.breaker,
            restart_gate=LoopRestartGate(
                self.graph.loop_restart_signature_limit, self.state.restart_signatures
            ),
        )
        return await self.traversal.run(start_node, predecessor)

    def finalize(self, finish: _Finish) -> RunResult:
        """Checkpoint is current; write ``final.json``, then the terminal event (contract.md §4)."""
        state = self.state
        duration = round(time.monotonic() - self.started, 3)
        hub = self.hub
        hub.live.update(state="finalizing")
        signature = ""
        if finish.status == "fail" and finish.failure_reason:
            # One classifier for retry, the cycle breaker and the final report (contract.md §5):
            # an unhinted failure is reported with the class its reason text implies.
            finish.failure_class = classify_failure(finish.failure_class, finish.failure_reason)
            causal = (
                finish.node_id
                or _causal_node(self.graph, state.completed_nodes)
                or state.current_node
            )
            signature = failure_signature(causal, finish.failure_class, finish.failure_reason)
        record = FinalRecord(
            run_id=self.run_id,
            status=finish.status,
            exit_path=finish.exit_path,
            completed_nodes=state.completed_nodes,
            start_time=self.start_time,
            end_time=utc_timestamp(),
            duration_s=duration,
            failure_reason=finish.failure_reason or None,
            failure_class=finish.failure_class or None,
            failure_signature=signature or None,
            workspace=self.workspace.final_json() if self.workspace is not None else None,
        )
        self._settle_checkpoint_file()
        write_final(self.logs_root, record)
        hub.writer.sync()
        if finish.status == "success":
            hub.emit(
                "pipeline_completed",
                status="success",
                duration_s=duration,
                artifact_count=len(self.artifacts or ()),
            )
        else:
            hub.emit(
                "pipeline_failed",
                status=finish.status,
                failure_reason=finish.failure_reason,
                failure_class=finish.failure_class,
                exit_path=finish.exit_path,
                duration_s=duration,
            )
        hub.live.update(state=finish.status, current_node=state.current_node)
        hub.live.flush()
        hub.writer.sync()
        return RunResult(
            status=finish.status,
            completed_nodes=tuple(state.completed_nodes),
            failure_reason=finish.failure_reason,
            failure_class=finish.failure_class,
            exit_path=finish.exit_path,
            logs_root=self.logs_root,
            run_id=self.run_id,
        )


def _compact(outcome: Outcome) -> dict[str, Any]:
    """What resume needs of an outcome: the routing fields (``status``, ``preferred_label``,
    ``suggested_next_ids``, ``failure_reason``, ``failure_class``, ``failure_signature``, in that
    order, as ``to_json`` spells them), empty ones left out. Context updates are already in the
    checkpoint's context; notes live in the stage's status.json. Read field by field rather
    than through ``to_json``: the checkpoint asks once per stage."""
    doc: dict[str, Any] = {"status": outcome.value}
    if outcome.preferred_label != "":
        doc["preferred_label"] = outcome.preferred_label
    if outcome.suggested_next_ids:
        doc["suggested_next_ids"] = list(outcome.suggested_next_ids)
    if outcome.failure_reason != "":
        doc["failure_reason"] = outcome.failure_reason
    if outcome.failure_class != "":
        doc["failure_class"] = outcome.failure_class
    if outcome.failure_signature != "":
        doc["failure_signature"] = outcome.failure_signature
    return doc


def _finish_from_stop(stop: Stop) -> _Finish:
    if not stop.failed:
        return _Finish("success", ExitPath.COMPLETED)
    return _Finish("fail", stop.exit_path, stop.failure_reason, stop.failure_class, stop.node_id)


def _causal_node(graph: Graph, completed: list[str]) -> str:
    """The stage whose failure ended the run: the last one run, skipping the conditional nodes
    that only passed its outcome on (contract.md §5) — a diamond never fails by itself."""
    for node_id in reversed(completed):
        node = graph.nodes.get(node_id)
        if node is None or node.handler_type != "conditional":
            return node_id
    return completed[-1] if completed else ""


#: The run being driven in this task tree: a run nested in a stage (``stack.manager_loop``'s
#: child) that is canceled from outside learns the enclosing run's cause from it, as data.
_ENCLOSING_RUN: ContextVar[RunScope | None] = ContextVar("attractor_enclosing_run", default=None)


def _outer_cause(enclosing: RunScope | None) -> CancelCause | None:
    """The cause of a cancellation that came from outside this run: the enclosing run's."""
    return None if enclosing is None else enclosing.cancel_cause


def _canceled(reason: str | None, cause: CancelCause | None) -> _Finish:
    """The run's end when it was canceled: the watchdog's cancel fails the run (resumable,
    transient), every other cause cancels it. Decided by ``cause``, never by the text."""
    text = reason or "canceled"
    if cause is not None and cause.fails_run:
        return _Finish(
            "fail", ExitPath.WATCHDOG, f"{text} (stall timeout)", FailureClass.TRANSIENT_INFRA
        )
    return _Finish("canceled", ExitPath.CANCELED, f"run canceled: {text}", FailureClass.CANCELED)


async def drive(
    run: RunScope, start: str | None, predecessor: str = "", preset: Stop | None = None
) -> RunResult:
    """EXECUTE inside the run scope, then FINALIZE exactly once whatever happened.

    ``start=None`` means there is nothing left to execute (a resumed run whose checkpoint is
    already at the exit, or whose last stage already decided a stop: ``preset``).
    """
    finish = _Finish(
        "fail", ExitPath.INTERNAL_ERROR, "run ended without a result", FailureClass.STRUCTURAL
    )
    enclosing = _ENCLOSING_RUN.get()
    token = _ENCLOSING_RUN.set(run)
    try:
        with run.scope, use_grace_skip(run.grace_skip), buffered_events():
            if run.resumed_from is not None:  # opens the new segment of the run's log
                run.hub.emit("pipeline_resumed", at_node=start or "", **run.resumed_from)
            run.hub.emit(
                "pipeline_started",
                name=run.graph.name,
                goal=run.graph.goal,
                logs_root=str(run.logs_root),
                resumed=run.resumed,
            )
            run.hub.live.update(state="running")
            run.liveness.bump()
            async with trio.open_nursery() as nursery:
                if run.stall_timeout:
                    nursery.start_soon(run.watchdog, run.stall_timeout)
                if run.heartbeats is not None:
                    nursery.start_soon(run.heartbeats.run)
                if start is None:
                    stop = preset or Stop(ExitPath.COMPLETED)
                else:
                    stop = await run.execute(start, predecessor)
                nursery.cancel_scope.cancel()
            finish = _finish_from_stop(stop)
            if finish.status == "success" and run.workspace is not None:
                await run.workspace.remove_worktree()
        if run.scope.cancelled_caught:
            finish = _canceled(run.cancel_reason, run.cancel_cause)
    except BaseException as exc:
        cancelled = only_cancelled(exc)
        if cancelled is not None:
            finish = _canceled(
                run.cancel_reason or cancelled.reason, run.cancel_cause or _outer_cause(enclosing)
            )
            raise
        finish = _Finish(
            "fail",
            ExitPath.INTERNAL_ERROR,
            f"internal error: {type(exc).__name__}: {exc}",
            FailureClass.STRUCTURAL,
        )
        _report_internal_error(run.logs_root, exc)
        if not isinstance(exc, Exception):
            raise
    finally:
        _ENCLOSING_RUN.reset(token)
        # Synchronous on purpose: no checkpoint inside, so no cancellation (the caller's, a
        # second signal) can interrupt writing final.json and the terminal event.
        try:
            result = run.finalize(finish)
        finally:
            run.hub.close()
    return result


def _report_internal_error(logs_root: Path, exc: BaseException) -> None:
    """A bug: keep the traceback in the run directory and say where it is."""
    text = redaction.current().text("".join(traceback.format_exception(exc)))
    path = logs_root / "internal-error.txt"
    try:
        path.write_text(text)
        where = f"; traceback in {path}"
    except OSError:
        where = ""
    message = redaction.current().text(f"attractor-trio: internal error (a bug): {exc!r}{where}")
    print(message, file=sys.stderr)
