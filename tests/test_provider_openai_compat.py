"""The OpenAI-compatible Chat Completions adapter against a real local HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

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
from attractor_trio.providers.model import Message, Request, ToolCall, ToolSpec
from attractor_trio.providers.openai_compat import OpenAICompatibleAdapter, chat_body
from tests.fakes.openai import (
    Progress,
    chat_json,
    chat_sse,
    closed_port_url,
    error_reply,
    sse_event,
)
from tests.fakes.server import FakeServer, Reply

KEY = "sk-local-SECRET-KEY-9876543210"
PATH = r"^/v1/chat/completions$"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as shared:
        yield shared


def adapter_for(
    server: FakeServer, client: httpx.AsyncClient, **kw: Any
) -> OpenAICompatibleAdapter:
    kw.setdefault("api_key", KEY)
    return OpenAICompatibleAdapter(client, base_url=server.base_url + "/v1/", **kw)


def hello(**kw: Any) -> Request:
    kw.setdefault("messages", (Message("user", "hi"),))
    return Request(model="qwen3-coder", **kw)


async def complete(
    server: FakeServer, client: httpx.AsyncClient, *replies: Reply, request: Request | None = None
) -> Any:
    server.script(PATH, *replies)
    return await adapter_for(server, client).complete(request or hello(), on_progress=Progress())


# --- configuration and request shape ----------------------------------------------------------


def test_base_url_is_required() -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        OpenAICompatibleAdapter(httpx.AsyncClient(), api_key="", name="local")


async def test_request_shape_maps_every_part_of_the_conversation(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    call = ToolCall("call_1", "read_file", {"file_path": "a.txt"})
    request = hello(
        system="be terse",
        max_tokens=99,
        reasoning_effort="high",
        tools=(ToolSpec("read_file", "Read a file"),),
        messages=(
            Message("user", "look"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "contents", tool_call_id="call_1", name="read_file"),
            Message("assistant", "done"),
        ),
    )
    fake_server.script(PATH, Reply.sse(chat_sse(["ok"])))
    await adapter_for(fake_server, client).complete(request, on_progress=Progress())

    sent = fake_server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json() == {
        "model": "qwen3-coder",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "look"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"file_path": "a.txt"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "contents"},
            {"role": "assistant", "content": "done"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read_file",
                    "description": "Read a file",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "max_tokens": 99,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_reasoning_effort_is_never_sent_and_unset_fields_are_omitted() -> None:
    body = chat_body(hello(reasoning_effort="low"))
    assert set(body) == {"model", "messages", "max_tokens", "stream", "stream_options"}
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_an_empty_api_key_sends_no_authorization_header(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    fake_server.script(PATH, Reply.sse(chat_sse(["ok"])))
    await adapter_for(fake_server, client, api_key="").complete(hello(), on_progress=Progress())
    assert "authorization" not in fake_server.requests[0].headers


async def test_an_unknown_role_is_an_invalid_request_without_any_http_call(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(InvalidRequestError, match="role 'system'"):
        await complete(fake_server, client, request=hello(messages=(Message("system", "x"),)))
    assert fake_server.requests == []


# --- successful responses ---------------------------------------------------------------------


async def test_streamed_text_with_usage_and_progress_per_chunk(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    events = chat_sse(["Hel", "lo", "!"], usage=(12, 4))
    fake_server.script(PATH, Reply.sse(events))
    progress = Progress()
    adapter = adapter_for(fake_server, client, name="local")
    response = await adapter.complete(hello(), on_progress=progress)
    assert response.text == "Hello!"
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)
    assert (response.model, response.provider) == ("local-model", "local")
    assert progress.count == len(events)


async def test_tool_call_deltas_are_accumulated_by_index(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    calls = [
        ("call_a", "read_file", '{"file_path": "a.txt"}'),
        ("call_b", "grep", '{"pattern": "x"}'),
    ]
    response = await complete(
        fake_server, client, Reply.sse(chat_sse(["Looking"], calls, finish="tool_calls"))
    )
    assert response.text == "Looking"
    assert response.tool_calls == (
        ToolCall("call_a", "read_file", {"file_path": "a.txt"}),
        ToolCall("call_b", "grep", {"pattern": "x"}),
    )
    assert response.finish_reason == "tool_calls"


async def test_interleaved_tool_call_deltas_land_on_their_own_call(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    def delta(index: int, **function: str) -> bytes:
        call: dict[str, Any] = {"index": index, "function": function}
        if "name" in function:
            call |= {"id": f"call_{index}", "type": "function"}
        return sse_event({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})

    events = [
        delta(0, name="glob", arguments=""),
        delta(1, name="shell", arguments='{"comm'),
        delta(0, arguments='{"pattern": "*"}'),
        delta(1, arguments='and": "ls"}'),
        sse_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        b"data: [DONE]\n\n",
    ]
    response = await complete(fake_server, client, Reply.sse(events))
    assert response.tool_calls == (
        ToolCall("call_0", "glob", {"pattern": "*"}),
        ToolCall("call_1", "shell", {"command": "ls"}),
    )


@pytest.mark.parametrize(
    ("finish", "calls", "expected"),
    [
        ("length", [], "length"),
        ("content_filter", [], "content_filter"),
        ("function_call", [], "tool_calls"),
        ("abort", [], "other"),
        # llama.cpp and Ollama report ``stop`` even when the model called tools.
        ("stop", [("c1", "glob", "{}")], "tool_calls"),
    ],
)
async def test_finish_reasons_are_normalized(
    fake_server: FakeServer,
    client: httpx.AsyncClient,
    finish: str,
    calls: list[tuple[str, str, str]],
    expected: str,
) -> None:
    response = await complete(fake_server, client, Reply.sse(chat_sse(["x"], calls, finish=finish)))
    assert response.finish_reason == expected


async def test_a_non_streamed_json_reply_is_parsed_too(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    body = chat_json(None, [("c1", "shell", '{"command": "ls"}')], finish="tool_calls")
    response = await complete(fake_server, client, Reply.json(body))
    assert response.text == ""
    assert response.tool_calls == (ToolCall("c1", "shell", {"command": "ls"}),)
    assert response.finish_reason == "tool_calls"
    assert response.usage.input_tokens == 5


async def test_a_clean_end_after_the_finish_reason_needs_no_done_marker(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    response = await complete(fake_server, client, Reply.sse(chat_sse(["fine"], done=False)))
    assert response.text == "fine"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "error_type", "message"),
    [
        (error_reply(500, "engine crashed"), ServerError, "engine crashed"),
        (error_reply(401, "invalid api key"), AuthenticationError, "invalid api key"),
        (error_reply(400, "bad tools"), InvalidRequestError, "bad tools"),
        (error_reply(413, "payload too large"), ContextLengthError, "payload too large"),
        (
            Reply.json(
                {
                    "object": "error",
                    "message": "This model's maximum context length is 8192 tokens",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                status=400,
            ),
            ContextLengthError,
            "maximum context length",
        ),
        (
            Reply.json({"error": "model 'qwen9' not found"}, status=404),
            NotFoundError,
            "model 'qwen9' not found",
        ),
        (Reply.json({"detail": "Not Found"}, status=404), NotFoundError, "Not Found"),
    ],
)
async def test_http_errors_map_to_typed_errors(
    fake_server: FakeServer,
    client: httpx.AsyncClient,
    reply: Reply,
    error_type: type[ProviderError],
    message: str,
) -> None:
    with pytest.raises(error_type, match=message) as caught:
        await complete(fake_server, client, reply)
    assert caught.value.status_code == reply.status


async def test_429_carries_retry_after(fake_server: FakeServer, client: httpx.AsyncClient) -> None:
    with pytest.raises(RateLimitError) as caught:
        await complete(fake_server, client, error_reply(429, "busy", **{"retry-after": "3"}))
    assert caught.value.retry_after == 3.0


async def test_an_error_chunk_in_the_stream_raises_the_matching_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    error = sse_event({"error": {"message": "overloaded", "type": "server_error", "code": None}})
    with pytest.raises(ServerError, match="overloaded"):
        await complete(fake_server, client, Reply.sse([*chat_sse(["a"])[:2], error]))


async def test_a_mid_stream_disconnect_is_a_network_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NetworkError):
        await complete(fake_server, client, Reply.sse(chat_sse(["a", "b"]), disconnect_after=2))


async def test_a_clean_end_before_any_finish_is_a_network_error(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    events = chat_sse(["a", "b"], finish=None, usage=None, done=False)
    with pytest.raises(NetworkError, match="stream ended before completion"):
        await complete(fake_server, client, Reply.sse(events))


async def test_a_refused_connection_is_a_network_error(client: httpx.AsyncClient) -> None:
    adapter = OpenAICompatibleAdapter(client, base_url=closed_port_url(), api_key="")
    with pytest.raises(NetworkError):
        await adapter.complete(hello(), on_progress=Progress())


async def test_a_base_url_without_a_scheme_is_a_configuration_error(
    client: httpx.AsyncClient,
) -> None:
    adapter = OpenAICompatibleAdapter(client, base_url="localhost:8000/v1", api_key="")
    with pytest.raises(ConfigurationError, match=r"bad base_url in 'localhost:8000/v1/chat"):
        await adapter.complete(hello(), on_progress=Progress())


async def test_a_hung_server_times_out_within_the_request_timeout(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    started = trio.current_time()
    with pytest.raises(RequestTimeoutError):
        await complete(fake_server, client, Reply(hang=True), request=hello(timeout=0.5))
    assert trio.current_time() - started < 1.5


async def test_cancellation_mid_stream_propagates(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    fake_server.script(PATH, Reply.sse(chat_sse(["a", "b", "c", "d"]), delay=0.2))
    progress = Progress()
    with trio.move_on_after(0.5) as scope:
        await adapter_for(fake_server, client).complete(hello(), on_progress=progress)
        pytest.fail("the call returned although its scope was cancelled")
    assert scope.cancelled_caught
    assert progress.count >= 1


def _echo_key_replies() -> list[Reply]:
    return [
        error_reply(401, f"Incorrect API key provided: {KEY}"),
        error_reply(429, f"slow down {KEY}", **{"retry-after": "1"}),
        Reply.json({"error": f"bad key {KEY}"}, status=403),
        Reply(500, {"content-type": "text/plain"}, f"oops {KEY}".encode()),
        Reply.sse([sse_event({"error": {"message": f"bad {KEY}", "code": 500}})]),
        Reply.sse(chat_sse(["a"]), disconnect_after=1),
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
