"""Work-directory snapshots for remote attempts (contract.md §10, ``executor.upload_workdir``).

With ``upload_workdir: true`` a remote stage does not see the driver's work directory: the driver
ships a *snapshot* of it, the node materializes it in a private directory, the stage runs there,
and what the stage changed comes back as a :class:`Patch` that the driver applies to its own
work directory when the attempt ends.

Why not Ray's ``runtime_env`` ``working_dir``: Ray supports a *local* ``working_dir`` only per
job, not per task (an attempt needs the work directory as it is when the attempt starts); tasks
with the same package share one extracted directory on a node (two fan-out branches would write
into each other's copy); every distinct runtime env starts fresh worker processes; and it brings
nothing back. So the snapshot is our own value, put into Ray's object store once per content
(``_upload.py``), and this module holds the logic, pure and without Ray:

- :func:`take_snapshot` walks the driver's directory under the :class:`Rules` (``.git`` and the
  run's logs root are never shipped; ``.gitignore`` files and ``executor.upload_excludes`` are
  honoured, see ``_ignore.py``; sockets, FIFOs and devices are skipped) and refuses one over
  the size limit;
- :func:`materialize` writes it on the node; :func:`diff` compares the node's directory after the
  stage with the snapshot, under the *snapshot's* rules (ignored paths never come back);
- :func:`apply_patch` checks every changed path against the driver's directory first (it must
  still be what the snapshot saw, or already what the stage made) and changes nothing when one
  differs; then writes file by file (temp + fsync + rename, directory fsync). Symlinks travel as
  links (never followed); a patch never writes through a symlinked directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import frozen

from ...persist.atomic import fsync_directory, replacing, write_all
from ._ignore import Matcher
from .base import WorkdirRefused

__all__ = [
    "Change",
    "Entry",
    "Patch",
    "Rules",
    "Snapshot",
    "apply_patch",
    "diff",
    "materialize",
    "rebase_argv",
    "rebase_env",
    "take_snapshot",
]

_MODE_BITS = 0o777


@frozen
class Entry:
    """One path of a tree: ``file``, ``link`` or ``dir``; permission bits; content digest
    (sha256 of the bytes, or of the link's target; empty for a directory)."""

    kind: str
    mode: int = 0
    digest: str = ""


@frozen
class Rules:
    """What a snapshot leaves out (root-relative, ``/``-separated paths).

    ``skip``: paths never shipped nor touched (the run's logs root inside the work directory).
    ``excludes``: ``executor.upload_excludes`` — gitignore syntax, anchored at the work directory,
    and *final*: a ``.gitignore`` negation cannot bring an excluded secret back.
    ``gitignores``: the ``(directory, text)`` of every ``.gitignore`` the driver's walk read; the
    node uses these, so a ``.gitignore`` the stage writes changes nothing about what comes back.
    """

    skip: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    gitignores: tuple[tuple[str, str], ...] = ()


@frozen
class Snapshot:
    """A work directory as shipped: its tree, the contents by digest, the rules it was taken
    under, and its identity (the same content → the same ``key``, put into Ray once)."""

    tree: Mapping[str, Entry]
    blobs: Mapping[str, bytes]
    rules: Rules
    key: str
    size: int


@frozen
class Change:
    """One path the stage changed: what the snapshot had (``base``), what the stage left
    (``new``; ``None`` = deleted) and, for a file or link, the new bytes."""

    path: str
    base: Entry | None
    new: Entry | None
    data: bytes = b""


@frozen
class Patch:
    """Everything one attempt changed, parents before children."""

    changes: tuple[Change, ...] = ()


# --- Walking and reading ------------------------------------------------------------------------


@frozen
class _Found:
    kind: str
    mode: int
    size: int


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return None  # sockets, FIFOs, devices: not content, never shipped


def _walk(root: Path, rules: Rules, *, learn: bool) -> tuple[dict[str, _Found], Rules]:
    """Every path under ``root`` the rules keep; with ``learn``, also read the ``.gitignore``
    files met on the way (the driver), else use only the ones in ``rules`` (the node)."""
    matcher = Matcher(rules.skip, rules.excludes, rules.gitignores)
    learned = list(rules.gitignores)
    found: dict[str, _Found] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        directory = root / rel if rel else root
        if learn:
            text = _read_gitignore(directory)
            if text:
                learned.append((rel, text))
                matcher.learn(rel, text)
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we walked (a driver-side writer): not part of the tree
        for item in entries:
            path = f"{rel}/{item.name}" if rel else item.name
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = _kind(info.st_mode)
            if kind is None or matcher.excluded(path, kind == "dir"):
                continue
            size = info.st_size if kind != "dir" else 0
            found[path] = _Found(kind, stat.S_IMODE(info.st_mode) & _MODE_BITS, size)
            if kind == "dir":
                pending.append(path)
    return found, Rules(rules.skip, rules.excludes, tuple(learned))


def _read_gitignore(directory: Path) -> str:
    path = directory / ".gitignore"
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return ""
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def _read(root: Path, path: str, found: _Found) -> tuple[Entry, bytes]:
    full = root / path
    if found.kind == "dir":
        return Entry("dir", found.mode), b""
    if found.kind == "link":
        data = os.fsencode(os.readlink(full))
        return Entry("link", 0, _digest(data)), data
    with open(full, "rb") as f:
        data = f.read()
    return Entry("file", found.mode, _digest(data)), data


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


# --- The four steps -----------------------------------------------------------------------------


def take_snapshot(root: Path, rules: Rules, *, limit: int) -> Snapshot:
    """The driver's work directory as shipped; over ``limit`` bytes → :class:`WorkdirRefused`
    naming the size and the biggest files (before any file is read)."""
    found, rules = _walk(root, rules, learn=True)
    size = sum(f.size for f in found.values())
    if size > limit:
        biggest = sorted(found.items(), key=lambda item: -item[1].size)[:3]
        listed = ", ".join(f"{p} ({_mib(f.size)})" for p, f in biggest)
        raise WorkdirRefused(
            f"work directory snapshot of {root} is {_mib(size)}, over executor.upload_limit_mb "
            f"({_mib(limit)}); biggest: {listed} — exclude them with .gitignore or "
            "executor.upload_excludes"
        )
    tree: dict[str, Entry] = {}
    blobs: dict[str, bytes] = {}
    identity = hashlib.sha256(repr(rules).encode())
    for path in sorted(found):
        try:
            entry, data = _read(root, path, found[path])
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed since the walk listed it (a driver-side writer)
        tree[path] = entry
        if entry.kind != "dir":
            blobs[entry.digest] = data
        identity.update(f"{path}\0{entry.kind}\0{entry.mode}\0{entry.digest}\n".encode())
    return Snapshot(tree, blobs, rules, identity.hexdigest(), size)


def materialize(snapshot: Snapshot, dest: Path) -> None:
    """Write the snapshot into ``dest`` (on the node; a fresh private directory)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(snapshot.tree, key=_depth_order):
        entry = snapshot.tree[path]
        target = dest / path
        if entry.kind == "dir":
            target.mkdir(exist_ok=True)
        elif entry.kind == "link":
            os.symlink(os.fsdecode(snapshot.blobs[entry.digest]), target)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, entry.mode)
            try:
                write_all(fd, snapshot.blobs[entry.digest])
                os.fchmod(fd, entry.mode)  # the umask applied to the create
            finally:
                os.close(fd)
    for path in sorted(snapshot.tree, key=_depth_order, reverse=True):
        if snapshot.tree[path].kind == "dir":  # last: a read-only directory gets its files first
            os.chmod(dest / path, snapshot.tree[path].mode)


def diff(snapshot: Snapshot, root: Path, *, limit: int) -> Patch:
    """What the stage changed in ``root`` relative to ``snapshot`` (under the snapshot's rules);
    more than ``limit`` bytes of new content → :class:`WorkdirRefused`."""
    found, _ = _walk(root, snapshot.rules, learn=False)
    changes: list[Change] = []
    size = 0
    for path in sorted(set(found) | set(snapshot.tree), key=_depth_order):
        base = snapshot.tree.get(path)
        if path not in found:
            changes.append(Change(path, base, None))
            continue
        new, data = _read(root, path, found[path])
        if new == base:
            continue
        size += len(data)
        if size > limit:
            raise WorkdirRefused(
                f"the stage's changes to the work directory exceed executor.upload_limit_mb "
                f"({_mib(limit)}); nothing was brought back"
            )
        changes.append(Change(path, base, new, data))
    return Patch(tuple(changes))


def apply_patch(patch: Patch, root: Path) -> list[str]:
    """Apply ``patch`` to the driver's ``root``; returns the changed paths.

    All or nothing against conflicts: every path must still be what the snapshot saw (or
    already what the stage made), else :class:`WorkdirRefused` lists them and nothing changes.
    Then removals (deepest first), writes (parents first; each file atomically), directory
    modes; every touched directory is fsynced.
    """
    todo = [c for c in patch.changes if _safe(c.path) and _current(root, c.path) != c.new]
    conflicts = sorted({p for c in todo for p in _conflicts(root, c, patch)})
    if conflicts:
        more = f" and {len(conflicts) - 10} more" if len(conflicts) > 10 else ""
        shown = ", ".join(conflicts[:10]) + more
        raise WorkdirRefused(
            "the work directory changed on the driver since the attempt's snapshot; the stage's "
            f"changes were not applied (conflicting: {shown})"
        )
    touched: set[Path] = set()
    for change in sorted(todo, key=lambda c: _depth_order(c.path), reverse=True):
        if change.base is not None and (change.new is None or change.new.kind != change.base.kind):
            _remove(root / change.path, change.base.kind)
            touched.add((root / change.path).parent)
    for change in sorted(todo, key=lambda c: _depth_order(c.path)):
        if change.new is not None:
            _write(root / change.path, change.new, change.data)
            touched.add((root / change.path).parent)
    for change in sorted(todo, key=lambda c: _depth_order(c.path), reverse=True):
        if change.new is not None and change.new.kind == "dir":
            os.chmod(root / change.path, change.new.mode)
    for directory in touched:
        if directory.is_dir():
            fsync_directory(directory)
    return [c.path for c in todo]


def _depth_order(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def _safe(path: str) -> bool:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise WorkdirRefused(f"refusing a patch path outside the work directory: {path!r}")
    return True


def _current(root: Path, path: str) -> Entry | None:
    """What the driver's tree has at ``path`` now: ``None`` when it is missing or below a
    symlink or a file (the walk would not see it), ``other`` for a socket, FIFO, …"""
    if _blocking_parent(root, path) is not None:
        return None
    try:
        info = (root / path).lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    kind = _kind(info.st_mode)
    if kind is None:
        return Entry("other")
    return _read(root, path, _Found(kind, stat.S_IMODE(info.st_mode) & _MODE_BITS, 0))[0]


def _blocking_parent(
    root: Path, path: str, becoming_dirs: frozenset[str] = frozenset()
) -> str | None:
    """The first parent of ``path`` that exists but is not a real directory (a symlink, a file),
    unless the patch turns it into one."""
    parent = ""
    for part in path.split("/")[:-1]:
        parent = f"{parent}/{part}" if parent else part
        try:
            mode = (root / parent).lstat().st_mode
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(mode):
            return None if parent in becoming_dirs else parent  # below it, all is new
    return None


def _conflicts(root: Path, change: Change, patch: Patch) -> list[str]:
    """Why ``change`` cannot apply: the path moved on since the snapshot, a parent is a symlink
    or not a directory, or a directory to be replaced holds files the patch does not remove."""
    found: list[str] = []
    if _current(root, change.path) != change.base:
        found.append(change.path)
    dirs = frozenset(c.path for c in patch.changes if c.new is not None and c.new.kind == "dir")
    blocking = _blocking_parent(root, change.path, dirs)
    if blocking is not None:
        found.append(f"{change.path} (parent {blocking} is not a directory)")
    replaced_dir = change.base is not None and change.base.kind == "dir"
    if replaced_dir and change.new is not None and change.new.kind != "dir":
        removed = {c.path for c in patch.changes if c.new is None}
        for left in _leftovers(root / change.path, change.path, removed):
            found.append(left)
    return found


def _leftovers(directory: Path, rel: str, removed: set[str]) -> list[str]:
    left: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return left
    for name in names:
        path = f"{rel}/{name}"
        if path not in removed:
            left.append(path)
        elif (directory / name).is_dir() and not (directory / name).is_symlink():
            left.extend(_leftovers(directory / name, path, removed))
    return left


def _remove(full: Path, kind: str) -> None:
    try:
        if kind == "dir":
            os.rmdir(full)
        else:
            os.unlink(full)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:  # files the snapshot never carried stay, and so does
            raise  # their directory


def _write(full: Path, entry: Entry, data: bytes) -> None:
    full.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "dir":
        full.mkdir(exist_ok=True)
    elif entry.kind == "link":
        temp = full.with_name(f".{full.name}.{os.getpid()}.link.tmp")
        os.symlink(os.fsdecode(data), temp)
        os.replace(temp, full)
    else:
        with replacing(full) as fd:
            write_all(fd, data)
            os.fchmod(fd, entry.mode)
            os.fsync(fd)


def rebase_env(env: Mapping[str, str], old: str, new: str) -> dict[str, str]:
    """The stage's environment with paths in the driver's work directory moved to the node's
    copy (``ATTRACTOR_WORKDIR``, the fallback status path, …). Paths in a logs root inside the
    work directory do not reach this: the driver sent them as ``_staging``'s placeholder."""
    return {name: _moved(value, old, new) for name, value in env.items()}


def rebase_argv(argv: Sequence[str], old: str, new: str) -> list[str]:
    """The stage's argv with the same move as :func:`rebase_env`, word by word: a CLI agent's
    ``{workdir}`` word points into the copy (a path embedded in a longer word does not move)."""
    return [_moved(word, old, new) for word in argv]


def _moved(value: str, old: str, new: str) -> str:
    if value == old or value.startswith(old + "/"):
        return new + value[len(old) :]
    return value
