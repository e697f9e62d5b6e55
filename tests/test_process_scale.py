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

import os
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
async def test_a_running_stage_keeps_no_descriptor_of_its_log_files(tmp_path: Path) -> None:
    """Without secrets to redact the process writes its logs itself, so the engine closes its
    copies once the process has them: a 1,000-branch tool fan-out held two descriptors per
    stage for nothing. What is left is the leader's pidfd (ours and trio's)."""
    redaction.reset()
    out = tmp_path / "out.log"
    before = _open_descriptors()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: process.run_in_process_group(
                    ["bash", "-c", "echo started; sleep 30"],
                    cwd=tmp_path,
                    env=dict(os.environ),
                    stdout_path=out,
                    stderr_path=tmp_path / "err.log",
                    kill_grace=1.0,
                )
            )
            while not (out.exists() and out.read_text().strip()):  # noqa: ASYNC110 (a file)
                await trio.sleep(0.01)
            during = _open_descriptors()
            nursery.cancel_scope.cancel()
    assert during - before <= 2
    assert out.read_text() == "started\n"
