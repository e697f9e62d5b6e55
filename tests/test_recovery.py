"""Recovery (contract.md §10): every interrupted run can be resumed, through the CLI.

Each interruption kind — cancel (SIGTERM), watchdog, internal error, SIGKILL — is resumed to
success: earlier ``final.json`` kept as ``final-<k>.json``, a ``pipeline_resumed`` event opening
each new segment (one terminal event per segment), completed stages not run again. A failed
run needs ``--from``; a successful one has nothing to resume.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import attractor_trio
from attractor_trio import Graph
from attractor_trio.recovery import DIED_REASON, segments

from .helpers import assert_envelope_invariants, events, graph_of, read_json

# `b` waits (silently) until the file `go` exists; every stage appends its id to the ledger.
PIPELINE = """digraph rec {
    node [shape=parallelogram]
    start [shape=Mdiamond]
    done [shape=Msquare]
    a [tool_command="echo a >> ledger.txt"]
    b [tool_command="echo b >> ledger.txt; while [ ! -f go ]; do sleep 0.05; done"]
    c [tool_command="echo c >> ledger.txt; test -f pass"]
    start -> a -> b -> c -> done
}
"""


def cli(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attractor_trio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def start(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    (tmp_path / "p.dot").write_text(PIPELINE)
    args = ["run", "p.dot", "--logs-root", "run", "--workdir", str(tmp_path), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_b(tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while "b" not in _ledger(tmp_path):
        assert time.monotonic() < deadline, "stage b never started"
        time.sleep(0.02)


def _ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.txt"
    return path.read_text().split() if path.exists() else []


def finish(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Let every stage pass, then resume; the run must succeed."""
    (tmp_path / "go").touch()
    (tmp_path / "pass").touch()
    done = cli(tmp_path, "resume", "run", "--quiet", *extra)
    assert done.returncode == 0, done.stderr
    return done


def assert_segments(root: Path, kinds: list[str]) -> None:
    """One segment per process, each with one terminal event, and ``final-<k>.json`` for each
    earlier one (their exit paths: ``kinds``)."""
    assert_envelope_invariants(root)
    parts = segments(events(root))
    assert len(parts) == len(kinds) + 1
    for k, kind in enumerate(kinds, start=1):
        assert read_json(root / f"final-{k}.json")["exit_path"] == kind
        resumed = parts[k][0]
        assert resumed["event"] == "pipeline_resumed"
        assert resumed["previous_final"] == f"final-{k}.json"
    assert read_json(root / "final.json")["status"] == "success"


@pytest.mark.slow
def test_resume_a_canceled_run(tmp_path: Path) -> None:
    proc = start(tmp_path)
    wait_for_b(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    finish(tmp_path, "--set", "note=resumed")
    assert _ledger(tmp_path) == ["a", "b", "b", "c"]  # b was interrupted: a new attempt
    assert read_json(tmp_path / "run" / "checkpoint.json")["context"]["note"] == "resumed"
    assert_segments(tmp_path / "run", ["canceled"])
    assert not (tmp_path / "run" / "run.lock.json").exists()


@pytest.mark.slow
def test_resume_a_stalled_run_reuses_its_stall_timeout(tmp_path: Path) -> None:
    proc = start(tmp_path, "--stall-timeout", "1s", "--kill-grace", "1s")
    assert proc.wait(timeout=30) == 1
    assert read_json(tmp_path / "run" / "final.json")["exit_path"] == "watchdog"
    # No --stall-timeout: the run's own 1s applies (the default, 10m, would hang here).
    again = cli(tmp_path, "resume", "run", "--quiet", timeout=30)
    assert again.returncode == 1, again.stderr
    finish(tmp_path)
    assert _ledger(tmp_path) == ["a", "b", "b", "b", "c"]
    assert_segments(tmp_path / "run", ["watchdog", "watchdog"])


@pytest.mark.slow
def test_resume_a_killed_run_closes_the_dead_segment(tmp_path: Path) -> None:
    proc = start(tmp_path)
    wait_for_b(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    status = cli(tmp_path, "status", "run")
    assert status.returncode == 0
    assert "interrupted" in status.stdout and "attractor-trio resume run" in status.stdout
    report = json.loads(cli(tmp_path, "status", "run", "--json").stdout)
    assert report["state"] == "interrupted"
    finish(tmp_path)
    assert _ledger(tmp_path) == ["a", "b", "c"]  # the orphaned b was adopted, not re-run
    root = tmp_path / "run"
    assert_segments(root, ["internal_error"])
    assert read_json(root / "final-1.json")["failure_reason"] == DIED_REASON
    assert not (root / "run.lock.json").exists()


@pytest.mark.slow
def test_a_failed_run_needs_from_and_a_successful_one_has_nothing_to_resume(
    tmp_path: Path,
) -> None:
    (tmp_path / "go").touch()
    proc = start(tmp_path)
    assert proc.wait(timeout=30) == 1  # c fails: no `pass` file
    refused = cli(tmp_path, "resume", "run")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--from NODE" in refused.stderr
    assert "Traceback" not in refused.stderr
    (tmp_path / "pass").touch()
    again = cli(tmp_path, "resume", "run", "--from", "c", "--quiet")
    assert again.returncode == 0, again.stderr
    assert _ledger(tmp_path) == ["a", "b", "c", "c"]
    assert_segments(tmp_path / "run", ["stage_failed"])
    nothing = cli(tmp_path, "resume", "run")
    assert nothing.returncode == 0 and "nothing to resume" in nothing.stderr
    unknown = cli(tmp_path, "resume", "run", "--from", "nope")
    assert unknown.returncode == 2 and "no node 'nope'" in unknown.stderr


@pytest.mark.slow
def test_resume_from_a_node_of_a_successful_run_runs_it_again(tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    (tmp_path / "pass").touch()
    assert start(tmp_path).wait(timeout=30) == 0
    again = cli(tmp_path, "resume", "run", "--from", "b", "--quiet")
    assert again.returncode == 0, again.stderr
    assert _ledger(tmp_path) == ["a", "b", "c", "b", "c"]
    assert_segments(tmp_path / "run", ["completed"])


async def test_resume_a_run_that_hit_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attractor_trio.scopes.run import RunScope

    graph = graph_of(PIPELINE.replace("while [ ! -f go ]; do sleep 0.05; done", "true"))
    (tmp_path / "pass").touch()
    real = RunScope.save_checkpoint

    def broken(self: RunScope, node_id: str) -> None:
        if node_id == "b":
            raise RuntimeError("disk on fire")
        real(self, node_id)

    monkeypatch.setattr(RunScope, "save_checkpoint", broken)
    root = tmp_path / "run"
    first = await attractor_trio.run(graph, logs_root=root, workdir=tmp_path)
    assert first.exit_path == "internal_error"
    monkeypatch.setattr(RunScope, "save_checkpoint", real)
    result = await attractor_trio.resume(graph, logs_root=root, workdir=tmp_path)
    assert result.status == "success"
    assert _ledger(tmp_path) == ["a", "b", "c"]  # b finished before the error: adopted
    assert_segments(root, ["internal_error"])


async def test_the_api_never_reuses_a_logs_root_that_holds_a_run(tmp_path: Path) -> None:
    graph = graph_of(PIPELINE.replace("while [ ! -f go ]; do sleep 0.05; done", "true"))
    root = tmp_path / "run"
    await attractor_trio.run(graph, logs_root=root, workdir=tmp_path)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    with pytest.raises(attractor_trio.LogsRootInUseError, match="already holds a run"):
        await attractor_trio.run(graph, logs_root=root, workdir=tmp_path)
    with pytest.raises(attractor_trio.LogsRootInUseError):
        async with attractor_trio.open_run(graph, logs_root=root, workdir=tmp_path):
            pass  # pragma: no cover - never entered
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


@pytest.mark.slow
def test_run_detach_outlives_the_terminal_and_status_follow_reattaches(tmp_path: Path) -> None:
    (tmp_path / "p.dot").write_text(PIPELINE)
    (tmp_path / "pass").touch()
    args = ["run", "p.dot", "--logs-root", "run", "--workdir", str(tmp_path), "--detach"]
    began = time.monotonic()
    detached = cli(tmp_path, *args)
    assert detached.returncode == 0, detached.stderr
    assert time.monotonic() - began < 20
    assert "logs root: run" in detached.stderr and "pid: " in detached.stderr
    pid = int(detached.stderr.split("pid: ")[1].split()[0])
    lock = read_json(tmp_path / "run" / "run.lock.json")
    assert lock["pid"] == pid
    wait_for_b(tmp_path)
    (tmp_path / "go").touch()
    followed = cli(tmp_path, "status", "--follow", "run")
    assert followed.returncode == 0, followed.stderr
    assert read_json(tmp_path / "run" / "final.json")["status"] == "success"
    assert "success" in (tmp_path / "run" / "run.log").read_text()


@pytest.mark.slow
def test_resume_detach_and_status_follow_through_the_segments(tmp_path: Path) -> None:
    proc = start(tmp_path)
    wait_for_b(tmp_path)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    detached = cli(tmp_path, "resume", "run", "--detach")
    assert detached.returncode == 0, detached.stderr
    deadline = time.monotonic() + 30
    while _ledger(tmp_path) != ["a", "b", "b"]:  # the resumed run waits in b again
        assert time.monotonic() < deadline, _ledger(tmp_path)
        time.sleep(0.02)
    follower = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", "status", "--follow", "run", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    (tmp_path / "go").touch()
    (tmp_path / "pass").touch()
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err  # not 130: the first segment's end is not the run's
    followed = [json.loads(line)["event"] for line in out.splitlines()]
    assert followed.count("pipeline_failed") == 1 and followed[-1] == "pipeline_completed"
    assert "pipeline_resumed" in followed
    assert_segments(tmp_path / "run", ["canceled"])


@pytest.mark.slow
def test_status_and_resume_race_after_sigkill_of_an_unreaped_owner(tmp_path: Path) -> None:
    """The killed owner stays a zombie (not reaped) while ``status`` and ``resume`` run at the
    same time: status reports the run interrupted, resume takes the lock over and finishes,
    and no lock is left behind."""
    proc = start(tmp_path)
    wait_for_b(tmp_path)
    proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_bytes().split(b") ")[1][:1] != b"Z":
        assert time.monotonic() < deadline, "the killed owner never became a zombie"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    (tmp_path / "pass").touch()
    command = [sys.executable, "-m", "attractor_trio"]
    resume = subprocess.Popen(
        [*command, "resume", "run", "--quiet"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    statuses = [cli(tmp_path, "status", "run", "--json") for _ in range(3)]
    _, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    for status in statuses:
        assert status.returncode == 0, status.stderr
        # Any state the resumed run passes through, never a wrong terminal one or an error.
        live = ("starting", "running", "finalizing")
        assert json.loads(status.stdout)["state"] in ("interrupted", *live, "success")
    assert not (tmp_path / "run" / "run.lock.json").exists()
    assert _ledger(tmp_path) == ["a", "b", "c"]
    assert proc.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.slow
def test_the_invariant_checker_reads_a_resumed_log_segment_by_segment(tmp_path: Path) -> None:
    from attractor_trio.testing.invariants import (
        check_envelopes,
        check_no_attempt_after_cancel,
        check_terminal,
    )

    proc = start(tmp_path)
    wait_for_b(tmp_path)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    finish(tmp_path)
    log = events(tmp_path / "run")
    assert [e["event"] for e in log].count("pipeline_failed") == 1
    assert list(check_envelopes(log)) == []
    assert list(check_terminal(log)) == []
    assert list(check_no_attempt_after_cancel(log, None)) == []
    assert list(check_terminal(log[:-1])) != []  # the last segment lost its terminal event


def test_sighup_after_the_terminal_closed_still_finalizes(tmp_path: Path) -> None:
    """The console is a terminal that is gone (its master closed: writes fail with EIO) when
    SIGHUP arrives: the run still cancels cleanly — final.json, lock released, exit 129."""
    import os
    import pty

    (tmp_path / "p.dot").write_text(PIPELINE)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", "run", "p.dot", "--logs-root", "run"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        wait_for_b(tmp_path)
    finally:
        os.close(master)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=30) == 129
    root = tmp_path / "run"
    final = read_json(root / "final.json")
    assert final["status"] == "canceled" and "SIGHUP" in final["failure_reason"]
    assert not (root / "run.lock.json").exists()
    assert_envelope_invariants(root)


class _Counting:
    """A stage handler without crash adoption of its own: counts its executions."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def execute(self, node: Any, context: Any, graph: Any, logs_root: Path) -> Any:
        self.calls.append(node.id)
        return attractor_trio.Outcome(
            attractor_trio.StageStatus.SUCCESS, context_updates={f"seen.{node.id}": True}
        )


async def _die_between_x_and_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Graph, Path, _Counting, Callable[[], None]]:
    """Run ``start -> x -> y -> done`` (counting handlers) with x's checkpoint write failing,
    an internal error after x's finished marker: the engine's death at that point. The last
    item puts the real checkpoint write back."""
    from attractor_trio.scopes.run import RunScope

    graph = graph_of(
        """digraph any { start [shape=Mdiamond]; done [shape=Msquare]
        x [type="count"]; y [type="count"]; start -> x -> y -> done }"""
    )
    counting = _Counting()
    real = RunScope.save_checkpoint

    def broken(self: RunScope, node_id: str) -> None:
        if node_id == "x":
            raise RuntimeError("disk on fire")
        real(self, node_id)

    monkeypatch.setattr(RunScope, "save_checkpoint", broken)
    root = tmp_path / "run"
    first = await attractor_trio.run(graph, logs_root=root, handlers={"count": counting})
    assert first.exit_path == "internal_error" and counting.calls == ["x"]
    return graph, root, counting, lambda: monkeypatch.setattr(RunScope, "save_checkpoint", real)


async def test_a_finished_stage_of_any_handler_is_adopted_not_executed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine dies between a stage's finished marker and its checkpoint (here: the
    checkpoint write fails, an internal error): the resume adopts the stage's outcome — its
    context updates included — instead of executing it again."""
    graph, root, counting, heal = await _die_between_x_and_its_checkpoint(tmp_path, monkeypatch)
    handlers = {"count": counting}
    heal()  # the checkpoint writes again
    result = await attractor_trio.resume(graph, logs_root=root, handlers=handlers)
    assert result.status == "success"
    assert counting.calls == ["x", "y"]
    assert read_json(root / "checkpoint.json")["context"]["seen.x"] is True
    assert_segments(root, ["internal_error"])


async def test_a_finished_stage_is_adopted_from_its_marker_when_status_json_never_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A main-line ``status.json`` is renamed only with the checkpoint of its stage boundary,
    after the finished marker: an engine killed in between leaves the marker alone. The resume
    adopts the outcome the marker records, without executing the stage again, and writes the
    stage's ``status.json`` from it."""
    graph, root, counting, heal = await _die_between_x_and_its_checkpoint(tmp_path, monkeypatch)
    handlers = {"count": counting}
    (root / "x" / "status.json").unlink()  # as a kill before the boundary's renames leaves it
    assert read_json(root / "x" / ".attempt.json")["outcome"]["outcome"] == "success"
    heal()  # the checkpoint writes again
    result = await attractor_trio.resume(graph, logs_root=root, handlers=handlers)
    assert result.status == "success"
    assert counting.calls == ["x", "y"]
    assert read_json(root / "x" / "status.json")["outcome"] == "success"
    assert read_json(root / "checkpoint.json")["context"]["seen.x"] is True


@pytest.mark.slow
def test_resume_reuses_the_runs_pass_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pass-env`` is one of the run's own options that ``resume`` reuses (contract.md §10)."""
    monkeypatch.setenv("MARK_PASSED", "hello")
    (tmp_path / "p.dot").write_text(
        """digraph pe {
            start [shape=Mdiamond]
            done [shape=Msquare]
            a [shape=parallelogram, tool_command="echo \\"x$MARK_PASSED\\" > seen.txt; while [ ! -f go ]; do sleep 0.05; done"]
            start -> a -> done
        }"""
    )
    args = [
        "run",
        "p.dot",
        "--logs-root",
        "run",
        "--workdir",
        str(tmp_path),
        "--pass-env",
        "MARK_*",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", *args], cwd=tmp_path, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "seen.txt").exists() or not (tmp_path / "seen.txt").read_text():
        assert time.monotonic() < deadline, "stage a never started"
        time.sleep(0.02)
    assert (tmp_path / "seen.txt").read_text().strip() == "xhello"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    (tmp_path / "seen.txt").unlink()
    (tmp_path / "go").touch()
    done = cli(tmp_path, "resume", "run", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "seen.txt").read_text().strip() == "xhello"
