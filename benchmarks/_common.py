"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "IMPORT_TREE",
    "REPO",
    "FsyncMeter",
    "filesystem_type",
    "not_a_source_tree",
    "scratch_root",
]


#: The start of a child script (``python -c``) that measures the source tree named by its
#: ``sys.argv[1]`` (a worktree, or ``git archive REV | tar -x -C DIR``): that tree's engine
#: and ``benchmarks/engine.py`` are imported, checked by path (``ab.py``, ``calls.py``,
#: ``instructions.py``).
IMPORT_TREE = r"""
import sys
tree = sys.argv[1]
sys.path[:0] = [tree, tree + "/benchmarks"]
import attractor_trio, engine
if not attractor_trio.__file__.startswith(tree):
    raise SystemExit(f"imported {attractor_trio.__file__}, not the tree {tree}")
"""


def not_a_source_tree(tree: Path) -> str | None:
    """Why ``tree`` cannot be measured by an :data:`IMPORT_TREE` child, or ``None``."""
    if (tree / "attractor_trio").is_dir() and (tree / "benchmarks/engine.py").is_file():
        return None
    return f"{tree}: not a source tree (no attractor_trio/ or benchmarks/engine.py)"


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` per ``/proc/mounts`` (Linux), else ``?``."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    resolved, best, kind = str(path.resolve()), "", "?"
    for fields in (line.split() for line in mounts):
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


#: When the last benchmark removed its scratch files (see :func:`scratch_root`).
CLEANUP_MARKER = REPO / ".bench-last-cleanup"
#: How long a freed inode is skipped by ext4 without a journal: 60 s after it was freed, or
#: 360 s while its inode-table block is still dirty (``RECENTCY_MIN``/``RECENTCY_DIRTY`` in
#: ``fs/ext4/ialloc.c``; writeback usually cleans the block within ~30 s).
SETTLE_S = 60.0
#: ``FS_TOPDIR_FL`` and the ioctls that read and set it (``linux/fs.h``; ``chattr +T``).
FS_TOPDIR_FL = 0x00020000
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602


@contextlib.contextmanager
def scratch_root(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``parent`` (default ``<repo>/.bench-tmp``, on the repo's
    filesystem so fsync is real), removed afterwards with ``.bench-tmp`` if it was ours.
    Prints one line on what creating a file costs there (:func:`creation_probe`).

    Why all the care: ext4 without a journal (the CI machine's root filesystem) will not reuse
    an inode for 1-6 minutes after it was freed (see :data:`SETTLE_S`), and every file or
    directory it creates first scans past each such inode of its block group. Right after a
    benchmark removed 70,000 files, creating one file nearby cost 0.2-1 ms instead of ~20 µs —
    ``perf`` shows the kernel's ``recently_deleted()`` under ``__ext4_new_inode`` — and that
    would be billed to the engine. So:

    * removal is the last thing a benchmark does, never between its runs;
    * ``.bench-tmp`` gets the Orlov "top directory" flag (``chattr +T``), so each benchmark's
      directory is placed in a lightly used block group (chosen by a hash of its name) instead
      of its parent's group, which the previous benchmark may just have emptied; the runs' own
      files then share that group, as a run directory created anywhere else would;
    * if creating files there is still slow, another directory is tried (up to
      :data:`PLACEMENT_TRIES`; the slow ones stay until the end, since removing them would
      free more inodes);
    * where the flag cannot be set (another filesystem, no permission), the next benchmark
      waits until :data:`SETTLE_S` seconds have passed since the last one removed its files.
    """
    base = parent or REPO / ".bench-tmp"
    created = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    # With --tmp-dir the caller manages that directory and its filesystem's state.
    spread = parent is None and spread_subdirectories(base)
    if parent is None and not spread:
        settle()
    tried: list[Path] = []
    try:
        while True:
            tried.append(Path(tempfile.mkdtemp(prefix=prefix, dir=base)))
            probe = creation_probe(tried[-1] / "probe")
            if not probe.slow or not spread or len(tried) == PLACEMENT_TRIES:
                break
        print(probe.describe(len(tried)), flush=True)
        yield tried[-1]
    finally:
        for root in tried:
            shutil.rmtree(root, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                base.rmdir()
        if parent is None:
            with contextlib.suppress(OSError):
                CLEANUP_MARKER.write_text(f"{time.time()}\n")


def spread_subdirectories(directory: Path) -> bool:
    """Set ``FS_TOPDIR_FL`` on ``directory`` (Linux ext2/3/4: new subdirectories go to the
    emptiest block group); whether it is set now."""
    if sys.platform != "linux":
        return False
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        (flags,) = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(4)))
        if not flags & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_TOPDIR_FL))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def settle() -> None:
    """Wait out the rest of :data:`SETTLE_S` after the previous benchmark's cleanup."""
    try:
        cleaned_at = float(CLEANUP_MARKER.read_text())
    except (OSError, ValueError):
        return
    wait = cleaned_at + SETTLE_S - time.time()
    if 0 < wait <= SETTLE_S:
        print(
            f"(waiting {wait:.0f} s: the previous benchmark removed its files "
            f"{SETTLE_S - wait:.0f} s ago, and recently freed inodes slow file creation)",
            flush=True,
        )
        time.sleep(wait)


#: Creating a file slower than this (µs) means recently freed inodes in the block group.
SLOW_CREATE_US = 100.0
#: How many scratch directories :func:`scratch_root` tries before it settles for a slow one.
PLACEMENT_TRIES = 5


@frozen
class CreationProbe:
    """What creating a directory or a file cost in one place, once."""

    microseconds: float

    @property
    def slow(self) -> bool:
        return self.microseconds > SLOW_CREATE_US

    def describe(self, tries: int) -> str:
        text = f"file creation where the runs go: {self.microseconds:.0f} µs per mkdir or create"
        if tries > 1:
            text += f" (directory {tries} of {tries} tried; the others were slower)"
        if self.slow:
            text += " — slow: recently freed inodes nearby, see benchmarks/_common.py"
        return text


def creation_probe(directory: Path, count: int = 100) -> CreationProbe:
    """Time ``count`` pairs of mkdir + file creation in ``directory`` (created here; nothing
    is removed, since removing would slow the runs that follow)."""
    directory.mkdir()
    begin = time.perf_counter()
    for index in range(count):
        child = directory / f"p{index:04d}"
        child.mkdir()
        (child / "f").write_bytes(b"x")
    return CreationProbe((time.perf_counter() - begin) / (2 * count) * 1e6)


_REAL_FSYNC = os.fsync


class FsyncMeter:
    """A drop-in for ``os.fsync`` that counts the calls and the seconds they take (from any
    thread: the engine's write pool fsyncs off the trio thread). :meth:`note` runs after the
    clock stops, so a subclass's bookkeeping is not billed to fsync."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        begin = time.perf_counter()
        try:
            _REAL_FSYNC(fd)
        finally:
            elapsed = time.perf_counter() - begin
            with self._lock:
                self.seconds += elapsed
                self.calls += 1
                self.note(fd)

    def note(self, fd: int) -> None:
        """Called once per fsync, under the meter's lock."""
