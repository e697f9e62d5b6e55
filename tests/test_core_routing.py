"""Routing (contract.md §5, spec §3.7, AMBIG-2): advance, fail routing, no_route, terminal."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import Advance, Outcome, Stop, route
from attractor_trio.dot.graph import Edge, Graph, Node


def build(
    edges: list[tuple[str, str, dict[str, str]]],
    nodes: dict[str, dict[str, str]] | None = None,
) -> Graph:
    nodes = nodes or {}
    ids = dict.fromkeys(["a", *nodes, *(t for _, t, _ in edges)])
    return Graph(
        "g",
        nodes={i: Node(i, nodes.get(i, {})) for i in ids},
        edges=[Edge(f, t, attrs) for f, t, attrs in edges],
    )


FAIL = Outcome("fail", failure_reason="tests failed: 3 errors", failure_class="deterministic")


def test_success_follows_edge_selection_and_reports_method() -> None:
    graph = build([("a", "b", {}), ("a", "c", {"condition": "outcome=success"})])
    assert route(graph, "a", Outcome("success"), {}) == Advance(
        "c", graph.edges[1], "condition", False
    )


def test_loop_restart_comes_from_the_edge() -> None:
    graph = build([("a", "b", {"loop_restart": "true"})])
    result = route(graph, "a", Outcome("success"), {})
    assert isinstance(result, Advance)
    assert result.loop_restart is True


def test_skipped_routes_like_success() -> None:
    graph = build([("a", "b", {"condition": "outcome=fail"}), ("a", "c", {})])
    result = route(graph, "a", Outcome("skipped"), {})
    assert isinstance(result, Advance)
    assert (result.to_node, result.method) == ("c", "weight")


def test_no_matching_edge_stops_with_no_route() -> None:
    graph = build([("a", "b", {"condition": "outcome=fail"})])
    result = route(graph, "a", Outcome("success"), {})
    assert isinstance(result, Stop)
    assert result.exit_path == "no_route"
    assert result.failed
    assert result.failure_class == "structural"
    assert "no outgoing edge of node 'a' matches outcome 'success'" in result.failure_reason
    assert "-> b [outcome=fail]" in result.failure_reason


def test_zero_outgoing_edges_at_a_non_terminal_node_is_no_route() -> None:
    graph = build([], nodes={"a": {}})
    result = route(graph, "a", Outcome("partial_success"), {})
    assert isinstance(result, Stop)
    assert result.exit_path == "no_route"
    assert "node 'a' matches outcome 'partial_success'" in result.failure_reason
    assert "has no outgoing edges" in result.failure_reason


@pytest.mark.parametrize("attrs", [{"shape": "Msquare"}, {}])
def test_terminal_node_completes(attrs: dict[str, str]) -> None:
    node_id = "done" if attrs else "exit"
    graph = Graph("g", nodes={node_id: Node(node_id, attrs)})
    result = route(graph, node_id, Outcome("success"), {})
    assert result == Stop("completed")
    assert not result.failed


def test_fail_follows_a_condition_matched_edge_first() -> None:
    graph = build(
        [
            ("a", "fix", {"condition": "outcome=fail"}),
            ("a", "gate", {}),
            ("a", "next", {"weight": "10"}),
        ],
        nodes={"a": {"retry_target": "next"}, "gate": {"shape": "diamond"}},
    )
    result = route(graph, "a", FAIL, {})
    assert isinstance(result, Advance)
    assert (result.to_node, result.method) == ("fix", "condition")


def test_fail_takes_an_unconditional_edge_into_a_conditional_node() -> None:
    graph = build(
        [("a", "next", {"weight": "10"}), ("a", "gate", {}), ("a", "typed", {})],
        nodes={
            "a": {"retry_target": "next"},
            "gate": {"shape": "diamond"},
            "typed": {"type": "conditional"},
        },
    )
    result = route(graph, "a", FAIL, {})
    assert isinstance(result, Advance)
    assert (result.to_node, result.method) == ("gate", "lexical")
    assert result.edge is graph.edges[1]


def test_fail_into_conditional_nodes_prefers_weight() -> None:
    graph = build(
        [("a", "g1", {}), ("a", "g2", {"weight": "1"})],
        nodes={"g1": {"shape": "diamond"}, "g2": {"shape": "diamond"}},
    )
    result = route(graph, "a", FAIL, {})
    assert isinstance(result, Advance)
    assert (result.to_node, result.method) == ("g2", "weight")


def test_fail_never_follows_an_ordinary_unconditional_edge() -> None:  # AMBIG-2
    graph = build([("a", "next", {}), ("a", "ok", {"condition": "outcome=success"})])
    result = route(graph, "a", FAIL, {})
    assert result == Stop("stage_failed", "tests failed: 3 errors", "deterministic")


def test_fail_ignores_preferred_label_and_suggestions() -> None:
    graph = build([("a", "next", {"label": "Fix"})])
    outcome = FAIL.evolve(preferred_label="Fix", suggested_next_ids=["next"])
    assert isinstance(route(graph, "a", outcome, {}), Stop)


def test_fail_jumps_to_retry_target_then_fallback() -> None:
    graph = build(
        [("a", "next", {})],
        nodes={
            "a": {"retry_target": "plan", "fallback_retry_target": "triage"},
            "plan": {},
            "triage": {},
        },
    )
    assert route(graph, "a", FAIL, {}) == Advance("plan", None, "retry_target", False)
    fallback_only = build(
        [],
        nodes={"a": {"retry_target": "missing", "fallback_retry_target": "triage"}, "triage": {}},
    )
    assert route(fallback_only, "a", FAIL, {}) == Advance("triage", None, "retry_target", False)


def test_graph_level_retry_targets_do_not_route_stage_failures() -> None:
    graph = Graph(
        "g", {"retry_target": "plan"}, nodes={"a": Node("a"), "plan": Node("plan")}, edges=()
    )
    result = route(graph, "a", FAIL, {})
    assert isinstance(result, Stop)
    assert result.exit_path == "stage_failed"


def test_stage_failed_without_a_reason_names_the_stage() -> None:
    graph = build([], nodes={"a": {}})
    assert route(graph, "a", Outcome("fail"), {}) == Stop("stage_failed", "stage 'a' failed", "")


def test_fail_at_a_terminal_node_fails_the_run() -> None:
    graph = Graph("g", nodes={"exit": Node("exit")})
    result = route(graph, "exit", FAIL, {})
    assert isinstance(result, Stop)
    assert result.exit_path == "stage_failed"


def test_retry_outcome_uses_ordinary_selection() -> None:
    graph = build([("a", "again", {"condition": "outcome=retry"}), ("a", "next", {})])
    result = route(graph, "a", Outcome("retry"), {})
    assert isinstance(result, Advance)
    assert result.to_node == "again"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["b", "c", "gate"]),
            st.sampled_from(["", "outcome=fail", "outcome=success", "context.x=1"]),
            st.integers(0, 2),
        ),
        max_size=5,
    ),
    st.sampled_from(["", "b", "nowhere"]),
    st.fixed_dictionaries({}, optional={"x": st.sampled_from(["1", "2"])}),
)
def test_fail_never_routes_down_a_plain_success_path(
    edges: list[tuple[str, str, int]], retry_target: str, context: dict[str, Any]
) -> None:
    graph = build(
        [("a", t, {"condition": c, "weight": str(w)}) for t, c, w in edges],
        nodes={"a": {"retry_target": retry_target}, "gate": {"shape": "diamond"}, "b": {}, "c": {}},
    )
    result = route(graph, "a", FAIL, context)
    if isinstance(result, Stop):
        assert result.failure_reason == FAIL.failure_reason
        return
    if result.edge is None:
        assert result.to_node == retry_target
    elif result.method == "condition":
        assert result.edge.condition in ("outcome=fail", "context.x=1")
    else:
        assert result.to_node == "gate" and not result.edge.condition
