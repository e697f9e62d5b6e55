"""CLI-agent codergen backend: fake agents (bash scripts in tests/fakes/agents) run for real.

Processes are real and the clock is real, so every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import evolve
from hypothesis import assume, given
from hypothesis import strategies as st

from attractor_trio.backends.cli_agents import (
    AgentExit,
    CliAgentBackend,
    CommandTemplate,
    agent_failure_outcome,
    classify_agent_failure,
    final_text,
)
from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus, StatusFileError
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.errors import ConfigError
from attractor_trio.handlers.base import AttemptInfo, reset_attempt, set_attempt
from attractor_trio.handlers.codergen import CodergenHandler
from attractor_trio.providers.base import CodergenBackend
from attractor_trio.runconfig import ProviderConfig

from .helpers import named, read_json, run_dot

AGENTS = Path(__file__).parent / "fakes" / "agents"
BOUND = 15
GRAPH = Graph(name="g")


def agent(script: str, *args: str) -> str:
    """A provider command running a fake agent through bash (no reliance on the exec bit)."""
    return shlex.join(["bash", str(AGENTS / script), *args])


def config(command: str, **kwargs: Any) -> ProviderConfig:
    return ProviderConfig(name="fake", kind="cli", command=command, **kwargs)


def _node(**attrs: str) -> Node:
    return Node(id="agent", attrs={"prompt": "Write the plan", **attrs})


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.progress = 0
        self.output = trio.Event()

    def emit(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))

    def tick(self) -> None:
        self.progress += 1
        self.output.set()

    def decisions(self) -> list[dict[str, Any]]:
        return [f for name, f in self.events if name == "status_ingestion_decision"]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def attempt(tmp_path: Path, recorder: Recorder) -> Iterator[AttemptInfo]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    info = AttemptInfo(
        run_id="run-7",
        node_id="agent",
        attempt=1,
        max_attempts=1,
        attempt_id="agent-1-abc",
        logs_root=tmp_path / "logs",
        stage_dir=tmp_path / "logs" / "agent",
        workdir=workdir,
        emit=recorder.emit,
        progress=recorder.tick,
        kill_grace=0.3,
    )
    token = set_attempt(info)
    yield info
    reset_attempt(token)


async def execute(
    command: str, attempt: AttemptInfo, node: Node | None = None, **cfg: Any
) -> Outcome:
    """One codergen stage through the real handler, as the engine runs it."""
    handler = CodergenHandler(CliAgentBackend(config(command, **cfg)))
    with trio.fail_after(BOUND):
        return await handler.execute(node or _node(), Context(), GRAPH, attempt.logs_root)


def _response_lines(attempt: AttemptInfo) -> list[str]:
    return (attempt.stage_dir / "response.md").read_text().splitlines()


# --- the command template ---------------------------------------------------------------------


def test_template_substitutes_placeholders_inside_words() -> None:
    template = CommandTemplate.parse(
        "agent --model={model} -o '{stage_dir}/response.md' {prompt_file} --cd {workdir}",
        provider="p",
    )
    argv = template.render(
        {"model": "m", "stage_dir": "/a b", "prompt_file": "/a b/prompt.md", "workdir": "/w"}
    )
    assert argv == ["agent", "--model=m", "-o", "/a b/response.md", "/a b/prompt.md", "--cd", "/w"]
    assert template.uses_model


def test_template_leaves_json_braces_alone() -> None:
    template = CommandTemplate.parse("""agent --settings '{"a": 1}'""", provider="p")
    assert template.render({}) == ["agent", "--settings", '{"a": 1}']
    assert not template.uses_model


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("agent --model {modle}", "unknown placeholder {modle}; known: {prompt_file}, {model}"),
        ("   ", "command is empty"),
        ("agent 'unclosed", "cannot split"),
    ],
)
def test_bad_templates_are_config_errors(command: str, message: str) -> None:
    with pytest.raises(ConfigError, match="provider 'fake' \\(kind: cli\\)") as info:
        CliAgentBackend(config(command))
    assert message in str(info.value)


# --- success --------------------------------------------------------------------------------


async def test_exit_zero_returns_the_agents_text(
    attempt: AttemptInfo, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDECODE", "1")
    node = _node(llm_model="node-model")
    outcome = await execute(
        agent("answer.sh", "{prompt_file}", "{model}"), attempt, node, model="cfg"
    )
    assert outcome.status is StageStatus.SUCCESS
    prompt_file = attempt.stage_dir / "prompt.md"
    assert _response_lines(attempt) == [
        f"args: {prompt_file} node-model",
        f"cwd: {attempt.workdir}",
        f"status path: {attempt.status_path}",
        "claudecode: unset",
        "answer: Write the plan",
    ]
    assert outcome.context_updates["last_response"].startswith("args: ")
    assert "thinking about 14 bytes" in (attempt.stage_dir / "stderr.log").read_text()
    assert [d["source"] for d in recorder.decisions()] == ["none"]


async def test_model_falls_back_to_the_providers(attempt: AttemptInfo) -> None:
    await execute(agent("answer.sh", "{prompt_file}", "{model}"), attempt, model="cfg")
    assert _response_lines(attempt)[0].endswith("prompt.md cfg")


async def test_no_model_anywhere_is_structural(attempt: AttemptInfo) -> None:
    outcome = await execute(agent("answer.sh", "{prompt_file}", "{model}"), attempt)
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, "structural")
    assert "uses {model} but node 'agent' has no llm_model" in outcome.failure_reason


async def test_response_file_written_by_the_agent_wins(attempt: AttemptInfo) -> None:
    outcome = await execute(agent("response_file.sh", "{stage_dir}/response.md"), attempt)
    assert outcome.status is StageStatus.SUCCESS
    assert (attempt.stage_dir / "response.md").read_text() == "the final message\nsecond line\n"


async def test_stale_response_file_is_not_the_answer(attempt: AttemptInfo) -> None:
    attempt.stage_dir.mkdir(parents=True)
    (attempt.stage_dir / "response.md").write_text("an earlier attempt's answer")
    await execute(agent("fail.sh", "0", "", "fresh"), attempt)
    assert (attempt.stage_dir / "response.md").read_text() == "fresh"


async def test_only_this_attempts_output_is_the_answer(attempt: AttemptInfo) -> None:
    attempt.stage_dir.mkdir(parents=True)
    (attempt.stage_dir / "stdout.log").write_text("old output\n")
    await execute(agent("fail.sh", "0", "", "new output"), attempt)
    assert (attempt.stage_dir / "response.md").read_text() == "new output"
    assert (attempt.stage_dir / "stdout.log").read_text() == "old output\nnew output\n"


async def test_claude_json_result_is_the_answer(attempt: AttemptInfo) -> None:
    await execute(agent("stream_json.sh"), attempt)
    assert (attempt.stage_dir / "response.md").read_text() == "final answer\nwith two lines"


@pytest.mark.parametrize("auto_status", ["true", "false"])
async def test_exit_zero_without_status_succeeds_whatever_auto_status(
    attempt: AttemptInfo, auto_status: str
) -> None:
    outcome = await execute(agent("fail.sh", "0", ""), attempt, _node(auto_status=auto_status))
    assert outcome.status is StageStatus.SUCCESS


async def test_auto_status_never_hides_a_failed_agent(attempt: AttemptInfo) -> None:
    outcome = await execute(agent("fail.sh", "1", "boom"), attempt, _node(auto_status="true"))
    assert outcome.status is StageStatus.FAIL


# --- status files -----------------------------------------------------------------------------


FAIL_FIX = json.dumps({"outcome": "fail", "preferred_label": "fix", "failure_reason": "tests red"})


@pytest.mark.parametrize("exit_code", ["0", "3"])
async def test_canonical_status_file_decides(
    attempt: AttemptInfo, recorder: Recorder, exit_code: str
) -> None:
    outcome = await execute(agent("write_status.sh", "canonical", FAIL_FIX, exit_code), attempt)
    assert (outcome.status, outcome.preferred_label) == (StageStatus.FAIL, "fix")
    assert outcome.failure_reason == "tests red"
    [decision] = recorder.decisions()
    assert (decision["source"], decision["copied"]) == ("canonical", False)


@pytest.mark.parametrize("exit_code", ["0", "1"])
async def test_fallback_status_file_is_copied(
    attempt: AttemptInfo, recorder: Recorder, exit_code: str
) -> None:
    doc = json.dumps({"outcome": "success", "preferred_label": "ship"})
    outcome = await execute(agent("write_status.sh", "workdir_dot", doc, exit_code), attempt)
    assert (outcome.status, outcome.preferred_label) == (StageStatus.SUCCESS, "ship")
    assert not (attempt.workdir / ".attractor" / "status.json").exists()
    assert read_json(attempt.status_path)["preferred_label"] == "ship"
    [decision] = recorder.decisions()
    assert (decision["source"], decision["copied"]) == ("workdir_dot", True)


@pytest.mark.parametrize("exit_code", ["0", "1"])
async def test_invalid_canonical_status_fails_deterministically(
    attempt: AttemptInfo, recorder: Recorder, exit_code: str
) -> None:
    outcome = await execute(agent("write_status.sh", "canonical", "{nope", exit_code), attempt)
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, "deterministic")
    assert "invalid JSON" in outcome.failure_reason
    assert len(recorder.decisions()) == 1


async def test_status_fail_without_reason_after_a_crash_gets_one(attempt: AttemptInfo) -> None:
    doc = json.dumps({"outcome": "fail"})
    outcome = await execute(agent("write_status.sh", "canonical", doc, "4"), attempt)
    assert outcome.failure_reason.startswith("status file says fail without failure_reason; ")
    assert "exited with code 4" in outcome.failure_reason


async def test_stale_status_files_are_removed_first(attempt: AttemptInfo) -> None:
    (attempt.workdir / "status.json").write_text('{"outcome": "fail"}')
    outcome = await execute(agent("fail.sh", "0", ""), attempt)
    assert outcome.status is StageStatus.SUCCESS
    assert not (attempt.workdir / "status.json").exists()


# --- failures -------------------------------------------------------------------------------


async def test_missing_executable_is_structural(attempt: AttemptInfo, recorder: Recorder) -> None:
    outcome = await execute("no-such-agent-xyz -p {prompt_file}", attempt)
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, "structural")
    assert outcome.failure_reason == (
        "agent command not found: no-such-agent-xyz (is it installed and on PATH?)"
    )


async def test_exit_127_names_the_missing_program(attempt: AttemptInfo, recorder: Recorder) -> None:
    outcome = await execute(agent("missing_tool.sh", "{prompt_file}"), attempt)
    assert outcome.failure_class == "structural"
    assert outcome.failure_reason.startswith(
        "agent command not found: no-such-agent-cli-xyz (is it installed and on PATH?); "
        "agent bash exited with code 127: "
    )
    assert len(recorder.decisions()) == 1


async def test_missing_workdir_is_structural(attempt: AttemptInfo, tmp_path: Path) -> None:
    gone = evolve(attempt, workdir=tmp_path / "gone")
    token = set_attempt(gone)
    try:
        outcome = await execute(agent("fail.sh", "0", ""), gone)
    finally:
        reset_attempt(token)
    assert outcome.failure_class == "structural"
    assert outcome.failure_reason.startswith(
        f"agent could not start: working directory {tmp_path / 'gone'}"
    )


@pytest.mark.parametrize(
    ("code", "stderr", "failure_class", "reason_part"),
    [
        ("2", "Usage: agent [options] PROMPT", "structural", "rejected its command line"),
        ("1", "error: unknown option '--bogus'", "structural", "unknown option '--bogus'"),
        (
            "1",
            "Error: 429 rate limit exceeded",
            "transient_infra",
            "exited with code 1: Error: 429",
        ),
        ("1", "Error: connection reset by peer", "transient_infra", "connection reset"),
        ("1", "Segmentation fault in the agent", "", "exited with code 1: Segmentation fault"),
    ],
)
async def test_failed_agent_is_classified(
    attempt: AttemptInfo, code: str, stderr: str, failure_class: str, reason_part: str
) -> None:
    outcome = await execute(agent("fail.sh", code, stderr), attempt)
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, failure_class)
    assert reason_part in outcome.failure_reason


def test_backend_satisfies_the_protocol() -> None:
    assert isinstance(CliAgentBackend(config("agent {prompt_file}")), CodergenBackend)


def test_called_outside_an_attempt_says_how_to_fix_it() -> None:
    backend = CliAgentBackend(config(agent("fail.sh", "0", "")))
    with pytest.raises(RuntimeError, match="outside an attempt"):
        trio.run(backend.run, _node(), "p", Context())


# --- the pure decisions ---------------------------------------------------------------------


def _exit(code: int | None, stderr: str = "", stdout: str = "", **kw: Any) -> AgentExit:
    return AgentExit("claude", code, stderr_tail=stderr, stdout_tail=stdout, **kw)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (
            _exit(127),
            (
                "agent command not found: claude (is it installed and on PATH?); "
                "agent claude exited with code 127 (no output)",
                "structural",
            ),
        ),
        (
            _exit(126, "Permission denied"),
            (
                "agent command not executable: claude; "
                "agent claude exited with code 126: Permission denied",
                "structural",
            ),
        ),
        (
            _exit(2, stdout="usage: claude [-p]"),
            (
                "the agent rejected its command line (check "
                "the provider's command): agent claude exited "
                "with code 2 (stderr empty; end of stdout: "
                "usage: claude [-p])",
                "structural",
            ),
        ),
        (
            _exit(2, "error: file not found"),
            ("agent claude exited with code 2: error: file not found", ""),
        ),
        (
            _exit(1, "", "API Error: Overloaded"),
            (
                "agent claude exited with code 1 (stderr empty; "
                "end of stdout: API Error: Overloaded)",
                "transient_infra",
            ),
        ),
        (
            _exit(1, "Too Many Requests"),
            ("agent claude exited with code 1: Too Many Requests", "transient_infra"),
        ),
        (
            _exit(1, "context window exceeded"),
            ("agent claude exited with code 1: context window exceeded", "budget_exhausted"),
        ),
        (
            _exit(-9, signal_name="SIGKILL"),
            ("agent claude killed by signal SIGKILL (no output)", ""),
        ),
        (
            _exit(None, timeout_s=2.5),
            ("agent claude timed out after 2.5s (provider timeout) (no output)", "transient_infra"),
        ),
    ],
)
def test_classify_agent_failure(observed: AgentExit, expected: tuple[str, str]) -> None:
    assert classify_agent_failure(observed) == expected


def test_a_status_file_decides_over_the_exit_code() -> None:
    status = Outcome(StageStatus.SUCCESS, preferred_label="ship", notes="")
    outcome = agent_failure_outcome(_exit(1, "boom"), status)
    assert (outcome.status, outcome.preferred_label) == (StageStatus.SUCCESS, "ship")
    assert outcome.notes == "the agent's status file decides; agent claude exited with code 1: boom"


def test_a_bad_status_file_fails_deterministically() -> None:
    outcome = agent_failure_outcome(_exit(1), StatusFileError("status.json: invalid JSON"))
    assert (outcome.failure_reason, outcome.failure_class) == (
        "status.json: invalid JSON",
        "deterministic",
    )


def test_final_text_marks_truncation_and_names_the_log() -> None:
    assert final_text(b"tail\n", truncated=True, full_log="/x/stdout.log") == (
        "[... earlier output truncated (full output in /x/stdout.log) ...]\ntail"
    )


def test_final_text_drops_a_character_cut_in_half() -> None:
    assert final_text("é and more".encode()[1:], truncated=True) == (
        "[... earlier output truncated ...]\n and more"
    )


@pytest.mark.parametrize(
    "last_line",
    ['{"type": "assistant", "result": "no"}', '{"type": "result", "result": 3}', "[1, 2]", "{"],
)
def test_final_text_only_trusts_a_result_event(last_line: str) -> None:
    assert final_text(f"x\n{last_line}\n".encode(), truncated=False) == f"x\n{last_line}"


@given(st.text(st.characters(codec="utf-8")))
def test_plain_text_is_returned_as_written(text: str) -> None:
    assume("result" not in text and "\\u" not in text)  # no (escaped) result event
    assert final_text(text.encode(), truncated=False) == text.rstrip()


# --- liveness, cancellation, timeouts -------------------------------------------------------


@pytest.mark.slow
async def test_streaming_output_is_progress(attempt: AttemptInfo, recorder: Recorder) -> None:
    outcome = await execute(agent("slow.sh", "4", "0.35"), attempt)
    assert outcome.status is StageStatus.SUCCESS
    assert recorder.progress >= 3
    assert (attempt.stage_dir / "response.md").read_text().endswith("done after 4 steps")


def _group_alive(pgid: int) -> bool:
    out = subprocess.run(
        ["ps", "-eo", "pgid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    return any(int(pg) == pgid and not stat.startswith("Z") for pg, stat in rows)


def _pids(pid_file: Path) -> tuple[int, int]:
    leader, child = map(int, pid_file.read_text().split())
    return leader, child


async def test_cancelling_mid_run_kills_the_agents_group(
    attempt: AttemptInfo, recorder: Recorder
) -> None:
    pid_file = attempt.workdir / "pids"
    started = time.monotonic()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(execute, agent("hang.sh", str(pid_file)), attempt)
            await recorder.output.wait()  # hang.sh prints after writing its pids
            leader, child = _pids(pid_file)
            assert _group_alive(leader)
            nursery.cancel_scope.cancel()
    assert time.monotonic() - started < 5
    assert not _group_alive(leader) and not _group_alive(child)
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)


@pytest.mark.slow
async def test_node_timeout_around_the_handler_kills_the_agent(attempt: AttemptInfo) -> None:
    pid_file = attempt.workdir / "pids"
    started = time.monotonic()
    with trio.move_on_after(1.0) as scope:
        await execute(agent("hang.sh", str(pid_file)), attempt)
    elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert 1.0 <= elapsed < 1.0 + attempt.kill_grace + 3
    leader, child = _pids(pid_file)
    assert not _group_alive(leader) and not _group_alive(child)


async def test_provider_timeout_fails_transient(attempt: AttemptInfo, recorder: Recorder) -> None:
    pid_file = attempt.workdir / "pids"
    outcome = await execute(agent("hang.sh", str(pid_file)), attempt, timeout=0.5)
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, "transient_infra")
    assert outcome.failure_reason.startswith("agent bash timed out after 0.5s (provider timeout)")
    assert "started" in outcome.failure_reason  # the end of stdout, as stderr is empty
    leader, _child = _pids(pid_file)
    assert not _group_alive(leader)
    assert len(recorder.decisions()) == 1


# --- end to end -------------------------------------------------------------------------------


DOT = """digraph t { start [shape=Mdiamond]; done [shape=Msquare]
    plan [prompt="Plan: $goal", llm_model="tiny-1"]
    fixit [prompt="fix it"]
    start -> plan
    plan -> done [label="ship"]
    plan -> fixit [label="fix"]
    fixit -> done
    graph [goal="say hi"] }"""


async def test_pipeline_runs_a_cli_agent_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "run"
    backend = CliAgentBackend(config(agent("answer.sh", "{prompt_file}", "{model}"), model="base"))
    with trio.fail_after(BOUND):
        result = await run_dot(DOT, root, backend=backend, workdir=tmp_path)
    assert result.status == "success"
    assert result.completed_nodes == ("start", "plan", "done")
    response = (root / "plan" / "response.md").read_text()
    assert f"args: {root / 'plan' / 'prompt.md'} tiny-1" in response
    assert "answer: Plan: say hi" in response
    assert (root / "plan" / "stderr.log").read_text().startswith("thinking about")
    assert read_json(root / "plan" / "status.json")["outcome"] == "success"
    decisions = [e for e in named(root, "status_ingestion_decision") if e["node_id"] == "plan"]
    assert [d["source"] for d in decisions] == ["none"]


async def test_pipeline_routes_on_the_agents_status_file(tmp_path: Path) -> None:
    root = tmp_path / "run"
    doc = json.dumps({"outcome": "success", "preferred_label": "fix"})
    backend = CliAgentBackend(config(agent("write_status.sh", "workdir", doc)))
    with trio.fail_after(BOUND):
        result = await run_dot(DOT, root, backend=backend, workdir=tmp_path)
    assert result.completed_nodes == ("start", "plan", "fixit", "done")
    assert not (tmp_path / "status.json").exists()


async def test_pipeline_reports_a_missing_agent(tmp_path: Path) -> None:
    root = tmp_path / "run"
    source = DOT.replace('llm_model="tiny-1"', "max_retries=2")
    backend = CliAgentBackend(config("no-such-agent-xyz {prompt_file}"))
    with trio.fail_after(BOUND):
        result = await run_dot(source, root, backend=backend, workdir=tmp_path)
    assert (result.status, result.failure_class) == ("fail", "structural")
    assert result.failure_reason.startswith("agent command not found: no-such-agent-xyz")
    started = [e for e in named(root, "stage_attempt_started") if e["node_id"] == "plan"]
    assert len(started) == 1  # structural: retrying cannot install the agent
    assert [e["node_id"] for e in named(root, "stage_retry_blocked")] == ["plan"]


@pytest.mark.slow
async def test_pipeline_node_timeout_stops_the_agent(tmp_path: Path) -> None:
    root = tmp_path / "run"
    pid_file = tmp_path / "pids"
    source = DOT.replace('llm_model="tiny-1"', 'timeout="1s"')
    backend = CliAgentBackend(config(agent("hang.sh", str(pid_file))))
    with trio.fail_after(BOUND):
        result = await run_dot(source, root, backend=backend, workdir=tmp_path, kill_grace=0.3)
    assert (result.status, result.failure_class) == ("fail", "transient_infra")
    assert "timed out after 1s" in result.failure_reason
    leader, child = _pids(pid_file)
    assert not _group_alive(leader) and not _group_alive(child)
