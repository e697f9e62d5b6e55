"""The Gemini adapter (``kind: gemini``): the native ``streamGenerateContent`` API over SSE.

Native rather than Google's OpenAI-compatible endpoint because the unified-llm spec asks for each
vendor's own API, and because only the native API hands back *thought signatures*, which Gemini 3
requires to be echoed on the function calls of the current turn (a missing one is a 400). Tool
calls carry no ids on this API, so the adapter invents ``call_<uuid>`` ids and keeps a small
memo ``id → thoughtSignature`` to put each signature back on the part it came from.

The module is two layers: pure translation (request body, stream accumulation, error
classification — data in, data out, tested without a server) and one small IO method,
:meth:`GeminiAdapter.complete`, that owns timeouts and maps transport failures to typed errors.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import httpx
import trio
from attrs import define, field

from .base import (
    ContentFilterError,
    InvalidRequestError,
    NetworkError,
    ProviderError,
    RequestTimeoutError,
    error_from_kind,
    kind_for_http_status,
)
from .model import Message, ProgressFn, Request, Response, ToolCall, ToolSpec, Usage
from .retryafter import retry_after_seconds
from .sse import iter_sse

__all__ = [
    "DEFAULT_BASE_URL",
    "SKIP_SIGNATURE",
    "GeminiAdapter",
    "build_body",
    "error_from_payload",
    "finish_reason_for",
    "thinking_config_for",
]

#: The API root without a version (contract.md §9); the adapter appends ``/v1beta``.
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
#: Google's documented stand-in signature for function calls the API did not produce (history
#: from another provider, or a call this adapter instance never saw).
SKIP_SIGNATURE = "skip_thought_signature_validator"

_CONNECT_TIMEOUT_S = 10.0
#: Longest silence tolerated between two stream chunks (also bounded by the request timeout).
_READ_GAP_S = 60.0
_SIGNATURE_MEMO_SIZE = 4096

#: Gemini 2.5 thinking budgets for ``reasoning_effort``: the values Google's own OpenAI
#: compatibility layer uses for ``low|medium|high``.
_THINKING_BUDGETS: Mapping[str, int] = {"low": 1024, "medium": 8192, "high": 24576}

_FILTER_FINISHES = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII")
_IMAGE_FILTER_FINISHES = ("IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION")
_ERROR_FINISHES = ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS")
#: ``finishReason`` → the neutral finish reason; anything else (``OTHER``, ``LANGUAGE``, new
#: values) is ``other``.
_FINISH_REASONS: Mapping[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(_FILTER_FINISHES + _IMAGE_FILTER_FINISHES, "content_filter"),
    **dict.fromkeys((*_ERROR_FINISHES, "MISSING_THOUGHT_SIGNATURE"), "error"),
}

#: google.rpc status → HTTP status, for error objects that arrive inside a stream without a code.
_HTTP_BY_RPC_STATUS: Mapping[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
#: Gemini's context-overflow wording ("The input token count (N) exceeds the maximum number of
#: tokens allowed (M)") matches none of the generic hints in ``base``.
_CONTEXT_LENGTH_PHRASES = ("exceeds the maximum number of tokens", "input token count")
_INVALID_KEY_PHRASES = ("api key not valid", "api key expired")


# --- request ----------------------------------------------------------------------------------


def _model_generation(model: str) -> int | None:
    """The major version in ``gemini-<major>…``; ``None`` for aliases and custom names."""
    match = re.match(r"(?:models/)?gemini-(\d+)", model.lower())
    return int(match.group(1)) if match else None


def _is_pre_thinking(model: str) -> bool:
    name = model.lower().removeprefix("models/")
    return name.startswith(("gemini-1", "gemini-2.0"))


def thinking_config_for(
    model: str, effort: str | None, *, provider: str = "gemini"
) -> dict[str, Any] | None:
    """``generationConfig.thinkingConfig`` for ``reasoning_effort``, or ``None`` to send none.

    Gemini 3 and later take ``thinkingLevel``; Gemini 2.5 takes ``thinkingBudget`` (tokens);
    1.x and 2.0 cannot think, so the field is omitted rather than provoking a 400. Aliases and
    custom names get ``thinkingBudget``, which both generations accept (Gemini 3 for backwards
    compatibility).
    """
    if effort is None:
        return None
    if effort not in _THINKING_BUDGETS:
        raise InvalidRequestError(
            f"reasoning_effort {effort!r} is not supported: use low, medium or high",
            provider=provider,
        )
    if _is_pre_thinking(model):
        return None
    generation = _model_generation(model)
    if generation is not None and generation >= 3:
        return {"thinkingLevel": effort}
    return {"thinkingBudget": _THINKING_BUDGETS[effort]}


def _needs_placeholder_signature(model: str) -> bool:
    """Gemini 3 rejects unsigned function calls; 1.x/2.x neither require nor expect them."""
    generation = _model_generation(model)
    return generation is None or generation >= 3


def _declaration(tool: ToolSpec) -> dict[str, Any]:
    # ``parametersJsonSchema`` takes full JSON Schema; ``parameters`` is an OpenAPI subset that
    # rejects common keywords such as ``additionalProperties``.
    return {
        "name": tool.name,
        "description": tool.description,
        "parametersJsonSchema": tool.parameters,
    }


def _function_call_part(call: ToolCall, signatures: Mapping[str, str]) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
    if call.id in signatures:
        part["thoughtSignature"] = signatures[call.id]
    return part


def _turn(
    message: Message,
    signatures: Mapping[str, str],
    call_names: MutableMapping[str, str],
    provider: str,
) -> tuple[str, list[dict[str, Any]]]:
    """One message as ``(role, parts)``; empty text is dropped (Gemini rejects empty parts)."""
    text = [{"text": message.content}] if message.content else []
    if message.role == "user":
        return "user", text
    if message.role == "assistant":
        call_names.update((call.id, call.name) for call in message.tool_calls)
        calls = [_function_call_part(call, signatures) for call in message.tool_calls]
        return "model", text + calls
    if message.role == "tool":
        name = message.name or call_names.get(message.tool_call_id, "")
        if not name:
            raise InvalidRequestError(
                f"tool result for call {message.tool_call_id!r} names no function and answers "
                "no earlier tool call: set Message.name",
                provider=provider,
            )
        key = "error" if message.is_error else "result"
        response = {"name": name, "response": {key: message.content}}
        return "user", [{"functionResponse": response}]
    raise InvalidRequestError(
        f"message role {message.role!r} is not supported: use user, assistant or tool "
        "(the system prompt goes in Request.system)",
        provider=provider,
    )


def _contents(
    messages: Iterable[Message], signatures: Mapping[str, str], *, placeholder: bool, provider: str
) -> list[dict[str, Any]]:
    """Messages as ``contents``: same-role neighbours merged, so parallel tool results travel
    together after their calls (Gemini rejects interleaved calls and responses)."""
    call_names: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    for message in messages:
        role, parts = _turn(message, signatures, call_names, provider)
        if not parts:
            continue
        calls = [part for part in parts if "functionCall" in part]
        if placeholder and calls and not any("thoughtSignature" in part for part in calls):
            calls[0]["thoughtSignature"] = SKIP_SIGNATURE
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def build_body(
    request: Request, signatures: Mapping[str, str], *, provider: str = "gemini"
) -> dict[str, Any]:
    """The ``streamGenerateContent`` JSON body for ``request``.

    ``signatures`` maps tool-call ids this adapter issued to the thought signature Gemini sent
    with them; a model turn whose calls have none gets :data:`SKIP_SIGNATURE` on its first call
    (Gemini 3 and unversioned models only). Unusable input raises
    :class:`~attractor_trio.providers.base.InvalidRequestError` before anything is sent.
    """
    placeholder = _needs_placeholder_signature(request.model)
    contents = _contents(request.messages, signatures, placeholder=placeholder, provider=provider)
    body: dict[str, Any] = {"contents": contents}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
    config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
    thinking = thinking_config_for(request.model, request.reasoning_effort, provider=provider)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    body["generationConfig"] = config
    return body


# --- response ---------------------------------------------------------------------------------


def finish_reason_for(raw: str, *, has_tool_calls: bool) -> str:
    """Gemini's ``finishReason`` → ``stop|length|tool_calls|content_filter|error|other``.

    Gemini reports a function-calling turn as ``STOP``; the calls themselves make it
    ``tool_calls``.
    """
    reason = _FINISH_REASONS.get(raw, "other")
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex}"


@define
class _Accumulator:
    """Folds partial ``GenerateContentResponse`` chunks into one :class:`Response`.

    Usage metadata is cumulative on every chunk, so the last one wins. Thought parts
    (``thought: true``) are reasoning summaries, not answer text, and are skipped.
    """

    new_id: Callable[[], str] = _new_call_id
    text: list[str] = field(factory=list)
    tool_calls: list[ToolCall] = field(factory=list)
    signatures: dict[str, str] = field(factory=dict)
    finish: str = ""
    finish_message: str = ""
    block_reason: str = ""
    usage: Usage = field(factory=Usage)
    model: str = ""

    @property
    def complete(self) -> bool:
        """Gemini has no terminal event: a finish reason (or a blocked prompt) is the end."""
        return bool(self.finish or self.block_reason)

    def feed(self, chunk: Mapping[str, Any]) -> None:
        self.model = str(chunk.get("modelVersion") or self.model)
        if block_reason := (chunk.get("promptFeedback") or {}).get("blockReason"):
            self.block_reason = str(block_reason)
        if usage := chunk.get("usageMetadata"):
            self.usage = Usage(
                input_tokens=int(usage.get("promptTokenCount", 0)),
                output_tokens=int(usage.get("candidatesTokenCount", 0))
                + int(usage.get("thoughtsTokenCount", 0)),
            )
        candidates = chunk.get("candidates") or []
        if not candidates:
            return
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            self._feed_part(part)
        if candidate.get("finishReason"):
            self.finish = str(candidate["finishReason"])
            self.finish_message = str(candidate.get("finishMessage") or "")

    def _feed_part(self, part: Mapping[str, Any]) -> None:
        if call := part.get("functionCall"):
            tool_call = ToolCall(
                self.new_id(), str(call.get("name", "")), dict(call.get("args") or {})
            )
            self.tool_calls.append(tool_call)
            if part.get("thoughtSignature"):
                self.signatures[tool_call.id] = str(part["thoughtSignature"])
        elif "text" in part and not part.get("thought"):
            self.text.append(str(part["text"]))

    def response(self, *, provider: str, model: str) -> Response:
        """The result, or :class:`ContentFilterError` when a filter left nothing to return.

        A blocked prompt is always an error. A response the safety filter stopped is an error
        only when it produced no text and no tool calls; partial text is returned with
        ``finish_reason="content_filter"`` so the caller can decide.
        """
        if self.block_reason:
            raise ContentFilterError(
                f"prompt blocked by Gemini (blockReason {self.block_reason})",
                provider=provider,
                error_code=self.block_reason,
            )
        reason = finish_reason_for(self.finish, has_tool_calls=bool(self.tool_calls))
        text = "".join(self.text)
        if reason == "content_filter" and not text and not self.tool_calls:
            detail = f": {self.finish_message}" if self.finish_message else ""
            raise ContentFilterError(
                f"response blocked by Gemini (finishReason {self.finish}){detail}",
                provider=provider,
                error_code=self.finish,
            )
        return Response(
            text=text,
            tool_calls=tuple(self.tool_calls),
            finish_reason=reason,
            usage=self.usage,
            model=self.model or model,
            provider=provider,
        )


# --- errors -----------------------------------------------------------------------------------


def _error_object(payload: Any) -> Mapping[str, Any]:
    """``{"error": {...}}``, also wrapped in a list as the streaming endpoint sometimes sends."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _details(error: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _is_invalid_key(message: str, details: list[Mapping[str, Any]]) -> bool:
    """Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401."""
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        return True
    return any(phrase in message.lower() for phrase in _INVALID_KEY_PHRASES)


def _is_daily_quota(details: list[Mapping[str, Any]]) -> bool:
    """A per-day quota will not clear by retrying in a minute; per-minute limits will."""
    ids = [str(v.get("quotaId", "")) for d in details for v in d.get("violations") or []]
    ids += [str((d.get("metadata") or {}).get("quota_limit", "")) for d in details]
    return any("perday" in quota_id.lower() for quota_id in ids)


def _kind(status: int, message: str, details: list[Mapping[str, Any]]) -> str:
    """contract.md §9's table, refined for Gemini's habits.

    Every Gemini 429 says "quota", so the generic quota hint would make plain rate limits
    non-retryable; only a per-day quota violation is ``quota_exceeded`` here.
    """
    if _is_invalid_key(message, details):
        return "auth"
    if status == 429:
        return "quota_exceeded" if _is_daily_quota(details) else "rate_limit"
    if any(phrase in message.lower() for phrase in _CONTEXT_LENGTH_PHRASES):
        return "context_length"
    return kind_for_http_status(status, message)


def _retry_after_header(value: str) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP-date."""
    return retry_after_seconds(value, time.time())


def _retry_after(headers: Mapping[str, str], details: list[Mapping[str, Any]]) -> float | None:
    """The ``Retry-After`` header, else the body's ``google.rpc.RetryInfo`` (``"22.5s"``)."""
    if header := headers.get("retry-after"):
        return _retry_after_header(header.strip())
    for detail in details:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(detail.get("retryDelay", "")))
        if match:
            return float(match.group(1))
    return None


def error_from_payload(
    status: int | None, payload: Any, *, headers: Mapping[str, str], provider: str
) -> ProviderError:
    """The typed error for a Gemini error body (``{"error": {code, message, status, details}}``).

    ``status`` is the HTTP status; for an error inside a 200 stream it is ``None`` and the
    body's ``code`` (else its google.rpc ``status``) stands in.
    """
    error = _error_object(payload)
    rpc_status = str(error.get("status") or "")
    if status is None:
        code = error.get("code")
        status = code if isinstance(code, int) else _HTTP_BY_RPC_STATUS.get(rpc_status, 500)
    message = str(error.get("message") or f"unexpected error body: {str(payload)[:300]!r}")
    details = _details(error)
    return error_from_kind(
        _kind(status, message, details),
        message,
        provider=provider,
        status_code=status,
        error_code=rpc_status,
        retry_after=_retry_after(headers, details),
        raw=payload,
    )


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


def _scrub_text(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _scrub(value: Any, secret: str) -> Any:
    """``value`` with every occurrence of ``secret`` masked, however deeply nested."""
    if isinstance(value, str):
        return _scrub_text(value, secret)
    if isinstance(value, Mapping):
        return {_scrub(k, secret): _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, secret) for item in value]
    return value


# --- IO ---------------------------------------------------------------------------------------


class GeminiAdapter:
    """Gemini's native API as an :class:`~attractor_trio.providers.model.Adapter`.

    ``client`` is shared and owned by the caller. The key travels only in the
    ``x-goog-api-key`` header (never the URL, which proxies and logs keep), and is masked in
    every error message and ``raw`` payload.
    """

    kind = "gemini"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str | None = None,
        api_key: str,
        name: str = "gemini",
    ) -> None:
        self._client = client
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key
        self.name = name
        self._signatures: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"GeminiAdapter(name={self.name!r}, base_url={self.base_url!r})"

    def url_for(self, model: str) -> str:
        model_id = quote(model.removeprefix("models/"), safe="")
        return f"{self.base_url}/{API_VERSION}/models/{model_id}:streamGenerateContent"

    async def complete(self, request: Request, *, on_progress: ProgressFn) -> Response:
        """Stream one completion; ``request.timeout`` bounds the whole call, not just a read."""
        body = build_body(request, self._signatures, provider=self.name)
        with trio.move_on_after(request.timeout):
            return await self._stream(request, body, on_progress)
        raise RequestTimeoutError(
            f"no complete response within the request timeout of {request.timeout:g}s",
            provider=self.name,
        )

    async def _stream(
        self, request: Request, body: dict[str, Any], on_progress: ProgressFn
    ) -> Response:
        timeout = httpx.Timeout(
            request.timeout,
            connect=min(_CONNECT_TIMEOUT_S, request.timeout),
            read=min(_READ_GAP_S, request.timeout),
        )
        accumulator = _Accumulator()
        try:
            async with self._client.stream(
                "POST",
                self.url_for(request.model),
                params={"alt": "sse"},
                json=body,
                headers=self._auth_headers(),
                timeout=timeout,
            ) as response:
                if not response.is_success:
                    raw = _decode((await response.aread()).decode("utf-8", "replace"))
                    raise self._error(response.status_code, raw, response.headers)
                # Close the generator promptly when an error event makes us raise mid-stream.
                async with aclosing(iter_sse(response)) as events:
                    async for event in events:
                        on_progress()
                        self._feed(accumulator, event.data)
        except httpx.TimeoutException as exc:
            raise RequestTimeoutError(self._describe(exc), provider=self.name) from exc
        except httpx.TransportError as exc:
            raise NetworkError(self._describe(exc), provider=self.name) from exc
        if not accumulator.complete:
            raise NetworkError(
                "stream ended before completion (no finishReason received)", provider=self.name
            )
        self._remember(accumulator.signatures)
        return accumulator.response(provider=self.name, model=request.model)

    def _auth_headers(self) -> dict[str, str]:
        """No key, no header: a keyless proxy ``base_url`` must not receive an empty one."""
        return {"x-goog-api-key": self._api_key} if self._api_key else {}

    def _feed(self, accumulator: _Accumulator, data: str) -> None:
        chunk = _decode(data)
        if not isinstance(chunk, Mapping):
            raise NetworkError(
                "malformed stream data (expected a JSON object): "
                + _scrub_text(data[:200], self._api_key),
                provider=self.name,
            )
        if "error" in chunk:
            raise self._error(None, chunk, {})
        accumulator.feed(chunk)

    def _error(self, status: int | None, payload: Any, headers: Mapping[str, str]) -> ProviderError:
        clean = _scrub(payload, self._api_key)
        return error_from_payload(status, clean, headers=headers, provider=self.name)

    def _describe(self, exc: httpx.HTTPError) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return _scrub_text(text, self._api_key)

    def _remember(self, signatures: Mapping[str, str]) -> None:
        """Keep the newest signatures; the ids are random, so old entries only cost memory."""
        self._signatures.update(signatures)
        while len(self._signatures) > _SIGNATURE_MEMO_SIZE:
            del self._signatures[next(iter(self._signatures))]
