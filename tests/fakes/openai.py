"""OpenAI wire formats for the fake server: Responses API and Chat Completions.

Builders return exactly what the vendor sends (JSON bodies, SSE byte strings), so tests read
as "the server says X" and the adapters are exercised against the real shapes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from .server import Reply

__all__ = [
    "Call",
    "Progress",
    "chat_json",
    "chat_sse",
    "closed_port_url",
    "error_body",
    "error_reply",
    "responses_error_event",
    "responses_json",
    "responses_sse",
    "sse_event",
]

#: A tool call as the tests write it: ``(call_id, name, arguments-json)``.
Call = tuple[str, str, str]


class Progress:
    """An ``on_progress`` callback that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def closed_port_url() -> str:
    """A localhost URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def error_body(message: str, *, type: str = "invalid_request_error", code: Any = None) -> Any:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def error_reply(status: int, message: str, *, code: Any = None, **headers: str) -> Reply:
    return Reply.json(error_body(message, code=code), status=status, **headers)


def sse_event(payload: Any, *, event: str | None = None) -> bytes:
    """One SSE event; ``event`` adds an ``event:`` line (the Responses API names every event)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


# --- Responses API ----------------------------------------------------------------------------


def _message_item(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_{index}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _call_item(call: Call, *, arguments: str | None = None) -> dict[str, Any]:
    call_id, name, args = call
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": args if arguments is None else arguments,
        "status": "completed",
    }


def responses_json(
    text: str = "",
    calls: Sequence[Call] = (),
    *,
    status: str = "completed",
    incomplete_reason: str | None = None,
    model: str = "gpt-test",
    usage: tuple[int, int] = (11, 7),
    error: dict[str, Any] | None = None,
    output: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Responses API ``response`` object (the non-streamed body, also inside stream events)."""
    items = [_message_item(text)] if text else []
    items += [_call_item(call) for call in calls]
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "output": items if output is None else output,
        "usage": {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "total_tokens": sum(usage),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _typed(kind: str, **fields: Any) -> bytes:
    return sse_event({"type": kind, **fields}, event=kind)


def responses_sse(
    chunks: Iterable[str] = (),
    calls: Sequence[Call] = (),
    *,
    terminal: str = "response.completed",
    final: dict[str, Any] | None = None,
) -> list[bytes]:
    """A Responses stream: created, text deltas, function-call items and argument deltas, then
    ``terminal`` carrying ``final`` (default: the response the deltas add up to)."""
    chunks = list(chunks)
    text = "".join(chunks)
    final = final if final is not None else responses_json(text, calls)
    events = [_typed("response.created", response={**final, "status": "in_progress", "output": []})]
    if chunks:
        added = {**_message_item(""), "status": "in_progress", "content": []}
        events.append(_typed("response.output_item.added", output_index=0, item=added))
        for delta in chunks:
            events.append(
                _typed(
                    "response.output_text.delta",
                    item_id="msg_0",
                    output_index=0,
                    content_index=0,
                    delta=delta,
                )
            )
        events.append(_typed("response.output_item.done", output_index=0, item=_message_item(text)))
    for offset, call in enumerate(calls, start=1 if chunks else 0):
        item = _call_item(call, arguments="")
        events.append(_typed("response.output_item.added", output_index=offset, item=item))
        half = len(call[2]) // 2
        for piece in (call[2][:half], call[2][half:]):
            events.append(
                _typed(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=offset,
                    delta=piece,
                )
            )
        events.append(
            _typed("response.output_item.done", output_index=offset, item=_call_item(call))
        )
    events.append(_typed(terminal, response=final))
    return events


def responses_error_event(message: str, code: str) -> bytes:
    return _typed("error", code=code, message=message, param=None, sequence_number=3)


# --- Chat Completions -------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741476542,
        "model": "local-model",
        "choices": [choice],
        **extra,
    }
    return sse_event(body)


def chat_sse(
    chunks: Iterable[str] = (),
    calls: Sequence[Call] = (),
    *,
    finish: str | None = "stop",
    usage: tuple[int, int] | None = (5, 3),
    done: bool = True,
) -> list[bytes]:
    """A Chat Completions stream: role, content deltas, tool-call deltas (first with id and name,
    then argument pieces by ``index``), the finish chunk, a usage chunk, ``[DONE]``."""
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": piece}) for piece in chunks]
    for index, (call_id, name, args) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function"}
        events.append(
            _chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        )
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            events.append(
                _chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    if finish is not None:
        events.append(_chunk({}, finish))
    if usage is not None:
        events.append(sse_event({**_usage_chunk(usage), "choices": []}))
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def _usage_chunk(usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "local-model",
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        },
    }


def chat_json(
    text: str | None = "",
    calls: Sequence[Call] = (),
    *,
    finish: str = "stop",
    usage: tuple[int, int] = (5, 3),
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` (what a server that ignores ``stream`` returns)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ]
    return {
        **_usage_chunk(usage),
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
