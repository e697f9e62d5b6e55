"""Edge selection (spec §3.3, parity P-13/P-14/P-15): table tests and Hypothesis properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import EdgeChoice, Outcome, normalize_label, select_edge
from attractor_trio.core.edges import best_by_weight_then_lexical
from attractor_trio.dot.graph import Edge, Graph, Node


def edge(to: str, **attrs: Any) -> Edge:
    return Edge("a", to, {k: str(v) for k, v in attrs.items()})


def graph_of(*edges: Edge) -> Graph:
    ids = dict.fromkeys(["a", *(e.to_node for e in edges)])
    return Graph("g", nodes={i: Node(i) for i in ids}, edges=edges)


def pick(
    edges: list[Edge], outcome: Outcome | None = None, context: dict[str, Any] | None = None
) -> EdgeChoice | None:
    return select_edge(graph_of(*edges), "a", outcome or Outcome("success"), context or {})


def picked(edges: list[Edge], outcome: Outcome | None = None, **context: Any) -> tuple[str, str]:
    choice = pick(edges, outcome, context)
    assert choice is not None
    return choice.edge.to_node, choice.method


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Approve", "approve"),
        ("  Approve  ", "approve"),
        ("[A] Approve", "approve"),
        ("[a]Approve", "approve"),
        ("A) Approve", "approve"),
        ("a) approve", "approve"),
        ("A - Approve", "approve"),
        ("[Y] Yes, deploy", "yes, deploy"),
        ("x-ray", "x-ray"),  # no spaces around '-': not an accelerator
        ("Re-run - tests", "re-run - tests"),  # key must be a single character
        ("[AB] Both", "[ab] both"),
        ("", ""),
        ("[F]", ""),
    ],
)
def test_normalize_label(label: str, expected: str) -> None:
    assert normalize_label(label) == expected


def test_no_outgoing_edges_selects_nothing() -> None:  # S3.3-01
    assert pick([]) is None


def test_p13_condition_match_wins_over_weight() -> None:
    edges = [edge("heavy", weight=100), edge("cond", condition="outcome=success")]
    assert picked(edges) == ("cond", "condition")


def test_p14_weight_breaks_ties_for_unconditional_edges() -> None:
    edges = [edge("a_light", weight=1), edge("z_heavy", weight=5), edge("m", weight=-1)]
    assert picked(edges) == ("z_heavy", "weight")


def test_p15_lexical_tiebreak_as_final_fallback() -> None:
    edges = [edge("charlie"), edge("alpha"), edge("bravo")]
    assert picked(edges) == ("alpha", "lexical")


def test_single_unconditional_edge_reports_weight() -> None:
    assert picked([edge("only")]) == ("only", "weight")


def test_lexical_only_counts_ties_at_the_winning_weight() -> None:
    edges = [edge("b", weight=2), edge("a", weight=1), edge("c", weight=1)]
    assert picked(edges) == ("b", "weight")


def test_matching_conditions_pick_best_by_weight_then_id() -> None:  # S3.3-02
    edges = [
        edge("z", condition="outcome=success", weight=3),
        edge("y", condition="outcome=success", weight=3),
        edge("x", condition="outcome=success", weight=1),
        edge("w", condition="outcome=fail", weight=9),
    ]
    assert picked(edges) == ("y", "condition")


def test_conditions_see_context_and_preferred_label() -> None:
    edges = [
        edge("pass", condition="context.tests_passed=true"),
        edge("label", condition="preferred_label=Fix"),
        edge("default"),
    ]
    assert picked(edges, tests_passed=True) == ("pass", "condition")
    assert picked(edges, Outcome("success", preferred_label="Fix")) == ("label", "condition")
    assert picked(edges, tests_passed=False) == ("default", "weight")


def test_preferred_label_picks_first_unconditional_edge_in_declaration_order() -> None:
    edges = [
        edge("cond_fix", label="Fix", condition="outcome=fail"),  # conditional: ignored (S3.3-03)
        edge("z_fix", label="[F] Fix"),
        edge("a_fix", label="fix"),
        edge("heavy", weight=10),
    ]
    assert picked(edges, Outcome("success", preferred_label=" FIX ")) == (
        "z_fix",
        "preferred_label",
    )


def test_preferred_label_without_match_falls_through() -> None:
    edges = [edge("b", label="Approve"), edge("a", label="Reject")]
    assert picked(edges, Outcome("success", preferred_label="Maybe")) == ("a", "lexical")


def test_empty_normalized_preferred_label_matches_nothing() -> None:
    edges = [edge("b"), edge("a", weight=1)]
    assert picked(edges, Outcome("success", preferred_label="[X]")) == ("a", "weight")


def test_suggested_ids_in_order_first_unconditional_edge() -> None:  # S3.3-05
    edges = [
        edge("x", condition="outcome=fail"),
        edge("y"),
        edge("z", weight=10),
    ]
    outcome = Outcome("success", suggested_next_ids=["missing", "x", "y", "z"])
    assert picked(edges, outcome) == ("y", "suggested_ids")


def test_preferred_label_beats_suggested_ids() -> None:
    edges = [edge("y", label="Yes"), edge("n", label="No")]
    outcome = Outcome("success", preferred_label="No", suggested_next_ids=["y"])
    assert picked(edges, outcome) == ("n", "preferred_label")


def test_only_conditional_edges_none_matching_selects_nothing() -> None:  # S3.3-09
    edges = [edge("x", condition="outcome=fail", weight=5), edge("y", condition="outcome=retry")]
    assert pick(edges) is None
    assert pick(edges, Outcome("success", preferred_label="x", suggested_next_ids=["x"])) is None


def test_blank_condition_counts_as_unconditional() -> None:
    assert picked([edge("b", condition="   ")]) == ("b", "weight")


def test_duplicate_targets_resolve_in_declaration_order() -> None:
    first, second = edge("b", label="first"), edge("b", label="second")
    assert best_by_weight_then_lexical([first, second]).edge is first


def test_outcome_aliases_in_conditions_match_canonical_status() -> None:
    edges = [edge("ok", condition="outcome=ok"), edge("other")]
    assert picked(edges, Outcome("success")) == ("ok", "condition")


# --- properties --------------------------------------------------------------------------

TARGETS = [f"n{i}" for i in range(6)]
CONDITIONS = [
    "",
    "",
    "",
    "outcome=success",
    "outcome=fail",
    "outcome!=success",
    "context.flag=true",
]
LABELS = ["", "Yes", "[N] No", "fix"]


@st.composite
def edge_lists(draw: st.DrawFn, *, conditions: list[str] = CONDITIONS) -> list[Edge]:
    count = draw(st.integers(0, 6))
    return [
        edge(
            draw(st.sampled_from(TARGETS)),
            weight=draw(st.integers(-2, 3)),
            condition=draw(st.sampled_from(conditions)),
            label=draw(st.sampled_from(LABELS)),
        )
        for _ in range(count)
    ]


outcomes_st = st.builds(
    Outcome,
    status=st.sampled_from(["success", "partial_success", "retry", "fail", "skipped"]),
    preferred_label=st.sampled_from(["", "yes", "No", "maybe"]),
    suggested_next_ids=st.lists(st.sampled_from([*TARGETS, "zz"]), max_size=3),
)
contexts_st = st.fixed_dictionaries({}, optional={"flag": st.booleans()})


@given(edge_lists(), outcomes_st, contexts_st)
def test_result_is_an_outgoing_edge_and_deterministic(
    edges: list[Edge], outcome: Outcome, context: dict[str, Any]
) -> None:
    graph = graph_of(*edges)
    first = select_edge(graph, "a", outcome, context)
    assert first == select_edge(graph, "a", outcome, context)
    if first is not None:
        assert any(first.edge is e for e in graph.outgoing("a"))
        assert first.method in (
            "condition",
            "preferred_label",
            "suggested_ids",
            "weight",
            "lexical",
        )
    else:
        assert all(e.condition for e in edges)  # nothing is selected only without defaults


@given(edge_lists(), outcomes_st, contexts_st)
def test_a_matching_conditional_edge_beats_any_unconditional(
    edges: list[Edge], outcome: Outcome, context: dict[str, Any]
) -> None:
    choice = select_edge(graph_of(*edges), "a", outcome, context)
    matching = [e for e in edges if e.condition and pick([e], outcome, context) is not None]
    if matching:
        assert choice is not None
        assert choice.method == "condition"
        assert choice.edge.condition


@given(edge_lists(conditions=[""]))
def test_unconditional_without_hints_is_max_weight_then_min_id(edges: list[Edge]) -> None:
    choice = pick(edges)
    if not edges:
        assert choice is None
        return
    assert choice is not None
    top = max(e.weight for e in edges)
    assert choice.edge.weight == top
    assert choice.edge.to_node == min(e.to_node for e in edges if e.weight == top)
    tied = sum(1 for e in edges if e.weight == top) > 1
    assert choice.method == ("lexical" if tied else "weight")


@given(
    edge_lists(),
    st.sampled_from(["success", "fail", "retry"]),
    contexts_st,
    st.randoms(use_true_random=False),
)
def test_declaration_order_never_changes_steps_1_4_5(
    edges: list[Edge], status: str, context: dict[str, Any], rng: Any
) -> None:
    outcome = Outcome(status)  # no label, no suggestions: only steps 1, 4 and 5 apply
    shuffled = list(edges)
    rng.shuffle(shuffled)
    before, after = pick(edges, outcome, context), pick(shuffled, outcome, context)
    summary = [(c.edge.to_node, c.edge.weight, c.method) if c else None for c in (before, after)]
    assert summary[0] == summary[1]
