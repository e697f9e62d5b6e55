"""No shared filesystem for the logs root (contract.md §10): the stage dir travels, both ways.

A remote attempt must write nothing under the driver's logs root: the logs root lives on the
driver's disk and a worker node need not see it. So the driver rewrites every reference to the
logs root in the stage's argv, environment and cwd (``ATTRACTOR_STAGE_DIR``,
``ATTRACTOR_STATUS_PATH``, the tool wrapper's journal and claim paths, a CLI agent's
``{prompt_file}``…) to :data:`SCRATCH`, a placeholder the worker replaces with a node-local
*mirror* of the logs root. The mirror holds the directories those paths live in and a copy of
the stage dir's files (the inputs a handler prepared, such as ``prompt.md``). When the process
group has ended, the worker ships back every file in the mirror that is new or changed
(``status.json``, the wrapper's ``.tool-exit``, the stage's artifacts), and the driver writes
each one at the same place under the logs root — through the redactor, atomically — before the
handler reads them, so the handler sees exactly the files a local attempt leaves.

The work directory is not part of this (it is shared, or uploaded): references into it stay
as they are, also when it lies inside the logs root (a git workspace's worktree).
**Decided:** only regular files travel (no symlinks, no deletions, no empty directories); the
remote ``$ATTRACTOR_LOGS_ROOT`` is the mirror, so other stages' files are not visible there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, final

__all__ = [
    "SCRATCH",
    "FileSink",
    "Outbound",
    "changed_files",
    "place_inputs",
    "substitute",
]

#: Stands for the worker's mirror of the logs root in what the driver sends.
SCRATCH = "@@ATTRACTOR_REMOTE_LOGS_ROOT@@"
#: Stage-dir files larger than this are not copied to the worker (logs, big artifacts).
_INPUT_LIMIT = 4 * 1024 * 1024
_CHUNK = 1024 * 1024
#: What may precede or follow a path inside one argument or value.
_BEFORE = r"(?<![^\s=:,'\"])"
_AFTER = r"(?=/|$|[\s:,'\"])"
_END_OF_PATH = re.compile(r"[\s:,'\"]")


@final
class Outbound:
    """The driver's half: rewrite references to the logs root, collect the stage's inputs."""

    def __init__(self, logs_root: Path, workdir: Path, stage_dir: Path) -> None:
        spellings = sorted({str(logs_root), os.path.abspath(logs_root)}, key=len, reverse=True)
        self._roots = spellings
        # A workdir inside the logs root (a git workspace's worktree) is not the logs root's.
        self._keep = tuple(
            w
            for w in {str(workdir), os.path.abspath(workdir)}
            if any(w.startswith(root + "/") for root in spellings)
        )
        alternatives = "|".join(map(re.escape, spellings))
        self._pattern = re.compile(f"{_BEFORE}({alternatives}){_AFTER}")
        self._stage_dir = stage_dir
        self._absolute_root = os.path.abspath(logs_root)
        self.dirs: set[str] = set()

    def rewrite(self, text: str) -> str:
        """``text`` with every logs-root reference (outside the workdir) as :data:`SCRATCH`;
        notes the mirror directories the stage will need."""
        if not any(root in text for root in self._roots):
            return text
        return self._pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        rest = match.string[match.start() :]
        if any(rest == keep or rest.startswith(keep + "/") for keep in self._keep):
            return match.group(0)
        end = _END_OF_PATH.search(rest, len(match.group(0)))
        path = rest[: end.start() if end else len(rest)]
        self._note_dir(match.group(1), path)
        return SCRATCH

    def _note_dir(self, root: str, path: str) -> None:
        relative = os.path.relpath(path, root)
        if relative.startswith(".."):
            return
        self.dirs.add(relative if os.path.isdir(path) else os.path.dirname(relative) or ".")

    def inputs(self, exclude: Iterable[Path]) -> list[tuple[str, bytes]]:
        """The stage dir's regular files (not its subdirectories, not the logs being written):
        what the handler prepared for the process."""
        skipped = {os.path.abspath(p) for p in exclude}
        found: list[tuple[str, bytes]] = []
        try:
            entries = list(os.scandir(self._stage_dir))
        except OSError:
            return found
        for entry in entries:
            path = os.path.abspath(entry.path)
            if path in skipped or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat().st_size > _INPUT_LIMIT:
                    continue
                data = Path(path).read_bytes()
            except OSError:
                continue
            found.append((os.path.relpath(path, self._absolute_root), data))
        return found


# --- the worker's half ---------------------------------------------------------------------


def place_inputs(
    mirror: Path, dirs: Iterable[str], inputs: Iterable[tuple[str, bytes]]
) -> dict[str, tuple[int, int]]:
    """Create the mirror's directories and files; return what it holds (to ship only changes)."""
    mirror.mkdir(parents=True, exist_ok=True)
    for relative in dirs:
        _inside(mirror, relative).mkdir(parents=True, exist_ok=True)
    for relative, data in inputs:
        target = _inside(mirror, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dict(_stats(mirror))


def substitute(value: str, mirror: Path) -> str:
    return value.replace(SCRATCH, str(mirror))


def substitute_all(values: Sequence[str], mirror: Path) -> list[str]:
    return [substitute(v, mirror) for v in values]


def substitute_env(env: Mapping[str, str], mirror: Path) -> dict[str, str]:
    return {k: substitute(v, mirror) for k, v in env.items()}


def changed_files(mirror: Path, before: Mapping[str, tuple[int, int]]) -> Iterator[dict[str, Any]]:
    """``file`` items (relative path, a chunk, ``last``) for every new or changed file."""
    for relative, stat in sorted(_stats(mirror)):
        if before.get(relative) == stat:
            continue
        try:
            with open(mirror / relative, "rb") as f:
                chunk = f.read(_CHUNK)
                while True:
                    following = f.read(_CHUNK)
                    yield {"kind": "file", "path": relative, "data": chunk, "last": not following}
                    if not following:
                        break
                    chunk = following
        except OSError:
            continue


def _stats(mirror: Path) -> Iterator[tuple[str, tuple[int, int]]]:
    for directory, _, names in os.walk(mirror):
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if os.path.isfile(path) and not os.path.islink(path):
                yield os.path.relpath(path, mirror), (st.st_size, st.st_mtime_ns)


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that would leave ``root``."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"path outside the stage mirror: {relative!r}")
    return root / pure


# --- the driver writes what came back --------------------------------------------------------


@final
class FileSink:
    """Writes shipped files under the logs root: atomically and through the redactor
    (:func:`~attractor_trio.persist.atomic.write_bytes_atomic`), not fsynced — a local stage's
    own writes are not either; the attempt's end marker is its commit point."""

    def __init__(self, logs_root: Path) -> None:
        self._root = logs_root
        self._pending: dict[str, list[bytes]] = {}
        self.written: list[str] = []

    def receive(self, item: Mapping[str, Any]) -> None:
        from ...persist.atomic import write_bytes_atomic

        relative = str(item["path"])
        parts = self._pending.setdefault(relative, [])
        parts.append(bytes(item["data"]))
        if not item["last"]:
            return
        del self._pending[relative]
        target = _inside(self._root, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, b"".join(parts), durable=False)
        self.written.append(relative)
