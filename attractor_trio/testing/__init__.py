"""Fuzzing machinery for attractor-trio pipelines (issue 10).

Strategies draw pipelines and fault schedules (:mod:`.strategies`, needs Hypothesis);
:func:`run_schedule` executes a schedule against the real engine under virtual time with
scheduled fake handlers (:mod:`.harness`); :func:`check_invariants` checks the run against
contract.md §4 and §2 (:mod:`.invariants`). Schedules are plain data (:mod:`.schedules`).

Only the strategies need Hypothesis, and they are imported on first use, so replaying a
stored schedule (or importing this package from the CLI) works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .harness import Observation as Observation
from .harness import Performed as Performed
from .harness import ScheduledBackend as ScheduledBackend
from .harness import ScheduledError as ScheduledError
from .harness import ScheduledHandler as ScheduledHandler
from .harness import run_schedule as run_schedule
from .invariants import INVARIANTS as INVARIANTS
from .invariants import Violation as Violation
from .invariants import check_invariants as check_invariants
from .schedules import STEP_KINDS as STEP_KINDS
from .schedules import Schedule as Schedule
from .schedules import Step as Step

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from ..dot.graph import Graph

__all__ = [
    "INVARIANTS",
    "STEP_KINDS",
    "Observation",
    "Performed",
    "Schedule",
    "ScheduledBackend",
    "ScheduledError",
    "ScheduledHandler",
    "Step",
    "Violation",
    "check_invariants",
    "pipelines",
    "run_schedule",
    "schedules",
]


def pipelines(
    *, max_nodes: int = 8, fan_out: bool = True, loops: bool = True, gates: bool = True
) -> SearchStrategy[Graph]:
    """Valid, runnable pipelines; see :func:`.strategies.pipelines`."""
    from . import strategies

    return strategies.pipelines(max_nodes=max_nodes, fan_out=fan_out, loops=loops, gates=gates)


def schedules(
    graph: Graph, *, max_attempts: int = 4, allow_cancel: bool = True
) -> SearchStrategy[Schedule]:
    """Fault schedules for ``graph``; see :func:`.strategies.schedules`.

    Defined here (not re-exported) because the submodule :mod:`.schedules` has the same name;
    importing Hypothesis only when a strategy is asked for keeps it optional for replays.
    """
    from . import strategies

    return strategies.schedules(graph, max_attempts=max_attempts, allow_cancel=allow_cancel)
