"""The no-op handlers: start (S4.3), exit (S4.4) and conditional (S4.7, with pass-through)."""

from __future__ import annotations

from pathlib import Path

from ..context import Context
from ..core.outcome import Outcome, StageStatus, passthrough_outcome
from ..dot.graph import Graph, Node

__all__ = ["ConditionalHandler", "ExitHandler", "StartHandler"]


class StartHandler:
    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        return Outcome(StageStatus.SUCCESS, notes=f"Start: {node.id}")


class ExitHandler:
    """Goal gates are the engine's job (S4.4-01); the exit node still runs and is checkpointed."""

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        return Outcome(StageStatus.SUCCESS, notes="Pipeline completed")


class ConditionalHandler:
    """Passes the previous stage's outcome through so the diamond's conditions see it (AMBIG-1)."""

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        return passthrough_outcome(node.id, context)
