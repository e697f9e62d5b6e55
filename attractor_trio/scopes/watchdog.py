"""The stall watchdog: one task that reads the liveness root and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import trio

from .liveness import Liveness

__all__ = ["watch"]

#: A microsecond: far below any stall timeout, far above floating-point error in clock sums.
_TOLERANCE_S = 1e-6


async def watch(root: Liveness, stall_timeout: float, on_stall: Callable[[float], None]) -> None:
    """Call ``on_stall(idle)`` once the root has been idle for ``stall_timeout``, then return.

    It sleeps until the earliest moment a stall could be reached, so detection latency is one
    scheduler tick, and an idle period never goes unnoticed however long it lasts. It compares
    with a microsecond of tolerance: ``(t + s) - t`` can come out a hair below ``s`` in floating
    point, and sleeping that hair rounds to "now" — a busy loop that never fires (found by the
    fuzz suite; kept as a regression case in ``tests/fuzz_regressions``).
    """
    while True:
        idle = root.idle()
        if idle >= stall_timeout - _TOLERANCE_S:
            on_stall(idle)
            return
        await trio.sleep_until(trio.current_time() - idle + stall_timeout)
