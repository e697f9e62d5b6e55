"""Pins for the per-stage hot path's shortcuts (issue #22): each fast form gives exactly what
the plain form it replaced gave."""

from __future__ import annotations

import gc
from typing import Any

import hypothesis.strategies as st
from hypothesis import given

from attractor_trio.core import edges as edges_module
from attractor_trio.core.edges import (
    best_by_weight_then_lexical,
    condition_matches,
    is_unconditional,
    normalize_label,
    outgoing_table,
    select_edge,
)
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.core.routing import Advance, Stop, route
from attractor_trio.dot.graph import Edge, Graph
from attractor_trio.scopes.run import _compact

from .test_core_edges import contexts_st, edge, edge_lists, graph_of, outcomes_st

_TEXTS = st.sampled_from(["", " ", "x", "rate limit", "null"])


@given(
    status=st.sampled_from(["success", "partial_success", "retry", "fail", "skipped"]),
    label=_TEXTS,
    suggested=st.lists(st.sampled_from(["a", "b", ""]), max_size=2),
    reason=_TEXTS,
    failure_class=_TEXTS,
    signature=_TEXTS,
    notes=_TEXTS,
)
def test_a_checkpointed_outcome_is_its_routing_fields_without_the_empty_ones(
    status: str,
    label: str,
    suggested: list[str],
    reason: str,
    failure_class: str,
    signature: str,
    notes: str,
) -> None:
    """``node_outcomes`` in the checkpoint: read field by field, the same document (keys, order,
    values) as the routing fields of ``to_json`` with the empty ones dropped."""
    outcome = Outcome(
        status,
        preferred_label=label,
        suggested_next_ids=suggested,
        failure_reason=reason,
        failure_class=failure_class,
        failure_signature=signature,
        notes=notes,
        context_updates={"k": 1},
    )
    doc = outcome.to_json()
    routing = (
        "status",
        "preferred_label",
        "suggested_next_ids",
        "failure_reason",
        "failure_class",
        "failure_signature",
    )
    expected = {key: doc[key] for key in routing if doc[key] not in ("", [])}
    assert list(_compact(outcome).items()) == list(expected.items())


# --- edge selection from the per-graph table ------------------------------------------------


def _plain_select(
    graph: Graph, node_id: str, outcome: Outcome, context: dict[str, Any]
) -> tuple[Edge, str] | None:
    """Spec §3.3 as first written, straight from ``graph.outgoing`` on every call."""
    edges = graph.outgoing(node_id)
    matched = condition_matches(edges, outcome, context)
    if matched:
        return best_by_weight_then_lexical(matched).edge, "condition"
    unconditional = [candidate for candidate in edges if is_unconditional(candidate)]
    if not unconditional:
        return None
    wanted = normalize_label(outcome.preferred_label)
    for candidate in unconditional if wanted else []:
        if normalize_label(candidate.label) == wanted:
            return candidate, "preferred_label"
    for target in outcome.suggested_next_ids:
        for candidate in unconditional:
            if candidate.to_node == target:
                return candidate, "suggested_ids"
    best = best_by_weight_then_lexical(unconditional)
    return best.edge, best.method


@given(edge_lists(), st.lists(st.tuples(outcomes_st, contexts_st), min_size=1, max_size=4))
def test_edge_selection_from_the_table_is_the_plain_selection(
    edges: list[Edge], visits: list[tuple[Outcome, dict[str, Any]]]
) -> None:
    """The same graph visited with several outcomes: the table built on the first visit
    answers every later one as the plain algorithm does."""
    graph = graph_of(*edges)
    for outcome, context in visits:
        choice = select_edge(graph, "a", outcome, context)
        plain = _plain_select(graph, "a", outcome, context)
        assert (None if choice is None else (choice.edge, choice.method)) == plain


@given(edge_lists(), st.lists(st.tuples(outcomes_st, contexts_st), min_size=1, max_size=4))
def test_routing_with_the_tables_step_is_routing_along_the_plain_choice(
    edges: list[Edge], visits: list[tuple[Outcome, dict[str, Any]]]
) -> None:
    """``route`` keeps the step of a node's default choice on its table (built once, reused
    by later visits): every visit gets the step the plain selection describes, whichever
    choice it makes, before and after the default's step was made."""
    graph = graph_of(*edges)
    for outcome, context in visits:
        decision = route(graph, "a", outcome, context)
        if outcome.status is StageStatus.FAIL:
            continue  # failure routing never reads the default choice
        plain = _plain_select(graph, "a", outcome, context)
        if plain is None:
            assert isinstance(decision, Stop)
            continue
        assert decision == Advance(plain[0].to_node, plain[0], plain[1], plain[0].loop_restart)


def test_a_default_step_is_made_once_per_node() -> None:
    graph = graph_of(edge("b", loop_restart="true"))
    first = route(graph, "a", Outcome("success"), {})
    assert first == Advance("b", graph.edges[0], "weight", loop_restart=True)
    assert route(graph, "a", Outcome("partial_success"), {}) is first
    labelled = route(graph, "a", Outcome("success", preferred_label="x"), {})
    assert labelled == first  # no label matches: the default again, the same step
    assert labelled is first


def test_a_graphs_edge_tables_go_with_the_graph() -> None:
    graph = graph_of(edge("b"), edge("c", condition="outcome=fail"))
    table = outgoing_table(graph, "a")
    assert outgoing_table(graph, "a") is table
    assert [e.to_node for e in table.unconditional] == ["b"]
    assert [(e.to_node, text) for e, text in table.conditional] == [("c", "outcome=fail")]
    key = id(graph)
    assert key in edges_module._TABLES
    del graph, table
    gc.collect()
    assert key not in edges_module._TABLES
