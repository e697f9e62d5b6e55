"""The OpenAI-compatible adapter (``kind: openai_compatible``): Chat Completions, streamed.

For local and third-party servers that speak ``POST {base_url}/chat/completions`` — vLLM,
llama.cpp, LM Studio, Ollama, and hosted look-alikes. They agree on the core of the format and
differ at the edges, so the decoder is lenient where they differ (error body shapes, a missing
``[DONE]``, ``finish_reason: stop`` next to tool calls) and strict where a truncated answer could
pass as whole (a stream that ends before any finish reason is a network error).

``reasoning_effort`` is not sent: it is not portable across these servers (some reject unknown
fields, others ignore it), so a pipeline that sets it gets the server's default behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, final

import httpx
from attrs import define, field

from .base import ConfigurationError, InvalidRequestError, ServerError
from .model import Message, ProgressFn, Request, Response, ToolCall, ToolSpec, Usage
from .openai import Endpoint, json_object, parse_arguments, stream_error
from .sse import SSEEvent

__all__ = ["ChatStream", "OpenAICompatibleAdapter", "chat_body", "chat_finish_reason"]

_FINISH_REASONS: Mapping[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # the pre-tools name
    "content_filter": "content_filter",
}


def chat_body(request: Request, *, provider: str = "openai_compatible") -> dict[str, Any]:
    """The ``POST /chat/completions`` body: system first, then the conversation."""
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages += [_chat_message(message, provider) for message in request.messages]
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [_tool(spec) for spec in request.tools]
    body["max_tokens"] = request.max_tokens
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}  # the usage chunk before ``[DONE]``
    return body


def _tool(spec: ToolSpec) -> dict[str, Any]:
    function = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    return {"type": "function", "function": function}


def _chat_message(message: Message, provider: str) -> dict[str, Any]:
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "assistant":
        if not message.tool_calls:
            return {"role": "assistant", "content": message.content}
        # ``null`` content beside tool calls is what these servers themselves return.
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    if message.role == "tool":
        # No error flag in this format: the content has to say that the tool failed.
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    raise InvalidRequestError(
        f"message role {message.role!r} is not one of user, assistant, tool", provider=provider
    )


def chat_finish_reason(raw: Any, has_calls: bool) -> str:
    """A server's ``finish_reason`` → ours. ``stop`` beside tool calls becomes ``tool_calls``:
    llama.cpp and Ollama report ``stop`` when the model called tools. No reason at all (a
    stream that still ended with ``[DONE]``) counts as a normal stop."""
    reason = "stop" if raw is None else _FINISH_REASONS.get(str(raw), "other")
    return "tool_calls" if has_calls and reason == "stop" else reason


@define
class ChatStream:
    """Decoder state for one Chat Completions stream: text deltas, tool-call deltas merged by
    their ``index``, the finish reason, and the usage chunk."""

    provider: str
    secret: str = field(default="", repr=False)
    _text: list[str] = field(factory=list)
    _calls: dict[int, dict[str, str]] = field(factory=dict)
    _finish: str | None = None
    _usage: Usage = field(factory=Usage)
    _model: str = ""

    def feed(self, event: SSEEvent) -> Response | None:
        if event.data.strip() == "[DONE]":
            return self._build()
        payload = json_object(event.data)
        if payload is None:
            return None
        self._raise_for_error(payload)
        self._model = str(payload.get("model") or self._model)
        self._take_usage(payload.get("usage"))
        choice = _first_choice(payload)
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self._text.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                self._add_call_delta(call)
        if choice.get("finish_reason") is not None:
            self._finish = str(choice["finish_reason"])
        return None

    def at_eof(self) -> Response | None:
        """Some servers end without ``[DONE]``; after a finish reason, a clean end is whole."""
        return self._build() if self._finish is not None else None

    def from_json(self, payload: Any) -> Response:
        if not isinstance(payload, dict):
            raise ServerError("the reply is not a chat completion", provider=self.provider)
        self._raise_for_error(payload)
        self._model = str(payload.get("model") or "")
        self._take_usage(payload.get("usage"))
        choice = _first_choice(payload)
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            self._text.append(message["content"])
        for position, call in enumerate(message.get("tool_calls") or []):
            if isinstance(call, dict):
                self._add_call_delta({"index": position, **call})
        self._finish = choice.get("finish_reason")
        return self._build()

    def _raise_for_error(self, payload: dict[str, Any]) -> None:
        if "error" in payload or payload.get("object") == "error":
            raise stream_error(payload, provider=self.provider, secret=self.secret)

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage = Usage(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )

    def _add_call_delta(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):  # servers that omit it send each call whole
            index = len(self._calls) if call.get("id") or not self._calls else max(self._calls)
        slot = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        slot["id"] = str(call.get("id") or slot["id"])
        function = call.get("function") or {}
        slot["name"] = str(function.get("name") or slot["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            slot["arguments"] += arguments
        elif isinstance(arguments, dict):
            slot["arguments"] = json.dumps(arguments)

    def _build(self) -> Response:
        calls = tuple(
            ToolCall(
                slot["id"] or f"call_{index}", slot["name"], parse_arguments(slot["arguments"])
            )
            for index, slot in sorted(self._calls.items())
        )
        return Response(
            text="".join(self._text),
            tool_calls=calls,
            finish_reason=chat_finish_reason(self._finish, bool(calls)),
            usage=self._usage,
            model=self._model,
            provider=self.provider,
        )


def _first_choice(payload: dict[str, Any]) -> dict[str, Any]:
    """Choice 0 (``n`` is never set, so there is one); ``{}`` for usage-only chunks."""
    for choice in payload.get("choices") or []:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return {}


@final
class OpenAICompatibleAdapter:
    """``kind: openai_compatible`` — Chat Completions at ``{base_url}/chat/completions``.

    ``base_url`` is required (it includes ``/v1``); an empty ``api_key`` sends no
    ``Authorization`` header, as local servers need none.
    """

    kind = "openai_compatible"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        api_key: str,
        name: str = "openai_compatible",
    ) -> None:
        if not base_url:
            raise ConfigurationError(
                f"provider '{name}' (kind openai_compatible) needs base_url: the server's API "
                "root including /v1, e.g. http://localhost:8000/v1",
                provider=name,
            )
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._endpoint = Endpoint(client, f"{self.base_url}/chat/completions", name, api_key)

    async def complete(self, request: Request, *, on_progress: ProgressFn) -> Response:
        body = chat_body(request, provider=self.name)
        decoder = ChatStream(self.name, secret=self._endpoint.api_key)
        return await self._endpoint.post(body, request, decoder, on_progress)
