"""``attractor-trio stop`` (contract.md §1, §9): whom it signals, how long it waits, its exit codes.

The owner here is a small stand-in process (its reaction to SIGTERM is the variable under test);
``tests/test_cancel_processes.py`` stops a real ``attractor-trio run``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.cli.stop import (
    Action,
    OwnerState,
    decide,
    owner_state,
    register,
    stop_command,
)
from attractor_trio.persist.atomic import utc_timestamp
from attractor_trio.persist.final import FinalRecord
from attractor_trio.persist.lock import RunLockInfo

RUN_ID = "20250101T000000Z-abc123"
CANCELED = FinalRecord(
    run_id=RUN_ID,
    status="canceled",
    exit_path="canceled",
    completed_nodes=("start",),
    start_time="2025-01-01T00:00:00.000Z",
    end_time="2025-01-01T00:00:01.000Z",
    duration_s=1.0,
    failure_reason="run canceled: SIGTERM",
    failure_class="canceled",
)

# A stand-in owner: "finish" writes final.json a moment after SIGTERM (stop must wait for it),
# "ignore" ignores SIGTERM, "die" dies of it without writing anything.
OWNER = """
import os, signal, sys, time
mode, root, payload = sys.argv[1], sys.argv[2], sys.argv[3]
def finish(signum, frame):
    time.sleep(0.3)
    tmp = os.path.join(root, ".final.json.tmp")
    with open(tmp, "w") as f:
        f.write(payload)
    os.rename(tmp, os.path.join(root, "final.json"))
    os._exit(143)
handlers = {"finish": finish, "ignore": signal.SIG_IGN, "die": signal.SIG_DFL}
signal.signal(signal.SIGTERM, handlers[mode])
print("ready", flush=True)
time.sleep(60)
"""


def stop(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(stop_command, list(args), catch_exceptions=False)
    return result.exit_code, result.stderr


def write_lock(root: Path, pid: int, acquired_at: str | None = None) -> None:
    info = RunLockInfo(pid=pid, run_id=RUN_ID, acquired_at=acquired_at or utc_timestamp())
    (root / "run.lock.json").write_text(json.dumps(info.to_json()))


def write_final(root: Path, record: FinalRecord = CANCELED) -> None:
    (root / "final.json").write_text(json.dumps(record.to_json()))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.iterdir()
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def spawn(root: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Started owners are killed at teardown, whatever the test did."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def start_owner(procs: list[subprocess.Popen[str]], mode: str, root: Path) -> subprocess.Popen[str]:
    payload = json.dumps(CANCELED.to_json())
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, mode, str(root), payload],
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- the decision, without processes -------------------------------------------------------

LOCK = RunLockInfo(pid=4242, run_id=RUN_ID, acquired_at="2025-01-01T00:00:00.000Z")


@given(lock=st.sampled_from([None, LOCK]), owner=st.sampled_from(list(OwnerState)))
def test_a_finished_run_is_never_signalled(lock: RunLockInfo | None, owner: OwnerState) -> None:
    decision = decide(Path("r"), CANCELED, lock, owner)
    assert decision.action is Action.FINISHED and "already finished" in decision.message


def test_only_a_running_owner_is_signalled() -> None:
    assert decide(Path("r"), None, LOCK, OwnerState.RUNNING).action is Action.SIGNAL
    for owner in (OwnerState.GONE, OwnerState.RECYCLED):
        decision = decide(Path("r"), None, LOCK, owner)
        assert decision.action is Action.STALE
        assert "4242" in decision.message and "attractor-trio resume r" in decision.message


def test_no_lock_and_no_final_is_not_a_run() -> None:
    decision = decide(Path("r"), None, None, OwnerState.GONE)
    assert decision.action is Action.NOT_A_RUN and "not running" not in decision.message
    with_manifest = decide(Path("r"), None, None, OwnerState.GONE, has_manifest=True)
    assert "attractor-trio resume r" in with_manifest.message


def test_owner_state_sees_live_dead_zombie_and_recycled_pids(
    root: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    owner = start_owner(spawn, "ignore", root)
    now = utc_timestamp()
    assert owner_state(RunLockInfo(owner.pid, RUN_ID, now)) is OwnerState.RUNNING
    old = "2000-01-01T00:00:00.000Z"  # the process started long after this lock
    assert owner_state(RunLockInfo(owner.pid, RUN_ID, old)) is OwnerState.RECYCLED
    assert owner_state(RunLockInfo(dead_pid(), RUN_ID, now)) is OwnerState.GONE
    owner.kill()
    deadline = time.monotonic() + 5
    while owner_state(RunLockInfo(owner.pid, RUN_ID, now)) is not OwnerState.GONE:
        assert time.monotonic() < deadline, "a killed, unreaped owner (zombie) is not running"
        time.sleep(0.01)
    assert owner.poll() == -signal.SIGKILL  # it was a zombie until now


# --- the command ---------------------------------------------------------------------------


def test_stop_signals_the_owner_and_waits_for_final_json(
    root: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    owner = start_owner(spawn, "finish", root)
    write_lock(root, owner.pid)
    code, err = stop(str(root), "--grace", "10s")
    assert code == 0, err
    assert f"sent SIGTERM to process {owner.pid}" in err
    assert f"run {RUN_ID} ended: canceled (canceled)" in err
    assert owner.wait(timeout=5) == 143  # it was signalled, and final.json came after a delay


def test_an_already_finished_run_is_left_untouched(
    root: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    owner = start_owner(spawn, "die", root)  # SIGTERM would kill it
    write_lock(root, owner.pid)  # the lock can outlive final.json by a moment
    write_final(root)
    before = snapshot(root)
    code, err = stop(str(root))
    assert code == 0 and "already finished (canceled, canceled)" in err
    assert owner.poll() is None, "a finished run's owner must not be signalled"
    assert snapshot(root) == before


def test_finished_run_without_lock_exits_0(root: Path) -> None:
    write_final(root)
    code, err = stop(str(root))
    assert code == 0 and "nothing to stop" in err


def test_run_that_does_not_finish_within_grace_exits_1(
    root: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    owner = start_owner(spawn, "ignore", root)
    write_lock(root, owner.pid)
    started = time.monotonic()
    code, err = stop(str(root), "--grace", "300ms")
    assert code == 1
    assert time.monotonic() - started >= 0.3
    assert "did not finish within 300ms" in err and f"kill -KILL {owner.pid}" in err
    assert owner.poll() is None  # stop asks; it does not kill


def test_owner_dying_without_final_json_ends_the_wait_early(
    root: Path, spawn: list[subprocess.Popen[str]]
) -> None:
    owner = start_owner(spawn, "die", root)
    write_lock(root, owner.pid)
    started = time.monotonic()
    code, err = stop(str(root), "--grace", "30s")
    assert code == 1 and time.monotonic() - started < 10
    assert "exited without writing final.json" in err
    assert f"attractor-trio resume {root}" in err
    assert owner.wait(timeout=5) == -signal.SIGTERM


def test_stale_lock_exits_1_and_explains_how_to_resume(root: Path) -> None:
    write_lock(root, dead_pid())
    code, err = stop(str(root))
    assert code == 1
    assert "is not running" in err and "died" in err and f"attractor-trio resume {root}" in err


def test_recycled_pid_is_not_signalled(root: Path, spawn: list[subprocess.Popen[str]]) -> None:
    bystander = start_owner(spawn, "die", root)
    write_lock(root, bystander.pid, acquired_at="2000-01-01T00:00:00.000Z")
    code, err = stop(str(root))
    assert code == 1 and "started after the run" in err
    assert bystander.poll() is None


def test_directory_without_a_run_exits_2(root: Path) -> None:
    code, err = stop(str(root))
    assert code == 2 and "no run.lock.json and no final.json" in err
    (root / "manifest.json").write_text("{}")
    code, err = stop(str(root))
    assert code == 2 and f"attractor-trio resume {root}" in err


def test_missing_directory_exits_2(tmp_path: Path) -> None:
    code, err = stop(str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("name", ["run.lock.json", "final.json"])
def test_corrupt_files_exit_2_naming_the_file(root: Path, name: str) -> None:
    (root / name).write_text('{"pid": ')
    code, err = stop(str(root))
    assert code == 2 and name in err and "Traceback" not in err


def test_bad_grace_exits_2(root: Path) -> None:
    code, err = stop(str(root), "--grace", "soon")
    assert code == 2 and "invalid duration" in err and "--grace" in err


def test_register_adds_the_stop_command() -> None:
    group = click.Group("g")
    register(group)
    assert group.commands["stop"] is stop_command
