"""Anthropic Messages API wire format for the fake server: success JSON, SSE streams, errors.

Builders produce exactly what ``POST /v1/messages`` returns, so the adapter's tests exercise
the real parsing code against the real shapes (``event:`` + ``data:`` SSE frames, the
``{"type": "error", "error": {...}}`` error body), not a simplified stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import frozen

from .server import Reply

__all__ = [
    "MESSAGES_PATH",
    "TextBlock",
    "ToolUseBlock",
    "error_body",
    "error_event",
    "error_reply",
    "message_json",
    "sse_event",
    "stream_events",
    "stream_reply",
]

MESSAGES_PATH = r"^/v1/messages$"
MODEL = "claude-test-1"


@frozen
class TextBlock:
    """A text content block, streamed as one ``text_delta`` per chunk."""

    chunks: tuple[str, ...]


@frozen
class ToolUseBlock:
    """A ``tool_use`` block; ``json_chunks`` are the ``input_json_delta`` pieces."""

    id: str
    name: str
    json_chunks: tuple[str, ...] = ()


def message_json(
    blocks: Sequence[TextBlock | ToolUseBlock] = (),
    *,
    stop_reason: str | None = "end_turn",
    input_tokens: int = 12,
    output_tokens: int = 5,
    model: str = MODEL,
    **usage: int,
) -> dict[str, Any]:
    """A complete (non-streamed) Messages API response object."""
    content: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            content.append({"type": "text", "text": "".join(block.chunks)})
        else:
            arguments = json.loads("".join(block.json_chunks) or "{}")
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": arguments}
            )
    return {
        "id": "msg_01Test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage},
    }


def sse_event(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One SSE frame: ``event:`` (the payload's type) and a ``data:`` line, blank-terminated."""
    name = event or payload["type"]
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def stream_events(
    blocks: Sequence[TextBlock | ToolUseBlock] = (),
    *,
    stop_reason: str | None = "end_turn",
    input_tokens: int = 12,
    output_tokens: int = 5,
    model: str = MODEL,
    ping: bool = True,
    terminate: bool = True,
) -> list[bytes]:
    """The full event sequence of a streamed message, in the order the API sends it."""
    start = message_json(model=model, stop_reason=None, input_tokens=input_tokens, output_tokens=1)
    events = [sse_event({"type": "message_start", "message": start})]
    if ping:
        events.append(sse_event({"type": "ping"}))
    for index, block in enumerate(blocks):
        events.extend(_block_events(index, block))
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    events.append(
        sse_event(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}}
        )
    )
    if terminate:
        events.append(sse_event({"type": "message_stop"}))
    return events


def _block_events(index: int, block: TextBlock | ToolUseBlock) -> list[bytes]:
    if isinstance(block, TextBlock):
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": chunk} for chunk in block.chunks]
    else:
        start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": c} for c in block.json_chunks]
    return [
        sse_event({"type": "content_block_start", "index": index, "content_block": start}),
        *(sse_event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas),
        sse_event({"type": "content_block_stop", "index": index}),
    ]


def stream_reply(events: list[bytes], delay: float = 0.0, **kw: Any) -> Reply:
    return Reply.sse(events, delay, **kw)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The API's error body: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_event(error_type: str, message: str) -> bytes:
    """An ``error`` event inside an SSE stream (e.g. ``overloaded_error`` after a 200)."""
    return sse_event(error_body(error_type, message))


def error_reply(status: int, error_type: str, message: str, **headers: str) -> Reply:
    return Reply.json(error_body(error_type, message), status=status, **headers)
