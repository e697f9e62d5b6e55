"""Process groups: exit codes, logs, stdin, progress, and that nothing of a group survives.

Real processes on the real clock; every test is bounded with ``trio.fail_after``. Liveness is
checked with ``ps`` (an oracle independent of the module's ``/proc`` scan). A zombie counts as
dead: in this sandbox PID 1 does not reap orphans, so a killed grandchild stays a zombie.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from attractor_trio.aio.process import (
    ProcessResult,
    live_group_members,
    run_in_process_group,
    use_grace_skip,
)
from attractor_trio.core import redaction

BOUND = 15
SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True, params=["files", "pipes"])
def capture(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs both ways: the process writing its log files itself (no secrets known)
    and through the redacting pipes (a secret registered, contract.md §10)."""
    if request.param == "pipes":
        redaction.register_values([SECRET])
    yield str(request.param)
    redaction.reset()


def _live(pid: int) -> bool:
    """Running (not a zombie, not gone), according to ``ps``."""
    out = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return bool(out) and not out.startswith("Z")


def _live_in_group(pgid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [" ".join(r) for r in rows if int(r[1]) == pgid and not r[2].startswith("Z")]


async def _run(
    tmp_path: Path, command: str, *, kill_grace: float = 5.0, **kwargs: object
) -> ProcessResult:
    return await run_in_process_group(
        ["bash", "-c", command],
        cwd=tmp_path,
        env={**os.environ, "GREETING": "hi"},
        stdout_path=tmp_path / "out.log",
        stderr_path=tmp_path / "err.log",
        kill_grace=kill_grace,
        **kwargs,  # type: ignore[arg-type]
    )


def _pid_from(path: Path) -> int:
    return int(path.read_text().split()[0])


def _has_content(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


async def _wait_for_file(path: Path) -> None:
    """Wait (bounded by the test's fail_after) until the command has written ``path``."""
    while True:
        if _has_content(path):
            return
        await trio.sleep(0.01)


async def test_exit_code_and_logs(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        result = await _run(tmp_path, "echo out; echo err >&2; exit 3")
    assert result.exit_code == 3
    assert not result.signaled
    assert result.signal_name == ""
    assert (tmp_path / "out.log").read_text() == "out\n"
    assert (tmp_path / "err.log").read_text() == "err\n"
    assert (result.stdout_bytes, result.stderr_bytes) == (4, 4)
    assert result.duration_s >= 0


async def test_logs_are_appended_and_counts_are_this_runs(tmp_path: Path) -> None:
    (tmp_path / "out.log").write_text("earlier attempt\n")
    with trio.fail_after(BOUND):
        result = await _run(tmp_path, "echo again")
    assert (tmp_path / "out.log").read_text() == "earlier attempt\nagain\n"
    assert result.stdout_bytes == len("again\n")
    assert result.stderr_bytes == 0


async def test_cwd_and_env_are_passed(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        await _run(tmp_path, 'echo "$PWD $GREETING"')
    assert (tmp_path / "out.log").read_text() == f"{tmp_path} hi\n"


async def test_leader_killed_by_signal_is_reported(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        result = await _run(tmp_path, "kill -TERM $$")
    assert result.signaled
    assert result.exit_code == -15
    assert result.signal_name == "SIGTERM"


async def test_stdin_is_closed(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        result = await _run(tmp_path, 'read -r line; echo "read=$?"')
    assert result.exit_code == 0
    assert (tmp_path / "out.log").read_text() == "read=1\n"


async def test_own_process_group(tmp_path: Path) -> None:
    with trio.fail_after(BOUND):
        await _run(tmp_path, "ps -o pid=,pgid= -p $$")
    pid, pgid = (tmp_path / "out.log").read_text().split()
    assert pid == pgid
    assert int(pgid) != os.getpgrp()


async def test_on_output_called_when_output_grows(tmp_path: Path) -> None:
    calls: list[float] = []
    with trio.fail_after(BOUND):
        await _run(tmp_path, "echo a; sleep 0.8; echo b >&2", on_output=lambda: calls.append(0.0))
    assert len(calls) == 2


async def test_on_output_not_called_without_output(tmp_path: Path) -> None:
    calls: list[float] = []
    with trio.fail_after(BOUND):
        await _run(tmp_path, "sleep 0.4", on_output=lambda: calls.append(0.0))
    assert calls == []


async def test_background_children_killed_after_normal_exit(tmp_path: Path) -> None:
    """Documented decision: a stage's processes do not outlive it, even on success."""
    with trio.fail_after(BOUND):
        result = await _run(tmp_path, "sleep 100 & echo $! > bg.pid; echo $$ > leader.pid")
    assert result.exit_code == 0
    assert not _live(_pid_from(tmp_path / "bg.pid"))
    assert _live_in_group(_pid_from(tmp_path / "leader.pid")) == []


async def test_cancel_kills_the_leader_and_its_group_is_gone(tmp_path: Path) -> None:
    started = time.monotonic()
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.5) as scope:
            await _run(tmp_path, "echo $$ > leader.pid; exec sleep 30")
    assert scope.cancelled_caught
    assert time.monotonic() - started < 3
    with pytest.raises(ProcessLookupError):
        os.killpg(_pid_from(tmp_path / "leader.pid"), 0)


async def test_cancel_kills_grandchildren(tmp_path: Path) -> None:
    command = "sleep 100 & echo $! > bg.pid; bash -c 'sleep 100 & wait' & sleep 100"
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.5) as scope:
            await _run(tmp_path, f"echo $$ > leader.pid; {command}")
    assert scope.cancelled_caught
    assert not _live(_pid_from(tmp_path / "bg.pid"))
    assert _live_in_group(_pid_from(tmp_path / "leader.pid")) == []


@pytest.mark.slow
async def test_term_ignoring_group_is_killed_after_the_grace(tmp_path: Path) -> None:
    started = time.monotonic()
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.3) as scope:
            await _run(tmp_path, "trap '' TERM; echo $$ > leader.pid; sleep 30", kill_grace=0.6)
    elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert 0.3 + 0.6 <= elapsed < 5
    assert _live_in_group(_pid_from(tmp_path / "leader.pid")) == []


async def test_grace_skip_set_beforehand_skips_the_grace(tmp_path: Path) -> None:
    skip = trio.Event()
    skip.set()
    started = time.monotonic()
    with trio.fail_after(BOUND), use_grace_skip(skip):
        with trio.move_on_after(0.3):
            await _run(tmp_path, "trap '' TERM; sleep 30", kill_grace=30)
    assert time.monotonic() - started < 3


async def test_grace_skip_interrupts_a_grace_in_progress(tmp_path: Path) -> None:
    skip = trio.Event()
    started = time.monotonic()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:

            async def second_sigint() -> None:
                await _wait_for_file(tmp_path / "leader.pid")
                await trio.sleep(0.5)  # well inside the 30 s grace
                skip.set()

            nursery.start_soon(second_sigint)
            with trio.move_on_after(0.3):
                await _run(
                    tmp_path,
                    "trap '' TERM; echo $$ > leader.pid; sleep 30",
                    kill_grace=30,
                    skip_grace=skip,
                )
    assert time.monotonic() - started < 3
    assert _live_in_group(_pid_from(tmp_path / "leader.pid")) == []


async def test_spawn_failure_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await run_in_process_group(
            ["bash", "-c", "true"],
            cwd=tmp_path / "missing",
            env=dict(os.environ),
            stdout_path=tmp_path / "out.log",
            stderr_path=tmp_path / "err.log",
            kill_grace=1,
        )


def test_live_group_members_sees_a_running_group() -> None:
    proc = subprocess.Popen(["sleep", "30"], process_group=0)
    try:
        assert live_group_members(proc.pid) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert live_group_members(proc.pid) == []


# --- redaction (contract.md §10) -------------------------------------------------------------------


async def test_a_secret_is_redacted_even_when_written_in_two_pieces(
    tmp_path: Path, capture: str
) -> None:
    head, tail = SECRET[:6], SECRET[6:]
    command = f"printf 'key={head}'; sleep 0.3; printf '{tail}!\\n'; echo {SECRET} >&2"
    with trio.fail_after(BOUND):
        result = await _run(tmp_path, command)
    assert result.exit_code == 0
    shown = SECRET if capture == "files" else "[REDACTED]"
    assert (tmp_path / "out.log").read_text() == f"key={shown}!\n"
    assert (tmp_path / "err.log").read_text() == f"{shown}\n"


async def test_output_written_before_a_cancel_is_kept(tmp_path: Path, capture: str) -> None:
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.5) as scope:
            await _run(tmp_path, f"echo {SECRET} tail; sleep 30")
    assert scope.cancelled_caught
    shown = SECRET if capture == "files" else "[REDACTED]"
    assert (tmp_path / "out.log").read_text() == f"{shown} tail\n"


async def test_a_process_that_left_the_group_cannot_hold_the_stage(tmp_path: Path) -> None:
    """``setsid`` escapes the group and keeps the output pipe open; the stage still ends."""
    command = "setsid bash -c 'echo $$ > escaped.pid; exec sleep 30' & sleep 0.3; echo done"
    started = time.monotonic()
    try:
        with trio.fail_after(BOUND):
            result = await _run(tmp_path, command)
        assert result.exit_code == 0
        assert time.monotonic() - started < 3
        assert (tmp_path / "out.log").read_text() == "done\n"
    finally:
        os.kill(_pid_from(tmp_path / "escaped.pid"), signal.SIGKILL)
