"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "FsyncMeter", "filesystem_type", "scratch_root"]


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
#: How long removed files slow file creation nearby (measured: ~30-60 s on ext4 without a
#: journal, which skips recently freed inodes when it allocates new ones).
SETTLE_S = 60.0


@contextlib.contextmanager
def scratch_root(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``parent`` (default ``<repo>/.bench-tmp``, on the repo's
    filesystem so fsync is real), removed afterwards with ``.bench-tmp`` if it was ours.

    Removal is the last thing a benchmark does, and the next benchmark (with the default
    directory) waits until
    :data:`SETTLE_S` seconds have passed since: ext4 without a journal (the CI machine's root
    filesystem) will not reuse an inode for about a minute after it was freed, and scans past
    each such inode on every file it creates — after a benchmark removed 70,000 files, creating
    one file nearby cost ~1 ms instead of ~20 µs, which would be billed to the next engine run.
    """
    if parent is None:  # with --tmp-dir the caller manages the filesystem's state
        settle()
    base = parent or REPO / ".bench-tmp"
    created = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                base.rmdir()
        if parent is None:
            with contextlib.suppress(OSError):
                CLEANUP_MARKER.write_text(f"{time.time()}\n")


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
