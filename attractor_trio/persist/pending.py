"""Event-log lines held back in memory, and the points that must write them out first.

Why: a stage emits seven events, a fan-out branch eight, each also forwarded to the run's log;
one ``write(2)`` per line was a tenth of a stage's cost and a sixth of a fan-out's trio-thread
time (issue #22). So while a run's event loop is *buffering* (:func:`buffering_on`, from
``aio/event_flush.py``), a :class:`~.progress.ProgressWriter` keeps its lines here and writes
them as one ``write(2)`` per file at the next flush point:

- the event loop is about to wait for I/O (a trio instrument), so nothing stays in memory
  while the engine waits on anything;
- before any file is renamed or linked into place (``atomic.py``, ``commit.py``,
  ``syncfs.py``: :func:`flush_all`), so a SIGKILL still observes every event emitted before
  a file that appeared (contract.md §2, §4); likewise before a stage's process starts
  (``aio/process.py``: it may write files at once);
- ``sync``/``release``/``give_back``/``close`` of the writer.

Only the threads that registered buffer; an append from any other thread writes through at
once (nobody would flush it while trio sleeps in ``epoll``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final, Protocol

__all__ = [
    "Flushable",
    "buffering_here",
    "buffering_off",
    "buffering_on",
    "buffering_threads",
    "dirty_writers",
    "flush_all",
    "mark",
]


class Flushable(Protocol):
    def flush(self) -> None: ...


#: Writers holding lines not yet written. Added to and removed from under the writer's lock,
#: read (copied) from any thread: one C call under the GIL each. ``progress.py`` adds and
#: discards inline, as :data:`dirty_writers` (the same set, never rebound), where a call to
#: :func:`mark` was one per batch each way.
_dirty: set[Flushable] = set()
dirty_writers: Final[set[Any]] = _dirty
#: Threads whose appends buffer, with how many runs (nested ones) asked for it. Changed in
#: place only, never rebound: ``progress.py`` tests it inline per event as
#: :data:`buffering_threads` (a call to :func:`buffering_here` was two per event).
_buffering: dict[int, int] = {}
buffering_threads: Final[Mapping[int, int]] = _buffering


def buffering_here() -> bool:
    """Whether an append on this thread may be held back."""
    return bool(_buffering) and threading.get_ident() in _buffering


def buffering_on() -> None:
    ident = threading.get_ident()
    _buffering[ident] = _buffering.get(ident, 0) + 1


def buffering_off() -> None:
    """Stop buffering on this thread (when the last run that asked for it ends); the lines
    already held are written first."""
    ident = threading.get_ident()
    left = _buffering.get(ident, 0) - 1
    if left > 0:
        _buffering[ident] = left
    else:
        _buffering.pop(ident, None)
    flush_all()


def mark(writer: Flushable, dirty: bool) -> None:
    """``writer`` now holds lines (or none any more); call under its lock."""
    if dirty:
        _dirty.add(writer)
    else:
        _dirty.discard(writer)


def flush_all() -> None:
    """Write every held line (one ``write(2)`` per file): before a file of a run is renamed
    into place, and whenever the event loop is about to wait. Nearly free with none held."""
    if not _dirty:
        return
    failed: Exception | None = None
    for writer in list(_dirty):
        try:
            writer.flush()
        except Exception as exc:  # disk full: the others still get their chance
            failed = failed or exc
    if failed is not None:
        raise failed
