"""Graph transforms (spec §9.1-9.3): rewrite a parsed :class:`Graph` before validation.

Every transform returns a *new* graph and never mutates its input (S9.1-01; this resolves
AMBIG-22 in favour of the spec): a caller can keep the parsed graph for diagnostics and
serialisation while running the transformed one. Unchanged nodes are shared between input
and output, changed ones are rebuilt with :func:`attrs.evolve`.

Order (see :func:`apply_transforms`): attribute aliases (kilroy's spellings, contract.md §10), then
``$goal`` expansion, then the model stylesheet, then custom transforms in registration order
(S9.3-01).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from ..errors import AttractorError
from .attributes import ATTRIBUTE_ALIASES
from .gcpause import gc_paused
from .graph import Graph, Node
from .stylesheet import StylesheetSyntaxError, parse_stylesheet

__all__ = [
    "GOAL_VARIABLE",
    "AttributeAliasTransform",
    "StylesheetTransform",
    "Transform",
    "VariableExpansionTransform",
    "apply_transforms",
    "builtin_transforms",
    "clear_transforms",
    "expand_variables",
    "register_transform",
    "registered_transforms",
]

GOAL_VARIABLE = "$goal"


@runtime_checkable
class Transform(Protocol):
    """Anything with a ``name`` and ``apply(graph) -> Graph`` that leaves ``graph`` untouched."""

    @property
    def name(self) -> str: ...

    def apply(self, graph: Graph) -> Graph: ...


def expand_variables(text: str, graph: Graph) -> str:
    """Replace every ``$goal`` with the graph goal (``""`` when unset).

    Plain string replacement, not a template engine (S4.5-02): other ``$names`` are left as
    written, and the codergen handler reuses this for a label used as the prompt.
    """
    return text.replace(GOAL_VARIABLE, graph.goal)


def _map_nodes(graph: Graph, rewrite: Callable[[Node], Node]) -> Graph:
    """A graph whose nodes are ``rewrite(node)``; the same graph if nothing changed."""
    nodes = {node_id: rewrite(node) for node_id, node in graph.nodes.items()}
    if all(nodes[key] is graph.nodes[key] for key in nodes):
        return graph
    return graph.evolve(nodes=nodes)


def _resolve_aliases(values: dict[str, str], scope: str) -> dict[str, str] | None:
    """``values`` plus each alias's spec name (when not set itself); ``None`` if none added."""
    added = {
        name: values[alias]
        for (alias_scope, alias), name in ATTRIBUTE_ALIASES.items()
        if alias_scope == scope and alias in values and name not in values
    }
    return {**values, **added} if added else None


@attrs.frozen
class AttributeAliasTransform:
    """Reads kilroy's attribute spellings as the spec's names (contract.md §10): ``llm_prompt``
    becomes ``prompt``, ``max_agent_turns`` ``agent.max_turns``, ``max_tokens``
    ``llm.max_tokens``, graph ``default_max_retry`` ``default_max_retries``.

    The alias stays (validation notes it with an ``info``); an explicit spec name wins.
    Runs first, so ``$goal`` in an ``llm_prompt`` is expanded like any prompt.
    """

    name: str = attrs.field(default="attribute_aliases", init=False)

    def apply(self, graph: Graph) -> Graph:
        def resolve(node: Node) -> Node:
            resolved = _resolve_aliases(node.attrs, "node")
            return node if resolved is None else node.with_attrs(resolved)

        graph_attrs = _resolve_aliases(graph.attrs, "graph")
        if graph_attrs is not None:
            graph = graph.evolve(attrs=graph_attrs)
        return _map_nodes(graph, resolve)


@attrs.frozen
class VariableExpansionTransform:
    """Expands ``$goal`` in every node ``prompt`` (S9.2-01)."""

    name: str = attrs.field(default="variable_expansion", init=False)

    def apply(self, graph: Graph) -> Graph:
        def expand(node: Node) -> Node:
            if GOAL_VARIABLE not in node.prompt:
                return node
            expanded = expand_variables(node.prompt, graph)
            return node.with_attrs({**node.attrs, "prompt": expanded})

        return _map_nodes(graph, expand)


@attrs.frozen
class StylesheetTransform:
    """Applies ``model_stylesheet`` (S9.2-02); explicit node attributes always win (S8.5-02).

    A stylesheet that does not parse leaves the graph unchanged: reporting it, with its
    position, is the ``stylesheet_syntax`` validation rule's job, and a transform that raised
    here would hide every other diagnostic.
    """

    name: str = attrs.field(default="stylesheet", init=False)

    def apply(self, graph: Graph) -> Graph:
        if not graph.model_stylesheet.strip():
            return graph
        try:
            sheet = parse_stylesheet(graph.model_stylesheet)
        except StylesheetSyntaxError:
            return graph

        def style(node: Node) -> Node:
            missing = {k: v for k, v in sheet.resolve(node).items() if k not in node.attrs}
            return node.with_attrs({**node.attrs, **missing}) if missing else node

        return _map_nodes(graph, style)


_REGISTERED: list[Transform] = []


def register_transform(transform: Transform) -> None:
    """Add a process-wide custom transform; they run after the built-ins, in this order."""
    if not isinstance(transform, Transform):
        raise TypeError(f"{transform!r} is not a Transform: it needs a 'name' and apply(graph)")
    _REGISTERED.append(transform)


def registered_transforms() -> tuple[Transform, ...]:
    return tuple(_REGISTERED)


def clear_transforms() -> None:
    """Forget every registered custom transform (tests use this to stay independent)."""
    _REGISTERED.clear()


def builtin_transforms() -> tuple[Transform, ...]:
    """Attribute aliases, then ``$goal`` expansion, then the stylesheet.

    Aliases come first so the spec names they fill in are expanded and styled like any other.
    The last two touch disjoint attributes (``prompt`` vs the ``llm_*`` settings), so the order
    cannot change their result; it is fixed anyway so runs are reproducible, follows the
    order spec §9.2 lists them in, and guarantees custom transforms see both applied.
    """
    return (AttributeAliasTransform(), VariableExpansionTransform(), StylesheetTransform())


def apply_transforms(graph: Graph, transforms: Sequence[Transform] | None = None) -> Graph:
    """Run the built-ins, then ``transforms`` (default: the registered ones) in order.

    Passing ``transforms`` replaces the global registry for this call, so a runner with its
    own transform list is not affected by other code's registrations. A transform that raises
    or returns something other than a :class:`Graph` becomes an :class:`AttractorError` naming
    it, because the user needs to know which extension broke the pipeline.
    """
    custom = registered_transforms() if transforms is None else tuple(transforms)
    with gc_paused():  # new nodes for the whole graph, no cycles (attractor_trio.dot.gcpause)
        for transform in (*builtin_transforms(), *custom):
            graph = _run_one(transform, graph)
    return graph


def _run_one(transform: Transform, graph: Graph) -> Graph:
    name = getattr(transform, "name", type(transform).__name__)
    try:
        result = transform.apply(graph)
    except Exception as exc:
        raise AttractorError(
            f"transform {name!r} failed: {type(exc).__name__}: {exc}; fix or unregister it"
        ) from exc
    if not isinstance(result, Graph):
        raise AttractorError(
            f"transform {name!r} returned {type(result).__name__}, expected a Graph; "
            "apply() must return the (new) graph"
        )
    return result
