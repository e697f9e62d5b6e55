"""Secrets (contract.md §10), black-box: what reaches a stage's environment, and that a secret
value never leaves the engine — not in a file under LOGS_ROOT, an event, the console, or a
server response."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner

from attractor_trio.backends.cli_agents import CliAgentBackend
from attractor_trio.cli.main import main
from attractor_trio.context import Context
from attractor_trio.core import redaction
from attractor_trio.handlers.base import reset_attempt, set_attempt
from attractor_trio.handlers.codergen import CodergenHandler
from attractor_trio.persist.checkpoint import Checkpoint, save_checkpoint
from attractor_trio.runconfig import ProviderConfig
from attractor_trio.server import create_app, open_run_manager
from attractor_trio.server.manager import ServedRun
from attractor_trio.stage_env import BASE_ALLOWLIST, stage_environment, use_env_passes

from .helpers import attempt_info, graph_of
from .test_server import LINEAR, served, sse, submit

SECRET = "sk-proj-Zx81qLm0vT6secret"
#: Variables a shell adds by itself to what it was given.
SHELL_ADDED = {"PWD", "SHLVL", "_", "OLDPWD"}
STAGE_VARS = {
    "ATTRACTOR_RUN_ID",
    "ATTRACTOR_NODE_ID",
    "ATTRACTOR_ATTEMPT",
    "ATTRACTOR_ATTEMPT_ID",
    "ATTRACTOR_LOGS_ROOT",
    "ATTRACTOR_STAGE_DIR",
    "ATTRACTOR_STATUS_PATH",
    "ATTRACTOR_WORKDIR",
    "ATTRACTOR_PREDECESSOR_NODE",
    "ATTRACTOR_PREDECESSOR_OUTCOME",
    # kilroy's names for the same values (contract.md §10, real-world pipelines)
    "KILROY_RUN_ID",
    "KILROY_NODE_ID",
    "KILROY_LOGS_ROOT",
    "KILROY_STAGE_LOGS_DIR",
    "KILROY_STAGE_STATUS_PATH",
    "KILROY_STAGE_STATUS_FALLBACK_PATH",
    "KILROY_WORKTREE_DIR",
    "KILROY_PREDECESSOR_NODE",
    "KILROY_PREDECESSOR_OUTCOME",
}
BOUND = 15


def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def tool_pipeline(tmp_path: Path, command: str, extra: str = "") -> str:
    path = tmp_path / "p.dot"
    path.write_text(
        "digraph p { start [shape=Mdiamond]; exit [shape=Msquare]\n"
        f"  t [shape=parallelogram, tool_command={json.dumps(command)}]\n"
        f"  {extra}\n"
        "  start -> t -> exit }\n"
    )
    return str(path)


def env_names(path: Path) -> set[str]:
    """The names in an ``env -0`` dump."""
    return {entry.split("=", 1)[0] for entry in path.read_text().split("\0") if entry}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's environment as a developer's shell has it."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ATTRACTOR_TOKEN", "server-token-123")
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2-but-longer")
    monkeypatch.setenv("UNLISTED_VAR", "plain")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")


# --- stage environments -----------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
def test_a_tool_gets_the_allowlist_and_its_stage_variables_only(tmp_path: Path) -> None:
    dot = tool_pipeline(tmp_path, 'env -0 > "$ATTRACTOR_STAGE_DIR/env.txt"')
    code, _, err = cli(tmp_path, "run", dot, "--logs-root", "logs")
    assert code == 0, err
    names = env_names(tmp_path / "logs" / "t" / "env.txt")
    assert names >= STAGE_VARS
    assert "LC_ALL" in names and "PATH" in names
    for absent in ("OPENAI_API_KEY", "ATTRACTOR_TOKEN", "DATABASE_PASSWORD", "UNLISTED_VAR"):
        assert absent not in names
    allowed = {n for n in os.environ if any(p.rstrip("*") == n for p in BASE_ALLOWLIST)}
    assert names - STAGE_VARS - SHELL_ADDED <= allowed | {"LC_ALL"}


@pytest.mark.usefixtures("secret_env")
def test_a_passed_secret_reaches_the_tool_and_its_log_shows_it_redacted(tmp_path: Path) -> None:
    dot = tool_pipeline(tmp_path, 'echo "key=$OPENAI_API_KEY"; echo "$OPENAI_API_KEY" >&2')
    code, _, err = cli(tmp_path, "run", dot, "--logs-root", "logs", "--pass-env", "OPENAI_API_KEY")
    assert code == 0, err
    stage = tmp_path / "logs" / "t"
    assert (stage / "stdout.log").read_text() == "key=[REDACTED]\n"
    assert (stage / "stderr.log").read_text() == "[REDACTED]\n"


@pytest.mark.usefixtures("secret_env")
def test_pass_env_globs_from_the_command_line_and_the_run_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MY_A", "MY_B", "CFG_ONE", "OTHER"):
        monkeypatch.setenv(name, "v")
    (tmp_path / "run.yaml").write_text("env:\n  pass: ['CFG_*']\n")
    dot = tool_pipeline(tmp_path, 'env -0 > "$ATTRACTOR_STAGE_DIR/env.txt"')
    code, _, err = cli(
        tmp_path,
        "run",
        dot,
        "--logs-root",
        "logs",
        "--config",
        "run.yaml",
        "--pass-env",
        "MY_*",
        "--pass-env",
        "ATTRACTOR_*",
    )
    assert code == 0, err
    names = env_names(tmp_path / "logs" / "t" / "env.txt")
    assert {"MY_A", "MY_B", "CFG_ONE"} <= names
    assert "OTHER" not in names
    assert "ATTRACTOR_TOKEN" not in names  # never, not even through a glob


@pytest.mark.parametrize("bad", ["A=B", "", "has space"])
def test_a_bad_pass_env_is_a_usage_error(tmp_path: Path, bad: str) -> None:
    dot = tool_pipeline(tmp_path, "true")
    code, _, err = cli(tmp_path, "run", dot, "--logs-root", "logs", "--pass-env", bad)
    assert code == 2
    assert err.startswith("attractor-trio: error: --pass-env: ")
    assert not (tmp_path / "logs").exists()


def test_a_bad_env_pass_in_the_run_config_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("env:\n  pass: [OK, 'A B']\n")
    dot = tool_pipeline(tmp_path, "true")
    code, _, err = cli(tmp_path, "run", dot, "--logs-root", "logs", "--config", "run.yaml")
    assert code == 2
    assert "run.yaml: $.env.pass[1]: 'A B' is not an environment variable name" in err


async def test_a_cli_agent_also_gets_its_providers_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AGENT_KEY", "agent-key-value")
    monkeypatch.setenv("OTHER_API_KEY", SECRET)
    info = attempt_info(tmp_path, "agent")
    provider = ProviderConfig(
        name="fake",
        kind="cli",
        command=shlex.join(["bash", "-c", "env -0 > agent-env.txt; echo done", "{prompt_file}"]),
        api_key_env="FAKE_AGENT_KEY",
    )
    handler = CodergenHandler(CliAgentBackend(provider))
    token = set_attempt(info)
    try:
        with trio.fail_after(BOUND):
            await handler.execute(
                graph_of(LINEAR).nodes["a"], Context(), graph_of(LINEAR), tmp_path
            )
    finally:
        reset_attempt(token)
    names = env_names(tmp_path / "agent-env.txt")
    assert "FAKE_AGENT_KEY" in names
    assert "OTHER_API_KEY" not in names


def test_the_agent_loop_shell_and_hooks_get_the_same_environment(tmp_path: Path) -> None:
    """White-box: the agent loop builds its shell's and its hooks' environment with the one
    function every stage uses (the LLM-driven shell additionally drops secret-looking names)."""
    from attractor_trio.backends.agent_loop import backend

    info = attempt_info(tmp_path)
    inherited = {"PATH": "/bin", "UNLISTED": "x", "OPENAI_API_KEY": SECRET, "PASSED_ONE": "y"}
    with use_env_passes(["PASSED_*"]):
        expected = stage_environment(info, inherited=inherited)
    assert set(expected) == {"PATH", "PASSED_ONE", *STAGE_VARS}
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(inherited)
    try:
        with use_env_passes(["PASSED_*"]):
            shell_env = backend._environment(info).env
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert shell_env == expected


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
def test_no_file_under_logs_root_and_no_json_event_holds_the_secret(tmp_path: Path) -> None:
    """The secret enters as a --set value, in the prompt (through the context), in a tool's
    output, in a failure_reason and its events; it is found nowhere afterwards."""
    status = json.dumps({"outcome": "fail", "failure_reason": "rejected key KEY"})
    command = (
        'echo "out $OPENAI_API_KEY"; echo "err $OPENAI_API_KEY" >&2; '
        f"printf '%s' {shlex.quote(status)} | sed \"s/KEY/$OPENAI_API_KEY/\" "
        '> "$ATTRACTOR_STATUS_PATH"; exit 1'
    )
    dot = tool_pipeline(
        tmp_path,
        command,
        f"gen [prompt={json.dumps('use ' + SECRET + ' and $goal')}]; start -> gen -> t",
    )
    code, out, err = cli(
        tmp_path,
        "run",
        dot,
        "--simulate",
        "--logs-root",
        "logs",
        "--json",
        "--pass-env",
        "OPENAI_API_KEY",
        "--set",
        f"key={SECRET}",
    )
    assert code == 1, err
    for path in (tmp_path / "logs").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            if path.suffix == ".json":
                json.loads(data)
    assert SECRET not in out and SECRET not in err
    events = [json.loads(line) for line in out.splitlines()]
    finished = [e for e in events if e["event"] == "stage_attempt_finished" and e["node_id"] == "t"]
    assert finished[0]["failure_reason"] == "rejected key [REDACTED]"
    manifest = json.loads((tmp_path / "logs" / "manifest.json").read_text())
    assert manifest["context"]["key"] == "[REDACTED]"
    assert all(SECRET not in arg for arg in manifest["argv"])
    assert "[REDACTED]" in (tmp_path / "logs" / "gen" / "prompt.md").read_text()


async def test_server_responses_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_API_KEY", SECRET)
    async with served(tmp_path) as s:
        run_id = await submit(s.client, LINEAR, context={"who": SECRET}, stall_timeout="1m")
        async with sse(s.client, run_id) as stream:
            await stream.until("pipeline_completed")
        for path in ("context", "checkpoint", ""):
            response = await s.client.get(f"/pipelines/{run_id}/{path}".rstrip("/"))
            assert response.status_code == 200
            assert SECRET not in response.text
        context = (await s.client.get(f"/pipelines/{run_id}/context")).json()
        assert context["who"] == "[REDACTED]"


async def test_the_context_endpoint_redacts_what_it_reads(tmp_path: Path) -> None:
    """White-box: a checkpoint written before the secret was known (a run from before a
    restart with another environment) is still served redacted."""
    root = tmp_path / "runs" / "r1"
    root.mkdir(parents=True)
    save_checkpoint(
        root,
        Checkpoint(
            run_id="r1", current_node="a", completed_nodes=("start",), context={"k": SECRET}
        ),
    )
    assert SECRET in (root / "checkpoint.json").read_text()
    redaction.register_values([SECRET])
    async with open_run_manager(tmp_path / "runs") as manager:
        fresh = ServedRun("r1", root, graph_of(LINEAR))
        manager._runs[fresh.id] = fresh
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            assert (await client.get("/pipelines/r1/context")).json() == {"k": "[REDACTED]"}
            assert SECRET not in (await client.get("/pipelines/r1/checkpoint")).text
        fresh.finished.set()


def test_a_backends_configured_keys_are_secrets_also_from_its_own_environment() -> None:
    """The API backend may be given its own environment (embedding): its keys count too."""
    from attractor_trio.scopes import engine

    class Backend:
        env = {"VENDOR_KEY": "vendor-key-1"}

        def secret_env_names(self) -> list[str]:
            return ["VENDOR_KEY"]

    engine._register_secrets(Backend())
    assert "vendor-key-1" in redaction.current().values


@pytest.mark.usefixtures("secret_env")
def test_the_checkpoint_is_redacted_piece_by_piece_not_rescanned_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint is re-encoded incrementally after every stage; scanning the whole
    document for secrets each time would make a stage cost O(stages so far) again."""
    scanned: list[str] = []
    real = redaction.file_bytes

    def recording(path: os.PathLike[str] | str, data: bytes) -> bytes:
        scanned.append(Path(path).name)
        return real(path, data)

    monkeypatch.setattr(redaction, "file_bytes", recording)
    reason = json.dumps({"outcome": "fail", "failure_reason": "bad KEY"})
    command = (
        f"printf '%s' {shlex.quote(reason)} | sed \"s/KEY/$OPENAI_API_KEY/\" "
        '> "$ATTRACTOR_STATUS_PATH"; exit 1'
    )
    dot = tool_pipeline(tmp_path, command)
    code, _, err = cli(
        tmp_path,
        "run",
        dot,
        "--logs-root",
        "logs",
        "--pass-env",
        "OPENAI_*",
        "--set",
        f"k={SECRET}",
    )
    assert code == 1, err
    assert "checkpoint.json" not in scanned and "status.json" in scanned
    checkpoint = json.loads((tmp_path / "logs" / "checkpoint.json").read_text())
    assert checkpoint["context"]["k"] == "[REDACTED]"
    assert checkpoint["node_outcomes"]["t"]["failure_reason"] == "bad [REDACTED]"
    assert SECRET not in (tmp_path / "logs" / "checkpoint.json").read_text()


@pytest.mark.parametrize("command", ["run", "resume"])
def test_run_and_resume_both_take_pass_env(tmp_path: Path, command: str) -> None:
    code, out, _ = cli(tmp_path, command, "--help")
    assert code == 0 and "--pass-env NAME" in out
