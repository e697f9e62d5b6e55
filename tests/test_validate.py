"""Validation and linting (spec §7, contract.md §9): every rule, its severity, position and fix."""

from __future__ import annotations

import importlib
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor_trio.dot import parse_dot
from attractor_trio.dot.attributes import (
    AttributeSpec,
    Kind,
    Scope,
    catalogue,
    misspelling_of,
    register_attribute,
    unregister_attribute,
)
from attractor_trio.dot.graph import Diagnostic, Edge, Graph, Node, Severity
from attractor_trio.dot.validate import (
    BUILTIN_RULES,
    LintRule,
    _Index,
    clear_rules,
    register_known_type,
    register_rule,
    unregister_known_type,
    unregister_rule,
    validate,
    validate_or_raise,
)
from attractor_trio.errors import ValidationFailed

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _no_custom_rules() -> Iterator[None]:
    clear_rules()
    yield
    clear_rules()


def pipeline(body: str, graph_attrs: str = "") -> Graph:
    """A valid skeleton (start at line 3, exit at line 4) around ``body`` (from line 5)."""
    return parse_dot(
        "digraph G {\n"
        f"    graph [{graph_attrs}]\n"
        "    start [shape=Mdiamond]\n"
        "    exit [shape=Msquare]\n"
        f"{body}\n"
        "}\n"
    )


def only(diagnostics: list[Diagnostic], rule: str) -> list[Diagnostic]:
    return [d for d in diagnostics if d.rule == rule]


def errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity is Severity.ERROR]


LINEAR = 'a [prompt="do a"]\nstart -> a -> exit'


def test_a_clean_linear_pipeline_has_no_diagnostics() -> None:
    assert validate(pipeline(LINEAR)) == []


# --- spec §2.13 and §11.13 examples ----------------------------------------------------------

SIMPLE = """
digraph Simple {
    graph [goal="Run tests and report"]
    rankdir=LR
    start [shape=Mdiamond, label="Start"]
    exit  [shape=Msquare, label="Exit"]
    run_tests [label="Run Tests", prompt="Run the test suite and report results"]
    report    [label="Report", prompt="Summarize the test results"]
    start -> run_tests -> report -> exit
}
"""
BRANCH = """
digraph Branch {
    graph [goal="Implement and validate a feature"]
    rankdir=LR
    node [shape=box, timeout="900s"]
    start     [shape=Mdiamond, label="Start"]
    exit      [shape=Msquare, label="Exit"]
    plan      [label="Plan", prompt="Plan the implementation"]
    implement [label="Implement", prompt="Implement the plan"]
    validate  [label="Validate", prompt="Run tests"]
    gate      [shape=diamond, label="Tests passing?"]
    start -> plan -> implement -> validate -> gate
    gate -> exit      [label="Yes", condition="outcome=success"]
    gate -> implement [label="No", condition="outcome!=success"]
}
"""
REVIEW = """
digraph Review {
    rankdir=LR
    start [shape=Mdiamond, label="Start"]
    exit  [shape=Msquare, label="Exit"]
    review_gate [shape=hexagon, label="Review Changes", type="wait.human"]
    start -> review_gate
    review_gate -> ship_it [label="[A] Approve"]
    review_gate -> fixes   [label="[F] Fix"]
    ship_it -> exit
    fixes -> review_gate
}
"""
SMOKE = """
digraph test_pipeline {
    graph [goal="Create a hello world Python script"]
    start       [shape=Mdiamond]
    plan        [shape=box, prompt="Plan how to create a hello world script for: $goal"]
    implement   [shape=box, prompt="Write the code based on the plan", goal_gate=true]
    review      [shape=box, prompt="Review the code for correctness"]
    done        [shape=Msquare]
    start -> plan
    plan -> implement
    implement -> review [condition="outcome=success"]
    implement -> plan   [condition="outcome=fail", label="Retry"]
    review -> done      [condition="outcome=success"]
    review -> implement [condition="outcome=fail", label="Fix"]
}
"""


@pytest.mark.parametrize(
    "source", [SIMPLE, BRANCH, REVIEW, SMOKE], ids=["simple", "branch", "review", "smoke"]
)
def test_spec_examples_have_no_errors(source: str) -> None:
    diagnostics = validate(parse_dot(source))
    assert errors(diagnostics) == []
    assert only(diagnostics, "unknown_attribute") == []


def test_smoke_graph_finds_exit_by_shape_and_only_warns_about_the_goal_gate() -> None:
    assert [d.rule for d in validate(parse_dot(SMOKE))] == ["goal_gate_has_retry"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.dot")), ids=lambda p: p.name)
def test_shipped_examples_have_no_errors_and_only_known_attributes(path: Path) -> None:
    diagnostics = validate(parse_dot(path.read_text(), path=str(path)))
    assert errors(diagnostics) == []
    assert only(diagnostics, "unknown_attribute") == []


# --- the rule set ----------------------------------------------------------------------------

SPEC_RULES = {
    "start_node": Severity.ERROR,
    "terminal_node": Severity.ERROR,
    "reachability": Severity.ERROR,
    "edge_target_exists": Severity.ERROR,
    "start_no_incoming": Severity.ERROR,
    "exit_no_outgoing": Severity.ERROR,
    "condition_syntax": Severity.ERROR,
    "stylesheet_syntax": Severity.ERROR,
    "type_known": Severity.WARNING,
    "fidelity_valid": Severity.WARNING,
    "retry_target_exists": Severity.WARNING,
    "goal_gate_has_retry": Severity.WARNING,
    "prompt_on_llm_nodes": Severity.WARNING,
}


def test_builtin_rules_start_with_the_spec_rules_in_spec_order_and_severity() -> None:
    first = [(rule.name, rule.severity) for rule in BUILTIN_RULES[: len(SPEC_RULES)]]
    assert first == list(SPEC_RULES.items())
    names = [rule.name for rule in BUILTIN_RULES]
    assert len(names) == len(set(names))


def test_builtin_rules_satisfy_the_lint_rule_protocol_on_their_own() -> None:
    graph = pipeline("a [prompt=x]\nstart -> a -> exit\norphan [prompt=y]")
    rule = next(r for r in BUILTIN_RULES if r.name == "reachability")
    assert isinstance(rule, LintRule)
    assert [d.node_id for d in rule.apply(graph)] == ["orphan"]


# --- start_node / terminal_node (P-04, P-05) --------------------------------------------------


def test_missing_start_node_is_an_error_p04() -> None:
    graph = parse_dot("digraph G { a [prompt=x]; exit [shape=Msquare]; a -> exit }")
    [diag] = only(validate(graph), "start_node")
    assert diag.severity is Severity.ERROR
    assert "no start node" in diag.message
    assert (diag.line, diag.col) == (1, 1) and diag.node_id is None  # the digraph keyword
    assert diag.fix is not None and "Mdiamond" in diag.fix


def test_missing_start_does_not_also_call_every_node_an_orphan() -> None:
    graph = parse_dot("digraph G { a [prompt=x]; exit [shape=Msquare]; a -> exit }")
    assert only(validate(graph), "reachability") == []


def test_start_node_near_miss_points_at_the_miscased_shape() -> None:
    graph = parse_dot("digraph G { begin [shape=mdiamond]; exit [shape=Msquare]; begin -> exit }")
    [diag] = only(validate(graph), "start_node")
    assert diag.fix is not None and "'begin'" in diag.fix and "case-sensitive" in diag.fix


def test_start_may_be_identified_by_id_alone() -> None:
    graph = parse_dot("digraph G { Start; a [prompt=x]; exit [shape=Msquare]; Start -> a -> exit }")
    assert errors(validate(graph)) == []


def test_two_start_nodes_report_the_second_at_its_declaration() -> None:
    graph = pipeline(LINEAR + "\nstart2 [shape=Mdiamond]\nstart2 -> a")
    [diag] = only(validate(graph), "start_node")
    assert diag.severity is Severity.ERROR
    assert diag.node_id == "start2" and diag.line == 7
    assert "2 start nodes (start, start2)" in diag.message


def test_missing_exit_node_is_an_error_p05() -> None:
    graph = parse_dot("digraph G { start [shape=Mdiamond]; a [prompt=x]; start -> a }")
    [diag] = only(validate(graph), "terminal_node")
    assert diag.severity is Severity.ERROR
    assert "no exit node" in diag.message and (diag.line, diag.col) == (1, 1)


@pytest.mark.parametrize("exit_decl", ["end", "exit", "done [shape=Msquare]"])
def test_exit_may_be_identified_by_shape_or_id(exit_decl: str) -> None:
    exit_id = exit_decl.split()[0]
    body = f"start [shape=Mdiamond]; a [prompt=x]; {exit_decl}; start -> a -> {exit_id}"
    source = f"digraph G {{ {body} }}"
    assert errors(validate(parse_dot(source))) == []


def test_two_exit_nodes_are_an_error() -> None:
    graph = pipeline(LINEAR + "\ndone [shape=Msquare]\na -> done")
    [diag] = only(validate(graph), "terminal_node")
    assert diag.node_id == "done" and diag.severity is Severity.ERROR


# --- reachability (P-06) -----------------------------------------------------------------------


def test_orphan_node_is_a_reachability_error_naming_it_p06() -> None:
    graph = pipeline(LINEAR + "\nlonely [prompt=x]")
    [diag] = only(validate(graph), "reachability")
    assert diag.severity is Severity.ERROR
    assert diag.node_id == "lonely" and diag.line == 7 and diag.col == 1
    assert "'lonely'" in diag.message and "unreachable" in diag.message
    assert "orphan" in diag.message


def test_a_node_downstream_of_an_orphan_is_also_unreachable() -> None:
    graph = pipeline(LINEAR + "\nx [prompt=x]\ny [prompt=y]\nx -> y -> exit")
    assert [d.node_id for d in only(validate(graph), "reachability")] == ["x", "y"]


@pytest.mark.parametrize("link", ["retry_target", "fallback_retry_target"])
def test_node_retry_targets_count_as_reachability_links(link: str) -> None:
    graph = pipeline(f'a [prompt=x, {link}="fixer"]\nfixer [prompt=y]\nstart -> a -> exit')
    assert only(validate(graph), "reachability") == []


@pytest.mark.parametrize("link", ["retry_target", "fallback_retry_target"])
def test_graph_retry_targets_count_as_reachability_links(link: str) -> None:
    graph = pipeline(LINEAR + "\nfixer [prompt=y]\nfixer -> exit", graph_attrs=f'{link}="fixer"')
    assert only(validate(graph), "reachability") == []


# --- edge_target_exists ------------------------------------------------------------------------


def test_edges_to_undeclared_nodes_create_implicit_nodes_so_parsed_graphs_pass() -> None:
    graph = pipeline("start -> a -> exit")
    assert "a" in graph.nodes
    assert only(validate(graph), "edge_target_exists") == []


def test_api_built_edge_to_a_missing_node_is_an_error_with_a_suggestion() -> None:
    graph = Graph(
        "G",
        nodes={
            "start": Node("start", {"shape": "Mdiamond"}),
            "exit": Node("exit", {"shape": "Msquare"}),
            "implement": Node("implement", {"prompt": "x"}),
        },
        edges=[
            Edge("start", "implement"),
            Edge("implement", "implemnt", line=9, col=3),
            Edge("ghost", "exit"),
        ],
    )
    found = only(validate(graph), "edge_target_exists")
    assert [d.severity for d in found] == [Severity.ERROR, Severity.ERROR]
    missing_target = next(d for d in found if d.edge == ("implement", "implemnt"))
    assert (missing_target.line, missing_target.col) == (9, 3)
    assert "target node 'implemnt' does not exist" in missing_target.message
    assert "did you mean 'implement'" in missing_target.message
    missing_source = next(d for d in found if d.edge == ("ghost", "exit"))
    assert "source node 'ghost'" in missing_source.message


# --- start_no_incoming / exit_no_outgoing ------------------------------------------------------


def test_an_edge_into_the_start_node_is_an_error_at_the_edge() -> None:
    graph = pipeline(LINEAR + "\na -> start")
    [diag] = only(validate(graph), "start_no_incoming")
    assert diag.severity is Severity.ERROR
    assert diag.edge == ("a", "start") and diag.line == 7 and diag.node_id is None


def test_an_edge_out_of_the_exit_node_is_an_error_at_the_edge() -> None:
    graph = pipeline(LINEAR + "\nexit -> a")
    [diag] = only(validate(graph), "exit_no_outgoing")
    assert diag.severity is Severity.ERROR
    assert diag.edge == ("exit", "a") and diag.line == 7


# --- condition_syntax --------------------------------------------------------------------------


def test_bad_condition_is_an_error_with_text_column_and_edge_position() -> None:
    graph = pipeline('a [prompt=x]\nstart -> a\n  a -> exit [condition="outcome=sucess!"]')
    [diag] = only(validate(graph), "condition_syntax")
    assert diag.severity is Severity.ERROR
    assert diag.edge == ("a", "exit")
    assert (diag.line, diag.col) == (7, 3)
    assert "'outcome=sucess!'" in diag.message and "column 1" in diag.message
    assert "or a custom value" in diag.message


def test_condition_column_points_into_the_condition() -> None:
    graph = pipeline('a [prompt=x]\nstart -> a\na -> exit [condition="outcome=success || x"]')
    [diag] = only(validate(graph), "condition_syntax")
    assert "column 17" in diag.message


def test_valid_conditions_pass() -> None:
    body = (
        "a [prompt=x]\nstart -> a\n"
        'a -> exit [condition="outcome=success && context.tests_passed=true"]\n'
        'a -> a [condition="preferred_label=Fix"]'
    )
    assert only(validate(pipeline(body)), "condition_syntax") == []


def test_manager_stop_condition_is_checked_like_an_edge_condition() -> None:
    body = 'm [shape=house, manager.stop_condition="outcome=>success"]\nstart -> m -> exit'
    [diag] = only(validate(pipeline(body)), "condition_syntax")
    assert diag.node_id == "m" and "manager.stop_condition" in diag.message


# --- stylesheet_syntax -------------------------------------------------------------------------


def test_bad_stylesheet_is_a_graph_level_error_with_its_position() -> None:
    graph = pipeline(LINEAR, graph_attrs='model_stylesheet="box { llm_modle: x; }"')
    [diag] = only(validate(graph), "stylesheet_syntax")
    assert diag.severity is Severity.ERROR
    inner = re.search(r"model_stylesheet line 1, column (\d+)", diag.message)
    assert inner is not None, diag.message
    # The string opens at line 2, column 29: the position inside it is added to that.
    assert (diag.line, diag.col) == (2, 29 + int(inner.group(1)))


def test_valid_stylesheet_passes() -> None:
    sheet = 'model_stylesheet="* { llm_model: gpt-5.2; } #a { reasoning_effort: high; }"'
    assert only(validate(pipeline(LINEAR, graph_attrs=sheet)), "stylesheet_syntax") == []


# --- type_known --------------------------------------------------------------------------------


def test_unknown_type_warns_with_a_suggestion() -> None:
    graph = pipeline('g [type="wait_human", label="ok?"]\nstart -> g -> exit')
    [diag] = only(validate(graph), "type_known")
    assert diag.severity is Severity.WARNING and diag.node_id == "g"
    assert diag.fix == "did you mean 'wait.human'?"


def test_builtin_types_are_known() -> None:
    graph = pipeline('t [type="tool", tool_command="true"]\nstart -> t -> exit')
    assert only(validate(graph), "type_known") == []


def test_registered_types_are_known() -> None:
    graph = pipeline('c [type="my_custom_type", prompt=x]\nstart -> c -> exit')
    assert len(only(validate(graph), "type_known")) == 1
    register_known_type("my_custom_type")
    try:
        assert only(validate(graph), "type_known") == []
    finally:
        unregister_known_type("my_custom_type")


# --- fidelity_valid ----------------------------------------------------------------------------


def test_invalid_fidelity_warns_on_nodes_edges_and_graph() -> None:
    body = 'a [prompt=x, fidelity="summary:hi"]\nstart -> a\na -> exit [fidelity=everything]'
    graph = pipeline(body, graph_attrs='default_fidelity="ful"')
    found = only(validate(graph), "fidelity_valid")
    assert [(d.node_id, d.edge) for d in found] == [
        (None, None),
        ("a", None),
        (None, ("a", "exit")),
    ]
    assert all(d.severity is Severity.WARNING for d in found)
    assert found[0].fix is not None and "did you mean 'full'" in found[0].fix


@pytest.mark.parametrize("mode", ["full", "truncate", "compact", "summary:low", "summary:high"])
def test_valid_fidelity_modes_pass(mode: str) -> None:
    graph = pipeline(f'a [prompt=x, fidelity="{mode}"]\nstart -> a -> exit')
    assert only(validate(graph), "fidelity_valid") == []


# --- retry_target_exists / goal_gate_has_retry ------------------------------------------------


def test_retry_target_to_a_missing_node_warns_at_node_and_graph_level() -> None:
    body = 'a [prompt=x, retry_target="plann"]\nplan [prompt=p]\nstart -> plan -> a -> exit'
    graph = pipeline(body, graph_attrs='fallback_retry_target="nowhere"')
    found = only(validate(graph), "retry_target_exists")
    assert [d.node_id for d in found] == [None, "a"]
    assert all(d.severity is Severity.WARNING for d in found)
    assert "did you mean 'plan'" in found[1].message


def test_goal_gate_without_any_retry_target_warns() -> None:
    graph = pipeline("a [prompt=x, goal_gate=true]\nstart -> a -> exit")
    [diag] = only(validate(graph), "goal_gate_has_retry")
    assert diag.severity is Severity.WARNING and diag.node_id == "a"


@pytest.mark.parametrize(
    ("node_attrs", "graph_attrs"),
    [
        (', retry_target="a"', ""),
        (', fallback_retry_target="a"', ""),
        ("", 'retry_target="a"'),
        ("", 'fallback_retry_target="a"'),
    ],
)
def test_goal_gate_retry_may_come_from_node_or_graph(node_attrs: str, graph_attrs: str) -> None:
    graph = pipeline(f"a [prompt=x, goal_gate=true{node_attrs}]\nstart -> a -> exit", graph_attrs)
    assert only(validate(graph), "goal_gate_has_retry") == []


def test_goal_gate_false_needs_no_retry() -> None:
    graph = pipeline("a [prompt=x, goal_gate=false]\nstart -> a -> exit")
    assert only(validate(graph), "goal_gate_has_retry") == []


# --- prompt_on_llm_nodes ----------------------------------------------------------------------


def test_codergen_node_without_prompt_or_label_warns() -> None:
    graph = pipeline("start -> a -> exit")
    [diag] = only(validate(graph), "prompt_on_llm_nodes")
    assert diag.severity is Severity.WARNING and diag.node_id == "a"


@pytest.mark.parametrize("attrs", ['prompt="do it"', 'label="Do it"'])
def test_prompt_or_explicit_label_satisfies_prompt_on_llm_nodes(attrs: str) -> None:
    graph = pipeline(f"a [{attrs}]\nstart -> a -> exit")
    assert only(validate(graph), "prompt_on_llm_nodes") == []


def test_non_codergen_nodes_need_no_prompt() -> None:
    graph = pipeline('t [shape=parallelogram, tool_command="true"]\nstart -> t -> exit')
    assert only(validate(graph), "prompt_on_llm_nodes") == []


# --- unknown_attribute -------------------------------------------------------------------------


@pytest.mark.parametrize(("typo", "meant"), [("max_retry", "max_retries"), ("promt", "prompt")])
def test_unknown_node_attribute_warns_with_did_you_mean(typo: str, meant: str) -> None:
    graph = pipeline(f'a [prompt=x, {typo}="2"]\nstart -> a -> exit')
    [diag] = only(validate(graph), "unknown_attribute")
    assert diag.severity is Severity.WARNING and diag.node_id == "a" and diag.line == 5
    assert f"'{typo}'" in diag.message
    assert diag.fix == f"did you mean '{meant}'?"


def test_attribute_of_another_scope_says_where_it_belongs() -> None:
    graph = pipeline('a [prompt=x, condition="outcome=success"]\nstart -> a -> exit')
    [diag] = only(validate(graph), "unknown_attribute")
    assert diag.fix == "'condition' is an edge attribute; it has no effect on a node"


def test_unknown_edge_and_graph_attributes_use_their_own_catalogues() -> None:
    graph = pipeline(LINEAR + "\na -> exit [wieght=3]", graph_attrs='default_max_retires="1"')
    found = only(validate(graph), "unknown_attribute")
    assert [(d.node_id, d.edge, d.fix) for d in found] == [
        (None, None, "did you mean 'default_max_retries'?"),
        (None, ("a", "exit"), "did you mean 'weight'?"),
    ]


def test_custom_attributes_only_warn_and_registering_them_silences_the_warning() -> None:
    graph = pipeline('a [prompt=x, custom_attr="value"]\nstart -> a -> exit')
    [diag] = only(validate(graph), "unknown_attribute")
    assert diag.severity is Severity.WARNING
    assert diag.fix is not None and "register_attribute" in diag.fix
    register_attribute("node", "custom_attr", AttributeSpec(Kind.STRING, "for my handler"))
    try:
        assert validate(graph) == []
    finally:
        unregister_attribute("node", "custom_attr")


def test_graphviz_display_attributes_are_known() -> None:
    body = (
        'a [prompt=x, color=red, style=filled, fillcolor="#eee"]\n'
        "start -> a\na -> exit [penwidth=2, arrowhead=vee]"
    )
    graph = pipeline(body, graph_attrs="rankdir=LR, splines=ortho, bgcolor=white")
    assert validate(graph) == []


# --- attribute_value ---------------------------------------------------------------------------

BAD_NODE_VALUES = [
    ("timeout", "15 minutes", "invalid duration"),
    ("timeout", "0s", "greater than 0"),
    ("max_retries", "-1", "at least 0"),
    ("max_retries", "two", "invalid integer"),
    ("goal_gate", "maybe", "invalid boolean"),
    ("auto_status", "yess", "invalid boolean"),
    ("allow_partial", "2", "invalid boolean"),
    ("max_parallel", "0", "at least 1"),
    ("k", "0", "at least 1"),
    ("quorum_fraction", "0", "greater than 0"),
    ("quorum_fraction", "1.5", "at most 1"),
    ("quorum_fraction", "half", "invalid number"),
    ("human.timeout", "soon", "invalid duration"),
    ("branch_timeout", "-5s", "invalid duration"),
    ("manager.poll_interval", "45 seconds", "invalid duration"),
    ("manager.max_cycles", "0", "at least 1"),
    ("reasoning_effort", "High", "did you mean 'high'"),
    ("join_policy", "wait-all", "did you mean 'wait_all'"),
    ("error_policy", "stop", "continue, fail_fast, ignore"),
    ("retry_policy", "exponential", "none, standard, aggressive, linear, patient"),
    ("codergen_mode", "agent", "did you mean 'agent_loop'"),
    ("manager.actions", "observe,sleep", "'sleep' is not one of observe, steer, wait"),
    ("stack.child_autostart", "sure", "invalid boolean"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_NODE_VALUES)
def test_invalid_node_attribute_values_are_errors(key: str, value: str, expected: str) -> None:
    graph = pipeline(f'a [prompt=x, {key}="{value}"]\nstart -> a -> exit')
    [diag] = only(validate(graph), "attribute_value")
    assert diag.severity is Severity.ERROR and diag.node_id == "a" and diag.line == 5
    assert f"{key}='{value}'" in diag.message and expected in diag.message
    assert diag.fix is not None and diag.fix.startswith(key)


GOOD_NODE_VALUES = [
    ("timeout", "900s"),
    ("timeout", "0.5s"),
    ("timeout", "1.5m"),
    ("timeout", "30"),
    ("max_retries", "0"),
    ("goal_gate", "true"),
    ("auto_status", "false"),
    ("quorum_fraction", "1"),
    ("quorum_fraction", "0.5"),
    ("k", "2"),
    ("max_parallel", "4"),
    ("reasoning_effort", "low"),
    ("join_policy", "k_of_n"),
    ("error_policy", "fail_fast"),
    ("retry_policy", "patient"),
    ("codergen_mode", "one_shot"),
    ("manager.actions", "observe, steer,wait"),
    ("human.timeout", "10m"),
]


@pytest.mark.parametrize(("key", "value"), GOOD_NODE_VALUES)
def test_valid_node_attribute_values_pass(key: str, value: str) -> None:
    graph = pipeline(f'a [prompt=x, {key}="{value}"]\nstart -> a -> exit')
    assert only(validate(graph), "attribute_value") == []


@pytest.mark.parametrize(
    ("graph_attrs", "expected"),
    [
        ('default_max_retries="-2"', "at least 0"),
        ('default_max_retry="x"', "invalid integer"),
        ('default_retry_policy="slow"', "not one of"),
        ('max_node_visits="0"', "at least 1"),
        ('loop_restart_signature_limit="-1"', "at least 0"),
        ('max_restarts="-1"', "at least 0"),
    ],
)
def test_invalid_graph_attribute_values_are_graph_level_errors(
    graph_attrs: str, expected: str
) -> None:
    [diag] = only(validate(pipeline(LINEAR, graph_attrs)), "attribute_value")
    assert diag.node_id is None and expected in diag.message
    assert (diag.line, diag.col) == (2, 12)  # the attribute's key in `graph [...]`


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [("weight=heavy", "invalid integer"), ("loop_restart=perhaps", "invalid boolean")],
)
def test_invalid_edge_attribute_values_are_errors_at_the_edge(attrs: str, expected: str) -> None:
    graph = pipeline(f"a [prompt=x]\nstart -> a\na -> exit [{attrs}]")
    [diag] = only(validate(graph), "attribute_value")
    assert diag.edge == ("a", "exit") and diag.line == 7 and expected in diag.message


def test_negative_edge_weight_is_allowed() -> None:
    graph = pipeline("a [prompt=x]\nstart -> a\na -> exit [weight=-1]")
    assert validate(graph) == []


def test_several_bad_values_on_one_node_are_reported_in_declaration_order() -> None:
    graph = pipeline("a [prompt=x, reasoning_effort=High, max_parallel=0]\nstart -> a -> exit")
    found = only(validate(graph), "attribute_value")
    assert [d.message.split("=")[0] for d in found] == [
        "node 'a': reasoning_effort",
        "node 'a': max_parallel",
    ]


def test_a_bad_value_from_node_defaults_is_reported_on_each_node() -> None:
    graph = pipeline(
        'node [timeout="forever"]\na [prompt=x]\nb [prompt=y]\nstart -> a -> b -> exit'
    )
    assert [d.node_id for d in only(validate(graph), "attribute_value")] == ["a", "b"]


# --- tool / human / parallel / conditional / duplicate ----------------------------------------


def test_tool_node_without_tool_command_is_an_error() -> None:
    graph = pipeline('t [shape=parallelogram, label="Run"]\nstart -> t -> exit')
    [diag] = only(validate(graph), "tool_command_missing")
    assert diag.severity is Severity.ERROR and diag.node_id == "t"
    assert diag.fix is not None and "tool_command" in diag.fix


def test_tool_node_with_tool_command_passes() -> None:
    graph = pipeline('t [shape=parallelogram, tool_command="make test"]\nstart -> t -> exit')
    assert validate(graph) == []


def test_human_gate_without_outgoing_edges_is_an_error() -> None:
    graph = pipeline('h [shape=hexagon, label="Approve?"]\nstart -> h\nstart -> exit')
    [diag] = only(validate(graph), "human_gate_choices")
    assert diag.severity is Severity.ERROR and diag.node_id == "h"


PARALLEL_WITH_FAN_IN = """
p [shape=component, label="Fan out"]
b1 [prompt=one]
b2 [prompt=two]
join [shape=tripleoctagon]
start -> p
p -> b1 -> join
p -> b2 -> join
join -> exit
"""


def test_parallel_with_a_fan_in_downstream_passes() -> None:
    assert validate(pipeline(PARALLEL_WITH_FAN_IN)) == []


def test_parallel_branch_reaching_the_exit_without_a_fan_in_warns() -> None:
    graph = pipeline(PARALLEL_WITH_FAN_IN + "p -> b3 -> exit\nb3 [prompt=three]")
    [diag] = only(validate(graph), "parallel_no_fan_in")
    assert diag.severity is Severity.WARNING and diag.node_id == "p"
    assert "branch 'b3'" in diag.message and "'exit'" in diag.message


def test_parallel_without_any_fan_in_warns() -> None:
    graph = pipeline('p [shape=component, label="P"]\nb [prompt=x]\nstart -> p -> b -> exit')
    assert len(only(validate(graph), "parallel_no_fan_in")) == 1


def test_conditional_node_without_conditions_warns() -> None:
    graph = pipeline('a [prompt=x]\ng [shape=diamond, label="?"]\nstart -> a -> g -> exit')
    [diag] = only(validate(graph), "conditional_routes")
    assert diag.severity is Severity.WARNING and diag.node_id == "g"


def test_api_graph_whose_node_key_differs_from_the_node_id_is_an_error() -> None:
    graph = Graph(
        "G",
        nodes={
            "start": Node("start", {"shape": "Mdiamond"}),
            "a": Node("b", {"prompt": "x"}),
            "exit": Node("exit", {"shape": "Msquare"}),
        },
        edges=[Edge("start", "a"), Edge("a", "exit")],
    )
    [diag] = only(validate(graph), "duplicate_node")
    assert diag.severity is Severity.ERROR and "'a'" in diag.message and "'b'" in diag.message


# --- API: validate_or_raise, custom rules, ordering ------------------------------------------


def test_validate_or_raise_raises_with_the_diagnostics_on_error() -> None:
    graph = pipeline(LINEAR + "\nlonely [prompt=x]")
    with pytest.raises(ValidationFailed) as caught:
        validate_or_raise(graph)
    assert [d.rule for d in caught.value.diagnostics] == ["reachability"]
    assert "reachability" in str(caught.value) and "lonely" in str(caught.value)


def test_validate_or_raise_returns_warnings_when_there_is_no_error() -> None:
    diagnostics = validate_or_raise(pipeline("start -> a -> exit"))
    assert [d.rule for d in diagnostics] == ["prompt_on_llm_nodes"]


class RecordingRule:
    """A custom rule that records calls and flags nodes whose id starts with ``bad``."""

    def __init__(self, name: str, calls: list[str], severity: Severity = Severity.WARNING) -> None:
        self.name, self.calls, self.severity = name, calls, severity

    def apply(self, graph: Graph) -> list[Diagnostic]:
        self.calls.append(self.name)
        return [
            Diagnostic(self.name, self.severity, f"{node.id} is bad", node_id=node.id)
            for node in graph.nodes.values()
            if node.id.startswith("bad")
        ]


def test_custom_rules_run_after_builtins_registered_first_then_extras() -> None:
    calls: list[str] = []
    register_rule(RecordingRule("registered_one", calls))
    register_rule(RecordingRule("registered_two", calls))
    validate(pipeline(LINEAR), extra_rules=[RecordingRule("extra", calls)])
    assert calls == ["registered_one", "registered_two", "extra"]


def test_custom_rule_diagnostics_get_the_node_position_and_can_block_a_run() -> None:
    register_rule(RecordingRule("no_bad_nodes", [], Severity.ERROR))
    graph = pipeline("bad_one [prompt=x]\nstart -> bad_one -> exit")
    [diag] = validate(graph)
    assert (diag.rule, diag.node_id, diag.line, diag.col) == ("no_bad_nodes", "bad_one", 5, 1)
    with pytest.raises(ValidationFailed):
        validate_or_raise(graph)


def test_unregister_rule_removes_it() -> None:
    calls: list[str] = []
    register_rule(RecordingRule("mine", calls))
    unregister_rule("mine")
    validate(pipeline(LINEAR))
    assert calls == []


def test_rule_names_must_be_unique() -> None:
    register_rule(RecordingRule("mine", []))
    with pytest.raises(ValueError, match="already exists"):
        register_rule(RecordingRule("mine", []))
    with pytest.raises(ValueError, match="'reachability' already exists"):
        register_rule(RecordingRule("reachability", []))


def test_registering_something_that_is_not_a_rule_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a LintRule"):
        register_rule(object())  # type: ignore[arg-type]


class CrashingRule:
    name = "crashy"

    def apply(self, graph: Graph) -> list[Diagnostic]:
        raise ZeroDivisionError("oops")


def test_a_crashing_custom_rule_becomes_an_error_naming_it() -> None:
    [diag] = validate(pipeline(LINEAR), extra_rules=[CrashingRule()])
    assert diag.rule == "crashy" and diag.severity is Severity.ERROR
    assert "ZeroDivisionError: oops" in diag.message


class EdgeRule:
    name = "edge_rule"

    def apply(self, graph: Graph) -> list[Diagnostic]:
        return [Diagnostic(self.name, Severity.INFO, "looked at it", edge=("a", "exit"))]


def test_positionless_custom_edge_diagnostics_get_the_edge_position() -> None:
    graph = pipeline("a [prompt=x]\nstart -> a\n  a -> exit")
    [diag] = validate(graph, extra_rules=[EdgeRule()])
    assert (diag.line, diag.col, diag.severity) == (7, 3, Severity.INFO)


class WrongReturnRule:
    name = "wrong_return"

    def apply(self, graph: Graph) -> list[Diagnostic]:
        return ["not a diagnostic"]  # type: ignore[list-item]


def test_a_custom_rule_returning_non_diagnostics_is_an_error_naming_it() -> None:
    [diag] = validate(pipeline(LINEAR), extra_rules=[WrongReturnRule()])
    assert diag.rule == "wrong_return" and diag.severity is Severity.ERROR
    assert "expected Diagnostic" in diag.message


MESSY = """
digraph G {
    graph [default_fidelity="nope", bogus=1]
    start [shape=Mdiamond]
    exit [shape=Msquare]
    b [timeout="x", promt=y]
    a [shape=parallelogram]
    start -> a -> exit
    a -> start
    orphan
    b -> exit [condition="outcome=="]
}
"""


def test_output_is_sorted_by_line_col_rule_and_deterministic() -> None:
    first = validate(parse_dot(MESSY))
    keys = [(d.line, d.col, d.rule) for d in first]
    assert keys == sorted(keys)
    assert len(first) >= 8
    assert validate(parse_dot(MESSY)) == first


def test_every_diagnostic_points_at_what_it_concerns() -> None:
    for diag in validate(parse_dot(MESSY)):
        assert diag.line >= 1 and diag.col >= 1, diag  # graph-level too (issue 16)
        assert diag.node_id is None or diag.edge is None, diag
        assert diag.message


node_ids = st.sampled_from(["start", "exit", "a", "b", "c", "end", "Start"])
# fmt: off
attr_values = st.sampled_from([
    "", "x", "0", "-1", "true", "1.5", "5m", "Mdiamond", "a", "outcome=success", "summary:low",
    "wait.human", "{", "box", "parallelogram",
])
attr_keys = st.sampled_from([
    "shape", "type", "prompt", "timeout", "max_retries", "goal_gate", "retry_target", "fidelity",
    "condition", "weight", "join_policy", "quorum_fraction", "model_stylesheet", "custom", "label",
])
# fmt: on
attr_maps = st.dictionaries(attr_keys, attr_values, max_size=4)


@st.composite
def api_graphs(draw: st.DrawFn) -> Graph:
    ids = draw(st.lists(node_ids, unique=True, max_size=6))
    nodes = {
        node_id: Node(node_id, draw(attr_maps), line=i + 1, col=1) for i, node_id in enumerate(ids)
    }
    edges = draw(st.lists(st.builds(Edge, node_ids, node_ids, attr_maps), max_size=8))
    return Graph("G", attrs=draw(attr_maps), nodes=nodes, edges=edges)


@settings(max_examples=300, deadline=None)
@given(api_graphs())
def test_validate_never_crashes_and_is_sorted_and_repeatable(graph: Graph) -> None:
    diagnostics = validate(graph)
    keys = [(d.line, d.col, d.rule) for d in diagnostics]
    assert keys == sorted(keys)
    assert validate(graph) == diagnostics
    assert all(d.rule in {r.name for r in BUILTIN_RULES} for d in diagnostics)


def test_validating_ten_thousand_nodes_is_linear() -> None:
    ids = [f"n{i}" for i in range(10_000)]
    nodes = {
        "start": Node("start", {"shape": "Mdiamond"}),
        "exit": Node("exit", {"shape": "Msquare"}),
        **{
            x: Node(x, {"prompt": "p", "timeout": "5m", "max_retries": "2"}, line=i + 3)
            for i, x in enumerate(ids)
        },
    }
    chain = [Edge(a, b, {"condition": "outcome=success"}) for a, b in itertools.pairwise(ids)]
    graph = Graph("G", nodes=nodes, edges=[Edge("start", ids[0]), *chain, Edge(ids[-1], "exit")])
    started = time.perf_counter()
    assert validate(graph) == []
    # Typically ~0.06 s; a quadratic rule would take tens of seconds. Generous for loaded CI.
    assert time.perf_counter() - started < 1.0


def test_did_you_mean_searches_once_per_distinct_word_not_per_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node default repeats one typo on every node; the edit-distance and difflib searches
    must run once per distinct word (10,000 nodes with one unknown default key took ~20 s)."""
    compat_rules = importlib.import_module("attractor_trio.dot.compat_rules")
    validate_module = importlib.import_module("attractor_trio.dot.validate")  # not the function

    searched: list[str] = []

    def counting(function: Any) -> Any:
        def wrapper(word: str, *args: Any) -> Any:
            searched.append(word)
            return function(word, *args)

        return wrapper

    monkeypatch.setattr(validate_module, "misspelling_of", counting(misspelling_of))
    monkeypatch.setattr(validate_module, "_did_you_mean", counting(validate_module._did_you_mean))
    monkeypatch.setattr(compat_rules, "outcome_hint", counting(compat_rules.outcome_hint))
    stages = " -> ".join(f"s{i}" for i in range(200))
    body = (
        'node [prompt=p, max_retry="2", type=codergenn, fidelity=ful]\n'
        f'start -> {stages} -> exit [condition="outcome=sucess"]'
    )
    diagnostics = validate(pipeline(body))
    assert len(only(diagnostics, "unknown_attribute")) == 200
    assert len(only(diagnostics, "type_known")) == 200
    assert len(only(diagnostics, "fidelity_valid")) == 200
    assert len(only(diagnostics, "custom_outcome")) == 201
    assert {d.fix for d in only(diagnostics, "unknown_attribute")} == {
        "did you mean 'max_retries'?"
    }
    assert all("did you mean success" in d.message for d in only(diagnostics, "custom_outcome"))
    assert sorted(searched) == sorted(["max_retry", "max_retry", "codergenn", "ful", "sucess"])


_CHECKED_KINDS = [kind for kind in Kind if kind not in {Kind.STRING, Kind.DISPLAY}]


@settings(max_examples=200, deadline=None)
@given(api_graphs(), st.lists(st.sampled_from(_CHECKED_KINDS), min_size=1, unique=True))
def test_attributes_of_several_kinds_come_in_declaration_order(
    graph: Graph, kinds: list[Kind]
) -> None:
    """The shared index merges its per-kind lists back into declaration order (graph, then
    nodes, then edges, each in attribute order): rules yield findings in that order."""
    owners: list[tuple[Scope, Any, dict[str, str]]] = [
        ("graph", None, {key: value}) for key, value in graph.attrs.items()
    ]
    owners += [("node", node, node.attrs) for node in graph.nodes.values()]
    owners += [("edge", edge, edge.attrs) for edge in graph.edges]
    expected = [
        (key, value, catalogue(scope)[key].kind)
        for scope, _owner, values in owners
        for key, value in values.items()
        if key in catalogue(scope) and catalogue(scope)[key].kind in kinds
    ]
    index = _Index.build(graph)
    found = [(key, value, spec.kind) for _where, key, value, spec in index.attrs_of_kind(*kinds)]
    assert found == expected
