"""``live.json``: a cheap snapshot of what a run is doing right now (contract.md §2, §9).

``status`` reads it instead of scanning ``progress.ndjson``. It is rewritten atomically (the Go
engine truncated and rewrote it in place, so a reader could see an empty file), and throttled:
with a busy run emitting many events per second, rewriting it per event would cost an fsync
each. Throttling rules:

- the first write and every change of ``state`` go out immediately (a reader must never miss
  ``finalizing`` → ``success``);
- other updates are written when at least ``min_interval`` seconds passed since the last write,
  else they stay pending until the next update or :meth:`LiveWriter.flush` (the engine flushes
  on heartbeats and before finalizing).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, final

from .atomic import (
    StrPath,
    dumps_json,
    read_json_object,
    utc_timestamp,
    write_bytes_atomic,
)

__all__ = ["LIVE_FILE_NAME", "LIVE_STATES", "LiveWriter", "read_live"]

LIVE_FILE_NAME: Final = "live.json"
LIVE_STATES: Final = ("starting", "running", "finalizing", "success", "fail", "canceled")

#: Where the active attempts go in the document's layout (``dumps_json``: two-space indent, so
#: a top-level key is the only text a line break followed by two spaces and a quote can start).
_EMPTY_ACTIVE: Final = '\n  "active_attempts": []'


class _LastLine(Protocol):
    """What :meth:`LiveWriter.follow_log` reads: a ``ProgressWriter``'s ``last_line``."""

    @property
    def last_line(self) -> bytes: ...


@final
class LiveWriter:
    """Keeps the latest run snapshot and writes it to ``live.json`` under the throttle rules.
    Thread-safe. ``clock`` (monotonic seconds) and ``now`` (the ``updated_at`` text) are
    injectable so tests control time.

    The run's events reach it by :meth:`follow_log`, not by a call per event: the hub tests
    the throttle itself (:meth:`due`'s test, inline) and calls :meth:`flush` only when it
    allows a write."""

    def __init__(
        self,
        logs_root: StrPath,
        run_id: str,
        min_interval: float = 0.25,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = utc_timestamp,
    ) -> None:
        self.path = Path(logs_root) / LIVE_FILE_NAME
        self.min_interval = min_interval
        #: Public for the hub's inline throttle test (:meth:`due`), as is ``written_at``.
        self.clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {
            "run_id": run_id,
            "state": "starting",
            "current_node": "",
            "active_attempts": [],
            "last_event": None,
        }
        #: ``clock()`` at the last write (``-inf``: none yet, so the first is never held back).
        self.written_at = -math.inf
        self._pending = True
        self._active_source: Mapping[str, Mapping[str, Any]] | None = None
        #: The followed attempts' JSON text as laid out in the document, by ``id`` of the
        #: entry (which is kept beside it, so the ``id`` cannot be reused while cached).
        self._entry_texts: dict[int, tuple[Mapping[str, Any], str]] = {}
        #: The run's log (:meth:`follow_log`), and its line that ``last_event`` holds (or
        #: that an :meth:`update` with ``last_event`` came after).
        self._log: _LastLine | None = None
        self._taken = b""

    def follow_active_attempts(self, source: Mapping[str, Mapping[str, Any]]) -> None:
        """Take ``active_attempts`` from ``source``'s values whenever a snapshot is taken or
        written, instead of from :meth:`update`.

        A fan-out has as many attempts open as branches; copying that list into the snapshot
        on every attempt event made each event O(branches) and a fan-out quadratic. The
        owner of ``source`` mutates it under its own discipline (the trio thread) and calls
        :meth:`update` to mark the snapshot changed. It adds and removes entries but never
        changes one in place: a written entry's text is reused by later writes."""
        with self._lock:
            self._active_source = source

    @property
    def pending(self) -> bool:
        """Whether the snapshot has changes that are not on disk yet."""
        log = self._log
        return self._pending or (log is not None and log.last_line is not self._taken)

    def update(
        self,
        *,
        state: str | None = None,
        current_node: str | None = None,
        active_attempts: Sequence[Any] | None = None,
        last_event: Mapping[str, Any] | None = None,
    ) -> bool:
        """Merge the given values (``None`` = unchanged; ``current_node=""`` clears it) and
        write if the throttle allows. Returns whether ``live.json`` was written."""
        if state is not None and state not in LIVE_STATES:
            raise ValueError(f"live state must be one of {', '.join(LIVE_STATES)}; got {state!r}")
        with self._lock:
            state_changed = state is not None and state != self._snapshot["state"]
            changes = {
                "state": state,
                "current_node": current_node,
                "active_attempts": None if active_attempts is None else list(active_attempts),
                "last_event": None if last_event is None else dict(last_event),
            }
            self._snapshot.update({k: v for k, v in changes.items() if v is not None})
            if last_event is not None and self._log is not None:
                self._taken = self._log.last_line  # the log's line so far is older than this
            self._pending = True
            if state_changed or self._throttle_allows():
                self._write()
                return True
            return False

    def follow_log(self, log: _LastLine) -> None:
        """Take ``last_event`` from ``log.last_line`` (the run's log writer: the line it
        wrote last, the envelope as written, redacted if it had to be) whenever a snapshot
        is taken or written; a line it has not taken yet is a pending change.

        Why not a call per event that copies the envelope in: a stage emits seven events
        and ``live.json`` is written four times a second at most; that call, its lock and
        the copy were a tenth of an event's cost (issue #22). The line is parsed only when
        it is needed, and an object written once is never changed."""
        with self._lock:
            self._log = log
            self._taken = log.last_line

    def note_current(self, node: str) -> None:
        """Set ``current_node`` (the hub's call when a main-line stage starts), unwritten:
        the hub's throttle test follows (once per stage: the lock taken without ``with``,
        whose two special-method lookups cost more than the pair of calls)."""
        lock = self._lock
        lock.acquire()
        try:
            self._snapshot["current_node"] = node
            self._pending = True
        finally:
            lock.release()

    def due(self) -> bool:
        """Whether the throttle allows a write now (the hub tests this inline per event)."""
        return self.clock() - self.written_at >= self.min_interval

    def flush(self) -> bool:
        """Write pending changes now, regardless of the throttle; return whether it wrote."""
        with self._lock:
            if not self.pending:
                return False
            self._write()
            return True

    def snapshot(self) -> dict[str, Any]:
        """A copy of the current (possibly unwritten) snapshot, without ``updated_at``."""
        with self._lock:
            return self._current()

    def _take_line(self) -> None:
        """Parse the followed log's new line into ``last_event`` (once). Under the lock."""
        log = self._log
        if log is not None:
            line = log.last_line
            if line is not self._taken:
                self._snapshot["last_event"] = json.loads(line)
                self._taken = line
                self._pending = True  # taken for a snapshot is not written yet

    def _current(self) -> dict[str, Any]:
        self._take_line()
        current = dict(self._snapshot)
        if self._active_source is not None:
            # list() first: one C-level copy, so a mutation elsewhere cannot interleave.
            current["active_attempts"] = [dict(a) for a in list(self._active_source.values())]
        return current

    def _throttle_allows(self) -> bool:
        return self.clock() - self.written_at >= self.min_interval

    def _write(self) -> None:
        write_bytes_atomic(self.path, self._document().encode("utf-8"))
        self.written_at = self.clock()
        self._pending = False

    def _document(self) -> str:
        """``dumps_json`` of the snapshot with ``updated_at``, byte for byte.

        Why not simply that: in a fan-out every branch has an attempt open, and encoding a
        thousand of them on every write (four a second) was 3 % of the trio thread's time in
        a 1,000-branch fan-out, and grew with the width (issue #22). Each followed attempt is
        encoded once, when it is first written, and spliced into the rest of the document."""
        self._take_line()
        if self._active_source is None:
            return dumps_json({**self._snapshot, "updated_at": self._now()})
        entries = list(self._active_source.values())  # one C-level copy, as in _current
        text = dumps_json({**self._snapshot, "active_attempts": [], "updated_at": self._now()})
        if not entries:
            self._entry_texts = {}
            return text
        texts = self._texts_of(entries)
        spliced = '\n  "active_attempts": [\n    ' + ",\n    ".join(texts) + "\n  ]"
        return text.replace(_EMPTY_ACTIVE, spliced, 1)

    def _texts_of(self, entries: list[Mapping[str, Any]]) -> list[str]:
        """Each entry's text at the depth of a list item under a top-level key; the cache then
        holds exactly these entries (closed attempts drop out)."""
        cached, kept = self._entry_texts, {}
        texts = []
        for entry in entries:
            hit = cached.get(id(entry))
            if hit is None or hit[0] is not entry:
                hit = (entry, dumps_json(dict(entry))[:-1].replace("\n", "\n    "))
            kept[id(entry)] = hit
            texts.append(hit[1])
        self._entry_texts = kept
        return texts


def read_live(logs_root: StrPath) -> dict[str, Any] | None:
    """The last written snapshot, or ``None`` when the run never wrote one."""
    try:
        return read_json_object(Path(logs_root) / LIVE_FILE_NAME, "live snapshot")
    except FileNotFoundError:
        return None
