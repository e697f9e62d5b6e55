"""``attractor-trio fuzz``: search fault and cancel schedules for flaws in a pipeline (issue 10).

The pipeline runs on the real engine under virtual time, its codergen stages answered by a
scheduled fake backend and its tool stages by a scheduled fake handler
(:mod:`attractor_trio.testing`); human gates take their first option, as with
``--auto-approve``. For each kind of finding, a few targeted one-step schedules are tried first
(a stage that always fails, fails transiently, or returns ``partial_success``); then Hypothesis
draws ``--examples`` random fault and cancel schedules and shrinks the first that shows the
finding to a minimal reproducer. Every schedule runs once (results are cached).

The kinds of finding and the bounds are defined in :mod:`.fuzz_detectors`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from attrs import define, field, frozen
from hypothesis import HealthCheck, Phase, Verbosity, find, settings
from hypothesis.errors import NoSuchExample
from hypothesis.strategies import SearchStrategy

from ..core.vocabulary import FailureClass
from ..dot.graph import Graph
from . import Observation, Schedule, ScheduledBackend, Step, run_schedule, schedules
from .fuzz_detectors import KINDS, Bounds, Detection, detect
from .strategies import custom_outcomes

__all__ = [
    "DEFAULT_EXAMPLES",
    "KINDS",
    "Bounds",
    "Detection",
    "Finding",
    "FuzzReport",
    "fuzz",
    "replay",
    "simplest",
    "targeted_schedules",
]

DEFAULT_EXAMPLES: Final = 200
#: A kind can be found at several nodes (two loops, two bypassed gates); at most this many.
MAX_FINDINGS_PER_KIND: Final = 5
#: Runs one shrink may spend; past it the smallest reproducer so far is reported. A run count
#: rather than a time limit keeps ``--seed`` reports identical on fast and slow machines.
SHRINK_RUNS: Final = 300


@frozen
class Finding:
    """A detection with the minimal schedule that reproduces it."""

    kind: str
    node_id: str
    detail: str
    schedule: Schedule

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node_id": self.node_id,
            "detail": self.detail,
            "schedule": self.schedule.to_json(),
        }


@frozen
class FuzzReport:
    file: str
    examples: int
    seed: int
    findings: tuple[Finding, ...]
    #: How many distinct schedules were run (generation and shrinking together).
    runs: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "examples": self.examples,
            "seed": self.seed,
            "findings": [finding.to_json() for finding in self.findings],
        }


# -------------------------------------------------------------------------------- search


def fuzz(
    graph: Graph,
    *,
    examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    file: str = "",
    scratch: Path | None = None,
) -> FuzzReport:
    """Search ``examples`` generated schedules per kind of finding; shrink each one found.

    ``graph`` must be validated already (``prepare_pipeline``). Runs happen in a temporary
    directory under ``scratch`` (default: ``/dev/shm`` when available, several times faster) that
    is removed afterwards. The same ``seed`` gives the same report.
    """
    bounds = Bounds.for_graph(graph)
    with tempfile.TemporaryDirectory(prefix="attractor-fuzz-", dir=scratch or _scratch()) as tmp:
        runner = _Runner(graph, bounds, Path(tmp))
        runner.check_runnable()
        strategy = schedules(graph)
        findings = [
            finding
            for kind in KINDS
            for finding in _search_kind(runner, strategy, kind, examples, seed)
        ]
    return FuzzReport(file or graph.path, examples, seed, tuple(findings), runner.runs)


def replay(graph: Graph, schedule: Schedule, *, scratch: Path | None = None) -> list[Detection]:
    """Run one schedule the way :func:`fuzz` does and return what it finds (a reproducer
    check: a reported finding's schedule must show the finding again)."""
    with tempfile.TemporaryDirectory(prefix="attractor-fuzz-", dir=scratch or _scratch()) as tmp:
        runner = _Runner(graph, Bounds.for_graph(graph), Path(tmp))
        runner.check_runnable()
        return list(runner.detections(schedule))


def _scratch() -> Path | None:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def _human_handlers() -> dict[str, Any]:
    """Human gates answer like ``--auto-approve``: schedules do not script people."""
    from ..handlers.human import WaitHumanHandler
    from ..interviewers import AutoApproveInterviewer

    return {"wait.human": WaitHumanHandler(AutoApproveInterviewer())}


@define
class _Runner:
    """Runs schedules (each once: results are cached by schedule) and detects findings."""

    graph: Graph
    bounds: Bounds
    root: Path
    runs: int = 0
    _cache: dict[str, tuple[Detection, ...]] = field(factory=dict)

    @property
    def bounded(self) -> Graph:
        return self.bounds.apply(self.graph)

    def check_runnable(self) -> None:
        """Refuse (``ConfigError``) before searching, not inside Hypothesis."""
        from ..scopes.engine import check_runnable

        check_runnable(self.bounded, handlers=_human_handlers(), require_backend=False)

    def cached(self, schedule: Schedule) -> tuple[Detection, ...] | None:
        return self._cache.get(_key(schedule))

    def detections(self, schedule: Schedule) -> tuple[Detection, ...]:
        key = _key(schedule)
        if key not in self._cache:
            self._cache[key] = self._run(schedule)
        return self._cache[key]

    def _run(self, schedule: Schedule) -> tuple[Detection, ...]:
        self.runs += 1
        logs_root = self.root / f"run-{self.runs}"
        try:
            obs: Observation = run_schedule(
                self.bounded,
                schedule,
                logs_root,
                backend=ScheduledBackend(schedule),
                handlers=_human_handlers(),
            )
            return detect(self.graph, self.bounds, obs.events, hung=obs.hung, error=obs.error)
        finally:
            shutil.rmtree(logs_root, ignore_errors=True)


def _key(schedule: Schedule) -> str:
    return json.dumps(schedule.to_json(), sort_keys=True)


def targeted_schedules(graph: Graph) -> list[Schedule]:
    """Schedules tried before any random one, simplest first: nothing goes wrong; then, for
    each codergen and tool stage, it fails on every attempt (deterministic, then transient —
    which the cycle breaker ignores), or keeps returning ``partial_success``. Each has one
    step, so whatever it shows needs no shrinking, and the obvious flaws are always found.
    A steering stage also keeps reporting each custom outcome its routing tests (contract.md
    §10), so the branches behind it are explored even when plain success routes nowhere."""
    faults = (
        Step("fail"),
        Step("fail", failure_class=FailureClass.TRANSIENT_INFRA),
        Step("partial"),
    )
    nodes = [node.id for node in graph if node.handler_type in ("codergen", "tool")]
    steering = [
        Schedule({node: (Step(outcome=value),)})
        for node in nodes
        for value in custom_outcomes(graph, node)
    ]
    return [
        Schedule(),
        *(Schedule({node: (fault,)}) for node in nodes for fault in faults),
        *steering,
    ]


def simplest(schedule: Schedule) -> Schedule:
    """The same schedule written minimally: the last step repeats, so a repeated last step
    says nothing, and a node whose steps are all plain success is the same as no entry."""
    steps: dict[str, tuple[Step, ...]] = {}
    for node, entries in schedule.steps.items():
        trimmed = list(entries)
        while len(trimmed) > 1 and trimmed[-1] == trimmed[-2]:
            trimmed.pop()
        if any(not step.is_default for step in trimmed):
            steps[node] = tuple(trimmed)
    return Schedule(steps, schedule.cancel_at, schedule.cancel_after_event)


def _search_kind(
    runner: _Runner, strategy: SearchStrategy[Schedule], kind: str, examples: int, seed: int
) -> list[Finding]:
    """Findings of one kind, each at a node not reported yet, each with its own reproducer:
    the first targeted schedule that shows it, else a shrunk random one."""
    found: dict[str, Finding] = {}
    targeted = targeted_schedules(runner.graph)
    while len(found) < MAX_FINDINGS_PER_KIND:

        def new(detection: Detection) -> bool:
            return detection.kind == kind and detection.node_id not in found

        def shows(schedule: Schedule) -> bool:
            return any(map(new, runner.detections(schedule)))

        schedule = next(filter(shows, targeted), None)
        if schedule is None:
            schedule = _minimal(runner, strategy, shows, examples, seed)
        if schedule is None:
            break
        schedule = _tidy(schedule, shows)
        fresh = [d for d in runner.detections(schedule) if new(d)]
        for detection in fresh:
            found[detection.node_id] = Finding(kind, detection.node_id, detection.detail, schedule)
        if not fresh:  # cannot happen with cached results; never loop on it regardless
            break
    return list(found.values())


def _tidy(schedule: Schedule, shows: Callable[[Schedule], bool]) -> Schedule:
    """:func:`simplest`, kept only if it still shows the finding (it is equivalent, but a
    parallel pipeline's task order may differ between two runs)."""
    tidy = simplest(schedule)
    return tidy if tidy == schedule or shows(tidy) else schedule


def _minimal(
    runner: _Runner,
    strategy: SearchStrategy[Schedule],
    shows: Callable[[Schedule], bool],
    examples: int,
    seed: int,
) -> Schedule | None:
    """The smallest schedule Hypothesis finds for which ``shows`` holds, or ``None``.

    Once a shrink has spent :data:`SHRINK_RUNS` runs, only schedules already run are judged
    (others count as "does not show it"), so the shrinker winds down at once and returns the
    best so far — consistently, as Hypothesis requires.
    """
    first_hit: list[int] = []

    def condition(schedule: Schedule) -> bool:
        if first_hit and runner.runs - first_hit[0] >= SHRINK_RUNS:
            known = runner.cached(schedule)
            return known is not None and shows(schedule)
        result = shows(schedule)
        if result and not first_hit:
            first_hit.append(runner.runs)
        return result

    options = settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
    )
    try:
        found: Schedule = find(strategy, condition, settings=options, random=random.Random(seed))
    except NoSuchExample:
        return None
    return found
