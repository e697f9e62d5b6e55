"""The API backend's retry and failover rules (contract.md §7, §9) with scripted fake adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from attractor_trio.backends.provider import ApiBackend, detect_kind
from attractor_trio.errors import ConfigError
from attractor_trio.providers.base import (
    AuthenticationError,
    ContextLengthError,
    RateLimitError,
    ServerError,
)
from attractor_trio.providers.model import Request, Response
from attractor_trio.runconfig import ProviderConfig, RunConfig

from .helpers import named, read_json, run_dot


class Scripted:
    """An adapter that answers from a script: exceptions are raised, strings returned."""

    kind = "fake"

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.requests: list[Request] = []

    async def complete(self, request: Request, *, on_progress: Any) -> Response:
        self.requests.append(request)
        on_progress()
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return Response(text=step, provider="fake", model=request.model)


def config(**failover: list[str]) -> RunConfig:
    providers = {
        name: ProviderConfig(
            name=name,
            kind="openai",
            model=f"{name}-model",
            mode="one_shot",
            failover=tuple(failover.get(name, [])),
        )
        for name in ("a", "b", "c")
    }
    return RunConfig(backend="a", providers=providers)


DOT = 'digraph p { start [shape=Mdiamond]; done [shape=Msquare]; work [prompt="do it"]; start -> work -> done }'


async def _run(tmp_path: Path, backend: ApiBackend) -> Any:
    return await run_dot(DOT, tmp_path / "run", backend=backend)


async def test_success_writes_response_and_provider_used(
    tmp_path: Path, autojump_clock: Any
) -> None:
    a = Scripted("hello from a")
    result = await _run(tmp_path, ApiBackend(config(), "a", adapters={"a": a}))
    assert result.status == "success"
    assert (tmp_path / "run" / "work" / "response.md").read_text() == "hello from a"
    used = read_json(tmp_path / "run" / "work" / "provider_used.json")
    assert used == {
        "provider": "a",
        "kind": "openai",
        "model": "a-model",
        "mode": "one_shot",
        "failover_from": None,
    }
    assert a.requests[0].messages[0].content.endswith("do it")


async def test_retry_after_is_honored(tmp_path: Path, autojump_clock: Any) -> None:
    import trio

    a = Scripted(RateLimitError("slow down", provider="a", retry_after=7.0), "ok")
    started = trio.current_time()
    result = await _run(tmp_path, ApiBackend(config(), "a", adapters={"a": a}))
    assert result.status == "success"
    assert trio.current_time() - started == pytest.approx(7.0, abs=0.01)
    [retry] = named(tmp_path / "run", "llm_retry")
    assert (retry["provider"], retry["delay_s"], retry["error"]) == ("a", 7.0, "rate_limit")


async def test_auth_error_fails_deterministic_and_never_fails_over(
    tmp_path: Path, autojump_clock: Any
) -> None:
    a = Scripted(AuthenticationError("bad key", provider="a", status_code=401))
    b = Scripted("b answers")
    result = await _run(tmp_path, ApiBackend(config(a=["b"]), "a", adapters={"a": a, "b": b}))
    assert result.status == "fail" and result.failure_class == "deterministic"
    assert b.requests == [] and named(tmp_path / "run", "llm_failover") == []


async def test_server_error_fails_over_to_a_listed_provider(
    tmp_path: Path, autojump_clock: Any
) -> None:
    a = Scripted(ServerError("boom", provider="a", status_code=500))
    b = Scripted("b answers")
    result = await _run(tmp_path, ApiBackend(config(a=["b"]), "a", adapters={"a": a, "b": b}))
    assert result.status == "success"
    assert len(a.requests) == 3  # initial + 2 provider-level retries, then failover
    [event] = named(tmp_path / "run", "llm_failover")
    assert (event["from_provider"], event["to_provider"]) == ("a", "b")
    used = read_json(tmp_path / "run" / "work" / "provider_used.json")
    assert (used["provider"], used["failover_from"], used["model"]) == ("b", "a", "b-model")


async def test_pinned_provider_fails_loudly(tmp_path: Path, autojump_clock: Any) -> None:
    a = Scripted(ServerError("boom", provider="a", status_code=503))
    b = Scripted("never")
    result = await _run(tmp_path, ApiBackend(config(), "a", adapters={"a": a, "b": b}))
    assert result.status == "fail"
    assert "no failover allowed by config for provider a" in result.failure_reason
    assert result.failure_class == "transient_infra"  # keeps the underlying class
    [blocked] = named(tmp_path / "run", "llm_failover_blocked")
    assert blocked["provider"] == "a" and b.requests == []


async def test_context_length_never_fails_over(tmp_path: Path, autojump_clock: Any) -> None:
    a = Scripted(ContextLengthError("too long", provider="a", status_code=413))
    b = Scripted("b answers")
    result = await _run(tmp_path, ApiBackend(config(a=["b"]), "a", adapters={"a": a, "b": b}))
    assert result.failure_class == "budget_exhausted" and b.requests == []


async def test_node_provider_and_model_selection(tmp_path: Path, autojump_clock: Any) -> None:
    a, b = Scripted("a"), Scripted("b")
    dot = DOT.replace(
        'work [prompt="do it"]', 'work [prompt="x", llm_provider="b", llm_model="m-9"]'
    )
    await run_dot(
        dot, tmp_path / "run", backend=ApiBackend(config(), "a", adapters={"a": a, "b": b})
    )
    assert a.requests == [] and b.requests[0].model == "m-9"


def _mixed_config() -> RunConfig:
    """The default provider speaks OpenAI; ``claude-main`` and ``gem`` are other vendors."""
    kinds = {"main": "openai", "claude-main": "anthropic", "gem": "gemini"}
    providers = {
        name: ProviderConfig(name=name, kind=kind, model=f"{name}-model", mode="one_shot")
        for name, kind in kinds.items()
    }
    return RunConfig(backend="main", providers=providers)


@pytest.mark.parametrize(
    ("node_attrs", "chosen", "model"),
    [
        ('llm_provider="anthropic"', "claude-main", "claude-main-model"),  # a kind, not a name
        ('llm_model="claude-opus-4-6"', "claude-main", "claude-opus-4-6"),  # detected from model
        ('llm_model="gemini-3-flash-preview"', "gem", "gemini-3-flash-preview"),
        ('llm_model="gpt-5.2"', "main", "gpt-5.2"),  # the default already speaks OpenAI
        ('llm_model="llama-3"', "main", "llama-3"),  # unknown vendor: the default provider
    ],
)
async def test_routing_by_provider_kind_or_model_name(
    tmp_path: Path, autojump_clock: Any, node_attrs: str, chosen: str, model: str
) -> None:
    adapters = {name: Scripted(name) for name in ("main", "claude-main", "gem")}
    dot = DOT.replace('work [prompt="do it"]', f'work [prompt="x", {node_attrs}]')
    backend = ApiBackend(_mixed_config(), "main", adapters=adapters)
    result = await run_dot(dot, tmp_path / "run", backend=backend)
    assert result.status == "success"
    used = {name for name, adapter in adapters.items() if adapter.requests}
    assert used == {chosen}
    assert adapters[chosen].requests[0].model == model


async def test_an_unknown_provider_name_or_kind_is_refused_before_running(
    tmp_path: Path, autojump_clock: Any
) -> None:
    adapters = {name: Scripted(name) for name in ("main", "claude-main", "gem")}
    dot = DOT.replace('work [prompt="do it"]', 'work [prompt="x", llm_provider="mistral"]')
    backend = ApiBackend(_mixed_config(), "main", adapters=adapters)
    expected = (
        r"llm_provider 'mistral' is not a configured provider \(have: main, claude-main, gem\)"
    )
    with pytest.raises(ConfigError, match=expected) as refused:
        await run_dot(dot, tmp_path / "run", backend=backend)
    assert str(refused.value).startswith("<string>:1:")  # where the node is (file:line:col)
    assert not (tmp_path / "run").exists()
    assert not any(adapter.requests for adapter in adapters.values())


def test_detect_kind() -> None:
    assert detect_kind("claude-opus-4-6") == "anthropic"
    assert detect_kind("gpt-5.2") == "openai"
    assert detect_kind("gemini-3-flash-preview") == "gemini"
    assert detect_kind("llama-3") is None


def test_unknown_default_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a configured provider"):
        ApiBackend(config(), "zzz")


async def test_missing_api_key_is_refused_before_running(tmp_path: Path) -> None:
    providers = {
        "a": ProviderConfig(
            name="a",
            kind="anthropic",
            model="claude-x",
            mode="one_shot",
            api_key_env="NO_SUCH_KEY_VAR",
        )
    }
    backend = ApiBackend(RunConfig(backend="a", providers=providers), "a", env={})
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        await _run(tmp_path, backend)
    assert not (tmp_path / "run").exists()
    await backend.aclose()


async def test_one_shot_mode_makes_a_single_call(tmp_path: Path, autojump_clock: Any) -> None:
    providers = {"a": ProviderConfig(name="a", kind="openai", model="m")}  # default: agent_loop
    adapter = Scripted("x")
    backend = ApiBackend(RunConfig(backend="a", providers=providers), "a", adapters={"a": adapter})
    dot = DOT.replace('work [prompt="do it"]', 'work [prompt="do it", codergen_mode="one_shot"]')
    result = await run_dot(dot, tmp_path / "run", backend=backend)
    assert result.status == "success" and len(adapter.requests) == 1
    assert adapter.requests[0].tools == ()  # one_shot offers no tools


async def test_exhausted_failover_chain_is_not_reported_as_pinned(
    tmp_path: Path, autojump_clock: Any
) -> None:
    a = Scripted(ServerError("boom a", provider="a", status_code=500))
    b = Scripted(ServerError("boom b", provider="b", status_code=502))
    result = await _run(tmp_path, ApiBackend(config(a=["b"]), "a", adapters={"a": a, "b": b}))
    assert result.status == "fail"
    assert "every provider of the failover chain failed (a → b)" in result.failure_reason
    assert "no failover allowed" not in result.failure_reason
    assert named(tmp_path / "run", "llm_failover_blocked") == []


async def test_unhinted_failures_are_reported_with_their_class(
    tmp_path: Path, autojump_clock: Any
) -> None:
    from .helpers import run_dot as run

    dot = 'digraph p { start [shape=Mdiamond]; done [shape=Msquare]; t [prompt="x"]; start -> t -> done }'
    result = await run(
        dot,
        tmp_path / "run",
        steps={"t": [{"outcome": "fail", "failure_reason": "connection reset by peer"}]},
    )
    assert result.failure_class == "transient_infra"
    assert read_json(tmp_path / "run" / "final.json")["failure_class"] == "transient_infra"
