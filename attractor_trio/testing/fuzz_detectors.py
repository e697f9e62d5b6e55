"""What ``attractor-trio fuzz`` reports: pure detectors over one run's events (issue 10).

Each detector reads the events of one run (plus whether the harness had to stop it, and
what the engine raised) and yields :class:`Detection` records; no IO, so each is tested on
hand-written event lists. The kinds:

``non_termination``
    The run does not end by itself: no terminal event within the harness's virtual time limit
    or event budget, or some node reached the *progress bound* of visits — twice the visit
    bound (40 by default). Fuzz enforces the progress bound by running the
    pipeline with ``max_node_visits`` set to it when the pipeline sets none, so a zero-time
    loop ends in milliseconds instead of never.
``lost_failure_reason``
    The run failed (not cancelled) with an empty ``failure_reason``, an internal error, or a
    reason that is not the raw reason of any failed attempt although the exit path says a
    stage caused it (``stage_failed``, ``goal_gate_unsatisfied``, ``cycle_breaker``) — or the
    engine raised instead of finishing.
``failure_routed_to_success``
    The run succeeded although a goal gate's last outcome was ``fail``, or although the last
    stage before the exit failed — however the failure got there: an unconditional route, or
    an explicit one (``condition on build -> exit``, a ``retry_target``), which may be what the
    author wants; the detail says how it was routed so the author can decide.
``unreachable_goal_gate``
    The run succeeded without ever visiting a ``goal_gate`` node: some path to the exit
    bypasses the gate, so it guarded nothing. Reported once per gate.
``visit_bound``
    A node was visited more than the visit bound (graph ``max_node_visits``, else 20) in one
    run (between loop restarts, per parallel branch), and the run then ended by itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from attrs import frozen

from ..core.vocabulary import ExitPath
from ..dot.graph import Graph
from ..events import TERMINAL_EVENTS
from .invariants import CAUSAL_EXIT_PATHS, leaf_failure_reasons

__all__ = [
    "DEFAULT_VISIT_BOUND",
    "KINDS",
    "PROGRESS_FACTOR",
    "Bounds",
    "Detection",
    "detect",
    "failure_routed_to_success",
    "lost_failure_reason",
    "non_termination",
    "unreachable_goal_gate",
    "visit_bound",
]

KINDS: Final = (
    "non_termination",
    "lost_failure_reason",
    "failure_routed_to_success",
    "unreachable_goal_gate",
    "visit_bound",
)
DEFAULT_VISIT_BOUND: Final = 20
#: The progress bound is this many times the visit bound.
PROGRESS_FACTOR: Final = 2
#: Reasons the engine writes itself for a stop a stage caused indirectly (a restart limit).
ENGINE_REASON_PREFIXES: Final = ("loop_restart limit reached",)

Event = Mapping[str, Any]


@frozen
class Bounds:
    """The visit bound, and the progress bound fuzz imposes when the pipeline sets none."""

    visit_bound: int
    progress_bound: int | None

    @classmethod
    def for_graph(cls, graph: Graph) -> Bounds:
        limit = graph.max_node_visits
        if limit is not None:
            return cls(limit, None)  # the engine enforces the author's own bound
        return cls(DEFAULT_VISIT_BOUND, PROGRESS_FACTOR * DEFAULT_VISIT_BOUND)

    def apply(self, graph: Graph) -> Graph:
        """``graph`` as fuzz runs it: bounded, so a runaway loop ends with ``visit_limit``."""
        if self.progress_bound is None:
            return graph
        return graph.evolve(attrs={**graph.attrs, "max_node_visits": str(self.progress_bound)})


@frozen
class Detection:
    """One finding in one run: its kind, the node it concerns (``""``: none) and why."""

    kind: str
    node_id: str
    detail: str


# ------------------------------------------------------------------------------ detectors


def detect(
    graph: Graph,
    bounds: Bounds,
    events: Sequence[Event],
    *,
    hung: bool = False,
    error: BaseException | None = None,
) -> tuple[Detection, ...]:
    """Every finding one run shows (``graph`` as written, not as bounded)."""
    return (
        *non_termination(events, bounds, hung=hung),
        *lost_failure_reason(events, error=error),
        *failure_routed_to_success(graph, events),
        *unreachable_goal_gate(graph, events),
        *visit_bound(events, bounds, hung=hung),
    )


def non_termination(
    events: Sequence[Event], bounds: Bounds, *, hung: bool = False
) -> Iterator[Detection]:
    """Reported at the loop's first-visited node, so one loop is one finding whichever way
    (progress bound, time limit, event budget) the harness had to stop it."""
    if hung:
        loop = _busiest(events)
        if loop:
            where = f"it was looping through {_chain(loop)}"
        else:
            loop = [_last_started(events)]
            where = f"the last stage started was '{loop[0]}'"
        yield Detection(
            "non_termination",
            loop[0],
            "the run did not end within the virtual time limit or the event budget: " + where,
        )
    elif runaway := _runaway(events, bounds):
        yield Detection(
            "non_termination",
            runaway[0],
            f"the loop through {_chain(runaway)} ran {bounds.progress_bound} times and was "
            "still going: the run does not stop by itself (the pipeline sets no "
            f"max_node_visits, so fuzz stops a run at {bounds.progress_bound} visits of one "
            "node)",
        )


def _chain(nodes: Sequence[str]) -> str:
    return " -> ".join(f"'{node}'" for node in nodes)


def lost_failure_reason(
    events: Sequence[Event], *, error: BaseException | None = None
) -> Iterator[Detection]:
    if error is not None:
        yield Detection(
            "lost_failure_reason",
            _last_started(events),
            f"the engine raised {type(error).__name__}: {error} instead of ending the run",
        )
        return
    terminal = _terminal(events)
    if terminal is None or terminal.get("status") != "fail":
        return
    reason = str(terminal.get("failure_reason") or "")
    exit_path = str(terminal.get("exit_path", ""))
    problem = ""
    if exit_path == ExitPath.INTERNAL_ERROR:
        problem = f"the engine failed internally: {reason}"
    elif not reason.strip():
        problem = f"the run failed (exit_path {exit_path}) with an empty failure_reason"
    elif exit_path in CAUSAL_EXIT_PATHS and not _traceable(reason, events):
        problem = (
            f"the run failed (exit_path {exit_path}) with failure_reason {reason!r}, which is "
            "not the raw reason of any failed attempt"
        )
    if problem:
        yield Detection("lost_failure_reason", _last_completed(events), problem)


def failure_routed_to_success(graph: Graph, events: Sequence[Event]) -> Iterator[Detection]:
    if not _succeeded(events):
        return
    last_status = _last_statuses(events)
    for node in graph:
        if node.goal_gate and last_status.get(node.id) == "fail":
            yield Detection(
                "failure_routed_to_success",
                node.id,
                f"the run succeeded although goal gate '{node.id}' last failed",
            )
    last = _last_stage_before_exit(graph, events)
    if last is None or last.get("status") != "fail":
        return
    node_id = str(last["node_id"])
    failed = _failed_stage(graph, events, node_id)
    yield Detection(
        "failure_routed_to_success",
        failed,
        f"stage '{failed}' failed and the run still succeeded: the failure reached the exit "
        f"by {_route_of(events, node_id)}",
    )


def unreachable_goal_gate(graph: Graph, events: Sequence[Event]) -> Iterator[Detection]:
    if not _succeeded(events):
        return
    started = {str(e.get("node_id")) for e in events if e.get("event") == "stage_started"}
    for node in graph:
        if node.goal_gate and node.id not in started:
            yield Detection(
                "unreachable_goal_gate",
                node.id,
                f"the run succeeded without visiting goal gate '{node.id}': a path to the "
                "exit bypasses it",
            )


def visit_bound(
    events: Sequence[Event], bounds: Bounds, *, hung: bool = False
) -> Iterator[Detection]:
    """Runs that ended by themselves only; a runaway is ``non_termination``."""
    if hung or _runaway(events, bounds):
        return
    for node_id, visits in _max_visits(events).items():
        if visits > bounds.visit_bound:
            yield Detection(
                "visit_bound",
                node_id,
                f"node '{node_id}' was visited {visits} times in one run "
                f"(visit bound {bounds.visit_bound})",
            )


# ----------------------------------------------------------------------- event queries


def _terminal(events: Sequence[Event]) -> Event | None:
    return next((e for e in reversed(events) if e.get("event") in TERMINAL_EVENTS), None)


def _succeeded(events: Sequence[Event]) -> bool:
    terminal = _terminal(events)
    return terminal is not None and terminal.get("event") == "pipeline_completed"


def _top(events: Sequence[Event], name: str) -> list[Event]:
    return [e for e in events if e.get("event") == name and not e.get("branch")]


def _last_started(events: Sequence[Event]) -> str:
    started = _top(events, "stage_started")
    return str(started[-1]["node_id"]) if started else ""


def _last_completed(events: Sequence[Event]) -> str:
    completed = _top(events, "stage_completed")
    return str(completed[-1]["node_id"]) if completed else ""


def _last_statuses(events: Sequence[Event]) -> dict[str, str]:
    """Each node's last final status, branches included (a gate may sit in a branch)."""
    return {
        str(e["node_id"]): str(e.get("status"))
        for e in events
        if e.get("event") == "stage_completed"
    }


def _last_stage_before_exit(graph: Graph, events: Sequence[Event]) -> Event | None:
    completed = [e for e in _top(events, "stage_completed") if not graph.is_terminal(e["node_id"])]
    return completed[-1] if completed else None


def _route_of(events: Sequence[Event], node_id: str) -> str:
    """How the run left ``node_id`` for the last time, e.g. ``condition on build -> exit``."""
    chosen = [e for e in _top(events, "edge_selected") if e.get("from_node") == node_id]
    if not chosen:
        return "no recorded routing"
    edge = chosen[-1]
    return f"{edge.get('method') or 'unknown'} on {node_id} -> {edge.get('to_node')}"


def _failed_stage(graph: Graph, events: Sequence[Event], node_id: str) -> str:
    """The stage whose failure reached the exit through ``node_id``, the last stage before
    it: skip the diamonds, which only pass an outcome on."""
    completed = [str(e["node_id"]) for e in _top(events, "stage_completed")]
    for candidate in reversed(completed):
        node = graph.nodes.get(candidate)
        if (
            node is not None
            and node.handler_type != "conditional"
            and not graph.is_terminal(candidate)
        ):
            return candidate
    return node_id


def _max_visits(events: Sequence[Event]) -> dict[str, int]:
    """The most visits of each node between loop restarts, counted per branch."""
    current: dict[tuple[str, str], int] = {}
    most: dict[str, int] = {}
    for event in events:
        if event.get("event") == "loop_restart" and not event.get("branch"):
            current = {key: n for key, n in current.items() if key[0]}
        elif event.get("event") == "stage_started":
            key = (str(event.get("branch", "")), str(event["node_id"]))
            current[key] = current.get(key, 0) + 1
            most[key[1]] = max(most.get(key[1], 0), current[key])
    return most


def _runaway(events: Sequence[Event], bounds: Bounds) -> list[str]:
    """The nodes (in first-visit order) that reached the progress bound — top level or in a
    branch, where a runaway loop ends only its branch; empty when none did."""
    if bounds.progress_bound is None:
        return []
    bound = bounds.progress_bound
    return [node for node, visits in _max_visits(events).items() if visits >= bound]


def _busiest(events: Sequence[Event]) -> list[str]:
    """The loop a hung run was in: the nodes (first-visit order) that ran more than once and
    more than half as often as the busiest one (a loop's nodes differ by at most one visit,
    the stages before it ran about once); empty when every node ran once."""
    visits = _max_visits(events)
    most = max(visits.values(), default=0)
    return [node for node, count in visits.items() if count > 1 and 2 * count > most]


def _traceable(reason: str, events: Sequence[Event]) -> bool:
    if reason.startswith(ENGINE_REASON_PREFIXES):
        return True
    return any(raw in reason for raw in leaf_failure_reasons([dict(e) for e in events]))
