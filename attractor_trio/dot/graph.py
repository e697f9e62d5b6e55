"""The pipeline as frozen value objects: ``Graph``, ``Node``, ``Edge``, ``Diagnostic``.

Attributes are kept exactly as the author wrote them (decoded strings), in declaration order,
so a graph can be serialized back and compared. Typed accessors (spec Appendix A) parse on
demand and raise :class:`~attractor_trio.dot.values.AttributeValueError` on a malformed value;
validation reports such values before anything runs, so the engine never guesses.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from attrs import evolve, field, frozen

from ..errors import Diagnostic, Severity
from .values import parse_bool, parse_duration, parse_float, parse_int

__all__ = [
    "EXIT_IDS",
    "SHAPE_TO_TYPE",
    "START_IDS",
    "Diagnostic",
    "Edge",
    "Graph",
    "Node",
    "Severity",
]

SHAPE_TO_TYPE: Mapping[str, str] = {
    "Mdiamond": "start",
    "Msquare": "exit",
    "box": "codergen",
    "hexagon": "wait.human",
    "diamond": "conditional",
    "component": "parallel",
    "tripleoctagon": "parallel.fan_in",
    "parallelogram": "tool",
    "house": "stack.manager_loop",
}
#: Ids (compared lowercase) of the start and exit nodes of a graph without an ``Mdiamond``
#: (resp. ``Msquare``) node, whatever their shape (contract.md §10).
START_IDS = ("start",)
EXIT_IDS = ("exit", "end")


def _frozen_dict(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _node_dict(value: Mapping[str, Node]) -> dict[str, Node]:
    """The graph's nodes, each with the ``role`` its position in the graph gives it.

    This is the one place deciding that a node is the start or exit by its id (contract.md §10):
    only when no node has the spec's shape (``Mdiamond``/``Msquare``), for every node whose id
    is ``start`` (resp. ``exit``/``end``) in any case. Two candidates both get the role, and
    validation reports both. Recomputed whenever a graph is built, so transforms keep it right.
    """
    nodes = dict(value)
    shapes = {node.shape for node in nodes.values()}
    starts = set() if "Mdiamond" in shapes else {k for k in nodes if k.lower() in START_IDS}
    exits = set() if "Msquare" in shapes else {k for k in nodes if k.lower() in EXIT_IDS}
    for key, node in nodes.items():
        role = "start" if key in starts else "exit" if key in exits else ""
        if node.role != role:
            nodes[key] = evolve(node, role=role)
    return nodes


def _edge_tuple(value: Iterable[Edge]) -> tuple[Edge, ...]:
    return tuple(value)


class _Attributed:
    """Shared typed lookups over a string attribute map."""

    attrs: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.attrs.get(key, default)

    def _int(self, key: str) -> int | None:
        raw = self.attrs.get(key)
        return None if raw is None or raw.strip() == "" else parse_int(raw)

    def _float(self, key: str) -> float | None:
        raw = self.attrs.get(key)
        return None if raw is None or raw.strip() == "" else parse_float(raw)

    def _bool(self, key: str, default: bool = False) -> bool:
        raw = self.attrs.get(key)
        return default if raw is None else parse_bool(raw)

    def _duration(self, key: str) -> float | None:
        raw = self.attrs.get(key)
        return None if raw is None or raw.strip() == "" else parse_duration(raw)


@frozen(eq=True, hash=False)
class Node(_Attributed):
    """A stage. ``attrs`` holds every attribute, custom ones included (spec S2.6-18)."""

    id: str
    attrs: dict[str, str] = field(factory=dict, converter=_frozen_dict)
    #: Classes derived from enclosing subgraph labels, outermost first (spec S2.10-03).
    subgraph_classes: tuple[str, ...] = ()
    line: int = field(default=0, eq=False)
    col: int = field(default=0, eq=False)
    #: ``start``/``exit`` for a node that is one by its id (set by :class:`Graph`), else ``""``.
    role: str = field(default="", eq=False, repr=False)

    def with_attrs(self, attrs: Mapping[str, str]) -> Node:
        """This node with ``attrs`` instead of its own: ``evolve(node, attrs=...)`` without its
        per-field introspection, which dominated the transforms on 10,000 nodes."""
        return Node(self.id, attrs, self.subgraph_classes, self.line, self.col, self.role)

    # --- Appendix A node attributes -------------------------------------------------------
    @property
    def label(self) -> str:
        return self.attrs.get("label") or self.id

    @property
    def shape(self) -> str:
        return self.attrs.get("shape") or "box"

    @property
    def type(self) -> str:
        return self.attrs.get("type", "")

    @property
    def implied_type(self) -> str | None:
        """The type the node's role or shape implies; ``None`` for a shape without a handler."""
        return self.role or SHAPE_TO_TYPE.get(self.shape)

    @property
    def handler_type(self) -> str:
        """The one decision of a node's handler type: explicit ``type``, else its role (start or
        exit by id), else the shape mapping; a shape without a handler means codergen (and
        validation warns, rule ``unknown_shape``)."""
        return self.type or self.implied_type or "codergen"

    @property
    def prompt(self) -> str:
        return self.attrs.get("prompt", "")

    @property
    def max_retries(self) -> int | None:
        """Explicit ``max_retries`` or ``None`` when the graph default applies."""
        return self._int("max_retries")

    @property
    def goal_gate(self) -> bool:
        return self._bool("goal_gate")

    @property
    def retry_target(self) -> str:
        return self.attrs.get("retry_target", "")

    @property
    def fallback_retry_target(self) -> str:
        return self.attrs.get("fallback_retry_target", "")

    @property
    def fidelity(self) -> str:
        return self.attrs.get("fidelity", "")

    @property
    def thread_id(self) -> str:
        return self.attrs.get("thread_id", "")

    @property
    def classes(self) -> tuple[str, ...]:
        """Explicit ``class`` names (comma-separated, trimmed) then derived subgraph classes."""
        explicit = [c.strip() for c in self.attrs.get("class", "").split(",") if c.strip()]
        merged = dict.fromkeys([*explicit, *self.subgraph_classes])
        return tuple(merged)

    @property
    def timeout(self) -> float | None:
        """Seconds, or ``None`` when unbounded."""
        return self._duration("timeout")

    @property
    def llm_model(self) -> str:
        return self.attrs.get("llm_model", "")

    @property
    def llm_provider(self) -> str:
        return self.attrs.get("llm_provider", "")

    @property
    def reasoning_effort(self) -> str:
        return self.attrs.get("reasoning_effort", "high")

    @property
    def llm_max_tokens(self) -> int | None:
        """Output token cap of each model call (``llm.max_tokens``); ``None``: the default."""
        return self._int("llm.max_tokens")

    @property
    def auto_status(self) -> bool:
        return self._bool("auto_status")

    @property
    def allow_partial(self) -> bool:
        return self._bool("allow_partial")

    @property
    def retry_policy(self) -> str:
        return self.attrs.get("retry_policy", "")

    # --- handler-specific attributes --------------------------------------------------------
    @property
    def tool_command(self) -> str:
        return self.attrs.get("tool_command", "")

    @property
    def join_policy(self) -> str:
        return self.attrs.get("join_policy", "wait_all")

    @property
    def error_policy(self) -> str:
        return self.attrs.get("error_policy", "continue")

    @property
    def max_parallel(self) -> int | None:
        return self._int("max_parallel")

    @property
    def k(self) -> int | None:
        return self._int("k")

    @property
    def quorum_fraction(self) -> float:
        value = self._float("quorum_fraction")
        return 0.5 if value is None else value

    @property
    def branch_timeout(self) -> float | None:
        return self._duration("branch_timeout")

    @property
    def human_default_choice(self) -> str:
        return self.attrs.get("human.default_choice", "")

    @property
    def human_timeout(self) -> float | None:
        return self._duration("human.timeout")

    @property
    def codergen_mode(self) -> str:
        return self.attrs.get("codergen_mode", "")


@frozen(eq=True, hash=False)
class Edge(_Attributed):
    """A directed transition ``from_node -> to_node``."""

    from_node: str
    to_node: str
    attrs: dict[str, str] = field(factory=dict, converter=_frozen_dict)
    line: int = field(default=0, eq=False)
    col: int = field(default=0, eq=False)

    @property
    def label(self) -> str:
        return self.attrs.get("label", "")

    @property
    def condition(self) -> str:
        return self.attrs.get("condition", "")

    @property
    def weight(self) -> int:
        value = self._int("weight")
        return 0 if value is None else value

    @property
    def fidelity(self) -> str:
        return self.attrs.get("fidelity", "")

    @property
    def thread_id(self) -> str:
        return self.attrs.get("thread_id", "")

    @property
    def loop_restart(self) -> bool:
        return self._bool("loop_restart")


@frozen(eq=True, hash=False)
class Graph(_Attributed):
    """A parsed (and possibly transformed) pipeline. Nodes keep declaration order."""

    name: str
    attrs: dict[str, str] = field(factory=dict, converter=_frozen_dict)
    nodes: dict[str, Node] = field(factory=dict, converter=_node_dict)
    edges: tuple[Edge, ...] = field(default=(), converter=_edge_tuple)
    #: Where the graph came from, for diagnostics; not part of equality.
    path: str = field(default="<string>", eq=False)
    source: str = field(default="", eq=False, repr=False)
    #: Position of the ``digraph`` keyword: where whole-graph diagnostics point (0: unknown).
    line: int = field(default=0, eq=False)
    col: int = field(default=0, eq=False)
    #: Graph attribute key → offsets in ``source`` of its last ``key`` and ``value`` tokens
    #: (the value still quoted), so diagnostics about a graph attribute point at it.
    attr_offsets: dict[str, tuple[int, int]] = field(factory=dict, eq=False, repr=False)
    #: node id → outgoing edges, built on first use (the graph is immutable, so it stays valid).
    _outgoing_index: dict[str, list[Edge]] = field(
        factory=dict, init=False, eq=False, repr=False, alias="_outgoing_index"
    )

    # --- Appendix A graph attributes --------------------------------------------------------
    @property
    def goal(self) -> str:
        return self.attrs.get("goal", "")

    @property
    def label(self) -> str:
        return self.attrs.get("label", "")

    @property
    def model_stylesheet(self) -> str:
        return self.attrs.get("model_stylesheet", "")

    @property
    def default_max_retries(self) -> int | None:
        """``default_max_retries``, or its legacy alias ``default_max_retry``; ``None`` if unset."""
        value = self._int("default_max_retries")
        return self._int("default_max_retry") if value is None else value

    @property
    def default_fidelity(self) -> str:
        return self.attrs.get("default_fidelity", "")

    @property
    def default_retry_policy(self) -> str:
        return self.attrs.get("default_retry_policy", "")

    @property
    def retry_target(self) -> str:
        return self.attrs.get("retry_target", "")

    @property
    def fallback_retry_target(self) -> str:
        return self.attrs.get("fallback_retry_target", "")

    @property
    def loop_restart_signature_limit(self) -> int:
        value = self._int("loop_restart_signature_limit")
        return 3 if value is None else value

    @property
    def max_node_visits(self) -> int | None:
        return self._int("max_node_visits")

    @property
    def max_restarts(self) -> int:
        value = self._int("max_restarts")
        return 5 if value is None else value

    # --- structure --------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def outgoing(self, node_id: str) -> list[Edge]:
        """Outgoing edges in declaration order (a copy; indexed once per graph)."""
        index = self._outgoing_index
        if not index and self.edges:
            for edge in self.edges:
                index.setdefault(edge.from_node, []).append(edge)
        return list(index.get(node_id, ()))

    def incoming(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.to_node == node_id]

    def start_nodes(self) -> list[Node]:
        """Nodes that count as a start: ``shape=Mdiamond``, else id ``start`` in any case."""
        return [n for n in self.nodes.values() if n.shape == "Mdiamond" or n.role == "start"]

    def exit_nodes(self) -> list[Node]:
        """Nodes that count as terminal: ``shape=Msquare``, else id ``exit``/``end`` in any case."""
        return [n for n in self.nodes.values() if self._is_exit(n)]

    def is_terminal(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and self._is_exit(node)

    @staticmethod
    def _is_exit(node: Node) -> bool:
        return node.shape == "Msquare" or node.role == "exit"

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def evolve(self, **changes: Any) -> Graph:
        """A copy with ``changes``; transforms use this so the input graph is never mutated."""
        return evolve(self, **changes)
