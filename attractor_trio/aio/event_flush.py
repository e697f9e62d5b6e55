"""Buffer the run's event-log lines while its event loop runs, and write them out before
the loop waits (``persist/pending.py`` says why and where else they are written)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final, final

import trio

from ..persist import pending

__all__ = ["buffered_events"]


@final
class _FlushBeforeWait(trio.abc.Instrument):
    """Writes the held lines whenever the run loop is about to wait for I/O (it calls this
    on every pass, with timeout 0 too), so no line stays in memory while the engine waits."""

    def before_io_wait(self, timeout: float) -> None:
        try:
            pending.flush_all()
        except Exception:
            pass  # rename or the writer's sync/close raises it where it can fail the run


_INSTRUMENT: Final = _FlushBeforeWait()


@contextlib.contextmanager
def buffered_events() -> Iterator[None]:
    """Inside a trio run: event-log appends on this thread are held and written in batches
    until the block ends (nested blocks share one instrument); the held lines are written
    when it ends."""
    trio.lowlevel.add_instrument(_INSTRUMENT)  # a no-op if a nested run added it already
    pending.buffering_on()
    try:
        yield
    finally:
        try:
            pending.buffering_off()
        finally:
            if not pending.buffering_here():
                trio.lowlevel.remove_instrument(_INSTRUMENT)
