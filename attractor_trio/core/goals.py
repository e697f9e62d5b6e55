"""Goal gates (spec §3.4): stages that must have succeeded before the run may exit.

Only *visited* gates count (AMBIG-25): a gate on a branch the run never took does not block
exit. A gate is satisfied by its latest outcome being ``success`` or ``partial_success``;
``skipped`` is not enough (contract.md §5) — skipping the work a gate guards is not achieving it.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen

from ..dot.graph import Graph
from .outcome import Outcome, StageStatus, satisfies_goal_gate

__all__ = ["GateCheck", "check_goal_gates", "goal_gate_retry_target"]


@frozen
class GateCheck:
    """``ok`` or the first unsatisfied gate (graph declaration order), spec S3.4-05."""

    ok: bool
    failing_node: str | None = None


def check_goal_gates(
    graph: Graph, node_outcomes: Mapping[str, Outcome | StageStatus | str]
) -> GateCheck:
    """Check every visited ``goal_gate=true`` node against its latest recorded outcome."""
    for node in graph.nodes.values():
        recorded = node_outcomes.get(node.id)
        if recorded is not None and node.goal_gate and not satisfies_goal_gate(recorded):
            return GateCheck(False, node.id)
    return GateCheck(True)


def goal_gate_retry_target(graph: Graph, node_id: str) -> str | None:
    """Where to jump for an unsatisfied gate (S3.4-03), or ``None``: the run then fails.

    Node ``retry_target`` → node ``fallback_retry_target`` → graph ``retry_target`` → graph
    ``fallback_retry_target``; a target naming no node is skipped (the spec's "missing/invalid").
    """
    node = graph.nodes.get(node_id)
    node_levels: tuple[str, ...] = (
        (node.retry_target, node.fallback_retry_target) if node is not None else ()
    )
    for target in (*node_levels, graph.retry_target, graph.fallback_retry_target):
        if target and target in graph.nodes:
            return target
    return None
