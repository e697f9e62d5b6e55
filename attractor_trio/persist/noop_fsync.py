"""Filesystems whose fsync does nothing (tmpfs, ramfs): there the durable writers skip their
fsyncs, and the directory opens that exist only to be fsynced (contract.md §2).

Why: tmpfs and ramfs keep every file in RAM only. Their ``fsync`` — of a file and of a
directory — is ``noop_fsync`` in the kernel: it returns 0 and changes nothing, so what a crash
can observe is the same with it or without it. A SIGKILL never needed fsync (the page cache
outlives the process: every completed ``write``/``rename`` is seen by the next reader), and a
power loss or kernel crash loses the whole filesystem, whatever was fsynced. Such an fsync
cannot fail either, so no error goes unreported. On the sequential per-stage path on tmpfs
(issue #22's comparison with py-attractor) a stage made four fsyncs and opened and closed a
stage directory only to fsync it: system calls and their Python for nothing.

How it is decided: by the filesystem of the file or directory actually written — its device
(``st_dev`` from an ``fstat`` of a descriptor the writer holds anyway, or a ``stat`` instead
of the ``open`` + ``fsync`` + ``close`` of a directory) —, never by path prefix, so a
directory on another filesystem (a mount under the run directory) is fsynced as before. The
filesystem type (``statfs`` magic number) is asked once per device and cached; a run start
forgets the cache (:func:`forget`: a device number can be reused by a later mount). Anything
unknown — no ``statfs`` in the C library, a failing ``stat`` — counts as a real disk: fsync as
before.

``ATTRACTOR_TRIO_FSYNC_ALWAYS=1`` in the environment turns the skipping off (read at import and
at every run start): every filesystem is fsynced as a disk. The test suite sets it, so that its
tests of fsync order and counts mean the same on a machine whose ``/tmp`` is a tmpfs (Fedora,
Arch); the tests of this module unset it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "FSYNC_ALWAYS_ENV",
    "NOOP_FSYNC_FILESYSTEMS",
    "device_skips_fsync",
    "directory_skips_fsync",
    "forget",
    "fs_magic",
    "fsync",
    "skips_fsync",
]

#: ``statfs`` magic numbers of the filesystems whose fsync is a no-op: tmpfs (``TMPFS_MAGIC``,
#: also ``/dev/shm``) and ramfs (``RAMFS_MAGIC``).
NOOP_FSYNC_FILESYSTEMS: Final = frozenset({0x01021994, 0x858458F6})


class _Statfs(ctypes.Structure):
    # ``struct statfs`` starts with ``__fsword_t f_type`` (a long on Linux); the rest is room.
    _fields_ = (("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 248))


def _load(name: str) -> Callable[..., int] | None:
    try:
        function: Any = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_fstatfs: Final = _load("fstatfs")
_statfs: Final = _load("statfs")


def fs_magic(target: int | str) -> int | None:
    """The ``statfs`` magic number of the filesystem of ``target`` (a descriptor or a path), or
    ``None`` when it cannot be asked."""
    buffer = _Statfs()
    if isinstance(target, int):
        ok = _fstatfs is not None and _fstatfs(target, ctypes.byref(buffer)) == 0
    else:
        ok = _statfs is not None and _statfs(os.fsencode(target), ctypes.byref(buffer)) == 0
    return buffer.f_type & 0xFFFFFFFF if ok else None


#: The environment variable that makes every filesystem count as a disk (``1``; see above).
FSYNC_ALWAYS_ENV: Final = "ATTRACTOR_TRIO_FSYNC_ALWAYS"


def _fsync_always() -> bool:
    return os.environ.get(FSYNC_ALWAYS_ENV, "") == "1"


#: Device (``st_dev``) -> whether its filesystem's fsync is a no-op.
_by_device: dict[int, bool] = {}
#: Whether :data:`FSYNC_ALWAYS_ENV` was set when last read (at import, by :func:`forget`).
_always = _fsync_always()


def device_skips_fsync(device: int, target: int | str) -> bool:
    """Whether fsync is a no-op on device ``device``, where ``target`` (a descriptor or a
    path) lives; the filesystem is asked once per device."""
    known = _by_device.get(device)
    if known is None:
        known = _by_device[device] = not _always and fs_magic(target) in NOOP_FSYNC_FILESYSTEMS
    return known


def skips_fsync(fd: int) -> bool:
    """Whether fsync of ``fd`` (and of the directory it was just created in) is a no-op."""
    return device_skips_fsync(os.fstat(fd).st_dev, fd)


def directory_skips_fsync(directory: str | os.PathLike[str]) -> bool:
    """Whether fsync of ``directory`` is a no-op: one ``stat`` instead of opening it, and
    ``False`` (fsync as before) if it cannot be asked."""
    try:
        device = os.stat(directory).st_dev
    except (OSError, ValueError):
        return False
    return device_skips_fsync(device, os.fspath(directory))


def fsync(fd: int) -> None:
    """``os.fsync(fd)``, unless it is a no-op there (looked up as ``os.fsync`` at each call,
    so a test or the benchmark's meter that patches it sees every real one)."""
    if not skips_fsync(fd):
        os.fsync(fd)


def forget() -> None:
    """Ask every device again, and read :data:`FSYNC_ALWAYS_ENV` again: a run starts (a device
    number freed by an unmount can come back as another filesystem's)."""
    global _always
    _by_device.clear()
    _always = _fsync_always()
