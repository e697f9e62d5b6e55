"""``executor.upload_workdir`` around a Ray attempt (contract.md §10): both ends of the trip.

Driver (:class:`WorkdirShipping`): before submitting an attempt, snapshot the stage's work
directory (its cwd) in a thread, put it into Ray's object store — once per content: the 40
branches of a fan-out that start from one state share one object — and send its reference with
the attempt. When the attempt's process has ended, apply the patch that came back; patches apply
one at a time, in the order attempts end, each checked against the driver's files
(``_workdir.apply_patch``). A canceled attempt, or one whose node was lost, brings nothing back.

Node (:func:`unpack`): fetch the snapshot, materialize it in the attempt's private temp
directory, run the stage there (cwd and the work-directory paths of argv and environment
moved, also for a work directory inside the logs root; logs-root paths arrive as
``_staging``'s placeholder and go to the mirror after this), and after the process ends attach
the diff to the result.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, final

import trio

from ._workdir import (
    Patch,
    Rules,
    apply_patch,
    diff,
    materialize,
    rebase_argv,
    rebase_env,
    take_snapshot,
)
from .base import ExecutorSettings, WorkdirRefused

__all__ = ["WorkdirShipping", "unpack"]

#: Snapshots kept in the object store for reuse: the current state and the one before.
_CACHED = 2


@final
class WorkdirShipping:
    """The driver's end; see the module docstring."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self._limit = settings.upload_limit_mb * 2**20
        self._excludes = tuple(settings.upload_excludes)
        self._refs: collections.OrderedDict[str, Any] = collections.OrderedDict()
        #: Snapshots and patches take turns (FIFO): a snapshot sees whole patches, and patches
        #: apply one at a time in the order their attempts ended.
        self._lock = trio.Lock()

    async def ship(self, cwd: Path, env: Mapping[str, str]) -> dict[str, Any]:
        """Snapshot ``cwd``; the attempt spec's ``upload`` entry (over the limit →
        :class:`WorkdirRefused`)."""
        inner_logs_root = _inside(Path(env.get("ATTRACTOR_LOGS_ROOT", "")), cwd)  # never ships
        rules = Rules(skip=(inner_logs_root,) if inner_logs_root else (), excludes=self._excludes)
        async with self._lock:  # never half-way through another attempt's patch
            snapshot = await trio.to_thread.run_sync(
                functools.partial(take_snapshot, cwd, rules, limit=self._limit)
            )
        ref = self._refs.get(snapshot.key)
        if ref is None:
            import ray

            ref = await trio.to_thread.run_sync(ray.put, snapshot)
            self._refs[snapshot.key] = ref
            while len(self._refs) > _CACHED:
                self._refs.popitem(last=False)
        self._refs.move_to_end(snapshot.key)
        return {
            "snapshot": ref,
            "root": str(cwd),
            "limit": self._limit,
        }

    async def bring_back(self, cwd: Path, patch: Patch) -> list[str]:
        """Apply an ended attempt's patch to ``cwd`` (after the patches of attempts that ended
        earlier); a conflict → :class:`WorkdirRefused`, nothing applied."""
        async with self._lock:
            return await trio.to_thread.run_sync(apply_patch, patch, cwd)


def _inside(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies inside (``""`` otherwise)."""
    if not str(path):
        return ""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return ""
    return rel.as_posix() if rel.parts else ""


def unpack(
    spec: dict[str, Any], tmp: Path
) -> tuple[dict[str, Any], Callable[[dict[str, Any]], None] | None]:
    """The node's end: the attempt spec to run (in the node's copy of the work directory) and
    what to do with the outcome (attach the patch); ``(spec, None)`` without an upload."""
    upload = spec.get("upload")
    if upload is None:
        return spec, None
    import ray

    snapshot = ray.get(upload["snapshot"])
    copy = tmp / "workdir"
    materialize(snapshot, copy)
    root, limit = upload["root"], int(upload["limit"])
    moved = rebase_env({"cwd": spec["cwd"]}, root, str(copy))["cwd"]
    # An inner logs root's paths arrived as _staging's placeholder: only work-directory paths move.
    env = rebase_env(spec["env"], root, str(copy))
    argv = rebase_argv(spec["argv"], root, str(copy))

    def finish(outcome: dict[str, Any]) -> None:
        if outcome.get("kind") != "result":
            return
        try:
            outcome["patch"] = diff(snapshot, copy, limit=limit)
        except WorkdirRefused as exc:
            outcome.clear()
            outcome.update(kind="refused", message=str(exc))

    return {**spec, "argv": argv, "cwd": moved, "env": env}, finish
