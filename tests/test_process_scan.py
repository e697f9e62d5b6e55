"""Ending many process groups at once costs a few ``/proc`` scans, not one per group.

Cancelling a 1,000-branch fan-out of tool stages ends 1,000 groups together. A scan of
``/proc`` then reads a thousand ``stat`` files and takes longer than the member poll interval;
when every group rescanned, Ctrl-C took minutes instead of under a second (issue #22,
``benchmarks/cancel.py --branches 1000``). Real clock, bounded with ``trio.fail_after``; the
scan is replaced by a slow fake so that the test does not need a thousand processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import trio

from attractor_trio.aio import process

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
