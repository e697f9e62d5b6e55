"""Issue 8 end to end: agent_loop stages through ``engine.run`` against a fake Anthropic API.

The model's turns are scripted on the fake HTTP server (real sockets, real SSE streams, the
real Anthropic adapter); the tools, shell processes, hooks, status file and routing are real.
Real clock throughout (sockets and processes).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.lowlevel
import yaml

from attractor_trio.backends.provider import ApiBackend
from attractor_trio.runconfig import ProviderConfig, RunConfig, parse_run_config

from .fakes import anthropic as fa
from .fakes.server import FakeServer, Reply
from .helpers import assert_envelope_invariants, assert_in_no_file, named, read_json, run_dot

pytestmark = pytest.mark.slow

KEY = "sk-test-AGENT-90ab12"
EXAMPLES = Path(__file__).parent.parent / "examples"
DOT = """digraph p {
  start [shape=Mdiamond]; done [shape=Msquare]
  work [prompt="create notes.txt, fix its typo, and count its lines"]
  start -> work
  work -> done [condition="outcome=success"]
}"""


def tool_turn(*calls: tuple[str, dict[str, Any]], prefix: str = "t") -> Reply:
    blocks = [
        fa.ToolUseBlock(f"toolu_{prefix}{i}", name, (json.dumps(arguments),))
        for i, (name, arguments) in enumerate(calls)
    ]
    return fa.stream_reply(fa.stream_events(blocks, stop_reason="tool_use"))


def text_turn(text: str) -> Reply:
    return fa.stream_reply(fa.stream_events([fa.TextBlock((text,))]))


def config(server: FakeServer, **provider: Any) -> RunConfig:
    providers = {
        "a": ProviderConfig(
            name="a",
            kind="anthropic",
            model="claude-test",
            base_url=server.base_url,
            api_key_env="A_KEY",
            timeout=10,
            **provider,
        ),
        "b": ProviderConfig(
            name="b",
            kind="anthropic",
            model="claude-b",
            base_url=server.base_url + "/b",
            api_key_env="A_KEY",
            timeout=10,
        ),
    }
    return RunConfig(backend="a", providers=providers)


async def no_backoff(_delay: float) -> None:
    """Provider retries without their backoff delay (the retry rules are tested elsewhere)."""
    await trio.lowlevel.checkpoint()


async def run_agent(
    tmp_path: Path, server: FakeServer, dot: str = DOT, **provider: Any
) -> tuple[Any, Path, Path]:
    workdir = tmp_path / "repo"
    workdir.mkdir(exist_ok=True)
    backend = ApiBackend(config(server, **provider), "a", env={"A_KEY": KEY}, sleep=no_backoff)
    try:
        with trio.fail_after(30):
            result = await run_dot(dot, tmp_path / "run", backend=backend, workdir=workdir)
    finally:
        await backend.aclose()
    return result, tmp_path / "run", workdir


def tool_results(request_body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks of the last user turn of a Messages API request."""
    last = request_body["messages"][-1]
    return [block for block in last["content"] if block["type"] == "tool_result"]


# --- a stage that does real work -------------------------------------------------------------


async def test_stage_creates_edits_runs_and_reports(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("write_file", {"file_path": "notes.txt", "content": "helo\nworld\n"})),
        tool_turn(
            ("edit_file", {"file_path": "notes.txt", "old_string": "helo", "new_string": "hello"})
        ),
        tool_turn(("shell", {"command": "wc -l < notes.txt", "timeout_ms": 5000})),
        tool_turn(("report_status", {"outcome": "success", "context_updates": {"lines": "2"}})),
        text_turn("notes.txt written and fixed; it has 2 lines."),
    )
    result, root, workdir = await run_agent(tmp_path, fake_server)
    assert result.status == "success", result.failure_reason
    assert (workdir / "notes.txt").read_text() == "hello\nworld\n"
    shell_result = tool_results(fake_server.requests[3].json())[0]
    assert "2" in shell_result["content"] and shell_result["is_error"] is False
    stage = root / "work"
    assert (stage / "response.md").read_text() == "notes.txt written and fixed; it has 2 lines."
    assert read_json(stage / "status.json")["outcome"] == "success"
    assert read_json(root / "checkpoint.json")["context"]["lines"] == "2"
    calls = named(root, "agent_tool_call")
    assert [(c["tool"], c["is_error"]) for c in calls] == [
        ("write_file", False),
        ("edit_file", False),
        ("shell", False),
        ("report_status", False),
    ]
    [attempt_id] = [
        e["attempt_id"] for e in named(root, "stage_attempt_started") if e["node_id"] == "work"
    ]
    assert {(c["node_id"], c["attempt_id"]) for c in calls} == {("work", attempt_id)}
    [decision] = named(root, "status_ingestion_decision")
    assert decision["source"] == "canonical"
    used = read_json(stage / "provider_used.json")
    assert (used["provider"], used["mode"]) == ("a", "agent_loop")
    transcript = read_json(stage / "transcript.json")
    assert transcript["stop_reason"] == "completed"
    assert [m["role"] for m in transcript["messages"]][:3] == ["user", "assistant", "tool"]
    first = fake_server.requests[0].json()
    assert {t["name"] for t in first["tools"]} >= {"read_file", "shell", "report_status"}
    assert str(workdir) in first["system"][0]["text"]
    assert_envelope_invariants(root)
    assert_in_no_file(root, KEY)


async def test_report_status_fail_routes_like_a_status_file(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("report_status", {"outcome": "fail", "failure_reason": "spec is ambiguous"})),
        text_turn("Stopping: the spec is ambiguous."),
    )
    result, _root, _ = await run_agent(tmp_path, fake_server)
    assert result.status == "fail" and result.failure_reason == "spec is ambiguous"


# --- processes: timeouts and cancellation ----------------------------------------------------


async def test_hung_shell_call_is_killed_at_its_timeout(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("shell", {"command": "echo started; sleep 30", "timeout_ms": 500})),
        tool_turn(("report_status", {"outcome": "success"})),
        text_turn("the command hung, moving on"),
    )
    began = time.monotonic()
    result, _root, _ = await run_agent(tmp_path, fake_server)
    assert result.status == "success" and time.monotonic() - began < 10
    [answer] = tool_results(fake_server.requests[1].json())
    assert answer["is_error"] is True
    assert "started" in answer["content"]
    assert "[ERROR: Command timed out after 500ms" in answer["content"]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def test_cancel_during_a_tool_call_leaves_no_process(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 300 & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait"
    fake_server.script(
        fa.MESSAGES_PATH, tool_turn(("shell", {"command": command, "timeout_ms": 600000}))
    )
    backend = ApiBackend(config(fake_server), "a", env={"A_KEY": KEY})
    workdir = tmp_path / "repo"
    workdir.mkdir()
    async with trio.open_nursery() as nursery:
        cancel = trio.CancelScope()

        async def run() -> None:
            with cancel:
                await run_dot(DOT, tmp_path / "run", backend=backend, workdir=workdir)

        nursery.start_soon(run)
        with trio.fail_after(20):
            # The pids come from a shell: there is nothing to wait on but the file.
            while not pids.exists():  # noqa: ASYNC110
                await trio.sleep(0.02)
        cancel.cancel()
    await backend.aclose()
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 2
    assert not [pid for pid in started if _alive(pid)]
    root = tmp_path / "run"
    assert read_json(root / "final.json")["status"] == "canceled"
    assert named(root, "cancellation_exit")[0]["node_id"] == "work"
    assert read_json(root / "work" / "transcript.json")["stop_reason"] == "interrupted"


# --- loop detection, hooks, limits -----------------------------------------------------------


async def test_loop_detection_fires_on_repeated_identical_calls(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    same = tool_turn(("glob", {"pattern": "*.txt"}))
    fake_server.script(
        fa.MESSAGES_PATH,
        *[same] * 10,
        tool_turn(("report_status", {"outcome": "success"})),
        text_turn("ok"),
    )
    result, root, _ = await run_agent(tmp_path, fake_server)
    assert result.status == "success"
    [event] = named(root, "agent_loop_detected")
    assert (event["node_id"], event["tools"], event["window"]) == ("work", ["glob"], 10)
    warned = fake_server.requests[10].json()["messages"][-1]["content"]
    assert any("[Loop detected]" in block.get("text", "") for block in warned)


async def test_pre_hook_veto_skips_the_call(tmp_path: Path, fake_server: FakeServer) -> None:
    guard = "case $ATTRACTOR_TOOL_NAME in shell) echo no shell here >&2; exit 1;; esac"
    audit = (
        'cat >> "$ATTRACTOR_STAGE_DIR/audit.ndjson"; echo >> "$ATTRACTOR_STAGE_DIR/audit.ndjson"'
    )
    dot = DOT.replace("digraph p {", f"digraph p {{ tool_hooks.pre={json.dumps(guard)}")
    dot = dot.replace('work [prompt="', f'work [tool_hooks.post={json.dumps(audit)}, prompt="')
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("shell", {"command": "touch vetoed.txt"})),
        tool_turn(("write_file", {"file_path": "allowed.txt", "content": "ok"})),
        tool_turn(("report_status", {"outcome": "success"})),
        text_turn("done"),
    )
    result, root, workdir = await run_agent(tmp_path, fake_server, dot=dot)
    assert result.status == "success"
    assert not (workdir / "vetoed.txt").exists() and (workdir / "allowed.txt").exists()
    [vetoed] = tool_results(fake_server.requests[1].json())
    assert vetoed["is_error"] is True
    assert vetoed["content"] == "tool call blocked by tool_hooks.pre (exit 1): no shell here"
    calls = [(c["tool"], c["is_error"]) for c in named(root, "agent_tool_call")]
    assert calls == [("shell", True), ("write_file", False), ("report_status", False)]
    audited = [
        json.loads(line)
        for line in (root / "work" / "audit.ndjson").read_text().split("\n")
        if line
    ]
    assert [a["tool"] for a in audited] == ["write_file", "report_status"]  # no post hook on veto
    assert "vetoed" in (root / "work" / "hooks.log").read_text()


async def test_tool_round_limit_fails_the_stage_as_budget_exhausted(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(fa.MESSAGES_PATH, tool_turn(("glob", {"pattern": "*"})))
    dot = DOT.replace('work [prompt="', 'work [agent.max_tool_rounds=3, prompt="')
    result, root, _ = await run_agent(tmp_path, fake_server, dot=dot)
    assert result.status == "fail" and result.failure_class == "budget_exhausted"
    assert "tool round limit reached (3 rounds)" in result.failure_reason
    assert len(fake_server.requests) == 3
    assert read_json(root / "work" / "transcript.json")["stop_reason"] == "budget_exhausted"


# --- providers: failover and fidelity --------------------------------------------------------


async def test_failover_mid_session_sticks_to_the_new_provider(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(r"^/v1/messages$", fa.error_reply(500, "api_error", "boom"))
    fake_server.script(
        r"^/b/v1/messages$",
        tool_turn(("report_status", {"outcome": "success"})),
        text_turn("done on b"),
    )
    result, root, _ = await run_agent(tmp_path, fake_server, failover=("b",))
    assert result.status == "success"
    paths = [r.path for r in fake_server.requests]
    assert paths == ["/v1/messages"] * 3 + ["/b/v1/messages"] * 2
    assert [r.json()["model"] for r in fake_server.requests[3:]] == ["claude-b", "claude-b"]
    used = read_json(root / "work" / "provider_used.json")
    assert (used["provider"], used["failover_from"], used["mode"]) == ("b", "a", "agent_loop")


async def test_full_fidelity_continues_the_thread(tmp_path: Path, fake_server: FakeServer) -> None:
    dot = """digraph p {
      start [shape=Mdiamond]; done [shape=Msquare]
      one [prompt="remember the word kiwi", fidelity="full", thread_id="t"]
      two [prompt="which word?", fidelity="full", thread_id="t"]
      three [prompt="fresh start"]
      start -> one -> two -> three -> done
    }"""
    fake_server.script(fa.MESSAGES_PATH, text_turn("noted"), text_turn("kiwi"), text_turn("hi"))
    result, _root, _ = await run_agent(tmp_path, fake_server, dot=dot)
    assert result.status == "success"

    def user_texts(index: int) -> list[str]:
        messages = fake_server.requests[index].json()["messages"]
        return [b["text"] for m in messages if m["role"] == "user" for b in m["content"]]

    assert user_texts(1) == ["remember the word kiwi", "which word?"]
    assert "remember the word kiwi" not in " ".join(user_texts(2))


async def test_one_shot_mode_still_makes_a_single_completion(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(fa.MESSAGES_PATH, text_turn("one answer"))
    dot = DOT.replace('work [prompt="', 'work [codergen_mode="one_shot", prompt="')
    result, root, _ = await run_agent(tmp_path, fake_server, dot=dot)
    assert result.status == "success" and len(fake_server.requests) == 1
    assert "tools" not in fake_server.requests[0].json()
    assert read_json(root / "work" / "provider_used.json")["mode"] == "one_shot"


# --- the example pipeline --------------------------------------------------------------------


def _load_example_module() -> ModuleType:
    path = EXAMPLES / "agent_feature" / "fake_anthropic.py"
    spec = importlib.util.spec_from_file_location("agent_feature_fake_anthropic", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def git(repo: Path, *args: str) -> list[str]:
    done = await trio.run_process(["git", *args], cwd=repo, capture_stdout=True)
    return done.stdout.decode().split("\n")


async def test_example_pipeline_implements_the_feature(tmp_path: Path) -> None:
    repo = tmp_path / "textkit"
    setup = EXAMPLES / "agent_feature" / "setup_repo.sh"
    await trio.run_process(["bash", str(setup), str(repo)], capture_stderr=True)
    fake = _load_example_module().FakeAnthropic.from_file()
    text = (EXAMPLES / "agent_feature" / "config.yaml").read_text()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        config = parse_run_config(
            yaml.safe_load(text), env={**os.environ, "FAKE_ANTHROPIC_URL": fake.base_url}
        )
        backend = ApiBackend(config, config.backend)
        source = (EXAMPLES / "agent_feature.dot").read_text()
        try:
            with trio.fail_after(60):
                result = await run_dot(source, tmp_path / "run", backend=backend, workdir=repo)
        finally:
            await backend.aclose()
        nursery.cancel_scope.cancel()
    assert result.status == "success", result.failure_reason
    assert list(result.completed_nodes[-3:]) == ["verify", "commit", "done"]
    assert "def slugify" in (repo / "textkit.py").read_text()
    log = await git(repo, "log", "--format=%s")
    assert log[:2] == ["textkit: add slugify()", "textkit: title_words"]
    assert await git(repo, "status", "--porcelain") == [""]
    root = tmp_path / "run"
    audit = (root / "tool_audit.ndjson").read_text().split("\n")
    assert len([line for line in audit if line]) == len(named(root, "agent_tool_call")) == 9
    assert not fake.turns  # the whole script was used
    assert read_json(root / "checkpoint.json")["context"]["feature"] == "slugify"
