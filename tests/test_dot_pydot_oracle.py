"""Differential test: our parser against pydot on every good fixture and every example.

pydot is a lax general DOT parser, so it is an oracle only where it is right. Compared:
graph name; graph attributes; the set of node ids (explicit nodes plus edge endpoints); the
multiset of ``(from, to)`` edges; every explicit node and edge attribute value; and the
subgraph class of every node a labelled subgraph mentions.

Known pydot differences, normalized or skipped on purpose:
* pydot keeps the quotes and escapes of string values (``'"a\\"b"'``): values are unquoted and
  decoded with the spec's escape rules before comparing.
* pydot applies no ``node``/``edge`` defaults (it keeps them as pseudo-nodes named ``node``,
  ``edge``, ``graph``): only attributes written on the statement itself are compared, and the
  pseudo-nodes are not nodes.
* pydot mangles unquoted durations: ``timeout=1800s`` becomes ``timeout='1800'`` plus a
  valueless attribute ``s``. Valueless attributes are skipped, and a value that is ours minus
  its unit suffix is accepted.
* pydot separates ``graph [...]`` blocks from top-level ``key = value`` statements, so the
  order between them is lost: a graph key set in both ways is skipped.
* pydot lists edges per (sub)graph, so edges are compared as a multiset, and a re-declared
  node may have several candidate values for a key (ours must be one of them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydot
import pytest

from attractor_trio.dot import derive_class, load_dot
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.dot.lexer import decode_string

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
FILES = sorted([*(DATA / "good").glob("*.dot"), *(ROOT / "examples").glob("*.dot")])
PSEUDO_NODES = {"node", "edge", "graph"}
UNITS = ("ms", "s", "m", "h", "d")

# pydot's grammar module uses pyparsing names that pyparsing now deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")


def normalize(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return decode_string(value)
    return value


def agrees(ours: str | None, theirs: str) -> bool:
    """Equal, or pydot's duration mangling of our value (``1800s`` → ``1800``)."""
    if ours is None:
        return False
    return ours == theirs or any(ours == theirs + unit for unit in UNITS)


def explicit(attrs: dict[str, Any]) -> dict[str, str]:
    return {key: normalize(value) for key, value in attrs.items() if value is not None}


def walk(graph: Any) -> Iterator[Any]:
    """The graph and all its subgraphs, depth first."""
    yield graph
    for sub in graph.get_subgraphs():
        yield from walk(sub)


def node_ids_in(graph: Any) -> set[str]:
    ids = set()
    for level in walk(graph):
        ids |= {n.get_name() for n in level.get_nodes()} - PSEUDO_NODES
        for edge in level.get_edges():
            ids |= {edge.get_source(), edge.get_destination()}
    return ids


def oracle(path: Path) -> Any:
    graphs = pydot.graph_from_dot_file(str(path))
    assert graphs is not None and len(graphs) == 1
    return graphs[0]


@pytest.fixture(params=FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def pair(request: pytest.FixtureRequest) -> tuple[Graph, Any]:
    path: Path = request.param
    return load_dot(path), oracle(path)


def test_graph_name_agrees(pair: tuple[Graph, Any]) -> None:
    ours, theirs = pair
    assert ours.name == normalize(theirs.get_name())


def test_graph_attributes_agree(pair: tuple[Graph, Any]) -> None:
    ours, theirs = pair
    top = explicit(theirs.get_attributes())
    block: dict[str, str] = {}
    for node in theirs.get_node("graph"):
        block.update(explicit(node.get_attributes()))
    for key in top.keys() ^ block.keys():
        assert agrees(ours.attrs.get(key), {**top, **block}[key]), key
    assert set(ours.attrs) == top.keys() | block.keys()


def test_node_id_sets_agree(pair: tuple[Graph, Any]) -> None:
    ours, theirs = pair
    assert set(ours.nodes) == node_ids_in(theirs)


def test_edge_multisets_agree(pair: tuple[Graph, Any]) -> None:
    check_edge_multiset(*pair)


def check_edge_multiset(ours: Graph, theirs: Any) -> None:
    their_edges = Counter(
        (e.get_source(), e.get_destination()) for level in walk(theirs) for e in level.get_edges()
    )
    assert Counter((e.from_node, e.to_node) for e in ours.edges) == their_edges


def test_explicit_node_attributes_agree(pair: tuple[Graph, Any]) -> None:
    check_node_attributes(*pair)


def check_node_attributes(ours: Graph, theirs: Any) -> None:
    candidates: dict[tuple[str, str], list[str]] = {}
    for level in walk(theirs):
        for node in level.get_nodes():
            if node.get_name() in PSEUDO_NODES:
                continue
            for key, value in explicit(node.get_attributes()).items():
                candidates.setdefault((node.get_name(), key), []).append(value)
    for (node_id, key), values in candidates.items():
        mine = ours.node(node_id).attrs.get(key)
        assert any(agrees(mine, v) for v in values), (node_id, key, mine, values)


def test_explicit_edge_attributes_agree(pair: tuple[Graph, Any]) -> None:
    ours, theirs = pair
    unmatched = list(ours.edges)
    for level in walk(theirs):
        for edge in level.get_edges():
            wanted = explicit(edge.get_attributes())
            match = next(
                e
                for e in unmatched
                if (e.from_node, e.to_node) == (edge.get_source(), edge.get_destination())
                and all(agrees(e.attrs.get(k), v) for k, v in wanted.items())
            )
            unmatched.remove(match)


def test_labelled_subgraph_members_get_the_derived_class(pair: tuple[Graph, Any]) -> None:
    ours, theirs = pair
    for sub in list(walk(theirs))[1:]:
        label = sub.get_attributes().get("label")
        for node in sub.get_node("graph"):
            label = node.get_attributes().get("label", label)
        if label is None or not derive_class(normalize(label)):
            continue
        for node_id in node_ids_in(sub):
            assert derive_class(normalize(label)) in ours.node(node_id).subgraph_classes


def test_the_oracle_notices_a_wrong_value_or_a_lost_edge() -> None:
    """The comparisons above can fail: a graph that differs from the file is caught."""
    path = DATA / "good" / "branch.dot"
    ours, theirs = load_dot(path), oracle(path)
    plan = ours.node("plan")
    wrong_value = ours.evolve(
        nodes={**ours.nodes, "plan": Node(plan.id, {**plan.attrs, "prompt": "other"})}
    )
    with pytest.raises(AssertionError):
        check_node_attributes(wrong_value, theirs)
    with pytest.raises(AssertionError):
        check_edge_multiset(ours.evolve(edges=ours.edges[1:]), theirs)
