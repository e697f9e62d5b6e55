"""The Anthropic Messages API adapter (``POST {base_url}/v1/messages``; spec Part 2A,
contract.md §9).

The pure half translates: :func:`build_body` turns a provider-neutral :class:`Request` into the
vendor's JSON (strict user/assistant alternation, tool results as ``tool_result`` blocks, prompt
caching breakpoints), and :class:`StreamAccumulator` folds the streamed events back into one
:class:`Response`. :class:`AnthropicAdapter` only moves bytes and maps failures to the typed
errors of :mod:`.base`, so every wire decision is testable without a socket.

``reasoning_effort`` is deliberately not sent. Anthropic's reasoning control is extended
thinking, and with tools the API requires each assistant turn's signed ``thinking`` blocks to be
echoed back verbatim; the neutral :class:`Message` cannot carry them, so enabling thinking would
break the agent loop on its second call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import trio
from attrs import define, field, frozen

from .base import (
    ConfigurationError,
    InvalidRequestError,
    NetworkError,
    ProviderError,
    RequestTimeoutError,
    ServerError,
    error_for_http_status,
    error_from_kind,
    kind_for_http_status,
)
from .model import Message, ProgressFn, Request, Response, ToolCall, ToolSpec, Usage
from .retryafter import retry_after_seconds
from .sse import iter_sse

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "ERROR_KIND_BY_TYPE",
    "FINISH_REASON_BY_STOP_REASON",
    "AnthropicAdapter",
    "AnthropicOptions",
    "StreamAccumulator",
    "anthropic_options",
    "build_body",
    "finish_reason_for",
    "parse_retry_after",
    "response_from_message",
    "timeout_for",
    "wire_messages",
]

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
ANTHROPIC_VERSION: Final = "2023-06-01"
CONNECT_TIMEOUT: Final = 10.0
#: Longest silence allowed between two stream chunks (the API pings well within it).
STREAM_READ_TIMEOUT: Final = 60.0
_MAX_QUOTED: Final = 300
_REDACTED: Final = "[redacted]"

FINISH_REASON_BY_STOP_REASON: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}

#: The ``error.type`` of an in-stream ``error`` event → error kind (there is no HTTP status).
ERROR_KIND_BY_TYPE: Mapping[str, str] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "auth",
    "permission_error": "access_denied",
    "not_found_error": "not_found",
    "request_too_large": "context_length",
    "rate_limit_error": "rate_limit",
    "api_error": "server_error",
    "overloaded_error": "server_error",
    "billing_error": "quota_exceeded",
    "timeout_error": "timeout",
}


# --- request -----------------------------------------------------------------------------


@frozen
class AnthropicOptions:
    """``Request.provider_options["anthropic"]``, validated.

    ``beta_headers`` become the comma-joined ``anthropic-beta`` header; ``auto_cache`` places
    prompt-caching breakpoints (on by default: agent loops resend a growing prefix, and cached
    input is far cheaper); ``stream=False`` asks for one JSON body, for gateways without SSE.
    """

    beta_headers: tuple[str, ...] = ()
    auto_cache: bool = True
    stream: bool = True


_OPTIONS_WHERE: Final = "provider_options.anthropic"


def anthropic_options(provider_options: Mapping[str, Any]) -> AnthropicOptions:
    """Validate this vendor's options; a typo must fail the call, not be silently ignored."""
    raw = provider_options.get("anthropic", {})
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{_OPTIONS_WHERE} must be a mapping, got {type(raw).__name__}")
    allowed = ("auto_cache", "beta_headers", "stream")
    for key in raw:
        if key not in allowed:
            raise ConfigurationError(
                f"{_OPTIONS_WHERE}: unknown key {key!r}; expected one of {', '.join(allowed)}"
            )
    beta = raw.get("beta_headers", ())
    beta = (beta,) if isinstance(beta, str) else beta
    if not isinstance(beta, list | tuple) or not all(isinstance(b, str) for b in beta):
        raise ConfigurationError(f"{_OPTIONS_WHERE}.beta_headers must be a list of strings")
    return AnthropicOptions(
        beta_headers=tuple(beta),
        auto_cache=_flag(raw, "auto_cache"),
        stream=_flag(raw, "stream"),
    )


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, True)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{_OPTIONS_WHERE}.{key} must be true or false, got {value!r}")
    return value


def build_body(request: Request, options: AnthropicOptions) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages``; empty ``system``/``tools`` are left out."""
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "stream": options.stream,
        "messages": wire_messages(request.messages),
    }
    if request.system:
        body["system"] = request.system
    if request.tools:
        body["tools"] = [_wire_tool(tool) for tool in request.tools]
    if options.auto_cache:
        _mark_cache_breakpoints(body)
    return body


def _wire_tool(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


def _mark_cache_breakpoints(body: dict[str, Any]) -> None:
    """Three of the four allowed breakpoints: system, tool list, conversation so far.

    Marking the newest block each call lets the next call (whose prefix this one is) read it.
    """
    if "system" in body:
        body["system"] = [{"type": "text", "text": body["system"], "cache_control": _ephemeral()}]
    if "tools" in body:
        body["tools"][-1]["cache_control"] = _ephemeral()
    if body["messages"]:
        body["messages"][-1]["content"][-1]["cache_control"] = _ephemeral()


def _ephemeral() -> dict[str, str]:
    return {"type": "ephemeral"}


def wire_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages → strictly alternating user/assistant turns of content blocks.

    Tool results travel in user turns, so consecutive same-role turns are merged; within a user
    turn the ``tool_result`` blocks go first, as the API demands. Empty text is never sent (the
    API rejects empty text blocks), and a turn left with no blocks disappears.
    """
    turns: list[dict[str, Any]] = []
    for number, message in enumerate(messages, 1):
        role, blocks = _wire_turn(number, message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return turns


def _wire_turn(number: int, message: Message) -> tuple[str, list[dict[str, Any]]]:
    text = [{"type": "text", "text": message.content}] if message.content else []
    if message.role == "user":
        return "user", text
    if message.role == "assistant":
        calls = [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in message.tool_calls
        ]
        return "assistant", text + calls
    if message.role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        result["is_error"] = message.is_error
        return "user", [result]
    raise InvalidRequestError(
        f"message {number} has role {message.role!r}; expected user, assistant or tool "
        "(the system prompt goes in Request.system)"
    )


def timeout_for(request: Request, *, stream: bool) -> httpx.Timeout:
    """Explicit httpx timeouts (its 5 s default must never apply), bounded by the request's.

    The whole call is bounded separately by a trio deadline; ``read`` here is the longest
    silence between stream chunks.
    """
    total = request.timeout
    connect = min(CONNECT_TIMEOUT, total)
    if stream:
        return httpx.Timeout(total, connect=connect, read=min(STREAM_READ_TIMEOUT, total))
    return httpx.Timeout(total, connect=connect)


# --- response ----------------------------------------------------------------------------


def finish_reason_for(stop_reason: str | None) -> str:
    """The vendor's ``stop_reason`` → ``stop|length|tool_calls|content_filter|other``."""
    return FINISH_REASON_BY_STOP_REASON.get(stop_reason or "", "other")


@define
class _Block:
    type: str
    text: list[str] = field(factory=list)
    id: str = ""
    name: str = ""
    input: dict[str, Any] = field(factory=dict)
    json: list[str] = field(factory=list)


_USAGE_INPUT_FIELDS: Final = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@define
class StreamAccumulator:
    """Folds decoded stream events into one :class:`Response`; pure, no IO.

    Unknown event and block types (thinking, server tools, future additions) are ignored so a
    new API feature does not break old code. An ``error`` event raises its typed error.
    """

    provider: str = "anthropic"
    model: str = ""
    stop_reason: str | None = None
    done: bool = False
    _usage: dict[str, int] = field(factory=dict)
    _blocks: dict[int, _Block] = field(factory=dict)

    def feed(self, payload: Mapping[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "message_start":
            self._start(_as_dict(payload.get("message")))
        elif kind == "content_block_start":
            self._blocks[_as_int(payload.get("index"))] = _block(payload.get("content_block"))
        elif kind == "content_block_delta":
            self._delta(_as_int(payload.get("index")), _as_dict(payload.get("delta")))
        elif kind == "message_delta":
            self.stop_reason = _as_dict(payload.get("delta")).get("stop_reason")
            self._absorb_usage(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise _stream_error(payload, self.provider)

    def _start(self, message: dict[str, Any]) -> None:
        self.model = _as_str(message.get("model"))
        self.stop_reason = message.get("stop_reason")
        self._absorb_usage(message.get("usage"))
        for index, content in enumerate(_as_list(message.get("content"))):
            self._blocks[index] = _block(content)

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.get(index)
        if block is None:
            return
        if delta.get("type") == "text_delta":
            block.text.append(_as_str(delta.get("text")))
        elif delta.get("type") == "input_json_delta":
            block.json.append(_as_str(delta.get("partial_json")))

    def _absorb_usage(self, usage: Any) -> None:
        """Usage counts are cumulative: a later report replaces an earlier one, field by field."""
        for name, value in _as_dict(usage).items():
            if isinstance(value, int):
                self._usage[name] = value

    def response(self) -> Response:
        finish = finish_reason_for(self.stop_reason)
        blocks = [self._blocks[i] for i in sorted(self._blocks)]
        calls = [_tool_call(b, finish, self.provider) for b in blocks if b.type == "tool_use"]
        return Response(
            text="".join("".join(b.text) for b in blocks if b.type == "text"),
            tool_calls=tuple(call for call in calls if call is not None),
            finish_reason=finish,
            usage=Usage(
                input_tokens=sum(self._usage.get(name, 0) for name in _USAGE_INPUT_FIELDS),
                output_tokens=self._usage.get("output_tokens", 0),
            ),
            model=self.model,
            provider=self.provider,
        )


def response_from_message(message: Mapping[str, Any], provider: str) -> Response:
    """A non-streamed Messages API response object → :class:`Response`."""
    accumulator = StreamAccumulator(provider=provider)
    accumulator.feed({"type": "message_start", "message": message})
    return accumulator.response()


def _block(content: Any) -> _Block:
    content = _as_dict(content)
    return _Block(
        type=_as_str(content.get("type")),
        text=[_as_str(content.get("text"))],
        id=_as_str(content.get("id")),
        name=_as_str(content.get("name")),
        input=_as_dict(content.get("input")),
    )


def _tool_call(block: _Block, finish: str, provider: str) -> ToolCall | None:
    """The call, or ``None`` for one cut off by ``max_tokens`` (its JSON is incomplete)."""
    source = "".join(block.json)
    if not source:
        return ToolCall(block.id, block.name, block.input)
    try:
        arguments = json.loads(source)
    except ValueError:
        arguments = None
    if isinstance(arguments, dict):
        return ToolCall(block.id, block.name, arguments)
    if finish == "length":
        return None
    raise ServerError(
        f"tool {block.name!r} call arguments are not valid JSON: {_quote(source)}",
        provider=provider,
    )


def _stream_error(payload: Mapping[str, Any], provider: str) -> ProviderError:
    error = _as_dict(payload.get("error"))
    error_type = _as_str(error.get("type"))
    message = _as_str(error.get("message")) or "error event in the response stream"
    kind = ERROR_KIND_BY_TYPE.get(error_type, "server_error")
    if kind == "invalid_request":  # a context-length or content-filter message refines it
        kind = kind_for_http_status(400, message)
    return error_from_kind(kind, message, provider=provider, error_code=error_type, raw=payload)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date; junk → ``None``."""
    return retry_after_seconds(value, now.timestamp())


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else -1


def _quote(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…"


# --- transport ---------------------------------------------------------------------------


class AnthropicAdapter:
    """One Anthropic endpoint. Never retries; raises only :class:`ProviderError` subclasses.

    The API key goes into the ``x-api-key`` header and nowhere else: every vendor text that
    reaches an error message or ``raw`` is scrubbed of it first (a proxy may echo headers).
    """

    kind: str = "anthropic"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        api_key: str,
        name: str = "anthropic",
    ) -> None:
        self._client = client
        self._api_key = api_key
        self.name = name
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url = f"{self.base_url}/v1/messages"

    def __repr__(self) -> str:
        return f"AnthropicAdapter(name={self.name!r}, base_url={self.base_url!r})"

    async def complete(self, request: Request, *, on_progress: ProgressFn) -> Response:
        options = anthropic_options(request.provider_options)
        body = build_body(request, options)
        try:
            with trio.fail_after(request.timeout):
                return await self._post(request, body, options, on_progress)
        except trio.TooSlowError:
            raise RequestTimeoutError(
                f"no complete response within the request timeout of {request.timeout:g} s",
                provider=self.name,
            ) from None

    def _headers(self, options: AnthropicOptions) -> dict[str, str]:
        headers = {
            "x-api-key": self._api_key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
        }
        if options.beta_headers:
            headers["anthropic-beta"] = ",".join(options.beta_headers)
        return headers

    async def _post(
        self,
        request: Request,
        body: dict[str, Any],
        options: AnthropicOptions,
        on_progress: ProgressFn,
    ) -> Response:
        timeout = timeout_for(request, stream=options.stream)
        headers = self._headers(options)
        try:
            async with self._client.stream(
                "POST", self.url, json=body, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._http_error(response)
                return await self._read(response, on_progress)
        except httpx.TimeoutException as exc:
            raise RequestTimeoutError(
                f"{self._describe(exc)} (connect {timeout.connect:g} s, read {timeout.read:g} s)",
                provider=self.name,
            ) from None
        except httpx.RequestError as exc:
            raise NetworkError(
                f"could not reach {self.url}: {self._describe(exc)}", provider=self.name
            ) from None

    async def _read(self, response: httpx.Response, on_progress: ProgressFn) -> Response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return await self._read_stream(response, on_progress)
        await response.aread()
        on_progress()
        message = self._decode(response.text, "response body")
        return response_from_message(message, self.name)

    async def _read_stream(self, response: httpx.Response, on_progress: ProgressFn) -> Response:
        accumulator = StreamAccumulator(provider=self.name)
        try:
            # Closed explicitly: we stop at message_stop, before the body ends.
            events = iter_sse(response)
            async with aclosing(events):
                async for event in events:
                    on_progress()
                    accumulator.feed(self._decode(event.data, "stream event data"))
                    if accumulator.done:
                        break
        except httpx.TimeoutException:
            raise
        except httpx.RequestError as exc:
            raise NetworkError(
                f"stream ended before completion: {self._describe(exc)}", provider=self.name
            ) from None
        if not accumulator.done:
            raise NetworkError(
                "stream ended before completion (no message_stop event)", provider=self.name
            )
        return accumulator.response()

    def _decode(self, text: str, what: str) -> dict[str, Any]:
        """Parse vendor JSON; error payloads are scrubbed, since they reach error messages."""
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise ServerError(
                f"{what} is not valid JSON: {_quote(self._scrub(text))}", provider=self.name
            )
        if payload.get("type") == "error":
            scrubbed: dict[str, Any] = json.loads(self._scrub(text))
            return scrubbed
        return payload

    def _http_error(self, response: httpx.Response) -> ProviderError:
        text = self._scrub(response.text)
        try:
            raw: Any = json.loads(text)
        except ValueError:
            raw = text
        error = _as_dict(_as_dict(raw).get("error"))
        message = _as_str(error.get("message")) or _quote(text) or response.reason_phrase
        if response.status_code == 404:
            message += f" (POST {self.url}; base_url must be the API root, without /v1)"
        return error_for_http_status(
            response.status_code,
            message,
            provider=self.name,
            error_code=_as_str(error.get("type")),
            retry_after=parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC)),
            raw=raw,
        )

    def _describe(self, exc: Exception) -> str:
        detail = self._scrub(str(exc))
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, _REDACTED) if self._api_key else text
