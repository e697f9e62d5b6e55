"""The executor seam and its options (contract.md §10 "Scale-out on Ray"), without a Ray cluster.

A fake executor stands in for Ray: it proves that tool stages route through the installed
executor, that ``executor.resources`` reaches it, and that a lost executor fails the attempt as
``transient_infra`` so the node's retry policy decides. The option checks run the real CLI.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.aio.process import ProcessResult, run_in_process_group
from attractor_trio.backends.executors import ExecutorLost, use_executor
from attractor_trio.backends.executors.base import (
    StageContext,
    WorkdirRefused,
    current_stage,
    parse_resources,
)
from attractor_trio.backends.executors.options import executor_settings
from attractor_trio.backends.provider import ApiBackend
from attractor_trio.backends.remote_session import error_from_wire, error_to_wire
from attractor_trio.cli.detach import recorded_options, reuse_recorded_options
from attractor_trio.dot.validate import validate
from attractor_trio.errors import ConfigError
from attractor_trio.providers.base import ERROR_KINDS, error_from_kind
from attractor_trio.runconfig import parse_run_config
from attractor_trio.testing.invariants import check_attempts_closed

from .fakes import anthropic as fa
from .fakes.server import FakeServer, Reply
from .helpers import (
    TWO_STAGE_CHAIN,
    anthropic_backend_keyed_in_its_env,
    assert_in_no_file,
    events,
    graph_of,
    named,
    read_json,
    run_dot,
)
from .test_agent_e2e import text_turn, tool_results, tool_turn
from .test_cli import cli

TOOL = """digraph p { start [shape=Mdiamond]; exit [shape=Msquare]
  t [shape=parallelogram, tool_command="echo hi"%s]
  start -> t -> exit }"""


class FakeExecutor:
    """Runs locally, records what it was asked; loses the first ``lose`` attempts."""

    def __init__(self, lose: int = 0, failure: Exception | None = None) -> None:
        self.lose = lose
        self.failure = failure or ExecutorLost("ray node lost: node 1234 died")
        self.calls: list[Mapping[str, float]] = []

    async def run_process(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout_path: Path,
        stderr_path: Path,
        kill_grace: float,
        on_output: Callable[[], None] | None,
        resources: Mapping[str, float],
    ) -> ProcessResult:
        self.calls.append(resources)
        if len(self.calls) <= self.lose:
            raise self.failure
        return await run_in_process_group(
            argv,
            cwd=cwd,
            env=env,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            kill_grace=kill_grace,
            on_output=on_output,
        )


async def test_tool_stages_run_on_the_installed_executor_with_the_node_resources(
    tmp_path: Path,
) -> None:
    fake = FakeExecutor()
    root = tmp_path / "run"
    with use_executor(fake):
        result = await run_dot(TOOL % ', executor.resources="{\\"GPU\\": 1, \\"big\\": 2}"', root)
    assert result.status == "success"
    assert fake.calls == [{"GPU": 1.0, "big": 2.0}]
    assert (root / "t" / "stdout.log").read_text() == "hi\n"


class _StageSeeing:
    """A codergen backend recording the ``StageContext`` an executor below it would see."""

    def __init__(self) -> None:
        self.seen: list[StageContext] = []

    async def run(self, node: Any, prompt: str, context: Any) -> str:
        self.seen.append(current_stage())
        return "done"


@pytest.mark.parametrize("installed", [False, True])
async def test_the_attempts_stage_context_is_set_only_for_an_installed_executor(
    tmp_path: Path, installed: bool
) -> None:
    """Only an executor reads it: a local run (no executor) sets none at all, one with an
    executor installed hands it the attempt's."""
    backend = _StageSeeing()
    with use_executor(FakeExecutor() if installed else None):
        result = await run_dot(TWO_STAGE_CHAIN, tmp_path / "run", backend=backend)
    assert result.status == "success"
    if installed:
        assert [stage.node_id for stage in backend.seen] == ["a", "b"]
        assert backend.seen[0].attempt_id.startswith("a-1-")
        assert backend.seen[0].stage_dir == tmp_path / "run" / "a"
    else:
        assert backend.seen == [StageContext(), StageContext()]


async def test_a_lost_executor_fails_the_attempt_as_transient_infra_and_it_is_retried(
    tmp_path: Path,
) -> None:
    fake = FakeExecutor(lose=1)
    root = tmp_path / "run"
    with use_executor(fake):
        result = await run_dot(TOOL % ", max_retries=1", root)
    assert result.status == "success"
    first = named(root, "stage_attempt_finished")[1]  # [0] is start
    assert (first["node_id"], first["status"], first["failure_class"]) == (
        "t",
        "fail",
        "transient_infra",
    )
    assert first["failure_reason"] == "ray node lost: node 1234 died"
    assert len(fake.calls) == 2


async def test_a_refused_work_directory_fails_the_attempt_deterministic_without_retry(
    tmp_path: Path,
) -> None:
    refused = WorkdirRefused("the work directory changed on the driver … (conflicting: f)")
    fake = FakeExecutor(lose=5, failure=refused)
    root = tmp_path / "run"
    with use_executor(fake):
        result = await run_dot(TOOL % ", max_retries=3", root)
    assert result.status == "fail"
    finished = named(root, "stage_attempt_finished")[-1]
    assert (finished["failure_class"], finished["failure_reason"]) == (
        "deterministic",
        str(refused),
    )
    assert len(fake.calls) == 1


async def test_a_lost_executor_without_retries_fails_the_run_as_transient_infra(
    tmp_path: Path,
) -> None:
    root = tmp_path / "run"
    with use_executor(FakeExecutor(lose=5)):
        result = await run_dot(TOOL % "", root)
    assert result.status == "fail"
    assert read_json(root / "t" / "status.json")["failure_reason"].startswith("ray node lost")


class PlacingExecutor(FakeExecutor):
    """Like a cluster: queues the attempt, then announces its start on "node-1" — or never
    places it (``place=False``)."""

    defers_start = True

    def __init__(self, place: bool = True) -> None:
        super().__init__()
        self.place = place

    async def run_process(self, argv: Sequence[str], **kwargs: object) -> ProcessResult:
        stage = current_stage()
        assert stage.start is not None
        if stage.start.pending:
            stage.emit("stage_queued", node_id=stage.node_id, attempt_id=stage.attempt_id)
        if not self.place:
            await trio.sleep_forever()
        stage.start.announce(ray_node_id="node-1", host="h", queued_s=0.0)
        return await super().run_process(argv, **kwargs)  # type: ignore[arg-type]


def _node_events(root: Path, node_id: str) -> list[dict[str, object]]:
    return [e for e in events(root) if e.get("node_id") == node_id]


async def test_a_placed_attempt_starts_when_its_node_starts_it(tmp_path: Path) -> None:
    """contract.md §10: ``stage_queued``, then the one ``stage_attempt_started`` with the node."""
    root = tmp_path / "run"
    with use_executor(PlacingExecutor()):
        result = await run_dot(TOOL % "", root)
    assert result.status == "success"
    names = [e["event"] for e in _node_events(root, "t")]
    assert names[:3] == ["stage_started", "stage_queued", "stage_attempt_started"]
    assert names.count("stage_attempt_started") == 1
    assert named(root, "stage_attempt_started")[1]["ray_node_id"] == "node-1"
    assert not list(check_attempts_closed(events(root)))


async def test_an_attempt_never_placed_still_starts_and_finishes_once(tmp_path: Path) -> None:
    """Timed out while queued: its start is announced (without a node) before its end."""
    root = tmp_path / "run"
    with use_executor(PlacingExecutor(place=False)):
        result = await run_dot(TOOL % ", timeout=0.3", root)
    assert result.status == "fail"
    names = [e["event"] for e in _node_events(root, "t")]
    assert names[:4] == [
        "stage_started",
        "stage_queued",
        "stage_attempt_started",
        "stage_attempt_finished",
    ]
    assert "ray_node_id" not in named(root, "stage_attempt_started")[1]
    assert not list(check_attempts_closed(events(root)))


async def test_an_attempt_whose_work_is_not_one_process_starts_at_once(tmp_path: Path) -> None:
    """A codergen stage whose backend is not one process (here: simulated; the agent loop's
    model calls run in the driver) starts as locally, whatever the executor."""
    root = tmp_path / "run"
    source = """digraph p { start [shape=Mdiamond]; exit [shape=Msquare]
        plan [prompt="Plan"]; start -> plan -> exit }"""
    with use_executor(PlacingExecutor()):
        result = await run_dot(source, root)
    assert result.status == "success"
    names = [e["event"] for e in _node_events(root, "plan")]
    assert names[:2] == ["stage_started", "stage_attempt_started"]
    assert "stage_queued" not in names


def test_end_group_finds_an_attempts_group_through_its_scratch_dir(tmp_path: Path) -> None:
    """A remote attempt canceled before the driver heard its pgid: the node-side end request
    finds the group through the attempt's scratch dir, ends it and removes the dir."""
    import tempfile

    from attractor_trio.backends.executors import _remote

    token = f"test{os.getpid()}"
    scratch = Path(tempfile.mkdtemp(prefix=f"attractor-remote-{token}-"))
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (scratch / "group.pid").write_text(str(proc.pid))
        assert _remote.end_group(None, 0.5, False, token)
        assert proc.wait(timeout=5) == -signal.SIGTERM
        assert not scratch.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_executor_resources_is_a_known_attribute() -> None:
    graph = graph_of(TOOL % ', executor.resources="{\\"GPU\\": 1}"')
    assert not [d for d in validate(graph) if d.rule == "unknown_attribute"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", {}), ('{"GPU": 1}', {"GPU": 1.0}), ('{"CPU": 0.5, "x": 2}', {"CPU": 0.5, "x": 2.0})],
)
def test_parse_resources(raw: str, expected: dict[str, float]) -> None:
    assert parse_resources(raw) == expected


@pytest.mark.parametrize("raw", ["{", "[1]", '{"GPU": "one"}', '{"GPU": -1}', '{"GPU": true}'])
def test_bad_resources_are_one_line_errors(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"executor\.resources"):
        parse_resources(raw)


def _pipeline(tmp_path: Path) -> Path:
    dot = tmp_path / "p.dot"
    dot.write_text(TOOL % "")
    return dot


def test_executor_ray_without_the_extra_is_exit_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("attractor_trio.backends.executors.ray.ray_available", lambda: False)
    root = tmp_path / "run"
    code, _, err = cli(
        "run", str(_pipeline(tmp_path)), "--executor", "ray", "--logs-root", str(root)
    )
    assert code == 2
    assert "attractor-trio[ray]" in err and len(err.strip().splitlines()) == 1
    assert not root.exists()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("detached", [False, True])
def test_an_unreachable_ray_address_is_exit_2_before_the_run_directory_exists(
    tmp_path: Path, detached: bool
) -> None:
    """contract.md §10: connect (or, detached, check the address) before the logs root is
    created — one line naming the address, in seconds, not after Ray's minutes of retries."""
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_closed_port()}"
    root = tmp_path / "run"
    argv = ["run", str(_pipeline(tmp_path)), "--executor", "ray", "--logs-root", str(root)]
    argv += ["--ray-address", address, *(["--detach"] if detached else [])]
    started = time.monotonic()
    code, _, err = cli(*argv)
    assert code == 2
    assert address in err and len(err.strip().splitlines()) == 1, err
    assert not root.exists()
    assert time.monotonic() - started < 10


def test_ray_address_without_the_ray_executor_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "run"
    code, _, err = cli(
        "run", str(_pipeline(tmp_path)), "--ray-address", "10.0.0.1:6379", "--logs-root", str(root)
    )
    assert code == 2 and "--ray-address needs --executor ray" in err
    assert not root.exists()


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("executor: {kind: ray, upload_limit_mb: 0}", "upload_limit_mb: must be at least 1"),
        ("executor: {upload_excludes: [1]}", "$.executor.upload_excludes"),
        (
            "executor: {upload_excludes: .env}",
            "expected a list of strings, e.g. [A, B] @ $.executor.upload_excludes",
        ),
        ("executor: {kind: spark}", "$.executor.kind: must be local or ray"),
        ("executor: {num_cpus_per_stage: -1}", "num_cpus_per_stage: must be at least 0"),
        ("executor: {adress: x}", "did you mean 'address'"),
    ],
)
def test_bad_executor_configs_are_exit_2(tmp_path: Path, doc: str, fragment: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(doc + "\n")
    root = tmp_path / "run"
    code, _, err = cli(
        "run", str(_pipeline(tmp_path)), "--config", str(config), "--logs-root", str(root)
    )
    assert code == 2 and fragment in err, err
    assert not root.exists()


def test_upload_settings_come_from_the_run_config() -> None:
    pytest.importorskip("ray")
    doc = {"executor": {"kind": "ray", "upload_workdir": True, "upload_excludes": [".env"]}}
    settings = executor_settings(None, None, parse_run_config(doc))
    assert (settings.upload_workdir, settings.upload_limit_mb, settings.upload_excludes) == (
        True,
        256,
        (".env",),
    )
    doc["executor"]["upload_limit_mb"] = 5
    assert executor_settings(None, None, parse_run_config(doc)).upload_limit_mb == 5


def test_executor_options_are_recorded_for_resume() -> None:
    recorded = recorded_options({"executor": "ray", "ray_address": "10.0.0.1:6379"})
    assert recorded == {"executor": "ray", "ray_address": "10.0.0.1:6379"}
    again = reuse_recorded_options({"executor": None, "ray_address": None}, recorded)
    assert (again["executor"], again["ray_address"]) == ("ray", "10.0.0.1:6379")


def test_the_local_executor_never_imports_ray(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from attractor_trio.cli.main import main
        result = CliRunner().invoke(main, ["run", {str(_pipeline(tmp_path))!r}, "--quiet",
                                           "--logs-root", {str(tmp_path / "run")!r}])
        assert result.exit_code == 0, result.output
        print("ray" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr


# --- an executor that runs whole agent-loop sessions (backends/remote_session.py) -------------


class SessionExecutor(FakeExecutor):
    """Runs an agent-loop attempt as a node would: the spec crosses a pickle boundary, the
    session runs from it alone, its events and end come back as plain data."""

    #: Its attempts start when its "node" starts them (``base.defers_start``).
    defers_start = True

    def __init__(self) -> None:
        super().__init__()
        self.specs: list[Any] = []

    async def run_session(self, spec: Any) -> Any:
        from attractor_trio.backends.remote_session import run_session_to_wire, session_result
        from attractor_trio.core.attempt import current_attempt

        driver = current_attempt()
        assert driver is not None
        travelled = pickle.loads(pickle.dumps(spec))
        self.specs.append(travelled)
        start = current_stage().start
        assert start is not None and start.pending  # deferred until the node starts it
        start.announce(ray_node_id="fake-node", host="fake-host", queued_s=0.0)
        shipped: list[tuple[str, dict[str, Any]]] = []
        with use_executor(None):  # the node runs its shell commands itself
            end = await run_session_to_wire(
                travelled,
                emit=lambda name, **fields: shipped.append((name, fields)),
                progress=driver.progress,
            )
        for name, fields in pickle.loads(pickle.dumps(shipped)):
            driver.emit(name, **fields)
        return session_result(pickle.loads(pickle.dumps(end)))


AGENT_KEY = "sk-test-REMOTE-5e55"
AGENT_DOT = """digraph p { start [shape=Mdiamond]; done [shape=Msquare]
  work [prompt="write a file and run a command"]
  start -> work -> done }"""


def _agent_backend(server: FakeServer) -> ApiBackend:
    return anthropic_backend_keyed_in_its_env(server.base_url, AGENT_KEY, timeout=10)


async def _run_agent(tmp_path: Path, server: FakeServer, executor: Any) -> Any:
    workdir = tmp_path / "repo"
    workdir.mkdir(parents=True, exist_ok=True)
    backend = _agent_backend(server)
    try:
        with use_executor(executor), trio.fail_after(30):
            return await run_dot(AGENT_DOT, tmp_path / "run", backend=backend, workdir=workdir)
    finally:
        await backend.aclose()


async def test_an_executor_that_runs_sessions_gets_the_whole_agent_loop_attempt(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("write_file", {"file_path": "notes.txt", "content": "hello\n"})),
        tool_turn(("shell", {"command": "echo pid=$$; env | grep -c A_KEY || true"})),
        tool_turn(("report_status", {"outcome": "success"})),
        text_turn("done"),
    )
    executor = SessionExecutor()
    result = await _run_agent(tmp_path, fake_server, executor)
    assert result.status == "success", result.failure_reason
    [spec] = executor.specs
    [start] = [
        e for e in named(tmp_path / "run", "stage_attempt_started") if e["node_id"] == "work"
    ]
    assert start["ray_node_id"] == "fake-node"
    assert spec.env["A_KEY"] == AGENT_KEY  # the key travels only in the stage environment
    assert set(spec.providers) == {"a"} and spec.node.id == "work"
    assert executor.calls == []  # the shell command ran on the "node", not as a remote process
    assert (tmp_path / "repo" / "notes.txt").read_text() == "hello\n"
    root = tmp_path / "run"
    assert (root / "work" / "response.md").read_text() == "done"
    assert read_json(root / "work" / "status.json")["outcome"] == "success"
    assert read_json(root / "work" / "transcript.json")["stop_reason"] == "completed"
    shell_answer = tool_results(fake_server.requests[2].json())[0]["content"]
    assert "pid=" in shell_answer and "\n0" in shell_answer  # the shell never sees the key
    assert [c["tool"] for c in named(root, "agent_tool_call")] == [
        "write_file",
        "shell",
        "report_status",
    ]
    assert {r.headers.get("x-api-key") for r in fake_server.requests} == {AGENT_KEY}
    assert_in_no_file(root, AGENT_KEY)


async def test_a_provider_error_in_a_remote_session_fails_with_the_local_failure_class(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    denied = Reply.json(
        {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
        status=401,
    )
    fake_server.script(fa.MESSAGES_PATH, denied)
    local = await _run_agent(tmp_path / "local", fake_server, None)
    remote = await _run_agent(tmp_path / "remote", fake_server, SessionExecutor())
    assert local.status == remote.status == "fail"
    assert remote.failure_reason == local.failure_reason
    [local_end] = [
        e
        for e in named(tmp_path / "local" / "run", "stage_attempt_finished")
        if e["node_id"] == "work"
    ]
    [remote_end] = [
        e
        for e in named(tmp_path / "remote" / "run", "stage_attempt_finished")
        if e["node_id"] == "work"
    ]
    assert remote_end["failure_class"] == local_end["failure_class"] == "deterministic"


async def test_a_fidelity_full_thread_travels_with_remote_sessions(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    dot = """digraph p { start [shape=Mdiamond]; done [shape=Msquare]
      one [prompt="remember the word kiwi", fidelity="full", thread_id="t"]
      two [prompt="which word?", fidelity="full", thread_id="t"]
      three [prompt="fresh start"]
      start -> one -> two -> three -> done }"""
    fake_server.script(fa.MESSAGES_PATH, text_turn("noted"), text_turn("kiwi"), text_turn("hi"))
    executor = SessionExecutor()
    workdir = tmp_path / "repo"
    workdir.mkdir()
    backend = _agent_backend(fake_server)
    try:
        with use_executor(executor), trio.fail_after(30):
            result = await run_dot(dot, tmp_path / "run", backend=backend, workdir=workdir)
    finally:
        await backend.aclose()
    assert result.status == "success" and len(executor.specs) == 3

    def user_texts(index: int) -> list[str]:
        messages = fake_server.requests[index].json()["messages"]
        return [b["text"] for m in messages if m["role"] == "user" for b in m["content"]]

    assert executor.specs[1].thread == "t" and len(executor.specs[1].history) == 2
    assert user_texts(1) == ["remember the word kiwi", "which word?"]
    assert "remember the word kiwi" not in " ".join(user_texts(2))


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_a_provider_error_crosses_the_wire_as_the_same_class(kind: str) -> None:
    original = error_from_kind(
        kind, "boom", provider="a", status_code=418, retry_after=2.5, raw=threading.Lock()
    )
    wire = pickle.loads(pickle.dumps(error_to_wire(original)))
    again = error_from_wire(wire)
    assert type(again) is type(original)
    assert (again.failure_class, str(again), again.retry_after, again.retryable) == (
        original.failure_class,
        str(original),
        2.5,
        original.retryable,
    )
