"""Many stage processes at once: a few ``/proc`` scans end them all, and a running stage
holds no more descriptors than it needs (issue #22).

Ending many process groups at once costs a few ``/proc`` scans, not one per group.

Cancelling a 1,000-branch fan-out of tool stages ends 1,000 groups together. A scan of
``/proc`` then reads a thousand ``stat`` files and takes longer than the member poll interval;
when every group rescanned, Ctrl-C took minutes instead of under a second (issue #22,
``benchmarks/cancel.py --branches 1000``). Real clock, bounded with ``trio.fail_after``; the
scan is replaced by a slow fake so that the test does not need a thousand processes.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from attractor_trio.aio import process
from attractor_trio.core import redaction

#: The fake scan's cost: several poll intervals, like reading 1,000 ``stat`` files.
SCAN_S = 0.05
GROUPS = 40


class _SlowProc:
    """Stands in for the ``/proc`` walk: counts passes and takes :data:`SCAN_S` each."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self.scans = 0

    def walk(self) -> dict[int, int]:
        self.scans += 1
        time.sleep(SCAN_S)
        return dict(self.live)


@pytest.fixture
def slow_proc(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SlowProc]:
    fake = _SlowProc()
    monkeypatch.setattr(process, "_scan", process._Scan({}, -1.0, -1.0))
    monkeypatch.setattr(process, "_walk_proc", fake.walk)
    yield fake


async def test_many_groups_ending_together_share_a_few_scans(slow_proc: _SlowProc) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for pgid in range(1000, 1000 + GROUPS):
                nursery.start_soon(process._wait_members_gone, pgid)
    # One rescan per group would be GROUPS scans (2 s here; minutes with 1,000 real groups).
    assert slow_proc.scans <= 4


async def test_a_scan_older_than_the_kill_cannot_say_the_group_is_gone(
    slow_proc: _SlowProc,
) -> None:
    """A fresh scan taken before the ``killpg`` may predate the group's members: it is not
    trusted, and the members are waited for."""
    slow_proc.live[7] = 1
    process._scan = process._Scan({}, time.monotonic(), time.monotonic())  # fresh, no group 7

    async def members_die() -> None:
        await trio.sleep(0.2)
        slow_proc.live.pop(7)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(members_die)
            began = trio.current_time()
            await process._wait_members_gone(7)
            waited = trio.current_time() - began
    assert waited >= 0.2
    assert slow_proc.scans >= 2


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
async def _started(nursery: trio.Nursery, tmp_path: Path, command: str, kill_grace: float) -> Path:
    """Run ``bash -c command`` as a stage process in ``nursery``; its stdout log once the
    command has printed its first line."""
    out = tmp_path / "out.log"
    nursery.start_soon(
        lambda: process.run_in_process_group(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=dict(os.environ),
            stdout_path=out,
            stderr_path=tmp_path / "err.log",
            kill_grace=kill_grace,
        )
    )
    while not (out.exists() and out.read_text().strip()):  # noqa: ASYNC110 (a file)
        await trio.sleep(0.01)
    return out


async def test_a_running_stage_keeps_no_descriptor_of_its_log_files(tmp_path: Path) -> None:
    """Without secrets to redact the process writes its logs itself, so the engine closes its
    copies once the process has them: a 1,000-branch tool fan-out held two descriptors per
    stage for nothing. What is left is the leader's pidfd (ours and trio's)."""
    redaction.reset()
    before = _open_descriptors()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            out = await _started(nursery, tmp_path, "echo started; sleep 30", kill_grace=1.0)
            during = _open_descriptors()
            nursery.cancel_scope.cancel()
    assert during - before <= 2
    assert out.read_text() == "started\n"


class _Steps(trio.abc.Instrument):
    """Counts tasks spawned and task steps (each time a task is resumed) while installed."""

    def __init__(self) -> None:
        self.spawned = 0
        self.steps = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


async def test_groups_waited_for_together_are_polled_by_one_task(slow_proc: _SlowProc) -> None:
    """Each waiting group used to poll ``/proc`` itself every 10 ms: ending 1,000 groups woke
    the trio thread 100,000 times a second until they were gone. Now one task polls for all
    and each waiter is woken once."""
    groups = range(2000, 2000 + GROUPS)
    slow_proc.live.update(dict.fromkeys(groups, 1))
    steps = _Steps()

    async def members_die() -> None:
        await trio.sleep(0.4)  # many poll intervals
        slow_proc.live.clear()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(members_die)
            await trio.lowlevel.checkpoint()
            trio.lowlevel.add_instrument(steps)
            for pgid in groups:
                nursery.start_soon(process._wait_members_gone, pgid)
        trio.lowlevel.remove_instrument(steps)
    # A waiter steps when it starts, when woken, when it finishes; the poller once per scan.
    assert steps.steps <= 4 * GROUPS + slow_proc.scans + 20
    assert steps.spawned == GROUPS + 1  # the waiters and one poller


class _FakeLeader:
    """A group leader that exits when told to (for the grace wait only)."""

    def __init__(self) -> None:
        self.exited = False
        self._exit = trio.Event()

    async def wait_exited(self) -> None:
        await self._exit.wait()
        self.exited = True


async def test_graces_in_progress_share_one_task_for_the_skip() -> None:
    """A grace that a second SIGINT may cut short used to need a nursery and a second task per
    group (one waiting for the exit, one for the skip): 2,000 spawns to cancel 1,000 branches.
    Now one system task per skip event cancels every grace in progress."""
    skip = trio.Event()
    steps = _Steps()
    ended = 0

    async def grace(leader: _FakeLeader) -> None:
        nonlocal ended
        await process._wait_exit_or_skip(leader, 60, skip)  # type: ignore[arg-type]
        ended += 1

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            trio.lowlevel.add_instrument(steps)
            for _ in range(GROUPS):
                nursery.start_soon(grace, _FakeLeader())
            await trio.sleep(0.05)
            skip.set()
        trio.lowlevel.remove_instrument(steps)
    assert ended == GROUPS
    assert steps.spawned == GROUPS + 1  # the graces and one skip watcher


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc to see the group empty")
async def test_a_group_its_leader_took_along_is_not_sigkilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When SIGTERM ended the whole group, a ``/proc`` scan shows it empty and the SIGKILL is
    skipped: during a mass cancel each ``killpg`` costs the trio thread 0.2 to 0.8 ms."""
    redaction.reset()
    sent: list[int] = []
    real_killpg = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        sent.append(sig)
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    with trio.fail_after(15):
        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:
                await _started(nursery, tmp_path, "echo started; exec sleep 30", kill_grace=5.0)
                scope.cancel()
    assert sent == [signal.SIGTERM]


async def test_a_scan_that_could_not_read_every_process_never_says_a_group_is_gone(
    slow_proc: _SlowProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incomplete scan (``EMFILE`` in a wide fan-out) shows no group empty, and a group
    waited for with ``kill`` is SIGKILLed on it — blind, as before the scans decided it."""
    blind = [True]
    walk = slow_proc.walk
    monkeypatch.setattr(process, "_walk_proc", lambda: None if blind[0] else walk())
    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: killed.append((pgid, sig)))

    async def sight_returns() -> None:
        await trio.sleep(0.2)
        blind[0] = False

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sight_returns)
            began = trio.current_time()
            await process._GroupWatch.current().wait_gone(9, time.monotonic(), kill=True)
            waited = trio.current_time() - began
    assert waited >= 0.2  # not gone on what the blind scans showed
    assert killed == [(9, signal.SIGKILL)]


def test_walk_proc_skips_processes_that_are_gone_and_gives_up_on_unreadable_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def gone(pid: str) -> int | None:
        raise FileNotFoundError(pid)

    monkeypatch.setattr(process, "_live_pgid", gone)
    assert process._walk_proc() == {}

    def unreadable(pid: str) -> int | None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(process, "_live_pgid", unreadable)
    assert process._walk_proc() is None
