"""The core execution loop (spec §3.2): execute, record, checkpoint, select an edge, advance.

Decisions come from the sans-IO ``core`` package; this module only sequences them and does
the IO (events, status files, checkpoints). One :class:`Traversal` walks the main graph;
parallel branches will run their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from attrs import define, field

from .context import Context
from .core.fidelity import resolve_fidelity
from .core.goals import check_goal_gates, goal_gate_retry_target
from .core.outcome import Outcome, StageStatus, context_updates_after, is_success_like
from .core.routing import Advance, Stop, route
from .graph import Edge, Graph, Node
from .scopes.attempt import StageExecutor

__all__ = ["Traversal", "TraversalState"]


@define
class TraversalState:
    """Everything a checkpoint holds about where a traversal is."""

    context: Context
    completed_nodes: list[str] = field(factory=list)
    node_outcomes: dict[str, Outcome] = field(factory=dict)
    node_retries: dict[str, int] = field(factory=dict)
    node_attempts: dict[str, int] = field(factory=dict)
    visits: dict[str, int] = field(factory=dict)
    failure_signatures: dict[str, int] = field(factory=dict)
    current_node: str = ""
    restart_count: int = 0


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

    async def run(self, node_id: str, predecessor: str = "") -> Stop:
        """Walk from ``node_id`` until a terminal node or a stop; return why it ended."""
        graph = self.graph
        incoming: Edge | None = None
        while True:
            # A checkpoint per step: once the run is cancelled, no goal-gate retry, loop
            # restart or next stage can start, even if every handler so far was synchronous.
            await trio.lowlevel.checkpoint()
            if self.stop_at is not None and (node_id in self.stop_at or graph.is_terminal(node_id)):
                return Stop("completed")
            node = graph.nodes[node_id]
            limit = graph.max_node_visits
            visits = self.state.visits.get(node_id, 0) + 1
            if limit is not None and visits > limit:
                return Stop(
                    "visit_limit",
                    f"node '{node_id}' would be visited {visits} times; max_node_visits={limit}",
                    "structural",
                )
            self.state.visits[node_id] = visits
            if graph.is_terminal(node_id):
                jump = self._unsatisfied_gate()
                if isinstance(jump, Stop):
                    return jump
                if jump is not None:
                    self.emit(
                        "edge_selected", from_node=node_id, to_node=jump, method="goal_gate_retry"
                    )
                    predecessor, node_id, incoming = node_id, jump, None
                    continue
                outcome = await self._execute(node, predecessor, incoming)
                if outcome.status is StageStatus.FAIL:
                    return Stop("stage_failed", outcome.failure_reason, outcome.failure_class)
                return Stop("completed")
            outcome = await self._execute(node, predecessor, incoming)
            join = outcome.context_updates.get("parallel.join_node")
            if node.handler_type == "parallel" and is_success_like(outcome):
                # Fan-out → fan-in is a jump, not an edge: the branches were the edges.
                if not join:
                    return Stop("completed")
                predecessor, node_id, incoming = node_id, str(join), None
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
                result = await self.on_loop_restart(decision)
                if isinstance(result, Stop):
                    return result
            predecessor, node_id, incoming = node_id, decision.to_node, decision.edge

    async def _execute(self, node: Node, predecessor: str, incoming: Edge | None) -> Outcome:
        state = self.state
        state.context.set("current_node", node.id)
        state.context.set("internal.fidelity", self._fidelity(node, incoming))
        self.executor.current_visit = state.visits.get(node.id, 1)
        outcome = await self.executor.run_stage(node, predecessor)
        state.completed_nodes.append(node.id)
        state.node_outcomes[node.id] = outcome
        state.context.apply_updates(context_updates_after(outcome))
        if node.handler_type != "start":
            _remember_summary(state.context, node.id, outcome)
        state.current_node = node.id
        self.checkpoint(node.id)
        return outcome

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
        # The causal raw reason wins over a wrapper (CONTRACT §5); exit_path says "goal gate".
        reason = last.failure_reason or (
            f"goal gate '{failing}' unsatisfied (last outcome {last.status.value}) "
            "and no retry target"
        )
        return Stop("goal_gate_unsatisfied", reason, last.failure_class or "deterministic")


def _remember_summary(context: Context, node_id: str, outcome: Outcome) -> None:
    """Completed-stage summary for fidelity preambles (compact/summary modes)."""
    summary = list(context.get("internal.completed_summary") or [])
    summary.append([node_id, outcome.status.value, outcome.notes or outcome.failure_reason])
    context.set("internal.completed_summary", summary[-200:])
