"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "filesystem_type", "scratch_root"]


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


@contextlib.contextmanager
def scratch_root(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh directory under ``parent`` (default ``<repo>/.bench-tmp``, on the repo's
    filesystem so fsync is real), removed afterwards with ``.bench-tmp`` if it was ours."""
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
