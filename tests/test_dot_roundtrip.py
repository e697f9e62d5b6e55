"""``to_dot`` and ``parse_dot`` are inverses; hand-written DOT in any style means one Graph.

Properties (Hypothesis, strategies in ``tests/strategies.py``):
* graph → ``to_dot`` → ``parse_dot`` gives an equal graph (attrs, order of edges, classes);
* ``to_dot`` of a re-parsed graph is byte-identical (a fixpoint), also for every fixture;
* a graph rendered as varied hand-written DOT parses back to that graph;
* arbitrary or corrupted text never crashes the parser: a Graph or a positioned DotSyntaxError.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from attractor_trio.dot import DotSyntaxError, load_dot, parse_dot, to_dot
from attractor_trio.dot.graph import Edge, Graph, Node
from attractor_trio.dot.lexer import decode_string
from attractor_trio.dot.serialize import quote

from .strategies import attr_values, dot_sources, graphs

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
FIXTURES = sorted([*(DATA / "good").glob("*.dot"), *(ROOT / "examples").glob("*.dot")])


@given(attr_values())
@example('\\"\\\\n\n\t\\q')
def test_quote_is_inverse_of_decode(text: str) -> None:
    assert decode_string(quote(text)) == text


@given(graphs())
def test_graph_to_dot_parses_back_equal(graph: Graph) -> None:
    assert parse_dot(to_dot(graph)) == graph


@given(graphs())
def test_to_dot_is_a_fixpoint(graph: Graph) -> None:
    text = to_dot(graph)
    assert to_dot(parse_dot(text)) == text


@given(dot_sources())
def test_hand_written_styles_parse_to_the_intended_graph(case: tuple[str, Graph]) -> None:
    source, expected = case
    assert parse_dot(source) == expected


@pytest.mark.parametrize("path", FIXTURES, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURES])
def test_fixture_parse_to_dot_parse_is_stable(path: Path) -> None:
    graph = load_dot(path)
    text = to_dot(graph)
    again = parse_dot(text)
    assert again == graph
    assert to_dot(again) == text


def test_to_dot_preserves_attribute_order() -> None:
    graph = parse_dot('digraph G { n [z=1, a=2, m="3"] }')
    assert 'n [z="1", a="2", m="3"]' in to_dot(graph)


def test_subgraph_classes_survive_as_nested_labelled_subgraphs() -> None:
    node = Node("x", {"k": "v"}, ("outer", "inner"))
    graph = Graph("G", {}, {"x": node}, ())
    text = to_dot(graph)
    assert 'subgraph { label="outer"' in text
    assert parse_dot(text).node("x").subgraph_classes == ("outer", "inner")


def test_underivable_class_comes_back_derived() -> None:
    """Documented limit: a class text that derive_class would change is normalized."""
    graph = Graph("G", {}, {"x": Node("x", {}, ("Loop A",))}, ())
    assert parse_dot(to_dot(graph)).node("x").subgraph_classes == ("loop-a",)


@pytest.mark.parametrize("bad_id", ["my node", "1st", "node", "Graph", "a.b", ""])
def test_to_dot_refuses_node_ids_dot_cannot_spell(bad_id: str) -> None:
    graph = Graph("G", {}, {bad_id: Node(bad_id)}, ())
    with pytest.raises(ValueError, match="cannot write node id"):
        to_dot(graph)
    with pytest.raises(ValueError, match="cannot write node id"):
        to_dot(Graph("G", {}, {}, (Edge("ok", bad_id),)))


@pytest.mark.parametrize("bad_key", ["has space", "a..b", "x-y", "9k", ""])
def test_to_dot_refuses_keys_dot_cannot_spell(bad_key: str) -> None:
    with pytest.raises(ValueError, match="cannot write attribute key"):
        to_dot(Graph("G", {bad_key: "v"}, {}, ()))


@given(st.text(max_size=200))
@example("digraph G { a [label=<x>] }")
@example('digraph G { a [label="unterminated }')
@example("digraph G { /* open ")
def test_arbitrary_text_gives_graph_or_positioned_error(text: str) -> None:
    _assert_parses_or_fails_cleanly(text)


@given(graphs(max_nodes=4), st.data())
def test_corrupted_valid_dot_gives_graph_or_positioned_error(
    graph: Graph, data: st.DataObject
) -> None:
    text = to_dot(graph)
    at = data.draw(st.integers(0, len(text)))
    junk = data.draw(
        st.sampled_from(["", '"', "[", "]", "{", "}", "-", ">", "=", ",", ";", "/*", "<", ":"])
    )
    cut = data.draw(st.integers(0, 3))
    _assert_parses_or_fails_cleanly(text[:at] + junk + text[at + cut :])


def _assert_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_dot(text, path="fuzz.dot")
    except DotSyntaxError as err:
        lines = text.split("\n")
        assert 1 <= err.line <= len(lines)
        assert 1 <= err.col <= len(lines[err.line - 1]) + 1
        assert str(err).startswith(f"fuzz.dot:{err.line}:{err.col}: error: ")
