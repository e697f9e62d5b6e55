"""The checkpoint's writer: one file atomically replaced at every stage boundary through the
inode the previous replacement displaced (contract.md §2's recipe, each step kept), with both
inodes kept open for the run.

Why: the checkpoint is rewritten after every stage. A rename over the previous checkpoint
freed the old file's blocks (85-150 µs on a disk mounted with ``discard``), and opening the
spare by name and closing it again cost an ``openat`` and a ``close`` per stage (a
sequential stage on tmpfs is ≈ 0.3 ms, a system call ≈ 1 µs with its Python). The commit
itself — which fsyncs go together, and the ``status.json`` held for it — is
:class:`~.commit.DirectorySyncs`'.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Final, final

from . import exchange, noop_fsync
from .atomic import StrPath, remove_quietly, temp_name, write_all, write_all_at
from .commit import DirectorySyncs
from .descriptors import open_fd

__all__ = ["RecyclingWriter"]

_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


@final
class _Descriptors:
    """The descriptors a :class:`RecyclingWriter` keeps for its run: the spare's inode, the
    target's (the document written last, the next spare) and the target's directory (for its
    fsync). Apart from the writer so that a finalizer can close them (a writer never closed)."""

    __slots__ = ("directory", "spare", "target")

    def __init__(self) -> None:
        self.spare: int | None = None
        self.target: int | None = None
        self.directory: int | None = None

    def close(self) -> None:
        """Close every one still open (again: nothing)."""
        for fd in (self.spare, self.target, self.directory):
            if fd is not None:
                os.close(fd)
        self.spare = self.target = self.directory = None


@final
class RecyclingWriter:
    """Atomically replaces one file, again and again, reusing the displaced inode as the next
    temp file.

    Each :meth:`write`: overwrite the spare (a temp-named inode no reader knows) with the new
    document, fsync it — together with the held files' temps and the owed directory fsyncs —,
    rename the held files, hard-link the current target to a fresh temp name (so the rename
    displaces nothing), rename the spare over the target, fsync the directories of all those
    renames together (:meth:`DirectorySyncs.commit_before`). The linked old inode is the next
    spare. On tmpfs and ramfs, where fsync is a no-op (``noop_fsync.py``, decided once, from
    the first spare's device), the writer issues none and never opens the directory.

    The two inodes stay open for the run (:class:`_Descriptors`, closed by :meth:`close` or a
    finalizer): a write is ``pwrite`` (+ ``ftruncate``) + fsync + ``link`` + ``rename``,
    without an ``open``/``close`` of the spare per stage. This assumes what the directory's
    kept descriptor and the progress log's already do: while the run holds its lock nothing
    else renames over the target, so the inode linked to the new spare name is the one whose
    descriptor we keep as the target's.

    Crash safety. A SIGKILL while the spare is written leaves the target untouched (the spare is
    not the target); between the link and the rename the target is still the old, complete
    document; after the rename it is the new one, fsynced before the rename. Spares are named as
    :func:`~.atomic.cleanup_temp_files` expects, so a killed run's are removed at the next
    start; :meth:`close` removes the last one when the run ends. A spare whose name was removed
    behind our back is noticed by its rename (``FileNotFoundError``): the same bytes then go to
    a fresh temp by the recipe (complete, fsynced, renamed), so the target never names a
    half-written or unsynced file. A power loss finds the target naming either complete
    document. Redaction is the caller's (the checkpoint's encoder redacts piece by piece).
    """

    def __init__(self, target: StrPath, owed: DirectorySyncs | None = None) -> None:
        self.path = Path(target)
        self.owed = owed if owed is not None else DirectorySyncs()
        # Strings, not Paths: every stage renames and links here, and Path arithmetic and
        # ``__fspath__`` cost more than those system calls on tmpfs.
        self._target = os.fspath(target)
        self._directory = os.path.dirname(self._target) or "."
        self._fds = _Descriptors()
        self._finalizer = weakref.finalize(self, self._fds.close)
        #: The spare's name (its descriptor, once open, is ``_fds.spare``).
        self._spare: str | None = None
        #: Whether fsync is a no-op where the target lives; ``None`` until the first spare.
        self._noop: bool | None = None
        #: How many bytes the spare holds, when known (it is the document written before the
        #: current one): a longer or equal new document needs no ``ftruncate``.
        self._spare_size: int | None = None
        self._target_size: int | None = None
        self._writing: tuple[str, int, bytes] | None = None
        #: Whether the spare and the target can swap names in one call (``exchange.py``);
        #: ``None`` until asked, ``False`` after a "not here": ``link`` + ``rename`` then.
        self._exchanges: bool | None = None

    def write(self, data: bytes) -> None:
        spare, fd = self._spare, self._fds.spare
        if spare is None or fd is None:
            spare, fd = self._spare_descriptor()
        # What :meth:`_rename` renames (a bound method for ``commit_before``, not a closure
        # built per write); ``None`` once renamed.
        self._writing = (spare, fd, data)
        try:
            written = os.pwrite(fd, data, 0)
            if written != len(data):
                write_all_at(fd, data[written:], written)
            if self._spare_size is None or len(data) < self._spare_size:
                os.ftruncate(fd, len(data))  # a shorter document than the spare held
            self.owed.commit_before(None if self._noop else fd, self._rename)
        except BaseException:
            if self._writing is not None:  # not renamed
                self._writing = None
                self._drop_spare()
            raise

    def _rename(self) -> None:
        """Step 2's own rename: the complete, fsynced spare over the target, whose displaced
        inode becomes the next spare; the run directory's fsync is owed to the same wait.

        No :func:`~.pending.flush_all` of its own: :meth:`DirectorySyncs.commit_before`, its
        only caller, flushed the held events just before, and nothing in between emits.

        Once the target is ours, the spare and the target swap names in one call: the target
        names the new document, the spare's name the displaced one — what
        :meth:`_keep_current`'s link and the rename achieve in two calls and a new temp name.
        Where that cannot be done (``False``: never asked again this run), or when either
        name was removed behind our back (``FileNotFoundError``), the recipe
        (:meth:`_replace_by_link`) notices which and copes."""
        assert self._writing is not None
        spare, fd, data = self._writing
        directory = None if self._noop else self._directory_descriptor()
        fds = self._fds
        if fds.target is not None and self._exchanges is not False:
            try:
                self._exchanges = done = exchange.rename_exchange(spare, self._target)
            except FileNotFoundError:
                done = False
            if done:
                fds.target, fds.spare = fd, fds.target  # the spare's name: the displaced one
                self._spare_size, self._target_size = self._target_size, len(data)
                if directory is not None:
                    self.owed.defer(self._directory, directory)
                self._writing = None
                return
        self._replace_by_link(spare, fd, data, directory)

    def _replace_by_link(self, spare: str, fd: int, data: bytes, directory: int | None) -> None:
        """:meth:`_rename` by the recipe: link the current target to a fresh temp name (the
        next spare), rename the spare over the target."""
        keep = self._keep_current()
        try:
            try:
                os.replace(spare, self._target)
            except FileNotFoundError:
                if not os.path.isdir(self._directory):
                    raise
                fd = self._replace_from_fresh_temp(data)
        except BaseException:
            if keep is not None:
                remove_quietly(keep)
            raise
        fds = self._fds
        displaced, fds.target, fds.spare = fds.target, fd, None
        if keep is None and displaced is not None:  # the target was gone: nothing displaced
            os.close(displaced)
        elif keep is not None:
            fds.spare = displaced  # ``None`` for a target we did not write: opened by name
        self._spare = keep
        # The displaced inode (the next spare) holds the document written before this one.
        self._spare_size, self._target_size = self._target_size, len(data)
        if directory is not None:
            self.owed.defer(self._directory, directory)
        self._writing = None

    def _replace_from_fresh_temp(self, data: bytes) -> int:
        """The spare's name was removed behind our back, and its inode (open as
        ``_fds.spare``) is nobody's now: ``data`` goes to a fresh temp by the recipe —
        complete, fsynced, renamed over the target. The fresh inode's descriptor."""
        orphan, self._fds.spare = self._fds.spare, None
        if orphan is not None:
            os.close(orphan)
        temp = temp_name(self._target)
        fd = open_fd(temp, _NEW_FILE, 0o644)
        try:
            write_all(fd, data)
            if not self._noop:
                os.fsync(fd)
            os.replace(temp, self._target)
        except BaseException:
            os.close(fd)
            remove_quietly(temp)
            raise
        return fd

    def _keep_current(self) -> str | None:
        """Link the current target to a fresh temp name; that name, or ``None`` when there is
        no target yet (asked only before our first rename: afterwards the target is ours)."""
        if self._fds.target is None and not os.path.lexists(self._target):
            return None
        name = temp_name(self._target)
        try:
            os.link(self._target, name)
        except FileNotFoundError:  # removed behind our back: nothing to displace
            return None
        return name

    def _directory_descriptor(self) -> int:
        """The target's directory, kept open for the directory fsync of every write (an open
        and a close fewer per stage). Renames still go by path: like the progress log's
        descriptor, this assumes the run directory is not swapped under a running engine."""
        fd = self._fds.directory
        if fd is None:
            fd = open_fd(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._fds.directory = fd
        return fd

    def close(self) -> None:
        """Remove the spare (the run is over; a resume starts without one) and let the
        descriptors go."""
        if self._spare is not None:
            remove_quietly(self._spare)
            self._spare = None
        self._fds.close()

    def _drop_spare(self) -> None:
        """A write failed before its rename: the spare may hold anything; a fresh one next."""
        fd, self._fds.spare = self._fds.spare, None
        if fd is not None:
            os.close(fd)
        if self._spare is not None:
            remove_quietly(self._spare)
            self._spare = None

    def _spare_descriptor(self) -> tuple[str, int]:
        """The spare's name and its kept descriptor (opened by name only for a spare that
        was a target we did not write — the previous run's checkpoint; created when there is
        none)."""
        fds = self._fds
        spare = self._spare
        if spare is not None:
            if fds.spare is not None:
                return spare, fds.spare
            try:
                fds.spare = open_fd(spare, os.O_WRONLY | os.O_CLOEXEC)
                return spare, fds.spare
            except FileNotFoundError:  # removed behind our back: start a fresh one
                self._spare = None
        self._spare_size = 0
        spare = temp_name(self._target)
        fd = fds.spare = open_fd(spare, _NEW_FILE, 0o644)
        self._spare = spare
        if self._noop is None:
            self._noop = noop_fsync.skips_fsync(fd)
        return spare, fd
