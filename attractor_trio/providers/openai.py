"""The OpenAI adapter (``kind: openai``): the Responses API (``POST {base_url}/responses``).

Also home of the HTTP plumbing the two OpenAI-family adapters share (:class:`Endpoint`): one
streamed POST with explicit timeouts, vendor error bodies turned into typed errors, and the API
key kept out of every error. What the bytes mean stays with each adapter's decoder — a small
state object fed one SSE event at a time, with no IO, so the wire logic is tested on data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any, Protocol, final

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
    error_from_kind,
    kind_for_http_status,
)
from .model import Message, ProgressFn, Request, Response, ToolCall, ToolSpec, Usage
from .retryafter import retry_after_from_headers
from .sse import SSEEvent, iter_sse

__all__ = [
    "DEFAULT_BASE_URL",
    "Endpoint",
    "OpenAIAdapter",
    "ResponsesStream",
    "StreamDecoder",
    "http_error",
    "json_object",
    "parse_arguments",
    "parse_retry_after",
    "responses_body",
    "stream_error",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Longest silence allowed between stream chunks (bounded by ``Request.timeout``). Generous on
#: purpose: a reasoning model may think for minutes before its first output event, and the
#: engine's stall watchdog, fed by ``on_progress``, is the real liveness check.
STREAM_IDLE_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10.0
_MAX_MESSAGE = 500
_MAX_RAW_TEXT = 2000
_REDACTED = "[redacted]"

#: Error codes sent without an HTTP status (stream ``error`` events, failed responses) → kind.
_KIND_BY_ERROR_CODE: Mapping[str, str] = {
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "quota_exceeded",
    "context_length_exceeded": "context_length",
    "server_error": "server_error",
    "invalid_prompt": "invalid_request",
    "invalid_request_error": "invalid_request",
    "invalid_api_key": "auth",
    "authentication_error": "auth",
    "content_filter": "content_filter",
    "image_content_policy_violation": "content_filter",
    "vector_store_timeout": "timeout",
}


# --- shared plumbing: errors ------------------------------------------------------------------


def scrub(value: Any, secret: str) -> Any:
    """``value`` (text or decoded JSON) with every occurrence of ``secret`` redacted."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, _REDACTED)
    if isinstance(value, dict):
        return {scrub(k, secret): scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secret) for v in value]
    return value


def error_fields(payload: Any) -> tuple[str, str]:
    """``(message, code)`` of an OpenAI-style error body or error object.

    Tolerates what local servers send instead: ``{"error": "text"}`` (Ollama),
    ``{"object": "error", "message", "code": 400}`` (vLLM), ``{"detail": ...}`` (FastAPI).
    """
    if not isinstance(payload, dict):
        return ("" if payload is None else str(payload)), ""
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error, ""
    if not isinstance(error, dict):
        return json.dumps(payload)[:_MAX_MESSAGE], ""
    message = error.get("message") or error.get("detail") or payload.get("detail") or ""
    code = error.get("code")
    if code in (None, ""):
        code = error.get("type") or ""
    return str(message)[:_MAX_MESSAGE], str(code)


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an
    HTTP-date, relative to the wall clock ``now``); ``None`` when absent or unreadable."""
    return retry_after_from_headers(headers, now)


def http_error(
    status: int, headers: Mapping[str, str], body: bytes, *, provider: str, secret: str, now: float
) -> ProviderError:
    """The typed error for an HTTP error reply, with the vendor's own message and code."""
    text = body.decode("utf-8", "replace").strip()
    try:
        raw: Any = json.loads(text)
        message, code = error_fields(raw)
    except ValueError:
        raw, message, code = text[:_MAX_RAW_TEXT], text[:_MAX_MESSAGE], ""
    message = scrub(message, secret) or httpx.codes.get_reason_phrase(status) or "error"
    retry_after = parse_retry_after(headers, now=now) if status in (429, 503) else None
    kind = kind_for_http_status(status, f"{message} {code}")
    return error_from_kind(
        kind,
        message,
        provider=provider,
        status_code=status,
        error_code=code,
        retry_after=retry_after,
        raw=scrub(raw, secret),
    )


def stream_error(error: Any, *, provider: str, secret: str) -> ProviderError:
    """The typed error for an error reported inside a 200 stream (no HTTP status to go by)."""
    message, code = error_fields(error)
    message = scrub(message, secret) or "the provider reported an error"
    inner = error.get("error", error) if isinstance(error, dict) else None
    numeric = inner.get("code") if isinstance(inner, dict) else None
    if isinstance(numeric, int) and not isinstance(numeric, bool):
        kind = kind_for_http_status(numeric, message)  # vLLM puts the HTTP status in ``code``
    elif kind_for_http_status(0, message) == "context_length":
        kind = "context_length"
    elif code in _KIND_BY_ERROR_CODE:
        kind = _KIND_BY_ERROR_CODE[code]
    elif code.startswith(("invalid_", "image_")):
        kind = "invalid_request"
    else:
        kind = "server_error"  # unknown errors default to retryable (unified-llm spec)
    return error_from_kind(
        kind, message, provider=provider, error_code=code, raw=scrub(error, secret)
    )


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` decoded as a JSON object, or ``None`` (keep-alives and junk are skipped)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as a dict. Text that is not a JSON object (say, cut off by the token
    limit) is kept under ``_raw_arguments`` so the tool reports it instead of it vanishing."""
    if isinstance(arguments, dict):
        return arguments
    text = "" if arguments is None else str(arguments)
    if not text.strip():
        return {}
    value = json_object(text)
    return value if value is not None else {"_raw_arguments": text}


# --- shared plumbing: the exchange ------------------------------------------------------------


class StreamDecoder(Protocol):
    """Turns one vendor's stream (or whole JSON reply) into a :class:`Response`."""

    def feed(self, event: SSEEvent) -> Response | None:
        """Take one event; return the response at the terminal event, raise on an error event."""

    def at_eof(self) -> Response | None:
        """The response if a stream that ended cleanly, without its terminal event, is whole."""

    def from_json(self, payload: Any) -> Response:
        """The response from a non-streamed body (servers that ignore ``stream``)."""


@frozen
class Endpoint:
    """One POST URL of an OpenAI-family API. The key goes only into the ``Authorization``
    header (none when empty, for local servers) and is redacted from every error."""

    client: httpx.AsyncClient
    url: str
    provider: str
    api_key: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def post(
        self,
        body: dict[str, Any],
        request: Request,
        decoder: StreamDecoder,
        on_progress: ProgressFn,
    ) -> Response:
        """POST ``body`` and decode the reply, all within ``request.timeout`` seconds."""
        try:
            with trio.fail_after(request.timeout):
                return await self._exchange(body, request, decoder, on_progress)
        except trio.TooSlowError:
            message = f"no complete response within the request timeout ({request.timeout:g}s)"
            raise RequestTimeoutError(message, provider=self.provider) from None
        except httpx.TimeoutException as exc:
            raise RequestTimeoutError(self._describe(exc), provider=self.provider) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # before TransportError
            message = f"bad base_url in {self.url!r}: {exc} (expected e.g. https://host/v1)"
            raise ConfigurationError(message, provider=self.provider) from None
        except httpx.HTTPError as exc:  # connect, read and protocol failures
            raise NetworkError(self._describe(exc), provider=self.provider) from None

    async def _exchange(
        self,
        body: dict[str, Any],
        request: Request,
        decoder: StreamDecoder,
        on_progress: ProgressFn,
    ) -> Response:
        timeout = httpx.Timeout(
            request.timeout,
            connect=min(CONNECT_TIMEOUT, request.timeout),
            read=min(STREAM_IDLE_TIMEOUT, request.timeout),
        )
        stream = self.client.stream(
            "POST", self.url, headers=self.headers(), json=body, timeout=timeout
        )
        async with stream as reply:
            if not reply.is_success:
                content = await reply.aread()
                raise http_error(
                    reply.status_code,
                    reply.headers,
                    content,
                    provider=self.provider,
                    secret=self.api_key,
                    now=time.time(),
                )
            if reply.headers.get("content-type", "").startswith("application/json"):
                content = await reply.aread()
                on_progress()
                return decoder.from_json(_json_reply(content, self.provider))
            async with aclosing(iter_sse(reply)) as events:
                async for event in events:
                    on_progress()
                    response = decoder.feed(event)
                    if response is not None:
                        return response
        response = decoder.at_eof()
        if response is None:
            raise NetworkError("stream ended before completion", provider=self.provider)
        return response

    def _describe(self, exc: Exception) -> str:
        detail = str(exc) or "no details"
        return str(scrub(f"{type(exc).__name__}: {detail}", self.api_key))


def _json_reply(content: bytes, provider: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise ServerError("the reply is not valid JSON", provider=provider) from None


# --- the Responses API ------------------------------------------------------------------------


def responses_body(request: Request, *, provider: str = "openai") -> dict[str, Any]:
    """The ``POST /responses`` body; fields the request leaves unset are not sent."""
    body: dict[str, Any] = {"model": request.model}
    if request.system:
        body["instructions"] = request.system
    body["input"] = [item for m in request.messages for item in _input_items(m, provider)]
    if request.tools:
        body["tools"] = [_tool(spec) for spec in request.tools]
    body["max_output_tokens"] = request.max_tokens
    if request.reasoning_effort:
        body["reasoning"] = {"effort": request.reasoning_effort}
    body["stream"] = True
    return body


def _tool(spec: ToolSpec) -> dict[str, Any]:
    # ``strict`` defaults to true in the Responses API, which rejects schemas with optional
    # properties — and the agent tools have some (``read_file``'s offset and limit).
    return {
        "type": "function",
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters,
        "strict": False,
    }


def _input_items(message: Message, provider: str) -> list[dict[str, Any]]:
    if message.role == "user":
        return [{"role": "user", "content": message.content}]
    if message.role == "assistant":
        items = [{"role": "assistant", "content": message.content}] if message.content else []
        items += [
            {
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": json.dumps(call.arguments),
            }
            for call in message.tool_calls
        ]
        return items
    if message.role == "tool":
        # The API has no error flag for a tool result: the output text has to say so.
        return [
            {
                "type": "function_call_output",
                "call_id": message.tool_call_id,
                "output": message.content,
            }
        ]
    raise InvalidRequestError(
        f"message role {message.role!r} is not one of user, assistant, tool", provider=provider
    )


def finish_reason_for(status: str | None, incomplete_reason: str | None, has_calls: bool) -> str:
    """Responses ``status`` (+ ``incomplete_details.reason``) → the model's finish reason."""
    if status in ("completed", None):
        return "tool_calls" if has_calls else "stop"
    if status == "incomplete":
        return {"max_output_tokens": "length", "content_filter": "content_filter"}.get(
            incomplete_reason or "", "other"
        )
    return "other"


def response_from_payload(payload: Any, *, provider: str, secret: str = "") -> Response:
    """A Responses API ``response`` object → :class:`Response` (a failed one raises)."""
    if not isinstance(payload, dict):
        raise ServerError("the reply is not a response object", provider=provider)
    status = payload.get("status")
    if status == "failed":
        error = payload.get("error") or {"message": "the response failed"}
        raise stream_error(error, provider=provider, secret=secret)
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in payload.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            texts += [_part_text(part) for part in item.get("content") or []]
        elif item.get("type") == "function_call":
            call_id = str(item.get("call_id") or item.get("id") or "")
            calls.append(
                ToolCall(call_id, str(item.get("name", "")), parse_arguments(item.get("arguments")))
            )
    details = payload.get("incomplete_details") or {}
    usage = payload.get("usage") or {}
    return Response(
        text="".join(texts),
        tool_calls=tuple(calls),
        finish_reason=finish_reason_for(status, details.get("reason"), bool(calls)),
        usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
        model=str(payload.get("model") or ""),
        provider=provider,
    )


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return ""
    if part.get("type") == "output_text":
        return str(part.get("text") or "")
    if part.get("type") == "refusal":
        return str(part.get("refusal") or "")
    return ""


@define
class ResponsesStream:
    """Decoder state for one Responses stream.

    The terminal ``response.completed``/``response.incomplete`` event carries the whole
    response, which is what gets parsed. The output items and text/argument deltas are kept
    too, so a Responses-compatible server that sends a bare terminal event still yields
    everything it streamed.
    """

    provider: str
    secret: str = field(default="", repr=False)
    _items: dict[int, dict[str, Any]] = field(factory=dict)
    _text: dict[int, list[str]] = field(factory=dict)

    def feed(self, event: SSEEvent) -> Response | None:
        payload = json_object(event.data)
        if payload is None:
            return None
        kind = payload.get("type") or event.event
        index = payload.get("output_index", 0)
        if kind in ("response.output_item.added", "response.output_item.done"):
            if isinstance(payload.get("item"), dict):
                self._items[index] = dict(payload["item"])
        elif kind == "response.output_text.delta":
            self._text.setdefault(index, []).append(str(payload.get("delta", "")))
        elif kind == "response.function_call_arguments.delta":
            item = self._items.get(index)
            if item is not None:
                item["arguments"] = str(item.get("arguments") or "") + str(payload.get("delta", ""))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            return self._finish(payload.get("response"))
        elif kind == "error":
            raise stream_error(payload, provider=self.provider, secret=self.secret)
        return None

    def at_eof(self) -> Response | None:
        return None  # only the terminal event makes a Responses stream whole

    def from_json(self, payload: Any) -> Response:
        return response_from_payload(payload, provider=self.provider, secret=self.secret)

    def _finish(self, response: Any) -> Response:
        final = dict(response) if isinstance(response, dict) else {}
        if not final.get("output"):
            final["output"] = self._accumulated_output()
        return response_from_payload(final, provider=self.provider, secret=self.secret)

    def _accumulated_output(self) -> list[dict[str, Any]]:
        output = []
        for index in sorted(self._items.keys() | self._text.keys()):
            item = self._items.get(index, {"type": "message"})
            if item.get("type") == "message" and not item.get("content"):
                text = "".join(self._text.get(index, []))
                item = {**item, "content": [{"type": "output_text", "text": text}]}
            output.append(item)
        return output


@final
class OpenAIAdapter:
    """``kind: openai`` — the Responses API, always streamed.

    An empty ``api_key`` sends no ``Authorization`` header, for Responses-compatible local
    servers. ``provider_options`` are not sent.
    """

    kind = "openai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        api_key: str,
        name: str = "openai",
    ) -> None:
        self.name = name
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._endpoint = Endpoint(client, f"{self.base_url}/responses", name, api_key)

    async def complete(self, request: Request, *, on_progress: ProgressFn) -> Response:
        body = responses_body(request, provider=self.name)
        decoder = ResponsesStream(self.name, secret=self._endpoint.api_key)
        return await self._endpoint.post(body, request, decoder, on_progress)
