"""Cancelling a wide fan-out records every branch's cancellation without queueing on the disk.

Ctrl-C under 1,000 running branches (issue #22, ``benchmarks/cancel.py --branches 1000``) writes
a ``canceled`` ``status.json`` per branch, each durable. Written one after another on the trio
thread, their fsyncs queued behind each other; like a finished branch's, they go through the
write pool, where they overlap. Real clock: the pool runs inline under a virtual one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from attractor_trio.aio import offload
from attractor_trio.scopes import attempt

from .helpers import run_fan_out_cancelled_once_all_run

BRANCHES = 12


async def test_canceled_branches_write_their_status_files_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = offload.write_bytes_durably
    writes: list[bytes] = []
    in_flight = most = 0

    async def counting(path: Path, data: bytes, *args: Any, **kwargs: Any) -> None:
        nonlocal in_flight, most
        writes.append(data)
        in_flight += 1
        most = max(most, in_flight)
        try:
            await real(path, data, *args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(attempt, "write_bytes_durably", counting)
    await run_fan_out_cancelled_once_all_run(tmp_path / "run", BRANCHES)
    assert sum(b'"canceled"' in data for data in writes) == BRANCHES
    assert most > 1  # they overlapped
