"""Parallel fan-out (spec §4.8, contract.md §5): one nursery, one cancel scope per branch.

Each branch is a :class:`BranchScope`-like task: a cancel scope (losers and fail-fast
siblings are cancelled through it; none under a join that never leaves losers), an optional
``branch_timeout`` deadline, a slot from the fan-out's ``CapacityLimiter(max_parallel)``, and
its own traversal over a cloned context until the fan-in. The join decision is the sans-IO
:class:`~attractor_trio.core.join.Join`; this module only runs branches and feeds it. A
finished branch's result is appended durably to the fan-out's ``results.ndjson`` before it
counts (branches finishing together share an fsync: ``aio/group_commit.py``), so a resumed run
re-runs only the branches that had not finished.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

import trio
from attrs import frozen

from ..aio.group_commit import DurableLog, read_records
from ..context import Context
from ..core.failures import DETERMINISTIC, STRUCTURAL, TRANSIENT_INFRA, normalize_failure_class
from ..core.fanout import branch_keys, find_fan_in
from ..core.join import Join, JoinConfig
from ..core.outcome import Outcome, StageStatus
from ..dot.graph import Graph, Node
from ..dot.values import AttributeValueError, format_duration
from ..errors import AttractorError
from ..persist.atomic import read_json
from ..persist.paths import child
from .base import AttemptInfo, require_attempt

__all__ = ["RESULTS_FILE_NAME", "BranchResult", "BranchRunner", "ParallelHandler"]

#: Entered in place of a branch's loser scope when it has none (reusable, no state).
_NO_LOSER_SCOPE: Final = contextlib.nullcontext()

#: Where a fan-out records finished branches: ``parallel/<node>/results.ndjson``.
RESULTS_FILE_NAME = "results.ndjson"

#: How many branches the dispatcher starts between two trips through the scheduler.
STARTS_PER_YIELD: Final = 32

_LOSER = "branch canceled"
_SUCCESSES = frozenset({"success", "partial_success"})
#: The statuses a finished branch is recorded with (``_run_one``; ``skipped`` counts as success).
_RECORDED = _SUCCESSES | {"fail", "retry"}


@frozen
class BranchResult:
    """How one branch ended: the outcome of its last stage, or why it stopped."""

    outcome: Outcome
    last_node: str = ""
    completed_nodes: tuple[str, ...] = ()


class BranchRunner(Protocol):
    """What the engine gives the parallel handler: a way to run a sub-traversal."""

    max_parallel_default: int

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
    ) -> BranchResult: ...


@frozen
class _Plan:
    node: Node
    keys: tuple[str, ...]
    starts: tuple[str, ...]
    join_node: str | None
    config: JoinConfig
    max_parallel: int
    branch_timeout: float | None
    root: Path
    branch_prefix: str
    token: str

    @property
    def stop_at(self) -> frozenset[str]:
        """Where every branch's traversal stops: the fan-in, if there is one."""
        return frozenset({self.join_node}) if self.join_node else frozenset()


class ParallelHandler:
    """The ``parallel`` (component) handler."""

    def __init__(self, runner: BranchRunner) -> None:
        self.runner = runner

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        attempt = require_attempt(node, logs_root)
        try:
            plan = self._plan(node, graph, logs_root, attempt)
        except (ValueError, AttributeValueError) as exc:
            return Outcome(StageStatus.FAIL, failure_reason=str(exc), failure_class=STRUCTURAL)
        return await _FanOut(self.runner, plan, context, attempt).run()

    def _plan(self, node: Node, graph: Graph, logs_root: Path, attempt: AttemptInfo) -> _Plan:
        edges = graph.outgoing(node.id)
        if not edges:
            raise ValueError(f"parallel node '{node.id}' has no outgoing edges (no branches)")
        starts = tuple(e.to_node for e in edges)
        config = JoinConfig(
            policy=node.join_policy,
            error_policy=node.error_policy,
            total=len(edges),
            k=node.k,
            quorum_fraction=node.quorum_fraction,
        )
        prefix = f"{attempt.branch}/{node.id}" if attempt.branch else node.id
        return _Plan(
            node=node,
            keys=tuple(branch_keys(starts)),
            starts=starts,
            join_node=find_fan_in(graph, starts),
            config=config,
            max_parallel=node.max_parallel or self.runner.max_parallel_default,
            branch_timeout=node.branch_timeout,
            root=logs_root / "parallel" / node.id,
            branch_prefix=prefix,
            token=f"{attempt.visit}.{attempt.attempt}",
        )


class _FanOut:
    """One execution of a fan-out: the nursery, the limiter, the join."""

    def __init__(
        self, runner: BranchRunner, plan: _Plan, context: Context, attempt: AttemptInfo
    ) -> None:
        self.runner = runner
        self.plan = plan
        self.context = context
        self.attempt = attempt
        self.join = Join(plan.config)
        self.results: dict[str, dict[str, Any]] = {}
        #: Cancel scopes of the branches still running, by key.
        self.scopes: dict[str, trio.CancelScope] = {}
        self.started: set[str] = set()
        self.losers_cancelled = False
        self.log = DurableLog(plan.root / RESULTS_FILE_NAME)
        self.stop_at = plan.stop_at  # one set for every branch
        #: Whether a branch may become a loser to cancel; if not, it gets no cancel scope:
        #: making, entering and leaving one per branch was ~3 % of a wide fan-out's start on
        #: the trio thread (issue #22), for a scope nothing would ever cancel.
        self.cancels_losers = plan.config.may_decide_early

    async def run(self) -> Outcome:
        plan = self.plan
        started = time.monotonic()
        self.attempt.emit(
            "parallel_started",
            node_id=plan.node.id,
            branch_count=len(plan.keys),
            join_policy=plan.config.policy,
            error_policy=plan.config.error_policy,
            max_parallel=plan.max_parallel,
        )
        try:
            with self.log:
                async with trio.open_nursery() as nursery:
                    await self._dispatch(nursery)
        except BaseException:
            # The run is being cancelled: the event stream still closes this fan-out.
            self.attempt.emit(
                "parallel_completed",
                node_id=plan.node.id,
                status="canceled",
                success_count=sum(r["status"] in _SUCCESSES for r in self.results.values()),
                failure_count=sum(r["status"] == "fail" for r in self.results.values()),
                canceled_count=len(plan.keys)
                - sum(r["status"] != "canceled" for r in self.results.values()),
                duration_s=round(time.monotonic() - started, 3),
            )
            raise
        outcome = self._outcome()
        self.attempt.emit(
            "parallel_completed",
            node_id=plan.node.id,
            status=outcome.status.value,
            success_count=outcome.context_updates["parallel.success_count"],
            failure_count=outcome.context_updates["parallel.fail_count"],
            canceled_count=outcome.context_updates["parallel.canceled_count"],
            duration_s=round(time.monotonic() - started, 3),
        )
        return outcome

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        """Start branches in declaration order as slots free up; none once the join is decided.

        A slot is taken here, before the branch task exists, and released by the branch only
        after it has recorded its result — so a decision made by a finishing branch is seen
        before the next queued branch could start.

        A free slot is taken without a trip through the scheduler, which a checkpoint per
        branch cost each of a wide fan-out's branches (an ``epoll_wait`` and the loop's
        bookkeeping) before the last could begin its work (issue #22). But the dispatcher
        yields after every :data:`STARTS_PER_YIELD` starts, so the first branches begin their
        work while later ones are still being started: their work ends first, and a fan-out
        lasts until the last branch's finish has waited for all the finishes before it.
        Nothing else runs between two yields, so no decision or cancellation can arrive
        there; a branch that must wait for a slot passes through the scheduler anyway.
        """
        plan = self.plan
        limiter = trio.CapacityLimiter(plan.max_parallel)
        resumed = plan.root.is_dir()  # else no branch can have a result to reuse
        earlier = _earlier_results(plan) if resumed else {}
        for index, (key, start) in enumerate(zip(plan.keys, plan.starts, strict=True)):
            previous = earlier.get(key)
            if previous is not None:
                self._record(key, previous)
                self._cancel_losers_if_decided()
                continue
            if self.join.decided:
                break
            slot = object()
            try:  # a free slot is taken without a trip through the scheduler (see above)
                limiter.acquire_on_behalf_of_nowait(slot)
            except trio.WouldBlock:
                await limiter.acquire_on_behalf_of(slot)
                if self.join.decided:
                    limiter.release_on_behalf_of(slot)
                    break
            scope = None
            if self.cancels_losers:
                scope = self.scopes[key] = trio.CancelScope()
            self.started.add(key)
            # Here, not in the branch's task: tasks started together run in no set order, and
            # the log shows branches starting in declaration order. The task's first step
            # always runs (a cancellation waits for its first checkpoint), so its ``finally``
            # closes what this opens.
            self.attempt.emit(
                "parallel_branch_started", node_id=plan.node.id, branch_key=key, index=index
            )
            nursery.start_soon(
                self._branch, key, start, index, limiter, slot, scope, time.monotonic()
            )
            if len(self.started) % STARTS_PER_YIELD == 0:
                await trio.lowlevel.checkpoint()
        for key in plan.keys:  # never started: losers of an early decision
            if key not in self.results and key not in self.started:
                self._record(
                    key,
                    {
                        "id": key,
                        "branch_key": key,
                        "status": "canceled",
                        "failure_reason": f"{_LOSER} before starting",
                    },
                )

    async def _branch(
        self,
        key: str,
        start: str,
        index: int,
        limiter: trio.CapacityLimiter,
        slot: object,
        scope: trio.CancelScope | None,
        began: float,
    ) -> None:
        """One branch, from its ``parallel_branch_started`` (which :meth:`_dispatch` emits)."""
        plan = self.plan
        branch = f"{plan.branch_prefix}/{key}"
        result: dict[str, Any] | None = None
        try:
            # No scope if the join makes no losers (``cancels_losers``).
            with scope if scope is not None else _NO_LOSER_SCOPE:
                result = await self._run_one(key, start, branch, scope)
            if result is None:  # cancelled as a loser
                assert scope is not None
                result = {"status": "canceled", "failure_reason": _reason_of(scope)}
            result.update(id=key, branch_key=key)
            if result["status"] != "canceled":
                await self.log.append({**result, "token": plan.token})
            self._record(key, result)
            self._cancel_losers_if_decided()
        finally:
            # A finished branch needs no canceling: a 10,000-branch fan-out would otherwise
            # keep a scope per branch until its end.
            self.scopes.pop(key, None)
            # Also when the whole run is cancelled: every started branch is closed in the log.
            self.attempt.emit(
                "parallel_branch_completed",
                node_id=plan.node.id,
                branch_key=key,
                index=index,
                status=result["status"] if result else "canceled",
                duration_s=round(time.monotonic() - began, 3),
            )
            limiter.release_on_behalf_of(slot)

    async def _run_one(
        self, key: str, start: str, branch: str, loser_scope: trio.CancelScope | None
    ) -> dict[str, Any]:
        plan = self.plan
        run = partial(
            self.runner.run_branch,
            start=start,
            stop_at=self.stop_at,
            context=self.context.clone(),
            branch=branch,
            stage_root=child(plan.root, key),
            attempt=self.attempt,
            loser_scope=loser_scope,
        )
        if plan.branch_timeout is None:  # no scope of its own: one fewer per branch
            return _as_result(await run())
        with trio.move_on_after(plan.branch_timeout) as timer:
            ended = await run()
        if timer.cancelled_caught:
            assert plan.branch_timeout is not None
            return {
                "status": "fail",
                "failure_reason": f"branch '{key}' timed out after "
                f"{format_duration(plan.branch_timeout)}",
                "failure_class": TRANSIENT_INFRA,
            }
        return _as_result(ended)

    def _record(self, key: str, result: dict[str, Any]) -> None:
        self.results[key] = result
        self.join.record(key, result["status"])

    def _cancel_losers_if_decided(self) -> None:
        if not self.join.decided or self.losers_cancelled:
            return
        self.losers_cancelled = True
        why = f"{_LOSER}: {self.plan.config.policy}/{self.plan.config.error_policy} decided"
        for key, scope in self.scopes.items():
            if key not in self.results:
                scope.cancel(reason=why)

    def _outcome(self) -> Outcome:
        plan = self.plan
        joined = self.join.result()
        ordered = [self.results[k] for k in plan.keys if k in self.results]
        included = set(joined.included)
        updates: dict[str, Any] = {
            "parallel.results": [r for r in ordered if r["id"] in included],
            "parallel.success_count": joined.success_count,
            "parallel.fail_count": joined.failure_count,
            "parallel.canceled_count": joined.canceled_count,
            "parallel.join_node": plan.join_node or "",
        }
        for result in ordered:
            updates[f"parallel.branch.{result['id']}.status"] = result["status"]
        if joined.status is not StageStatus.FAIL:
            return Outcome(joined.status, context_updates=updates, notes=joined.reason)
        cause = next((r for r in ordered if r["status"] == "fail"), None)
        return Outcome(
            StageStatus.FAIL,
            context_updates=updates,
            notes=joined.reason,
            failure_reason=(cause or {}).get("failure_reason") or joined.reason,
            failure_class=_aggregate_class(ordered),
        )


def _as_result(ended: BranchResult) -> dict[str, Any]:
    """A finished branch's record (``results.ndjson``, ``parallel.results``)."""
    outcome = ended.outcome
    status = outcome.status.value
    return {
        "status": "success" if status == "skipped" else status,
        "failure_reason": outcome.failure_reason,
        "failure_class": outcome.failure_class,
        "notes": outcome.notes,
        "preferred_label": outcome.preferred_label,
        "last_node": ended.last_node,
        "completed_nodes": list(ended.completed_nodes),
        "context_updates": outcome.context_updates,
    }


def _reason_of(scope: trio.CancelScope) -> str:
    return f"{_LOSER} before finishing" if scope.cancel_called else "canceled"


def _aggregate_class(results: list[dict[str, Any]]) -> str:
    """Any deterministic failure makes the fan-out deterministic; else transient if any."""
    classes = {normalize_failure_class(r.get("failure_class") or "") for r in results}
    for candidate in (STRUCTURAL, DETERMINISTIC, TRANSIENT_INFRA):
        if candidate in classes:
            return candidate
    return ""


def _earlier_results(plan: _Plan) -> dict[str, dict[str, Any]]:
    """Results that this same fan-out execution (``token``: visit and attempt) recorded before
    the run was interrupted, by branch key. Also reads the per-branch ``result.json`` that
    engines before ``results.ndjson`` wrote, so such a run resumes without redoing branches.
    A record that is not a finished branch's result is ignored: that branch runs again."""
    keys = set(plan.keys)
    found: dict[str, dict[str, Any]] = {}
    for record in read_records(plan.root / RESULTS_FILE_NAME):
        if _reusable(record, plan.token) and record["id"] in keys:
            found[record["id"]] = {k: v for k, v in record.items() if k != "token"}
    for key in keys - found.keys():
        legacy = _load_result(plan.root / key, plan.token)
        if legacy is not None:
            found[key] = legacy
    return found


def _reusable(record: Any, token: str) -> bool:
    return (
        isinstance(record, dict)
        and record.get("token") == token
        and isinstance(record.get("id"), str)
        and record.get("status") in _RECORDED
    )


def _load_result(branch_root: Path, token: str) -> dict[str, Any] | None:
    """A ``result.json`` written by this same fan-out execution, else ``None``."""
    try:
        result = read_json(branch_root / "result.json")
    except (OSError, ValueError, AttractorError):
        return None
    if not _reusable(result, token):
        return None
    result.pop("token", None)
    return dict(result)
