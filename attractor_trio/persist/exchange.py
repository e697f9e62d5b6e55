"""Swap two names in one atomic step: ``renameat2(..., RENAME_EXCHANGE)`` (Linux ≥ 3.15).

Why: the checkpoint is replaced at every stage boundary through the inode the previous
replacement displaced (``recycling.py``). With ``link`` + ``rename`` that is two system calls
and a fresh temp name per stage; an exchange of the spare and the target is one call and the
spare keeps its name, now naming the displaced document. A system call costs 3-10 µs in the
virtual machines CI and users run on, against a sequential stage of about 0.3 ms (issue #22).

Crash safety is the same as the rename's: at every instant the target names either complete
document, and the spare's name (a temp name :func:`~.atomic.cleanup_temp_files` removes)
names the other one.

Where the call is missing (not Linux, an old C library) or the filesystem refuses it (some
network and FUSE filesystems answer ``EINVAL``), :func:`rename_exchange` says so by returning
``False`` and the caller keeps the ``link`` + ``rename`` recipe; any other error is raised.
Tests that kill the engine at its Nth commit wrap :func:`rename_exchange` like ``os.replace``:
it is called through this module's attribute for that reason.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from typing import Any, Final

__all__ = ["RENAME_EXCHANGE", "rename_exchange", "rename_exchange_available"]

#: ``<linux/fs.h>``: exchange both names atomically (both must exist).
RENAME_EXCHANGE: Final = 2
_AT_FDCWD: Final = -100
#: The answers meaning "not here" rather than "failed": no such call, or a filesystem or
#: sandbox that does not support the flag.
_UNSUPPORTED: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM})


def _load() -> Callable[..., int] | None:
    """``renameat2`` without ``argtypes``: it is only ever called with two ``int`` and two
    ``bytes`` and an ``int`` (an ``int`` goes as a C ``int``, a ``bytes`` as a ``char *``:
    what the prototype asks), and ctypes' per-argument conversions through ``argtypes``
    cost a quarter of a microsecond per call (one per stage boundary)."""
    try:
        function: Any = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_renameat2: Callable[..., int] | None = _load()
#: What :func:`os.fsencode` encodes a name with: ``str.encode`` with these is that function's
#: work without its two Python frames per name (two names per stage boundary).
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()


def rename_exchange(first: str, second: str) -> bool:
    """Exchange the names ``first`` and ``second`` (both must exist). ``False`` when this
    system or filesystem cannot (nothing changed: use ``link`` + ``rename``); :class:`OSError`
    for any other failure (``FileNotFoundError`` when either is missing)."""
    function = _renameat2
    if function is None:
        return False
    if (
        function(
            _AT_FDCWD,
            first.encode(_FS_ENCODING, _FS_ERRORS),
            _AT_FDCWD,
            second.encode(_FS_ENCODING, _FS_ERRORS),
            RENAME_EXCHANGE,
        )
        == 0
    ):
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), first, None, second)


def rename_exchange_available(directory: str | os.PathLike[str]) -> bool:
    """Whether names in ``directory`` can be exchanged (two scratch files are made, swapped
    and removed): for tests and reports; the writer simply asks :func:`rename_exchange`."""
    first = os.path.join(directory, f".exchange-probe-{os.getpid()}-a")
    second = os.path.join(directory, f".exchange-probe-{os.getpid()}-b")
    try:
        for name in (first, second):
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        return rename_exchange(first, second)
    finally:
        for name in (first, second):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
