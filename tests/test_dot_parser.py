"""What the DOT front end accepts and the Graph it builds (spec §2.1-2.13, S-ids in test names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attractor_trio.dot import derive_class, load_dot, parse_dot
from attractor_trio.dot.graph import Graph

GOOD = Path(__file__).parent / "data" / "good"


def parse_body(body: str) -> Graph:
    return parse_dot(f"digraph G {{\n{body}\n}}\n")


def edge_pairs(graph: Graph) -> list[tuple[str, str]]:
    return [(e.from_node, e.to_node) for e in graph.edges]


# --- §2.13 minimal examples and the §11.13 smoke test --------------------------------------------


def test_s2_13_01_simple_example() -> None:
    graph = load_dot(GOOD / "simple.dot")
    assert graph.name == "Simple"
    assert graph.goal == "Run tests and report"
    assert graph.attrs["rankdir"] == "LR"
    assert list(graph.nodes) == ["start", "exit", "run_tests", "report"]
    assert edge_pairs(graph) == [
        ("start", "run_tests"),
        ("run_tests", "report"),
        ("report", "exit"),
    ]
    assert graph.node("run_tests").prompt == "Run the test suite and report results"
    assert graph.node("start").handler_type == "start"
    assert graph.node("exit").handler_type == "exit"


def test_s2_13_02_branch_example_applies_node_defaults() -> None:
    graph = load_dot(GOOD / "branch.dot")
    assert graph.goal == "Implement and validate a feature"
    assert graph.node("plan").attrs == {
        "shape": "box",
        "timeout": "900s",
        "label": "Plan",
        "prompt": "Plan the implementation",
    }
    assert graph.node("plan").timeout == 900.0
    assert graph.node("gate").shape == "diamond"
    assert graph.node("start").shape == "Mdiamond"
    gate_edges = graph.outgoing("gate")
    assert [(e.to_node, e.label, e.condition) for e in gate_edges] == [
        ("exit", "Yes", "outcome=success"),
        ("implement", "No", "outcome!=success"),
    ]
    assert len(graph.edges) == 6


def test_s2_13_03_review_example_creates_implicit_nodes() -> None:
    graph = load_dot(GOOD / "review.dot")
    assert set(graph.nodes) == {"start", "exit", "review_gate", "ship_it", "fixes"}
    gate = graph.node("review_gate")
    assert gate.attrs == {"shape": "hexagon", "label": "Review Changes", "type": "wait.human"}
    assert gate.handler_type == "wait.human"
    for implicit in ("ship_it", "fixes"):
        node = graph.node(implicit)
        assert node.attrs == {}
        assert node.shape == "box"
        assert node.handler_type == "codergen"
    assert [e.label for e in graph.outgoing("review_gate")] == ["[A] Approve", "[F] Fix"]
    assert ("fixes", "review_gate") in edge_pairs(graph)


def test_sm_02_smoke_test_graph() -> None:
    graph = load_dot(GOOD / "smoke.dot")
    assert graph.name == "test_pipeline"
    assert graph.goal == "Create a hello world Python script"
    assert len(graph.nodes) == 5
    assert len(graph.edges) == 6
    assert graph.node("implement").goal_gate is True
    assert graph.node("plan").prompt == "Plan how to create a hello world script for: $goal"
    assert graph.node("done").shape == "Msquare"
    retry = graph.outgoing("implement")[1]
    assert (retry.to_node, retry.condition, retry.label) == ("plan", "outcome=fail", "Retry")


# --- §2.9 chained edges --------------------------------------------------------------------------


def test_s2_9_01_chain_expands_to_one_edge_per_pair_with_shared_attrs() -> None:
    graph = parse_body('  A -> B -> C -> D [label="next", weight=2]')
    assert edge_pairs(graph) == [("A", "B"), ("B", "C"), ("C", "D")]
    assert all(e.attrs == {"label": "next", "weight": "2"} for e in graph.edges)


def test_chain_edge_positions_point_at_each_source_id() -> None:
    graph = parse_body("  A -> B ->\n     C")
    assert [(e.line, e.col) for e in graph.edges] == [(2, 3), (2, 8)]


def test_arrows_need_no_spaces() -> None:
    graph = parse_body("a->b->c_d")
    assert edge_pairs(graph) == [("a", "b"), ("b", "c_d")]


def test_parallel_edges_are_kept() -> None:
    graph = parse_body('a -> b [label="x"]\na -> b [label="y"]')
    assert [e.label for e in graph.edges] == ["x", "y"]


# --- §2.11 default blocks ------------------------------------------------------------------------


def test_s2_11_01_node_defaults_apply_only_to_later_nodes() -> None:
    graph = parse_body("before\nnode [shape=hexagon, timeout=5m]\nafter\n")
    assert graph.node("before").attrs == {}
    assert graph.node("after").attrs == {"shape": "hexagon", "timeout": "5m"}


def test_s2_11_02_explicit_attrs_override_defaults() -> None:
    graph = parse_body('node [shape=box, timeout="900s"]\nslow [timeout="1h"]')
    assert graph.node("slow").attrs == {"shape": "box", "timeout": "1h"}


def test_later_default_block_updates_earlier_one() -> None:
    graph = parse_body("node [shape=box, k=1]\na\nnode [k=2]\nb")
    assert graph.node("a").attrs == {"shape": "box", "k": "1"}
    assert graph.node("b").attrs == {"shape": "box", "k": "2"}


def test_edge_defaults_apply_to_later_edges_and_are_overridden() -> None:
    graph = parse_body("a -> b\nedge [weight=3, fidelity=full]\nb -> c\nc -> d [weight=9]")
    assert [e.attrs for e in graph.edges] == [
        {},
        {"weight": "3", "fidelity": "full"},
        {"weight": "9", "fidelity": "full"},
    ]


def test_implicit_node_gets_node_defaults_in_scope_at_first_mention() -> None:
    graph = parse_body("a -> b\nnode [shape=diamond]\nb -> c")
    assert graph.node("b").attrs == {}
    assert graph.node("c").attrs == {"shape": "diamond"}


def test_redeclared_node_merges_explicit_attrs_and_keeps_first_position() -> None:
    graph = parse_body('a [label="one", prompt="p"]\nnode [shape=house]\n  a [label="two"]')
    node = graph.node("a")
    assert node.attrs == {"label": "two", "prompt": "p"}  # defaults are not re-applied
    assert (node.line, node.col) == (2, 1)


def test_edge_mention_keeps_the_node_declaration_position() -> None:
    graph = parse_body("x\n  y -> x")
    assert (graph.node("x").line, graph.node("x").col) == (2, 1)
    assert (graph.node("y").line, graph.node("y").col) == (3, 3)


def test_declaration_after_edges_is_the_node_position() -> None:
    graph = parse_body("a -> b\n  b [prompt=p]\n b [x=1]")
    assert (graph.node("b").line, graph.node("b").col) == (3, 3)
    assert (graph.node("a").line, graph.node("a").col) == (2, 1)


def test_nodes_keep_first_mention_order() -> None:
    graph = parse_body("c -> a\nb\na [x=1]")
    assert list(graph.nodes) == ["c", "a", "b"]


# --- §2.10 subgraphs -----------------------------------------------------------------------------


def test_s2_10_01_spec_example_inherits_and_overrides() -> None:
    graph = load_dot(GOOD / "subgraph_loop.dot")
    plan = graph.node("Plan")
    implement = graph.node("Implement")
    assert plan.thread_id == "loop-a"
    assert plan.attrs["timeout"] == "900s"
    assert implement.thread_id == "loop-a"
    assert implement.attrs["timeout"] == "1800s"
    assert implement.timeout == 1800.0


def test_s2_10_02_subgraph_defaults_do_not_leak_out() -> None:
    graph = load_dot(GOOD / "subgraph_loop.dot")
    outside = graph.node("Outside")
    assert outside.attrs == {"shape": "box", "label": "Declared after the subgraph"}
    assert outside.subgraph_classes == ()


def test_subgraph_sees_outer_defaults_and_its_overrides_stay_inside() -> None:
    graph = parse_body(
        "node [shape=box, k=outer]\nedge [w=1]\n"
        "subgraph s { node [k=inner]\n edge [w=2]\n in1 -> in2 }\n"
        "out1 -> out2"
    )
    assert graph.node("in1").attrs == {"shape": "box", "k": "inner"}
    assert graph.node("out1").attrs == {"shape": "box", "k": "outer"}
    assert [e.attrs for e in graph.edges] == [{"w": "2"}, {"w": "1"}]


def test_s2_10_03_class_derived_from_subgraph_label() -> None:
    graph = load_dot(GOOD / "subgraph_loop.dot")
    assert graph.node("Plan").subgraph_classes == ("loop-a",)
    assert graph.node("Implement").classes == ("loop-a",)
    assert graph.node("start").subgraph_classes == ()


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Loop A", "loop-a"),
        ("Outer Loop!", "outer-loop"),
        ("Fast & Cheap (v2)", "fast--cheap-v2"),
        ("already-ok", "already-ok"),
        ("Ünïcode Ça", "ncode-a"),
        ("!!!", ""),
        ("", ""),
    ],
)
def test_derive_class(label: str, expected: str) -> None:
    assert derive_class(label) == expected


def test_nested_subgraph_classes_are_outermost_first() -> None:
    graph = parse_body('subgraph a { label="Outer"\n subgraph b { label="Inner"\n x }\n y }\nz')
    assert graph.node("x").subgraph_classes == ("outer", "inner")
    assert graph.node("y").subgraph_classes == ("outer",)
    assert graph.node("z").subgraph_classes == ()


def test_subgraph_label_written_after_its_nodes_still_counts() -> None:
    graph = parse_body('subgraph cluster_x { a -> b\n label="Late Label" }')
    assert graph.node("a").subgraph_classes == ("late-label",)
    assert graph.node("b").subgraph_classes == ("late-label",)


def test_subgraph_label_never_becomes_the_graph_label() -> None:
    graph = parse_body(
        'label="Top"\nsubgraph one { label="One"\n a }\nsubgraph two { graph [label="Two"]\n b }'
    )
    assert graph.label == "Top"
    assert graph.node("a").subgraph_classes == ("one",)
    assert graph.node("b").subgraph_classes == ("two",)


def test_subgraph_render_attributes_are_ignored() -> None:
    graph = parse_body('subgraph cluster_x { color=blue\n style="filled"\n a }')
    assert graph.attrs == {}
    assert graph.node("a").subgraph_classes == ()


def test_unlabelled_and_anonymous_subgraphs_add_no_class() -> None:
    graph = parse_body("subgraph { a }\nsubgraph named { b }")
    assert graph.node("a").subgraph_classes == ()
    assert graph.node("b").subgraph_classes == ()


def test_node_mentioned_in_two_subgraphs_gets_both_classes() -> None:
    graph = parse_body('subgraph p { label="P"\n a }\nsubgraph q { label="Q"\n a -> b }')
    assert graph.node("a").subgraph_classes == ("p", "q")
    assert graph.node("b").subgraph_classes == ("q",)


def test_s2_10_04_subgraphs_are_flattened() -> None:
    graph = parse_body("subgraph a { subgraph b { x -> y } }\ny -> z")
    assert list(graph.nodes) == ["x", "y", "z"]
    assert edge_pairs(graph) == [("x", "y"), ("y", "z")]


def test_s2_12_01_class_attr_merges_with_subgraph_classes() -> None:
    graph = parse_body('subgraph s { label="Loop A"\n r [class="code, critical"] }')
    assert graph.node("r").classes == ("code", "critical", "loop-a")


# --- graph attributes ----------------------------------------------------------------------------


def test_s2_5_graph_attrs_in_both_forms_later_wins() -> None:
    graph = parse_body(
        'graph [goal="first", label="L"]\nrankdir=LR\ngoal = "second"\n'
        'model_stylesheet="* { llm_model: m; }"'
    )
    assert graph.attrs == {
        "goal": "second",
        "label": "L",
        "rankdir": "LR",
        "model_stylesheet": "* { llm_model: m; }",
    }


def test_s2_2_07_qualified_keys_on_graph_and_nodes() -> None:
    graph = parse_body(
        'tool_hooks.pre = "echo pre"\ngraph [tool_hooks.post="echo post"]\n'
        "gate [human.default_choice=approve, manager.poll_interval=45s, stack.child_autostart=true]"
    )
    assert graph.attrs == {"tool_hooks.pre": "echo pre", "tool_hooks.post": "echo post"}
    assert graph.node("gate").attrs == {
        "human.default_choice": "approve",
        "manager.poll_interval": "45s",
        "stack.child_autostart": "true",
    }
    assert graph.node("gate").human_default_choice == "approve"


def test_s2_6_18_custom_attrs_preserved() -> None:
    graph = parse_body('a [custom_attr="value", another=x]\na -> b [my_edge_attr=7]')
    assert graph.node("a").attrs == {"custom_attr": "value", "another": "x"}
    assert graph.edges[0].attrs == {"my_edge_attr": "7"}


# --- values (§2.4) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("42", "42"),
        ("-1", "-1"),
        ("0.5", "0.5"),
        ("-3.14", "-3.14"),
        (".5", ".5"),
        ("true", "true"),
        ("false", "false"),
        ("900s", "900s"),
        ("1800s", "1800s"),
        ("250ms", "250ms"),
        ("1.5m", "1.5m"),
        ("1d", "1d"),
        ('"900s"', "900s"),
        ("Mdiamond", "Mdiamond"),
        ("wait.human", "wait.human"),
        ("claude-opus-4-6", "claude-opus-4-6"),
        ("a:b", "a:b"),
        ("LR", "LR"),
        ('""', ""),
    ],
)
def test_s2_2_08_values_are_stored_as_written(written: str, stored: str) -> None:
    graph = parse_body(f"n [v={written}]")
    assert graph.node("n").attrs["v"] == stored


@pytest.mark.parametrize(
    ("literal", "decoded"),
    [
        (r'"say \"hi\""', 'say "hi"'),
        (r'"a\nb"', "a\nb"),
        (r'"a\tb"', "a\tb"),
        (r'"back\\slash"', "back\\slash"),
        (r'"\\n is not a newline"', "\\n is not a newline"),
        (r'"\\\"quoted"', '\\"quoted'),
        (r'"keep \l \q \r \\ end"', "keep \\l \\q \\r \\ end"),
        ('"real\nnewline"', "real\nnewline"),
        ('"ünïcødé ✓"', "ünïcødé ✓"),
    ],
)
def test_s2_2_10_string_escapes(literal: str, decoded: str) -> None:
    graph = parse_body(f"n [v={literal}]")
    assert graph.node("n").attrs["v"] == decoded


def test_s2_3_06_comments_are_stripped_but_not_inside_strings() -> None:
    graph = parse_body(
        "// line comment a -> z\n"
        "/* block\n comment -> z */\n"
        "# hash comment -> z\n"
        'a [prompt="see http://x.y/*z*/ # not // comment"] // trailing\n'
        "a /* inline */ -> /* here too */ b"
    )
    assert list(graph.nodes) == ["a", "b"]
    assert graph.node("a").prompt == "see http://x.y/*z*/ # not // comment"


def test_hash_comments_are_whole_lines_as_in_graphviz() -> None:
    graph = parse_dot(
        "# generated by a tool\ndigraph G {\n   # indented -> note\r\n a\n# c -> d\n}"
    )
    assert list(graph.nodes) == ["a"]
    assert graph.edges == ()


def test_byte_order_mark_is_ignored() -> None:
    assert list(parse_dot("\ufeffdigraph G { a }").nodes) == ["a"]


def test_arrow_like_text_inside_strings_is_just_text() -> None:
    graph = parse_body('a [label="a -- b -> c { } [ ] ; ,"]')
    assert graph.node("a").label == "a -- b -> c { } [ ] ; ,"
    assert graph.edges == ()


def test_s2_6_19_multiline_attribute_blocks() -> None:
    graph = parse_body(
        'review [\n  shape=hexagon,\n  label="Review",\n\n  prompt="multi\nline",\n]'
    )
    assert graph.node("review").attrs == {
        "shape": "hexagon",
        "label": "Review",
        "prompt": "multi\nline",
    }


def test_trailing_comma_empty_and_repeated_attr_blocks() -> None:
    graph = parse_body("a [x=1,]\nb []\nc [x=1] [y=2]")
    assert graph.node("a").attrs == {"x": "1"}
    assert graph.node("b").attrs == {}
    assert graph.node("c").attrs == {"x": "1", "y": "2"}


def test_s2_3_07_semicolons_are_optional() -> None:
    with_semis = parse_body("a [x=1];\nb;\na -> b;\nk=v;\n;;")
    without = parse_body("a [x=1]\nb\na -> b\nk=v")
    assert with_semis == without


def test_everything_on_one_line() -> None:
    graph = parse_dot('digraph G{a[x="1"]b a->b[y=2]c->d goal="g"}')
    assert edge_pairs(graph) == [("a", "b"), ("c", "d")]
    assert graph.goal == "g"


# --- header, names, keywords ---------------------------------------------------------------------


def test_graph_name_may_be_quoted() -> None:
    assert parse_dot('digraph "My \\"Pipe\\"" { a }').name == 'My "Pipe"'


def test_anonymous_digraph_has_empty_name() -> None:
    assert parse_dot("digraph { a }").name == ""


def test_keywords_are_case_insensitive_as_in_graphviz() -> None:
    graph = parse_dot("DiGraph G { NODE [shape=box]\n Edge [w=1]\n a -> b\n GRAPH [goal=x] }")
    assert graph.node("a").shape == "box"
    assert graph.edges[0].attrs == {"w": "1"}
    assert graph.goal == "x"


def test_identifiers_that_merely_contain_keywords_are_node_ids() -> None:
    graph = parse_body("nodes -> edge_case -> graph2 -> subgraphs")
    assert list(graph.nodes) == ["nodes", "edge_case", "graph2", "subgraphs"]


def test_s2_3_03_node_id_charset() -> None:
    graph = parse_body("_private -> Step_2 -> x9")
    assert list(graph.nodes) == ["_private", "Step_2", "x9"]


# --- source, path, files -------------------------------------------------------------------------


def test_parse_dot_records_path_and_source() -> None:
    source = "digraph G { a }"
    graph = parse_dot(source, path="p.dot")
    assert graph.path == "p.dot"
    assert graph.source == source


def test_load_dot_reads_utf8_with_or_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "g.dot"
    path.write_bytes('\ufeffdigraph G { a [label="café"] }'.encode())
    graph = load_dot(path)
    assert graph.node("a").label == "café"
    assert graph.path == str(path)
    assert graph.source.startswith("digraph")


def test_node_and_edge_positions_are_one_based() -> None:
    graph = parse_dot("digraph G {\n    alpha [x=1]\n  alpha -> beta\n}")
    assert (graph.node("alpha").line, graph.node("alpha").col) == (2, 5)
    assert (graph.edges[0].line, graph.edges[0].col) == (3, 3)
    assert (graph.node("beta").line, graph.node("beta").col) == (3, 12)


def test_kitchen_sink_fixture() -> None:
    graph = load_dot(GOOD / "kitchen_sink.dot")
    assert graph.name == "Kitchen Sink"
    assert graph.goal == "Ship it // not a comment /* nor this */"
    assert graph.attrs["tool_hooks.pre"] == "echo pre"
    assert graph.node("run_tool").tool_command == 'printf "%s\\n" done\tnow'
    assert graph.node("review").prompt == 'Line one\nLine "two"\\path\\q'
    assert graph.node("a2").subgraph_classes == ("outer-loop", "inner-2")
    assert graph.node("a2").attrs["thread_id"] == "inner"
    assert graph.node("a3").attrs["thread_id"] == "own"
    assert graph.node("a4").attrs == {
        "shape": "box",
        "reasoning_effort": "medium",
        "fidelity": "full",
    }
    assert graph.node("manager").attrs["manager.poll_interval"] == "45s"
    assert len(graph.edges) == 13
