"""Recursive-descent parser for the Attractor DOT subset (spec §2.1-2.13) → :class:`Graph`.

Why hand-written: pydot is ~100x slower, accepts what the spec rejects and mangles values such
as ``1800s``. This parser reads the spec's grammar plus the Graphviz conveniences that cannot
change meaning (``#`` line comments, trailing commas, an anonymous ``digraph {``, repeated ``[...]``
blocks, stray ``;``), and rejects everything else with ``FILE:LINE:COL`` and a fix.

Semantics follow Graphviz where the spec is silent, so what ``dot`` renders is what runs:

* ``node [...]`` / ``edge [...]`` defaults apply to nodes/edges *created* after them in the same
  scope (subgraph defaults never leak out). Re-declaring an existing node merges only its
  explicit attributes (later wins). A node's line/col is its first node statement, else the
  edge that first named it; an edge's is its source id in the statement.
* A node first named in an edge is created there, with the node defaults in scope.
* Any mention of a node inside a subgraph makes it a member; ``subgraph_classes`` are derived
  from the labels of the subgraphs it belongs to, outermost first, once the whole file is read
  (so a ``label`` written after the nodes still counts).
* ``#`` starts a comment only at the beginning of a line, as in Graphviz.
* Inside a subgraph, ``label = ...`` and ``graph [label=...]`` set the subgraph's label; other
  subgraph-level attributes (``color``, ``style``...) only affect rendering and are dropped.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import NoReturn

from ..errors import AttractorError, DotSyntaxError
from .gcpause import gc_paused
from .graph import Edge, Graph, Node
from .inputs import DEFAULT_MAX_INPUT_SIZE, MAX_INPUT_HINT, BinaryInput, decode_text, read_bounded
from .lexer import (
    BAD,
    EOF,
    IDENTIFIER,
    KEY,
    KEYWORD_SPELLINGS,
    NUMBER,
    STRING,
    WORD,
    Positions,
    bad_lexeme_message,
    decode_string,
    derive_class,
    tokenize,
)

__all__ = ["MAX_SUBGRAPH_DEPTH", "load_dot", "parse_dot"]

_NODE_ID_HELP = (
    "node ids must be bare identifiers matching [A-Za-z_][A-Za-z0-9_]*; "
    'put a human-readable name in label="..."'
)
_VALUE_KINDS = frozenset({STRING, WORD, NUMBER})

#: Deeper nesting is refused before it could exhaust Python's recursion limit.
MAX_SUBGRAPH_DEPTH = 100


def parse_dot(source: str, path: str = "<string>") -> Graph:
    """Parse one ``digraph`` from ``source``; ``path`` only labels positions in errors.

    The collector is paused: a parse builds many objects and no cycles
    (:mod:`attractor_trio.dot.gcpause`).
    """
    with gc_paused():
        return _Parser(source, path).parse()


def load_dot(path: str | Path, *, max_size: int = DEFAULT_MAX_INPUT_SIZE) -> Graph:
    """Read ``path`` as UTF-8 (a BOM is tolerated) and parse it.

    A file over ``max_size`` bytes is refused (:class:`InputTooLarge`) before it is read
    whole; a NUL byte or invalid UTF-8 is a syntax error at that byte (contract.md §10).
    """
    try:
        data = read_bounded(path, max_size, "the pipeline", MAX_INPUT_HINT)
    except FileNotFoundError:
        raise AttractorError(f"{path}: no such file: check the pipeline path") from None
    except OSError as exc:
        raise AttractorError(f"{path}: cannot read the file: {exc.strerror}") from None
    try:
        source = decode_text(data)
    except BinaryInput as exc:
        raise DotSyntaxError(exc.message, line=exc.line, col=exc.col, file=str(path)) from None
    return parse_dot(source, str(path))


class _Scope:
    """Defaults and subgraph membership in force for the statements of one block."""

    __slots__ = ("chain", "edge_defaults", "node_defaults", "subgraph")

    def __init__(
        self,
        node_defaults: dict[str, str],
        edge_defaults: dict[str, str],
        chain: tuple[int, ...],
        subgraph: int | None,
    ) -> None:
        self.node_defaults = node_defaults
        self.edge_defaults = edge_defaults
        self.chain = chain  # ids of the enclosing subgraphs, outermost first
        self.subgraph = subgraph

    def child(self, subgraph: int) -> _Scope:
        return _Scope(
            dict(self.node_defaults), dict(self.edge_defaults), (*self.chain, subgraph), subgraph
        )


class _Parser:
    def __init__(self, source: str, path: str) -> None:
        self.source = source
        self.path = path
        self.positions = Positions(source)
        # A byte-order mark counts as whitespace (offsets, hence columns, stay as written).
        tokens = tokenize(" " + source[1:] if source[:1] == "\ufeff" else source)
        self.kinds = tokens.kinds
        self.texts = tokens.texts
        self.starts = tokens.starts
        self.i = 0
        self.graph_attrs: dict[str, str] = {}
        self.graph_attr_offsets: dict[str, tuple[int, int]] = {}
        self.header_index = 0
        # Nodes while the file is read: attrs, first-declaration offset and subgraph
        # memberships in separate dicts (fewer objects per node keeps the GC quiet).
        self.node_attrs: dict[str, dict[str, str]] = {}
        self.node_starts: dict[str, int] = {}
        self.declared: set[str] = set()  # ids that have a node statement of their own
        self.memberships: dict[str, tuple[int, ...]] = {}
        self.edges: list[tuple[str, str, dict[str, str], int]] = []
        self.subgraph_labels: list[str] = []
        self.valid_keys: set[str] = set()
        self.name = ""
        self.class_cache: dict[tuple[int, ...], tuple[str, ...]] = {}

    # --- errors -------------------------------------------------------------------------------
    def error_at(self, index: int, message: str, offset: int = 0) -> DotSyntaxError:
        """The error for token ``index``; a malformed lexeme there explains itself instead."""
        if self.kinds[index] == BAD:
            message = bad_lexeme_message(self.texts[index])
        line, col = self.positions.line_col(self.starts[index] + offset)
        return DotSyntaxError(message, line=line, col=col, file=self.path)

    def describe(self, index: int) -> str:
        if self.kinds[index] == EOF:
            return "end of file"
        text = self.texts[index]
        return repr(text if len(text) <= 40 else text[:37] + "...")

    def expect(self, punct: str, what: str, fix: str) -> int:
        index = self.i
        if self.texts[index] != punct:
            raise self.error_at(index, f"expected {what}, found {self.describe(index)}: {fix}")
        self.i += 1
        return index

    def keyword(self, index: int) -> str | None:
        """The keyword at ``index`` in lowercase, or ``None`` (strings keep quotes: no clash)."""
        return KEYWORD_SPELLINGS.get(self.texts[index])

    # --- graph ----------------------------------------------------------------------------------
    def parse(self) -> Graph:
        self.header()
        open_brace = self.expect("{", "'{' to open the graph body", "write digraph Name { ... }")
        root = _Scope({}, {}, (), None)
        self.statements(root, open_brace)
        self.i += 1  # the closing '}'
        self.trailer()
        return self.build()

    def header(self) -> str:
        index = self.i
        word = self.keyword(index)
        if self.kinds[index] == EOF:
            raise self.error_at(index, "the file is empty: expected 'digraph Name { ... }'")
        if word == "strict":
            raise self.error_at(index, "'strict' graphs are not supported: remove 'strict'")
        if word == "graph":
            raise self.error_at(
                index, "undirected graphs are not supported: use 'digraph' instead of 'graph'"
            )
        if word != "digraph":
            raise self.error_at(
                index,
                f"expected 'digraph Name {{', found {self.describe(index)}: "
                "a pipeline file holds one 'digraph Name { ... }'",
            )
        self.header_index = index
        self.i += 1
        return self.graph_name()

    def graph_name(self) -> str:
        index = self.i
        kind = self.kinds[index]
        if self.texts[index] == "{":
            self.name = ""
        elif kind == STRING:
            self.name = decode_string(self.texts[index])
            self.i += 1
        elif kind == WORD and IDENTIFIER.match(self.texts[index]):
            self.name = self.texts[index]
            self.i += 1
        else:
            raise self.error_at(
                index,
                f"invalid graph name {self.describe(index)}: use an identifier or a quoted string",
            )
        return self.name

    def trailer(self) -> None:
        index = self.i
        if self.kinds[index] == EOF:
            return
        if self.keyword(index) in {"digraph", "graph", "strict"}:
            raise self.error_at(
                index, "only one graph per file is supported: move this graph to its own file"
            )
        raise self.error_at(
            index,
            f"unexpected {self.describe(index)} after the end of the graph: "
            "remove it or move it inside the braces",
        )

    def build(self) -> Graph:
        line_col = self.positions.line_col
        nodes: dict[str, Node] = {}
        memberships, starts = self.memberships, self.node_starts
        for node_id, attrs in self.node_attrs.items():
            joined = memberships.get(node_id)
            classes = self.classes(joined) if joined else ()
            line, col = line_col(starts[node_id])
            nodes[node_id] = Node(node_id, attrs, classes, line, col)
        edges = []
        for source, target, attrs, start in self.edges:
            line, col = line_col(start)
            edges.append(Edge(source, target, attrs, line, col))
        line, col = line_col(self.starts[self.header_index])
        return Graph(
            self.name, self.graph_attrs, nodes, edges, path=self.path, source=self.source,
            line=line, col=col, attr_offsets=self.graph_attr_offsets,
        )  # fmt: skip

    def classes(self, memberships: tuple[int, ...]) -> tuple[str, ...]:
        """Derived classes of a set of subgraphs; most nodes share a few sets, so cache them."""
        cached = self.class_cache.get(memberships)
        if cached is None:
            derived = (derive_class(self.subgraph_labels[s]) for s in memberships)
            cached = self.class_cache[memberships] = tuple(dict.fromkeys(c for c in derived if c))
        return cached

    # --- statements -------------------------------------------------------------------------------
    def statements(self, scope: _Scope, open_brace: int) -> None:
        """Statements up to (not past) the ``}`` that closes the block opened at ``open_brace``."""
        kinds, texts = self.kinds, self.texts
        while True:
            kind = kinds[self.i]
            if kind == WORD:
                self.word_statement(scope)
            elif texts[self.i] == "}":
                return
            elif texts[self.i] == ";":
                self.i += 1
            elif kind == EOF:
                line, col = self.positions.line_col(self.starts[open_brace])
                raise self.error_at(
                    self.i,
                    f"unexpected end of file: the '{{' at {line}:{col} is never closed; add '}}'",
                )
            else:
                self.bad_statement_start(kind)

    def bad_statement_start(self, kind: int) -> NoReturn:
        index = self.i
        if kind in {STRING, NUMBER}:
            raise self.error_at(index, f"invalid node id {self.describe(index)}: {_NODE_ID_HELP}")
        if self.texts[index] == "{":
            raise self.error_at(
                index, "anonymous blocks are not supported: write 'subgraph { ... }'"
            )
        raise self.error_at(
            index,
            f"unexpected {self.describe(index)}: a statement starts with a node id, "
            "'node', 'edge', 'graph', 'subgraph' or key = value",
        )

    def word_statement(self, scope: _Scope) -> None:
        word = self.keyword(self.i)
        if word is not None:
            self.keyword_statement(word, scope)
            return
        follower = self.texts[self.i + 1]
        if follower == "=":
            self.attr_decl(scope)
        elif follower == "->":
            self.edge_statement(scope)
        elif follower == "--":
            raise self.error_at(self.i + 1, "undirected edge '--' is not supported: use '->'")
        else:
            self.node_statement(scope)

    def keyword_statement(self, word: str, scope: _Scope) -> None:
        index = self.i
        if word == "subgraph":
            self.subgraph(scope)
            return
        if word in {"digraph", "strict"}:
            raise self.error_at(
                index,
                "only one graph per file is supported: a graph cannot contain another graph",
            )
        if self.texts[index + 1] != "[":
            raise self.error_at(
                index + 1,
                f"expected '[' after '{word}', found {self.describe(index + 1)}: "
                f"write {word} [key=value, ...]",
            )
        self.i += 1
        first = self.i
        attrs = self.attr_blocks()
        if word == "node":
            scope.node_defaults.update(attrs)
        elif word == "edge":
            scope.edge_defaults.update(attrs)
        else:
            self.set_graph_attrs(scope, attrs, range(first, self.i))

    def set_graph_attrs(self, scope: _Scope, attrs: dict[str, str], tokens: range) -> None:
        """``tokens``: the statement's token indices, to record where each attribute is."""
        if scope.subgraph is None:
            self.graph_attrs.update(attrs)
            texts, starts = self.texts, self.starts
            for index in tokens:  # graph statements are few: no cost on the node hot path
                if texts[index + 1] == "=" and texts[index] in attrs and texts[index - 1] != "=":
                    self.graph_attr_offsets[texts[index]] = (starts[index], starts[index + 2])
        elif "label" in attrs:
            self.subgraph_labels[scope.subgraph] = attrs["label"]

    def attr_decl(self, scope: _Scope) -> None:
        first = self.i
        key = self.key(first)
        self.i += 2  # key and '='
        self.set_graph_attrs(scope, {key: self.value()}, range(first, first + 1))

    def subgraph(self, scope: _Scope) -> None:
        if len(scope.chain) >= MAX_SUBGRAPH_DEPTH:
            raise self.error_at(
                self.i,
                f"subgraphs are nested more than {MAX_SUBGRAPH_DEPTH} levels deep: "
                "flatten the pipeline",
            )
        self.i += 1
        if self.kinds[self.i] in {WORD, STRING}:
            self.i += 1
        if self.texts[self.i] != "{":
            raise self.error_at(
                self.i,
                f"expected '{{' to open the subgraph body, found {self.describe(self.i)}: "
                "write subgraph name { ... }",
            )
        open_brace = self.i
        self.i += 1
        self.subgraph_labels.append("")
        inner = scope.child(len(self.subgraph_labels) - 1)
        self.statements(inner, open_brace)
        self.i += 1

    def node_statement(self, scope: _Scope) -> None:
        """``id [attrs]``: its position wins over an earlier mention in an edge, so that
        diagnostics point at the declaration (contract.md §9); a second statement merges."""
        index = self.node_id()
        node_id = self.texts[index]
        explicit = self.attr_blocks() if self.texts[self.i] == "[" else {}
        self.declare(node_id, self.starts[index], explicit, scope)
        if node_id not in self.declared:
            self.declared.add(node_id)
            self.node_starts[node_id] = self.starts[index]

    def declare(self, node_id: str, start: int, explicit: dict[str, str], scope: _Scope) -> None:
        attrs = self.node_attrs.get(node_id)
        if attrs is None:
            self.node_attrs[node_id] = {**scope.node_defaults, **explicit}
            self.node_starts[node_id] = start
        elif explicit:
            attrs.update(explicit)
        if scope.chain:
            self.join(node_id, scope.chain)

    def join(self, node_id: str, chain: tuple[int, ...]) -> None:
        """Record that ``node_id`` was mentioned inside the subgraphs ``chain``."""
        known = self.memberships.get(node_id)
        if known is None:
            self.memberships[node_id] = chain
        elif known != chain:
            self.memberships[node_id] = tuple(dict.fromkeys((*known, *chain)))

    def edge_statement(self, scope: _Scope) -> None:
        texts, starts = self.texts, self.starts
        endpoints = [self.node_id()]
        while texts[self.i] == "->":
            self.i += 1
            if texts[self.i] == "{" or self.keyword(self.i) == "subgraph":
                raise self.error_at(
                    self.i,
                    "edges to subgraphs or '{ ... }' groups are not supported: "
                    "write one edge per target node",
                )
            endpoints.append(self.node_id())
        if texts[self.i] == "--":
            raise self.error_at(self.i, "undirected edge '--' is not supported: use '->'")
        explicit = self.attr_blocks() if texts[self.i] == "[" else {}
        for index in endpoints:
            self.declare(texts[index], starts[index], {}, scope)
        attrs = {**scope.edge_defaults, **explicit}
        for source, target in pairwise(endpoints):
            self.edges.append((texts[source], texts[target], attrs, starts[source]))

    def node_id(self) -> int:
        """Consume one node id and return its token index."""
        index = self.i
        text = self.texts[index]
        if text in self.node_attrs:  # validated when the node was created
            self.i += 1
            return index
        kind = self.kinds[index]
        if kind == WORD:
            if IDENTIFIER.match(text):
                if self.keyword(index) is not None:
                    raise self.error_at(
                        index,
                        f"'{text}' is a reserved word and cannot be a node id: rename the node",
                    )
                self.i += 1
                return index
            colon = text.find(":")
            if colon >= 0:
                raise self.error_at(
                    index,
                    f"edge ports ('{text}') are not supported: connect the node "
                    f"'{text[:colon]}' itself",
                    offset=colon,
                )
        elif text == ":":
            raise self.error_at(index, "edge ports (node:port) are not supported: remove ':port'")
        elif kind not in {STRING, NUMBER}:
            raise self.error_at(
                index, f"expected a node id, found {self.describe(index)}: write a -> b"
            )
        raise self.error_at(index, f"invalid node id {self.describe(index)}: {_NODE_ID_HELP}")

    # --- attributes ---------------------------------------------------------------------------
    def attr_blocks(self) -> dict[str, str]:
        """One or more ``[k=v, ...]`` blocks (Graphviz allows ``a [x=1] [y=2]``)."""
        attrs: dict[str, str] = {}
        while self.texts[self.i] == "[":
            self.attr_block(attrs)
        return attrs

    def attr_block(self, attrs: dict[str, str]) -> None:
        """One ``[k=v, ...]`` block into ``attrs``; the hottest loop, so common cases inline."""
        texts, kinds, valid_keys = self.texts, self.kinds, self.valid_keys
        open_bracket = self.i
        i = open_bracket + 1
        while texts[i] != "]":
            key = texts[i]
            if key not in valid_keys:
                if kinds[i] == EOF:
                    self.i = i
                    self.bad_separator(open_bracket)
                self.key(i)
            if texts[i + 1] != "=":
                raise self.error_at(i + 1, f"attribute '{key}' has no value: write {key}=value")
            i += 2
            kind = kinds[i]
            if kind == STRING and texts[i + 1] != "+":
                attrs[key] = decode_string(texts[i])
                i += 1
            elif kind in (WORD, NUMBER) and texts[i + 1] != "+":
                attrs[key] = texts[i]
                i += 1
            else:
                self.reject_value(i)
            separator = texts[i]
            if separator == ",":
                i += 1
            elif separator != "]":
                self.i = i
                self.bad_separator(open_bracket)
        self.i = i + 1  # past the ']'

    def bad_separator(self, open_bracket: int) -> NoReturn:
        index = self.i
        if self.kinds[index] == EOF:
            line, col = self.positions.line_col(self.starts[open_bracket])
            raise self.error_at(
                index, f"unexpected end of file: the '[' at {line}:{col} is never closed; add ']'"
            )
        if self.texts[index] == ";":
            raise self.error_at(
                index, "attributes must be separated by ',' not ';': add a comma between attributes"
            )
        line, col = self.positions.line_col(self.starts[open_bracket])
        raise self.error_at(
            index,
            f"expected ',' or ']' after an attribute, found {self.describe(index)}: "
            f"add a comma between attributes (or close the '[' at {line}:{col} with ']')",
        )

    def key(self, index: int) -> str:
        kind = self.kinds[index]
        text = self.texts[index]
        if text in self.valid_keys or (kind == WORD and KEY.match(text)):
            self.valid_keys.add(text)
            return text
        if kind == STRING:
            raise self.error_at(
                index, f"attribute keys must be bare identifiers, found {text}: remove the quotes"
            )
        if kind in {WORD, NUMBER}:
            raise self.error_at(
                index,
                f"invalid attribute key {text!r}: keys are identifiers, optionally dotted "
                "(e.g. human.default_choice)",
            )
        raise self.error_at(
            index,
            f"expected an attribute key, found {self.describe(index)}: write [key=value, ...]",
        )

    def value(self) -> str:
        """The value at ``self.i`` (after ``=``), decoded; consumes it."""
        index = self.i
        kind = self.kinds[index]
        if kind not in _VALUE_KINDS or self.texts[index + 1] == "+":
            self.reject_value(index)
        self.i += 1
        return decode_string(self.texts[index]) if kind == STRING else self.texts[index]

    def reject_value(self, index: int) -> NoReturn:
        if self.kinds[index] in _VALUE_KINDS:
            raise self.error_at(
                index + 1, "string concatenation with '+' is not supported: write one quoted string"
            )
        if self.texts[index] == "<":
            raise self.error_at(index, "HTML labels (<...>) are not supported: use a quoted string")
        raise self.error_at(
            index,
            f"'=' without a value (found {self.describe(index)}): write key=value or key=\"...\"",
        )
