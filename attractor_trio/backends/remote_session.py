"""An agent-loop attempt as data: everything a node needs to run the whole session itself.

Why (contract.md §10 "Scale-out on Ray"): an executor that places attempts on other machines
should run an agent-loop attempt — its model calls, file tools, ``shell`` commands and hooks —
where its work directory is, not split between the driver and a node. The driver therefore
describes the attempt as a :class:`SessionSpec` (picklable plain data: provider settings, the
node, the prompt, the few context values the session reads, the attempt's facts, the stage
environment) and an executor that offers ``run_session`` runs :func:`run_session_spec` wherever
it likes.

Secrets: the node's provider key reaches it only in ``SessionSpec.env``, the stage environment
the driver builds (the allowlist plus the ``api_key_env`` of the node's provider chain) — never
from the node's own environment. The session's ``shell`` commands still see that environment
without ``*_API_KEY`` and friends (``agent_loop/env.py``).

Errors: a provider error crosses the boundary as its kind and fields (:func:`error_to_wire`),
not as the exception object (its ``raw`` payload may hold an HTTP response that does not
pickle); :func:`error_from_wire` rebuilds the same class, so the attempt fails with the same
failure class as locally.

Fidelity ``full``: the conversation thread lives in the driver's backend (memory only); the
spec carries the thread's history so far, and the session's end brings the thread back.

``RayExecutor.run_session`` (``executors/_session.py``) runs it as one Ray task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from attrs import field, frozen

from ..context import Context
from ..core.attempt import AttemptInfo, reset_attempt, set_attempt
from ..core.outcome import Outcome
from ..dot.graph import Node
from ..providers.base import ProviderError, error_from_kind
from ..providers.model import Message
from ..runconfig import ProviderConfig, RunConfig
from ..stage_env import stage_environment

__all__ = [
    "SESSION_CONTEXT_KEYS",
    "SessionEnd",
    "SessionSpec",
    "error_from_wire",
    "error_to_wire",
    "run_session_spec",
    "run_session_to_wire",
    "session_result",
    "session_spec",
]

#: The context values an agent-loop session reads (tool hooks of the graph, fidelity).
SESSION_CONTEXT_KEYS: Final = (
    "graph.tool_hooks.pre",
    "graph.tool_hooks.post",
    "graph.thread_id",
    "internal.fidelity",
    "internal.thread_key",
)
#: The attempt's facts that travel (the rest — emitters, liveness, artifacts — stay behind).
_ATTEMPT_FIELDS: Final = (
    "run_id",
    "node_id",
    "attempt",
    "max_attempts",
    "attempt_id",
    "logs_root",
    "stage_dir",
    "workdir",
    "predecessor_node",
    "predecessor_outcome",
    "branch",
    "kill_grace",
    "visit",
)
_ERROR_FIELDS: Final = ("provider", "status_code", "error_code", "retryable", "retry_after")


@frozen
class SessionSpec:
    """One agent-loop attempt, self-contained (see the module docstring)."""

    providers: Mapping[str, ProviderConfig]
    default: str
    node: Node
    prompt: str
    context: Mapping[str, Any] = field(factory=dict)
    attempt: Mapping[str, Any] = field(factory=dict)
    env: Mapping[str, str] = field(factory=dict)
    #: Fidelity ``full``: the thread key and the conversation the session continues.
    thread: str = ""
    history: tuple[Message, ...] = ()


@frozen
class SessionEnd:
    """What the backend returns, and the thread's conversation after the session
    (``None`` without a thread)."""

    value: str | Outcome
    history: tuple[Message, ...] | None = None


def session_spec(
    config: RunConfig,
    default: str,
    env: Mapping[str, str],
    chain: list[str],
    node: Node,
    prompt: str,
    context: Context,
    attempt: AttemptInfo,
    thread: tuple[str, tuple[Message, ...]] = ("", ()),
) -> SessionSpec:
    """The driver's half: ``chain`` names the node's provider and its failover providers,
    whose ``api_key_env`` values are the only keys added to the stage environment."""
    key_names = [config.providers[name].api_key_env for name in chain]
    return SessionSpec(
        providers={name: config.providers[name] for name in chain},
        default=default,
        node=node,
        prompt=prompt,
        context={k: context.get(k) for k in SESSION_CONTEXT_KEYS if context.get(k) is not None},
        attempt={name: getattr(attempt, name) for name in _ATTEMPT_FIELDS},
        env=stage_environment(attempt, extra_names=[n for n in key_names if n], inherited=env),
        thread=thread[0],
        history=thread[1],
    )


async def run_session_spec(
    spec: SessionSpec,
    *,
    emit: Callable[..., None],
    progress: Callable[[], None],
) -> SessionEnd:
    """The node's half: the same ``ApiBackend`` → ``AgentLoopBackend`` code as locally, with
    the provider rebuilt from ``spec`` and keys read from ``spec.env`` only."""
    from .provider import ApiBackend

    config = RunConfig(backend=spec.default, providers=dict(spec.providers))
    backend = ApiBackend(config, spec.default, env=dict(spec.env))
    attempt = AttemptInfo(**spec.attempt, emit=emit, progress=progress)
    backend.agent.keep_thread(attempt.run_id, spec.thread, spec.history)
    token = set_attempt(attempt)
    try:
        value = await backend.run(spec.node, spec.prompt, Context(dict(spec.context)))
        history = backend.agent.history_of(attempt.run_id, spec.thread)
        return SessionEnd(value, history if spec.thread else None)
    finally:
        reset_attempt(token)
        await backend.aclose()


def error_to_wire(exc: ProviderError) -> dict[str, Any]:
    """A provider error as plain data (its kind, message and fields; not ``raw``)."""
    return {
        "kind": exc.kind,
        "message": exc.message,
        **{name: getattr(exc, name) for name in _ERROR_FIELDS},
    }


def error_from_wire(wire: Mapping[str, Any]) -> ProviderError:
    """The provider error :func:`error_to_wire` described: same class, message and fields."""
    return error_from_kind(
        str(wire["kind"]),
        str(wire["message"]),
        **{name: wire.get(name) for name in _ERROR_FIELDS if name in wire},
    )


async def run_session_to_wire(
    spec: SessionSpec,
    *,
    emit: Callable[..., None],
    progress: Callable[[], None],
) -> dict[str, Any]:
    """:func:`run_session_spec` with its end as plain data, for the trip back to the driver:
    ``{"kind": "session_result", "end": <SessionEnd>}`` or
    ``{"kind": "provider_error", "error": …}``."""
    try:
        end = await run_session_spec(spec, emit=emit, progress=progress)
    except ProviderError as exc:
        return {"kind": "provider_error", "error": error_to_wire(exc)}
    return {"kind": "session_result", "end": end}


def session_result(wire: Mapping[str, Any]) -> SessionEnd:
    """The driver's end of :func:`run_session_to_wire`: the value, or the same provider error
    raised again (so the attempt scope classifies it as it would locally)."""
    if wire["kind"] == "provider_error":
        raise error_from_wire(wire["error"])
    end = wire["end"]
    if not isinstance(end, SessionEnd):
        raise TypeError(f"a remote agent session returned {type(end).__name__}")
    return end
