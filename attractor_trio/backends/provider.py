"""The API codergen backend: node → request, provider-level retry, and failover with pinning.

Two modes (contract.md §7; node ``codergen_mode`` beats the provider's ``mode``): ``one_shot`` is
a single completion; ``agent_loop`` (the default) hands the stage to
:class:`~.agent_loop.backend.AgentLoopBackend`, which makes every model call of its
tool loop through :meth:`ApiBackend.complete` — the same retry and failover rules apply.

Retry and failover run inside the stage's attempt scope, so the node ``timeout`` and the run's
cancellation bound every sleep and every HTTP call. Failover follows contract.md §7 exactly: only
to providers the config lists in ``failover``; an empty or missing list pins the provider, and
a failover-eligible error then fails loudly (``llm_failover_blocked``); authentication,
invalid-request, context-length and cancellation errors never fail over.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from ..context import Context
from ..core.attempt import AttemptInfo, require_attempt
from ..core.outcome import Outcome
from ..dot.graph import Graph, Node
from ..errors import ConfigError
from ..providers.base import ConfigurationError, ProviderError
from ..providers.model import Adapter, Message, Request, Response
from ..runconfig import MODES, ProviderConfig, RunConfig
from .agent_loop.backend import AgentLoopBackend, Served, record_provider
from .executors.base import SessionRunner, session_executor
from .remote_session import session_spec

__all__ = ["NEVER_FAIL_OVER", "ApiBackend", "detect_kind", "make_adapter"]

#: Errors another provider cannot fix (contract.md §7).
NEVER_FAIL_OVER = frozenset(
    {"auth", "access_denied", "invalid_request", "context_length", "aborted"}
)
_API_KINDS = ("anthropic", "openai", "gemini", "openai_compatible")
_MAX_RETRIES = 2
_BASE_DELAY_S = 1.0
_MAX_DELAY_S = 60.0
_DEFAULT_TIMEOUT_S = 600.0


def detect_kind(model: str) -> str | None:
    """The vendor a model name belongs to, for ``llm_provider`` auto-detection (S2.6-14)."""
    name = model.lower()
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
        return "openai"
    if name.startswith("gemini"):
        return "gemini"
    return None


def make_adapter(
    config: ProviderConfig, client: httpx.AsyncClient, env: Mapping[str, str]
) -> Adapter:
    """The adapter for one configured provider; the API key comes only from ``api_key_env``."""
    key = ""
    if config.api_key_env:
        key = env.get(config.api_key_env, "")
        if not key:
            raise ConfigurationError(
                f"provider '{config.name}': environment variable {config.api_key_env} is not set",
                provider=config.name,
            )
    base_url = config.base_url or None
    if config.kind == "anthropic":
        from ..providers.anthropic import AnthropicAdapter

        return AnthropicAdapter(client, base_url=base_url, api_key=key, name=config.name)
    if config.kind == "openai":
        from ..providers.openai import OpenAIAdapter

        return OpenAIAdapter(client, base_url=base_url, api_key=key, name=config.name)
    if config.kind == "gemini":
        from ..providers.gemini import GeminiAdapter

        return GeminiAdapter(client, base_url=base_url, api_key=key, name=config.name)
    if config.kind == "openai_compatible":
        from ..providers.openai_compat import OpenAICompatibleAdapter

        return OpenAICompatibleAdapter(client, base_url=base_url, api_key=key, name=config.name)
    raise ConfigurationError(f"provider '{config.name}' has kind '{config.kind}', not an API kind")


class ApiBackend:
    """A :class:`~attractor_trio.providers.base.CodergenBackend` over configured API providers.

    ``adapters`` (name → adapter) replaces adapter construction in tests; otherwise adapters
    share one ``httpx.AsyncClient`` created on first use and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        config: RunConfig,
        default: str,
        *,
        env: Mapping[str, str] | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = trio.sleep,
    ) -> None:
        if default not in config.providers:
            known = ", ".join(config.providers) or "none"
            raise ConfigError(f"backend '{default}' is not a configured provider (have: {known})")
        self.config = config
        self.default = default
        self.env = os.environ if env is None else env
        self._adapters: dict[str, Adapter] = dict(adapters or {})
        self._client: httpx.AsyncClient | None = None
        self.rng = rng or random.Random()
        self.sleep = sleep
        self._agent = AgentLoopBackend(self)

    def secret_env_names(self) -> list[str]:
        """Every configured provider's key variable: their values are redacted (contract.md §10)."""
        return [p.api_key_env for p in self.config.providers.values() if p.api_key_env]

    def check(self, graph: Graph) -> None:
        """Refuse, before anything runs, stages this backend cannot serve (exit 2 in the CLI)."""
        for node in graph:
            if node.handler_type != "codergen":
                continue
            try:
                provider = self.config.providers[self._provider_for(node)]
            except ConfigurationError as exc:  # the API promises ConfigError before a run
                raise ConfigError(f"{graph.path}:{node.line}:{node.col}: {exc}") from None
            mode = self.mode_for(node)
            if mode not in MODES:
                raise ConfigError(
                    f"{graph.path}:{node.line}:{node.col}: node '{node.id}' runs in codergen mode "
                    f"'{mode}' (provider '{provider.name}'); expected one of {', '.join(MODES)}"
                )
            for name in (provider.name, *provider.failover):
                self._check_key(self.config.providers[name], node)

    def _check_key(self, provider: ProviderConfig, node: Node) -> None:
        """A missing API key is a config error before the run, not a failed stage an hour in."""
        if provider.name in self._adapters or not provider.api_key_env:
            return
        if not self.env.get(provider.api_key_env):
            raise ConfigError(
                f"provider '{provider.name}' (used by node '{node.id}'): environment variable "
                f"{provider.api_key_env} is not set; export it, or choose another --backend"
            )

    def runs_one_process(self, node: Node) -> bool:
        """An agent-loop attempt on an executor that runs whole sessions is one remote unit:
        it starts when a node starts it (``CodergenHandler.runs_one_process``, contract.md §10)."""
        return self.mode_for(node) == "agent_loop" and session_executor() is not None

    def mode_for(self, node: Node) -> str:
        """Node ``codergen_mode`` beats the provider's ``mode`` (contract.md §7)."""
        return node.codergen_mode or self.config.providers[self._provider_for(node)].mode

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        if self.mode_for(node) == "agent_loop":
            remote = session_executor()
            if remote is not None:  # the whole session runs where the executor places it
                return await self._run_elsewhere(remote, node, prompt, context)
            return await self._agent.run(node, prompt, context)
        attempt = require_attempt(node, Path.cwd())
        served = await self.complete(
            node, Request(model="", messages=(Message("user", prompt),)), attempt
        )
        record_provider(attempt, served, mode="one_shot")
        return served.response.text

    @property
    def agent(self) -> AgentLoopBackend:
        return self._agent

    async def _run_elsewhere(
        self, remote: SessionRunner, node: Node, prompt: str, context: Context
    ) -> str | Outcome:
        """The agent-loop attempt as data (``remote_session``) for an executor that runs whole
        sessions; a fidelity ``full`` thread travels with it and comes back."""
        first = self._provider_for(node)
        chain = [first, *self.config.providers[first].failover]
        attempt = require_attempt(node, Path.cwd())
        thread = self._agent.thread_of(node, context, attempt)
        spec = session_spec(
            self.config, self.default, self.env, chain, node, prompt, context, attempt, thread
        )
        end = await remote.run_session(spec)
        if end.history is not None:
            self._agent.keep_thread(attempt.run_id, thread[0], end.history)
        return end.value

    async def complete(
        self, node: Node, draft: Request, attempt: AttemptInfo, *, start: int = 0
    ) -> Served:
        """One model call with provider retry and failover (contract.md §7).

        ``draft`` carries the conversation; model, timeout and reasoning effort are filled in
        for each provider tried. The chain is the node's provider and its ``failover`` list;
        ``start`` skips the providers an earlier call of the same stage already failed over
        from, so an agent loop keeps talking to the provider that answered last.
        """
        first = self._provider_for(node)
        chain = [first, *self.config.providers[first].failover]
        start = min(max(start, 0), len(chain) - 1)
        previous = chain[start - 1] if start else ""
        for index in range(start, len(chain)):
            name = chain[index]
            provider = self.config.providers[name]
            request = self._request(node, provider, draft)
            try:
                response = await self._with_retries(name, request, attempt)
            except ProviderError as exc:
                self._fail_over_or_raise(node, chain, index, exc)
                previous = name
                continue
            return Served(response, provider, request.model, index, previous)
        raise AssertionError("unreachable: the last provider raises")  # pragma: no cover

    # --- selection ----------------------------------------------------------------------------
    def _provider_for(self, node: Node) -> str:
        """``llm_provider`` names a configured provider; else detect it from ``llm_model``."""
        if node.llm_provider:
            if node.llm_provider in self.config.providers:
                return node.llm_provider
            kind_matches = [
                n for n, p in self.config.providers.items() if p.kind == node.llm_provider
            ]
            if kind_matches:
                return kind_matches[0]
            raise ConfigurationError(
                f"node '{node.id}': llm_provider '{node.llm_provider}' is not a configured "
                f"provider (have: {', '.join(self.config.providers)})"
            )
        kind = detect_kind(node.llm_model) if node.llm_model else None
        if kind and self.config.providers[self.default].kind != kind:
            for name, provider in self.config.providers.items():
                if provider.kind == kind:
                    return name
        return self.default

    def _request(self, node: Node, provider: ProviderConfig, draft: Request) -> Request:
        model = node.llm_model or provider.model
        if not model:
            raise ConfigurationError(
                f"node '{node.id}': no model: set llm_model on the node (or a stylesheet) or "
                f"model in provider '{provider.name}'",
                provider=provider.name,
            )
        effort = node.attrs.get("reasoning_effort") or None  # only when set explicitly
        return attrs.evolve(
            draft,
            model=model,
            reasoning_effort=effort,
            max_tokens=node.llm_max_tokens or draft.max_tokens,
            timeout=provider.timeout or _DEFAULT_TIMEOUT_S,
        )

    def _adapter(self, name: str) -> Adapter:
        adapter = self._adapters.get(name)
        if adapter is None:
            if self._client is None:
                self._client = httpx.AsyncClient()
            adapter = make_adapter(self.config.providers[name], self._client, self.env)
            self._adapters[name] = adapter
        return adapter

    # --- retry and failover -------------------------------------------------------------------
    async def _with_retries(self, name: str, request: Request, attempt: AttemptInfo) -> Response:
        """Provider-level retry (spec Part 2A): retryable errors only, ``Retry-After`` honored."""
        adapter = self._adapter(name)
        for retry in range(_MAX_RETRIES + 1):
            try:
                return await adapter.complete(request, on_progress=attempt.progress)
            except ProviderError as exc:
                if not exc.retryable or retry == _MAX_RETRIES:
                    raise
                delay = self._delay(retry, exc)
                if delay is None:
                    raise
                attempt.emit(
                    "llm_retry",
                    node_id=attempt.node_id,
                    provider=name,
                    attempt=retry + 1,
                    delay_s=round(delay, 3),
                    error=exc.kind,
                )
                await self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, retry: int, exc: ProviderError) -> float | None:
        """Backoff with jitter; ``Retry-After`` wins, unless it exceeds the cap (then give up)."""
        if exc.retry_after is not None:
            wait = float(exc.retry_after)
            return None if wait > _MAX_DELAY_S else wait
        base = min(_BASE_DELAY_S * 2.0**retry, _MAX_DELAY_S)
        return base * self.rng.uniform(0.5, 1.5)

    def _fail_over_or_raise(
        self, node: Node, chain: list[str], index: int, exc: ProviderError
    ) -> None:
        """Fail over to the next listed provider, or raise saying exactly why not."""
        attempt = require_attempt(node, Path.cwd())
        name = chain[index]
        if exc.kind in NEVER_FAIL_OVER:
            raise exc
        if index + 1 < len(chain):
            attempt.emit(
                "llm_failover",
                node_id=node.id,
                from_provider=name,
                to_provider=chain[index + 1],
                reason=str(exc),
            )
            return
        if len(chain) == 1:  # the provider is pinned: no failover list at all
            attempt.emit("llm_failover_blocked", node_id=node.id, provider=name, reason=str(exc))
            why = f"no failover allowed by config for provider {name}: {exc.message}"
        else:
            tried = " → ".join(chain)
            why = f"every provider of the failover chain failed ({tried}): {exc.message}"
        raise type(exc)(
            why,
            provider=exc.provider,
            status_code=exc.status_code,
            retryable=exc.retryable,
            retry_after=exc.retry_after,
        ) from exc
