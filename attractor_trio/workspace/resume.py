"""Resuming a run with a git workspace (contract.md §10): files and checkpoint must agree.

A crash can leave the worktree ahead of the checkpoint: an interrupted attempt's half-done
edits, or even a commit made just before the engine died and before the checkpoint recorded
it. Resume therefore resets the worktree (and the run branch) to the checkpoint's ``head``
before anything runs; what was there is saved as ``<node>/attempt-<n>/changes.patch`` of the
attempt that was interrupted, so nothing is lost silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.vocabulary import DEFAULT_KILL_GRACE
from ..errors import AttractorError
from ..persist.attempt_marker import read_attempt_marker
from ..persist.progress import read_progress
from .workspace import Workspace, reopen_workspace

__all__ = ["interrupted_attempt", "resume_workspace"]


async def resume_workspace(
    logs_root: Path,
    saved: Mapping[str, Any] | None,
    *,
    run_id: str,
    stage_root: Path,
    node_attempts: Mapping[str, int],
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> Workspace | None:
    """The run's workspace, reset to the checkpoint's head; ``None`` for a run without one."""
    workspace = await reopen_workspace(logs_root, saved, run_id=run_id, kill_grace=kill_grace)
    if workspace is None:
        return None
    where = interrupted_attempt(logs_root, node_attempts)
    if where is None:
        patch = logs_root / "workspace-changes.patch"
    else:
        number = _marked_number(stage_root / where[0]) or where[1]
        patch = stage_root / where[0] / f"attempt-{number}" / "changes.patch"
    await workspace.reset_to_head(patch)
    return workspace


def _marked_number(stage_dir: Path) -> int:
    """The number the stage's ``.attempt.json`` gives an attempt that did not finish (the
    engine's own numbering, archives included), or 0 — a finished marker belongs to an
    earlier attempt than the one that was interrupted."""
    marker = read_attempt_marker(stage_dir)
    if marker is None or marker.get("finished"):
        return 0
    number = marker.get("number")
    return number if isinstance(number, int) and not isinstance(number, bool) else 0


def interrupted_attempt(
    logs_root: Path, node_attempts: Mapping[str, int]
) -> tuple[str, int] | None:
    """``(node, n)`` of the last main-line attempt started after the last checkpoint, numbered
    like the stage's ``attempt-<n>`` directories (the checkpoint's count plus the attempts
    started since); ``None`` when no attempt was in flight."""
    try:
        events = read_progress(logs_root / "progress.ndjson")
    except (OSError, AttractorError):
        return None
    since: dict[str, int] = {}
    last = ""
    for event in events:
        if event.get("branch"):
            continue
        if event.get("event") == "checkpoint_saved":
            since, last = {}, ""
        elif event.get("event") == "stage_attempt_started":
            last = str(event.get("node_id", ""))
            since[last] = since.get(last, 0) + 1
    if not last:
        return None
    return last, node_attempts.get(last, 0) + since[last]
