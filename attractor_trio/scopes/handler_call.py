"""The handler call of an attempt: what the handler raises or returns, made an ``Outcome``.

Kept apart from the attempt scope (``attempt.py``): it is the one place a handler's own code
runs, and what it owes the executors below it (the attempt's ``StageContext``, built only
when an installed executor asks) is nothing the rest of the attempt needs.
"""

from __future__ import annotations

import functools
from typing import Any

from ..backends.executors.base import (
    ExecutorFailure,
    StageContext,
    installed_executor,
    reset_stage_context,
    set_stage_context,
)
from ..context import Context
from ..core.attempt import AttemptInfo
from ..core.outcome import Outcome, StageStatus
from ..core.vocabulary import FailureClass
from ..dot.graph import Graph, Node

__all__ = ["call_handler"]


async def call_handler(
    handler: Any,
    node: Node,
    context: Context,
    graph: Graph,
    info: AttemptInfo,
    resources: str | None = None,
) -> Outcome:
    """Handler exceptions become ``fail`` outcomes (S4.12-03); cancellation propagates.
    Only an installed executor reads the attempt's ``StageContext`` (``use_stage_context``,
    built when it first asks): without one, the usual local run, none is set at all."""
    token = None
    if installed_executor() is not None:
        token = set_stage_context(functools.partial(_stage_of, node, info, resources))
    try:
        outcome = await handler.execute(node, context, graph, info.logs_root)
    except ExecutorFailure as exc:  # contract.md §10: lost node → transient_infra; refused workdir
        return Outcome(StageStatus.FAIL, failure_reason=str(exc), failure_class=exc.failure_class)
    except Exception as exc:
        return Outcome(
            StageStatus.FAIL,
            failure_reason=f"handler raised {type(exc).__name__}: {exc}",
        )
    finally:
        if token is not None:
            reset_stage_context(token)
    if not isinstance(outcome, Outcome):
        return Outcome(
            StageStatus.FAIL,
            failure_reason=f"handler returned {type(outcome).__name__}, expected an Outcome",
            failure_class=FailureClass.STRUCTURAL,
        )
    return outcome


def _stage_of(node: Node, info: AttemptInfo, resources: str | None) -> StageContext:
    return StageContext(
        resources=node.get("executor.resources") if resources is None else resources,
        node_id=info.node_id,
        attempt_id=info.attempt_id,
        emit=info.emit,
        liveness=info.liveness,
        start=info.start,
        logs_root=info.logs_root,
        stage_dir=info.stage_dir,
        workdir=info.workdir,
    )
