"""Hypothesis strategies for pipelines: graphs, and DOT sources with the graph they must parse to.

Small composable pieces (ids, keys, values, attribute maps, classes) feed :func:`graphs`;
:func:`dot_sources` renders a drawn graph the way people write DOT (chained edges, bare or
quoted values, comments, optional semicolons, ``key = value`` graph attrs, labelled subgraphs)
and pairs the text with the graph it must produce.
"""

from __future__ import annotations

import functools
import re
import string
from itertools import pairwise

from hypothesis import strategies as st

from attractor_trio.dot.graph import Edge, Graph, Node
from attractor_trio.dot.lexer import KEYWORDS
from attractor_trio.dot.serialize import quote

__all__ = [
    "attr_dicts",
    "attr_keys",
    "attr_values",
    "class_names",
    "dot_sources",
    "edge_chains",
    "graphs",
    "identifiers",
    "node_ids",
]

# Text that stresses quoting, escaping and comment handling.
TRICKY = ['"', "\\", "\\n", "\n", "\t", '\\"', "\\\\", "//", "/*", "*/", "#", "->", "--", "}", "[",
          ";", ",", "=", "<b>", "é", "✓", "\U0001f600", " ", "\r"]  # fmt: skip
_BARE_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*(?:-(?![->])[A-Za-z0-9_.:]*)*\Z")
_NUMBER_VALUE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[A-Za-z0-9_.]*\Z")
_ID_START = string.ascii_letters + "_"
_SAFE_TEXT = st.text(st.characters(codec="utf-8"), max_size=6)


@functools.cache
def identifiers() -> st.SearchStrategy[str]:
    """``[A-Za-z_][A-Za-z0-9_]*``, never a DOT keyword in any letter case."""
    first = st.sampled_from(_ID_START)
    rest = st.text(_ID_START + "0123456789", max_size=7)
    return st.builds(str.__add__, first, rest).filter(lambda text: text.lower() not in KEYWORDS)


def node_ids() -> st.SearchStrategy[str]:
    return identifiers()


@functools.cache
def attr_keys() -> st.SearchStrategy[str]:
    """Plain keys and qualified ones like ``human.default_choice``."""
    qualified = st.lists(identifiers(), min_size=2, max_size=3).map(".".join)
    return st.one_of(identifiers(), qualified)


@functools.cache
def attr_values() -> st.SearchStrategy[str]:
    """Any text, biased toward quotes, backslashes, newlines, comment markers and unicode."""
    plain = st.sampled_from(["box", "900s", "250ms", "-1", "0.5", "true", "wait.human", "a:b"])
    pieces = st.lists(st.one_of(st.sampled_from(TRICKY), _SAFE_TEXT), max_size=5).map("".join)
    return st.one_of(plain, pieces)


@functools.cache
def attr_dicts(max_size: int = 4) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(attr_keys(), attr_values(), max_size=max_size)


@functools.cache
def class_names() -> st.SearchStrategy[str]:
    """Classes a subgraph label can produce (``derive_class`` maps them to themselves)."""
    return st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)


@functools.cache
def _class_tuples() -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(class_names(), unique=True, max_size=3).map(tuple)


def _nodes(ids: list[str], draw: st.DrawFn) -> dict[str, Node]:
    return {node_id: Node(node_id, draw(attr_dicts()), draw(_class_tuples())) for node_id in ids}


Chains = list[tuple[list[str], dict[str, str]]]


def edge_chains(ids: list[str]) -> st.SearchStrategy[Chains]:
    """Chains ``a -> b -> c`` over existing ids, each with the attrs all its edges share."""
    if not ids:
        return st.just([])
    chain = st.lists(st.sampled_from(ids), min_size=2, max_size=4)
    return st.lists(st.tuples(chain, attr_dicts(max_size=3)), max_size=6)


def _flatten(chains: Chains) -> list[Edge]:
    return [
        Edge(source, target, attrs) for ids, attrs in chains for source, target in pairwise(ids)
    ]


_GRAPH_NAMES = st.one_of(identifiers(), _SAFE_TEXT)


@st.composite
def _graph_and_chains(draw: st.DrawFn, max_nodes: int = 8) -> tuple[Graph, Chains]:
    ids = draw(st.lists(node_ids(), unique=True, max_size=max_nodes))
    chains = draw(edge_chains(ids))
    graph = Graph(draw(_GRAPH_NAMES), draw(attr_dicts()), _nodes(ids, draw), _flatten(chains))
    return graph, chains


def graphs(max_nodes: int = 8) -> st.SearchStrategy[Graph]:
    """Random valid Graphs: every edge joins declared nodes."""
    return _graph_and_chains(max_nodes).map(lambda pair: pair[0])


# --- rendering a graph as hand-written DOT (plain helpers: no strategy objects per draw) ------

_GAPS = st.sampled_from([" ", "  ", "\n", "\t", " /* c */ ", " // c\n", "\n# c\n", "\r\n"])
_BOOLS = st.booleans()
_ENDS = st.sampled_from([";", "", ""])
_SUBGRAPH_NAMES = st.sampled_from(["", "cluster_x ", "s "])
_LABEL_NOISE = st.sampled_from(["", "!", "(", "."])


def _value(draw: st.DrawFn, text: str) -> str:
    bare_ok = _BARE_VALUE.match(text) or _NUMBER_VALUE.match(text)
    return text if bare_ok and draw(_BOOLS) else quote(text)


def _attr_block(draw: st.DrawFn, attrs: dict[str, str]) -> str:
    parts = [f"{key}{draw(_GAPS)}={_value(draw, value)}" for key, value in attrs.items()]
    gap = draw(_GAPS)
    trailing = "," if bool(parts) and draw(_BOOLS) else ""
    return f"[{gap}{(',' + gap).join(parts)}{trailing}]"


def _label_for(draw: st.DrawFn, cls: str) -> str:
    """A subgraph label deriving to ``cls``: random case and stripped punctuation."""
    flips: list[bool] = [draw(_BOOLS) for _ in cls]
    chars = [c.upper() if flip else c for c, flip in zip(cls, flips, strict=True)]
    return draw(_LABEL_NOISE) + "".join(chars)


def _node_statement(draw: st.DrawFn, node: Node) -> str:
    block = f" {_attr_block(draw, node.attrs)}" if bool(node.attrs) or draw(_BOOLS) else ""
    text = f"{node.id}{block}"
    for cls in reversed(node.subgraph_classes):
        name = draw(_SUBGRAPH_NAMES)
        text = f"subgraph {name}{{ label={quote(_label_for(draw, cls))}\n{text}\n}}"
    return text


def _end(draw: st.DrawFn) -> str:
    return draw(_ENDS) + draw(_GAPS)


def _graph_attr_statements(draw: st.DrawFn, attrs: dict[str, str]) -> list[str]:
    if draw(_BOOLS):
        return [f"{key} = {_value(draw, value)}{_end(draw)}" for key, value in attrs.items()]
    return [f"graph {_attr_block(draw, attrs)}{_end(draw)}"]


@st.composite
def dot_sources(draw: st.DrawFn, max_nodes: int = 8) -> tuple[str, Graph]:
    """``(source, graph)``: DOT text written in varied styles and the Graph it denotes.

    Edges may come before the node statements: nodes are then created implicitly and the later
    declarations merge in their attributes and subgraph memberships, giving the same Graph.
    """
    graph, chains = draw(_graph_and_chains(max_nodes))
    nodes = [_node_statement(draw, node) + _end(draw) for node in graph.nodes.values()]
    edges = []
    for ids, attrs in chains:
        arrows = "".join(f"{draw(_GAPS)}->{draw(_GAPS)}{node_id}" for node_id in ids[1:])
        block = f" {_attr_block(draw, attrs)}" if attrs else ""
        edges.append(f"{ids[0]}{arrows}{block}{_end(draw)}")
    graph_attrs = _graph_attr_statements(draw, graph.attrs)
    nodes_first = draw(_BOOLS)
    statements = [*graph_attrs, *nodes, *edges] if nodes_first else [*edges, *graph_attrs, *nodes]
    source = f"digraph {quote(graph.name)} {{{draw(_GAPS)}{''.join(statements)}}}{draw(_GAPS)}"
    return source, graph
