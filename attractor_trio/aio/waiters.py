"""An uncancellable one-shot wait for group commit (``offload.py``, ``group_commit.py``).

Why not ``with trio.CancelScope(shield=True): await event.wait()``: a writer in a batch must
not be abandoned by a cancellation (like a synchronous write, it is delivered at the writer's
next checkpoint), and a shielded scope plus a :class:`trio.Event` (its parking lot) cost
more of the trio thread than the rest of a fan-out branch's durable write — a scope's enter
and exit alone were a third of it (py-spy, 1,000-branch fan-out; issue #22). A task parked
with :func:`trio.lowlevel.wait_task_rescheduled` and an abort that always fails is just as
uncancellable, and is woken by one ``reschedule``.
"""

from __future__ import annotations

from typing import Any, final

import trio

__all__ = ["OneShot"]


def _cannot_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


@final
class OneShot:
    """Tasks waiting for one moment (a batch's end); :meth:`fire` wakes them all, once."""

    __slots__ = ("_waiting", "fired")

    def __init__(self) -> None:
        self.fired = False
        self._waiting: list[trio.lowlevel.Task] = []

    async def wait(self) -> None:
        """Return once :meth:`fired`; a cancellation meanwhile neither interrupts the wait
        nor is lost (it is delivered at the caller's next checkpoint). Returns at once, without
        a checkpoint, if it has fired already."""
        if self.fired:
            return
        self._waiting.append(trio.lowlevel.current_task())
        await trio.lowlevel.wait_task_rescheduled(_cannot_abort)

    def fire(self) -> None:
        """Wake every waiting task (in the order they began to wait)."""
        self.fired = True
        waiting, self._waiting = self._waiting, []
        for task in waiting:
            trio.lowlevel.reschedule(task)
