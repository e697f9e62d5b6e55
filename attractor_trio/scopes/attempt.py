"""One stage: its retry loop, and each attempt as a cancel scope.

An attempt joins the run's heartbeat queue (:mod:`.heartbeats`, one task for every attempt of
the run) when its handler starts and leaves it when the handler returns or is cancelled, before
``stage_attempt_finished``, so a heartbeat cannot outlive its attempt. The node ``timeout`` is
the scope's deadline; the run's cancellation reaches the
handler through the same tree, and a retry sleep is a checkpoint inside the run scope, so no
retry can start once the run is cancelled.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeAlias, cast

import trio
from attrs import define, field

from ..aio.offload import write_bytes_durably
from ..backends.executors.base import (
    AttemptStart,
    defers_start,
)
from ..context import Context
from ..core.failures import effective_class
from ..core.outcome import Outcome, StageStatus, StatusFileError
from ..core.retry import (
    Blocked,
    Retry,
    RetryPolicy,
    after_attempt,
    delay_for_attempt,
    policy_for,
)
from ..core.vocabulary import DEFAULT_KILL_GRACE, FailureClass
from ..dot.graph import Graph, Node
from ..dot.values import format_duration
from ..handlers.base import AttemptInfo, HandlerRegistry, reset_attempt, set_attempt
from ..persist.atomic import (
    write_bytes_atomic,
    write_json_atomic,
)
from ..persist.attempt_marker import (
    ATTEMPT_MARKER,
    encode_marker,
    marker_record,
    read_attempt_marker,
)
from ..persist.commit import DirectorySyncs
from ..persist.outcome_text import marker_outcome_text, status_text
from ..persist.status import read_status_file
from .cancel import only_cancelled
from .handler_call import call_handler
from .heartbeats import Heartbeats
from .liveness import Liveness
from .retention import (
    ARCHIVE_PREFIX,
    DEFAULT_ATTEMPT_RETENTION,
    last_attempt_in,
    prune_archives,
)
from .stage_plan import StagePlan as _StagePlan

__all__ = ["StageExecutor"]

Emit = Callable[..., Any]
StrPath: TypeAlias = str | os.PathLike[str]
#: ``_attempt``'s ``listed`` when the caller has not listed the stage dir.
_UNLISTED: Final = object()
#: ``stage_attempt_finished``'s extra fields (never changed: only unpacked).
_ADOPTED: Final = {"adopted": True}
_NOTHING: Final[dict[str, Any]] = {}


@define
class StageExecutor:
    """Runs stages for one traversal (the main one, or a parallel branch)."""

    graph: Graph
    registry: HandlerRegistry
    context: Context
    emit: Emit
    run_id: str
    stage_root: Path
    workdir: Path
    node_retries: dict[str, int]
    node_attempts: dict[str, int]
    rng: random.Random
    #: The run's heartbeat queue (``None``: no ``stage_heartbeat``, e.g. a manager's child).
    heartbeats: Heartbeats | None = None
    kill_grace: float = DEFAULT_KILL_GRACE
    branch: str = ""
    #: This traversal's node in the liveness tree (the run's root, or a branch's node).
    liveness: Liveness = field(factory=Liveness)
    #: Archived ``attempt-<n>/`` dirs kept per stage dir; older ones are pruned.
    attempt_retention: int = DEFAULT_ATTEMPT_RETENTION
    stage_index: int = 0
    artifacts: Any = None
    #: Set by the traversal before each stage: the visit number of the node being run.
    current_visit: int = 1
    #: Whether the whole run is being cancelled (vs. this branch being cancelled as a loser).
    run_cancelled: Callable[[], bool] = field(default=lambda: True)
    #: Whether the fan-out canceled this branch as a loser or fail-fast sibling.
    branch_cancelled: Callable[[], bool] = field(default=lambda: False)
    #: Which execution of the enclosing fan-out this branch belongs to (``""`` at top level):
    #: a finished attempt is adopted after a crash only by the same execution (contract.md §10).
    epoch: str = ""
    #: The git workspace this traversal's stages work in (contract.md §10), or ``None``.
    workspace: Any = None
    #: The main line's stage boundary debts (``persist/commit.py``); ``None`` in a branch.
    owed: DirectorySyncs | None = None
    #: The node whose stage dir the caller has just made for this executor's first stage, as
    #: :func:`_listing_or_making` would have (so it is empty: ``AttemptInfo.fresh_stage_dir``);
    #: ``""`` once that stage took it, or if there is none. A fan-out branch's set-up makes it
    #: on the write pool with the branch's log (``RunScope.run_branch``).
    made_stage_dir: str = ""
    #: Whether that set-up also removed the work directory's stale status files for the
    #: stage's first attempt (``persist/sweep.py``); taken with :attr:`made_stage_dir`.
    fallbacks_swept: bool = False
    #: node id → what every visit of that node needs and does not change during the run.
    _plans: dict[str, _StagePlan] = field(factory=dict, init=False, repr=False)
    #: (``retry_policy``, ``max_retries``) as a node spells them → the policy they give
    #: (``policies=``: a dict the run's executors share, the graph being the same).
    _policies: dict[tuple[str, str | None], RetryPolicy] = field(factory=dict, repr=False)

    def _plan(self, node: Node) -> _StagePlan:
        """The node's :class:`_StagePlan`, built on its first visit (the graph, the registry
        and the stage root do not change for this executor's lifetime). Its retry policy is
        ``policy_for(node, graph)`` once per spelling of the two attributes that reads from a
        node (the graph's are fixed): most nodes of a pipeline share one. A spelling that
        fails is not remembered, so each node reports its own error."""
        plan = self._plans.get(node.id)
        if plan is None or plan.node is not node:
            attrs = node.attrs  # (``node.retry_policy`` reads the same, through a call)
            key = (attrs.get("retry_policy", ""), attrs.get("max_retries"))
            policy = self._policies.get(key)
            if policy is None:
                policy = self._policies[key] = policy_for(node, self.graph)
            plan = self._plans[node.id] = _StagePlan.of(
                node, self.registry, policy, self.stage_root, self.workdir
            )
        return plan

    async def run_stage(self, node: Node, predecessor: str = "") -> Outcome:
        """Execute ``node`` with its retry policy; return its final outcome (S3.5)."""
        plan = self._plan(node)
        policy = plan.policy
        handler_type = plan.handler_type
        self.stage_index += 1
        index = self.stage_index
        started = time.monotonic()
        self.emit("stage_started", node_id=node.id, handler=handler_type, index=index)
        attempt = 1
        stage_dir = plan.stage_dir
        plan.handler or plan.resolved(self.registry)  # an unregistered type fails here, first
        # As the attempt would, but before the stage dir is made: a cancelled run leaves none.
        await trio.lowlevel.checkpoint_if_cancelled()
        # Read once per stage (after that, the marker on disk is the one this stage wrote), and
        # only if the stage dir lists one: a first visit has no stage dir at all (and makes it).
        swept = False
        if node.id == self.made_stage_dir:  # made a moment ago, for this visit: empty
            self.made_stage_dir = ""
            names = None
            swept, self.fallbacks_swept = self.fallbacks_swept, False
        else:
            names = _listing_or_making(plan.stage_dir_text)
        marker = read_attempt_marker(stage_dir) if names and ATTEMPT_MARKER in names else None
        adopted = (
            await self._adopt_orphan(node, policy.max_attempts, predecessor, marker)
            if marker is not None
            else None
        )
        # Without a marker nothing was adopted and the listing still holds.
        listed: object = names if marker is None else _UNLISTED
        while True:
            if adopted is not None:
                outcome, attempt = adopted
                adopted = None
            else:
                outcome, marker = await self._attempt(
                    node, attempt, policy.max_attempts, predecessor, marker, listed, plan, swept
                )
                listed = _UNLISTED  # a retry lists what the attempt before it left
                swept = False  # and clears the work directory itself
            decision = after_attempt(outcome, attempt, policy, plan.allow_partial)
            if isinstance(decision, Retry):
                if self.owed:  # the failed attempt's status.json, on disk during the backoff
                    self.owed.sync()
                delay = delay_for_attempt(policy.backoff, attempt, self.rng)
                self.node_retries[node.id] = self.node_retries.get(node.id, 0) + 1
                self.context.set(f"internal.retry_count.{node.id}", self.node_retries[node.id])
                self.emit(
                    "stage_retrying", node_id=node.id, attempt=attempt + 1, delay_s=round(delay, 3)
                )
                await trio.sleep(delay)
                attempt += 1
                continue
            if isinstance(decision, Blocked):
                self.emit(
                    "stage_retry_blocked",
                    node_id=node.id,
                    failure_class=effective_class(decision.outcome),
                    failure_reason=decision.outcome.failure_reason,
                )
            final = decision.outcome
            if final.status in (StageStatus.SUCCESS, StageStatus.PARTIAL_SUCCESS):
                self.node_retries[node.id] = 0
            if final is not outcome:
                self._write_final_status(plan.status_text, final)
            self.emit(
                "stage_completed",
                node_id=node.id,
                handler=handler_type,
                index=index,
                status=final.value,
                duration_s=round(time.monotonic() - started, 3),
            )
            return final

    async def _attempt(
        self,
        node: Node,
        attempt: int,
        max_attempts: int,
        predecessor: str,
        previous: dict[str, Any] | None,
        listed: object = _UNLISTED,
        plan: _StagePlan | None = None,
        swept: bool = False,
    ) -> tuple[Outcome, dict[str, Any] | None]:
        """One attempt; its outcome and the ``.attempt.json`` marker now on disk (``previous``
        is the one before it). ``listed``: the stage dir's names if the caller has just listed
        it (``None``: it did not exist, and was made), else ``_UNLISTED``. ``swept``: the
        work directory's stale status files were removed for this attempt (a fan-out
        branch's set-up, with the stage dir)."""
        # Never start an attempt inside a cancelled scope. Not a full checkpoint: the
        # traversal rations its trips through the scheduler (``Traversal._step_checkpoint``)
        # and a retry sleeps first, so one here would only cost time. A first attempt given
        # the listing (``listed``) comes from ``run_stage``'s own check, with no await since.
        if listed is _UNLISTED:
            await trio.lowlevel.checkpoint_if_cancelled()
        plan = plan or self._plan(node)
        stage_dir = plan.stage_dir
        if self.owed:  # held files (a retry's paid them already) are on disk before archiving
            self.owed.sync()
        # Every attempt's end is marked (the commit point a resume adopts) unless running it
        # again is harmless; only attempts whose handler can adopt a running orphan need
        # their start marked too.
        marked = plan.marked
        committed = plan.committed
        recorded = int(previous.get("number", 0)) if previous else 0
        # One listing answers both questions below; a stage dir that did not exist yet (the
        # usual first visit) has neither archives nor files to move, and was created instead.
        names = (
            _listing_or_making(plan.stage_dir_text)
            if listed is _UNLISTED
            else cast("list[str] | None", listed)
        )
        # The archives count too: after a crash the checkpoint's count may lag behind them,
        # and with old archives pruned a restarted count would collide (contract.md §10).
        on_disk = 0 if names is None else last_attempt_in(names)
        last = max(self.node_attempts.get(node.id, 0), recorded, on_disk)
        number = last + 1
        self.node_attempts[node.id] = number
        if names is not None and _archive_previous_attempt(stage_dir, recorded or last, names):
            prune_archives(stage_dir, self.attempt_retention)
        previous = None  # archived with the files it described, if there was one
        attempt_id = f"{node.id}-{number}-{_attempt_ids.getrandbits(24):06x}"
        marker = _Marker(node.id, number, attempt, attempt_id, self.epoch)
        # A stage dir this attempt's ``mkdir`` made holds no marker: the first one is created
        # in place (contract.md §2), a later one of the same attempt replaces it.
        fresh = names is None
        if marked:
            previous = marker.write(plan.stage_dir_text, finished=False, fresh=fresh)
        if self.workspace is not None:  # after a resume: the leftovers go (saved as a patch)
            await self.workspace.settle()
            self.workspace.note_visit(node.id)
        fields = {"node_id": node.id, "attempt": attempt, "max_attempts": max_attempts}
        fields["attempt_id"] = attempt_id
        start = None  # announced now, unless a node starting its process will (contract.md §10)
        if defers_start(plan.handler or plan.resolved(self.registry), node):
            start = AttemptStart(self.emit, fields)
        else:
            self.emit("stage_attempt_started", **fields)
        # ``names is None``: this attempt's ``mkdir`` made the stage dir (see AttemptInfo).
        info = self._info(
            node, attempt, max_attempts, attempt_id, predecessor, start, plan, names is None, swept
        )
        try:
            outcome: Outcome = await self._guarded(node, info, self._execute_handler, plan)
            if self.workspace is not None:  # before the marker, its commit point
                await self._commit(node, number, outcome)
        except BaseException:
            if committed:  # cancelled: its processes are gone; a resume runs a new attempt
                marker.write(
                    plan.stage_dir_text,
                    finished=False,
                    interrupted=True,
                    fresh=fresh and not marked,
                )
            raise
        if committed:  # the commit point: a resume adopts this outcome
            previous = marker.write(
                plan.stage_dir_text,
                finished=True,
                outcome=outcome,
                fresh=fresh and not marked,
            )
        return outcome, previous

    async def _commit(self, node: Node, number: int, outcome: Outcome) -> None:
        """The attempt's changes as one commit of the workspace (contract.md §10); the traversal's
        next checkpoint records the new head."""
        if self.workspace is not None:
            await self.workspace.commit_attempt(node.id, number, outcome.value)

    def _info(
        self,
        node: Node,
        attempt: int,
        max_attempts: int,
        attempt_id: str,
        predecessor: str,
        start: AttemptStart | None = None,
        plan: _StagePlan | None = None,
        fresh_stage_dir: bool = False,
        fallbacks_cleared: bool = False,
    ) -> AttemptInfo:
        """The attempt's info, with its liveness node opened (:meth:`_guarded` closes it: call
        that right after) and ``start``'s emitter. Built whole, once: an ``evolve`` per added
        field cost more than the rest of the record."""
        live = self.liveness.open_attempt(
            attempt_id, {"node_id": node.id, "attempt_id": attempt_id, "branch": self.branch}
        )
        plan = plan or self._plan(node)
        return AttemptInfo(
            run_id=self.run_id,
            node_id=node.id,
            attempt=attempt,
            max_attempts=max_attempts,
            attempt_id=attempt_id,
            logs_root=self.stage_root,
            stage_dir=plan.stage_dir,
            workdir=self.workdir,
            predecessor_node=predecessor,
            predecessor_outcome=self.context.get_string("outcome") if predecessor else "",
            branch=self.branch,
            # Once the start is announced its emitter only forwards: skip that layer.
            emit=self.emit if start is None or not start.pending else start.emit,
            kill_grace=self.kill_grace,
            artifacts=self.artifacts,
            visit=self.current_visit,
            workspace=self.workspace,
            progress=live.bump,
            liveness=live,
            start=start,
            fresh_stage_dir=fresh_stage_dir,
            fallbacks_cleared=fallbacks_cleared,
            known_status_path=plan.known_status_path,
        )

    async def _adopt_orphan(
        self, node: Node, max_attempts: int, predecessor: str, marker: dict[str, Any] | None
    ) -> tuple[Outcome, int] | None:
        """Finish an attempt a crashed engine left unfinished, if its handler can adopt it.

        The orphan's ``stage_attempt_started`` is already in the log; this writes its
        ``stage_attempt_finished`` (``adopted: true``) so every attempt is closed exactly once.
        """
        handler = self.registry.resolve(node)
        stage_dir = self.stage_root / node.id
        if (
            marker is None
            or marker.get("interrupted")
            or int(marker["number"]) <= self.node_attempts.get(node.id, 0)
        ):
            return None  # none, cancelled, or an attempt the checkpoint accounts for already
        attempt, attempt_id = int(marker["attempt"]), str(marker["attempt_id"])
        if marker.get("finished"):
            if marker.get("epoch", "") != self.epoch:
                return None  # an earlier execution of the enclosing fan-out
            finished = self._adopt_finished(node, stage_dir, marker)
            if finished is not None and self.workspace is not None:  # its commit (contract.md §10)
                await self.workspace.adopt_attempt(
                    node.id, int(marker["number"]), finished[0].value, finished_in_engine=True
                )
            return finished
        if not hasattr(handler, "adopt"):
            return None  # died mid-attempt: the attempt runs anew
        info = self._info(node, attempt, max_attempts, attempt_id, predecessor)

        async def adopt(node: Node, info: AttemptInfo, _plan: _StagePlan) -> Outcome | None:
            result: Outcome | None = await handler.adopt(node, self.context, self.graph, info)
            return result

        outcome = await self._guarded(node, info, adopt, self._plan(node), adopted=True)
        if outcome is None:
            return None
        number = int(marker["number"])
        self.node_attempts[node.id] = max(self.node_attempts.get(node.id, 0), number)
        if self.workspace is not None:  # the orphan's work is in the worktree (contract.md §10)
            await self.workspace.adopt_attempt(
                node.id, number, outcome.value, finished_in_engine=False
            )
        _Marker(node.id, number, attempt, attempt_id, self.epoch).write(
            stage_dir, finished=True, outcome=outcome
        )
        return outcome, attempt

    def _adopt_finished(
        self, node: Node, stage_dir: Path, marker: dict[str, Any]
    ) -> tuple[Outcome, int] | None:
        """The outcome of an attempt that finished after the last checkpoint (contract.md §10).

        The finished marker is the attempt's commit point: the engine died between it and the
        checkpoint, so the outcome it records is the attempt's and the stage is not executed
        again. A main-line stage's ``status.json`` is renamed only with the checkpoint, so it
        may be missing or the handler's own: it is written again from the marker. Its
        ``stage_attempt_finished`` is already in the log. A marker without an outcome (an older
        engine's) falls back to ``status.json``; neither readable degrades to running the stage
        anew.
        """
        outcome = _marked_outcome(marker)
        if outcome is None:
            on_disk = read_status_file(stage_dir / "status.json")
            if not isinstance(on_disk, Outcome):  # absent, unreadable or invalid
                return None
            outcome = on_disk
        self._write_final_status(stage_dir / "status.json", outcome)
        number = int(marker["number"])
        self.node_attempts[node.id] = max(self.node_attempts.get(node.id, 0), number)
        note = "adopted the finished attempt a crashed engine had not checkpointed"
        return outcome.evolve(notes=f"{outcome.notes}; {note}" if outcome.notes else note), int(
            marker["attempt"]
        )

    def _cancel_scope_name(self) -> str:
        """``branch`` for a loser or fail-fast sibling (or a branch's own timeout), ``run``
        for everything else (contract.md §9): decided from which scopes were canceled."""
        if self.branch_cancelled() or (self.branch and not self.run_cancelled()):
            return "branch"
        return "run"

    async def _guarded(
        self,
        node: Node,
        info: AttemptInfo,
        call: Callable[..., Any],
        plan: _StagePlan,
        adopted: bool = False,
    ) -> Any:
        """Run ``call`` in the attempt scope (``info``'s liveness node is open: closed here);
        record the outcome, or the cancellation."""
        status_path = plan.status_path
        attempt_id = info.attempt_id
        live: Liveness = info.liveness
        try:
            outcome = await self._run_handler(node, info, call, live, plan)
        except BaseException as exc:
            cancelled = only_cancelled(exc)
            if cancelled is None:
                raise
            reason = cancelled.reason or "canceled"
            canceled = Outcome(
                StageStatus.FAIL,
                failure_reason=f"canceled: {reason}",
                failure_class=FailureClass.CANCELED,
            )
            if self.branch:  # a fan-out's branches are canceled together: overlap their fsyncs
                with trio.CancelScope(shield=True):
                    await _write_status_durably(status_path, canceled, together=False)
            else:
                _write_status(status_path, canceled)
            info.emit(
                "cancellation_exit",
                node_id=node.id,
                attempt_id=attempt_id,
                reason=reason,
                scope=self._cancel_scope_name(),
            )
            self._finished(info, canceled)
            raise
        finally:
            self.liveness.close_attempt(attempt_id)
        if outcome is None:
            return None
        if self.branch:  # many branches finish together: let their fsyncs overlap
            await _write_status_durably(status_path, outcome)
        else:
            self._write_final_status(plan.status_text, outcome)
        self._finished(info, outcome, adopted)
        return outcome

    def _write_final_status(self, path: StrPath, outcome: Outcome) -> None:
        """A stage's outcome on the main line: held for the checkpoint at this stage boundary
        (``persist/commit.py``), which writes it with its own temp — both fsynced in one wait —
        and renames it just before its own rename, so the status file is still durable before
        the checkpoint counts it. A resume before that boundary adopts the outcome from the
        finished ``.attempt.json`` marker instead (:meth:`_adopt_finished`). ``path``: the
        plan's text (``os.fspath`` of a fresh ``Path`` formats it, through an exception)."""
        if self.owed is not None:
            return self.owed.hold(path, status_text(outcome).encode("utf-8"))
        _write_status(path, outcome)

    def _finished(self, info: AttemptInfo, outcome: Outcome, adopted: bool = False) -> None:
        extra = _ADOPTED if adopted else _NOTHING
        info.emit(  # the attempt's emitter: a start still deferred is announced first
            "stage_attempt_finished",
            node_id=info.node_id,
            attempt_id=info.attempt_id,
            status=outcome.value,
            failure_reason=outcome.failure_reason,
            # The one classifier (contract.md §5): the class final.json reports for this failure,
            # not the raw hint ('' for an unhinted failure, an alias such as 'permanent').
            failure_class=effective_class(outcome),
            **extra,
        )

    def _execute_handler(
        self, node: Node, info: AttemptInfo, plan: _StagePlan
    ) -> Coroutine[Any, Any, Outcome]:
        """The handler call as a coroutine for :meth:`_run_handler` to await: returned, not
        awaited here, so the attempt's chain of frames is one shorter."""
        handler = plan.handler or plan.resolved(self.registry)
        return call_handler(handler, node, self.context, self.graph, info, plan.resources)

    async def _run_handler(
        self,
        node: Node,
        info: AttemptInfo,
        call: Callable[..., Any],
        live: Liveness,
        plan: _StagePlan,
    ) -> Outcome | None:
        """The attempt scope: deadline = node timeout; heartbeats from the run's one task."""
        human = plan.human
        timeout = plan.timeout
        token = set_attempt(info)
        beats = self.heartbeats
        beat = beats.start(info, live, self.emit) if beats is not None else None
        if human:
            live.hold(1)
        try:
            if timeout is None:
                # Nothing to bound: a scope would change nothing; outer cancellation arrives
                # either way.
                outcome: Outcome = await call(node, info, plan)
                await redeliver_cancellation()
                return outcome
            with trio.move_on_after(timeout):
                outcome = await call(node, info, plan)
                await redeliver_cancellation()
                return outcome
        finally:
            if beat is not None:
                Heartbeats.stop(beat)  # before stage_attempt_finished: none can follow it
            reset_attempt(token)
            if human:
                live.hold(-1)
        return Outcome(
            StageStatus.FAIL,
            failure_reason=f"stage '{node.id}' timed out after {format_duration(timeout)}",
            failure_class=FailureClass.TRANSIENT_INFRA,
        )


async def redeliver_cancellation() -> None:
    """Raise :class:`trio.Cancelled` if the attempt was cancelled while its handler ran.

    A handler (or a backend under it) that catches ``Cancelled`` and returns an outcome would
    otherwise have its attempt recorded as finished after the run was cancelled. The attempt's
    heartbeat nursery used to re-deliver the cancellation on exit as a side effect; the run's one
    heartbeat task (:mod:`.heartbeats`) does not, so the attempt asks. A module attribute, so the
    fuzz suite can plant the swallowing bug with the defence off."""
    await trio.lowlevel.checkpoint_if_cancelled()


def _write_status(path: StrPath, outcome: Outcome) -> None:
    """``status.json``, durably (the attempt made the stage dir)."""
    # The generic writer, as before: off the usual path (a cancellation, a run without a
    # commit), and the fuzz suite plants its torn-write bug there (``test_fuzz_planted``).
    document = outcome.to_json()
    try:
        write_json_atomic(path, document)
    except FileNotFoundError:  # the stage dir went away under the handler
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, document)


#: The random part of attempt ids: unique enough with the node and number beside it, and
#: seeded once from the OS instead of a ``getrandom`` system call per attempt.
_attempt_ids = random.Random(secrets.randbits(64))
os.register_at_fork(after_in_child=lambda: _attempt_ids.seed(secrets.randbits(64)))


async def _write_status_durably(path: Path, outcome: Outcome, *, together: bool = True) -> None:
    """:func:`_write_status` with its fsyncs on the write pool (fan-out branches), committed
    together with other branches' when several are pending (``aio/offload.py``; not a
    cancelled branch's: ``together=False``); the pool also creates the stage dir if it went
    away."""
    await write_bytes_durably(path, status_text(outcome).encode("utf-8"), together=together)


class _Marker(NamedTuple):
    """``.attempt.json``: which attempt the stage dir's files belong to, and how it ended.

    ``finished`` is the attempt's commit point (after its ``status.json``): a resume adopts
    that outcome unless the checkpoint already counts the attempt (``number``), so a stage is
    never executed twice because the engine died between its completion and the checkpoint.
    ``interrupted`` marks a cancelled attempt, which a resume runs again as a new attempt.

    Written without fsync on purpose: it only steers recovery after a crash (archive numbering,
    adoption); a marker lost to a power cut degrades to re-running the attempt. A marker that
    replaces another is written atomically (temp file and rename): a SIGKILL between a truncate
    and a write used to leave an empty ``.attempt.json`` over a finished one. The first marker
    in a stage dir the attempt created is created in place (``fresh``, contract.md §2): a
    SIGKILL may leave it empty or short, which ``read_attempt_marker`` reads as absent — and
    absent is what the marker was an instant before, so nothing committed is lost.

    A named tuple: one per attempt, where an attrs class's ``__init__`` cost more.
    """

    node_id: str
    number: int
    attempt: int
    attempt_id: str
    epoch: str

    def write(
        self,
        stage_dir: StrPath,
        *,
        finished: bool,
        interrupted: bool = False,
        outcome: Outcome | None = None,
        fresh: bool = False,
    ) -> dict[str, Any]:
        """Write the stage dir's marker (which exists: the attempt created it); the record,
        without the outcome (its readers ask only for the ``number``). A finished marker
        carries the attempt's ``outcome`` (what a resume adopts). ``fresh``: the attempt
        made the stage dir and wrote no marker yet (created in place)."""
        node_id, number, attempt, attempt_id, epoch = self
        data = encode_marker(
            node_id,
            number,
            attempt,
            attempt_id,
            epoch,
            finished,
            interrupted,
            None if outcome is None else marker_outcome_text(outcome),
        )
        path = f"{os.fspath(stage_dir)}/{ATTEMPT_MARKER}"  # no ``Path`` join: a string will do
        try:
            write_bytes_atomic(path, data, durable=False, fresh=fresh)
        except FileNotFoundError:  # the stage dir went away under the handler
            os.makedirs(stage_dir, exist_ok=True)
            write_bytes_atomic(path, data, durable=False, fresh=fresh)
        return marker_record(node_id, number, attempt, attempt_id, epoch, finished, interrupted)


def _marked_outcome(marker: dict[str, Any]) -> Outcome | None:
    """The outcome a finished marker records, or ``None`` (an older marker, or not valid)."""
    document = marker.get("outcome")
    if document is None:
        return None
    try:
        return Outcome.from_json(document, source=ATTEMPT_MARKER)
    except StatusFileError:
        return None


def _listing_or_making(stage_dir: StrPath) -> list[str] | None:
    """The names in ``stage_dir``; ``None`` when it did not exist, and has now been made.

    ``mkdir`` first: on a first visit (the usual case) that one call both answers "is there
    anything to adopt or archive?" (no) and makes the dir, where a listing that fails and then
    a ``mkdir`` took two calls and an exception.

    ``None`` only when this call's own ``mkdir`` made the dir, which the attempt then knows to
    be empty (``AttemptInfo.fresh_stage_dir``); a dir made through ``parents=True`` after the
    stage root went away gives ``[]``: its ``exist_ok`` cannot tell whether someone else made
    it first."""
    try:
        os.mkdir(stage_dir)
    except FileExistsError:
        return os.listdir(stage_dir)
    except FileNotFoundError:  # the stage root is gone (removed under the run): make it all
        os.makedirs(stage_dir, exist_ok=True)
        return []
    return None


def _archive_previous_attempt(stage_dir: Path, previous: int, names: list[str]) -> bool:
    """Move the previous attempt's files (of ``names``, the stage dir's listing) into
    ``attempt-<n>/`` so nothing is overwritten; whether there was anything to move."""
    if previous < 1:
        return False
    files = [stage_dir / name for name in names if not name.startswith(ARCHIVE_PREFIX)]
    if not files:
        return False
    archive = stage_dir / f"attempt-{previous}"
    while archive.exists() and any(archive.iterdir()):
        archive = archive.with_name(archive.name + "+")
    archive.mkdir(exist_ok=True)
    for path in files:
        shutil.move(str(path), archive / path.name)
    return True
