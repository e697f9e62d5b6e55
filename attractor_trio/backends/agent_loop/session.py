"""The coding agent loop (coding-agent-loop spec, digest Part 2B) on the provider-neutral model.

One :class:`Session` is one conversation: ``process_input`` appends a user turn and then lets
the model work — model turn, tool calls, tool results, model turn, … — until the model answers
without calling a tool, or a limit (``max_turns`` model turns in the session's life,
``max_tool_rounds`` tool rounds per input) stops it with ``budget_exhausted``.

What the host sees: ``on_event(name, fields)`` for every tool call (``agent_tool_call``) and
loop warning (``agent_loop_detected``), and ``on_progress()`` after every model response and
tool result — the liveness tree counts both as progress, so a working agent is never taken for
a stalled stage. Steering messages (``steer``) are injected after the current tool round;
follow-ups (``follow_up``) run as new inputs once the current one completes.

Decisions that are pure data live in module functions (:func:`call_signature`,
:func:`repeating_pattern`, :func:`loop_warning`) and are tested without an event loop.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from attrs import frozen

from ...core.outcome import Outcome
from ...providers.model import Adapter, Message, ProgressFn, Request, Response, ToolCall, ToolSpec
from .tools import ToolResult

__all__ = [
    "BUDGET_EXHAUSTED",
    "COMPLETED",
    "EventFn",
    "Session",
    "SessionResult",
    "ToolHookRunner",
    "ToolRunner",
    "call_signature",
    "loop_warning",
    "repeating_pattern",
]

COMPLETED: Final = "completed"
BUDGET_EXHAUSTED: Final = "budget_exhausted"
DEFAULT_MAX_TOOL_ROUNDS: Final = 200
DEFAULT_LOOP_WINDOW: Final = 10
_MAX_PATTERN: Final = 3

#: ``on_event(name, fields)``; the backend adds ``node_id`` and ``attempt_id``.
EventFn = Callable[[str, Mapping[str, Any]], None]


class ToolRunner(Protocol):
    """What the session needs from a tool box (``agent.tools.ToolBox`` is the real one)."""

    def specs(self) -> list[ToolSpec]: ...

    async def execute(self, call: ToolCall) -> ToolResult: ...

    @property
    def reported(self) -> Outcome | None: ...


class ToolHookRunner(Protocol):
    """``tool_hooks.pre``/``.post`` (``agent.hooks.HookRunner`` is the real one)."""

    async def before(self, call: ToolCall) -> str | None: ...

    async def after(self, call: ToolCall, content: str, is_error: bool) -> None: ...


@frozen
class SessionResult:
    """How one ``process_input`` ended.

    ``text`` is the last assistant text; ``turns`` and ``tool_calls`` count this input (with
    its follow-ups); ``reported_outcome`` is what ``report_status`` recorded, if called;
    ``stop_reason`` is ``completed`` or ``budget_exhausted`` (then ``detail`` names the limit).
    """

    text: str
    turns: int
    tool_calls: int
    reported_outcome: Outcome | None
    stop_reason: str
    detail: str = ""


def call_signature(call: ToolCall) -> str:
    """Name + arguments, hashed: equal calls have equal signatures whatever the call id."""
    blob = json.dumps([call.name, call.arguments], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def repeating_pattern(signatures: Sequence[str], window: int) -> tuple[str, ...] | None:
    """The unit (1 to 3 calls) the last ``window`` signatures repeat, else ``None``.

    The window must hold at least two full repetitions. The unit comes back in a canonical
    rotation, so ``a b a b`` and ``b a b a`` are the same pattern (warned about once).
    """
    if window < 2 or len(signatures) < window:
        return None
    recent = list(signatures[-window:])
    for length in range(1, _MAX_PATTERN + 1):
        if 2 * length > window:
            break
        if all(recent[i] == recent[i - length] for i in range(length, window)):
            unit = tuple(recent[-length:])
            return min(unit[i:] + unit[:i] for i in range(length))
    return None


def loop_warning(tool_names: Sequence[str], window: int) -> str:
    """The user turn injected when a loop is detected."""
    calls = ", ".join(tool_names)
    return (
        f"[Loop detected] Your last {window} tool calls repeat the same "
        f"{len(tool_names)}-call pattern ({calls}) with identical arguments. Repeating it will "
        "not change the result. Step back: read the last results again, try a different "
        "approach, or call report_status with outcome 'fail' and the reason if you are stuck."
    )


def _noop_event(_name: str, _fields: Mapping[str, Any]) -> None:
    return None


def _noop() -> None:
    return None


@frozen
class _Limits:
    max_turns: int
    max_tool_rounds: int
    loop_window: int


@frozen
class _Budget:
    """Whether another model call is allowed (pure)."""

    stop: bool
    detail: str = ""


def _check_budget(limits: _Limits, turns_total: int, rounds_this_input: int) -> _Budget:
    if limits.max_turns > 0 and turns_total >= limits.max_turns:
        return _Budget(True, f"agent turn limit reached ({limits.max_turns} model turns)")
    if limits.max_tool_rounds > 0 and rounds_this_input >= limits.max_tool_rounds:
        return _Budget(True, f"agent tool round limit reached ({limits.max_tool_rounds} rounds)")
    return _Budget(False)


@frozen
class _Tally:
    turns: int = 0
    tool_calls: int = 0
    text: str = ""
    detail: str = ""
    stop_reason: str = COMPLETED


class Session:
    """A conversation with one model and one tool box (Part 2B ``Session``, minus subagents).

    ``history`` seeds the conversation (fidelity ``full`` reuses a thread across stages);
    ``request_options`` are passed to every :class:`Request` (``reasoning_effort``,
    ``timeout``, ``max_tokens``, ``provider_options``).
    """

    def __init__(
        self,
        adapter: Adapter,
        model: str,
        toolbox: ToolRunner,
        *,
        system_prompt: str,
        max_turns: int = 0,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        loop_window: int = DEFAULT_LOOP_WINDOW,
        on_event: EventFn | None = None,
        on_progress: ProgressFn | None = None,
        hooks: ToolHookRunner | None = None,
        history: Sequence[Message] = (),
        request_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.adapter = adapter
        self.model = model
        self.toolbox = toolbox
        self.system_prompt = system_prompt
        self.limits = _Limits(max_turns, max_tool_rounds, loop_window)
        self.on_event: EventFn = on_event or _noop_event
        self.on_progress: ProgressFn = on_progress or _noop
        self.hooks = hooks
        self.request_options = dict(request_options or {})
        self._history: list[Message] = list(history)
        self._steering: deque[str] = deque()
        self._follow_ups: deque[str] = deque()
        self._signatures: deque[str] = deque(maxlen=max(loop_window, 1))
        self._warned: set[tuple[str, ...]] = set()
        self.turns = 0

    @property
    def history(self) -> tuple[Message, ...]:
        return tuple(self._history)

    def steer(self, message: str) -> None:
        """Inject ``message`` as a user turn after the current tool round."""
        self._steering.append(message)

    def follow_up(self, message: str) -> None:
        """Run ``message`` as a new input once the current input completes."""
        self._follow_ups.append(message)

    async def process_input(self, text: str) -> SessionResult:
        """Work on ``text`` (and queued follow-ups) until the model stops or a limit hits."""
        tally = await self._one_input(text, _Tally())
        while tally.stop_reason == COMPLETED and self._follow_ups:
            tally = await self._one_input(self._follow_ups.popleft(), tally)
        return SessionResult(
            text=tally.text,
            turns=tally.turns,
            tool_calls=tally.tool_calls,
            reported_outcome=self.toolbox.reported,
            stop_reason=tally.stop_reason,
            detail=tally.detail,
        )

    async def _one_input(self, text: str, tally: _Tally) -> _Tally:
        self._history.append(Message("user", text))
        self._drain_steering()
        rounds = 0
        turns, calls, last_text = tally.turns, tally.tool_calls, tally.text
        while True:
            budget = _check_budget(self.limits, self.turns, rounds)
            if budget.stop:
                return _Tally(turns, calls, last_text, budget.detail, BUDGET_EXHAUSTED)
            response = await self._call_model()
            turns += 1
            last_text = response.text or last_text
            if not response.tool_calls:
                return _Tally(turns, calls, last_text)
            rounds += 1
            calls += len(response.tool_calls)
            await self._run_tools(response.tool_calls)
            self._drain_steering()
            self._detect_loop()

    async def _call_model(self) -> Response:
        request = Request(
            model=self.model,
            messages=tuple(self._history),
            system=self.system_prompt,
            tools=tuple(self.toolbox.specs()),
            **self.request_options,
        )
        response = await self.adapter.complete(request, on_progress=self.on_progress)
        self.turns += 1
        self.on_progress()
        self._history.append(
            Message("assistant", response.text, tool_calls=tuple(response.tool_calls))
        )
        return response

    async def _run_tools(self, calls: Sequence[ToolCall]) -> None:
        """Execute in order; each result becomes a ``tool`` message answering its call."""
        for call in calls:
            result = await self._run_one(call)
            self._signatures.append(call_signature(call))
            self._history.append(
                Message(
                    "tool",
                    result.content,
                    tool_call_id=call.id,
                    name=call.name,
                    is_error=result.is_error,
                )
            )
            self.on_event("agent_tool_call", {"tool": call.name, "is_error": result.is_error})
            self.on_progress()

    async def _run_one(self, call: ToolCall) -> ToolResult:
        """Pre hook (may veto: error result, no post hook) → tool → post hook."""
        if self.hooks is not None:
            veto = await self.hooks.before(call)
            if veto is not None:
                return ToolResult(veto, is_error=True)
        try:
            result = await self.toolbox.execute(call)
        except Exception as exc:  # a tool bug must not end the conversation
            result = ToolResult(f"tool {call.name} failed: {type(exc).__name__}: {exc}", True)
        if self.hooks is not None:
            await self.hooks.after(call, result.content, result.is_error)
        return result

    def _drain_steering(self) -> None:
        while self._steering:
            self._history.append(Message("user", self._steering.popleft()))

    def _detect_loop(self) -> None:
        window = self.limits.loop_window
        if window <= 0:
            return
        pattern = repeating_pattern(tuple(self._signatures), window)
        if pattern is None or pattern in self._warned:
            return
        self._warned.add(pattern)
        names = self._names_for(pattern)
        self._history.append(Message("user", loop_warning(names, window)))
        self.on_event("agent_loop_detected", {"tools": list(names), "window": window})

    def _names_for(self, pattern: tuple[str, ...]) -> list[str]:
        """Tool names of the pattern's calls, from the most recent matching history entries."""
        by_signature: dict[str, str] = {}
        for message in reversed(self._history):
            for call in message.tool_calls:
                by_signature.setdefault(call_signature(call), call.name)
        return [by_signature.get(signature, "?") for signature in pattern]
