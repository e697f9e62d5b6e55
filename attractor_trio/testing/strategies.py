"""Hypothesis strategies: runnable pipelines, and fault schedules over a given pipeline.

:func:`pipelines` draws a spine of *blocks* between ``start`` and ``done`` — plain stages (LLM
or tool), conditional branches whose failure side loops back or detours, failure edges that
loop back, fan-outs with a fan-in, and goal gates — rendered as DOT and parsed, so the graph
is exactly what a user could have written. Every draw shrinks towards a short linear
pipeline. Graphs with loops get ``max_node_visits`` so that a schedule failing forever with a
transient class (which the cycle breaker deliberately ignores) still ends.

:func:`schedules` draws a :class:`~.schedules.Schedule` for a pipeline's codergen and tool
nodes; it shrinks towards "every stage succeeds, nobody cancels".
"""

from __future__ import annotations

from typing import Final

from attrs import define, field
from hypothesis import strategies as st

from ..core.vocabulary import FailureClass
from ..dot import parse_dot
from ..dot.conditions import ConditionSyntaxError, is_custom_outcome, parse_condition
from ..dot.graph import Graph, Node
from ..dot.transforms import apply_transforms
from .schedules import STEP_KINDS, Schedule, Step

__all__ = ["custom_outcomes", "pipelines", "schedules", "steps"]

SCHEDULED_TYPES: Final = frozenset({"codergen", "tool"})
#: Every class plus no hint at all (``""``); the order is the shrink order (simplest first).
FAILURE_CLASSES: Final = (
    "",
    FailureClass.TRANSIENT_INFRA.value,
    FailureClass.DETERMINISTIC.value,
    FailureClass.STRUCTURAL.value,
    FailureClass.BUDGET_EXHAUSTED.value,
    FailureClass.CANCELED.value,
)
REASONS: Final = (
    "",
    "tests failed: 3 of 120",
    "rate limit exceeded, retry later",
    "segfault at 0x7f3a9c0d",
    "disk full",
)
#: Virtual seconds of work; 150 outlasts the harness's default stall timeout (120 s) while
#: reporting progress, which must *not* trip the watchdog.
DELAYS: Final = (0.0, 0.5, 1.0, 3.0, 10.0, 45.0, 150.0)
TIMEOUTS: Final = ("5s", "30s", "2m")
RETRY_POLICIES: Final = ("standard", "none", "linear", "patient")
VISIT_LIMIT: Final = 4


Pending = list[tuple[str, str]]


@define
class _Builder:
    """Accumulates DOT statements while blocks are drawn; ``work`` lists loop targets."""

    lines: list[str] = field(factory=list)
    work: list[str] = field(factory=list)
    count: int = 0
    looping: bool = False

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def add(self, line: str) -> None:
        self.lines.append(line)


def _attrs(pairs: dict[str, str]) -> str:
    return ", ".join(f'{key}="{value}"' for key, value in pairs.items())


@st.composite
def _stage(draw: st.DrawFn, b: _Builder, *, gates: bool, loops: bool) -> str:
    """One work node (LLM or tool) with optional retries, timeout and goal gate."""
    tool = draw(st.booleans())
    node = b.name("t" if tool else "s")
    attrs = {"shape": "parallelogram", "tool_command": "true"} if tool else {"prompt": node}
    retries = draw(st.integers(0, 2))
    if retries:
        attrs["max_retries"] = str(retries)
        attrs["retry_policy"] = draw(st.sampled_from(RETRY_POLICIES))
    if draw(st.booleans()):
        attrs["timeout"] = draw(st.sampled_from(TIMEOUTS))
    if gates and draw(st.integers(0, 3)) == 0:
        attrs["goal_gate"] = "true"
        if loops and b.work:
            attrs["retry_target"] = b.work[draw(st.integers(0, len(b.work) - 1))]
            b.looping = True
    b.add(f"{node} [{_attrs(attrs)}]")
    b.work.append(node)
    return node


def _loop_target(draw: st.DrawFn, b: _Builder) -> str:
    b.looping = True
    return b.work[draw(st.integers(0, len(b.work) - 1))]


@st.composite
def _block(
    draw: st.DrawFn, b: _Builder, pending: Pending, *, fan_out: bool, loops: bool, gates: bool
) -> Pending:
    """Draw a block entered from every ``(node, condition)`` in ``pending``; return the edges
    that must lead to whatever comes next."""
    kinds = (
        ["stage", "branch"] + (["fan_out"] if fan_out else []) + (["fail_loop"] if loops else [])
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "fan_out":
        return _fan_out(draw, b, pending)
    node = draw(_stage(b, gates=gates, loops=loops))
    _connect(b, pending, node)
    if kind == "stage":
        return [(node, "")]
    if kind == "fail_loop" and len(b.work) > 1:
        restart = ", loop_restart=true" if draw(st.integers(0, 3)) == 0 else ""
        b.add(f'{node} -> {_loop_target(draw, b)} [condition="outcome=fail"{restart}]')
        return [(node, "")]
    gate = b.name("d")
    b.add(f"{gate} [shape=diamond]")
    b.add(f"{node} -> {gate}")
    if loops and draw(st.booleans()):
        b.add(f'{gate} -> {_loop_target(draw, b)} [condition="outcome!=success"]')
        return [(gate, "outcome=success")]
    fix = b.name("f")
    b.add(f'{fix} [prompt="{fix}"]')
    b.add(f'{gate} -> {fix} [condition="outcome!=success"]')
    return [(gate, "outcome=success"), (fix, "")]


def _fan_out(draw: st.DrawFn, b: _Builder, pending: Pending) -> Pending:
    par, join = b.name("p"), b.name("j")
    count = draw(st.integers(1, 3))
    policy = {
        "shape": "component",
        "join_policy": draw(st.sampled_from(("wait_all", "first_success", "k_of_n", "quorum"))),
        "error_policy": draw(st.sampled_from(("continue", "fail_fast", "ignore"))),
        "max_parallel": str(draw(st.integers(1, 4))),
        "k": str(draw(st.integers(1, count))),
        "quorum_fraction": draw(st.sampled_from(("0.5", "1"))),
    }
    b.add(f"{par} [{_attrs(policy)}]")
    b.add(f"{join} [shape=tripleoctagon]")
    _connect(b, pending, par)
    for _ in range(count):
        branch = b.name("b")
        extra = ', max_retries="1"' if draw(st.booleans()) else ""
        b.add(f'{branch} [prompt="{branch}"{extra}]')
        b.add(f"{par} -> {branch} -> {join}")
    return [(join, "")]


def _connect(b: _Builder, pending: Pending, target: str) -> None:
    for node, condition in pending:
        b.add(_edge(node, target, condition))


@st.composite
def pipelines(
    draw: st.DrawFn,
    *,
    max_nodes: int = 8,
    fan_out: bool = True,
    loops: bool = True,
    gates: bool = True,
) -> Graph:
    """A valid, runnable pipeline of at most about ``max_nodes`` nodes (plus start/exit)."""
    b = _Builder()
    pending: Pending = [("start", "")]
    for _ in range(draw(st.integers(1, max(1, max_nodes // 2)))):
        if b.count >= max_nodes:
            break
        pending = draw(_block(b, pending, fan_out=fan_out, loops=loops, gates=gates))
    _connect(b, pending, "done")
    graph_attrs = f'goal="fuzz", max_node_visits="{VISIT_LIMIT}"' if b.looping else 'goal="fuzz"'
    source = "\n".join(
        [
            "digraph fuzz {",
            f"graph [{graph_attrs}]",
            "start [shape=Mdiamond]",
            "done [shape=Msquare]",
            *b.lines,
            "}",
        ]
    )
    return apply_transforms(parse_dot(source, "<fuzz pipeline>"))


def _edge(source: str, target: str, condition: str) -> str:
    return (
        f'{source} -> {target} [condition="{condition}"]' if condition else f"{source} -> {target}"
    )


# ---------------------------------------------------------------------------- schedules


def scheduled_nodes(graph: Graph) -> list[Node]:
    """The nodes a :class:`~.harness.ScheduledHandler` serves: codergen and tool stages."""
    return [node for node in graph if node.handler_type in SCHEDULED_TYPES]


def custom_outcomes(graph: Graph, node_id: str) -> tuple[str, ...]:
    """The custom outcome values (contract.md §10) the routing after ``node_id`` tests: in the
    conditions of its outgoing edges, and of the diamonds right after it (a conditional node
    routes on its predecessor's outcome). A steering stage is only explored through these."""
    edges = graph.outgoing(node_id)
    for edge in list(edges):
        target = graph.nodes.get(edge.to_node)
        if target is not None and target.handler_type == "conditional":
            edges += graph.outgoing(target.id)
    found: dict[str, None] = {}
    for edge in edges:
        try:
            clauses = parse_condition(edge.condition).clauses
        except ConditionSyntaxError:
            continue
        for clause in clauses:
            if clause.key == "outcome" and is_custom_outcome(clause.literal):
                found[clause.literal] = None
    return tuple(found)


@st.composite
def steps(draw: st.DrawFn, *, timeout: bool = False, outcomes: tuple[str, ...] = ()) -> Step:
    """One attempt's step; ``timeout`` allows the ``timeout`` kind (the node has one),
    ``outcomes`` the custom outcome values a ``success`` may report instead."""
    kinds = STEP_KINDS if timeout else tuple(k for k in STEP_KINDS if k != "timeout")
    kind = draw(st.sampled_from(kinds))
    delay = draw(st.sampled_from(DELAYS))
    if kind == "success" and outcomes:
        return Step(kind, delay=delay, outcome=draw(st.sampled_from(("", *outcomes))))
    if kind not in ("fail", "retry", "raise"):
        return Step(kind, delay=delay)
    klass = "" if kind == "raise" else draw(st.sampled_from(FAILURE_CLASSES))
    return Step(kind, failure_class=klass, reason=draw(st.sampled_from(REASONS)), delay=delay)


def schedules(
    graph: Graph, *, max_attempts: int = 4, allow_cancel: bool = True
) -> st.SearchStrategy[Schedule]:
    """Schedules for ``graph``'s codergen and tool nodes, with at most one cancel point."""
    per_node = {
        node.id: st.lists(
            steps(timeout=node.timeout is not None, outcomes=custom_outcomes(graph, node.id)),
            min_size=1,
            max_size=max_attempts,
        ).map(tuple)
        for node in scheduled_nodes(graph)
    }
    step_maps = st.fixed_dictionaries({}, optional=per_node)
    none: st.SearchStrategy[tuple[float | None, int | None]] = st.just((None, None))
    cancels = none
    if allow_cancel:
        at = st.tuples(st.integers(0, 1200).map(lambda quarters: quarters / 4), st.none())
        after = st.tuples(st.none(), st.integers(1, 80))
        cancels = st.one_of(none, at, after)
    return st.builds(
        lambda step_map, cancel: Schedule(step_map, cancel[0], cancel[1]), step_maps, cancels
    )
