"""Descriptors the run directory's writers can give back when an ``open`` meets ``EMFILE``.

Why: a fan-out keeps the most recently written branch logs open (``events.py``, a budget
taken from the descriptor limit), and everything else the engine opens — a stage's
``prompt.md``, a temp file of an atomic write, a directory to fsync, a branch's new log — is
opened for a moment and closed again. The budget leaves room for those moments, but the room
is an estimate (another thread, a host application, the trio thread starved while the write
pool runs ahead), and a stage must not fail because a cache of open logs took the descriptor it
needed (issue #22). So such an open that meets ``EMFILE`` asks every registered holder to give
one kept descriptor back and tries again, until it succeeds or nothing more can be given back,
and only then raises.

How: the run directory's writers open through :func:`open_fd`; the hottest call sites (every
stage's files in ``atomic.py``) keep their plain ``os.open`` — no extra call on the path that
succeeds — and hand an ``OSError`` to :func:`open_after_error`. Anything but ``EMFILE`` is
raised as it was.
A holder is any object with a ``give_back_descriptor() -> bool`` method, callable from any
thread (the write pool's threads open files too); it is held weakly, so a finished run's hub
that was never closed does not stay registered.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from typing import Protocol

__all__ = [
    "DescriptorHolder",
    "give_back_one",
    "open_after_error",
    "open_descriptor_count",
    "open_fd",
    "register",
    "unregister",
]


_Path = str | os.PathLike[str]


class DescriptorHolder(Protocol):
    def give_back_descriptor(self) -> bool:
        """Close one descriptor kept only to save a later ``open``; ``False`` if none is."""
        ...


_holders: weakref.WeakSet[DescriptorHolder] = weakref.WeakSet()
_lock = threading.Lock()


def register(holder: DescriptorHolder) -> None:
    with _lock:
        _holders.add(holder)


def unregister(holder: DescriptorHolder) -> None:
    with _lock:
        _holders.discard(holder)


def give_back_one() -> bool:
    """Ask the holders, in turn, to close one kept descriptor; whether one did."""
    with _lock:
        holders = list(_holders)
    return any(holder.give_back_descriptor() for holder in holders)


def open_after_error(error: OSError, path: _Path, flags: int, mode: int = 0o777) -> int:
    """``os.open(path, flags, mode)`` again after it failed with ``error``: raised as it is
    unless it is ``EMFILE``; then a kept descriptor is given back before each new try, and
    the last ``EMFILE`` is raised once there is none left to give back."""
    while error.errno == errno.EMFILE and give_back_one():
        try:
            return os.open(path, flags, mode)
        except OSError as again:
            error = again
    raise error


def open_fd(path: _Path, flags: int, mode: int = 0o777) -> int:
    """``os.open`` that gives a kept descriptor back and tries again on ``EMFILE`` (for call
    sites off the hot path; the others inline the ``try`` and call :func:`open_after_error`)."""
    try:
        return os.open(path, flags, mode)
    except OSError as exc:
        return open_after_error(exc, path, flags, mode)


#: Assumed open when they cannot be counted (no ``/proc/self/fd`` nor ``/dev/fd``).
UNCOUNTED_DESCRIPTORS = 32


def open_descriptor_count() -> int:
    """How many descriptors the process has open now (the listing's own not counted)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing)) - 1
        except OSError:
            continue
    return UNCOUNTED_DESCRIPTORS
