"""Many atomic, durable file writes committed together: two ``syncfs(2)`` calls instead of two
fsyncs per file (contract.md §2, group commit across parallel branches).

Why: when a fan-out's branches finish together, each writes its ``status.json`` by the recipe —
temp, fsync, rename, directory fsync — and on ext4 a thousand of them cost ≈ 1 s of fsync
summed over the write pool's threads, which kept the fan-out's finish half 0.1-0.15 s behind
the same run on tmpfs (issue #22). ``syncfs`` flushes every dirty file and directory of one
filesystem and commits its journal once: strictly stronger than a file's fsync plus its
directory's. The raw disk does 1,000 such writes in 0.23 s on four threads, and in 0.05 s with
two ``syncfs`` calls.

The order of the recipe is kept, for the whole batch at once (:func:`stage_and_commit`: each
:meth:`Pending.stage`, then :func:`commit_together`):

1. every temp file is created and written completely;
2. one ``syncfs`` per filesystem the temps are on — every temp's data is durable;
3. the temps are renamed over their targets, in the order given;
4. one more ``syncfs`` per filesystem — every rename (directory entry) is durable;

and only then does the caller report any of them done. Nothing is renamed before its data is
synced, nothing reported before its directory is. A SIGKILL at any point leaves each target
either the old document or the new, complete one (and the batch's temps, which nothing reads, as
a killed per-file write leaves its one); a power loss before step 4 ends may lose a rename, never
tear a file.

When ``syncfs`` is missing (not Linux, no libc symbol) or fails, the batch falls back to the
per-file recipe (:func:`write_durably`), and a failed ``syncfs`` is never tried again in this
process. :class:`SyncfsGuard` falls back for a while when a ``syncfs`` takes much longer than
the per-file fsyncs it replaced would have — another program's dirty data on the same
filesystem is then being flushed on our clock. On tmpfs and ramfs, whose fsync is a no-op
(``noop_fsync.py``), a write is only renamed: neither fsync nor ``syncfs``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable, Sequence
from typing import Final, final

from . import pending
from .atomic import fsync_directory, remove_quietly, temp_name, write_all
from .descriptors import open_fd
from .noop_fsync import device_skips_fsync, fs_magic

__all__ = [
    "Pending",
    "SyncfsGuard",
    "commit_together",
    "finish_alone",
    "fsync_directories",
    "guard",
    "libc_syncfs",
    "rename_all",
    "stage_and_commit",
    "stage_and_finish",
    "syncfs_covers",
    "write_durably",
]

Sync = Callable[[int], None]


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs``, or ``None`` where there is none (macOS, a libc without it)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs: Final = _load_syncfs()


def libc_syncfs(fd: int) -> None:
    """``syncfs(fd)``: flush the whole filesystem ``fd`` is on. Raises :class:`OSError`."""
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available on this system")
    if _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"syncfs: {os.strerror(code)}")


#: Filesystems (``statfs`` magic numbers) whose ``syncfs`` commits data and metadata like their
#: fsync does: ext2/3/4, XFS, Btrfs, F2FS, overlayfs (it syncs its upper filesystem) and tmpfs
#: (nothing to flush). Elsewhere — FUSE, whose ``syncfs`` may not reach the server an fsync
#: reaches; network filesystems — the per-file recipe stays.
SYNCFS_FILESYSTEMS: Final = frozenset(
    {0xEF53, 0x58465342, 0x9123683E, 0xF2F52010, 0x794C7630, 0x01021994}
)


_covered_devices: dict[int, bool] = {}


def syncfs_covers(fd: int, device: int) -> bool:
    """Whether ``syncfs`` on the filesystem of ``fd`` (device ``device``) is as strong as its
    fsync (:data:`SYNCFS_FILESYSTEMS`); asked once per device."""
    known = _covered_devices.get(device)
    if known is None:
        known = _covered_devices[device] = fs_magic(fd) in SYNCFS_FILESYSTEMS
    return known


@final
class SyncfsGuard:
    """Whether a batch may use ``syncfs`` now, learnt from what fsync and ``syncfs`` cost here.

    A ``syncfs`` is *slow* when it took more than :data:`SLOW_FACTOR` times the wall time of the
    fsyncs it replaced (their count times the measured fsync latency, spread over the pool's
    :attr:`threads`). :data:`SLOW_RUN` slow ones in a row turn ``syncfs`` off for
    :attr:`backoff_s` seconds; the first one after that is on probation — slow, it turns
    ``syncfs`` off again for twice as long (up to :data:`MAX_BACKOFF_S`); not slow, everything
    is forgotten. Why a run and not one: the first ``syncfs`` of a fan-out also writes back
    what the branches wrote without fsync (``prompt.md``, ``response.md``, the attempt marker —
    contract.md §2 leaves them to the kernel's writeback), ten to a hundred times the later
    ones' cost; another program's dirty data on the filesystem makes every one slow.

    A failing ``syncfs`` turns it off for the process. Shared by pool threads: the fields are
    plain numbers whose races cost at most one batch's choice."""

    SLOW_FACTOR: Final = 4.0
    SLOW_RUN: Final = 3
    FIRST_BACKOFF_S: Final = 1.0
    MAX_BACKOFF_S: Final = 60.0
    #: The fsync latency assumed before any was measured (a typical SSD's journal commit).
    DEFAULT_FSYNC_S: Final = 0.5e-3

    def __init__(self, sync: Sync | None = None, threads: int = 4) -> None:
        self.sync: Sync = sync if sync is not None else libc_syncfs
        self.available = sync is not None or _syncfs is not None
        self.threads = threads
        self.fsync_s = self.DEFAULT_FSYNC_S  # running estimate of one fsync's latency
        self.slow = 0  # slow syncfs calls in a row
        self.probation = False
        self.backoff_s = self.FIRST_BACKOFF_S
        self.off_until = 0.0
        self.clock: Callable[[], float] = time.monotonic

    def allows(self) -> bool:
        return self.available and self.clock() >= self.off_until

    def measured_fsync(self, seconds: float) -> None:
        """A per-file fsync took ``seconds``: fold it into the estimate."""
        self.fsync_s += (seconds - self.fsync_s) / 8

    def measured_syncfs(self, seconds: float, replaced: int) -> None:
        """A ``syncfs`` covering ``replaced`` per-file fsyncs took ``seconds``."""
        budget = self.SLOW_FACTOR * max(1.0, replaced / self.threads) * self.fsync_s
        if seconds <= budget:
            self.slow, self.probation, self.backoff_s = 0, False, self.FIRST_BACKOFF_S
            return
        self.slow += 1
        if self.probation or self.slow >= self.SLOW_RUN:
            if self.probation:
                self.backoff_s = min(self.backoff_s * 2, self.MAX_BACKOFF_S)
            self.off_until = self.clock() + self.backoff_s
            self.slow, self.probation = 0, True

    def failed(self) -> None:
        self.available = False


#: The process-wide guard the write pool's batches consult.
guard: Final = SyncfsGuard()


@final
class Pending:
    """One write of a batch: its target, its complete temp (:meth:`stage`), and how it ended —
    ``error`` is ``None`` once it is durable in place."""

    __slots__ = ("by_syncfs", "data", "device", "error", "noop_fsync", "path", "temp")

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        #: The bytes (already redacted) still to be staged; dropped once they are.
        self.data = data
        self.temp: str | None = None
        self.device = 0
        #: Whether its filesystem's ``syncfs`` may stand in for its fsyncs (:func:`syncfs_covers`).
        self.by_syncfs = False
        #: Whether fsync is a no-op on its filesystem (tmpfs, ramfs: ``noop_fsync.py``): then
        #: it is only renamed, without any fsync or ``syncfs``.
        self.noop_fsync = False
        self.error: BaseException | None = None

    def stage(self) -> None:
        """Step 1: write the bytes to a fresh temp next to the target and close it — no
        descriptor is held while the write waits for its batch. A missing parent directory is
        created (the stage dir went away under the handler)."""
        data, self.data = self.data, b""
        temp = temp_name(self.path)
        try:
            fd = open_fd(temp, _NEW_FILE, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = open_fd(temp, _NEW_FILE, 0o644)
        try:
            write_all(fd, data)
            self.device = os.fstat(fd).st_dev
            self.noop_fsync = device_skips_fsync(self.device, fd)
            self.by_syncfs = not self.noop_fsync and syncfs_covers(fd, self.device)
        except BaseException:
            os.close(fd)
            remove_quietly(temp)
            raise
        os.close(fd)
        self.temp = temp

    def discard(self) -> None:
        if self.temp is not None:
            remove_quietly(self.temp)
            self.temp = None


def stage_and_finish(item: Pending, guard: SyncfsGuard = guard) -> None:
    """The whole per-file recipe for ``item`` (holding its bytes); a failure lands in
    ``item.error``."""
    try:
        item.stage()
    except Exception as exc:
        item.error = exc
        return
    finish_alone(item, guard)


def stage_and_commit(batch: Sequence[Pending], guard: SyncfsGuard = guard) -> None:
    """Step 1 for every write of ``batch`` (each holding its bytes), then steps 2-4 for those
    staged (:func:`commit_together`): one pool job for the whole batch. A write that cannot be
    staged fails alone (``error``)."""
    staged: list[Pending] = []
    for item in batch:
        try:
            item.stage()
        except Exception as exc:
            item.error = exc
        else:
            staged.append(item)
    commit_together(staged, guard)


def write_durably(path: str, data: bytes, guard: SyncfsGuard = guard) -> None:
    """The per-file recipe (``data`` already redacted): temp, fsync, rename, directory fsync, on
    the calling thread."""
    item = Pending(path, data)
    item.stage()
    finish_alone(item, guard)
    if item.error is not None:
        raise item.error


def finish_alone(item: Pending, guard: SyncfsGuard = guard) -> None:
    """The rest of the per-file recipe for a staged ``item``: fsync its temp, rename it, fsync
    its directory; a failure lands in ``item.error`` (and the temp is removed). The fsync's
    latency feeds ``guard``."""
    temp = item.temp
    if temp is None:
        return
    if item.noop_fsync:
        _rename_alone(item, temp)
        return
    try:
        fd = open_fd(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            begin = time.perf_counter()
            os.fsync(fd)
            guard.measured_fsync(time.perf_counter() - begin)
        finally:
            os.close(fd)
        pending.flush_all()  # events emitted before this file appears are in the log first
        os.replace(temp, item.path)
        item.temp = None
        fsync_directory(os.path.dirname(item.path) or ".")
    except Exception as exc:
        item.discard()
        item.error = exc


def _rename_alone(item: Pending, temp: str) -> None:
    """The recipe where fsync is a no-op: the complete temp renamed, nothing to fsync."""
    try:
        pending.flush_all()  # events emitted before this file appears are in the log first
        os.replace(temp, item.path)
        item.temp = None
    except Exception as exc:
        item.discard()
        item.error = exc


_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def commit_together(batch: Sequence[Pending], guard: SyncfsGuard = guard) -> None:
    """Steps 2-4 for staged writes, on the calling thread; each item's failure lands in its
    ``error``. Writes ``syncfs`` cannot cover (their filesystem, or their directory will not
    open) get the rest of the per-file recipe (:func:`finish_alone`); so does every write when
    a ``syncfs`` fails before the renames, and one that fails after them leaves the directories
    to their own fsyncs (:func:`fsync_directories`)."""
    handles: dict[int, int] = {}  # device -> a descriptor on it, for its syncfs
    together: list[Pending] = []
    try:
        for item in batch:
            if item.by_syncfs and _handle_for(item, handles):
                together.append(item)
            else:
                finish_alone(item, guard)
        if not together:
            return
        if not _sync(handles, len(together), guard):
            for item in together:
                finish_alone(item, guard)
            return
        renamed = rename_all(together)
        if not _sync(handles, len(renamed), guard):
            fsync_directories(renamed)
    finally:
        for fd in handles.values():
            os.close(fd)


def _handle_for(item: Pending, handles: dict[int, int]) -> bool:
    """A descriptor on ``item``'s filesystem in ``handles`` (its directory, opened here: the
    temps are closed, and once renamed they are gone); ``False`` if it cannot be opened."""
    if item.device not in handles:
        try:
            directory = os.path.dirname(item.path) or "."
            handles[item.device] = open_fd(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
    return True


def _sync(handles: dict[int, int], replaced: int, guard: SyncfsGuard) -> bool:
    """Steps 2 and 4: one ``syncfs`` per filesystem, timed for the guard; ``False`` when one
    failed (``syncfs`` is then off for the process)."""
    begin = time.perf_counter()
    try:
        for fd in handles.values():
            guard.sync(fd)
    except OSError:
        guard.failed()
        return False
    guard.measured_syncfs(time.perf_counter() - begin, replaced)
    return True


def rename_all(batch: Sequence[Pending]) -> list[Pending]:
    """Step 3: the synced temps over their targets, in order; the items renamed (a failed one
    keeps its error and loses its temp)."""
    renamed: list[Pending] = []
    pending.flush_all()  # events emitted before these files appear are in the log first
    for item in batch:
        if item.temp is None:
            continue
        try:
            os.replace(item.temp, item.path)
        except Exception as exc:
            item.error = exc
            item.discard()
        else:
            item.temp = None
            renamed.append(item)
    return renamed


def fsync_directories(renamed: Sequence[Pending]) -> None:
    """Step 4 without ``syncfs`` (it failed): each renamed item's directory fsynced, once per
    directory; a directory that cannot be fsynced fails the items renamed into it."""
    failures: dict[str, BaseException | None] = {}
    for item in renamed:
        directory = os.path.dirname(item.path) or "."
        if directory not in failures:
            try:
                fsync_directory(directory)
                failures[directory] = None
            except OSError as exc:
                failures[directory] = exc
        item.error = failures[directory]
