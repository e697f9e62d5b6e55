"""Handler interface, per-attempt runtime information, and the handler registry (spec §4.1-4.2).

Handlers keep the spec's signature ``execute(node, context, graph, logs_root) -> Outcome``.
What the engine knows about the attempt in progress travels in a context variable
(:mod:`attractor_trio.core.attempt`, re-exported here), so a custom handler written against
the bare spec signature keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..core.attempt import (
    AttemptInfo,
    current_attempt,
    require_attempt,
    reset_attempt,
    set_attempt,
)
from ..dot.graph import Graph, Node

if TYPE_CHECKING:
    from ..context import Context
    from ..core.outcome import Outcome

__all__ = [
    "AttemptInfo",
    "Handler",
    "HandlerRegistry",
    "current_attempt",
    "require_attempt",
    "reset_attempt",
    "set_attempt",
]


@runtime_checkable
class Handler(Protocol):
    """A stage implementation. Exceptions it raises become ``fail`` outcomes (S4.12-03)."""

    async def execute(
        self, node: Node, context: Context, graph: Graph, logs_root: Path
    ) -> Outcome: ...


class HandlerRegistry:
    """Type string → handler. Resolution per S4.2-01: explicit ``type``, shape, default."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None, default: str = "codergen"):
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self.default_type = default

    def register(self, type_name: str, handler: Handler) -> None:
        """Register (or replace, S4.2-02) the handler for ``type_name``."""
        if not isinstance(handler, Handler):
            raise TypeError(
                f"handler for {type_name!r} must have "
                "'async def execute(node, context, graph, logs_root) -> Outcome'"
            )
        self._handlers[type_name] = handler

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._handlers

    def types(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def resolve_type(self, node: Node) -> str:
        explicit = node.type  # (a property: read once)
        if explicit and explicit in self._handlers:
            return explicit
        implied = node.implied_type
        if implied is not None and implied in self._handlers:
            return implied
        return self.default_type

    def resolve_type_handler(self, type_name: str) -> Handler | None:
        return self._handlers.get(type_name)

    def resolve(self, node: Node) -> Handler:
        type_name = self.resolve_type(node)
        try:
            return self._handlers[type_name]
        except KeyError:
            raise LookupError(f"no handler registered for type {type_name!r}") from None

    def copy(self) -> HandlerRegistry:
        return HandlerRegistry(self._handlers, self.default_type)
