"""An append-only NDJSON log whose appends return once durable, many sharing one fsync.

Why: a fan-out's finished branches each record their result durably before they count, so
that a resumed run re-runs only unfinished branches. One ``result.json`` per branch cost two
fsyncs each (the file and its directory, contract.md §2's recipe), and when a thousand branches
finished together the disk's flush rate set the pace. Appending them to one log lets every
branch that finishes while a flush is under way ride the next one — group commit, as databases
do. What a record promises is unchanged: :meth:`DurableLog.append` returns only after an
fsync that covered it.

How: no background task. The first appender with nothing in flight becomes the leader: it
takes every queued line, writes them with one ``write(2)`` and fsyncs on the write pool.
Appenders arriving meanwhile join the next flush and wait for its end only (each is woken
once); the one that opened it leads it when the flush in flight ends.

Crash model: a line is written whole or torn at the end, and a torn line was never
acknowledged (its fsync had not returned). The next writer starts on a fresh line, and
:func:`read_records` skips lines that do not parse. After a failed write or fsync nothing more
is appended (the kernel may have dropped the pages that failed): every waiting and later
appender gets an :class:`OSError` naming the file and the first failure.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, final

from ..core import redaction
from ..persist import noop_fsync, pending
from ..persist.atomic import fsync_directory, write_all
from ..persist.descriptors import open_fd
from ..persist.journaled import dumps_compact
from .offload import WritePool, write_pool
from .waiters import Batches

__all__ = ["DurableLog", "read_records"]


@final
class DurableLog:
    """Appends JSON records to ``path`` durably, with group commit; one writer per file.

    A context manager: the descriptor is opened by the first flush and closed on exit. Callers
    must not leave the block while an :meth:`append` is still waiting (a nursery inside the
    block guarantees it).
    """

    def __init__(self, path: Path, pool: WritePool = write_pool) -> None:
        self.path = path
        self._pool = pool
        self._fd: int | None = None
        self._flushes: Batches[bytes] = Batches(self._flush)
        self._failure: OSError | None = None

    async def append(self, record: Mapping[str, Any]) -> None:
        """Return once ``record`` is on disk. Serialization errors raise before anything is
        queued. Like a synchronous write, a cancellation does not abandon a queued record: it is
        delivered at the caller's next checkpoint.

        A line joins the flush that has not started yet, and its appender waits for that
        flush's end only — woken once, when its line is durable (or failed), not also when the
        flush before ends; the appender that opened the flush leads it once the one in flight
        has ended."""
        line = redaction.current().json_bytes((dumps_compact(record) + "\n").encode("utf-8"))
        self._raise_if_failed()
        if not (await self._flushes.submit(line)).committed:
            self._raise_if_failed()

    async def _flush(self, lines: list[bytes]) -> None:
        """Write ``lines`` with one ``write(2)`` and fsync them (:class:`Batches` commit)."""
        try:
            self._raise_if_failed()
            fd, created = self._open()
            pending.flush_all()  # events emitted before these records: in the log first
            write_all(fd, b"".join(lines))
            await self._pool.run(partial(_sync, fd, self.path.parent if created else None))
        except OSError as exc:
            self._failure = self._failure or exc
            raise

    def _open(self) -> tuple[int, bool]:
        """The descriptor, opened on first use; whether this call created the file (its
        directory entry then needs an fsync too)."""
        if self._fd is not None:
            return self._fd, False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            self._fd = open_fd(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            return self._fd, True
        except FileExistsError:
            pass
        self._fd = open_fd(self.path, flags)
        if not _ends_a_line(self.path):  # a line torn by a crash: start on a fresh one
            write_all(self._fd, b"\n")
        return self._fd, False

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise OSError(
                self._failure.errno,
                f"{self.path}: an earlier write or fsync failed ({self._failure}); "
                "nothing more is appended",
            )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DurableLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _sync(fd: int, directory: Path | None) -> None:
    if noop_fsync.skips_fsync(fd):  # tmpfs, ramfs: nor its directory (the same filesystem)
        return
    os.fsync(fd)
    if directory is not None:
        fsync_directory(directory)


def _ends_a_line(path: Path) -> bool:
    """True for an empty file or one whose last byte is a newline."""
    with open(path, "rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return True
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a :class:`DurableLog`, in order; ``[]`` for a missing file.

    Lines that do not parse as objects are skipped: the only ones a writer leaves are torn by
    a crash, and their records were never acknowledged — their work is simply redone."""
    with contextlib.suppress(FileNotFoundError):
        records: list[dict[str, Any]] = []
        for raw in path.read_bytes().splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records
    return []
