"""Graph → DOT text that :func:`~attractor_trio.dot.parse_dot` reads back to an equal Graph.

The output is flattened and explicit: no default blocks, every value quoted, attributes in
their stored order, nodes before edges (so no node is created implicitly with other attrs).
A node's ``subgraph_classes`` survive as nested ``subgraph { label="..." }`` wrappers, one
level per class, outermost first. That is exact for classes the parser can derive (lowercase
``[a-z0-9-]``); an API-built node whose class text would not derive to itself (``"Loop A"``)
comes back with the derived form (``loop-a``).
"""

from __future__ import annotations

from collections.abc import Mapping

from .graph import Graph, Node
from .lexer import KEYWORDS, is_attr_key, is_node_id

__all__ = ["quote", "to_dot"]

_INDENT = "    "


def quote(text: str) -> str:
    """A DOT string literal for ``text``; inverse of the lexer's ``decode_string``."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _attr_list(attrs: Mapping[str, str]) -> str:
    for key in attrs:
        if not is_attr_key(key):
            raise ValueError(
                f"cannot write attribute key {key!r} as DOT: keys are identifiers, "
                "optionally dotted"
            )
    return ", ".join(f"{key}={quote(value)}" for key, value in attrs.items())


def _node_line(node: Node) -> str:
    return f"{node.id} [{_attr_list(node.attrs)}]" if node.attrs else node.id


def _node_lines(node: Node) -> list[str]:
    depth = len(node.subgraph_classes)
    lines = [
        f"{_INDENT * (level + 1)}subgraph {{ label={quote(cls)}"
        for level, cls in enumerate(node.subgraph_classes)
    ]
    lines.append(f"{_INDENT * (depth + 1)}{_node_line(node)}")
    lines.extend(f"{_INDENT * level}}}" for level in range(depth, 0, -1))
    return lines


def _check_node_id(node_id: str) -> None:
    if not is_node_id(node_id):
        raise ValueError(
            f"cannot write node id {node_id!r} as DOT: ids match [A-Za-z_][A-Za-z0-9_]* and are "
            f"not one of {sorted(KEYWORDS)}"
        )


def to_dot(graph: Graph) -> str:
    """Serialize ``graph``; ``parse_dot(to_dot(g)) == g`` for any graph the parser can produce.

    Raises :class:`ValueError` for an API-built graph whose ids or keys DOT cannot spell. An edge
    to an undeclared node is written as is; parsing it back creates that node implicitly.
    """
    for node_id in graph.nodes:
        _check_node_id(node_id)
    lines = [f"digraph {quote(graph.name)} {{"]
    if graph.attrs:
        lines.append(f"{_INDENT}graph [{_attr_list(graph.attrs)}]")
    for node in graph.nodes.values():
        lines.extend(_node_lines(node))
    for edge in graph.edges:
        _check_node_id(edge.from_node)
        _check_node_id(edge.to_node)
        attrs = f" [{_attr_list(edge.attrs)}]" if edge.attrs else ""
        lines.append(f"{_INDENT}{edge.from_node} -> {edge.to_node}{attrs}")
    lines.append("}")
    return "\n".join(lines) + "\n"
