"""The Gemini adapter against a real HTTP fake speaking Gemini's native wire format."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.providers import base
from attractor_trio.providers.gemini import (
    SKIP_SIGNATURE,
    GeminiAdapter,
    _Accumulator,
    build_body,
    finish_reason_for,
    thinking_config_for,
)
from attractor_trio.providers.model import (
    Message,
    Request,
    Response,
    ToolCall,
    ToolSpec,
    Usage,
)

from .fakes import gemini as fake
from .fakes.server import FakeServer, Reply

KEY = "AIzaSy-FAKE-KEY-do-not-leak-0123456789"
MODEL = "gemini-2.5-flash"
READ_TOOL = ToolSpec(
    "read_file",
    "Read a file",
    {
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
        "additionalProperties": False,
    },
)


class Progress:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def adapter(client: httpx.AsyncClient, fake_server: FakeServer) -> GeminiAdapter:
    return GeminiAdapter(client, base_url=fake_server.base_url, api_key=KEY)


def ask(text: str = "hi", **kw: Any) -> Request:
    kw.setdefault("model", MODEL)
    kw.setdefault("timeout", 10.0)
    return Request(messages=(Message("user", text),), **kw)


async def complete(adapter: GeminiAdapter, request: Request | None = None) -> Response:
    return await adapter.complete(request or ask(), on_progress=Progress())


# --- request shape ----------------------------------------------------------------------------


async def test_request_goes_to_the_streaming_endpoint_with_the_key_in_a_header(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.text_stream("ok"))
    request = ask("Write a haiku", system="Be terse.", max_tokens=321, tools=(READ_TOOL,))
    await complete(adapter, request)

    sent = fake_server.requests[0]
    assert (sent.method, sent.path, sent.query) == (
        "POST",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "alt=sse",
    )
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.headers["content-type"] == "application/json"
    assert KEY not in sent.path + sent.query, "the key must never be in the URL"
    assert sent.json() == {
        "contents": [{"role": "user", "parts": [{"text": "Write a haiku"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "read_file",
                        "description": "Read a file",
                        "parametersJsonSchema": READ_TOOL.parameters,
                    }
                ]
            }
        ],
        "generationConfig": {"maxOutputTokens": 321},
    }


async def test_no_system_tools_or_thinking_fields_when_the_request_has_none(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.text_stream("ok"))
    await complete(adapter)
    assert set(fake_server.requests[0].json()) == {"contents", "generationConfig"}
    assert fake_server.requests[0].json()["generationConfig"] == {"maxOutputTokens": 4096}


async def test_no_key_means_no_key_header(
    client: httpx.AsyncClient, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.text_stream("ok"))
    await complete(GeminiAdapter(client, base_url=fake_server.base_url, api_key=""))
    assert "x-goog-api-key" not in fake_server.requests[0].headers


async def test_default_base_url_is_the_unversioned_api_root(client: httpx.AsyncClient) -> None:
    default = GeminiAdapter(client, api_key=KEY)
    assert default.url_for("models/gemini-3-pro-preview") == (
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini-3-pro-preview:streamGenerateContent"
    )
    custom = GeminiAdapter(client, base_url="http://proxy.local/gemini/", api_key=KEY)
    assert custom.url_for(MODEL).startswith("http://proxy.local/gemini/v1beta/models/")
    assert KEY not in repr(custom)


async def test_reasoning_effort_becomes_a_thinking_budget_for_gemini_2_5(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.text_stream("ok"))
    await complete(adapter, ask(reasoning_effort="high"))
    config = fake_server.requests[0].json()["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 24576}


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-pro", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
        ("gemini-3-pro-preview", "high", {"thinkingLevel": "high"}),
        ("models/gemini-3-flash-preview", "low", {"thinkingLevel": "low"}),
        ("gemini-flash-latest", "low", {"thinkingBudget": 1024}),
        ("gemini-2.0-flash", "high", None),
        ("gemini-1.5-pro", "high", None),
        ("gemini-3-pro-preview", None, None),
    ],
)
def test_thinking_config_per_model_generation(
    model: str, effort: str | None, expected: dict[str, Any] | None
) -> None:
    assert thinking_config_for(model, effort) == expected


async def test_unknown_reasoning_effort_fails_before_sending(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    with pytest.raises(base.InvalidRequestError, match="reasoning_effort 'extreme'"):
        await complete(adapter, ask(reasoning_effort="extreme"))
    assert fake_server.requests == []


# --- conversation history ---------------------------------------------------------------------


def test_history_maps_tool_calls_and_results_and_groups_parallel_results() -> None:
    calls = (ToolCall("call_1", "read_file", {"file_path": "a"}), ToolCall("call_2", "shell", {}))
    messages = (
        Message("user", "look"),
        Message("assistant", "Reading.", tool_calls=calls),
        Message("tool", "A", tool_call_id="call_1"),
        Message("tool", "boom", tool_call_id="call_2", name="shell", is_error=True),
        Message("assistant", "done"),
    )
    body = build_body(Request(MODEL, messages), {"call_1": "sig-1"})
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "look"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Reading."},
                {
                    "functionCall": {"name": "read_file", "args": {"file_path": "a"}},
                    "thoughtSignature": "sig-1",
                },
                {"functionCall": {"name": "shell", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "read_file", "response": {"result": "A"}}},
                {"functionResponse": {"name": "shell", "response": {"error": "boom"}}},
            ],
        },
        {"role": "model", "parts": [{"text": "done"}]},
    ]


def test_foreign_tool_calls_get_the_documented_placeholder_signature_on_gemini_3() -> None:
    calls = (ToolCall("toolu_1", "read_file", {}), ToolCall("toolu_2", "read_file", {}))
    messages = (Message("user", "x"), Message("assistant", tool_calls=calls))
    parts = build_body(Request("gemini-3-pro-preview", messages), {})["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == [SKIP_SIGNATURE, None]
    old = build_body(Request("gemini-2.5-pro", messages), {})["contents"][1]["parts"]
    assert all("thoughtSignature" not in p for p in old)


def test_a_tool_result_that_names_no_known_call_is_rejected() -> None:
    messages = (Message("user", "x"), Message("tool", "r", tool_call_id="nope"))
    with pytest.raises(base.InvalidRequestError, match="'nope'"):
        build_body(Request(MODEL, messages), {})


def test_an_unknown_role_is_rejected() -> None:
    with pytest.raises(base.InvalidRequestError, match="role 'system'"):
        build_body(Request(MODEL, (Message("system", "x"),)), {})


_texts = st.text(alphabet="ab ", max_size=3)
_calls = st.lists(st.sampled_from(["f", "g"]), max_size=2)
_message = st.one_of(
    st.builds(lambda t: Message("user", t), _texts),
    st.builds(
        lambda t, names: Message(
            "assistant", t, tool_calls=tuple(ToolCall(f"id{i}", n) for i, n in enumerate(names))
        ),
        _texts,
        _calls,
    ),
    st.builds(lambda t: Message("tool", t, tool_call_id="x", name="f"), _texts),
)


@given(st.lists(_message, max_size=12))
def test_contents_alternate_roles_and_never_carry_empty_parts(messages: list[Message]) -> None:
    contents = build_body(Request("gemini-3-pro-preview", tuple(messages)), {})["contents"]
    roles = [c["role"] for c in contents]
    assert all(a != b for a, b in itertools.pairwise(roles))
    assert all(c["parts"] for c in contents)
    parts = [p for c in contents for p in c["parts"]]
    assert sum("functionCall" in p for p in parts) == sum(len(m.tool_calls) for m in messages)
    assert sum("functionResponse" in p for p in parts) == sum(m.role == "tool" for m in messages)
    assert all(p["text"] for p in parts if "text" in p)


# --- responses --------------------------------------------------------------------------------


async def test_streamed_text_is_accumulated_and_every_event_counts_as_progress(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    thought = fake.chunk({"text": "pondering", "thought": True})
    last = fake.chunk({"text": "lo"}, finish="STOP", usage_metadata=fake.usage(5, 3, thoughts=4))
    fake_server.script(fake.PATH, fake.stream(thought, fake.chunk({"text": "Hel"}), last))
    progress = Progress()
    response = await adapter.complete(ask(), on_progress=progress)
    assert response == Response(
        text="Hello",
        finish_reason="stop",
        usage=Usage(input_tokens=5, output_tokens=7),
        model=fake.MODEL_VERSION,
        provider="gemini",
    )
    assert progress.count == 3


async def test_function_calls_become_tool_calls_with_fresh_ids(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    body = fake.chunk(
        fake.call_part("read_file", {"file_path": "a.txt"}),
        fake.call_part("read_file", {"file_path": "b.txt"}),
        finish="STOP",
    )
    fake_server.script(fake.PATH, fake.stream(body))
    response = await complete(adapter, ask(tools=(READ_TOOL,)))
    assert response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("read_file", {"file_path": "a.txt"}),
        ("read_file", {"file_path": "b.txt"}),
    ]
    ids = [c.id for c in response.tool_calls]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2


async def test_thought_signatures_round_trip_to_the_part_they_came_from(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    first = fake.chunk(
        fake.call_part("read_file", {"file_path": "a"}, signature="SIG-A"),
        fake.call_part("read_file", {"file_path": "b"}),
        finish="STOP",
    )
    fake_server.script(fake.PATH, fake.stream(first), fake.text_stream("done"))
    request = ask(model="gemini-3-pro-preview", tools=(READ_TOOL,))
    calls = (await complete(adapter, request)).tool_calls
    follow_up = (
        *request.messages,
        Message("assistant", tool_calls=calls),
        *(Message("tool", "text", tool_call_id=c.id) for c in calls),
    )
    await complete(adapter, Request("gemini-3-pro-preview", follow_up, tools=(READ_TOOL,)))

    model_turn = fake_server.requests[1].json()["contents"][1]
    assert [p.get("thoughtSignature") for p in model_turn["parts"]] == ["SIG-A", None]


@pytest.mark.parametrize(
    ("raw", "tools", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "error"),
        ("OTHER", False, "other"),
        ("SOMETHING_NEW", False, "other"),
    ],
)
def test_finish_reasons(raw: str, tools: bool, expected: str) -> None:
    assert finish_reason_for(raw, has_tool_calls=tools) == expected


async def test_max_tokens_is_reported_as_length(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.text_stream("trunc", finish="MAX_TOKENS"))
    assert (await complete(adapter)).finish_reason == "length"


async def test_a_blocked_prompt_is_a_content_filter_error(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    trailer = {"usageMetadata": fake.usage(candidates=0)}
    fake_server.script(fake.PATH, fake.stream(fake.blocked_prompt("PROHIBITED_CONTENT"), trailer))
    with pytest.raises(base.ContentFilterError, match="PROHIBITED_CONTENT") as info:
        await complete(adapter)
    assert info.value.failure_class == "deterministic"


async def test_a_safety_stop_with_nothing_said_is_a_content_filter_error(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    body = fake.chunk(finish="SAFETY", finish_message="unsafe content")
    fake_server.script(fake.PATH, fake.stream(body))
    with pytest.raises(base.ContentFilterError, match=r"SAFETY.*unsafe content"):
        await complete(adapter)


async def test_a_safety_stop_after_some_text_returns_the_text(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.text_stream("partial", finish="SAFETY"))
    response = await complete(adapter)
    assert (response.text, response.finish_reason) == ("partial", "content_filter")


@given(st.lists(st.text(max_size=5), min_size=1, max_size=8))
def test_text_split_across_chunks_reassembles_exactly(pieces: list[str]) -> None:
    accumulator = _Accumulator()
    for piece in pieces:
        accumulator.feed(fake.chunk({"text": piece}))
    accumulator.feed(fake.chunk(finish="STOP"))
    assert accumulator.response(provider="g", model=MODEL).text == "".join(pieces)


# --- HTTP errors ------------------------------------------------------------------------------

_PER_MINUTE = fake.quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
_PER_DAY = fake.quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


@pytest.mark.parametrize(
    ("reply", "error_type", "retry_after"),
    [
        (
            fake.error_reply(
                429, _QUOTA_MESSAGE, "RESOURCE_EXHAUSTED", _PER_MINUTE, fake.retry_info("22.5s")
            ),
            base.RateLimitError,
            22.5,
        ),
        (
            fake.error_reply(
                429,
                "Resource has been exhausted (e.g. check quota).",
                "RESOURCE_EXHAUSTED",
                fake.retry_info("30s"),
                **{"retry-after": "7"},
            ),
            base.RateLimitError,
            7.0,
        ),
        (
            fake.error_reply(
                429, _QUOTA_MESSAGE, "RESOURCE_EXHAUSTED", _PER_DAY, fake.retry_info("40s")
            ),
            base.QuotaExceededError,
            40.0,
        ),
        (fake.error_reply(500, "Internal error", "INTERNAL"), base.ServerError, None),
        (
            fake.error_reply(401, "Unauthenticated", "UNAUTHENTICATED"),
            base.AuthenticationError,
            None,
        ),
        (
            fake.error_reply(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"},
            ),
            base.AuthenticationError,
            None,
        ),
        (
            fake.error_reply(400, "Invalid value at 'contents[0]'", "INVALID_ARGUMENT"),
            base.InvalidRequestError,
            None,
        ),
        (
            fake.error_reply(
                400,
                "The input token count (1200000) exceeds the maximum number of tokens allowed "
                "(1048576).",
                "INVALID_ARGUMENT",
            ),
            base.ContextLengthError,
            None,
        ),
        (
            fake.error_reply(413, "Request payload size exceeds the limit", "INVALID_ARGUMENT"),
            base.ContextLengthError,
            None,
        ),
        (
            fake.error_reply(403, "Permission denied", "PERMISSION_DENIED"),
            base.AccessDeniedError,
            None,
        ),
        (fake.error_reply(404, "models/nope is not found", "NOT_FOUND"), base.NotFoundError, None),
    ],
)
async def test_http_errors_map_to_typed_errors(
    adapter: GeminiAdapter,
    fake_server: FakeServer,
    reply: Reply,
    error_type: type[base.ProviderError],
    retry_after: float | None,
) -> None:
    fake_server.script(fake.PATH, reply)
    with pytest.raises(base.ProviderError) as info:
        await complete(adapter)
    error = info.value
    assert type(error) is error_type
    assert error.retry_after == retry_after
    assert error.status_code == reply.status
    assert error.provider == "gemini"
    assert error.error_code == fake.json_error(reply)["status"]
    assert str(error) == f"gemini: HTTP {reply.status}: {fake.json_error(reply)['message']}"


async def test_rate_limits_are_retryable_but_a_daily_quota_is_not(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(
        fake.PATH,
        fake.error_reply(429, _QUOTA_MESSAGE, "RESOURCE_EXHAUSTED", _PER_MINUTE),
        fake.error_reply(429, _QUOTA_MESSAGE, "RESOURCE_EXHAUSTED", _PER_DAY),
    )
    with pytest.raises(base.RateLimitError) as minute:
        await complete(adapter)
    with pytest.raises(base.QuotaExceededError) as day:
        await complete(adapter)
    assert (minute.value.retryable, day.value.retryable) == (True, False)


async def test_retry_after_as_an_http_date(adapter: GeminiAdapter, fake_server: FakeServer) -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    reply = fake.error_reply(
        503, "The model is overloaded.", "UNAVAILABLE", **{"retry-after": when}
    )
    fake_server.script(fake.PATH, reply)
    with pytest.raises(base.ServerError) as info:
        await complete(adapter)
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


async def test_an_error_body_wrapped_in_a_list_and_a_non_json_body(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    listed = Reply.json([fake.error_body(400, "bad field", "INVALID_ARGUMENT")], status=400)
    page = b"<html>Bad Gateway" + b" padding" * 1000 + b"</html>"
    html = Reply(502, {"content-type": "text/html"}, page)
    fake_server.script(fake.PATH, listed, html)
    with pytest.raises(base.InvalidRequestError, match="bad field"):
        await complete(adapter)
    with pytest.raises(base.ServerError, match="Bad Gateway") as info:
        await complete(adapter)
    assert info.value.status_code == 502
    assert len(str(info.value)) < 400, "a huge error page must not flood failure_reason"


async def test_an_error_inside_the_stream_is_typed_from_its_code(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    overloaded = fake.error_body(503, "The model is overloaded.", "UNAVAILABLE")
    fake_server.script(fake.PATH, fake.stream(fake.chunk({"text": "par"}), overloaded))
    progress = Progress()
    with pytest.raises(base.ServerError, match="overloaded") as info:
        await adapter.complete(ask(), on_progress=progress)
    assert (info.value.status_code, info.value.error_code, progress.count) == (
        503,
        "UNAVAILABLE",
        2,
    )


# --- transport failures -----------------------------------------------------------------------


async def test_a_mid_stream_disconnect_is_a_network_error(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    bodies = [fake.chunk({"text": "a"}), fake.chunk({"text": "b"}, finish="STOP")]
    fake_server.script(fake.PATH, fake.stream(*bodies, disconnect_after=1))
    with pytest.raises(base.NetworkError) as info:
        await complete(adapter)
    assert info.value.retryable


async def test_a_stream_that_ends_without_a_finish_reason_is_a_network_error(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, fake.stream(fake.chunk({"text": "a"})))
    with pytest.raises(base.NetworkError, match="stream ended before completion"):
        await complete(adapter)


async def test_malformed_stream_data_is_a_network_error(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, Reply.sse([b"data: {not json\n\n"]))
    with pytest.raises(base.NetworkError, match="malformed stream data"):
        await complete(adapter)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_a_network_error(client: httpx.AsyncClient) -> None:
    refused = GeminiAdapter(client, base_url=f"http://127.0.0.1:{_closed_port()}", api_key=KEY)
    with pytest.raises(base.NetworkError):
        await complete(refused)


async def test_a_hung_server_times_out_within_the_request_timeout(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    fake_server.script(fake.PATH, Reply(hang=True))
    start = trio.current_time()
    with pytest.raises(base.RequestTimeoutError):
        await complete(adapter, ask(timeout=0.5))
    assert 0.4 <= trio.current_time() - start < 1.5


async def test_the_request_timeout_bounds_the_whole_stream_not_each_chunk(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    bodies = [fake.chunk({"text": "x"}) for _ in range(5)] + [fake.chunk(finish="STOP")]
    fake_server.script(fake.PATH, fake.stream(*bodies, delay=0.2))
    start = trio.current_time()
    with pytest.raises(base.RequestTimeoutError, match=r"0\.5s"):
        await complete(adapter, ask(timeout=0.5))
    assert trio.current_time() - start < 0.9


async def test_cancellation_mid_stream_propagates(
    adapter: GeminiAdapter, fake_server: FakeServer
) -> None:
    bodies = [fake.chunk({"text": "x"}) for _ in range(10)] + [fake.chunk(finish="STOP")]
    fake_server.script(fake.PATH, fake.stream(*bodies, delay=0.1))
    progress = Progress()
    with trio.move_on_after(0.35) as scope:
        await adapter.complete(ask(timeout=30), on_progress=progress)
    assert scope.cancelled_caught
    assert 1 <= progress.count < 11


# --- the key never leaks ----------------------------------------------------------------------


def _echoing(reply_status: int, status: str) -> Reply:
    message = f"API key not valid: {KEY}"
    details = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "metadata": {"key": KEY}}
    return fake.error_reply(reply_status, message, status, details)


@pytest.mark.parametrize(
    "reply",
    [
        _echoing(400, "INVALID_ARGUMENT"),
        _echoing(401, "UNAUTHENTICATED"),
        _echoing(429, "RESOURCE_EXHAUSTED"),
        _echoing(500, "INTERNAL"),
        Reply(502, {"content-type": "text/plain"}, f"upstream said {KEY}".encode()),
        fake.stream(fake.error_body(503, f"overloaded for {KEY}", "UNAVAILABLE")),
        Reply.sse([f"data: garbage {KEY}\n\n".encode()]),
        fake.stream(fake.chunk({"text": "a"}), disconnect_after=0),
        fake.stream(fake.chunk({"text": "a"})),
        Reply(hang=True),
    ],
)
async def test_the_key_never_appears_in_errors(
    adapter: GeminiAdapter, fake_server: FakeServer, reply: Reply
) -> None:
    fake_server.script(fake.PATH, reply)
    with pytest.raises(base.ProviderError) as info:
        await complete(adapter, ask(timeout=0.3))
    error = info.value
    for text in (str(error), repr(error), repr(error.raw), error.message):
        assert KEY not in text


async def test_the_key_never_appears_in_a_refused_connection_error(
    client: httpx.AsyncClient,
) -> None:
    refused = GeminiAdapter(client, base_url=f"http://127.0.0.1:{_closed_port()}", api_key=KEY)
    with pytest.raises(base.NetworkError) as info:
        await complete(refused)
    assert KEY not in str(info.value) and KEY not in repr(info.value.raw)
