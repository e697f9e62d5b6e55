"""Validation and linting (spec §7): every problem found before anything runs.

:func:`validate` returns :class:`~attractor_trio.dot.graph.Diagnostic` objects sorted by
``(line, col, rule)`` so output is deterministic; every one points at what it concerns: the
node or edge, the graph attribute, a position inside ``model_stylesheet``, else the
``digraph`` keyword (only API-built graphs, which have no source, leave line 0).
:func:`validate_or_raise` raises :class:`~attractor_trio.errors.ValidationFailed` when any is
an ERROR: the engine must not run such a graph (S7.1-02).

Spec rules (S7.2-01…13; ERROR unless noted):
``start_node``, ``terminal_node`` (exactly one each), ``reachability`` (an unreachable node is an
orphan; ``retry_target``/``fallback_retry_target``, node and graph level, count as links),
``edge_target_exists`` (both ends; only API-built graphs can break it, the parser creates
implicit nodes), ``start_no_incoming``, ``exit_no_outgoing``, ``condition_syntax`` (edge
``condition`` and node ``manager.stop_condition``), ``stylesheet_syntax``, and the WARNINGs
``type_known``, ``fidelity_valid``, ``retry_target_exists``, ``goal_gate_has_retry``,
``prompt_on_llm_nodes`` (a codergen node with neither ``prompt`` nor an explicit ``label``).

Extra rules:

* ``unknown_attribute`` (WARNING) — a key missing from the catalogue of its scope
  (:mod:`attractor_trio.dot.attributes`), with a did-you-mean. Custom attributes are legal
  (S2.6-18), so this never blocks a run; ``register_attribute`` silences it.
* ``attribute_value`` (ERROR) — a typed attribute whose value does not parse or is out of range
  (durations, integers, booleans, floats, enums), driven by the catalogue.
* ``tool_command_missing`` (ERROR) — a tool node without ``tool_command`` would always fail.
* ``human_gate_choices`` (ERROR) — a ``wait.human`` node without outgoing edges has no choices.
* ``parallel_no_fan_in`` (WARNING) — a branch of a ``parallel`` node reaches a terminal without
  passing a ``parallel.fan_in`` node, so the branches' results are never joined.
* ``conditional_routes`` (WARNING) — a conditional (diamond) node none of whose edges has a
  condition: it can never branch.
* ``duplicate_node`` (ERROR) — an API-built graph whose ``nodes`` key differs from ``node.id``.
* ``unknown_shape`` (WARNING), ``custom_outcome`` and ``attribute_alias`` (INFO) — pipelines
  written for kilroy (contract.md §10), in :mod:`attractor_trio.dot.compat_rules`.

Rules are objects with a ``name`` and ``apply(graph)`` (:class:`LintRule`). Built-ins share one
precomputed adjacency index per :func:`validate` call, so validation is linear in graph size.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from operator import itemgetter
from typing import Final, Protocol, runtime_checkable

import attrs
from attrs import frozen

from ..errors import ValidationFailed
from .attributes import (
    FIDELITY_MODES,
    AttributeSpec,
    Kind,
    Scope,
    catalogue,
    check_value,
    close_matches,
    expected_form,
    misspelling_of,
)
from .compat_rules import check_attribute_alias, check_custom_outcome, check_unknown_shape
from .conditions import ConditionSyntaxError, parse_condition
from .gcpause import gc_paused
from .graph import SHAPE_TO_TYPE, Diagnostic, Edge, Graph, Node, Severity
from .lexer import Positions, raw_offset
from .stylesheet import StylesheetSyntaxError, parse_stylesheet
from .values import AttributeValueError, parse_bool

__all__ = [
    "BUILTIN_RULES",
    "BuiltinRule",
    "LintRule",
    "clear_rules",
    "known_types",
    "register_known_type",
    "register_rule",
    "registered_known_types",
    "registered_rules",
    "unregister_known_type",
    "unregister_rule",
    "validate",
    "validate_or_raise",
]


@runtime_checkable
class LintRule(Protocol):
    """A lint rule (S7.4-01): a unique ``name`` and ``apply(graph) -> list[Diagnostic]``."""

    @property
    def name(self) -> str: ...

    def apply(self, graph: Graph) -> list[Diagnostic]: ...


# --- the shared index and the shape of a finding ----------------------------------------------


@frozen
class _At:
    """A position in the source, for findings about the graph itself (1-based)."""

    line: int
    col: int


_Where = Node | Edge | _At | None
#: What a check yields: where the problem is, the message, and a fix hint (or None).
_Finding = tuple[_Where, str, str | None]
_SCOPES: Final[tuple[Scope, ...]] = ("graph", "node", "edge")


#: Custom attributes by scope (a run's ``Registries.attributes``).
_Catalogue = Mapping[Scope, Mapping[str, AttributeSpec]]
_TypedAttr = tuple[_Where, str, str, AttributeSpec]
_Numbered = tuple[int, _Where, str, str, AttributeSpec]
_FIRST = itemgetter(0)
_OWNER_KEY_VALUE_SPEC = itemgetter(1, 2, 3, 4)
#: The kinds rules check, hence index: free text and Graphviz display attributes (most
#: attributes: labels, prompts) are never looked at by kind, so they are not collected.
_CHECKED: Final = frozenset(Kind) - {Kind.STRING, Kind.DISPLAY}


@frozen
class _Index:
    """Everything rules look up, computed in one pass per validation so no rule is quadratic."""

    graph: Graph
    outgoing: Mapping[str, list[Edge]]
    incoming: Mapping[str, list[Edge]]
    starts: list[Node]
    exits: list[Node]
    #: The attribute catalogues (built-in plus registered) as of this validation.
    specs: Mapping[Scope, Mapping[str, AttributeSpec]]
    #: Present catalogued attributes by checked kind: ``(declaration no., owner, key, value,
    #: spec)``.
    typed: Mapping[Kind, list[_Numbered]]
    #: Node keys grouped by resolved handler type.
    by_type: Mapping[str, list[str]]

    @classmethod
    def build(cls, graph: Graph, attributes: _Catalogue | None = None) -> _Index:
        outgoing: dict[str, list[Edge]] = {key: [] for key in graph.nodes}
        incoming: dict[str, list[Edge]] = {key: [] for key in graph.nodes}
        for edge in graph.edges:
            outgoing.setdefault(edge.from_node, []).append(edge)
            incoming.setdefault(edge.to_node, []).append(edge)
        specs = {scope: catalogue(scope, attributes) for scope in _SCOPES}
        typed: dict[Kind, list[_Numbered]] = {kind: [] for kind in Kind if kind in _CHECKED}
        # Each checked key leads straight to its kind's list: one dict lookup per attribute
        # (hashing a Kind member runs Python code, and there are ~10 attributes per node).
        routes = {
            scope: {
                key: (typed[spec.kind], spec)
                for key, spec in specs[scope].items()
                if spec.kind in _CHECKED
            }
            for scope in _SCOPES
        }
        order = itertools.count()
        for scope, where, values in _scoped_attrs(graph):
            route = routes[scope]
            for key, value in values.items():
                found = route.get(key)
                if found is not None:
                    found[0].append((next(order), where, key, value, found[1]))
        by_type: dict[str, list[str]] = {}
        for key, node in graph.nodes.items():
            by_type.setdefault(node.handler_type, []).append(key)
        starts, exits = graph.start_nodes(), graph.exit_nodes()
        return cls(graph, outgoing, incoming, starts, exits, specs, typed, by_type)

    def attrs_of_kind(self, *kinds: Kind) -> Iterator[_TypedAttr]:
        """``(owner, key, value, spec)`` of the given kinds, in declaration order.

        One sort of the already ordered lists (a C-level merge of runs) instead of a Python
        generator merge: on 10,000 nodes these lists hold ~50,000 attributes.
        """
        lists = [self.typed[kind] for kind in kinds]  # KeyError: a kind no rule may check
        ordered = lists[0] if len(lists) == 1 else sorted(itertools.chain(*lists), key=_FIRST)
        return map(_OWNER_KEY_VALUE_SPEC, ordered)

    def nodes_of_type(self, handler_type: str) -> Iterator[tuple[str, Node]]:
        for key in self.by_type.get(handler_type, ()):
            yield key, self.graph.nodes[key]


@frozen
class BuiltinRule:
    """A built-in rule: a name, a fixed severity and a check over the shared index."""

    name: str
    severity: Severity
    check: Callable[[_Index], Iterator[_Finding]] = attrs.field(repr=False)

    def apply(self, graph: Graph) -> list[Diagnostic]:
        return self.run(_Index.build(graph))

    def run(self, index: _Index) -> list[Diagnostic]:
        return [self._diagnostic(index.graph, *finding) for finding in self.check(index)]

    def _diagnostic(self, graph: Graph, where: _Where, message: str, fix: str | None) -> Diagnostic:
        if isinstance(where, Node):
            return Diagnostic(
                self.name, self.severity, message, node_id=where.id, fix=fix,
                line=where.line, col=where.col,
            )  # fmt: skip
        if isinstance(where, Edge):
            return Diagnostic(
                self.name, self.severity, message, edge=(where.from_node, where.to_node),
                fix=fix, line=where.line, col=where.col,
            )  # fmt: skip
        at = where if isinstance(where, _At) else _At(graph.line, graph.col)
        return Diagnostic(self.name, self.severity, message, fix=fix, line=at.line, col=at.col)


# --- helpers -----------------------------------------------------------------------------------


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = close_matches(word, tuple(candidates))
    return f"did you mean {close[0]!r}?" if close else ""


class _NodeSuggester:
    """Did-you-mean over node ids, for a bounded number of words so huge broken graphs stay fast."""

    def __init__(self, graph: Graph, budget: int = 25) -> None:
        self.graph, self.budget = graph, budget

    def __call__(self, word: str) -> str:
        if self.budget <= 0:
            return ""
        self.budget -= 1
        hint = _did_you_mean(word, self.graph.nodes)
        return f" ({hint})" if hint else ""


def _edge_name(edge: Edge) -> str:
    return f"{edge.from_node} -> {edge.to_node}"


def _owner(where: _Where) -> str:
    if isinstance(where, Node):
        return f"node '{where.id}'"
    if isinstance(where, Edge):
        return f"edge {_edge_name(where)}"
    return "graph"


def _scoped_attrs(graph: Graph) -> Iterator[tuple[Scope, _Where, Mapping[str, str]]]:
    for key, value in graph.attrs.items():
        yield "graph", _graph_attr_at(graph, key), {key: value}
    for node in graph.nodes.values():
        yield "node", node, node.attrs
    for edge in graph.edges:
        yield "edge", edge, edge.attrs


def _graph_attr_at(graph: Graph, key: str, inner: tuple[int, int] | None = None) -> _At | None:
    """Where graph attribute ``key`` is written (``None``: not in the source, so the finding
    points at the ``digraph`` keyword). ``inner`` is a 1-based ``(line, col)`` inside the
    attribute's decoded value; it is mapped through the quotes and escapes of the source."""
    offsets = graph.attr_offsets.get(key)
    if offsets is None:
        return None
    key_offset, value_offset = offsets
    if inner is None:
        return _At(*_positions(graph).line_col(key_offset))
    line, col = inner
    lines = graph.attrs.get(key, "").split("\n")
    decoded = sum(len(text) + 1 for text in lines[: line - 1]) + col - 1
    raw = graph.source[value_offset:]
    return _At(*_positions(graph).line_col(value_offset + raw_offset(raw, decoded)))


_POSITIONS: dict[int, tuple[str, Positions]] = {}


def _positions(graph: Graph) -> Positions:
    """Line starts of ``graph.source``, built once per source, only when a graph-level
    finding needs them."""
    cached = _POSITIONS.get(id(graph.source))
    if cached is None or cached[0] is not graph.source:
        _POSITIONS.clear()
        cached = _POSITIONS[id(graph.source)] = (graph.source, Positions(graph.source))
    return cached[1]


# --- spec rules S7.2-01…13 ---------------------------------------------------------------------


def _exactly_one(found: list[Node], graph: Graph, what: str, shape: str) -> Iterator[_Finding]:
    if not found:
        example = f"{what} [shape={shape}]"
        hint = f"add one: {example} (or a node with id {what}, any shape)"
        yield None, f"pipeline has no {what} node", hint + _near_miss(graph, shape)
    names = ", ".join(node.id for node in found)
    for extra in found[1:]:
        message = f"pipeline has {len(found)} {what} nodes ({names}); exactly one is allowed"
        yield extra, message, f"keep a single node with shape={shape}"


def _near_miss(graph: Graph, shape: str) -> str:
    """Point at a node that almost qualifies: shapes are case-sensitive."""
    for node in graph.nodes.values():
        if node.shape.lower() == shape.lower():
            return f" (node '{node.id}' has shape {node.shape!r}; shapes are case-sensitive)"
    return ""


def _check_start_node(index: _Index) -> Iterator[_Finding]:
    return _exactly_one(index.starts, index.graph, "start", "Mdiamond")


def _check_terminal_node(index: _Index) -> Iterator[_Finding]:
    return _exactly_one(index.exits, index.graph, "exit", "Msquare")


def _check_reachability(index: _Index) -> Iterator[_Finding]:
    if not index.starts:
        return  # start_node reports this; every node would otherwise be called an orphan
    graph = index.graph
    seen = {node.id for node in index.starts}
    queue = deque(seen)
    graph_targets = [t for t in (graph.retry_target, graph.fallback_retry_target) if t]
    exit_ids = {node.id for node in index.exits}
    nodes, outgoing = graph.nodes, index.outgoing

    def visit(target: str | None) -> None:
        if target and target not in seen and target in nodes:
            seen.add(target)
            queue.append(target)

    while queue:
        current = queue.popleft()
        for edge in outgoing.get(current, ()):
            visit(edge.to_node)
        node = nodes.get(current)  # None only for a start whose key is not its id
        if node is not None:
            visit(node.attrs.get("retry_target"))
            visit(node.attrs.get("fallback_retry_target"))
        if current in exit_ids:
            for target in graph_targets:  # goal-gate retries jump from the exit
                visit(target)
    for key, node in graph.nodes.items():
        if key not in seen:
            yield (
                node,
                f"node '{node.id}' is unreachable from the start node (orphan)",
                f"add an edge to '{node.id}' from a reachable node, or delete it",
            )


def _check_edge_target_exists(index: _Index) -> Iterator[_Finding]:
    suggest = _NodeSuggester(index.graph)
    nodes = index.graph.nodes
    for edge in index.graph.edges:
        if edge.from_node in nodes and edge.to_node in nodes:
            continue
        for end, node_id in (("source", edge.from_node), ("target", edge.to_node)):
            if node_id not in index.graph.nodes:
                yield (
                    edge,
                    f"edge {_edge_name(edge)}: {end} node '{node_id}' does not exist"
                    + suggest(node_id),
                    f"add node '{node_id}' to graph.nodes or correct the edge",
                )


def _check_start_no_incoming(index: _Index) -> Iterator[_Finding]:
    for start in index.starts:
        for edge in index.incoming.get(start.id, ()):
            yield (
                edge,
                f"the start node '{start.id}' must have no incoming edges, "
                f"but {_edge_name(edge)} enters it",
                "point the edge at the first stage after the start node",
            )


def _check_exit_no_outgoing(index: _Index) -> Iterator[_Finding]:
    for exit_node in index.exits:
        for edge in index.outgoing.get(exit_node.id, ()):
            yield (
                edge,
                f"the exit node '{exit_node.id}' must have no outgoing edges, "
                f"but {_edge_name(edge)} leaves it",
                "remove the edge; to loop back, route through a conditional node before the exit",
            )


def _check_condition_syntax(index: _Index) -> Iterator[_Finding]:
    for where, key, text, _spec in index.attrs_of_kind(Kind.CONDITION):
        if not text.strip():
            continue
        try:
            parse_condition(text)
        except ConditionSyntaxError as exc:
            yield (
                where,
                f"{_owner(where)}: invalid {key} {text!r} at column {exc.col}: {exc.message}",
                "write clauses key=value or key!=value joined by &&, "
                "e.g. outcome=success && context.tests_passed=true",
            )


def _check_stylesheet_syntax(index: _Index) -> Iterator[_Finding]:
    text = index.graph.model_stylesheet
    if not text.strip():
        return
    try:
        parse_stylesheet(text)
    except StylesheetSyntaxError as exc:
        yield (
            _graph_attr_at(index.graph, "model_stylesheet", (exc.line, exc.col)),
            f"model_stylesheet line {exc.line}, column {exc.col}: {exc.message}",
            'rules look like: box { llm_model: "claude-opus-4-6"; reasoning_effort: high; } '
            "with selectors *, a shape, #node_id or .class",
        )


_EXTRA_TYPES: set[str] = set()
#: The custom handler types of the :func:`validate` call in progress, when it names them (a
#: run validates against its own handlers, not the process-wide registrations).
_CALL_TYPES: ContextVar[frozenset[str] | None] = ContextVar("validate_handler_types", default=None)


def known_types() -> frozenset[str]:
    """Handler types ``type_known`` accepts: the built-in shape types plus registered ones
    (or, during a :func:`validate` call given ``handler_types``, those)."""
    extra = _CALL_TYPES.get()
    return frozenset(SHAPE_TO_TYPE.values()) | (_EXTRA_TYPES if extra is None else extra)


def register_known_type(name: str) -> None:
    """Called when a handler type is registered, so ``type=`` naming it does not warn.

    Process-wide: it seeds the known types of ``Registries.default()`` and is what
    :func:`validate` without ``handler_types`` accepts."""
    _EXTRA_TYPES.add(name)


def registered_known_types() -> frozenset[str]:
    """The process-wide registered handler types, as of now."""
    return frozenset(_EXTRA_TYPES)


def unregister_known_type(name: str) -> None:
    _EXTRA_TYPES.discard(name)


def _check_type_known(index: _Index) -> Iterator[_Finding]:
    known = sorted(known_types())
    hints: dict[str, str] = {}  # a node default repeats one unknown type on every node
    for node in index.graph.nodes.values():
        if node.type and node.type not in known:
            if node.type not in hints:
                hints[node.type] = _did_you_mean(node.type, known)
            yield (
                node,
                f"node '{node.id}' has unknown type {node.type!r}; no handler is registered "
                "for it (a run refuses it unless one is registered before the run)",
                hints[node.type] or f"register a handler for it or use one of {', '.join(known)}",
            )


def _check_fidelity_valid(index: _Index) -> Iterator[_Finding]:
    hints: dict[str, str] = {}  # a node default repeats one value on every node
    for where, key, value, _spec in index.attrs_of_kind(Kind.FIDELITY):
        if value and value not in FIDELITY_MODES:
            if value not in hints:
                hints[value] = _did_you_mean(value, FIDELITY_MODES)
            hint = hints[value]
            yield (
                where,
                f"{_owner(where)}: {key} {value!r} is not a fidelity mode",
                (hint + " " if hint else "") + "use one of " + ", ".join(FIDELITY_MODES),
            )


def _check_retry_target_exists(index: _Index) -> Iterator[_Finding]:
    suggest = _NodeSuggester(index.graph)
    for where, key, value, _spec in index.attrs_of_kind(Kind.NODE_REF):
        if value and value not in index.graph.nodes:
            yield (
                where,
                f"{_owner(where)}: {key} '{value}' is not a node{suggest(value)}",
                f"set {key} to the id of an existing node",
            )


def _check_goal_gate_has_retry(index: _Index) -> Iterator[_Finding]:
    graph = index.graph
    graph_level = graph.retry_target or graph.fallback_retry_target
    for node in graph.nodes.values():
        raw = node.attrs.get("goal_gate")  # absent on almost every node: test it first
        if raw is None or graph_level or node.retry_target or node.fallback_retry_target:
            continue
        if _is_true(raw):
            yield (
                node,
                f"goal gate '{node.id}' has no retry_target or fallback_retry_target "
                "(node or graph level): if it is unsatisfied at the exit, the run fails",
                f"add retry_target=\"<node to rerun>\" to '{node.id}' or to the graph",
            )


def _is_true(raw: str) -> bool:
    try:
        return parse_bool(raw)
    except AttributeValueError:
        return False  # attribute_value reports the malformed value


def _check_prompt_on_llm_nodes(index: _Index) -> Iterator[_Finding]:
    for _key, node in index.nodes_of_type("codergen"):
        if not node.prompt.strip() and not node.attrs.get("label", "").strip():
            yield (
                node,
                f"codergen node '{node.id}' has neither a prompt nor a label; "
                "the model would only see the node id",
                f"add prompt=\"...\" to '{node.id}'",
            )


# --- extra rules -------------------------------------------------------------------------------


def _check_unknown_attribute(index: _Index) -> Iterator[_Finding]:
    # Node defaults repeat one key on every node: the edit-distance search over the catalogue
    # runs once per distinct (scope, key), not once per occurrence (seconds on 10,000 nodes).
    advice: dict[tuple[Scope, str], tuple[str, str]] = {}
    for scope, where, values in _scoped_attrs(index.graph):
        specs = index.specs[scope]
        if values.keys() <= specs.keys():
            continue  # the usual case, decided at C speed
        for key in values:
            if key not in specs:
                if (scope, key) not in advice:
                    typo = misspelling_of(key, specs)
                    hint = f" (did you mean '{typo}'?)" if typo else ""
                    advice[scope, key] = hint, _unknown_attribute_fix(index, scope, key)
                hint, fix = advice[scope, key]
                yield where, f"{_owner(where)}: unknown attribute '{key}'{hint}", fix


def _unknown_attribute_fix(index: _Index, scope: Scope, key: str) -> str:
    elsewhere = [s for s in _SCOPES if s != scope and key in index.specs[s]]
    if elsewhere:
        article = "an" if elsewhere[0] == "edge" else "a"
        where = " and ".join(elsewhere)
        return f"'{key}' is {article} {where} attribute; it has no effect on a {scope}"
    return _did_you_mean(key, list(index.specs[scope])) or (
        "custom attributes are allowed; declare it with "
        "attractor_trio.dot.attributes.register_attribute (or a run's "
        "Registries(attributes=...)) to silence this warning"
    )


# Kinds other rules own: conditions, fidelity (a WARNING per spec) and node references.
_VALUE_KINDS: Final = (
    Kind.INTEGER, Kind.FLOAT, Kind.BOOLEAN, Kind.DURATION, Kind.ENUM, Kind.ENUM_LIST,
)  # fmt: skip


def _check_attribute_value(index: _Index) -> Iterator[_Finding]:
    problems: dict[tuple[int, str], str | None] = {}  # node defaults repeat values
    for where, key, value, spec in index.attrs_of_kind(*_VALUE_KINDS):
        memo = (id(spec), value)
        if memo not in problems:
            problems[memo] = check_value(spec, value)
        problem = problems[memo]
        if problem is not None:
            yield (
                where,
                f"{_owner(where)}: {key}={value!r} is invalid: {problem}",
                f"{key} ({spec.description}) takes {expected_form(spec)}",
            )


def _check_tool_command_missing(index: _Index) -> Iterator[_Finding]:
    for _key, node in index.nodes_of_type("tool"):
        if not node.tool_command.strip():
            yield (
                node,
                f"tool node '{node.id}' has no tool_command, so it would always fail",
                f"add tool_command=\"<shell command>\" to '{node.id}'",
            )


def _check_human_gate_choices(index: _Index) -> Iterator[_Finding]:
    for key, node in index.nodes_of_type("wait.human"):
        if not index.outgoing.get(key):
            yield (
                node,
                f"human gate '{node.id}' has no outgoing edges, so there is nothing to choose",
                f'add one edge per choice, e.g. {node.id} -> next [label="[A] Approve"]',
            )


def _check_parallel_no_fan_in(index: _Index) -> Iterator[_Finding]:
    if not index.by_type.get("parallel"):
        return  # the walk below costs a pass over the whole graph
    escapes = _reaches_exit_without_fan_in(index)
    for key, node in index.nodes_of_type("parallel"):
        branch = next((e.to_node for e in index.outgoing.get(key, ()) if e.to_node in escapes), "")
        if branch:
            yield (
                node,
                f"parallel node '{node.id}': branch '{branch}' reaches the exit "
                f"'{escapes[branch]}' without passing a parallel.fan_in node, "
                "so the branch results are never joined",
                "route every branch into a fan-in node (shape=tripleoctagon)",
            )


def _reaches_exit_without_fan_in(index: _Index) -> dict[str, str]:
    """Nodes that reach an exit without crossing a fan-in, mapped to that exit.

    One reverse BFS from the exits that never enters a fan-in node: linear in the graph,
    however many parallel nodes there are.
    """
    fan_ins = set(index.by_type.get("parallel.fan_in", ()))
    found = {node.id: node.id for node in index.exits}
    queue = deque(found)
    while queue:
        current = queue.popleft()
        for edge in index.incoming.get(current, ()):
            source = edge.from_node
            if source in index.graph.nodes and source not in found and source not in fan_ins:
                found[source] = found[current]
                queue.append(source)
    return found


def _check_conditional_routes(index: _Index) -> Iterator[_Finding]:
    for key, node in index.nodes_of_type("conditional"):
        if not any(edge.condition.strip() for edge in index.outgoing.get(key, ())):
            yield (
                node,
                f"conditional node '{node.id}' has no outgoing edge with a condition, "
                "so it never branches",
                'add edges with condition="outcome=success" and condition="outcome!=success"',
            )


def _check_duplicate_node(index: _Index) -> Iterator[_Finding]:
    for key, node in index.graph.nodes.items():
        if key != node.id:
            yield (
                node,
                f"node stored under key '{key}' has id '{node.id}'; keys must equal node ids",
                "build the mapping as {node.id: node for node in nodes}",
            )


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO

#: Built-in rules in run order: the 13 spec rules (S7.2), then the extras.
BUILTIN_RULES: Final[tuple[BuiltinRule, ...]] = (
    BuiltinRule("start_node", _E, _check_start_node),
    BuiltinRule("terminal_node", _E, _check_terminal_node),
    BuiltinRule("reachability", _E, _check_reachability),
    BuiltinRule("edge_target_exists", _E, _check_edge_target_exists),
    BuiltinRule("start_no_incoming", _E, _check_start_no_incoming),
    BuiltinRule("exit_no_outgoing", _E, _check_exit_no_outgoing),
    BuiltinRule("condition_syntax", _E, _check_condition_syntax),
    BuiltinRule("stylesheet_syntax", _E, _check_stylesheet_syntax),
    BuiltinRule("type_known", _W, _check_type_known),
    BuiltinRule("fidelity_valid", _W, _check_fidelity_valid),
    BuiltinRule("retry_target_exists", _W, _check_retry_target_exists),
    BuiltinRule("goal_gate_has_retry", _W, _check_goal_gate_has_retry),
    BuiltinRule("prompt_on_llm_nodes", _W, _check_prompt_on_llm_nodes),
    BuiltinRule("unknown_attribute", _W, _check_unknown_attribute),
    BuiltinRule("attribute_value", _E, _check_attribute_value),
    BuiltinRule("tool_command_missing", _E, _check_tool_command_missing),
    BuiltinRule("human_gate_choices", _E, _check_human_gate_choices),
    BuiltinRule("parallel_no_fan_in", _W, _check_parallel_no_fan_in),
    BuiltinRule("conditional_routes", _W, _check_conditional_routes),
    BuiltinRule("duplicate_node", _E, _check_duplicate_node),
    BuiltinRule("unknown_shape", _W, check_unknown_shape),
    BuiltinRule("custom_outcome", _I, check_custom_outcome),
    BuiltinRule("attribute_alias", _I, check_attribute_alias),
)


# --- registry and entry points -----------------------------------------------------------------

_REGISTERED: list[LintRule] = []


def register_rule(rule: LintRule) -> None:
    """Add a process-wide custom rule; registered rules run after the built-ins, in order."""
    if not isinstance(rule, LintRule) or not isinstance(rule.name, str):
        raise TypeError(f"{rule!r} is not a LintRule: it needs a 'name' and apply(graph)")
    taken = {r.name for r in (*BUILTIN_RULES, *_REGISTERED)}
    if rule.name in taken:
        raise ValueError(f"a lint rule named {rule.name!r} already exists; pick another name")
    _REGISTERED.append(rule)


def unregister_rule(name: str) -> None:
    """Remove the registered rule called ``name``; an unknown name is a no-op."""
    _REGISTERED[:] = [rule for rule in _REGISTERED if rule.name != name]


def clear_rules() -> None:
    """Forget every registered custom rule (tests use this to stay independent)."""
    _REGISTERED.clear()


def registered_rules() -> tuple[LintRule, ...]:
    return tuple(_REGISTERED)


def validate(
    graph: Graph,
    extra_rules: Sequence[LintRule] | None = None,
    *,
    rules: Sequence[LintRule] | None = None,
    handler_types: Iterable[str] | None = None,
    attributes: _Catalogue | None = None,
) -> list[Diagnostic]:
    """All diagnostics: built-ins, then registered rules, then ``extra_rules`` (S7.3-01).

    ``rules`` replaces the registered rules, ``handler_types`` the registered handler types
    and ``attributes`` the registered custom attributes for this call (a run's own
    registries); ``None`` means the process-wide ones. The catalogue is resolved once here,
    not per attribute.
    The result is sorted by ``(line, col, rule)`` (stable), so the same graph always yields
    the same list in the same order. The collector is paused meanwhile: the index and the
    findings are many objects and no cycles (:mod:`attractor_trio.dot.gcpause`).
    """
    custom = (*(_REGISTERED if rules is None else rules), *(extra_rules or ()))
    types = None if handler_types is None else frozenset(handler_types)
    token = _CALL_TYPES.set(types)
    try:
        with gc_paused():
            return _validate(graph, custom, attributes)
    finally:
        _CALL_TYPES.reset(token)


def _validate(
    graph: Graph, custom: Sequence[LintRule], attributes: _Catalogue | None
) -> list[Diagnostic]:
    """:func:`validate`'s work, in its own frame so that the index is freed before the
    collector resumes (its first pass would otherwise walk the whole index)."""
    index = _Index.build(graph, attributes)
    found: list[Diagnostic] = []
    for builtin in BUILTIN_RULES:
        found += builtin.run(index)
    for rule in custom:
        found += _run_custom(rule, index)
    return sorted(found, key=lambda d: (d.line, d.col, d.rule))


def validate_or_raise(
    graph: Graph,
    extra_rules: Sequence[LintRule] | None = None,
    *,
    rules: Sequence[LintRule] | None = None,
    handler_types: Iterable[str] | None = None,
    attributes: _Catalogue | None = None,
) -> list[Diagnostic]:
    """Like :func:`validate`, but raise :class:`ValidationFailed` if any ERROR (S7.3-02)."""
    diagnostics = validate(
        graph, extra_rules, rules=rules, handler_types=handler_types, attributes=attributes
    )
    if any(d.severity is Severity.ERROR for d in diagnostics):
        raise ValidationFailed(diagnostics)
    return diagnostics


def _run_custom(rule: LintRule, index: _Index) -> list[Diagnostic]:
    """Run a user rule; a crash becomes an ERROR naming the rule rather than a traceback."""
    name = getattr(rule, "name", type(rule).__name__)
    try:
        result = list(rule.apply(index.graph))
    except Exception as exc:
        return [
            Diagnostic(
                name,
                Severity.ERROR,
                f"lint rule {name!r} crashed: {type(exc).__name__}: {exc}",
                fix="fix the rule or unregister it (attractor_trio.dot.validate.unregister_rule)",
            )
        ]
    bad = [d for d in result if not isinstance(d, Diagnostic)]
    if bad:
        return [
            Diagnostic(
                name,
                Severity.ERROR,
                f"lint rule {name!r} returned {type(bad[0]).__name__}, expected Diagnostic",
                fix="apply(graph) must return a list of attractor_trio.Diagnostic",
            )
        ]
    return [_locate(d, index) for d in result]


def _locate(diagnostic: Diagnostic, index: _Index) -> Diagnostic:
    """Give a positionless custom diagnostic the position of the node or edge it names, else
    the ``digraph`` keyword's."""
    if diagnostic.line:
        return diagnostic
    if diagnostic.node_id is not None and diagnostic.node_id in index.graph.nodes:
        node = index.graph.nodes[diagnostic.node_id]
        return attrs.evolve(diagnostic, line=node.line, col=node.col)
    if diagnostic.edge is not None:
        source, target = diagnostic.edge
        for edge in index.outgoing.get(source, ()):
            if edge.to_node == target:
                return attrs.evolve(diagnostic, line=edge.line, col=edge.col)
    return attrs.evolve(diagnostic, line=index.graph.line, col=index.graph.col)
