"""Attempt-directory retention (contract.md §10): a looping stage keeps only its newest archives.

Every new attempt of a stage moves the previous attempt's files into ``attempt-<n>/``; a node
visited thousands of times would keep thousands of them. :func:`prune_archives` deletes all
but the newest ``keep`` after each archive.

Crash safety rests on two facts. The newest archive is never pruned, so the highest
``attempt-<n>`` number on disk only grows, and :func:`newest_archive` lets attempt numbering
continue from it even when the checkpoint's count lags behind (a crash between an attempt and
its checkpoint): numbers never restart or collide after pruning. And pruning removes the
oldest first, one directory at a time: a crash mid-way leaves at worst a partly deleted old
archive, which the next prune removes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Final

__all__ = [
    "ARCHIVE_PREFIX",
    "DEFAULT_ATTEMPT_RETENTION",
    "last_attempt_in",
    "last_attempt_on_disk",
    "prune_archives",
]

#: Archived ``attempt-<n>/`` directories kept per stage directory unless configured.
DEFAULT_ATTEMPT_RETENTION: Final = 50
ARCHIVE_PREFIX: Final = "attempt-"
#: ``attempt-7`` and, for a name that was taken, ``attempt-7+`` (see the archiver).
_ARCHIVE: Final = re.compile(r"attempt-(\d+)(\+*)")


def _archives(stage_dir: Path) -> list[tuple[int, int, Path]]:
    """``(number, suffix length, path)`` of every archive, oldest first."""
    found: list[tuple[int, int, Path]] = []
    try:
        entries = list(stage_dir.iterdir())
    except FileNotFoundError:
        return found
    for path in entries:
        match = _ARCHIVE.fullmatch(path.name)
        if match is not None and path.is_dir():
            found.append((int(match.group(1)), len(match.group(2)), path))
    found.sort()
    return found


def last_attempt_on_disk(stage_dir: Path) -> int:
    """The number of the newest attempt ``stage_dir`` shows: its newest archive ``n``, or
    ``n + 1`` when files of a later attempt lie beside the archives; 0 without archives."""
    try:
        names = os.listdir(stage_dir)
    except FileNotFoundError:
        return 0
    return last_attempt_in(names)


def last_attempt_in(names: list[str]) -> int:
    """:func:`last_attempt_on_disk` from a stage dir's listing."""
    numbers = [int(m.group(1)) for m in map(_ARCHIVE.fullmatch, names) if m is not None]
    if not numbers:
        return 0
    loose = any(not name.startswith(ARCHIVE_PREFIX) for name in names)
    return max(numbers) + (1 if loose else 0)


def prune_archives(stage_dir: Path, keep: int) -> int:
    """Delete all but the newest ``keep`` (at least 1) archives, oldest first; the count
    deleted. A directory that cannot be removed is left for the next prune."""
    archives = _archives(stage_dir)
    doomed = archives[: max(0, len(archives) - max(1, keep))]
    for _, _, path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return len(doomed)
