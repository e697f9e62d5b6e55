"""One durable commit per stage boundary: fsyncs issued together, and a file rewritten in place
of a spare instead of a fresh temp (contract.md §2's recipe, each step kept).

Why: a sequential stage used to wait for four fsyncs one after another — ``status.json``, its
stage directory, ``checkpoint.json``, the run directory — at 0.17-0.3 ms each on the CI disk,
and the checkpoint's rename over the previous checkpoint freed the old file's blocks, which on
a disk mounted with ``discard`` costs 85-150 µs more than a rename to a fresh name.

* :class:`DirectorySyncs` is what the next commit owes: a main-line stage's ``status.json``,
  *held* (not yet written) until the checkpoint of the same stage boundary, and the directory
  fsyncs of renames made before it. A boundary is two waits (issue #22's "one commit per stage
  boundary"): (1) the status temp and the checkpoint temp, both complete, fsynced together;
  ``status.json`` renamed, then ``checkpoint.json``; (2) the stage directory and the run
  directory fsynced together; then ``checkpoint_saved``. A SIGKILL observes the finished
  ``.attempt.json`` marker (the exactly-once commit point, unmoved; in a stage dir the
  attempt created, created in place) before ``status.json``,
  and that before the checkpoint that counts the stage; the marker records the outcome
  itself, so a resume adopting it needs no ``status.json`` (and writes it again). A
  power loss finds each name naming a complete, fsynced file; its only new window (between
  the renames and wait 2) may keep the checkpoint's rename and lose the status file's — the
  checkpoint holds that stage's outcome, so the resume is consistent and only that stage's
  ``status.json`` artifact is missing.
* :func:`fsync_together` runs independent fsyncs concurrently on helper threads while the
  caller waits — unless fsync is cheap here (tmpfs, ``eatmydata``), where a thread hand-off
  would cost more than the fsyncs; it measures that as it goes.
* Where fsync is a no-op (tmpfs, ramfs: ``noop_fsync.py``) a commit fsyncs nothing there and
  opens no directory to fsync it — decided by the device of each file written, so a stage
  directory on another filesystem is still fsynced; what a crash can observe is unchanged.
* :class:`~.recycling.RecyclingWriter` (``recycling.py``) replaces a file that is rewritten at
  every stage (the checkpoint) by the recipe — complete temp, fsync, rename, directory fsync —
  but the temp is the inode the previous replacement displaced, kept under a second temp name
  by a hard link and overwritten in place: nothing is freed and nothing created per write.

Crash safety is argued next to each piece; ``tests/test_persist_commit.py`` kills a writer
at each step.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, final

from ..core import redaction
from . import noop_fsync, pending
from .atomic import StrPath, remove_quietly, temp_name, write_all
from .descriptors import open_after_error, open_fd

__all__ = ["DirectorySyncs", "fsync_together"]

#: Below this many seconds per fsync (a page-cache-only filesystem) the fsyncs run inline.
CHEAP_FSYNC_S: Final = 30e-6
_HELPERS: Final = 3

#: How many waits in a row measured fsync slow (at least :data:`CHEAP_FSYNC_S` per fsync, wall
#: time on the caller's thread); from :data:`SLOW_WAITS` on, the fsyncs go to the helpers.
#:
#: Why a run of slow waits, not a running average of the cost: the measurement also counts
#: whatever kept the thread from running when ``fsync`` returned — another process on the CPU
#: (two cores shared by busy processes), a profiler pausing the process, the GIL held by
#: another thread. On tmpfs one such stall (milliseconds) among 1-2 µs fsyncs pushed the
#: average over the threshold, and the next stage boundaries paid thread hand-offs for
#: nothing. A stall only ever adds time, and a disk is slow at every wait (ext4 here: 140 µs
#: at the 5th percentile of 600 waits, none under 30 µs), so four slow waits in a row — the
#: least of the last four over the threshold — happen only where fsync is slow; one cheap
#: wait brings the fsyncs back inline.
_slow_waits = 0
SLOW_WAITS: Final = 4
#: The clock the waits are measured with (a test substitutes its own).
_clock: Callable[[], float] = time.perf_counter


@final
class _Helper:
    """A thread that fsyncs the descriptors it is handed while the caller fsyncs its own.

    Why not a ``ThreadPoolExecutor``: a wait is one hand-off there and back, and a pool's
    ``submit``/``result`` (a future, a condition, a work queue, an idle semaphore) cost
    30-50 µs of the 2-core machine per round trip against 5-20 µs for two plain locks; every
    durable stage boundary waits twice. ``_go`` is released to start a batch, ``_done`` when
    it is finished; only the thread holding ``_helpers_lock`` hands it work.
    """

    __slots__ = ("_done", "_fds", "_go", "error")

    def __init__(self) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._fds: Sequence[int] = ()
        self.error: BaseException | None = None
        threading.Thread(target=self._serve, name="attractor-trio-fsync", daemon=True).start()

    def start(self, fds: Sequence[int]) -> None:
        self._fds, self.error = fds, None
        self._go.release()

    def wait(self) -> BaseException | None:
        """Block until the batch is done; its first error, if any."""
        self._done.acquire()
        return self.error

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            error: BaseException | None = None
            for fd in self._fds:
                try:
                    _fsync(fd)
                except BaseException as exc:  # handed to the caller, which raises it
                    error = error or exc
            self.error = error
            self._done.release()


#: The helper threads (at most ``_HELPERS``, for the whole process), and the lock a wait holds
#: while it uses them: a second thread committing at the same moment (two runs in two threads)
#: runs its fsyncs inline rather than starting more threads.
_helpers: list[_Helper] = []
_helpers_lock = threading.Lock()


def _helpers_for(count: int) -> list[_Helper]:
    """``count`` idle helpers (the caller holds ``_helpers_lock``)."""
    while len(_helpers) < count:
        _helpers.append(_Helper())
    return _helpers[:count]


def _reset_after_fork() -> None:
    global _helpers, _helpers_lock
    _helpers = []  # the parent's helper threads do not exist in the child
    _helpers_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _fsync(fd: int) -> None:
    """fsync ``fd`` (a directory that cannot be fsynced is tolerated, as
    :func:`~.atomic.fsync_directory_fd` does)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


def fsync_together(fds: Sequence[int]) -> None:
    """fsync every descriptor in ``fds`` and return when all are durable, the first error
    raised after all have finished. Concurrently on helper threads when fsync costs real
    time here, so the caller waits about one fsync latency instead of ``len(fds)``."""
    global _slow_waits
    if len(fds) <= 1 or _slow_waits < SLOW_WAITS or not _helpers_lock.acquire(blocking=False):
        if not fds:
            return
        begin = _clock()
        for fd in fds:
            _fsync(fd)
        slow = _clock() - begin >= CHEAP_FSYNC_S * len(fds)
        _slow_waits = _slow_waits + 1 if slow else 0
        return
    try:
        _fsync_with_helpers(fds)
    finally:
        _helpers_lock.release()


def _fsync_with_helpers(fds: Sequence[int]) -> None:
    """The caller fsyncs ``fds[0]``, the helpers the rest; the first error once all are done.
    The caller's own fsync is the wait's measurement (:data:`_slow_waits`)."""
    global _slow_waits
    helpers = _helpers_for(min(len(fds) - 1, _HELPERS))
    started: list[_Helper] = []
    failure: BaseException | None = None
    try:
        for index, helper in enumerate(helpers):
            helper.start(fds[1 + index :: len(helpers)])
            started.append(helper)
        try:
            begin = _clock()
            _fsync(fds[0])
            _slow_waits = _slow_waits + 1 if _clock() - begin >= CHEAP_FSYNC_S else 0
        except OSError as exc:
            failure = exc
    finally:
        _wait_for(started)  # every fsync finishes before the caller may close a descriptor
    for helper in started:
        failure = failure or helper.error
    if failure is not None:
        raise failure


def _wait_for(helpers: list[_Helper]) -> None:
    """Wait for each helper's batch. Interrupted (a ``KeyboardInterrupt`` in the wait), the
    helpers not yet waited for are dropped — they finish on their own and are never handed
    work again — and the interruption propagates."""
    for position, helper in enumerate(helpers):
        try:
            helper.wait()
        except BaseException:
            for abandoned in helpers[position:]:
                if abandoned in _helpers:
                    _helpers.remove(abandoned)
            raise


@final
class DirectorySyncs:
    """What the next commit owes: directory fsyncs (a rename into the directory happened and
    must become durable before the next commit), and files *held* for it — a main-line stage's
    ``status.json``, written by :class:`~.recycling.RecyclingWriter` together with the
    checkpoint that counts the stage (:meth:`hold`). Not thread-safe: one traversal adds, the
    same thread commits."""

    def __init__(self) -> None:
        # An ordered set of directory paths, each with a descriptor of it that its owner keeps
        # open (the run directory, where the checkpoint is renamed at every stage) or None.
        self._owed: dict[str, int | None] = {}
        self._held: dict[str, bytes] = {}  # target path -> its (redacted) document

    def __bool__(self) -> bool:
        return bool(self._owed or self._held)

    def defer(self, directory: StrPath, fd: int | None = None) -> None:
        """``directory``'s fsync is owed (a rename into it happened and must become durable
        before the next commit). ``fd``: a descriptor of it that the caller keeps open (and
        closes), fsynced instead of opening the directory again."""
        self._owed[os.fspath(directory)] = fd

    def hold(self, path: StrPath, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically and durably with the next commit, before its
        rename (a later :meth:`hold` of the same path replaces this one). Redacted here, as
        every file of a run is (contract.md §10)."""
        # (``redaction.active`` is ``None`` while no secret is registered: no call then)
        self._held[os.fspath(path)] = (
            data if redaction.active is None else redaction.file_bytes(path, data)
        )

    def open_all(self) -> tuple[list[int], list[int]]:
        """Descriptors of the owed directories to fsync, and those of them opened here (the
        caller closes those); the debt is cleared. A directory removed meanwhile owes
        nothing."""
        fds: list[int] = []
        opened: list[int] = []
        try:
            for directory, kept in self._owed.items():
                if kept is not None:
                    fds.append(kept)
                    continue
                try:
                    fd = open_fd(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                fds.append(fd)
                opened.append(fd)
        except BaseException:
            _close_all(opened)
            raise
        self._owed.clear()
        return fds, opened

    def sync(self) -> None:
        """Pay the debt now, without a checkpoint (a retry about to archive the stage's files,
        the end of a run): the held files' temps and the owed directories are fsynced together,
        the temps renamed, then their directories fsynced."""
        self.commit_before(None, lambda: None)

    def commit_before(self, fd: int | None, rename: Callable[[], None]) -> None:
        """The stage boundary's commit around the caller's own ``rename`` of the file open as
        ``fd`` (the checkpoint's complete temp; ``None``: none). Two waits:

        1. the held files are written to fresh temps, and those, ``fd`` and the owed directories
           are fsynced together;
        2. the held temps are renamed into place (in the order they were held), then ``rename``
           runs, then the directories of every rename are fsynced together — the caller owes
           its own directory with :meth:`defer` inside ``rename``.

        A temp on a filesystem whose fsync is a no-op (``noop_fsync.py``: one ``fstat`` of
        its descriptor) is not fsynced, nor is its directory; ``fd`` is ``None`` there.

        A SIGKILL observes the renames in this order (a held ``status.json`` before the
        checkpoint that counts its stage); a power loss finds every name naming a complete,
        fsynced file, and at worst the checkpoint's rename durable without a held file's — the
        checkpoint holds that stage's outcome, so only the artifact would be missing.
        """
        if len(self._held) == 1 and not self._owed:
            self._commit_one(fd, rename)
            return
        temps = self._write_held()
        try:
            try:
                fsyncs = [] if fd is None else [fd]
                for temp in temps:
                    if temp.synced:
                        fsyncs.append(temp.fd)
                if self._owed:
                    self._fsync_owed_with(fsyncs)
                elif fsyncs:
                    fsync_together(fsyncs)
            finally:
                for temp in temps:
                    os.close(temp.fd)
            pending.flush_all()  # events emitted before these files appear: in the log first
            for temp in temps:
                os.replace(temp.name, temp.target)
                self._held.pop(temp.target, None)
                if temp.synced:  # where fsync is a no-op, its directory's is too
                    self.defer(os.path.dirname(temp.target))
        except BaseException:
            for temp in temps:
                remove_quietly(temp.name)
            raise
        rename()
        if self._owed:
            self._fsync_owed_with([])

    def _commit_one(self, fd: int | None, rename: Callable[[], None]) -> None:
        """:meth:`commit_before` for the usual boundary — one held file (the stage's
        ``status.json``), no directory owed — as one straight path: the same steps in the same
        order, without the temps' list and records, and where fsync is a no-op without any
        fsync call (a sequential stage on tmpfs is ≈ 0.27 ms; the general path's layers were
        several µs of it)."""
        ((target, data),) = self._held.items()
        name = temp_name(target)
        temp = _open_temp(name, target)
        try:
            try:
                written = os.write(temp, data)
                if written != len(data):
                    write_all(temp, data[written:])
                synced = not noop_fsync.device_skips_fsync(os.fstat(temp).st_dev, temp)
                if synced:
                    fsync_together([temp] if fd is None else [fd, temp])
                elif fd is not None:
                    fsync_together([fd])
            finally:
                os.close(temp)
            pending.flush_all()  # events emitted before these files appear: in the log first
            os.replace(name, target)
        except BaseException:
            remove_quietly(name)
            raise
        self._held.pop(target, None)
        if synced:  # where fsync is a no-op, its directory's is too
            self.defer(os.path.dirname(target))
        rename()
        if self._owed:
            self._fsync_owed_with([])

    def _fsync_owed_with(self, fds: list[int]) -> None:
        """fsync ``fds`` and the owed directories together; the debt is cleared."""
        directories, opened = self.open_all()
        try:
            fsync_together([*fds, *directories])
        finally:
            _close_all(opened)

    def _write_held(self) -> list[_Temp]:
        """Each held file written to a fresh temp next to it (the common path inlines
        :func:`~.descriptors.open_fd`, :func:`~.atomic.write_all` and
        :func:`~.noop_fsync.skips_fsync`: a call each fewer, every stage boundary)."""
        temps: list[_Temp] = []
        try:
            for target, data in self._held.items():
                name = temp_name(target)
                fd = _open_temp(name, target)
                temp = _Temp(name, target, fd)
                temps.append(temp)
                written = os.write(fd, data)
                if written != len(data):
                    write_all(fd, data[written:])
                temp.synced = not noop_fsync.device_skips_fsync(os.fstat(fd).st_dev, fd)
        except BaseException:
            for temp in temps:
                os.close(temp.fd)
                remove_quietly(temp.name)
            raise
        return temps


@final
class _Temp:
    """A held file's complete temp: its name, its target, its open descriptor, and whether it
    is fsynced (not where fsync is a no-op: ``noop_fsync.py``)."""

    __slots__ = ("fd", "name", "synced", "target")

    def __init__(self, name: str, target: str, fd: int) -> None:
        self.name, self.target, self.fd = name, target, fd
        self.synced = True


_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


def _open_temp(name: str, target: str) -> int:
    """A new temp file ``name`` beside ``target``: its directory made again if the stage dir
    went away under the handler, and a full descriptor table given room (``open_fd``)."""
    try:
        return os.open(name, _NEW_FILE, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        return open_fd(name, _NEW_FILE, 0o644)
    except OSError as exc:
        return open_after_error(exc, name, _NEW_FILE, 0o644)
