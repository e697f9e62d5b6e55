"""``run.lock.json``: one live owner per run directory (contract.md §2).

A second ``run``/``resume`` on a live ``LOGS_ROOT`` is refused; ``stop`` finds the owner's pid
here. The lock is created exclusively (the content is written to a temp file first and
hard-linked into place, so no reader ever sees a half-written lock). A lock whose pid is dead,
or whose content is unreadable (a crash of some other tool, a hand edit), is stale and is
reclaimed by atomically replacing it.

Creating, reclaiming and releasing run under an ``flock`` on the run directory itself, so two
processes that both find the same stale lock cannot both "win" (the Go engine had that race).
The lock records no process start time, so a recycled pid makes a dead run look alive; the
result is a refusal naming the pid, never two owners.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, final

import attrs

from ..errors import AttractorError
from . import noop_fsync
from .atomic import (
    CorruptFileError,
    Schema,
    StrPath,
    dumps_json,
    fsync_directory,
    is_int,
    is_str,
    read_json_object,
    utc_timestamp,
    write_bytes_atomic,
)

__all__ = [
    "LOCK_FILE_NAME",
    "RunLock",
    "RunLockInfo",
    "RunLockedError",
    "acquire_run_lock",
    "is_pid_alive",
    "read_run_lock",
]

LOCK_FILE_NAME: Final = "run.lock.json"


class RunLockedError(AttractorError):
    """Another live process owns the run directory (the CLI maps this to exit 2)."""

    def __init__(self, logs_root: Path, owner: RunLockInfo) -> None:
        self.logs_root = logs_root
        self.owner = owner
        super().__init__(
            f"{logs_root / LOCK_FILE_NAME}: error: run directory is in use by process "
            f"{owner.pid} (run {owner.run_id!r}, since {owner.acquired_at}); wait for it to "
            f"finish or stop it with `attractor-trio stop {logs_root}`"
        )


@final
@attrs.frozen
class RunLockInfo:
    """The content of ``run.lock.json``."""

    pid: int
    run_id: str
    acquired_at: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "run_id": self.run_id, "acquired_at": self.acquired_at}


@final
@attrs.frozen
class RunLock:
    """Proof of ownership returned by :func:`acquire_run_lock`; a context manager."""

    path: Path
    info: RunLockInfo

    def release(self) -> bool:
        """Remove the lock file if it is still ours; return whether it was removed. A lock that
        someone else reclaimed in the meantime (we were presumed dead) is left alone."""
        with _directory_guard(self.path.parent):
            try:
                current = _read_lock_file(self.path)
            except (FileNotFoundError, CorruptFileError):
                return False
            if current != self.info:
                return False
            os.unlink(self.path)
            fsync_directory(self.path.parent)
            return True

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire_run_lock(logs_root: StrPath, run_id: str) -> RunLock:
    """Take ownership of ``logs_root`` (which must exist) for this process or raise
    :class:`RunLockedError`. A stale lock (dead pid, unreadable content) is replaced."""
    root = Path(logs_root)
    path = root / LOCK_FILE_NAME
    info = RunLockInfo(pid=os.getpid(), run_id=run_id, acquired_at=utc_timestamp())
    content = dumps_json(info.to_json()).encode("utf-8")
    noop_fsync.forget()  # which filesystems skip fsync is decided afresh for every run
    with _directory_guard(root):
        try:
            write_bytes_atomic(path, content, exclusive=True)
        except FileExistsError:
            owner = _live_owner(path)
            if owner is not None:
                raise RunLockedError(root, owner) from None
            write_bytes_atomic(path, content)  # stale: replace atomically
    return RunLock(path=path, info=info)


def read_run_lock(logs_root: StrPath) -> RunLockInfo | None:
    """The recorded owner, or ``None`` when there is no lock. Raises :class:`CorruptFileError`
    when the file exists but is not a lock (``stop`` reports that instead of guessing)."""
    try:
        return _read_lock_file(Path(logs_root) / LOCK_FILE_NAME)
    except FileNotFoundError:
        return None


def is_pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists. ``EPERM`` means it exists but belongs to someone
    else: alive. Non-positive pids are never alive (``kill(0, …)`` would signal our group)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed owner that its parent has not reaped yet is dead: ``status`` says the run is
    interrupted, so ``resume`` must be able to take the lock over (contract.md §10)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False  # gone meanwhile (kill(0) decides next time), or no /proc
    state = stat[stat.rfind(b")") + 2 :][:1]
    return state in (b"Z", b"X")


def _live_owner(path: Path) -> RunLockInfo | None:
    """The owner recorded in ``path`` if it is alive; ``None`` when the lock is stale."""
    try:
        owner = _read_lock_file(path)
    except (FileNotFoundError, CorruptFileError):
        return None
    return owner if is_pid_alive(owner.pid) else None


_SCHEMA: Final[Schema] = {
    "pid": ("an integer (process id)", is_int, True),
    "run_id": ("a string", is_str, True),
    "acquired_at": ("a string (RFC 3339 time)", is_str, True),
}


def _read_lock_file(path: Path) -> RunLockInfo:
    doc = read_json_object(path, "run lock", _SCHEMA)
    return RunLockInfo(pid=doc["pid"], run_id=doc["run_id"], acquired_at=doc["acquired_at"])


@contextmanager
def _directory_guard(directory: Path) -> Iterator[None]:
    """Serialize lock-file changes between processes with an ``flock`` on the directory."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
