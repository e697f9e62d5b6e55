"""Validation rules for pipelines written for other engines (contract.md §10, kilroy's dialect).

They are built-in rules of :mod:`attractor_trio.dot.validate` (listed in ``BUILTIN_RULES``), kept
here so the spec's rules and the compatibility notes stay apart:

* ``unknown_shape`` (WARNING) — a node whose ``shape`` has no handler mapping and no ``type``
  runs as an LLM stage; say so, naming the node (``--strict`` turns it into a refusal).
* ``custom_outcome`` (INFO) — a condition that tests a custom outcome value
  (``outcome=process``): legal, routed like success, worth a note with a did-you-mean when the
  value is close to a status (``sucess``).
* ``attribute_alias`` (INFO) — an attribute written in kilroy's spelling (``llm_prompt``…),
  read as its spec name by the ``attribute_aliases`` transform.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .attributes import ATTRIBUTE_ALIASES, Kind
from .conditions import ConditionSyntaxError, is_custom_outcome, outcome_hint, parse_condition
from .graph import SHAPE_TO_TYPE, Edge, Node
from .transforms import expand_variables

if TYPE_CHECKING:
    from .validate import _Finding, _Index

__all__ = ["check_attribute_alias", "check_custom_outcome", "check_unknown_shape"]


def check_unknown_shape(index: _Index) -> Iterator[_Finding]:
    shapes = ", ".join(f"{shape} ({kind})" for shape, kind in SHAPE_TO_TYPE.items())
    for node in index.graph.nodes.values():
        if not node.type and node.implied_type is None:
            yield (
                node,
                f"node '{node.id}' has shape {node.shape!r}, which has no handler: "
                "it will run as an LLM stage (codergen)",
                f"use shape=box for an LLM stage, another mapped shape ({shapes}), or set type=",
            )


def check_custom_outcome(index: _Index) -> Iterator[_Finding]:
    hints: dict[str, str] = {}  # the same custom outcome is tested on many edges
    for where, key, text, _spec in index.attrs_of_kind(Kind.CONDITION):
        try:
            condition = parse_condition(text)
        except ConditionSyntaxError:
            continue  # condition_syntax reports it
        for clause in condition.clauses:
            if clause.key == "outcome" and is_custom_outcome(clause.literal):
                if clause.literal not in hints:
                    hints[clause.literal] = outcome_hint(clause.literal)
                yield (
                    where,
                    f"{_owner(where)}: {key} tests the custom outcome "
                    f"'{clause.literal}'{hints[clause.literal]}; a stage must report it "
                    "(status file, report_status or sim script), and it counts as success",
                    None,
                )


#: Every alias spelling, whatever its scope: most owners have none of them.
_ALIASES = frozenset(alias for _scope, alias in ATTRIBUTE_ALIASES)


def check_attribute_alias(index: _Index) -> Iterator[_Finding]:
    graph = index.graph
    owners: list[tuple[str, Node | Edge | None, dict[str, str]]] = [("graph", None, graph.attrs)]
    owners += [("node", node, node.attrs) for node in graph.nodes.values()]
    for scope, where, values in owners:
        if _ALIASES.isdisjoint(values):
            continue  # the usual case, decided at C speed
        for (alias_scope, alias), name in ATTRIBUTE_ALIASES.items():
            if alias_scope != scope or alias not in values:
                continue
            if values.get(name) not in (values[alias], expand_variables(values[alias], graph)):
                note = f"'{alias}' is ignored: '{name}' is set too"
            else:
                note = f"'{alias}' (kilroy's spelling) is read as '{name}'"
            yield where, f"{_owner(where)}: {note}", f"write {name}= instead of {alias}="


def _owner(where: object) -> str:
    if isinstance(where, Node):
        return f"node '{where.id}'"
    if isinstance(where, Edge):
        return f"edge {where.from_node} -> {where.to_node}"
    return "graph"
