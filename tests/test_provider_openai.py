"""The OpenAI Responses API adapter against a real local HTTP server, plus the shared SSE parser."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.providers.base import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    NetworkError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from attractor_trio.providers.model import Message, Request, ToolCall, ToolSpec
from attractor_trio.providers.openai import (
    DEFAULT_BASE_URL,
    OpenAIAdapter,
    parse_retry_after,
    responses_body,
)
from attractor_trio.providers.sse import SSEEvent, iter_sse
from tests.fakes.openai import (
    Progress,
    closed_port_url,
    error_reply,
    responses_error_event,
    responses_json,
    responses_sse,
    sse_event,
)
from tests.fakes.server import FakeServer, Reply

KEY = "sk-test-SECRET-KEY-0123456789"
PATH = r"^/v1/responses$"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as shared:
        yield shared


def adapter_for(server: FakeServer, client: httpx.AsyncClient, **kw: Any) -> OpenAIAdapter:
    kw.setdefault("api_key", KEY)
    return OpenAIAdapter(client, base_url=server.base_url + "/v1", **kw)


def hello(**kw: Any) -> Request:
    kw.setdefault("messages", (Message("user", "hi"),))
    return Request(model="gpt-test", **kw)


async def complete(
    server: FakeServer, client: httpx.AsyncClient, *replies: Reply, request: Request | None = None
) -> Any:
    server.script(PATH, *replies)
    return await adapter_for(server, client).complete(request or hello(), on_progress=Progress())


# --- request shape ----------------------------------------------------------------------------


async def test_request_shape_maps_every_part_of_the_conversation(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    request = Request(
        model="gpt-5",
        system="be terse",
        max_tokens=321,
        reasoning_effort="high",
        tools=(ToolSpec("read_file", "Read a file", {"type": "object", "properties": {}}),),
        messages=(
            Message("user", "look at a.txt"),
            Message(
                "assistant", "reading", tool_calls=(ToolCall("call_1", "read_file", {"p": 1}),)
            ),
            Message("tool", "contents", tool_call_id="call_1", name="read_file"),
        ),
    )
    fake_server.script(PATH, Reply.sse(responses_sse(["ok"])))
    await adapter_for(fake_server, client).complete(request, on_progress=Progress())

    sent = fake_server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/responses")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    body = sent.json()
    assert body == {
        "model": "gpt-5",
        "instructions": "be terse",
        "input": [
            {"role": "user", "content": "look at a.txt"},
            {"role": "assistant", "content": "reading"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "read_file",
                "arguments": '{"p": 1}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "contents"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "read_file",
                "description": "Read a file",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            }
        ],
        "max_output_tokens": 321,
        "reasoning": {"effort": "high"},
        "stream": True,
    }


def test_optional_fields_are_omitted_when_unset() -> None:
    body = responses_body(hello())
    assert set(body) == {"model", "input", "max_output_tokens", "stream"}


def test_an_assistant_turn_with_only_tool_calls_sends_no_empty_message() -> None:
    call = ToolCall("c1", "glob", {"pattern": "*.py"})
    body = responses_body(hello(messages=(Message("assistant", tool_calls=(call,)),)))
    assert [item.get("type") for item in body["input"]] == ["function_call"]


async def test_an_unknown_role_is_an_invalid_request_without_any_http_call(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(InvalidRequestError, match="role 'robot'"):
        await complete(fake_server, client, request=hello(messages=(Message("robot", "x"),)))
    assert fake_server.requests == []


def test_default_base_url_is_the_public_api_root_with_v1() -> None:
    adapter = OpenAIAdapter(httpx.AsyncClient(), api_key=KEY)
    assert DEFAULT_BASE_URL == "https://api.openai.com/v1"
    assert adapter.base_url == DEFAULT_BASE_URL
    assert adapter.kind == "openai"


async def test_no_api_key_sends_no_authorization_header(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    fake_server.script(PATH, Reply.sse(responses_sse(["ok"])))
    adapter = adapter_for(fake_server, client, api_key="")
    await adapter.complete(hello(), on_progress=Progress())
    assert "authorization" not in fake_server.requests[0].headers


# --- successful responses ---------------------------------------------------------------------


async def test_streamed_text_is_returned_with_usage_and_progress_per_event(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    events = responses_sse(["Hel", "lo"])
    fake_server.script(PATH, Reply.sse(events))
    progress = Progress()
    adapter = adapter_for(fake_server, client, name="primary")
    response = await adapter.complete(hello(), on_progress=progress)
    assert response.text == "Hello"
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert (response.model, response.provider) == ("gpt-test", "primary")
    assert progress.count == len(events)


async def test_streamed_function_calls_become_tool_calls(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    calls = [("call_a", "read_file", '{"file_path": "a.txt"}'), ("call_b", "glob", "{}")]
    response = await complete(fake_server, client, Reply.sse(responses_sse(["Let me look"], calls)))
    assert response.text == "Let me look"
    assert response.tool_calls == (
        ToolCall("call_a", "read_file", {"file_path": "a.txt"}),
        ToolCall("call_b", "glob", {}),
    )
    assert response.finish_reason == "tool_calls"


async def test_a_non_streamed_json_reply_is_parsed_too(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    body = responses_json("plain", [("c1", "shell", '{"command": "ls"}')])
    response = await complete(fake_server, client, Reply.json(body))
    assert response.text == "plain"
    assert response.tool_calls == (ToolCall("c1", "shell", {"command": "ls"}),)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), ("other", "other")],
)
async def test_an_incomplete_response_maps_its_reason(
    fake_server: FakeServer, client: httpx.AsyncClient, reason: str, finish: str
) -> None:
    final = responses_json("trunc", status="incomplete", incomplete_reason=reason)
    events = responses_sse(["trunc"], terminal="response.incomplete", final=final)
    response = await complete(fake_server, client, Reply.sse(events))
    assert (response.text, response.finish_reason) == ("trunc", finish)


async def test_deltas_are_used_when_the_terminal_event_carries_no_output(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    """Responses-compatible servers may send a bare ``response.completed``: the accumulated
    text deltas and function-call argument deltas still make the response."""
    calls = [("call_x", "grep", '{"pattern": "TODO"}')]
    events = responses_sse(["a", "b"], calls, final=responses_json(output=[]))
    events = [e for e in events if b"response.output_item.done" not in e]
    response = await complete(fake_server, client, Reply.sse(events))
    assert response.text == "ab"
    assert response.tool_calls == (ToolCall("call_x", "grep", {"pattern": "TODO"}),)
    assert response.finish_reason == "tool_calls"


async def test_tool_arguments_that_are_not_a_json_object_are_kept_raw(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    body = responses_json(calls=[("c1", "shell", '{"command": "l')])
    response = await complete(fake_server, client, Reply.json(body))
    assert response.tool_calls[0].arguments == {"_raw_arguments": '{"command": "l'}


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (error_reply(500, "The server had an error"), ServerError),
        (
            error_reply(401, "Incorrect API key provided", code="invalid_api_key"),
            AuthenticationError,
        ),
        (error_reply(400, "Invalid 'input[0]'", code="invalid_value"), InvalidRequestError),
        (error_reply(413, "Request too large"), ContextLengthError),
        (
            error_reply(
                400, "Your input exceeds the context window", code="context_length_exceeded"
            ),
            ContextLengthError,
        ),
        (
            error_reply(429, "You exceeded your quota", code="insufficient_quota"),
            QuotaExceededError,
        ),
        (Reply(502, {"content-type": "text/html"}, b"<html>bad gateway</html>"), ServerError),
    ],
)
async def test_http_errors_map_to_typed_errors_with_the_vendor_message(
    fake_server: FakeServer,
    client: httpx.AsyncClient,
    reply: Reply,
    error_type: type[ProviderError],
) -> None:
    with pytest.raises(error_type) as caught:
        await complete(fake_server, client, reply)
    assert caught.value.status_code == reply.status
    assert caught.value.provider == "openai"
    if reply.headers["content-type"] == "application/json":
        assert json.loads(reply.body)["error"]["message"] in str(caught.value)
    else:
        assert "bad gateway" in str(caught.value)


async def test_an_error_code_is_recorded_on_the_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await complete(fake_server, client, error_reply(401, "bad key", code="invalid_api_key"))
    assert caught.value.error_code == "invalid_api_key"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "7"}, 7.0), ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5)],
)
async def test_429_carries_retry_after(
    fake_server: FakeServer, client: httpx.AsyncClient, headers: dict[str, str], expected: float
) -> None:
    with pytest.raises(RateLimitError) as caught:
        await complete(fake_server, client, error_reply(429, "Rate limit reached", **headers))
    assert caught.value.retry_after == expected
    assert caught.value.retryable


def test_retry_after_accepts_an_http_date_and_rejects_garbage() -> None:
    now = time.time()
    when = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    parsed = parse_retry_after({"retry-after": when}, now=now)
    assert parsed is not None and 28 <= parsed <= 30
    past = format_datetime(datetime.fromtimestamp(now, UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, now=now) is None
    assert parse_retry_after({"retry-after": "-3"}, now=now) is None
    assert parse_retry_after({}, now=now) is None


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("rate_limit_exceeded", RateLimitError),
        ("server_error", ServerError),
        ("context_length_exceeded", ContextLengthError),
        ("invalid_prompt", InvalidRequestError),
    ],
)
async def test_a_failed_response_raises_the_matching_error(
    fake_server: FakeServer, client: httpx.AsyncClient, code: str, error_type: type[ProviderError]
) -> None:
    final = responses_json(status="failed", error={"code": code, "message": "it broke"})
    events = responses_sse(["partial"], terminal="response.failed", final=final)
    with pytest.raises(error_type, match="it broke") as caught:
        await complete(fake_server, client, Reply.sse(events))
    assert caught.value.error_code == code
    assert caught.value.status_code is None


async def test_an_error_event_in_the_stream_raises_the_matching_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    events = [*responses_sse(["x"])[:2], responses_error_event("slow down", "rate_limit_exceeded")]
    with pytest.raises(RateLimitError, match="slow down"):
        await complete(fake_server, client, Reply.sse(events))


async def test_a_mid_stream_disconnect_is_a_network_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    events = responses_sse(["a", "b", "c"])
    with pytest.raises(NetworkError):
        await complete(fake_server, client, Reply.sse(events, disconnect_after=3))


async def test_a_stream_that_ends_without_its_terminal_event_is_a_network_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    events = responses_sse(["a", "b"])[:-1]
    with pytest.raises(NetworkError, match="stream ended before completion"):
        await complete(fake_server, client, Reply.sse(events))


async def test_a_refused_connection_is_a_network_error(client: httpx.AsyncClient) -> None:
    adapter = OpenAIAdapter(client, base_url=closed_port_url(), api_key=KEY)
    with pytest.raises(NetworkError):
        await adapter.complete(hello(), on_progress=Progress())


async def test_a_hung_server_times_out_within_the_request_timeout(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    started = trio.current_time()
    with pytest.raises(RequestTimeoutError):
        await complete(fake_server, client, Reply(hang=True), request=hello(timeout=0.5))
    assert trio.current_time() - started < 1.5


async def test_a_stream_slower_than_the_request_timeout_times_out(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    """Every chunk arrives well within the read timeout, but the whole call may not exceed
    ``request.timeout``."""
    events = responses_sse(["a", "b", "c", "d"])
    started = trio.current_time()
    with pytest.raises(RequestTimeoutError):
        await complete(
            fake_server, client, Reply.sse(events, delay=0.15), request=hello(timeout=0.5)
        )
    assert trio.current_time() - started < 1.5


async def test_cancellation_mid_stream_propagates(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    fake_server.script(PATH, Reply.sse(responses_sse(["a", "b", "c", "d"]), delay=0.2))
    progress = Progress()
    with trio.move_on_after(0.5) as scope:
        await adapter_for(fake_server, client).complete(hello(), on_progress=progress)
        pytest.fail("the call returned although its scope was cancelled")
    assert scope.cancelled_caught
    assert progress.count >= 1


def _echo_key_replies() -> list[Reply]:
    failed = responses_json(status="failed", error={"code": "server_error", "message": KEY})
    return [
        error_reply(401, f"Incorrect API key provided: {KEY}", code="invalid_api_key"),
        error_reply(429, f"limit for {KEY}", **{"retry-after": "1"}),
        Reply(500, {"content-type": "text/plain"}, f"oops {KEY}".encode()),
        Reply.sse([responses_error_event(f"bad {KEY}", "server_error")]),
        Reply.sse(responses_sse(terminal="response.failed", final=failed)),
        Reply.sse(responses_sse(["a"]), disconnect_after=1),
        Reply.sse(responses_sse(["a"])[:1]),
        Reply(hang=True),
    ]


@pytest.mark.parametrize("reply", _echo_key_replies())
async def test_the_api_key_never_appears_in_an_error(
    fake_server: FakeServer, client: httpx.AsyncClient, reply: Reply
) -> None:
    with pytest.raises(ProviderError) as caught:
        await complete(fake_server, client, reply, request=hello(timeout=0.5))
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.raw)
    assert KEY not in repr(caught.value.args)


# --- the shared SSE parser --------------------------------------------------------------------


async def _parse(*chunks: bytes) -> list[SSEEvent]:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = httpx.Response(200, content=stream())
    return [event async for event in iter_sse(response)]


async def test_sse_joins_multiline_data_and_skips_comments_and_other_fields() -> None:
    events = await _parse(
        b": keep-alive\r\n\r\n",
        b"event: ping\r\nid: 7\r\nretry: 10\r\ndata: one\r\ndata:two\r\n\r\n",
        b"data: bare\n\n",
    )
    assert events == [SSEEvent("ping", "one\ntwo"), SSEEvent("message", "bare")]


async def test_sse_splits_lines_only_at_cr_and_lf_even_across_chunks() -> None:
    """U+2028 and U+0085 are legal unescaped in JSON; only CR, LF and CRLF end an SSE line."""
    events = await _parse("data: a\u2028b\u0085c\r".encode(), b"\n\r", b"\ndata: d\r\r")
    assert events == [SSEEvent("message", "a\u2028b\u0085c"), SSEEvent("message", "d")]


async def test_sse_drops_a_trailing_event_without_its_blank_line() -> None:
    assert await _parse(b"data: whole\n\n", b"data: cut") == [SSEEvent("message", "whole")]


async def test_a_multiline_json_payload_reaches_the_adapter_whole(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    final = json.dumps({"type": "response.completed", "response": responses_json("split")})
    head, tail = final[: len(final) // 2], final[len(final) // 2 :]
    event = f"event: response.completed\ndata: {head}\ndata: {tail}\n\n".encode()
    response = await complete(fake_server, client, Reply.sse([b": hi\n\n", event]))
    assert response.text == "split"


_FIELD_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\ufeff"),
    max_size=12,
)


@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["", "delta", "done"]), st.lists(_FIELD_TEXT, min_size=1, max_size=3)
        ),
        max_size=5,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_sse_parsing_survives_any_chunking(
    events: list[tuple[str, list[str]]], cuts: list[int], newline: str
) -> None:
    """Whatever the network splits, the same events come out (names default to ``message``)."""
    wire = "".join(
        (f"event: {name}{newline}" if name else "")
        + "".join(f"data: {line}{newline}" for line in lines)
        + newline
        for name, lines in events
    ).encode()
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(points)]
    parsed = trio.run(_parse, *chunks)
    assert parsed == [SSEEvent(name or "message", "\n".join(lines)) for name, lines in events]


async def test_the_event_field_names_a_responses_event_without_a_type(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    """``type`` inside the data wins, but the SSE ``event:`` name suffices."""
    event = sse_event({"response": responses_json("named")}, event="response.completed")
    response = await complete(fake_server, client, Reply.sse([event]))
    assert response.text == "named"
