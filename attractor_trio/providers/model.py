"""The small provider-neutral request/response model every adapter speaks (spec Part 2A).

Only what a codergen stage needs: text messages, tool calls and results (for the agent loop),
model, reasoning effort, max tokens. Adapters translate it to and from each vendor's wire
format; nothing above the adapters knows a vendor's JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from attrs import field, frozen

__all__ = [
    "Adapter",
    "Message",
    "ProgressFn",
    "Request",
    "Response",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

ProgressFn = Callable[[], None]


@frozen
class ToolCall:
    """A tool invocation the model asked for; ``id`` ties the result back to it."""

    id: str
    name: str
    arguments: dict[str, Any] = field(factory=dict)


@frozen
class ToolSpec:
    """A tool offered to the model: name, description, JSON-Schema ``parameters`` (an object)."""

    name: str
    description: str
    parameters: dict[str, Any] = field(factory=lambda: {"type": "object", "properties": {}})


@frozen
class Message:
    """One conversation turn.

    ``role`` is ``user``, ``assistant`` or ``tool`` (the system prompt is ``Request.system``).
    An assistant turn may carry ``tool_calls``; a ``tool`` turn answers one call
    (``tool_call_id``, ``name``) with ``content`` and ``is_error``.
    """

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""
    is_error: bool = False


@frozen
class Request:
    model: str
    messages: tuple[Message, ...]
    system: str = ""
    max_tokens: int = 4096
    #: ``low|medium|high``, or ``None`` to leave the provider's default.
    reasoning_effort: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    #: Seconds for the whole call (connect + response); adapters must set it explicitly.
    timeout: float = 600.0
    provider_options: Mapping[str, Any] = field(factory=dict)


@frozen
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@frozen
class Response:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    #: ``stop|length|tool_calls|content_filter|error|other``
    finish_reason: str = "stop"
    usage: Usage = field(factory=Usage)
    model: str = ""
    provider: str = ""


class Adapter(Protocol):
    """One vendor API. Adapters never retry (the caller does, honoring ``Retry-After``) and
    raise only :class:`~attractor_trio.providers.base.ProviderError` subclasses; ``on_progress``
    is called whenever response data arrives (stream chunks), which feeds the liveness tree."""

    kind: str

    async def complete(self, request: Request, *, on_progress: ProgressFn) -> Response: ...
