"""``--executor ray`` on a real local multi-node Ray cluster (contract.md §10 "Scale-out on Ray").

One cluster for the whole module (a head with 0 CPUs, so every stage lands on a worker, plus two
2-CPU workers, all bound to 127.0.0.1): starting one takes 5-7 s on a 2-core box. The test that
kills a worker node adds a fresh one afterwards, so the tests stay independent of their order.
Skipped cleanly when the ``ray`` extra is not installed; CI installs it (noxfile ``tests``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

# Ray reads these once, at import: a private loopback cluster, no usage reporting, and no
# token auth even if this machine has a ~/.ray/auth_token.
for _name, _value in (
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("RAY_AUTH_MODE", "disabled"),
    ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
):
    os.environ.setdefault(_name, _value)

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from attractor_trio.backends.cli_agents import CliAgentBackend  # noqa: E402
from attractor_trio.backends.executors import ExecutorSettings, use_executor  # noqa: E402
from attractor_trio.backends.executors.ray import RayExecutor  # noqa: E402
from attractor_trio.runconfig import ProviderConfig  # noqa: E402
from attractor_trio.testing.invariants import check_attempts_closed  # noqa: E402

from .fakes import anthropic as fa  # noqa: E402
from .fakes.server import FakeServer, Reply  # noqa: E402
from .helpers import (  # noqa: E402
    anthropic_backend_keyed_in_its_env,
    assert_envelope_invariants,
    assert_in_no_file,
    events,
    named,
    read_json,
    run_dot,
)
from .test_agent_e2e import text_turn, tool_results, tool_turn  # noqa: E402
from .test_cancel_processes import marked_processes  # noqa: E402
from .test_cli_agents import AGENTS  # noqa: E402

pytestmark = pytest.mark.slow

_WORKER = {"num_cpus": 2, "node_ip_address": "127.0.0.1"}


class Cluster:
    """The module's cluster and the driver's connection to it."""

    def __init__(self) -> None:
        self.ray = cluster_utils.Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
        )
        self.shapes: dict[str, dict[str, Any]] = {}
        self.workers: list[Any] = []
        self.killed: list[dict[str, Any]] = []
        for shape in (_WORKER, {**_WORKER, "resources": {"special": 1}}):
            self._add(shape)
        self.address: str = self.ray.address

    def _add(self, shape: dict[str, Any]) -> None:
        node = self.ray.add_node(**shape)
        self.workers.append(node)
        self.shapes[node.node_id] = shape

    def special_id(self) -> str:
        return next(
            n
            for n, shape in self.shapes.items()
            if "resources" in shape and any(w.node_id == n for w in self.workers)
        )

    def worker_ids(self) -> set[str]:
        return {w.node_id for w in self.workers}

    def kill(self, node_id: str) -> None:
        """Kill a worker node abruptly (from any thread)."""
        node = next(w for w in self.workers if w.node_id == node_id)
        self.ray.remove_node(node, allow_graceful=False)
        self.workers.remove(node)
        self.killed.append(self.shapes.pop(node_id))

    def replace_killed(self) -> None:
        """Add a node of the same shape for each killed one (main thread: Ray sets signals)."""
        while self.killed:
            self._add(self.killed.pop())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started = Cluster()
    ray.init(address=started.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield started
    finally:
        ray.shutdown()
        started.ray.shutdown()


@pytest.fixture
def executor(cluster: Cluster) -> Iterator[RayExecutor]:
    ray_executor = RayExecutor(ExecutorSettings(kind="ray", queue_timeout=60.0))
    with use_executor(ray_executor):
        yield ray_executor


def tool_pipeline(*commands: str, attrs: str = "") -> str:
    nodes = "\n".join(
        f'  t{i} [shape=parallelogram, tool_command="{c}"{attrs}]' for i, c in enumerate(commands)
    )
    chain = " -> ".join(f"t{i}" for i in range(len(commands)))
    return f"digraph p {{ start [shape=Mdiamond]; exit [shape=Msquare]\n{nodes}\n start -> {chain} -> exit }}"


def remote_nodes(root: Path) -> list[str]:
    """The Ray node ids the stages started on, in order (also while the run writes its log)."""
    try:
        started = named(root, "stage_attempt_started")
    except (OSError, ValueError):
        return []
    return [e["ray_node_id"] for e in started if "ray_node_id" in e]


def assert_attempts_start_once_after_queued(root: Path) -> None:
    """contract.md §10 + §4: per attempt, ``stage_queued`` then exactly one
    ``stage_attempt_started`` (with the node it started on), closed exactly once."""
    evs = events(root)
    assert not list(check_attempts_closed(evs))
    for queued in (e for e in evs if e["event"] == "stage_queued"):
        starts = [
            e
            for e in evs
            if e["event"] == "stage_attempt_started" and e["attempt_id"] == queued["attempt_id"]
        ]
        assert len(starts) == 1 and starts[0]["seq"] > queued["seq"]


async def test_linear_pipeline_runs_every_stage_remotely(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    root = tmp_path / "run"
    result = await run_dot(
        tool_pipeline("echo out-$ATTRACTOR_NODE_ID; echo err >&2", "hostname > host.txt; echo two"),
        root,
    )
    assert result.status == "success"
    assert (root / "t0" / "stdout.log").read_text() == "out-t0\n"
    assert (root / "t0" / "stderr.log").read_text() == "err\n"
    assert (root / "t1" / "stdout.log").read_text() == "two\n"
    assert read_json(root / "t1" / "status.json")["outcome"] == "success"
    # Each stage was queued, then started on a worker node (never the 0-CPU head).
    assert len(named(root, "stage_queued")) == 2
    assert set(remote_nodes(root)) <= cluster.worker_ids()
    assert len(remote_nodes(root)) == 2
    started = [e for e in named(root, "stage_attempt_started") if e["node_id"] in ("t0", "t1")]
    assert all(e["host"] and e["queued_s"] >= 0 for e in started)
    assert_attempts_start_once_after_queued(root)
    assert_envelope_invariants(root)


class _SpecRecorder:
    """Stands in for the executor's Ray task handle and keeps what each submission carried."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.specs: list[dict[str, Any]] = []

    def options(self, **options: Any) -> _SpecRecorder:
        return _SpecRecorder._Bound(self, self.task.options(**options))  # type: ignore[return-value]

    class _Bound:
        def __init__(self, recorder: _SpecRecorder, task: Any) -> None:
            self.recorder, self.task = recorder, task

        def remote(self, spec: dict[str, Any]) -> Any:
            self.recorder.specs.append(spec)
            return self.task.remote(spec)


#: A stage that uses its stage dir the way stages do: a status file, an artifact in a
#: subdirectory, and its paths on stdout.
_STAGE_DIR_USER = (
    "mkdir -p $ATTRACTOR_STAGE_DIR/out && echo made-remotely > $ATTRACTOR_STAGE_DIR/out/a.txt; "
    """echo '{"outcome": "partial_success", "notes": "from the node"}' > $ATTRACTOR_STATUS_PATH; """
    "echo stage=$ATTRACTOR_STAGE_DIR; echo root=$ATTRACTOR_LOGS_ROOT"
).replace('"', '\\"')


async def test_the_remote_side_writes_nothing_under_the_logs_root(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """contract.md §10: no shared filesystem for the logs root. The task's arguments carry no
    path under it, the stage sees node-local paths, and the driver writes what the stage
    produced (status file, artifact, the tool wrapper's journal) where a local run has it."""
    recorder = _SpecRecorder(executor._stream)
    monkeypatch.setattr(executor, "_stream", recorder)
    root = tmp_path / "run"
    result = await run_dot(tool_pipeline(_STAGE_DIR_USER, "echo next"), root)
    assert result.status == "success"
    assert len(recorder.specs) == 2
    for spec in recorder.specs:
        sent = json.dumps({k: v for k, v in spec.items() if k != "inputs"})
        assert str(root) not in sent  # tmp_path is absolute
    stdout = (root / "t0" / "stdout.log").read_text()
    seen = dict(line.split("=", 1) for line in stdout.splitlines())
    assert not seen["stage"].startswith(str(root)) and seen["stage"].endswith("/t0")
    assert not seen["root"].startswith(str(root))
    # What the stage wrote on the node is in the driver's stage dir, as after a local run.
    assert (root / "t0" / "out" / "a.txt").read_text() == "made-remotely\n"
    assert (root / "t0" / ".tool-exit").read_text() == "0\n"
    assert (root / ".tool-claims").is_dir() and len(list((root / ".tool-claims").iterdir())) == 2
    decision = named(root, "status_ingestion_decision")[0]
    assert decision["source"] == "canonical"
    finished = [e for e in named(root, "stage_attempt_finished") if e["node_id"] == "t0"]
    assert finished[0]["status"] == "partial_success"
    assert read_json(root / "t0" / "status.json")["notes"] == "from the node"
    assert (root / "t1" / "stdout.log").read_text() == "next\n"


async def test_forty_branch_fanout_spreads_over_both_worker_nodes(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    branches = "\n".join(
        f'par -> b{i} -> join\n b{i} [shape=parallelogram, tool_command="sleep 0.2; echo {i}"]'
        for i in range(40)
    )
    source = f"""digraph p {{ start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component, max_parallel=40]; join [shape=tripleoctagon]
        start -> par
        {branches}
        join -> done }}"""
    root = tmp_path / "run"
    result = await run_dot(source, root)
    assert result.status == "success"
    assert len(remote_nodes(root)) == 40
    assert {e["status"] for e in named(root, "stage_attempt_finished")} == {"success"}
    assert set(remote_nodes(root)) == cluster.worker_ids()  # both nodes did work
    assert_attempts_start_once_after_queued(root)


async def test_silent_remote_stage_trips_the_watchdog(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    marker = f"atr-ray-{uuid.uuid4().hex}"
    root = tmp_path / "run"
    result = await run_dot(
        tool_pipeline(f"exec -a {marker} sleep 60"), root, stall_timeout=1.5, kill_grace=1.0
    )
    final = read_json(root / "final.json")
    assert (result.status, final["exit_path"]) == ("fail", "watchdog")
    assert remote_nodes(root)
    assert_attempts_start_once_after_queued(root)
    await _no_survivors(marker)


async def test_busy_remote_stage_keeps_the_run_alive(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    root = tmp_path / "run"
    busy = "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick $i; sleep 0.3; done"
    result = await run_dot(tool_pipeline(busy), root, stall_timeout=1.5)
    assert result.status == "success"
    assert (root / "t0" / "stdout.log").read_text().count("tick") == 10


async def test_executor_resources_pass_through_to_ray_scheduling(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    root = tmp_path / "run"
    special = cluster.special_id()
    attrs = ', executor.resources="{\\"special\\": 1}"'
    result = await run_dot(tool_pipeline("echo a", "echo b", attrs=attrs), root)
    assert result.status == "success"
    assert remote_nodes(root) == [special, special]


async def test_an_attempt_no_node_can_take_fails_as_transient_infra(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Queued longer than the stall timeout: not silence (the watchdog stays quiet), and no
    heartbeat — the attempt has not started; the queue timeout fails it."""
    root = tmp_path / "run"
    attrs = ', executor.resources="{\\"nowhere\\": 1}"'
    impatient = RayExecutor(ExecutorSettings(kind="ray", queue_timeout=2.0))
    with use_executor(impatient):
        result = await run_dot(
            tool_pipeline("echo never", attrs=attrs),
            root,
            stall_timeout=1.0,
            heartbeat_interval=0.3,
        )
    status = read_json(root / "t0" / "status.json")
    assert result.status == "fail"
    assert read_json(root / "final.json")["exit_path"] == "stage_failed"
    assert "could not place the attempt" in status["failure_reason"]
    finished = named(root, "stage_attempt_finished")[-1]
    assert finished["failure_class"] == "transient_infra"
    names = [e["event"] for e in events(root) if e.get("node_id") == "t0"]
    assert names[:4] == [
        "stage_started",
        "stage_queued",
        "stage_attempt_started",
        "stage_attempt_finished",
    ]
    assert not named(root, "watchdog_timeout") and not named(root, "stage_heartbeat")
    assert "ray_node_id" not in named(root, "stage_attempt_started")[0]
    assert_attempts_start_once_after_queued(root)


async def test_killed_worker_node_fails_the_attempt_and_the_retry_runs_on_the_other_node(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    marker = f"atr-ray-{uuid.uuid4().hex}"
    root = tmp_path / "run"
    command = f"if [ $ATTRACTOR_ATTEMPT = 1 ]; then exec -a {marker} sleep 60; fi; echo second"
    source = tool_pipeline(command, attrs=", max_retries=2")
    async with trio.open_nursery() as nursery:
        outcome: list[Any] = []

        async def run() -> None:
            outcome.append(await run_dot(source, root, kill_grace=1.0))

        nursery.start_soon(run)
        with trio.fail_after(30):
            while not remote_nodes(root) or not marked_processes(marker):  # noqa: ASYNC110
                await trio.sleep(0.05)
        first = remote_nodes(root)[0]
        await trio.to_thread.run_sync(cluster.kill, first)
    cluster.replace_killed()
    assert outcome[0].status == "success"
    attempts = named(root, "stage_attempt_finished")
    failed = next(a for a in attempts if a["node_id"] == "t0")
    assert failed["failure_class"] == "transient_infra"
    assert "ray node lost" in failed["failure_reason"]
    nodes = remote_nodes(root)
    assert len(nodes) == 2 and nodes[1] != first
    assert (root / "t0" / "stdout.log").read_text() == "second\n"
    await _no_survivors(marker)


async def test_a_cli_agent_stage_runs_remotely(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor
) -> None:
    agent = shlex.join(["bash", str(AGENTS / "answer.sh"), "{prompt_file}", "{model}"])
    backend = CliAgentBackend(ProviderConfig(name="fake", kind="cli", command=agent, model="m"))
    root = tmp_path / "run"
    source = """digraph p { start [shape=Mdiamond]; exit [shape=Msquare]
        plan [prompt="Write the plan"]; start -> plan -> exit }"""
    result = await run_dot(source, root, backend=backend)
    assert result.status == "success"
    assert len(remote_nodes(root)) == 1
    assert "answer: " in (root / "plan" / "stdout.log").read_text()
    assert "thinking about" in (root / "plan" / "stderr.log").read_text()


AGENT_KEY = "sk-test-RAYAGENT-77c1"
AGENT_DOT = """digraph p { start [shape=Mdiamond]; exit [shape=Msquare]
  work [prompt="write notes.txt and run a command"%s]
  start -> work -> exit }"""


async def run_agent(
    tmp_path: Path, server: FakeServer, attrs: str = "", **kwargs: Any
) -> tuple[Any, Path, Path]:
    """An agent-loop stage against the fake Anthropic API; the key only in the backend's env
    (neither the driver's nor a worker's environment has ``A_KEY``)."""
    assert "A_KEY" not in os.environ
    backend = anthropic_backend_keyed_in_its_env(server.base_url, AGENT_KEY, timeout=60)
    workdir, root = tmp_path / "repo", tmp_path / "run"
    workdir.mkdir(parents=True)
    try:
        result = await run_dot(AGENT_DOT % attrs, root, backend=backend, workdir=workdir, **kwargs)
    finally:
        await backend.aclose()
    return result, root, workdir


async def test_an_agent_loop_attempt_runs_whole_on_a_worker_node(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor, fake_server: FakeServer
) -> None:
    proof = "echo guard=$(tr '\\0' ' ' < /proc/$PPID/cmdline); echo worker=$(cut -d' ' -f4 /proc/$PPID/stat)"
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("write_file", {"file_path": "notes.txt", "content": "hello\n"})),
        tool_turn(("shell", {"command": proof, "timeout_ms": 20000})),
        tool_turn(("report_status", {"outcome": "success"})),
        text_turn("notes written"),
    )
    hook = ', tool_hooks.post="echo hooked $ATTRACTOR_TOOL_NAME"'
    result, root, workdir = await run_agent(tmp_path, fake_server, hook)
    assert result.status == "success", result.failure_reason
    [start] = [e for e in named(root, "stage_attempt_started") if e["node_id"] == "work"]
    assert start["ray_node_id"] in cluster.worker_ids() and start["queued_s"] >= 0
    assert_attempts_start_once_after_queued(root)
    answer = tool_results(fake_server.requests[2].json())[0]["content"]
    assert "_guard.py" in answer  # the shell ran on the node, under the orphan guard
    worker = int(answer.rsplit("worker=", 1)[1].split()[0])
    assert worker != os.getpid()  # … whose parent is the Ray worker, not this driver
    assert (workdir / "notes.txt").read_text() == "hello\n"
    stage = root / "work"
    assert (stage / "response.md").read_text() == "notes written"
    assert read_json(stage / "status.json")["outcome"] == "success"
    assert read_json(stage / "transcript.json")["stop_reason"] == "completed"
    assert read_json(stage / "provider_used.json")["provider"] == "a"
    assert "guard=" in (stage / "tools" / "shell-1.stdout").read_text()
    assert "hooked shell" in (stage / "hooks" / "stdout.log").read_text()  # hooks ran there too
    calls = [c["tool"] for c in named(root, "agent_tool_call")]
    assert calls == ["write_file", "shell", "report_status"]
    assert {r.headers.get("x-api-key") for r in fake_server.requests} == {AGENT_KEY}
    assert_in_no_file(root, AGENT_KEY)
    assert_envelope_invariants(root)


async def test_upload_workdir_an_agent_session_works_in_the_node_s_copy(
    tmp_path: Path, cluster: Cluster, uploading: RayExecutor, fake_server: FakeServer
) -> None:
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("write_file", {"file_path": "notes.txt", "content": "hello\n"})),
        tool_turn(("shell", {"command": "pwd; cat notes.txt"})),
        text_turn("done"),
    )
    result, _root, workdir = await run_agent(tmp_path, fake_server)
    assert result.status == "success", result.failure_reason
    answer = tool_results(fake_server.requests[2].json())[0]["content"]
    where = answer.split()[0]
    assert where != str(workdir) and "hello" in answer  # it ran in the node's copy …
    assert (workdir / "notes.txt").read_text() == "hello\n"  # … and its change came back


async def test_a_provider_error_in_a_remote_agent_session_keeps_its_failure_class(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor, fake_server: FakeServer
) -> None:
    fake_server.script(fa.MESSAGES_PATH, fa.error_reply(401, "authentication_error", "bad key"))
    result, root, _ = await run_agent(tmp_path, fake_server)
    assert (result.status, result.failure_reason) == ("fail", "a: HTTP 401: bad key")
    [end] = [e for e in named(root, "stage_attempt_finished") if e["node_id"] == "work"]
    assert end["failure_class"] == "deterministic"
    assert len(remote_nodes(root)) == 1


async def test_a_silent_remote_agent_session_trips_the_watchdog_a_streaming_one_does_not(
    tmp_path: Path, cluster: Cluster, executor: RayExecutor, fake_server: FakeServer
) -> None:
    pieces = tuple(f"word{i} " for i in range(12))  # ~3 s of stream data, 0.25 s apart
    streaming = fa.stream_reply(fa.stream_events([fa.TextBlock(pieces)]), 0.25)
    fake_server.script(fa.MESSAGES_PATH, streaming, Reply(hang=True))  # busy run, then silent
    busy, root, _ = await run_agent(tmp_path / "busy", fake_server, stall_timeout=2.0)
    assert busy.status == "success", busy.failure_reason
    assert (root / "work" / "response.md").read_text() == "".join(pieces)
    silent, root, _ = await run_agent(
        tmp_path / "silent", fake_server, stall_timeout=2.0, kill_grace=1.0
    )
    assert (silent.status, read_json(root / "final.json")["exit_path"]) == ("fail", "watchdog")
    assert remote_nodes(root)


@pytest.mark.parametrize("waits_on", ["model", "shell"])
async def test_a_timed_out_remote_agent_session_ends_with_no_survivors(
    tmp_path: Path,
    cluster: Cluster,
    executor: RayExecutor,
    fake_server: FakeServer,
    waits_on: str,
) -> None:
    marker, ran = f"atr-agent-{uuid.uuid4().hex}", tmp_path / "ran"
    command = f"touch {ran}; exec -a {marker} sleep 300"
    if waits_on == "model":  # the command ends (its group with it), then the model hangs
        command = f"(exec -a {marker}-bg sleep 300 &); touch {ran}"
    fake_server.script(
        fa.MESSAGES_PATH,
        tool_turn(("shell", {"command": command, "timeout_ms": 600000})),
        Reply(hang=True),
    )
    began = time.monotonic()
    # The node timeout counts from submission: leave a loaded machine time to start the task.
    result, root, _ = await run_agent(tmp_path, fake_server, ', timeout="10s"', kill_grace=1.0)
    assert time.monotonic() - began < 10 + 1 + 5 + 5
    assert result.status == "fail"
    assert ran.exists()  # it got that far on the node
    assert len(fake_server.requests) == (2 if waits_on == "model" else 1)
    assert not marked_processes(marker)
    assert not list(check_attempts_closed(events(root)))


@pytest.fixture
def uploading(cluster: Cluster) -> Iterator[RayExecutor]:
    """``executor.upload_workdir: true``: stages run in a snapshot of the work directory."""
    ray_executor = RayExecutor(
        ExecutorSettings(kind="ray", queue_timeout=60.0, upload_workdir=True, upload_limit_mb=1)
    )
    with use_executor(ray_executor):
        yield ray_executor


async def test_upload_workdir_runs_the_stage_in_a_snapshot_and_brings_its_changes_back(
    tmp_path: Path, cluster: Cluster, uploading: RayExecutor
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.txt").write_text("hello\n")
    (work / "old.txt").write_text("to delete")
    (work / ".gitignore").write_text("secret.env\n")
    (work / "secret.env").write_text("TOKEN=never-shipped")
    root = work / "runs" / "r1"  # the run dir inside the work directory: never shipped
    first = (
        "pwd > where.txt; echo $ATTRACTOR_WORKDIR > env-workdir.txt; ls -a > listing.txt; "
        "ls -A runs > in-runs.txt; mkdir -p runs/r1; echo no > runs/r1/forged.txt; "
        "tr a-z A-Z < input.txt > upper.txt; rm old.txt; mkdir -p out; echo x > out/new.txt"
    )
    result = await run_dot(tool_pipeline(first, "cat upper.txt"), root, workdir=work)
    assert result.status == "success"
    where = (work / "where.txt").read_text().strip()
    assert where != str(work) and not where.startswith(str(work) + "/")  # not the driver's dir
    assert (work / "env-workdir.txt").read_text().strip() == where
    listing = (work / "listing.txt").read_text().split()
    assert "input.txt" in listing and "secret.env" not in listing
    assert (work / "in-runs.txt").read_text() == ""  # the run dir stayed behind,
    assert not (root / "forged.txt").exists()  # and nothing the stage wrote there comes back
    assert (work / "upper.txt").read_text() == "HELLO\n"
    assert (work / "out" / "new.txt").read_text() == "x\n"
    assert not (work / "old.txt").exists()
    assert (work / "secret.env").read_text() == "TOKEN=never-shipped"
    # The next stage's snapshot has the first stage's changes; logs stream back as before.
    assert (root / "t1" / "stdout.log").read_text() == "HELLO\n"
    assert set(remote_nodes(root)) <= cluster.worker_ids() and len(remote_nodes(root)) == 2


async def test_upload_workdir_a_cli_agent_s_workdir_word_is_the_node_s_copy(
    tmp_path: Path, cluster: Cluster, uploading: RayExecutor
) -> None:
    """``{workdir}`` in a provider command points into the copy, like its cwd: what the agent
    writes there comes back as the patch."""
    work = tmp_path / "work"
    work.mkdir()
    script = 'pwd > "$1/pwd.txt"; echo "$1" > "$1/arg.txt"'
    agent = shlex.join(["bash", "-c", script, "agent", "{workdir}"])
    backend = CliAgentBackend(ProviderConfig(name="fake", kind="cli", command=agent, model="m"))
    source = """digraph p { start [shape=Mdiamond]; exit [shape=Msquare]
        plan [prompt="Write the plan"]; start -> plan -> exit }"""
    result = await run_dot(source, tmp_path / "run", workdir=work, backend=backend)
    assert result.status == "success"
    where = (work / "pwd.txt").read_text().strip()  # written in the copy, came back
    assert where != str(work)
    assert (work / "arg.txt").read_text().strip() == where


async def test_upload_workdir_branches_writing_one_file_the_later_patch_fails_deterministic(
    tmp_path: Path, cluster: Cluster, uploading: RayExecutor
) -> None:
    work, barrier = tmp_path / "work", tmp_path / "barrier"
    work.mkdir()
    barrier.mkdir()
    # Both running (so both snapshots taken) before either writes: the conflict is certain.
    both = f"touch {barrier}/$ATTRACTOR_NODE_ID; for i in $(seq 400); do "
    both += f"[ -e {barrier}/left ] && [ -e {barrier}/right ] && break; sleep 0.05; done"
    branches = "\n".join(
        f"par -> {b} -> join\n {b} [shape=parallelogram, max_retries=2, "
        f'tool_command="{both}; echo {b} > same.txt; echo {b} > {b}.txt"]'
        for b in ("left", "right")
    )
    source = f"""digraph p {{ start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        start -> par
        {branches}
        join -> done }}"""
    root = tmp_path / "run"
    await run_dot(source, root, workdir=work)
    finished = {e["node_id"]: e for e in named(root, "stage_attempt_finished")}
    failed = [n for n in ("left", "right") if finished[n]["status"] == "fail"]
    assert len(failed) == 1, finished  # patches apply in attempt-end order: the later conflicts
    loser, winner = failed[0], ({"left", "right"} - set(failed)).pop()
    assert finished[loser]["failure_class"] == "deterministic"  # not retried
    assert "conflicting: same.txt" in finished[loser]["failure_reason"]
    starts = [e for e in named(root, "stage_attempt_started") if e["node_id"] == loser]
    assert len(starts) == 1
    assert sorted(os.listdir(barrier)) == ["left", "right"]
    assert (work / "same.txt").read_text() == f"{winner}\n"
    assert (work / f"{winner}.txt").exists() and not (work / f"{loser}.txt").exists()


async def test_upload_workdir_a_canceled_attempt_brings_nothing_back(
    tmp_path: Path, cluster: Cluster, uploading: RayExecutor
) -> None:
    work, ran = tmp_path / "work", tmp_path / "ran"
    work.mkdir()
    root = tmp_path / "run"
    # The node timeout counts from submission: leave a loaded machine time to start the task.
    stage = f"echo x > partial.txt; touch {ran}; sleep 30"
    slow = tool_pipeline(stage, attrs=', timeout="5s"')
    result = await run_dot(slow, root, workdir=work, kill_grace=1.0)
    assert result.status == "fail"
    assert ran.exists()  # it ran, and wrote in its copy
    assert not (work / "partial.txt").exists()


async def test_upload_workdir_over_the_limit_fails_the_attempt_naming_the_size(
    tmp_path: Path, cluster: Cluster, uploading: RayExecutor
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "big.bin").write_bytes(b"\0" * (2 * 2**20))
    root = tmp_path / "run"
    result = await run_dot(tool_pipeline("echo never"), root, workdir=work)
    assert result.status == "fail"
    finished = named(root, "stage_attempt_finished")[-1]
    assert finished["failure_class"] == "deterministic"
    assert "big.bin (2.0 MiB)" in finished["failure_reason"]
    assert not named(root, "stage_queued")  # refused before anything was submitted


def start_driver(
    command: str, dot: Path, root: Path, cluster: Cluster, *extra: str
) -> subprocess.Popen[bytes]:
    """``attractor-trio run|resume`` with ``--executor ray`` as a subprocess (the Ray driver)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    target = [str(dot), "--logs-root", str(root)] if command == "run" else [str(root)]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attractor_trio",
            command,
            *target,
            "--executor",
            "ray",
            "--ray-address",
            cluster.address,
            "--kill-grace",
            "1s",
            "--quiet",
            *extra,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_upload_workdir_from_the_run_config_with_a_git_workspace_commits_the_remote_change(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Black box: run config ``executor: {kind: ray, upload_workdir: true}``, ``--workspace git``;
    the remote stage's file arrives in the run's worktree and so in the attempt's commit.

    The worktree lies inside the logs root: the stage runs in the node's copy of it (not in the
    logs-root mirror, not in the driver's worktree), and its stage-dir files still come back."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    (repo / "README").write_text("hello\n")
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)
    config = tmp_path / "c.yaml"
    config.write_text("executor: {kind: ray, upload_workdir: true}\n")
    dot = tmp_path / "p.dot"
    stage = (
        "test ! -e .git && cat README > copy.txt && pwd > where.txt && "
        "echo $ATTRACTOR_WORKDIR > workdir.txt && echo made > $ATTRACTOR_STAGE_DIR/artifact.txt"
    )
    dot.write_text(tool_pipeline(stage))
    root = tmp_path / "run"
    proc = start_driver(
        "run", dot, root, cluster, "--config", str(config), "--workdir", str(repo),
        "--workspace", "git", "--run-id", "r1",
    )  # fmt: skip
    stderr = proc.communicate(timeout=90)[1]
    assert proc.returncode == 0, stderr.decode(errors="replace")
    shown = subprocess.run(
        ["git", "show", "attractor/r1:copy.txt"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert shown.stdout == "hello\n"
    assert not (repo / "copy.txt").exists()  # the user's checkout is never touched

    def committed(name: str) -> str:
        show = ["git", "show", f"attractor/r1:{name}"]
        return subprocess.run(show, cwd=repo, env=env, capture_output=True, text=True).stdout

    where, worktree = committed("where.txt").strip(), str(root / "worktree")
    assert where != worktree and not where.startswith(str(root) + "/")
    copy = Path(where)  # the node's copy in the attempt's scratch dir, not its logs-root mirror
    assert copy.name == "workdir" and copy.parent.name.startswith("attractor-remote-"), where
    assert committed("workdir.txt").strip() == where
    assert (root / "t0" / "artifact.txt").read_text() == "made\n"  # shipped back, written here


def wait_for_processes(proc: subprocess.Popen[bytes], marker: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(marked_processes(marker)) < count:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the remote stage never started"
        time.sleep(0.05)


def test_sigint_leaves_no_process_on_any_node(tmp_path: Path, cluster: Cluster) -> None:
    marker = f"atr-ray-{uuid.uuid4().hex}"
    dot = tmp_path / "p.dot"
    dot.write_text(
        tool_pipeline(f"exec -a {marker}-gc sleep 300 & exec -a {marker} sleep 300", "echo no")
    )
    root = tmp_path / "run"
    proc = start_driver("run", dot, root, cluster)
    try:
        wait_for_processes(proc, marker, 2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "canceled"
    assert not marked_processes(marker)  # gone before the driver wrote final.json and exited


def test_a_killed_driver_takes_its_remote_stages_along_and_resume_reruns_them(
    tmp_path: Path, cluster: Cluster
) -> None:
    """contract.md §10: when the driver dies, its remote tasks die with it (Ray ends the dead
    job's workers; the guard's sentinel ends the stage's group), and ``resume`` re-runs them as
    new attempts (its journal lives in the node's mirror and never reached the driver)."""
    marker = f"atr-ray-{uuid.uuid4().hex}"
    dot = tmp_path / "p.dot"
    flag = tmp_path / "ran-once"
    first_time = f"touch {flag}; exec -a {marker}-gc sleep 300 & exec -a {marker} sleep 300"
    dot.write_text(tool_pipeline(f"if [ ! -e {flag} ]; then {first_time}; fi; echo again"))
    root = tmp_path / "run"
    proc = start_driver("run", dot, root, cluster)
    resumed: subprocess.Popen[bytes] | None = None
    try:
        wait_for_processes(proc, marker, 2)
        # The wrapper's own command line holds the marker too: wait for the stage's two
        # renamed sleeps (argv[0]) and its flag, or the kill may land before the first run
        # marked itself and the resume would run the 300 s sleep again.
        _wait_for(
            lambda: flag.exists() and _argv0s(marker) >= {marker, f"{marker}-gc"},
            "the stage's own processes",
        )
        proc.kill()  # SIGKILL: nothing in the driver runs any more
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not marked_processes(marker), "a dead driver's remote stage survived"
        assert not (root / "final.json").exists()
        # The journal never reached the driver: no remote pid for a resume to look at.
        assert not list((root / "t0").glob(".tool-*"))
        assert not list((root / ".tool-claims").glob("*"))
        resumed = start_driver("resume", dot, root, cluster)
        stderr = resumed.communicate(timeout=90)[1]
        assert resumed.returncode == 0, stderr.decode(errors="replace")
    finally:
        for process in (proc, resumed):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert json.loads((root / "final.json").read_text())["status"] == "success"
    starts = [e for e in named(root, "stage_attempt_started") if e["node_id"] == "t0"]
    assert len({e["attempt_id"] for e in starts}) == 2  # the interrupted one re-ran as a new one
    assert not [e for e in named(root, "stage_attempt_finished") if e.get("adopted")]
    assert (root / "t0" / "stdout.log").read_text().endswith("again\n")
    assert len(remote_nodes(root)) == 2


def _argv0s(marker: str) -> set[str]:
    """The argv[0] of every running process that carries ``marker`` (``exec -a`` sets it)."""
    return {cmdline.split(" ", 1)[0] for _, cmdline in marked_processes(marker)}


def _cli(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the address must come from the flag, then the manifest
    return subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(check: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_detached_ray_run_interrupted_by_sigint_resumes_on_the_cluster(
    tmp_path: Path, cluster: Cluster
) -> None:
    """contract.md §10: ``resume`` reuses ``--executor ray --ray-address`` from the manifest and
    re-runs the interrupted remote attempt as a new attempt on the cluster."""
    marker = f"atr-ray-{uuid.uuid4().hex}"
    dot = tmp_path / "p.dot"
    first_time = f"if [ ! -e started ]; then touch started; exec -a {marker} sleep 300; fi"
    dot.write_text(tool_pipeline(f"{first_time}; echo second run", "echo after"))
    root = tmp_path / "run"
    flags = ["--executor", "ray", "--ray-address", cluster.address, "--kill-grace", "1s"]
    starter = _cli(
        "run", str(dot), "--logs-root", str(root), "--workdir", str(tmp_path), "--detach", *flags
    )
    assert starter.wait(timeout=60) == 0, starter.stderr.read() if starter.stderr else ""
    started = tmp_path / "started"  # the marker is on the wrapper's command line before that
    _wait_for(lambda: started.exists() and marked_processes(marker), "the stage never started")
    owner = json.loads((root / "run.lock.json").read_text())["pid"]
    os.kill(owner, signal.SIGINT)
    _wait_for(lambda: (root / "final.json").exists(), "the interrupted run never finalized", 30)
    assert read_json(root / "final.json")["status"] == "canceled"
    assert not marked_processes(marker)  # gone before final.json, also when canceled at once

    resumer = _cli("resume", str(root), "--quiet")
    assert resumer.wait(timeout=60) == 0, resumer.stderr.read() if resumer.stderr else ""
    assert read_json(root / "final.json")["status"] == "success"
    starts = [e for e in named(root, "stage_attempt_started") if e["node_id"] == "t0"]
    assert len(starts) == 2 and starts[0]["attempt_id"] != starts[1]["attempt_id"]
    assert {e["ray_node_id"] for e in starts} <= cluster.worker_ids()  # both on the cluster
    assert (root / "t0" / "stdout.log").read_text() == "second run\n"
    assert (root / "t1" / "stdout.log").read_text() == "after\n"


async def _no_survivors(marker: str, within: float = 8.0) -> None:
    """The stage's processes are gone (on every node: they all live on this machine)."""
    with trio.move_on_after(within):
        while marked_processes(marker):  # noqa: ASYNC110 (polling /proc)
            await trio.sleep(0.05)
    assert not marked_processes(marker)
