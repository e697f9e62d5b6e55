"""The attempt in progress, as a value every layer may read (contract.md §3).

What the engine knows about the attempt a stage is running (attempt number and id, stage
directory, event emitter, liveness callback) travels in a :class:`contextvars.ContextVar`:
trio copies context into child tasks, so a handler, the backend it calls and any task they
start all see their own attempt. It lives in ``core`` (plain data, no IO) so that handlers
and the backends below them share it without importing each other;
:mod:`attractor_trio.handlers.base` re-exports it with the handler interface.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NamedTuple

from attrs import field, frozen

from ..dot.graph import Node
from .vocabulary import DEFAULT_KILL_GRACE

__all__ = [
    "AttemptInfo",
    "KnownPaths",
    "current_attempt",
    "require_attempt",
    "reset_attempt",
    "set_attempt",
]

EmitFn = Callable[..., None]


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


class KnownPaths(NamedTuple):
    """An :attr:`AttemptInfo.known_status_path` with more in it: what the engine derived once
    for the node's stage dir and the executor's work directory, as text for the system calls
    (``os.fspath`` of a ``Path`` is two Python calls, and an attempt makes about ten).
    ``sources`` is the attempt's ``persist.status.StatusSources`` (core does not import
    persist). Valid only while ``stage_dir`` and ``workdir`` are those very objects."""

    stage_dir: Path
    status_path: Path
    #: ``os.fspath(stage_dir)``.
    stage_dir_text: str
    workdir: Path
    sources: Any


@frozen(slots=False)
class AttemptInfo:
    """Everything the engine knows about the attempt a handler is executing.

    Not slotted: one is built per attempt, and a frozen attrs class fills each of its 22
    slots through a method call, where it fills ``__dict__`` by plain item assignment."""

    run_id: str
    node_id: str
    attempt: int
    max_attempts: int
    attempt_id: str
    logs_root: Path
    stage_dir: Path
    workdir: Path
    predecessor_node: str = ""
    predecessor_outcome: str = ""
    branch: str = ""
    #: ``emit(event_name, **fields)``: an event in this attempt's branch.
    emit: EmitFn = _noop
    #: Called whenever the attempt makes observable progress (output, stream data).
    progress: Callable[[], None] = _noop
    kill_grace: float = DEFAULT_KILL_GRACE
    #: The run's :class:`~attractor_trio.persist.artifacts.ArtifactStore` (spec S5.5).
    artifacts: Any = None
    #: How many times the traversal has entered this node, this one included.
    visit: int = 1
    #: This attempt's node in the liveness tree (parallel branches hang below it).
    liveness: Any = None
    #: The git workspace the attempt works in (contract.md §10), or ``None``.
    workspace: Any = None
    #: Announces the attempt's ``stage_attempt_started`` (an ``AttemptStart``; a remote
    #: executor announces it when a node starts the process, contract.md §10), or ``None``.
    start: Any = None
    #: The engine created the stage dir for this attempt (its ``mkdir`` succeeded): nothing in
    #: it can be left from an earlier attempt or run (``persist/status.py`` step 1 relies on it).
    fresh_stage_dir: bool = False
    #: With ``fresh_stage_dir``: the work directory's stale status files were removed for
    #: this attempt already (a fan-out branch's set-up, ``persist/sweep.py``), so step 1 of
    #: ``persist/status.py`` has nothing left to do.
    fallbacks_cleared: bool = False
    #: ``(stage_dir, stage_dir / "status.json")`` as the engine made them once for the node,
    #: so :attr:`status_path` hands out that object (its text already formatted for the
    #: system calls) instead of joining a new one per use; ignored unless ``stage_dir`` is
    #: that very object (an ``evolve`` to another stage dir recomputes).
    #: A :class:`KnownPaths` carries more (the text forms, the status sources).
    known_status_path: tuple[Path, Path] | KnownPaths | None = field(
        default=None, eq=False, repr=False
    )

    @property
    def status_path(self) -> Path:
        known = self.known_status_path
        if known is not None and known[0] is self.stage_dir:
            return known[1]
        return self.stage_dir / "status.json"

    def process_env(self) -> dict[str, str]:
        """The ``ATTRACTOR_*`` variables every stage process gets (contract.md §3), and their
        ``KILROY_*`` aliases (contract.md §10) so stages written for kilroy find them too."""
        return {
            **self._kilroy_env(),
            "ATTRACTOR_RUN_ID": self.run_id,
            "ATTRACTOR_NODE_ID": self.node_id,
            "ATTRACTOR_ATTEMPT": str(self.attempt),
            "ATTRACTOR_ATTEMPT_ID": self.attempt_id,
            "ATTRACTOR_LOGS_ROOT": str(self.logs_root),
            "ATTRACTOR_STAGE_DIR": str(self.stage_dir),
            "ATTRACTOR_STATUS_PATH": str(self.status_path),
            "ATTRACTOR_WORKDIR": str(self.workdir),
            "ATTRACTOR_PREDECESSOR_NODE": self.predecessor_node,
            "ATTRACTOR_PREDECESSOR_OUTCOME": self.predecessor_outcome,
        }

    def _kilroy_env(self) -> dict[str, str]:
        """Kilroy's names, same values: the canonical status path is the stage's, the fallback
        the work directory's ``status.json`` (where kilroy's agents write when they cannot
        reach the stage dir)."""
        return {
            "KILROY_RUN_ID": self.run_id,
            "KILROY_NODE_ID": self.node_id,
            "KILROY_LOGS_ROOT": str(self.logs_root),
            "KILROY_STAGE_LOGS_DIR": str(self.stage_dir),
            "KILROY_STAGE_STATUS_PATH": str(self.status_path),
            "KILROY_STAGE_STATUS_FALLBACK_PATH": str(self.workdir / "status.json"),
            "KILROY_WORKTREE_DIR": str(self.workdir),
            "KILROY_PREDECESSOR_NODE": self.predecessor_node,
            "KILROY_PREDECESSOR_OUTCOME": self.predecessor_outcome,
        }


_CURRENT: contextvars.ContextVar[AttemptInfo | None] = contextvars.ContextVar(
    "attractor_trio_attempt", default=None
)


def current_attempt() -> AttemptInfo | None:
    """The attempt the calling task belongs to, or ``None`` outside the engine."""
    return _CURRENT.get()


def require_attempt(node: Node, logs_root: Path) -> AttemptInfo:
    """The current attempt, or a stand-in when a handler is called directly (tests, embedding)."""
    info = _CURRENT.get()
    if info is not None:
        return info
    stage_dir = logs_root / node.id
    return AttemptInfo(
        run_id="",
        node_id=node.id,
        attempt=1,
        max_attempts=1,
        attempt_id=f"{node.id}-1",
        logs_root=logs_root,
        stage_dir=stage_dir,
        workdir=Path.cwd(),
    )


#: ``token = set_attempt(info)`` … ``reset_attempt(token)``: the context variable's own C
#: methods (the attempt scope enters one per attempt: a Python wrapper was a call each).
set_attempt: Final = _CURRENT.set
reset_attempt: Final = _CURRENT.reset
