"""The catalogue of attributes the engine understands, as data (spec Appendix A, S2.6-18).

Validation is table-driven from here: ``unknown_attribute`` warns about keys absent from the
catalogue of their scope (graph, node or edge) with a did-you-mean, and ``attribute_value``
checks every typed value against its :class:`AttributeSpec` before anything runs, so a typo
such as ``timeout="15 minutes"`` is reported at its declaration instead of at minute 14.

Custom attributes stay legal (S2.6-18): an unknown key is only ever a warning. Code that adds
handlers reading their own attributes can :func:`register_attribute` them to silence it.

Graphviz display attributes (``color``, ``rankdir``, …) are catalogued as :attr:`Kind.DISPLAY`
in every scope: they only affect rendering, so they are known but never checked.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from attrs import frozen

from .values import AttributeValueError, parse_bool, parse_duration, parse_float, parse_int

__all__ = [
    "ATTRIBUTE_ALIASES",
    "EDGE_ATTRIBUTES",
    "FIDELITY_MODES",
    "GRAPH_ATTRIBUTES",
    "NODE_ATTRIBUTES",
    "AttributeSpec",
    "Kind",
    "Scope",
    "builtin_catalogue",
    "catalogue",
    "check_custom_attributes",
    "check_value",
    "close_matches",
    "expected_form",
    "register_attribute",
    "registered_attributes",
    "unregister_attribute",
]

Scope = Literal["graph", "node", "edge"]

#: Context fidelity modes (spec S5.4-01).
FIDELITY_MODES: Final = (
    "full",
    "truncate",
    "compact",
    "summary:low",
    "summary:medium",
    "summary:high",
)


class Kind(enum.Enum):
    """How a value is interpreted; decides which rule checks it."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DURATION = "duration"
    ENUM = "enum"
    #: Comma-separated items, each one of ``choices`` (``manager.actions``).
    ENUM_LIST = "enum_list"
    #: A condition expression (spec §10), checked by ``condition_syntax`` with its column.
    CONDITION = "condition"
    #: One of :data:`FIDELITY_MODES`, checked by ``fidelity_valid`` (a WARNING per spec S7.2-10).
    FIDELITY = "fidelity"
    #: A node id, checked by ``retry_target_exists``.
    NODE_REF = "node_ref"
    #: Graphviz rendering only; the engine ignores it.
    DISPLAY = "display"


@frozen
class AttributeSpec:
    """What an attribute means and which values it accepts (bounds are inclusive unless noted)."""

    kind: Kind
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    #: ``minimum`` itself is not allowed (``quorum_fraction`` > 0, durations > 0).
    exclusive_minimum: bool = False


def _s(description: str) -> AttributeSpec:
    return AttributeSpec(Kind.STRING, description)


def _int(description: str, minimum: int | None = None) -> AttributeSpec:
    return AttributeSpec(Kind.INTEGER, description, minimum=minimum)


def _bool(description: str) -> AttributeSpec:
    return AttributeSpec(Kind.BOOLEAN, description)


def _duration(description: str) -> AttributeSpec:
    # A zero duration would expire immediately; "no limit" is spelled by omitting the attribute.
    return AttributeSpec(Kind.DURATION, description, minimum=0, exclusive_minimum=True)


def _enum(description: str, *choices: str) -> AttributeSpec:
    return AttributeSpec(Kind.ENUM, description, choices=choices)


def _ref(description: str) -> AttributeSpec:
    return AttributeSpec(Kind.NODE_REF, description)


_RETRY_POLICIES = ("none", "standard", "aggressive", "linear", "patient")

_DISPLAY_NAMES = (
    "rankdir", "color", "style", "fillcolor", "fontname", "fontsize", "width", "height",
    "penwidth", "xlabel", "tooltip", "comment", "splines", "nodesep", "ranksep", "bgcolor",
    "fontcolor", "arrowhead", "arrowtail", "arrowsize", "dir", "constraint", "labelloc",
    "labeljust", "margin", "concentrate", "compound", "newrank", "ordering", "fixedsize",
    "peripheries", "headlabel", "taillabel", "size", "ratio", "pad", "dpi", "rank", "group",
    "URL", "href", "target",
)  # fmt: skip
_DISPLAY: Final[dict[str, AttributeSpec]] = {
    name: AttributeSpec(Kind.DISPLAY, "Graphviz rendering attribute; ignored by the engine")
    for name in _DISPLAY_NAMES
}

GRAPH_ATTRIBUTES: Final[Mapping[str, AttributeSpec]] = {
    "goal": _s("pipeline goal; replaces $goal in prompts, mirrored as context graph.goal"),
    "label": _s("display name of the pipeline"),
    "model_stylesheet": _s("CSS-like rules choosing llm_model/llm_provider/reasoning_effort"),
    "default_max_retries": _int("retries for nodes without max_retries", minimum=0),
    "default_max_retry": _int("kilroy alias of default_max_retries", minimum=0),
    "default_fidelity": AttributeSpec(Kind.FIDELITY, "fidelity for nodes without one"),
    "default_retry_policy": _enum("backoff preset for nodes without one", *_RETRY_POLICIES),
    "retry_target": _ref("node to jump to when the exit is reached with unsatisfied goal gates"),
    "fallback_retry_target": _ref("secondary jump target when retry_target is unusable"),
    "stack.child_dotfile": _s("child pipeline DOT file for the manager loop"),
    "stack.child_workdir": _s("working directory of the child pipeline"),
    "tool_hooks.pre": _s("shell hook run before every agent tool call"),
    "tool_hooks.post": _s("shell hook run after every agent tool call"),
    "loop_restart_signature_limit": _int(
        "repeats of one failure signature before the cycle breaker trips (0 disables)", 0
    ),
    "max_node_visits": _int("visits allowed per node (unset: unbounded)", minimum=1),
    "max_restarts": _int("loop restarts allowed", minimum=0),
    **_DISPLAY,
}

NODE_ATTRIBUTES: Final[Mapping[str, AttributeSpec]] = {
    "label": _s("display name; the prompt when prompt is empty"),
    "shape": _s("Graphviz shape; selects the handler type unless type is set"),
    "type": _s("explicit handler type; wins over the shape"),
    "prompt": _s("instruction for the LLM stage; $goal is expanded"),
    "max_retries": _int("additional attempts after the first", minimum=0),
    "goal_gate": _bool("the node must succeed before the run may exit"),
    "retry_target": _ref("node to jump to when this node fails"),
    "fallback_retry_target": _ref("node to jump to when retry_target is unusable"),
    "fidelity": AttributeSpec(Kind.FIDELITY, "context fidelity of this node's LLM session"),
    "thread_id": _s("LLM session thread key under full fidelity"),
    "class": _s("comma-separated stylesheet classes"),
    "timeout": _duration("bound on each attempt"),
    "llm_model": _s("provider-native model id"),
    "llm_provider": _s("configured provider name"),
    "reasoning_effort": _enum("reasoning effort", "low", "medium", "high"),
    "auto_status": _bool("synthesize success when the handler writes no status"),
    "allow_partial": _bool("accept partial_success when retries are exhausted"),
    "retry_policy": _enum("backoff preset", *_RETRY_POLICIES),
    "codergen_mode": _enum("how API providers run the stage", "agent_loop", "one_shot"),
    "human.default_choice": _s("choice (target id or key) used when the human gate times out"),
    "human.timeout": _duration("how long a human gate waits for an answer"),
    "join_policy": _enum("parallel join", "wait_all", "first_success", "k_of_n", "quorum"),
    "error_policy": _enum("parallel branch failure handling", "continue", "fail_fast", "ignore"),
    "max_parallel": _int("branches running at once", minimum=1),
    "k": _int("successes needed by join_policy=k_of_n", minimum=1),
    "quorum_fraction": AttributeSpec(
        Kind.FLOAT,
        "fraction of branches that must succeed for join_policy=quorum",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    "branch_timeout": _duration("bound on each parallel branch"),
    "merge": _enum("how a fan-in merges git-workspace branches (contract.md §10)", "all", "none"),
    "tool_command": _s("shell command of a tool stage"),
    "executor.resources": _s(
        'Ray resources an attempt needs, JSON (e.g. {"GPU": 1}); --executor ray (contract.md §10)'
    ),
    "manager.poll_interval": _duration("manager loop cycle length"),
    "manager.max_cycles": _int("manager loop cycles before failing", minimum=1),
    "manager.stop_condition": AttributeSpec(Kind.CONDITION, "ends the manager loop when true"),
    "manager.actions": AttributeSpec(
        Kind.ENUM_LIST, "manager loop actions per cycle", choices=("observe", "steer", "wait")
    ),
    "stack.child_autostart": _bool("start the child pipeline automatically"),
    "agent.max_turns": _int("model turns an agent_loop stage may take (0 = unlimited)", 0),
    "agent.max_tool_rounds": _int("tool rounds per agent_loop input", 0),
    "llm.max_tokens": _int("output token cap of each model call", minimum=1),
    "llm_prompt": _s("kilroy alias of prompt"),
    "max_agent_turns": _int("kilroy alias of agent.max_turns", 0),
    "max_tokens": _int("kilroy alias of llm.max_tokens", minimum=1),
    "stack.child_dotfile": _s("child pipeline DOT file (overrides the graph attribute)"),
    "stack.child_workdir": _s("child run working directory (overrides the graph attribute)"),
    "stack.child_logs_root": _s("logs root of an existing child run to observe"),
    "tool_hooks.pre": _s("shell hook run before every agent tool call"),
    "tool_hooks.post": _s("shell hook run after every agent tool call"),
    **_DISPLAY,
}

EDGE_ATTRIBUTES: Final[Mapping[str, AttributeSpec]] = {
    "label": _s("caption and preferred-label routing key"),
    "condition": AttributeSpec(Kind.CONDITION, "guard expression (spec §10)"),
    "weight": _int("priority among equally eligible edges"),
    "fidelity": AttributeSpec(Kind.FIDELITY, "fidelity override for the target node"),
    "thread_id": _s("thread override for the target node"),
    "loop_restart": _bool("restart the run with a fresh log directory"),
    **_DISPLAY,
}

#: Kilroy's spellings, read as the spec's names by the ``attribute_aliases`` transform; the
#: ``attribute_alias`` validation rule notes each use (an ``info``). contract.md §10.
ATTRIBUTE_ALIASES: Final[Mapping[tuple[Scope, str], str]] = {
    ("node", "llm_prompt"): "prompt",
    ("node", "max_agent_turns"): "agent.max_turns",
    ("node", "max_tokens"): "llm.max_tokens",
    ("graph", "default_max_retry"): "default_max_retries",
}

_BUILTIN: Final[dict[str, Mapping[str, AttributeSpec]]] = {
    "graph": GRAPH_ATTRIBUTES,
    "node": NODE_ATTRIBUTES,
    "edge": EDGE_ATTRIBUTES,
}
_REGISTERED: dict[str, dict[str, AttributeSpec]] = {"graph": {}, "node": {}, "edge": {}}


def register_attribute(scope: Scope, name: str, spec: AttributeSpec) -> None:
    """Declare a custom attribute (e.g. one a custom handler reads) so it is known and checked."""
    if name in _BUILTIN[scope]:
        raise ValueError(f"{scope} attribute {name!r} is built in and cannot be redefined")
    _REGISTERED[scope][name] = spec


def unregister_attribute(scope: Scope, name: str) -> None:
    """Forget a custom attribute; forgetting an unknown one is a no-op."""
    _REGISTERED[scope].pop(name, None)


def registered_attributes() -> dict[Scope, dict[str, AttributeSpec]]:
    """A snapshot of the process-wide custom attributes by scope (the seed of a run's
    ``Registries.attributes``); later registrations do not change it."""
    return {"graph": dict(_REGISTERED["graph"]), "node": dict(_REGISTERED["node"]),
            "edge": dict(_REGISTERED["edge"])}  # fmt: skip


def check_custom_attributes(custom: Mapping[Scope, Mapping[str, AttributeSpec]]) -> None:
    """Refuse a custom catalogue that names an unknown scope or redefines a built-in, as
    :func:`register_attribute` does (a run's catalogue obeys the same rule)."""
    for scope, specs in custom.items():
        if scope not in _BUILTIN:
            raise ValueError(f"unknown attribute scope {scope!r}; use graph, node or edge")
        clash = sorted(name for name in specs if name in _BUILTIN[scope])
        if clash:
            raise ValueError(f"{scope} attribute {clash[0]!r} is built in and cannot be redefined")


def builtin_catalogue(scope: Scope) -> Mapping[str, AttributeSpec]:
    return _BUILTIN[scope]


def catalogue(
    scope: Scope, custom: Mapping[Scope, Mapping[str, AttributeSpec]] | None = None
) -> Mapping[str, AttributeSpec]:
    """Built-in plus custom attributes of ``scope`` (a fresh dict: safe to keep). ``custom``
    is a run's own catalogue; ``None`` means the process-wide registrations."""
    extra = _REGISTERED[scope] if custom is None else custom.get(scope, {})
    return {**_BUILTIN[scope], **extra}


def misspelling_of(word: str, candidates: Iterable[str]) -> str | None:
    """The known name ``word`` is a typo of: within edit distance 2 (a swap of two neighbouring
    letters counts 1), the closest first; ``None`` for short words, where two edits would make
    almost anything "close"."""
    if len(word) < 4:
        return None
    scored = sorted(
        (_edit_distance(word, c), c) for c in candidates if abs(len(c) - len(word)) <= 2
    )
    return scored[0][1] if scored and 0 < scored[0][0] <= 2 else None


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, swaps."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


def close_matches(word: str, candidates: list[str] | tuple[str, ...]) -> list[str]:
    """Up to three did-you-mean candidates, a case-insensitive exact match first."""
    exact = [c for c in candidates if c.lower() == word.lower() and c != word]
    fuzzy = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return list(dict.fromkeys([*exact, *fuzzy]))[:3]


def check_value(spec: AttributeSpec, raw: str) -> str | None:
    """Why ``raw`` is not a valid value for ``spec``, or ``None`` when it is.

    Blank numbers and durations mean "unset", exactly as the typed accessors on
    :class:`~attractor_trio.dot.graph.Node` read them. Strings, node references, conditions and
    display attributes are not checked here: other rules own them.
    """
    try:
        if spec.kind is Kind.INTEGER:
            return None if not raw.strip() else _check_bounds(spec, parse_int(raw))
        if spec.kind is Kind.FLOAT:
            return None if not raw.strip() else _check_bounds(spec, parse_float(raw))
        if spec.kind is Kind.DURATION:
            return None if not raw.strip() else _check_bounds(spec, parse_duration(raw))
        if spec.kind is Kind.BOOLEAN:
            parse_bool(raw)
            return None
    except AttributeValueError as exc:
        return str(exc)
    if spec.kind is Kind.ENUM:
        return _check_choice(raw, spec.choices)
    if spec.kind is Kind.FIDELITY:
        return _check_choice(raw, FIDELITY_MODES)
    if spec.kind is Kind.ENUM_LIST:
        items = [item.strip() for item in raw.split(",") if item.strip()]
        problems = (_check_choice(item, spec.choices) for item in items)
        return next((p for p in problems if p is not None), None)
    return None


def expected_form(spec: AttributeSpec) -> str:
    """What a valid value looks like, for fix hints (``a whole number >= 1``)."""
    forms = {
        Kind.INTEGER: "a whole number",
        Kind.FLOAT: "a number",
        Kind.DURATION: "a duration like 250ms, 900s, 15m or 2h",
        Kind.BOOLEAN: "true or false",
        Kind.ENUM: "one of " + ", ".join(spec.choices),
        Kind.ENUM_LIST: "a comma-separated list of " + ", ".join(spec.choices),
        Kind.FIDELITY: "one of " + ", ".join(FIDELITY_MODES),
    }
    form = forms.get(spec.kind, "text")
    if spec.minimum is not None:
        form += f" {'>' if spec.exclusive_minimum else '>='} {spec.minimum:g}"
    if spec.maximum is not None:
        form += f" and <= {spec.maximum:g}"
    return form


def _check_bounds(spec: AttributeSpec, value: float) -> str | None:
    low, high = spec.minimum, spec.maximum
    if low is not None and spec.exclusive_minimum and value <= low:
        return f"must be greater than {low:g}"
    if low is not None and value < low:
        return f"must be at least {low:g}"
    if high is not None and value > high:
        return f"must be at most {high:g}"
    return None


def _check_choice(raw: str, choices: tuple[str, ...]) -> str | None:
    if raw in choices:
        return None
    close = close_matches(raw, choices)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{raw!r} is not one of {', '.join(choices)}{hint}"
