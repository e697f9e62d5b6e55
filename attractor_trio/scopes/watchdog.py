"""The stall watchdog: one task that reads the liveness root and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import trio

from .liveness import Liveness

__all__ = ["watch"]


async def watch(root: Liveness, stall_timeout: float, on_stall: Callable[[float], None]) -> None:
    """Call ``on_stall(idle)`` once the root has been idle for ``stall_timeout``, then return.

    It sleeps exactly until the earliest moment a stall could be reached, so detection latency
    is one scheduler tick, and an idle period never goes unnoticed however long it lasts.
    """
    while True:
        idle = root.idle()
        if idle >= stall_timeout:
            on_stall(idle)
            return
        await trio.sleep(stall_timeout - idle)
