"""``progress.ndjson``: the run's event log, one JSON object per line (contract.md §4, §9).

Every line carries the envelope ``{seq, ts, run_id, event, branch, ...fields}``. ``seq`` is per
file, starts at 1 and increases by exactly one per line; ``seq`` and ``ts`` are assigned under
the same lock that orders the writes, so ``ts`` never goes backwards along ``seq``.

Events reach the OS in batches of complete lines, one ``write(2)`` per batch on an ``O_APPEND``
descriptor (``pending.py``): while a run's event loop buffers, a line waits in memory until the
loop is about to wait for anything, a file of the run is about to be renamed into place, or the
writer syncs, releases or closes; any other append writes through at once. So a SIGKILL loses
at most the events emitted since the last such point — never one emitted before a file that
appeared — and no batch is ever half of an event. There is no fsync per batch (that would make
heartbeats cost a disk flush each); :meth:`ProgressWriter.sync` forces durability where it
matters (the engine calls it before writing ``final.json``). A SIGKILL or power loss can
therefore leave one torn *last* line. Readers skip it and :func:`next_seq_for_resume` cuts it
off before appending.

Branch files (``parallel/<node>/<key>/progress.ndjson``) number their own events from 1; the
run's file receives a copy of each via :meth:`ProgressWriter.forward`, renumbered with the run's
``seq`` (contract.md §9).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, final

from ..core import redaction
from ..jsontext import encode_str
from . import noop_fsync, pending
from .atomic import (
    CorruptFileError,
    StrPath,
    json_encoder,
    utc_timestamp_of_millis,
    write_all,
)
from .descriptors import open_fd
from .field_text import ENVELOPE_KEYS, generic_tail, text_function
from .field_text import functions as _tail_functions
from .pending import buffering_threads, dirty_writers

__all__ = [
    "ENVELOPE_KEYS",
    "PROGRESS_FILE_NAME",
    "ProgressWriter",
    "next_seq_for_resume",
    "open_log",
    "read_progress",
]

PROGRESS_FILE_NAME: Final = "progress.ndjson"

_TAIL_CHUNK: Final = 64 * 1024
#: ``json.dumps(envelope, ensure_ascii=False, allow_nan=False)`` without building an encoder
#: per event (``json.dumps`` does for any non-default option).
_encode_event: Final = json_encoder(separators=(", ", ": "))
_encode_str: Final = encode_str
_time_ns: Final = time.time_ns
_get_ident: Final = threading.get_ident
#: Event names are few; their JSON text is kept rather than encoded per event, with the
#: key that follows it in a line (one piece of the line's f-string instead of three).
_EVENT_NAMES: dict[str, str] = {}


def _event_name(event: str) -> str:
    text = _EVENT_NAMES.get(event)
    if text is None:
        text = f'{_encode_str(event)}, "branch": '
        if len(_EVENT_NAMES) < 1024:  # names come from code, but a plugin could invent many
            _EVENT_NAMES[event] = text
    return text


_LOG_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def open_log(path: StrPath) -> tuple[int, int]:
    """Open (create if missing) an event log for appending: its descriptor and its size."""
    fd = open_fd(path, _LOG_FLAGS, 0o644)
    try:
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise


@final
class ProgressWriter:
    """Appends events to one ``progress.ndjson``; thread-safe (the engine may write from worker
    threads via ``trio.to_thread.run_sync``)."""

    def __init__(
        self,
        path: StrPath,
        run_id: str,
        *,
        start_seq: int = 1,
        opened: tuple[int, int] | None = None,
    ) -> None:
        """``opened``: the file's descriptor (opened as :func:`open_log` does) and its size,
        when the caller opened it already — the writer owns the descriptor from then on."""
        if start_seq < 1:
            raise ValueError(f"start_seq must be >= 1, got {start_seq}")
        self.path = Path(path)
        self.run_id = run_id
        self._run_id_text = f'"run_id": {_encode_str(run_id)}, '
        self._next_seq = start_seq
        self._lock = threading.Lock()
        fd, size = opened or open_log(self.path)
        self._fd: int | None = fd
        self._size = size  # where a failed write must be cut back to
        self._closed = False
        #: Lines emitted but not yet written (``pending.py``), oldest first.
        self._pending: list[bytes] = []
        #: The last line written (for :meth:`forward` into another writer, and for
        #: ``live.json``: ``events.py``).
        self.last_line = b""
        #: The millisecond of the last event's ``ts`` and its text: the events of a stage
        #: mostly fall within one, and the text depends on nothing else.
        self._ts_millis = -1
        self._ts_text = ""
        #: The line's text between ``seq`` and the event's name, ``ts`` in it, kept with it.
        self._ts_piece = ""

    @classmethod
    def resume(cls, path: StrPath, run_id: str) -> ProgressWriter:
        """Open an existing log to continue it: drop a torn last line, continue ``seq``."""
        return cls(path, run_id, start_seq=next_seq_for_resume(path))

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event will get."""
        return self._next_seq

    def emit(self, event: str, branch: str = "", **fields: Any) -> dict[str, Any]:
        """Append one event and return the envelope as written (for stdout/SSE/the event
        stream). Fields may not shadow envelope keys. An unserializable field raises before
        anything is written and without consuming a ``seq``."""
        return self.append(event, branch, fields)

    def forward(self, envelope: Mapping[str, Any], line: bytes | None = None) -> dict[str, Any]:
        """Copy an event written to a branch's file into this (the run's) file. The copy keeps
        ``event``, ``branch`` and the fields and gets this file's ``seq``, ``ts`` and ``run_id``
        (so ``seq`` and ``ts`` stay ordered here).

        ``line`` is the branch file's line for ``envelope`` (:attr:`last_line` of its writer):
        when the event was just written for this run, the copy reuses its text and time and
        only renumbers it — a fan-out forwards every branch event, and re-encoding each one
        was a tenth of a branch's cost."""
        if line is not None and envelope.get("run_id") == self.run_id:
            return self._renumber(envelope, line)
        event = envelope.get("event")
        if not isinstance(event, str) or not event:
            raise ValueError(f"cannot forward an envelope without an 'event' name: {envelope!r}")
        branch = envelope.get("branch", "")
        if not isinstance(branch, str):
            raise ValueError(f"envelope 'branch' must be a string, got {branch!r}")
        fields = {k: v for k, v in envelope.items() if k not in ENVELOPE_KEYS}
        return self.append(event, branch, fields)

    def sync(self) -> None:
        """Write the held lines, then fsync the log."""
        with self._lock:
            self._write_pending()
            noop_fsync.fsync(self._require_open())

    def flush(self) -> None:
        """Write the held lines to the OS (one ``write(2)``); see ``pending.py``. A failed
        write is cut back off the file and raises; its lines stay held for the next try."""
        lock = self._lock
        lock.acquire()  # not ``with``, as in :meth:`append`: a flush point or more per stage
        try:
            held = self._pending  # :meth:`_write_pending`, inline
            if held:
                self._write_line(held[0] if len(held) == 1 else b"".join(held))
                held.clear()
                dirty_writers.discard(self)
        finally:
            lock.release()

    def release(self) -> None:
        """Give the descriptor back but stay open for events: the next one reopens the file
        (``O_APPEND``) and goes on numbering. A fan-out's branches each have a log and are
        alive together; a descriptor held per branch ran out of descriptors (``EMFILE``) in a
        1,000-branch fan-out under the usual limit of 1,024."""
        with self._lock:
            # Held lines are written now, opening the file if need be: a released log keeps
            # no descriptor, and a flush later would reopen every released log at once.
            try:
                self._write_pending()
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    def give_back(self) -> bool:
        """:meth:`release` from any thread, unless this writer is busy (its lock is taken:
        perhaps by the very write whose ``open`` asks for a descriptor, which must not wait
        for itself); whether a descriptor was closed. For ``persist/descriptors.py``."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._fd is None:
                return False
            with contextlib.suppress(OSError):  # they stay held, written on reopening
                self._write_pending()
            os.close(self._fd)
            self._fd = None
            return True
        finally:
            self._lock.release()

    def close(self) -> None:
        """Write the held lines and give the descriptor back for good (the descriptor is
        closed even if that write fails, which then raises)."""
        with self._lock:
            try:
                self._write_pending()
            finally:
                self._closed = True
                pending.mark(self, False)
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    def __enter__(self) -> ProgressWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def append(self, event: str, branch: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`emit` with the fields as one dict (read, not kept: the envelope is a new
        dict), so a caller that already holds them (the hub) does not unpack and repack them
        per event."""
        # The line is built as ``json.dumps(envelope)`` would write it, byte for byte
        # (``tests/test_persist_progress.py`` pins that): the envelope's fixed keys from text
        # cached per writer, and only the fields encoded (``field_text.py``). One function
        # from the fields to the ``write(2)``: a stage emits seven events, and every call layer
        # and helper (the timestamp, the write loop) cost a noticeable part of each (#22).
        name = _EVENT_NAMES.get(event) or _event_name(event)
        branch_text = _encode_str(branch) if branch else '""'
        # The fields' text after the envelope's (``field_text.py``: by a function made for
        # the event's usual fields, else by the encoder). Fields that are not JSON or use
        # an envelope key raise here, before anything is written and before a ``seq`` is
        # taken (a made function is never made for, and declines, an envelope key).
        tail = (_tail_functions.get(event) or text_function(event, fields))(fields)
        if tail is None:  # not the fields the event's function was made for
            tail = generic_tail(fields)
        lock = self._lock
        lock.acquire()  # not ``with``: its two special-method lookups cost more than the pair
        try:
            if self._closed:
                raise ValueError(f"progress writer for {self.path} is closed")
            seq = self._next_seq
            millis = _time_ns() // 1_000_000
            if millis != self._ts_millis:
                self._ts_text = utc_timestamp_of_millis(millis)
                self._ts_piece = f', "ts": "{self._ts_text}", {self._run_id_text}"event": '
                self._ts_millis = millis
            ts = self._ts_text
            envelope: dict[str, Any] = {
                "seq": seq,
                "ts": ts,
                "run_id": self.run_id,
                "event": event,
                "branch": branch,
                **fields,
            }
            line = f'{{"seq": {seq}{self._ts_piece}{name}{branch_text}{tail}\n'.encode()
            redactor = redaction.active  # None: nothing to redact (one read, no call)
            if redactor is not None and redactor.found_in_bytes(line):
                # Redacted value by value: the envelope handed to stdout/SSE/the event stream
                # is the one written, and the line stays valid JSON (contract.md §10).
                envelope = redactor.value(envelope)
                line = (_encode_event(envelope) + "\n").encode()
            if buffering_threads and _get_ident() in buffering_threads:
                held = self._pending  # :meth:`_put`'s first case, inline: the usual one
                if not held:
                    dirty_writers.add(self)  # pending.mark(self, True), inline
                held.append(line)
            else:
                self._put(line)
            self._next_seq = seq + 1
            self.last_line = line
            return envelope
        finally:
            lock.release()

    def _renumber(self, envelope: Mapping[str, Any], line: bytes) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise ValueError(f"progress writer for {self.path} is closed")
            seq = self._next_seq
            copy = {**envelope, "seq": seq}  # "seq" stays the first key
            head, comma, rest = line.partition(b",")
            if not (head.startswith(b'{"seq": ') and comma):
                raise ValueError(f"not an event line of this format: {line[:80]!r}")
            line = b'{"seq": %d,' % seq + rest
            self._put(line)
            self._next_seq += 1
            self.last_line = line
            return copy

    def _put(self, line: bytes) -> None:
        """Hold ``line`` while this thread buffers (``pending.py``), else write it now, after
        any lines held before it. Under the lock."""
        if pending.buffering_here():
            if not self._pending:
                pending.mark(self, True)
            self._pending.append(line)
            return
        if self._pending:
            self._pending.append(line)
            try:
                self._write_pending()
            except BaseException:
                self._pending.pop()  # not emitted: its seq is not consumed
                raise
        else:
            self._write_line(line)

    def _write_pending(self) -> None:
        """Write the held lines as one batch. Under the lock."""
        if not self._pending:
            return
        held = self._pending
        self._write_line(held[0] if len(held) == 1 else b"".join(held))
        held.clear()
        pending.mark(self, False)

    def _write_line(self, data: bytes) -> None:
        """Write whole lines; if the write fails part-way (disk full), cut the fragment off
        again so the file never holds a torn line *before* later events."""
        fd = self._fd if self._fd is not None else self._require_open()
        try:
            written = os.write(fd, data)
            if written != len(data):  # a signal, a huge batch: write the rest
                write_all(fd, data[written:])
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            raise
        self._size += len(data)

    def _require_open(self) -> int:
        if self._fd is None:
            if self._closed:
                raise ValueError(f"progress writer for {self.path} is closed")
            self._fd = open_fd(self.path, _LOG_FLAGS, 0o644)
        return self._fd


def read_progress(path: StrPath) -> list[dict[str, Any]]:
    """All complete events in a progress file, in order.

    A torn or invalid *last* line is skipped silently: that is the one damage the writer's
    crash model allows. An invalid line anywhere else cannot come from a crash, so it raises
    :class:`CorruptFileError` with its line number rather than quietly dropping history.
    A missing file raises :class:`FileNotFoundError`.
    """
    target = Path(path)
    lines = target.read_bytes().split(b"\n")
    events: list[dict[str, Any]] = []
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        event = _parse_line(raw)
        if event is not None:
            events.append(event)
        elif any(rest.strip() for rest in lines[index + 1 :]):
            raise CorruptFileError(target, "not a JSON event object", line=index + 1, col=1)
    return events


def next_seq_for_resume(path: StrPath) -> int:
    """The ``seq`` to continue a progress file with: last complete line's ``seq`` + 1 (1 for a
    missing or empty file). Repairs the file's tail so appends start on a clean line: a torn
    last line is truncated away; a complete last line missing only its newline gets one.
    Raises :class:`CorruptFileError` when the line before a torn one is invalid too (that is
    damage a crash cannot cause, so resuming would hide it)."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 1
    try:
        return _repair_tail_and_get_next_seq(fd, target)
    finally:
        os.close(fd)


def _repair_tail_and_get_next_seq(fd: int, target: Path) -> int:
    lines = _last_lines(fd, os.fstat(fd).st_size, wanted=2)
    if not lines:
        return 1
    start, raw, terminated = lines[-1]
    last = _parse_line(raw)
    if last is not None:
        if not terminated:
            os.lseek(fd, 0, os.SEEK_END)
            write_all(fd, b"\n")
            noop_fsync.fsync(fd)
        return int(last["seq"]) + 1
    os.ftruncate(fd, start)
    noop_fsync.fsync(fd)
    if len(lines) < 2:
        return 1
    prev_start, prev_raw, _ = lines[-2]
    previous = _parse_line(prev_raw)
    if previous is None:
        line_no = _line_number(fd, prev_start)
        raise CorruptFileError(target, "not a JSON event object", line=line_no, col=1)
    return int(previous["seq"]) + 1


def _last_lines(fd: int, size: int, *, wanted: int) -> list[tuple[int, bytes, bool]]:
    """The last ``wanted`` non-blank lines as ``(offset, bytes, newline-terminated)``, reading
    backwards in chunks so resuming a huge log does not load it whole."""
    pos, tail = size, b""
    while True:
        found = _split_lines(pos, tail, complete_start=pos == 0)
        if len(found) >= wanted or pos == 0:
            return found[-wanted:]
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        tail = os.pread(fd, step, pos) + tail


def _split_lines(base: int, data: bytes, *, complete_start: bool) -> list[tuple[int, bytes, bool]]:
    """Split ``data`` (found at file offset ``base``) into non-blank lines. When ``data`` does
    not start at a line boundary its first fragment is dropped (it is only part of a line)."""
    result: list[tuple[int, bytes, bool]] = []
    offset = 0
    pieces = data.split(b"\n")
    for number, piece in enumerate(pieces):
        terminated = number < len(pieces) - 1
        partial_head = number == 0 and not complete_start
        if piece.strip() and not partial_head:
            result.append((base + offset, piece, terminated))
        offset += len(piece) + 1
    return result


def _line_number(fd: int, offset: int) -> int:
    """1-based line number of the line starting at ``offset`` (only for error messages)."""
    return os.pread(fd, offset, 0).count(b"\n") + 1


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """The event on one line, or ``None`` when the line is not a complete event object."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return value
