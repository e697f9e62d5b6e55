"""The Anthropic Messages adapter against a real HTTP server speaking the vendor's wire format."""

from __future__ import annotations

import itertools
import json
import socket
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.providers.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_BASE_URL,
    AnthropicAdapter,
    AnthropicOptions,
    StreamAccumulator,
    anthropic_options,
    build_body,
    finish_reason_for,
    parse_retry_after,
    timeout_for,
    wire_messages,
)
from attractor_trio.providers.base import (
    AuthenticationError,
    ConfigurationError,
    ContextLengthError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    ProviderError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from attractor_trio.providers.model import Message, Request, Response, ToolCall, ToolSpec
from tests.fakes.anthropic import (
    MESSAGES_PATH,
    TextBlock,
    ToolUseBlock,
    error_event,
    error_reply,
    message_json,
    sse_event,
    stream_events,
    stream_reply,
)
from tests.fakes.server import FakeServer, Reply

KEY = "sk-ant-FAKE-KEY-4f9c2e7d"
HELLO = (Message("user", "hello"),)


class Progress:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def request(**kw: Any) -> Request:
    kw.setdefault("model", "claude-test-1")
    kw.setdefault("messages", HELLO)
    return Request(**kw)


async def complete(server: FakeServer, req: Request | None = None, **kw: Any) -> Response:
    async with httpx.AsyncClient() as client:
        adapter = AnthropicAdapter(client, base_url=server.base_url, api_key=KEY, **kw)
        return await adapter.complete(req or request(), on_progress=Progress())


async def failure(server: FakeServer, req: Request | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await complete(server, req)
    return info.value


# --- request shape -----------------------------------------------------------------------


async def test_posts_to_v1_messages_with_auth_version_and_json(fake_server: FakeServer) -> None:
    fake_server.script(MESSAGES_PATH, stream_reply(stream_events([TextBlock(("hi",))])))
    await complete(fake_server)
    [sent] = fake_server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert "anthropic-beta" not in sent.headers
    body = sent.json()
    assert body["model"] == "claude-test-1"
    assert body["max_tokens"] == 4096
    assert body["stream"] is True


async def test_default_base_url_is_the_api_root_without_v1() -> None:
    assert DEFAULT_BASE_URL == "https://api.anthropic.com"
    async with httpx.AsyncClient() as client:
        adapter = AnthropicAdapter(client, api_key=KEY)
    assert KEY not in repr(adapter)
    assert adapter.url == "https://api.anthropic.com/v1/messages"
    assert (adapter.kind, adapter.name) == ("anthropic", "anthropic")


async def test_base_url_trailing_slash_is_tolerated() -> None:
    async with httpx.AsyncClient() as client:
        adapter = AnthropicAdapter(client, base_url="http://proxy/x/", api_key=KEY)
    assert adapter.url == "http://proxy/x/v1/messages"


def test_body_maps_system_tools_tool_calls_and_results() -> None:
    call = ToolCall("toolu_1", "read_file", {"file_path": "a.txt"})
    req = request(
        system="be brief",
        max_tokens=1000,
        messages=(
            Message("user", "read a.txt"),
            Message("assistant", "reading", tool_calls=(call,)),
            Message("tool", "contents", tool_call_id="toolu_1", name="read_file"),
            Message("tool", "boom", tool_call_id="toolu_2", is_error=True),
            Message("user", "now summarize"),
        ),
        tools=(ToolSpec("read_file", "Read a file", {"type": "object", "properties": {}}),),
    )
    body = build_body(req, AnthropicOptions(auto_cache=False))
    assert body == {
        "model": "claude-test-1",
        "max_tokens": 1000,
        "stream": True,
        "system": "be brief",
        "tools": [
            {
                "name": "read_file",
                "description": "Read a file",
                "input_schema": {"type": "object", "properties": {}},
            }
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "read a.txt"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "reading"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "read_file",
                        "input": {"file_path": "a.txt"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "contents",
                        "is_error": False,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "boom",
                        "is_error": True,
                    },
                    {"type": "text", "text": "now summarize"},
                ],
            },
        ],
    }


def test_an_empty_tool_result_omits_content_the_api_would_reject() -> None:
    [turn] = wire_messages((Message("tool", "", tool_call_id="t1", is_error=True),))
    assert turn["content"] == [{"type": "tool_result", "tool_use_id": "t1", "is_error": True}]


def test_no_system_and_no_tools_are_omitted_not_sent_empty() -> None:
    body = build_body(request(), AnthropicOptions(auto_cache=False))
    assert "system" not in body and "tools" not in body


def test_reasoning_effort_is_not_sent() -> None:
    """Thinking needs signed thinking blocks echoed back in tool loops, which the model lacks."""
    body = build_body(request(reasoning_effort="high"), AnthropicOptions())
    assert not {"thinking", "output_config", "reasoning_effort"} & set(body)


def test_tool_results_go_before_text_when_a_user_turn_is_merged() -> None:
    wire = wire_messages(
        (Message("user", "first"), Message("tool", "r", tool_call_id="t1"), Message("user", "x"))
    )
    assert [b["type"] for b in wire[0]["content"]] == ["tool_result", "text", "text"]


def test_empty_text_is_not_sent_and_empty_turns_vanish() -> None:
    call = ToolCall("t1", "glob", {})
    wire = wire_messages(
        (Message("user", "go"), Message("assistant", "", tool_calls=(call,)), Message("user", ""))
    )
    assert wire[1]["content"] == [{"type": "tool_use", "id": "t1", "name": "glob", "input": {}}]
    assert len(wire) == 2


def test_unknown_role_is_an_invalid_request_naming_the_message() -> None:
    with pytest.raises(InvalidRequestError, match=r"message 2 has role 'system'"):
        wire_messages((Message("user", "a"), Message("system", "b")))


tool_calls_strategy = st.lists(
    st.builds(ToolCall, id=st.text(min_size=1, max_size=3), name=st.just("t")), max_size=2
).map(tuple)
message_strategy = st.one_of(
    st.builds(Message, role=st.just("user"), content=st.text(max_size=5)),
    st.builds(
        Message,
        role=st.just("assistant"),
        content=st.text(max_size=5),
        tool_calls=tool_calls_strategy,
    ),
    st.builds(
        Message, role=st.just("tool"), content=st.text(max_size=5), tool_call_id=st.just("t")
    ),
)


@given(st.lists(message_strategy, max_size=12))
def test_wire_roles_strictly_alternate_and_keep_every_piece(messages: list[Message]) -> None:
    wire = wire_messages(tuple(messages))
    roles = [turn["role"] for turn in wire]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert all(turn["content"] for turn in wire)
    # every tool result, every non-empty text and every tool call becomes exactly one block
    expected = sum(1 if m.role == "tool" else bool(m.content) + len(m.tool_calls) for m in messages)
    assert sum(len(turn["content"]) for turn in wire) == expected


def test_auto_cache_marks_system_last_tool_and_last_message_block() -> None:
    req = request(
        system="sys",
        tools=(ToolSpec("a", "A"), ToolSpec("b", "B")),
        messages=(Message("user", "one"), Message("assistant", "two"), Message("user", "three")),
    )
    body = build_body(req, AnthropicOptions())
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "sys", "cache_control": ephemeral}]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == ephemeral
    assert body["messages"][-1]["content"][-1]["cache_control"] == ephemeral
    marked = json.dumps(body).count("cache_control")
    assert marked == 3  # the API allows at most four breakpoints


def test_auto_cache_can_be_disabled() -> None:
    req = request(system="s", tools=(ToolSpec("a", "A"),))
    options = anthropic_options({"anthropic": {"auto_cache": False}})
    assert "cache_control" not in json.dumps(build_body(req, options))


async def test_beta_headers_are_comma_joined(fake_server: FakeServer) -> None:
    fake_server.script(MESSAGES_PATH, stream_reply(stream_events([TextBlock(("hi",))])))
    options = {"anthropic": {"beta_headers": ["a-2025", "b-2026"]}}
    await complete(fake_server, request(provider_options=options))
    assert fake_server.requests[0].headers["anthropic-beta"] == "a-2025,b-2026"


def test_other_vendors_options_are_ignored() -> None:
    assert anthropic_options({"openai": {"whatever": 1}}) == AnthropicOptions()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"anthropic": {"auto_cahce": False}}, "unknown key 'auto_cahce'"),
        ({"anthropic": {"auto_cache": "no"}}, "auto_cache must be true or false"),
        ({"anthropic": {"beta_headers": [1]}}, "beta_headers must be a list of strings"),
        ({"anthropic": {"stream": 1}}, "stream must be true or false"),
        ({"anthropic": "x"}, "must be a mapping"),
    ],
)
def test_bad_provider_options_are_configuration_errors(
    options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        anthropic_options(options)


def test_timeouts_are_explicit_and_bounded_by_the_request() -> None:
    assert timeout_for(request(timeout=600), stream=True) == httpx.Timeout(600, connect=10, read=60)
    assert timeout_for(request(timeout=0.5), stream=True) == httpx.Timeout(
        0.5, connect=0.5, read=0.5
    )
    assert timeout_for(request(timeout=600), stream=False) == httpx.Timeout(600, connect=10)


# --- responses ---------------------------------------------------------------------------


async def test_streamed_text_is_accumulated_and_every_event_reports_progress(
    fake_server: FakeServer,
) -> None:
    events = stream_events([TextBlock(("Hel", "lo", " world"))], input_tokens=30, output_tokens=7)
    fake_server.script(MESSAGES_PATH, stream_reply(events))
    progress = Progress()
    async with httpx.AsyncClient() as client:
        adapter = AnthropicAdapter(client, base_url=fake_server.base_url, api_key=KEY, name="main")
        response = await adapter.complete(request(), on_progress=progress)
    assert response.text == "Hello world"
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (30, 7)
    assert (response.model, response.provider) == ("claude-test-1", "main")
    assert response.tool_calls == ()
    assert progress.count == len(events)


async def test_streamed_tool_calls_are_assembled_from_partial_json(
    fake_server: FakeServer,
) -> None:
    blocks: list[TextBlock | ToolUseBlock] = [
        TextBlock(("Let me look.",)),
        ToolUseBlock("toolu_a", "read_file", ('{"file_pa', 'th": "a.', 'txt"}')),
        ToolUseBlock("toolu_b", "glob"),
    ]
    fake_server.script(MESSAGES_PATH, stream_reply(stream_events(blocks, stop_reason="tool_use")))
    response = await complete(fake_server)
    assert response.text == "Let me look."
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall("toolu_a", "read_file", {"file_path": "a.txt"}),
        ToolCall("toolu_b", "glob", {}),
    )


async def test_cache_tokens_count_as_input(fake_server: FakeServer) -> None:
    body = message_json(
        [TextBlock(("ok",))],
        input_tokens=3,
        cache_read_input_tokens=100,
        cache_creation_input_tokens=20,
    )
    fake_server.script(MESSAGES_PATH, Reply.json(body))
    response = await complete(
        fake_server, request(provider_options={"anthropic": {"stream": False}})
    )
    assert response.usage.input_tokens == 123


async def test_non_streaming_json_response(fake_server: FakeServer) -> None:
    body = message_json(
        [TextBlock(("a", "b")), ToolUseBlock("t1", "shell", ('{"command": "ls"}',))],
        stop_reason="tool_use",
        output_tokens=9,
    )
    fake_server.script(MESSAGES_PATH, Reply.json(body))
    req = request(provider_options={"anthropic": {"stream": False}})
    response = await complete(fake_server, req)
    assert fake_server.requests[0].json()["stream"] is False
    assert response.text == "ab"
    assert response.tool_calls == (ToolCall("t1", "shell", {"command": "ls"}),)
    assert (response.finish_reason, response.usage.output_tokens) == ("tool_calls", 9)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "other"),
        ("something_new", "other"),
        (None, "other"),
    ],
)
def test_finish_reason_mapping(stop_reason: str | None, finish: str) -> None:
    assert finish_reason_for(stop_reason) == finish


async def test_max_tokens_stream_maps_to_length(fake_server: FakeServer) -> None:
    events = stream_events([TextBlock(("cut",))], stop_reason="max_tokens")
    fake_server.script(MESSAGES_PATH, stream_reply(events))
    assert (await complete(fake_server)).finish_reason == "length"


def test_a_tool_call_cut_off_by_max_tokens_is_dropped() -> None:
    acc = StreamAccumulator()
    for frame in stream_events(
        [TextBlock(("x",)), ToolUseBlock("t", "shell", ('{"comm',))], stop_reason="max_tokens"
    ):
        _feed_frame(acc, frame)
    response = acc.response()
    assert (response.text, response.tool_calls, response.finish_reason) == ("x", (), "length")


def test_malformed_tool_json_in_a_finished_message_is_a_server_error() -> None:
    acc = StreamAccumulator()
    for frame in stream_events([ToolUseBlock("t", "shell", ('{"comm',))], stop_reason="tool_use"):
        _feed_frame(acc, frame)
    with pytest.raises(ServerError, match=r"tool 'shell'.*not valid JSON"):
        acc.response()


def test_unknown_events_and_blocks_are_ignored() -> None:
    acc = StreamAccumulator()
    frames = stream_events([TextBlock(("a",))])
    extra = [
        sse_event(
            {"type": "content_block_start", "index": 5, "content_block": {"type": "thinking"}}
        ),
        sse_event({"type": "content_block_delta", "index": 5, "delta": {"type": "thinking_delta"}}),
        sse_event({"type": "brand_new_event"}),
    ]
    for frame in [*frames[:2], *extra, *frames[2:]]:
        _feed_frame(acc, frame)
    assert acc.response().text == "a"


@given(st.lists(st.text(min_size=1), max_size=8))
def test_any_chunking_of_text_reassembles_it(chunks: list[str]) -> None:
    acc = StreamAccumulator()
    for frame in stream_events([TextBlock(tuple(chunks))]):
        _feed_frame(acc, frame)
    assert acc.done
    assert acc.response().text == "".join(chunks)


def _feed_frame(acc: StreamAccumulator, frame: bytes) -> None:
    lines = frame.decode().splitlines()
    acc.feed(json.loads(lines[1].removeprefix("data: ")))


# --- errors ------------------------------------------------------------------------------


async def test_429_carries_retry_after(fake_server: FakeServer) -> None:
    fake_server.script(
        MESSAGES_PATH,
        error_reply(429, "rate_limit_error", "Number of requests exceeded", **{"retry-after": "7"}),
    )
    exc = await failure(fake_server)
    assert isinstance(exc, RateLimitError)
    assert exc.retry_after == 7.0
    assert (exc.status_code, exc.error_code, exc.retryable) == (429, "rate_limit_error", True)
    assert str(exc) == "anthropic: HTTP 429: Number of requests exceeded"


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("Fri, 02 Jan 2026 03:04:35 GMT", now) == 30.0
    assert parse_retry_after("Fri, 02 Jan 2026 03:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-3", now) is None


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected"),
    [
        (500, "api_error", "Internal server error", ServerError),
        (529, "overloaded_error", "Overloaded", ServerError),
        (401, "authentication_error", "invalid x-api-key", AuthenticationError),
        (400, "invalid_request_error", "max_tokens: field required", InvalidRequestError),
        (413, "request_too_large", "Request exceeds the maximum size", ContextLengthError),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            ContextLengthError,
        ),
    ],
)
async def test_http_errors_map_to_typed_errors(
    fake_server: FakeServer, status: int, error_type: str, message: str, expected: type
) -> None:
    fake_server.script(MESSAGES_PATH, error_reply(status, error_type, message))
    exc = await failure(fake_server)
    assert type(exc) is expected
    assert (exc.status_code, exc.error_code) == (status, error_type)
    assert message in str(exc)
    assert exc.raw == {"type": "error", "error": {"type": error_type, "message": message}}


async def test_404_explains_the_base_url_convention(fake_server: FakeServer) -> None:
    fake_server.script(MESSAGES_PATH, error_reply(404, "not_found_error", "Not found"))
    exc = await failure(fake_server)
    assert isinstance(exc, NotFoundError)
    assert f"POST {fake_server.base_url}/v1/messages" in str(exc)
    assert "without /v1" in str(exc)


async def test_a_non_json_error_body_still_gives_a_readable_message(
    fake_server: FakeServer,
) -> None:
    fake_server.script(MESSAGES_PATH, Reply(502, {"content-type": "text/html"}, b"<h1>bad</h1>"))
    exc = await failure(fake_server)
    assert isinstance(exc, ServerError)
    assert str(exc) == "anthropic: HTTP 502: <h1>bad</h1>"


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", ServerError),
        ("rate_limit_error", RateLimitError),
        ("invalid_request_error", InvalidRequestError),
        ("who_knows", ServerError),
    ],
)
async def test_an_error_event_mid_stream_is_typed(
    fake_server: FakeServer, error_type: str, expected: type
) -> None:
    events = stream_events([TextBlock(("partial",))], terminate=False)[:3]
    fake_server.script(
        MESSAGES_PATH, stream_reply([*events, error_event(error_type, "Overloaded")])
    )
    exc = await failure(fake_server)
    assert type(exc) is expected
    assert (exc.status_code, exc.error_code) == (None, error_type)
    assert str(exc) == "anthropic: Overloaded"


async def test_an_in_stream_context_length_message_is_a_context_length_error(
    fake_server: FakeServer,
) -> None:
    message = "prompt is too long: 210000 tokens > 200000 maximum"
    event = error_event("invalid_request_error", message)
    fake_server.script(MESSAGES_PATH, stream_reply([event]))
    assert isinstance(await failure(fake_server), ContextLengthError)


async def test_the_answer_is_returned_at_message_stop_without_waiting_for_the_body_end(
    fake_server: FakeServer,
) -> None:
    """A proxy that holds the connection open after ``message_stop`` must not stall the call."""
    reply = stream_reply(stream_events([TextBlock(("done",))]))
    reply.chunks.append((30.0, b": keep-alive\n\n"))
    fake_server.script(MESSAGES_PATH, reply)
    response = await complete(fake_server, request(timeout=1.0))
    assert response.text == "done"


async def test_a_mid_stream_disconnect_is_a_network_error(fake_server: FakeServer) -> None:
    events = stream_events([TextBlock(("a", "b", "c"))])
    fake_server.script(MESSAGES_PATH, stream_reply(events, disconnect_after=3))
    exc = await failure(fake_server)
    assert isinstance(exc, NetworkError)
    assert exc.retryable


async def test_a_stream_that_ends_without_message_stop_is_a_network_error(
    fake_server: FakeServer,
) -> None:
    events = stream_events([TextBlock(("a",))], terminate=False)
    fake_server.script(MESSAGES_PATH, stream_reply(events))
    exc = await failure(fake_server)
    assert isinstance(exc, NetworkError)
    assert "stream ended before completion" in str(exc)


async def test_malformed_event_data_is_a_server_error(fake_server: FakeServer) -> None:
    fake_server.script(MESSAGES_PATH, stream_reply([b"event: message_start\ndata: {nope\n\n"]))
    exc = await failure(fake_server)
    assert isinstance(exc, ServerError)
    assert "not valid JSON" in str(exc)


async def test_connection_refused_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient() as client:
        adapter = AnthropicAdapter(client, base_url=f"http://127.0.0.1:{port}", api_key=KEY)
        with pytest.raises(NetworkError):
            await adapter.complete(request(), on_progress=Progress())


async def test_a_hung_server_times_out_within_the_request_timeout(fake_server: FakeServer) -> None:
    fake_server.script(MESSAGES_PATH, Reply(hang=True))
    start = trio.current_time()
    exc = await failure(fake_server, request(timeout=0.5))
    assert isinstance(exc, RequestTimeoutError)
    assert trio.current_time() - start < 2.0


async def test_the_request_timeout_bounds_a_stream_that_keeps_trickling(
    fake_server: FakeServer,
) -> None:
    pings = [sse_event({"type": "ping"})] * 50
    fake_server.script(MESSAGES_PATH, stream_reply(pings, delay=0.1))
    start = trio.current_time()
    exc = await failure(fake_server, request(timeout=0.5))
    assert isinstance(exc, RequestTimeoutError)
    assert "0.5" in str(exc)
    assert trio.current_time() - start < 2.0


async def test_cancellation_mid_stream_propagates(fake_server: FakeServer) -> None:
    events = stream_events([TextBlock(("a", "b"))])
    fake_server.script(MESSAGES_PATH, _slow_after(events, 2))
    progress = Progress()
    async with httpx.AsyncClient() as client:
        adapter = AnthropicAdapter(client, base_url=fake_server.base_url, api_key=KEY)
        with trio.move_on_after(0.5) as scope:
            await adapter.complete(request(), on_progress=progress)
    assert scope.cancelled_caught
    assert progress.count == 2  # it was mid-stream, not still connecting


def _slow_after(events: list[bytes], fast: int) -> Reply:
    reply = Reply.sse(events)
    reply.chunks = [(0.0 if i < fast else 30.0, e) for i, e in enumerate(events)]
    return reply


# --- secrecy -----------------------------------------------------------------------------

LEAKY = f"invalid x-api-key: {KEY}"


@pytest.mark.parametrize(
    "reply",
    [
        error_reply(401, "authentication_error", LEAKY),
        error_reply(429, "rate_limit_error", LEAKY, **{"retry-after": "1"}),
        error_reply(400, "invalid_request_error", LEAKY),
        error_reply(404, "not_found_error", LEAKY),
        error_reply(500, "api_error", LEAKY),
        Reply(503, {"content-type": "text/plain"}, LEAKY.encode()),
        stream_reply([error_event("overloaded_error", LEAKY)]),
        stream_reply([error_event(LEAKY, "x")]),
        stream_reply([b"data: {" + KEY.encode() + b"\n\n"]),
        stream_reply(stream_events([TextBlock(("a",))], terminate=False)),
        stream_reply(stream_events([TextBlock(("a", "b"))]), disconnect_after=2),
        Reply(hang=True),
    ],
)
async def test_the_api_key_never_appears_in_errors(fake_server: FakeServer, reply: Reply) -> None:
    fake_server.script(MESSAGES_PATH, reply)
    exc = await failure(fake_server, request(timeout=0.5))
    assert KEY not in str(exc)
    assert KEY not in repr(exc.raw)
    assert KEY not in repr(exc.args)
