"""Where an attempt's process work runs: here (local process groups) or on a Ray cluster.

contract.md §10 "Scale-out on Ray". The seam is :func:`run_stage_process`: tool stages, CLI agents
and the agent loop's ``shell`` call it instead of
:func:`~attractor_trio.aio.process.run_in_process_group`. Without an executor installed
(:func:`use_executor`) it *is* the local process group call, so the default executor costs
nothing and never imports ``ray``.
"""

from __future__ import annotations

from .base import (
    Executor,
    ExecutorLost,
    ExecutorSettings,
    StageContext,
    run_stage_process,
    use_executor,
    use_stage_context,
)

__all__ = [
    "Executor",
    "ExecutorLost",
    "ExecutorSettings",
    "StageContext",
    "run_stage_process",
    "use_executor",
    "use_stage_context",
]
