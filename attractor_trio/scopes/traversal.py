"""The core execution loop (spec §3.2): execute, record, checkpoint, select an edge, advance.

Decisions come from the sans-IO ``core`` package; this module only sequences them and does
the IO (events, status files, checkpoints). One :class:`Traversal` walks the main graph;
parallel branches will run their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio
from attrs import define, field, setters

from ..context import Context
from ..core.cycles import (
    CycleBreaker,
    LoopRestartGate,
    RestartBlocked,
    RestartTripped,
    VisitLimit,
)
from ..core.fidelity import (
    COMPLETED_COUNT_KEY,
    COMPLETED_SUMMARY_KEY,
    resolve_fidelity,
    resolve_thread_key,
)
from ..core.goals import check_goal_gates, goal_gate_retry_target
from ..core.outcome import Outcome, StageStatus, context_updates_after
from ..core.routing import Advance, Stop, after_fan_out, route
from ..core.vocabulary import ExitPath, FailureClass
from ..dot.graph import Edge, Graph, Node
from ..persist.journaled import JournaledDict, JournaledList
from .attempt import StageExecutor

__all__ = ["BranchState", "Traversal", "TraversalState"]

#: How many completed stages the context's summary keeps (older ones are only counted).
_SUMMARY_LIMIT = 200
#: The longest a traversal runs stage after stage without letting the scheduler run the
#: run's other tasks (seconds of real time; see :meth:`Traversal._step_checkpoint`).
YIELD_INTERVAL_S = 0.002


def _journaled_list(items: Iterable[str]) -> list[str]:
    return items if isinstance(items, JournaledList) else JournaledList(items)


def _journaled_dict(items: Mapping[str, Any]) -> dict[str, Any]:
    return items if isinstance(items, JournaledDict) else JournaledDict(items)


@define(on_setattr=setters.NO_OP)
class TraversalState:
    """Everything a checkpoint holds about where a traversal is.

    Assignments are plain (no attrs ``__setattr__`` running the converters): the traversal
    sets ``current_node`` and the counters after every stage, and the journaled collections
    are only ever mutated, never replaced (one replaced by a plain container would still be
    encoded right, only whole)."""

    context: Context
    # Journaled, so the checkpoint after every stage re-encodes only what the stage changed
    # (persist/journaled.py); plain lists and dicts given here are converted.
    completed_nodes: list[str] = field(factory=JournaledList, converter=_journaled_list)
    node_outcomes: dict[str, Outcome] = field(factory=JournaledDict, converter=_journaled_dict)
    node_retries: dict[str, int] = field(factory=JournaledDict, converter=_journaled_dict)
    node_attempts: dict[str, int] = field(factory=JournaledDict, converter=_journaled_dict)
    visits: dict[str, int] = field(factory=JournaledDict, converter=_journaled_dict)
    failure_signatures: dict[str, int] = field(factory=dict)
    current_node: str = ""
    restart_count: int = 0
    restart_signatures: dict[str, int] = field(factory=dict)


@define(on_setattr=setters.NO_OP)
class BranchState(TraversalState):
    """A fan-out branch's state: plain containers, because no checkpoint ever encodes it (the
    run's checkpoint records the fan-out's results, not its branches' walks). The journaled
    ones and their journals were five objects more per branch for the collector to walk, on
    the trio thread, while a wide fan-out's branches start (issue #22)."""

    completed_nodes: list[str] = field(factory=list)
    node_outcomes: dict[str, Outcome] = field(factory=dict)
    node_retries: dict[str, int] = field(factory=dict)
    node_attempts: dict[str, int] = field(factory=dict)
    visits: dict[str, int] = field(factory=dict)


@define
class Traversal:
    graph: Graph
    state: TraversalState
    executor: StageExecutor
    emit: Callable[..., Any]
    #: Called after every recorded stage (checkpoint + ``checkpoint_saved``).
    checkpoint: Callable[[str], None]
    #: ``(edge_target, advance) -> Stop | None``: handles ``loop_restart`` edges.
    on_loop_restart: Callable[[Advance], Any] | None = None
    #: A parallel branch stops *before* these nodes (its fan-in) and before any terminal.
    stop_at: frozenset[str] | None = None
    #: Shared by the main traversal and its branches, so counts land in one checkpoint.
    breaker: CycleBreaker | None = None
    restart_gate: LoopRestartGate | None = None
    #: ``main``, or the branch path (the ``scope`` of ``failure_cycle_break``).
    scope_name: str = "main"
    tripped: Stop | None = None
    #: node id → whether it is terminal, and its handler type: asked two or three times per
    #: visit, each an attribute lookup chain, and fixed for the graph's lifetime.
    _facts: dict[str, tuple[bool, str]] = field(factory=dict, init=False, repr=False)
    #: ``time.monotonic()`` when this traversal last yielded to the scheduler (0: never). A
    #: caller that has just come back from the scheduler says so (``yielded_at=``): a fan-out
    #: branch starts after its log was made on the write pool, and a trip more before its first
    #: stage cost each of a wide fan-out's branches a scheduler round for nothing (issue #22).
    _yielded_at: float = field(default=0.0, repr=False)

    async def _step_checkpoint(self) -> None:
        """Before every step: stop here if the run is cancelled, and let the run's other
        tasks run if this traversal has not let them for :data:`YIELD_INTERVAL_S`.

        Cancellation is checked at every step (``checkpoint_if_cancelled`` raises as a full
        checkpoint would), so once the run is cancelled no goal-gate retry, loop restart or
        next stage can start, even if every handler so far was synchronous. Only the trip
        through the scheduler is rationed: it cost about 8 µs per stage (an ``epoll_wait``
        and the run loop's bookkeeping), a fifth of a simulated stage, to hand over to tasks
        that mostly had nothing to do. A stage that waits on anything real (a process, a
        model, a sleep) yields inside itself anyway; a chain of synchronous stages (start,
        conditionals, simulated stages) now yields every couple of milliseconds instead of
        every stage — a delay no other task can tell from a slightly slower stage (heartbeats,
        the watchdog and SIGINT work in seconds), and a pending SIGINT still reaches the run
        within one interval."""
        now = time.monotonic()
        if now - self._yielded_at >= YIELD_INTERVAL_S:
            await trio.lowlevel.checkpoint()
            self._yielded_at = time.monotonic()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def _node_facts(self, node_id: str) -> tuple[bool, str]:
        facts = self._facts.get(node_id)
        if facts is None:
            node = self.graph.nodes[node_id]
            facts = self._facts[node_id] = (self.graph.is_terminal(node_id), node.handler_type)
        return facts

    async def run(self, node_id: str, predecessor: str = "") -> Stop:
        """Walk from ``node_id`` until a terminal node or a stop; return why it ended."""
        graph = self.graph
        incoming: Edge | None = None
        limit = VisitLimit(graph.max_node_visits)
        while True:
            if self.stop_at is not None and (node_id in self.stop_at or graph.is_terminal(node_id)):
                # A branch at its fan-in: only the cancellation check of a step. Its trip
                # through the scheduler would hand over to nobody in particular just before
                # the branch ends anyway (its task yields on the way out) and cost each of a
                # wide fan-out's finishes a scheduler round (issue #22).
                await trio.lowlevel.checkpoint_if_cancelled()
                return Stop(ExitPath.COMPLETED)
            await self._step_checkpoint()
            node = graph.nodes[node_id]
            terminal, handler_type = self._node_facts(node_id)
            visits = self.state.visits.get(node_id, 0) + 1
            if not limit.check(node_id, visits):
                return Stop(
                    ExitPath.VISIT_LIMIT,
                    limit.message(node_id, visits),
                    FailureClass.STRUCTURAL,
                    node_id=node_id,
                )
            self.state.visits[node_id] = visits
            if terminal:
                jump = self._unsatisfied_gate()
                if isinstance(jump, Stop):
                    return jump
                if jump is not None:
                    self.emit(
                        "edge_selected", from_node=node_id, to_node=jump, method="goal_gate_retry"
                    )
                    predecessor, node_id, incoming = node_id, jump, None
                    continue
                outcome = await self._execute(node, predecessor, incoming, handler_type)
                if outcome.status is StageStatus.FAIL:
                    return Stop(
                        ExitPath.STAGE_FAILED, outcome.failure_reason, outcome.failure_class
                    )
                return Stop(ExitPath.COMPLETED)
            outcome = await self._execute(node, predecessor, incoming, handler_type)
            if self.tripped is not None:
                return self.tripped
            fan_in = after_fan_out(graph, node_id, outcome) if handler_type == "parallel" else None
            if isinstance(fan_in, Stop):
                return fan_in
            if fan_in is not None:  # fan-out → fan-in: no edge_selected, the branches were edges
                predecessor, node_id, incoming = node_id, fan_in.to_node, None
                continue
            decision = route(graph, node_id, outcome, self.state.context)
            if isinstance(decision, Stop):
                return decision
            self.emit(
                "edge_selected",
                from_node=node_id,
                to_node=decision.to_node,
                method=decision.method,
            )
            if decision.loop_restart and self.on_loop_restart is not None:
                gated = self._gate_restart(node_id, outcome)
                if gated is not None:
                    return gated
                result = await self.on_loop_restart(decision)
                if isinstance(result, Stop):
                    return result
            predecessor, node_id, incoming = node_id, decision.to_node, decision.edge

    async def _execute(
        self, node: Node, predecessor: str, incoming: Edge | None, handler_type: str
    ) -> Outcome:
        state = self.state
        state.context.set("current_node", node.id)
        state.context.set("internal.fidelity", self._fidelity(node, incoming))
        state.context.set(
            "internal.thread_key", resolve_thread_key(node, incoming, self.graph, predecessor)
        )
        self.executor.current_visit = state.visits.get(node.id, 1)
        outcome = await self.executor.run_stage(node, predecessor)
        state.completed_nodes.append(node.id)
        state.node_outcomes[node.id] = outcome
        state.context.apply_updates(context_updates_after(outcome))
        if handler_type != "start":
            _remember_summary(state.context, node.id, outcome)
        state.current_node = node.id
        self.tripped = self._observe_cycle(node.id, outcome)
        self.checkpoint(node.id)
        return outcome

    def _observe_cycle(self, node_id: str, outcome: Outcome) -> Stop | None:
        """Feed the visit's final outcome to the cycle breaker (before the checkpoint, so the
        counts it saves include this visit)."""
        if self.breaker is None:
            return None
        trip = self.breaker.observe(node_id, outcome)
        self.state.failure_signatures = self.breaker.counts
        if trip is None:
            return None
        self.emit("failure_cycle_break", **trip.event_fields(self.scope_name))
        return Stop(ExitPath.CYCLE_BREAKER, trip.failure_reason, trip.failure_class)

    def _gate_restart(self, node_id: str, outcome: Outcome) -> Stop | None:
        """``loop_restart`` only after success or a transient failure, with its own breaker."""
        if self.restart_gate is None:
            return None
        decision = self.restart_gate.check(node_id, outcome)
        self.state.restart_signatures = self.restart_gate.counts
        if isinstance(decision, RestartBlocked):
            self.emit(
                "loop_restart_blocked",
                node_id=node_id,
                failure_class=decision.failure_class,
                failure_reason=decision.failure_reason,
            )
            return Stop(
                ExitPath.STAGE_FAILED,
                outcome.failure_reason or decision.reason,
                decision.failure_class,
            )
        if isinstance(decision, RestartTripped):
            self.emit(
                "failure_cycle_break",
                node_id=node_id,
                signature=decision.signature,
                count=decision.count,
                limit=decision.limit,
                scope=self.scope_name,
            )
            return Stop(ExitPath.CYCLE_BREAKER, decision.failure_reason, decision.failure_class)
        return None

    def _fidelity(self, node: Node, incoming: Edge | None) -> str:
        """S5.4-06, and S5.3-06: the first stage after a resume degrades ``full`` once."""
        mode = resolve_fidelity(incoming, node, self.graph)
        context = self.state.context
        if context.get("internal.resume_degrade_fidelity"):
            context.set("internal.resume_degrade_fidelity", False)
            if mode == "full":
                return "summary:high"
        return mode

    def _unsatisfied_gate(self) -> str | Stop | None:
        """``None`` when all visited gates are satisfied, else a retry target or a stop."""
        check = check_goal_gates(self.graph, self.state.node_outcomes)
        if check.ok or check.failing_node is None:
            return None
        failing = check.failing_node
        target = goal_gate_retry_target(self.graph, failing)
        if target is not None:
            return target
        last = self.state.node_outcomes[failing]
        # The causal raw reason wins over a wrapper (contract.md §5); exit_path says "goal gate".
        reason = last.failure_reason or (
            f"goal gate '{failing}' unsatisfied (last outcome {last.value}) and no retry target"
        )
        return Stop(
            ExitPath.GOAL_GATE_UNSATISFIED,
            reason,
            last.failure_class or FailureClass.DETERMINISTIC,
            node_id=failing,
        )


def _remember_summary(context: Context, node_id: str, outcome: Outcome) -> None:
    """Completed-stage summary for fidelity preambles (compact/summary modes): the last 200
    stages, and how many completed in all (the preamble states the true count)."""
    context.record_stage(
        [node_id, outcome.value, outcome.notes or outcome.failure_reason],
        _SUMMARY_LIMIT,
        COMPLETED_SUMMARY_KEY,
        COMPLETED_COUNT_KEY,
    )
