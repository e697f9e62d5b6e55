"""Edge selection (spec §3.3): the deterministic 5-step choice of the next edge.

1. condition match — edges whose non-empty ``condition`` holds; best by weight, then target id;
2. preferred label — the first *unconditional* edge whose normalized label equals the outcome's;
3. suggested ids — for each suggested id in order, the first unconditional edge to it;
4. weight — the heaviest unconditional edge;
5. lexical — among equally heavy ones, the smallest target id.

A node with only conditional edges and none matching selects nothing (S3.3-09): routing reports
that loudly instead of taking an edge whose guard is false. Everything here is a pure function
of (graph, node, outcome, context); conditions are parsed through the lru-cached
:func:`~attractor_trio.dot.conditions.parse_condition`.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen

from ..dot.conditions import evaluate_condition
from ..dot.graph import Edge, Graph
from .outcome import Outcome

__all__ = [
    "SELECTION_METHODS",
    "EdgeChoice",
    "OutgoingEdges",
    "best_by_weight_then_lexical",
    "condition_matches",
    "is_unconditional",
    "normalize_label",
    "outgoing_table",
    "select_edge",
    "select_from",
]

#: How an edge was chosen, as reported in the ``edge_selected`` event (contract.md §4).
SELECTION_METHODS = ("condition", "preferred_label", "suggested_ids", "weight", "lexical")

# Accelerator prefixes (S3.3-04, S4.6-09): "[Y] ", "Y) ", "Y - ".
_ACCELERATOR = re.compile(r"^(?:\[[^\]\s]\]\s*|[a-z0-9]\)\s*|[a-z0-9]\s+-\s+)")


@frozen
class EdgeChoice:
    """The selected edge and which step of the algorithm selected it."""

    edge: Edge
    method: str


def normalize_label(label: str) -> str:
    """Lowercase, trim, and drop one accelerator prefix, so ``[A] Approve`` equals ``approve``."""
    lowered = label.strip().lower()
    return _ACCELERATOR.sub("", lowered, count=1).strip()


def is_unconditional(edge: Edge) -> bool:
    """An empty or blank ``condition`` is always true (S10.5-01): the edge is unconditional."""
    return not edge.condition.strip()


def condition_matches(
    edges: Iterable[Edge], outcome: Outcome, context: Mapping[str, Any]
) -> list[Edge]:
    """Step 1's candidates: conditional edges whose condition holds, in declaration order."""
    status = outcome.value
    return [
        edge
        for edge in edges
        if not is_unconditional(edge)
        and evaluate_condition(edge.condition, status, outcome.preferred_label, context)
    ]


def best_by_weight_then_lexical(edges: Sequence[Edge]) -> EdgeChoice:
    """S3.3-08: highest weight, then smallest target id, then declaration order.

    The method is ``lexical`` when another candidate had the same weight (the id decided),
    else ``weight``. ``edges`` must not be empty.
    """
    best = min(edges, key=lambda edge: (-edge.weight, edge.to_node))
    tied = sum(1 for edge in edges if edge.weight == best.weight) > 1
    return EdgeChoice(best, "lexical" if tied else "weight")


def select_edge(
    graph: Graph, node_id: str, outcome: Outcome, context: Mapping[str, Any]
) -> EdgeChoice | None:
    """Choose the edge out of ``node_id`` for ``outcome`` (spec §3.3); ``None`` when none fits.

    A malformed condition raises :class:`~attractor_trio.dot.conditions.ConditionSyntaxError`;
    validation rejects such graphs before a run starts.
    """
    return select_from(outgoing_table(graph, node_id), outcome, context)


def select_from(
    table: OutgoingEdges, outcome: Outcome, context: Mapping[str, Any]
) -> EdgeChoice | None:
    """:func:`select_edge` over a node's :func:`outgoing_table` (which routing keeps)."""
    if table.conditional:
        status, label = outcome.value, outcome.preferred_label
        matched = [
            edge
            for edge, condition in table.conditional
            if evaluate_condition(condition, status, label, context)
        ]
        if matched:
            return EdgeChoice(best_by_weight_then_lexical(matched).edge, "condition")
    if table.default is None:
        return None
    unconditional = table.unconditional
    return (
        (
            _by_preferred_label(unconditional, outcome.preferred_label)
            if outcome.preferred_label
            else None
        )
        or (
            _by_suggested_ids(unconditional, outcome.suggested_next_ids)
            if outcome.suggested_next_ids
            else None
        )
        or table.default
    )


class OutgoingEdges:
    """A node's outgoing edges sorted for selection, decided once per graph and node: every
    visit used to re-split them into conditional and unconditional ones, re-read each
    ``condition`` and ``weight`` attribute and re-rank the unconditional ones.

    A plain slotted class, not an attrs one: in a chain of stages every node is visited once,
    so each table is built for one use, and the frozen class's ``__init__`` (and a ranking of
    one edge) was most of a stage's routing. Nothing changes a table once built, except the
    memo :attr:`step` (``routing`` keeps there the step :attr:`default` takes)."""

    __slots__ = ("conditional", "default", "edges", "step", "unconditional")

    def __init__(
        self,
        edges: tuple[Edge, ...],
        conditional: tuple[tuple[Edge, str], ...],
        unconditional: tuple[Edge, ...],
        default: EdgeChoice | None,
    ) -> None:
        #: All of them, in declaration order.
        self.edges = edges
        #: ``(edge, its condition text)`` for the conditional ones, in declaration order.
        self.conditional = conditional
        #: The unconditional ones, in declaration order.
        self.unconditional = unconditional
        #: Steps 4-5 over :attr:`unconditional` (``None`` when there is none).
        self.default = default
        #: The routing step for :attr:`default`, once routing has made it (``None`` before).
        self.step: Any = None

    @classmethod
    def of(cls, edges: Sequence[Edge]) -> OutgoingEdges:
        if len(edges) == 1:  # the usual node: one edge, unranked ("weight": nothing tied)
            edge = edges[0]
            condition = edge.condition
            if condition.strip():
                return cls((edge,), ((edge, condition),), (), None)
            return cls((edge,), (), (edge,), EdgeChoice(edge, "weight"))
        unconditional = tuple(edge for edge in edges if is_unconditional(edge))
        return cls(
            tuple(edges),
            tuple((edge, edge.condition) for edge in edges if not is_unconditional(edge)),
            unconditional,
            best_by_weight_then_lexical(unconditional) if unconditional else None,
        )


def outgoing_table(graph: Graph, node_id: str) -> OutgoingEdges:
    """``node_id``'s :class:`OutgoingEdges` in ``graph`` (built on first use; a graph is
    immutable, so it stays valid for the graph's lifetime, and goes with it)."""
    key = id(graph)
    entry = _TABLES.get(key)
    if entry is None or entry[0]() is not graph:
        entry = _TABLES[key] = (weakref.ref(graph, lambda _ref: _forget(key, _ref)), {})
    tables = entry[1]
    table = tables.get(node_id)
    if table is None:
        table = tables[node_id] = OutgoingEdges.of(graph.outgoing(node_id))
    return table


#: ``id(graph)`` → (a weak reference to the graph, node id → its table).
_TABLES: dict[int, tuple[weakref.ref[Graph], dict[str, OutgoingEdges]]] = {}


def _forget(key: int, ref: weakref.ref[Graph]) -> None:
    """The graph is gone: drop its tables (unless the id already belongs to a newer graph)."""
    entry = _TABLES.get(key)
    if entry is not None and entry[0] is ref:
        del _TABLES[key]


def _by_preferred_label(edges: Sequence[Edge], preferred_label: str) -> EdgeChoice | None:
    wanted = normalize_label(preferred_label)
    if not wanted:
        return None
    for edge in edges:
        if normalize_label(edge.label) == wanted:
            return EdgeChoice(edge, "preferred_label")
    return None


def _by_suggested_ids(edges: Sequence[Edge], suggested: Sequence[str]) -> EdgeChoice | None:
    for node_id in suggested:
        for edge in edges:
            if edge.to_node == node_id:
                return EdgeChoice(edge, "suggested_ids")
    return None
