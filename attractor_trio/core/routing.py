"""Where traversal goes after a stage (contract.md §5, spec §3.3 and §3.7): advance or stop.

Non-``fail`` outcomes (``skipped`` included) use :func:`~.edges.select_edge`; when nothing
matches the run stops with ``exit_path=no_route`` instead of the spec's silent success, because
an unrouted outcome is a pipeline bug the author needs to see.

A ``fail`` outcome never takes an ordinary unconditional edge — that would route a failure
down the success path. It follows, in order: a condition-matched edge; an unconditional edge
into a ``conditional`` node (the routing point decides, as in the spec's Branch example); the
node's ``retry_target``; its ``fallback_retry_target``; otherwise the run stops with
``exit_path=stage_failed`` carrying the stage's own failure reason and class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from ..dot.graph import Edge, Graph
from .edges import (
    best_by_weight_then_lexical,
    condition_matches,
    is_unconditional,
    outgoing_table,
    select_from,
)
from .failures import STRUCTURAL
from .fanout import find_fan_in
from .outcome import Outcome, StageStatus, is_success_like
from .vocabulary import ExitPath

__all__ = ["Advance", "Stop", "after_fan_out", "route"]


@frozen
class Advance:
    """Go to ``to_node``. ``edge`` is ``None`` for a retry-target jump.

    ``method`` is one of ``condition|preferred_label|suggested_ids|weight|lexical|retry_target``;
    a ``fallback_retry_target`` jump also reports ``retry_target``, the only jump method the
    ``edge_selected`` event defines (contract.md §4). ``fan_in`` marks the fan-out → fan-in jump
    (:func:`after_fan_out`), which emits no ``edge_selected``.
    """

    to_node: str
    edge: Edge | None
    method: str
    loop_restart: bool = False


@frozen
class Stop:
    """End the run here, with the exit path and causal reason for ``final.json``.

    ``exit_path`` is ``completed`` only at a terminal node with a non-``fail`` outcome;
    every other stop is a failed run.
    """

    exit_path: str
    failure_reason: str = ""
    failure_class: str = ""
    #: The node that caused the stop, when it is not the last stage run (a goal gate, a node
    #: refused by the visit limit); ``""`` lets the run find the causal stage itself.
    node_id: str = ""

    @property
    def failed(self) -> bool:
        return self.exit_path != ExitPath.COMPLETED


def route(
    graph: Graph, node_id: str, outcome: Outcome, context: Mapping[str, Any]
) -> Advance | Stop:
    """Decide the next step after ``node_id`` finished with ``outcome``.

    At a terminal node a non-``fail`` outcome completes the run (goal gates are checked by
    the engine before the exit node runs, spec S3.2-02). Only ``fail`` takes the failure path.
    A ``retry`` outcome normally never gets here (:func:`~.retry.after_attempt` turns an
    exhausted retry into ``fail`` or ``partial_success``); if it does, ordinary edge selection
    applies, so an ``outcome=retry`` edge can route it.
    """
    if outcome.status is StageStatus.FAIL:
        return _route_failure(graph, node_id, outcome, context)
    if graph.is_terminal(node_id):
        return Stop(ExitPath.COMPLETED)
    table = outgoing_table(graph, node_id)
    choice = select_from(table, outcome, context)
    if choice is None:
        return Stop(ExitPath.NO_ROUTE, _no_route_reason(graph, node_id, outcome), STRUCTURAL)
    if choice is table.default:  # the usual choice: its step is made once, kept on the table
        step = table.step
        if step is None:
            edge = choice.edge
            step = table.step = Advance(edge.to_node, edge, choice.method, edge.loop_restart)
        return step  # type: ignore[no-any-return]
    return _advance(choice.edge, choice.method)


def after_fan_out(graph: Graph, node_id: str, outcome: Outcome) -> Advance | Stop | None:
    """Where traversal goes after the ``parallel`` node ``node_id`` (contract.md §9).

    To its fan-in whatever the outcome — a jump, not an edge (``edge`` is ``None``): the
    branches were the edges, and the fan-in's outcome routes, so its fail edges handle failed
    branches. With no fan-in, a success-like outcome ends the run; ``None`` (a ``fail``) means
    :func:`route` applies fail routing from the parallel node itself. The run and a resumed
    run both decide here, so a resume after the fan-out never walks into a branch.
    """
    join = find_fan_in(graph, [edge.to_node for edge in graph.outgoing(node_id)])
    if join is not None:
        return Advance(join, None, "fan_in")
    return Stop(ExitPath.COMPLETED) if is_success_like(outcome) else None


def _advance(edge: Edge, method: str) -> Advance:
    """The step along ``edge``; the same (immutable) object every time an edge is taken the
    same way, instead of a new one and a re-read ``loop_restart`` per visit. Keyed by the
    edge's identity: the cached step holds the edge, so the id cannot be reused meanwhile."""
    key = (id(edge), method)
    advance = _ADVANCES.get(key)
    if advance is None:
        if len(_ADVANCES) >= _ADVANCES_LIMIT:
            _ADVANCES.clear()
        advance = _ADVANCES[key] = Advance(edge.to_node, edge, method, edge.loop_restart)
    return advance


_ADVANCES: dict[tuple[int, str], Advance] = {}
_ADVANCES_LIMIT = 4096


def _route_failure(
    graph: Graph, node_id: str, outcome: Outcome, context: Mapping[str, Any]
) -> Advance | Stop:
    edges = graph.outgoing(node_id)
    matched = condition_matches(edges, outcome, context)
    if matched:
        return _advance(best_by_weight_then_lexical(matched).edge, "condition")
    into_routing_points = [
        edge
        for edge in edges
        if is_unconditional(edge) and _is_conditional_node(graph, edge.to_node)
    ]
    if into_routing_points:
        choice = best_by_weight_then_lexical(into_routing_points)
        return _advance(choice.edge, choice.method)
    node = graph.nodes.get(node_id)
    if node is not None:
        for target in (node.retry_target, node.fallback_retry_target):
            if target and target in graph.nodes:
                return Advance(target, None, "retry_target")
    reason = outcome.failure_reason or f"stage '{node_id}' failed"
    return Stop(ExitPath.STAGE_FAILED, reason, outcome.failure_class)


def _is_conditional_node(graph: Graph, node_id: str) -> bool:
    node = graph.nodes.get(node_id)
    return node is not None and node.handler_type == "conditional"


def _no_route_reason(graph: Graph, node_id: str, outcome: Outcome) -> str:
    status = outcome.value
    edges = graph.outgoing(node_id)
    if not edges:
        return (
            f"no outgoing edge of node '{node_id}' matches outcome '{status}': the node has no "
            "outgoing edges; add one, or make the node an exit (shape=Msquare)"
        )
    tried = ", ".join(f"-> {edge.to_node} [{edge.condition.strip()}]" for edge in edges)
    return (
        f"no outgoing edge of node '{node_id}' matches outcome '{status}' (tried {tried}); "
        "add an edge whose condition covers it, or an unconditional edge as the default"
    )
