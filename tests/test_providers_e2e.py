"""Issue 7 end to end: real adapters over real HTTP (a fake vendor on 127.0.0.1) through a run.

Real clock throughout: the fake server and httpx talk over sockets, which virtual time would
skip past.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.backends.provider import ApiBackend
from attractor_trio.runconfig import ProviderConfig, RunConfig

from .fakes import anthropic as fa
from .fakes.server import FakeServer, Reply
from .helpers import assert_in_no_file, named, read_json, run_dot

pytestmark = pytest.mark.slow

KEY = "sk-test-SECRET-6f1c0a"
DOT = 'digraph p { start [shape=Mdiamond]; done [shape=Msquare]; work [prompt="write hello"]; start -> work -> done }'


def _config(server: FakeServer, failover: tuple[str, ...] = ()) -> RunConfig:
    providers = {
        "a": ProviderConfig(
            name="a",
            kind="anthropic",
            model="claude-test",
            mode="one_shot",
            base_url=server.base_url,
            api_key_env="A_KEY",
            failover=failover,
            timeout=10,
        ),
        "b": ProviderConfig(
            name="b",
            kind="anthropic",
            model="claude-b",
            mode="one_shot",
            base_url=server.base_url + "/b",
            api_key_env="A_KEY",
            timeout=10,
        ),
    }
    return RunConfig(backend="a", providers=providers)


def _ok(text: str) -> Reply:
    return fa.stream_reply(fa.stream_events([fa.TextBlock((text[:3], text[3:]))]))


async def _run(tmp_path: Path, server: FakeServer, dot: str = DOT, **kw: Any) -> Any:
    backend = ApiBackend(_config(server, **kw), "a", env={"A_KEY": KEY})
    try:
        with trio.fail_after(30):
            return await run_dot(dot, tmp_path / "run", backend=backend)
    finally:
        await backend.aclose()


async def test_success_writes_the_response(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(r"^/v1/messages$", _ok("hello world"))
    result = await _run(tmp_path, fake_server)
    assert result.status == "success"
    assert (tmp_path / "run" / "work" / "response.md").read_text() == "hello world"
    request = fake_server.requests[0]
    assert request.headers["x-api-key"] == KEY and request.json()["model"] == "claude-test"
    assert_in_no_file(tmp_path / "run", KEY)


async def test_429_then_success_after_the_advertised_delay(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(
        r"^/v1/messages$",
        fa.error_reply(429, "rate_limit_error", "slow down", **{"retry-after": "1"}),
        _ok("late hello"),
    )
    began = time.monotonic()
    result = await _run(tmp_path, fake_server)
    assert result.status == "success" and time.monotonic() - began >= 1.0
    [retry] = named(tmp_path / "run", "llm_retry")
    assert retry["delay_s"] == 1.0


async def test_401_is_deterministic_and_never_fails_over(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(r"^/v1/messages$", fa.error_reply(401, "authentication_error", "bad key"))
    fake_server.script(r"^/b/v1/messages$", _ok("from b"))
    result = await _run(tmp_path, fake_server, failover=("b",))
    assert result.status == "fail" and result.failure_class == "deterministic"
    assert not [r for r in fake_server.requests if r.path.startswith("/b/")]
    assert_in_no_file(tmp_path / "run", KEY)


async def test_500_fails_over_to_the_listed_provider(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(r"^/v1/messages$", fa.error_reply(500, "api_error", "boom"))
    fake_server.script(r"^/b/v1/messages$", _ok("from b"))
    result = await _run(tmp_path, fake_server, failover=("b",))
    assert result.status == "success"
    [event] = named(tmp_path / "run", "llm_failover")
    assert (event["from_provider"], event["to_provider"]) == ("a", "b")
    assert read_json(tmp_path / "run" / "work" / "provider_used.json")["provider"] == "b"


async def test_pinned_provider_fails_loudly(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(r"^/v1/messages$", fa.error_reply(503, "overloaded_error", "busy"))
    result = await _run(tmp_path, fake_server)
    assert result.status == "fail"
    assert "no failover allowed by config for provider a" in result.failure_reason
    assert named(tmp_path / "run", "llm_failover_blocked")


async def test_cancel_mid_stream_leaves_a_consistent_run(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    slow = fa.stream_events([fa.TextBlock(("a",) * 50)])
    fake_server.script(r"^/v1/messages$", fa.stream_reply(slow, delay=0.1))
    backend = ApiBackend(_config(fake_server), "a", env={"A_KEY": KEY})
    with trio.move_on_after(1.0):
        await run_dot(DOT, tmp_path / "run", backend=backend)
    await backend.aclose()
    root = tmp_path / "run"
    assert read_json(root / "final.json")["status"] == "canceled"
    for path in root.rglob("*.json"):
        json.loads(path.read_text())
    assert named(root, "cancellation_exit")[0]["node_id"] == "work"


async def test_stage_timeout_bounds_a_hung_stream(tmp_path: Path, fake_server: FakeServer) -> None:
    fake_server.script(r"^/v1/messages$", Reply(hang=True))
    dot = DOT.replace('work [prompt="write hello"]', 'work [prompt="x", timeout="1s"]')
    began = time.monotonic()
    result = await _run(tmp_path, fake_server, dot=dot)
    assert result.status == "fail" and "timed out after 1s" in result.failure_reason
    assert result.failure_class == "transient_infra"
    assert time.monotonic() - began < 10
