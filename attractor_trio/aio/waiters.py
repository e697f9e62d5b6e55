"""Group commit's waits (``offload.py``, ``group_commit.py``): an uncancellable one-shot, and
:class:`Batches`, the join-or-lead protocol both use.

Why not ``with trio.CancelScope(shield=True): await event.wait()``: a writer in a batch must
not be abandoned by a cancellation (like a synchronous write, it is delivered at the writer's
next checkpoint), and a shielded scope plus a :class:`trio.Event` (its parking lot) cost
more of the trio thread than the rest of a fan-out branch's durable write — a scope's enter
and exit alone were a third of it (py-spy, 1,000-branch fan-out; issue #22). A task parked
with :func:`trio.lowlevel.wait_task_rescheduled` and an abort that always fails is just as
uncancellable, and is woken by one ``reschedule``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, final

import trio

__all__ = ["Batch", "Batches", "OneShot"]

T = TypeVar("T")


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


@final
class Batch(Generic[T]):
    """Items committed together, the moment their submitters wait for, and whether the
    commit returned (rather than raised)."""

    __slots__ = ("committed", "done", "items")

    def __init__(self, item: T) -> None:
        self.items: list[T] = [item]
        self.done = OneShot()
        self.committed = False


@final
class Batches(Generic[T]):
    """Group commit without a background task. An item joins the batch that has not started
    yet; the submitter that opened that batch leads it: it waits for the batch in flight (if
    any) to end, then runs ``commit`` on the whole batch. Every submitter is woken once, when
    its own batch has ended — not also when the batch before it ends — and waits
    uncancellably, like the commit it waits for (a cancellation is delivered at its next
    checkpoint). The leader gets ``commit``'s exception; the others read
    :attr:`Batch.committed` (or their item's own record of how it ended)."""

    __slots__ = ("_commit", "_in_flight", "_next")

    def __init__(self, commit: Callable[[list[T]], Awaitable[None]]) -> None:
        self._commit = commit
        self._next: Batch[T] | None = None  # the batch new items join; not started yet
        self._in_flight: Batch[T] | None = None

    async def submit(self, item: T) -> Batch[T]:
        """Return once the batch holding ``item`` has ended; that batch."""
        batch = self._next
        if batch is not None:
            batch.items.append(item)
            await batch.done.wait()
            return batch
        batch = self._next = Batch(item)
        while self._in_flight is not None:
            await self._in_flight.done.wait()
        self._next = None  # later items open the next batch
        self._in_flight = batch
        try:
            await self._commit(batch.items)
            batch.committed = True
        finally:
            self._in_flight = None
            batch.done.fire()
        return batch
