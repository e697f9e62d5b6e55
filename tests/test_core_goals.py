"""Goal gates (spec §3.4, parity P-10/P-11, AMBIG-25)."""

from __future__ import annotations

import pytest

from attractor_trio.core import (
    GateCheck,
    Outcome,
    StageStatus,
    check_goal_gates,
    goal_gate_retry_target,
)
from attractor_trio.dot.graph import Graph, Node


def graph(graph_attrs: dict[str, str] | None = None, **nodes: dict[str, str]) -> Graph:
    return Graph("g", graph_attrs or {}, {i: Node(i, a) for i, a in nodes.items()})


GATES = graph(
    start={}, plan={}, implement={"goal_gate": "true"}, review={"goal_gate": "true"}, done={}
)


def test_p10_goal_gate_blocks_exit_when_unsatisfied() -> None:
    outcomes = {"plan": Outcome("success"), "implement": Outcome("fail")}
    assert check_goal_gates(GATES, outcomes) == GateCheck(False, "implement")


def test_p11_goal_gate_allows_exit_when_all_satisfied() -> None:
    outcomes = {"implement": Outcome("success"), "review": Outcome("partial_success")}
    assert check_goal_gates(GATES, outcomes) == GateCheck(True, None)


def test_unvisited_gates_do_not_block() -> None:  # AMBIG-25
    assert check_goal_gates(GATES, {"plan": Outcome("fail")}).ok


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        ("success", True),
        ("partial_success", True),
        ("skipped", False),
        ("retry", False),
        ("fail", False),
    ],
)
def test_which_statuses_satisfy_a_gate(status: str, ok: bool) -> None:
    for recorded in (Outcome(status), StageStatus(status), status):
        assert check_goal_gates(GATES, {"implement": recorded}).ok is ok


def test_first_failing_gate_in_declaration_order() -> None:
    outcomes = {"review": Outcome("fail"), "implement": Outcome("fail")}  # dict order reversed
    assert check_goal_gates(GATES, outcomes).failing_node == "implement"


def test_non_gate_failures_do_not_block() -> None:
    assert check_goal_gates(GATES, {"plan": Outcome("fail"), "implement": Outcome("success")}).ok


@pytest.mark.parametrize(
    ("node_attrs", "graph_attrs", "expected"),
    [
        ({"retry_target": "plan", "fallback_retry_target": "fix"}, {"retry_target": "g"}, "plan"),
        ({"fallback_retry_target": "fix"}, {"retry_target": "g"}, "fix"),
        ({}, {"retry_target": "g", "fallback_retry_target": "gf"}, "g"),
        ({}, {"fallback_retry_target": "gf"}, "gf"),
        (
            {"retry_target": "nope"},
            {"retry_target": "also_nope", "fallback_retry_target": "gf"},
            "gf",
        ),
        ({}, {}, None),
        ({"retry_target": "nope"}, {}, None),
    ],
)
def test_goal_gate_retry_target_resolution(
    node_attrs: dict[str, str], graph_attrs: dict[str, str], expected: str | None
) -> None:
    g = graph(graph_attrs, gate=node_attrs, plan={}, fix={}, g={}, gf={})
    assert goal_gate_retry_target(g, "gate") == expected


def test_goal_gate_retry_target_for_an_unknown_node_uses_graph_levels() -> None:
    assert goal_gate_retry_target(graph({"retry_target": "plan"}, plan={}), "ghost") == "plan"
