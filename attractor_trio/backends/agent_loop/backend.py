"""The ``agent_loop`` codergen mode: a stage runs as a coding agent session (contract.md §7).

:class:`AgentLoopBackend` is what :class:`~attractor_trio.backends.provider.ApiBackend` hands an
``agent_loop`` stage to. It builds the stage's tool box (rooted at ``ATTRACTOR_WORKDIR``,
reporting to the attempt's status path), its hooks, and a :class:`~.session.Session` whose
every model call goes through ``ApiBackend.complete`` — provider retry, ``Retry-After`` and
failover apply per call, and after a failover the stage stays with the provider that answered.

What the stage leaves behind: ``transcript.json`` (the whole conversation, written even when
the stage fails or is cancelled), ``provider_used.json``, ``tools/`` (shell logs), and, from
``report_status``, the status file the codergen handler then ingests — so routing works exactly
as for a CLI agent writing ``$ATTRACTOR_STATUS_PATH``. The final assistant text becomes
``response.md``. A limit hit (turns, tool rounds) ends the stage as
``fail``/``budget_exhausted``.

Fidelity ``full`` (S5.4-02/08): the conversation of a completed stage is kept per
``(run_id, thread key)`` in this backend instance, and a later ``full`` stage with the same key
continues it. Other modes start fresh (the handler already prepended the preamble). Threads are
memory only: after a resume the engine degrades the first ``full`` stage (S5.3-06).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from attrs import frozen

from ...core.attempt import AttemptInfo, current_attempt, require_attempt
from ...core.fidelity import resolve_thread_key
from ...core.outcome import Outcome, StageStatus
from ...core.vocabulary import FailureClass
from ...dot.graph import Graph, Node
from ...dot.values import AttributeValueError, parse_int
from ...persist.atomic import write_json_atomic
from ...providers.model import Message, ProgressFn, Request, Response, ToolSpec
from ...runconfig import ProviderConfig
from ...stage_env import stage_environment
from .env import LocalEnvironment
from .hooks import POST_KEY, PRE_KEY, HookRunner, resolve_tool_hooks
from .session import BUDGET_EXHAUSTED, COMPLETED, DEFAULT_MAX_TOOL_ROUNDS, Session, SessionResult
from .tools import ToolBox

if TYPE_CHECKING:
    from ...context import Context

__all__ = [
    "MAX_TOOL_ROUNDS_ATTR",
    "MAX_TURNS_ATTR",
    "THREAD_KEY_CONTEXT",
    "AgentLoopBackend",
    "ModelService",
    "Served",
    "build_system_prompt",
    "record_provider",
]

#: Node attributes bounding a stage's agent loop (``0`` = unlimited).
MAX_TURNS_ATTR: Final = "agent.max_turns"
MAX_TOOL_ROUNDS_ATTR: Final = "agent.max_tool_rounds"
#: The thread key the engine resolved for this stage, when it provides one (it knows the edge).
THREAD_KEY_CONTEXT: Final = "internal.thread_key"
_FIDELITY_KEY: Final = "internal.fidelity"
_PROJECT_DOCS: Final = ("AGENTS.md",)
_PROJECT_DOCS_BUDGET: Final = 32 * 1024


@frozen
class Served:
    """A model response and who served it: the provider, the model, the failover position."""

    response: Response
    provider: ProviderConfig
    model: str
    index: int = 0
    failover_from: str = ""


class ModelService(Protocol):
    """``ApiBackend.complete``: one model call with retry and failover for a node."""

    async def complete(
        self, node: Node, draft: Request, attempt: AttemptInfo, *, start: int = 0
    ) -> Served: ...


def record_provider(attempt: AttemptInfo, served: Served, *, mode: str) -> None:
    """``provider_used.json``: which provider and model answered the stage (last call wins)."""
    attempt.stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        attempt.stage_dir / "provider_used.json",
        {
            "provider": served.provider.name,
            "kind": served.provider.kind,
            "model": served.model,
            "mode": mode,
            "failover_from": served.failover_from or None,
        },
    )


class _StageModel:
    """The session's adapter for one stage: calls go through the service, failover sticks."""

    kind = "agent_loop"

    def __init__(self, service: ModelService, node: Node, attempt: AttemptInfo) -> None:
        self.service = service
        self.node = node
        self.attempt = attempt
        self.index = 0
        self.recorded: tuple[str, str] | None = None

    async def complete(self, request: Request, *, on_progress: ProgressFn) -> Response:
        served = await self.service.complete(self.node, request, self.attempt, start=self.index)
        self.index = served.index
        if self.recorded != (served.provider.name, served.model):
            record_provider(self.attempt, served, mode="agent_loop")
            self.recorded = (served.provider.name, served.model)
        return served.response


class AgentLoopBackend:
    """Runs ``agent_loop`` stages; one instance per :class:`ApiBackend` (it owns the threads)."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self._threads: dict[tuple[str, str], tuple[Message, ...]] = {}

    def thread_of(
        self, node: Node, context: Context, attempt: AttemptInfo
    ) -> tuple[str, tuple[Message, ...]]:
        """The stage's thread key under fidelity ``full`` (``""`` otherwise) and the
        conversation kept for it so far — what a session run elsewhere starts from."""
        thread = _thread_key(node, context, attempt)
        return thread, self.history_of(attempt.run_id, thread)

    def history_of(self, run_id: str, thread: str) -> tuple[Message, ...]:
        return self._threads.get((run_id, thread), ()) if thread else ()

    def keep_thread(self, run_id: str, thread: str, history: Sequence[Message]) -> None:
        """Continue ``thread`` from ``history`` (a session that ran elsewhere brought it back)."""
        if thread:
            self._threads[(run_id, thread)] = tuple(history)

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        attempt = current_attempt() or require_attempt(node, Path.cwd())
        try:
            max_turns = _limit(node, MAX_TURNS_ATTR, 0)
            max_rounds = _limit(node, MAX_TOOL_ROUNDS_ATTR, DEFAULT_MAX_TOOL_ROUNDS)
        except AttributeValueError as exc:
            return Outcome(
                StageStatus.FAIL, failure_reason=str(exc), failure_class=FailureClass.STRUCTURAL
            )
        thread = _thread_key(node, context, attempt)
        history = self._threads.get((attempt.run_id, thread), ()) if thread else ()
        session = self._session(node, context, attempt, history, max_turns, max_rounds)
        result: SessionResult | None = None
        try:
            result = await session.process_input(prompt)
        finally:
            _write_transcript(attempt, session, result, thread)
        if thread and result.stop_reason == COMPLETED:
            self._threads[(attempt.run_id, thread)] = session.history
        if result.stop_reason == BUDGET_EXHAUSTED:
            return Outcome(
                StageStatus.FAIL,
                failure_reason=f"node '{node.id}': {result.detail}",
                failure_class=FailureClass.BUDGET_EXHAUSTED,
            )
        return result.text

    def _session(
        self,
        node: Node,
        context: Context,
        attempt: AttemptInfo,
        history: Sequence[Message],
        max_turns: int,
        max_rounds: int,
    ) -> Session:
        toolbox = ToolBox(_environment(attempt))
        return Session(
            _StageModel(self.service, node, attempt),
            node.llm_model,
            toolbox,
            system_prompt=build_system_prompt(
                node.id, attempt.workdir, toolbox.specs(), _project_docs(attempt.workdir)
            ),
            max_turns=max_turns,
            max_tool_rounds=max_rounds,
            on_event=lambda name, fields: attempt.emit(
                name, node_id=attempt.node_id, attempt_id=attempt.attempt_id, **fields
            ),
            on_progress=attempt.progress,
            hooks=_hooks(node, context, attempt),
            history=history,
        )


def build_system_prompt(
    node_id: str, workdir: Path, tools: Sequence[ToolSpec], project_docs: str = ""
) -> str:
    """The stage's system prompt: role, environment, tools, how to finish (Part 2B layers)."""
    today = datetime.now(UTC).date().isoformat()
    lines = [
        f"You are a coding agent working on one stage ('{node_id}') of an automated pipeline.",
        "Do the task in the user message by calling the tools; inspect before you change, and "
        "check your work by running commands.",
        "",
        "<environment>",
        f"Working directory: {workdir}",
        "Every relative path is resolved against the working directory; stay inside it.",
        f"Platform: {platform.system().lower()}; date: {today}",
        "</environment>",
        "",
        "Tools:",
        *(
            f"- {tool.name}: {tool.description.splitlines()[0] if tool.description else ''}"
            for tool in tools
        ),
        "",
        "When the task is done, or cannot be done, call report_status once: outcome 'success' "
        "(or 'partial_success'), or 'fail' with a failure_reason saying what went wrong. Then "
        "answer with a short summary of what you did, without calling any more tools.",
    ]
    if project_docs:
        lines += ["", "Project instructions (AGENTS.md):", project_docs]
    return "\n".join(lines)


# --- stage wiring --------------------------------------------------------------------------


def _environment(attempt: AttemptInfo) -> LocalEnvironment:
    return LocalEnvironment(
        attempt.workdir,
        stage_dir=attempt.stage_dir,
        env=stage_environment(attempt),
        kill_grace=attempt.kill_grace,
        status_path=attempt.status_path,
        owner={
            "run_id": attempt.run_id,
            "node_id": attempt.node_id,
            "attempt_id": attempt.attempt_id,
        },
        on_output=attempt.progress,
    )


def _hooks(node: Node, context: Context, attempt: AttemptInfo) -> HookRunner | None:
    """Node ``tool_hooks.*`` over the graph's (the graph's attrs are in the context)."""
    graph_attrs = {
        key: str(context.get(f"graph.{key}"))
        for key in (PRE_KEY, POST_KEY)
        if context.get(f"graph.{key}") is not None
    }
    hooks = resolve_tool_hooks(node.attrs, graph_attrs)
    if not hooks.active:
        return None
    return HookRunner(
        hooks,
        workdir=attempt.workdir,
        stage_dir=attempt.stage_dir,
        env=stage_environment(attempt),
        run_id=attempt.run_id,
        node_id=attempt.node_id,
        kill_grace=attempt.kill_grace,
        on_output=attempt.progress,
    )


def _thread_key(node: Node, context: Context, attempt: AttemptInfo) -> str:
    """The S5.4-07 thread key under fidelity ``full``; ``""`` (fresh session) otherwise.

    The engine's own key wins when it sets one (it knows the incoming edge's ``thread_id``);
    otherwise the key is resolved here without the edge.
    """
    if str(context.get(_FIDELITY_KEY) or "").strip().lower() != "full":
        return ""
    given = context.get(THREAD_KEY_CONTEXT)
    if isinstance(given, str) and given.strip():
        return given.strip()
    graph_thread = str(context.get("graph.thread_id") or "")
    graph = Graph(name="", attrs={"thread_id": graph_thread} if graph_thread else {})
    return resolve_thread_key(node, None, graph, attempt.predecessor_node)


def _limit(node: Node, key: str, default: int) -> int:
    raw = node.attrs.get(key, "").strip()
    if not raw:
        return default
    try:
        value = parse_int(raw)
    except AttributeValueError as exc:
        raise AttributeValueError(f"node '{node.id}': {key}: {exc}") from None
    if value < 0:
        raise AttributeValueError(f"node '{node.id}': {key} must be 0 (unlimited) or more")
    return value


def _project_docs(workdir: Path) -> str:
    """``AGENTS.md`` from the workdir, cut to the spec's 32 KB budget."""
    parts = []
    for name in _PROJECT_DOCS:
        try:
            parts.append((workdir / name).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    text = "\n\n".join(parts)
    if len(text) > _PROJECT_DOCS_BUDGET:
        text = text[:_PROJECT_DOCS_BUDGET] + "\n[... project instructions truncated ...]"
    return text


def _write_transcript(
    attempt: AttemptInfo, session: Session, result: SessionResult | None, thread: str
) -> None:
    """``transcript.json``; on failure or cancellation it still shows how far the agent got."""
    document: dict[str, Any] = {
        "node_id": attempt.node_id,
        "attempt_id": attempt.attempt_id,
        "thread_key": thread or None,
        "stop_reason": result.stop_reason if result else "interrupted",
        "detail": result.detail if result else "",
        "turns": session.turns,
        "system": session.system_prompt,
        "messages": [_message_json(m) for m in session.history],
    }
    attempt.stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(attempt.stage_dir / "transcript.json", document)


def _message_json(message: Message) -> Mapping[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        entry["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
        ]
    if message.role == "tool":
        entry.update(
            tool_call_id=message.tool_call_id, name=message.name, is_error=message.is_error
        )
    return entry
