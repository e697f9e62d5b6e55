"""The agent session loop (digest Part 2B) with a scripted in-memory model: no HTTP.

Tests without processes run on the virtual clock; the hook tests start real ``bash`` processes
and run on the real clock (each hook takes milliseconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.backends.agent_loop.backend import build_system_prompt
from attractor_trio.backends.agent_loop.env import LocalEnvironment
from attractor_trio.backends.agent_loop.hooks import (
    HOOKS_LOG,
    HookRunner,
    ToolHooks,
    resolve_tool_hooks,
    veto_message,
)
from attractor_trio.backends.agent_loop.session import (
    BUDGET_EXHAUSTED,
    COMPLETED,
    Session,
    call_signature,
    repeating_pattern,
)
from attractor_trio.backends.agent_loop.tools import ToolBox, ToolResult
from attractor_trio.backends.provider import ApiBackend
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.providers.base import RateLimitError
from attractor_trio.providers.model import Request, Response, ToolCall, ToolSpec
from attractor_trio.runconfig import ProviderConfig, RunConfig

from .helpers import run_dot

Step = Response | Callable[[Request], Response] | BaseException


class ScriptedModel:
    """Answers from a script (the last step repeats); records every request."""

    kind = "scripted"

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.requests: list[Request] = []

    async def complete(self, request: Request, *, on_progress: Callable[[], None]) -> Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return step(request) if callable(step) else step


class FakeTools:
    """Records calls and answers ``ok <name>``; ``fail`` names tools that return errors."""

    def __init__(self, *, fail: tuple[str, ...] = (), raises: tuple[str, ...] = ()) -> None:
        self.calls: list[ToolCall] = []
        self.fail = fail
        self.raises = raises
        self.on_execute: Callable[[ToolCall], None] | None = None
        self._reported: Outcome | None = None

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec("shell", "run a command"), ToolSpec("read_file", "read a file")]

    @property
    def reported(self) -> Outcome | None:
        return self._reported

    async def execute(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        if self.on_execute is not None:
            self.on_execute(call)
        if call.name in self.raises:
            raise RuntimeError("tool exploded")
        return ToolResult(f"ok {call.name}", is_error=call.name in self.fail)


def calls(*names: str, **arguments: Any) -> Response:
    return Response(
        text="",
        tool_calls=tuple(
            ToolCall(f"call_{i}_{name}", name, dict(arguments)) for i, name in enumerate(names)
        ),
        finish_reason="tool_calls",
    )


def text(content: str) -> Response:
    return Response(text=content)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.progress = 0

    def on_event(self, name: str, fields: Mapping[str, Any]) -> None:
        self.events.append((name, dict(fields)))

    def on_progress(self) -> None:
        self.progress += 1

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, fields in self.events if event == name]


def session(
    model: ScriptedModel, tools: Any = None, recorder: Recorder | None = None, **kw: Any
) -> Session:
    recorder = recorder or Recorder()
    return Session(
        model,
        "m-1",
        tools if tools is not None else FakeTools(),
        system_prompt="SYSTEM",
        on_event=recorder.on_event,
        on_progress=recorder.on_progress,
        **kw,
    )


# --- the loop --------------------------------------------------------------------------------


async def test_tool_round_trip_ends_when_the_model_stops_calling_tools(
    autojump_clock: Any,
) -> None:
    model = ScriptedModel(calls("shell", command="ls"), text("all done"))
    tools, recorder = FakeTools(), Recorder()
    result = await session(model, tools, recorder).process_input("do the thing")
    assert (result.text, result.turns, result.tool_calls) == ("all done", 2, 1)
    assert result.stop_reason == COMPLETED and result.reported_outcome is None
    assert [c.arguments for c in tools.calls] == [{"command": "ls"}]
    second = model.requests[1]
    assert [m.role for m in second.messages] == ["user", "assistant", "tool"]
    answer = second.messages[2]
    assert (answer.tool_call_id, answer.name, answer.content) == (
        "call_0_shell",
        "shell",
        "ok shell",
    )
    assert second.system == "SYSTEM" and [t.name for t in second.tools] == ["shell", "read_file"]
    assert second.model == "m-1"


async def test_every_tool_call_is_an_event_and_every_step_is_progress(
    autojump_clock: Any,
) -> None:
    model = ScriptedModel(calls("shell", "read_file"), calls("read_file"), text("done"))
    recorder = Recorder()
    result = await session(model, FakeTools(fail=("read_file",)), recorder).process_input("go")
    assert result.tool_calls == 3
    assert recorder.named("agent_tool_call") == [
        {"tool": "shell", "is_error": False},
        {"tool": "read_file", "is_error": True},
        {"tool": "read_file", "is_error": True},
    ]
    assert recorder.progress == 3 + 3  # three model responses, three tool results


async def test_tool_results_keep_the_error_flag_for_the_model(autojump_clock: Any) -> None:
    model = ScriptedModel(calls("read_file"), text("done"))
    await session(model, FakeTools(fail=("read_file",))).process_input("go")
    assert model.requests[1].messages[2].is_error


async def test_a_tool_that_raises_becomes_an_error_result(autojump_clock: Any) -> None:
    model = ScriptedModel(calls("shell"), text("recovered"))
    recorder = Recorder()
    result = await session(model, FakeTools(raises=("shell",)), recorder).process_input("go")
    assert result.text == "recovered"
    tool_message = model.requests[1].messages[2]
    assert tool_message.is_error and "tool exploded" in tool_message.content
    assert recorder.named("agent_tool_call") == [{"tool": "shell", "is_error": True}]


async def test_provider_errors_propagate_to_the_backend(autojump_clock: Any) -> None:
    model = ScriptedModel(RateLimitError("slow down", provider="x"))
    with pytest.raises(RateLimitError):
        await session(model).process_input("go")


async def test_reported_outcome_comes_from_the_toolbox(autojump_clock: Any) -> None:
    tools = FakeTools()
    tools._reported = Outcome(StageStatus.SUCCESS, notes="done")
    result = await session(ScriptedModel(text("ok")), tools).process_input("go")
    assert result.reported_outcome == Outcome(StageStatus.SUCCESS, notes="done")


async def test_real_toolbox_round_trip_writes_the_file(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    environment = LocalEnvironment(work, stage_dir=tmp_path / "stage", env={})
    model = ScriptedModel(
        calls("write_file", file_path="hello.txt", content="hi\n"),
        calls("read_file", file_path="hello.txt"),
        text("wrote it"),
    )
    result = await session(model, ToolBox(environment)).process_input("write hello.txt")
    assert (work / "hello.txt").read_text() == "hi\n" and result.text == "wrote it"
    read_back = model.requests[2].messages[-1]
    assert not read_back.is_error and "hi" in read_back.content


# --- limits ----------------------------------------------------------------------------------


async def test_tool_round_limit_exhausts_the_budget(autojump_clock: Any) -> None:
    counter = iter(range(1000))

    def fresh_call(_request: Request) -> Response:
        return calls("shell", command=f"echo {next(counter)}")

    model = ScriptedModel(fresh_call)
    result = await session(model, max_tool_rounds=3).process_input("go")
    assert result.stop_reason == BUDGET_EXHAUSTED and len(model.requests) == 3
    assert "tool round limit reached (3 rounds)" in result.detail
    assert result.tool_calls == 3


async def test_turn_limit_counts_model_turns_over_the_session(autojump_clock: Any) -> None:
    model = ScriptedModel(calls("shell", command="a"), calls("shell", command="b"), text("x"))
    agent = session(model, max_turns=2)
    result = await agent.process_input("go")
    assert result.stop_reason == BUDGET_EXHAUSTED and "turn limit reached (2" in result.detail
    assert len(model.requests) == 2
    again = await agent.process_input("more")
    assert again.stop_reason == BUDGET_EXHAUSTED and len(model.requests) == 2


async def test_no_limits_means_the_model_decides(autojump_clock: Any) -> None:
    script = [calls("shell", command=str(i)) for i in range(250)] + [text("finally")]
    model = ScriptedModel(*script)
    result = await session(model, max_tool_rounds=0, max_turns=0).process_input("go")
    assert result.stop_reason == COMPLETED and result.turns == 251


# --- steering and follow-ups -----------------------------------------------------------------


async def test_steering_before_input_follows_the_user_turn(autojump_clock: Any) -> None:
    model = ScriptedModel(text("ok"))
    agent = session(model)
    agent.steer("use tabs")
    await agent.process_input("format it")
    assert [(m.role, m.content) for m in model.requests[0].messages] == [
        ("user", "format it"),
        ("user", "use tabs"),
    ]


async def test_steering_during_a_round_is_injected_after_its_tool_results(
    autojump_clock: Any,
) -> None:
    model = ScriptedModel(calls("shell", "read_file"), text("ok"))
    tools = FakeTools()
    agent = session(model, tools)
    tools.on_execute = lambda call: (
        agent.steer("stop and summarize") if call.name == "shell" else None
    )
    await agent.process_input("go")
    roles = [(m.role, m.content) for m in model.requests[1].messages]
    assert roles[-3:] == [
        ("tool", "ok shell"),
        ("tool", "ok read_file"),
        ("user", "stop and summarize"),
    ]


async def test_follow_ups_run_after_the_input_completes(autojump_clock: Any) -> None:
    model = ScriptedModel(text("first"), calls("shell"), text("second"))
    agent = session(model)
    agent.follow_up("now the tests")
    result = await agent.process_input("do it")
    assert (result.text, result.turns, result.tool_calls) == ("second", 3, 1)
    assert model.requests[1].messages[-1].content == "now the tests"


async def test_history_seeds_the_conversation(autojump_clock: Any) -> None:
    first = ScriptedModel(text("remembered"))
    earlier = session(first)
    await earlier.process_input("the secret word is kiwi")
    second = ScriptedModel(text("kiwi"))
    later = session(second, history=earlier.history)
    await later.process_input("what was the word?")
    contents = [m.content for m in second.requests[0].messages]
    assert contents == ["the secret word is kiwi", "remembered", "what was the word?"]


# --- loop detection --------------------------------------------------------------------------


async def test_identical_calls_trigger_one_warning_turn(autojump_clock: Any) -> None:
    script = [calls("shell", command="make")] * 14 + [text("giving up")]
    model = ScriptedModel(*script)
    recorder = Recorder()
    await session(model, recorder=recorder, loop_window=10).process_input("build")
    assert recorder.named("agent_loop_detected") == [{"tools": ["shell"], "window": 10}]
    warnings = [m for m in model.requests[-1].messages if "[Loop detected]" in m.content]
    assert len(warnings) == 1 and warnings[0].role == "user"
    # The warning follows the 10th call's result, so the 11th request is the first to see it.
    assert not any("[Loop detected]" in m.content for m in model.requests[9].messages)
    assert "[Loop detected]" in model.requests[10].messages[-1].content


async def test_alternating_pair_is_a_loop_too(autojump_clock: Any) -> None:
    pair = [calls("read_file", file_path="a"), calls("shell", command="make")]
    model = ScriptedModel(*(pair * 5), text("stop"))
    recorder = Recorder()
    await session(model, recorder=recorder, loop_window=6).process_input("go")
    [event] = recorder.named("agent_loop_detected")
    assert sorted(event["tools"]) == ["read_file", "shell"]


async def test_varied_calls_are_not_a_loop(autojump_clock: Any) -> None:
    model = ScriptedModel(*[calls("shell", command=f"step {i}") for i in range(12)], text("ok"))
    recorder = Recorder()
    await session(model, recorder=recorder, loop_window=4).process_input("go")
    assert recorder.named("agent_loop_detected") == []


def test_signature_ignores_the_call_id_and_argument_order() -> None:
    a = ToolCall("1", "shell", {"command": "ls", "timeout_ms": 5})
    b = ToolCall("2", "shell", {"timeout_ms": 5, "command": "ls"})
    assert call_signature(a) == call_signature(b)
    assert call_signature(a) != call_signature(ToolCall("1", "shell", {"command": "ls -l"}))


@given(
    unit=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3),
    shift=st.integers(0, 2),
    extra=st.integers(0, 6),
)
def test_any_repeated_unit_is_found_whatever_the_phase(
    unit: list[str], shift: int, extra: int
) -> None:
    window = 2 * len(unit) + extra
    sequence = [unit[(i + shift) % len(unit)] for i in range(window + 3)]
    pattern = repeating_pattern(sequence, window)
    assert pattern is not None and set(pattern) == set(unit)
    assert pattern == repeating_pattern([unit[i % len(unit)] for i in range(window)], window)


@given(st.lists(st.text(min_size=1, max_size=3), min_size=0, max_size=20), st.integers(2, 12))
def test_a_reported_pattern_really_repeats(signatures: list[str], window: int) -> None:
    pattern = repeating_pattern(signatures, window)
    if pattern is not None:
        recent = signatures[-window:]
        assert all(recent[i] == recent[i - len(pattern)] for i in range(len(pattern), window))


def test_too_few_calls_or_distinct_calls_are_no_pattern() -> None:
    assert repeating_pattern(["a"] * 9, 10) is None
    assert repeating_pattern(list("abcdefghij"), 10) is None
    assert repeating_pattern(list("abcdabcdab"), 10) is None  # period 4 is beyond 1-3


# --- hooks -----------------------------------------------------------------------------------


def test_node_hooks_override_the_graph_key_by_key() -> None:
    graph = {"tool_hooks.pre": "guard", "tool_hooks.post": "audit"}
    assert resolve_tool_hooks({}, graph) == ToolHooks("guard", "audit")
    assert resolve_tool_hooks({"tool_hooks.pre": "mine"}, graph) == ToolHooks("mine", "audit")
    assert resolve_tool_hooks({"tool_hooks.post": ""}, graph) == ToolHooks("guard", "")
    assert not resolve_tool_hooks({}, {}).active


def test_veto_message_names_the_exit_and_the_stderr_tail() -> None:
    assert veto_message(3, "", "no rm\n") == "tool call blocked by tool_hooks.pre (exit 3): no rm"
    assert (
        veto_message(-9, "SIGKILL", "") == "tool call blocked by tool_hooks.pre (killed by SIGKILL)"
    )


def hook_runner(tmp_path: Path, pre: str = "", post: str = "") -> HookRunner:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return HookRunner(
        ToolHooks(pre, post),
        workdir=work,
        stage_dir=tmp_path / "stage",
        env={"PATH": "/usr/bin:/bin", "ATTRACTOR_RUN_ID": "run-1"},
        run_id="run-1",
        node_id="build",
        kill_grace=0.5,
    )


async def test_pre_hook_veto_skips_the_call_and_the_post_hook(tmp_path: Path) -> None:
    hooks = hook_runner(
        tmp_path,
        pre="echo 'rm is not allowed' >&2; exit 3",
        post=f"touch {tmp_path}/post-ran",
    )
    model = ScriptedModel(calls("shell", command="rm -rf /"), text("fine"))
    tools, recorder = FakeTools(), Recorder()
    result = await session(model, tools, recorder, hooks=hooks).process_input("clean up")
    assert tools.calls == [] and result.text == "fine"
    answer = model.requests[1].messages[-1]
    assert answer.is_error
    assert answer.content == "tool call blocked by tool_hooks.pre (exit 3): rm is not allowed"
    assert recorder.named("agent_tool_call") == [{"tool": "shell", "is_error": True}]
    assert not (tmp_path / "post-ran").exists()
    log = (tmp_path / "stage" / HOOKS_LOG).read_text()
    assert "pre shell call_0_shell: vetoed: tool call blocked" in log


async def test_hooks_get_metadata_in_env_and_stdin(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    out.mkdir()
    hooks = hook_runner(
        tmp_path,
        pre=f'cat > {out}/pre.json; echo "$ATTRACTOR_TOOL_NAME $ATTRACTOR_TOOL_CALL_ID '
        f'$ATTRACTOR_RUN_ID" > {out}/pre.env',
        post=f"cat > {out}/post.json",
    )
    model = ScriptedModel(calls("read_file", file_path="x.py"), text("done"))
    await session(model, FakeTools(fail=("read_file",)), hooks=hooks).process_input("go")
    pre = json.loads((out / "pre.json").read_text())
    assert pre == {
        "tool": "read_file",
        "arguments": {"file_path": "x.py"},
        "node_id": "build",
        "run_id": "run-1",
    }
    assert (out / "pre.env").read_text().split() == ["read_file", "call_0_read_file", "run-1"]
    post = json.loads((out / "post.json").read_text())
    assert {**pre, "result": "ok read_file", "is_error": True} == post


async def test_failing_post_hook_is_logged_and_never_blocks(tmp_path: Path) -> None:
    hooks = hook_runner(tmp_path, post="echo audit down >&2; exit 5")
    model = ScriptedModel(calls("shell"), calls("shell", command="again"), text("done"))
    tools, recorder = FakeTools(), Recorder()
    result = await session(model, tools, recorder, hooks=hooks).process_input("go")
    assert len(tools.calls) == 2 and result.text == "done"
    assert model.requests[1].messages[-1].content == "ok shell"
    lines = (tmp_path / "stage" / HOOKS_LOG).read_text().splitlines()
    assert len(lines) == 2
    assert all(
        "post shell" in line and "exit 5 (not blocking): audit down" in line for line in lines
    )


async def test_pre_hook_exit_zero_lets_the_call_through(tmp_path: Path) -> None:
    hooks = hook_runner(tmp_path, pre="true")
    tools = FakeTools()
    await session(ScriptedModel(calls("shell"), text("ok")), tools, hooks=hooks).process_input("go")
    assert len(tools.calls) == 1
    assert "pre shell call_0_shell: exit 0" in (tmp_path / "stage" / HOOKS_LOG).read_text()


async def test_pre_hook_that_cannot_start_vetoes(tmp_path: Path) -> None:
    hooks = hook_runner(tmp_path, pre="true")
    hooks.workdir = tmp_path / "missing"  # cwd does not exist: the process cannot start
    tools = FakeTools()
    model = ScriptedModel(calls("shell"), text("ok"))
    await session(model, tools, hooks=hooks).process_input("go")
    assert tools.calls == []
    assert "could not be started" in model.requests[1].messages[-1].content


# --- backend wiring (scripted adapter, no HTTP) ----------------------------------------------


def test_system_prompt_names_the_workdir_the_tools_and_how_to_finish(tmp_path: Path) -> None:
    specs = [ToolSpec("shell", "Run a command.\nMore detail."), ToolSpec("report_status", "x")]
    prompt = build_system_prompt("build", tmp_path, specs, "Use tabs.")
    assert f"Working directory: {tmp_path}" in prompt and "'build'" in prompt
    assert "- shell: Run a command." in prompt and "More detail" not in prompt
    assert "call report_status once" in prompt
    assert prompt.endswith("Project instructions (AGENTS.md):\nUse tabs.")


def _api(model: ScriptedModel) -> ApiBackend:
    provider = ProviderConfig(name="a", kind="anthropic", model="m-1")  # mode: agent_loop
    return ApiBackend(RunConfig(backend="a", providers={"a": provider}), "a", adapters={"a": model})


AGENT_DOT = """digraph p {
  start [shape=Mdiamond]; done [shape=Msquare]
  work [prompt="do it"%s]
  start -> work -> done
}"""


async def test_agent_mode_is_the_default_and_reads_agents_md(tmp_path: Path) -> None:
    (tmp_path / "AGENTS.md").write_text("Never touch vendor/.")
    model = ScriptedModel(text("done"))
    result = await run_dot(AGENT_DOT % "", tmp_path / "run", backend=_api(model), workdir=tmp_path)
    assert result.status == "success"
    [request] = model.requests
    assert request.system.endswith("Never touch vendor/.") and request.tools
    assert (tmp_path / "run" / "work" / "response.md").read_text() == "done"


async def test_invalid_agent_limit_is_a_validation_error(tmp_path: Path) -> None:
    """Registered in the attribute catalogue, a bad limit is refused before anything runs."""
    from attractor_trio.errors import ValidationFailed

    model = ScriptedModel(text("never asked"))
    dot = AGENT_DOT % ', agent.max_turns="lots"'
    with pytest.raises(ValidationFailed, match=r"agent\.max_turns"):
        await run_dot(dot, tmp_path / "run", backend=_api(model), workdir=tmp_path)
    assert not model.requests
