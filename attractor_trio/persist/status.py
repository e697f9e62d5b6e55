"""Status-file ingestion (contract.md §3): which ``status.json`` decides an attempt, and why.

A stage process may report its outcome in one of three places, in precedence order:

* ``canonical`` — ``$ATTRACTOR_STATUS_PATH`` (the stage directory's ``status.json``);
* ``workdir`` — ``$ATTRACTOR_WORKDIR/status.json`` (agents and legacy tools write there);
* ``workdir_dot`` — ``$ATTRACTOR_WORKDIR/.attractor/status.json``.

The rules, each of which closes a way a run went wrong in practice:

1. :func:`remove_stale` clears all three before the attempt starts, so a file left by an earlier
   attempt (or run) can never decide this one. (The canonical one is skipped in a stage dir
   the engine has just created for the attempt: it cannot hold one, see
   :func:`clear_stale_status`.)
2. A fallback is consulted only when the canonical file is absent: the canonical path is the
   one the engine hands the process, so when it exists it is the process's answer.
3. A file that carries ``run_id``/``node_id``/``attempt_id`` of someone else is rejected (the
   workdir is shared by parallel branches and successive runs). A rejected or invalid canonical
   file fails the stage as ``deterministic`` — guessing an outcome would hide the bug; a rejected
   fallback is skipped and the next one tried.
4. The first valid fallback is copied atomically to the canonical path and then removed, so the
   stage directory always holds the status that decided the attempt and the workdir holds no
   stale file for the next one. Copy comes before removal: a failed copy loses nothing.
5. Every decision is returned as data (:class:`IngestionDecision`), for one
   ``status_ingestion_decision`` event per attempt.

A fallback that does not parse is re-read a few times after a short pause before it is rejected:
unlike the canonical file (written by the stage process, which has exited), a workdir file may
be written by something that is still finishing its write.

The rules (:func:`remove_stale`, :func:`ingest`) are filesystem only and synchronous. Every
stage kind — the tool handler, the codergen handler, the CLI agents — applies them to its
attempt through the same two calls, so they cannot drift apart again: :func:`clear_stale_status`
before the stage's work and :func:`ingest_status` after it. The latter keeps the common case
(no file anywhere: three ``stat`` calls) on the event loop, runs :func:`ingest` in a worker
thread otherwise (it may pause to re-read a torn fallback), turns a failed copy of a valid
fallback into a ``deterministic`` failure instead of an exception, and emits the attempt's one
``status_ingestion_decision`` event.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, Protocol, TypeAlias

import trio
from attrs import frozen

from ..core.attempt import KnownPaths
from ..core.failures import DETERMINISTIC
from ..core.outcome import Outcome, StageStatus, StatusFileError
from .atomic import write_bytes_atomic

__all__ = [
    "OWNERSHIP_KEYS",
    "READ_RETRIES",
    "READ_RETRY_PAUSE_S",
    "IngestionDecision",
    "Rejection",
    "SourceName",
    "StatusOwner",
    "StatusSources",
    "clear_stale_status",
    "ingest",
    "ingest_status",
    "known_sources",
    "read_status_file",
    "remove_stale",
    "remove_stale_fallbacks",
]

StrPath: TypeAlias = str | os.PathLike[str]
SourceName = Literal["canonical", "workdir", "workdir_dot"]
#: The keys that tie a status file to one attempt; ``null`` counts as absent.
OWNERSHIP_KEYS = ("run_id", "node_id", "attempt_id")
#: How many times an unparsable fallback is re-read, and the pause before each re-read.
READ_RETRIES = 3
READ_RETRY_PAUSE_S = 0.05
_EXAMPLE = 'write one object like {"outcome": "success"}'
# A missing directory on the way (``.attractor`` absent, or a file) means "no status file".
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})
_access: Final = os.access
F_OK: Final = os.F_OK


class _AttemptPaths(Protocol):
    """What :meth:`StatusSources.for_attempt` needs (an :class:`~..handlers.base.AttemptInfo`)."""

    @property
    def status_path(self) -> Path: ...
    @property
    def workdir(self) -> Path: ...


class _Attempt(_AttemptPaths, Protocol):
    """What :func:`ingest_status` needs of the attempt in progress."""

    @property
    def run_id(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def attempt_id(self) -> str: ...
    @property
    def emit(self) -> Callable[..., None]: ...


class StatusSources(NamedTuple):
    """The three places an attempt's status may be written, in precedence order.

    A named tuple: built once per attempt, where a frozen attrs class's ``__init__`` cost
    more than the three paths it holds. ``texts``: the three as strings, for the system
    calls of steps 1 and 2 (a ``Path`` costs two Python calls there each time); ``()``
    means "use the paths" (``sources.texts or sources[:3]``)."""

    canonical: Path
    workdir: Path
    workdir_dot: Path
    texts: tuple[str, str, str] | tuple[()] = ()

    @classmethod
    def for_attempt(cls, attempt: _AttemptPaths) -> StatusSources:
        """The attempt's sources: the ones the engine made for its stage dir and work
        directory (``KnownPaths``) while the attempt still names those, else new ones."""
        known = getattr(attempt, "known_status_path", None)
        if (
            type(known) is KnownPaths
            and known.stage_dir is getattr(attempt, "stage_dir", None)
            and known.workdir is attempt.workdir
        ):
            sources: StatusSources = known.sources
            return sources
        return cls(attempt.status_path, *_fallback_paths(attempt.workdir))

    def fallbacks(self) -> tuple[tuple[SourceName, Path], ...]:
        return (("workdir", self.workdir), ("workdir_dot", self.workdir_dot))

    def all(self) -> tuple[tuple[SourceName, Path], ...]:
        return (("canonical", self.canonical), *self.fallbacks())


def known_sources(status_path: Path, status_text: str, workdir: Path) -> StatusSources:
    """A node's :class:`StatusSources` with their texts (the engine builds one per node:
    ``status_text`` is ``os.fspath(status_path)``); the work directory's two are made once
    while it stays the same object."""
    global _last_fallbacks
    last, paths, texts = _last_fallbacks
    if last is not workdir:
        paths = _fallback_paths(workdir)
        texts = (os.fspath(paths[0]), os.fspath(paths[1]))
        _last_fallbacks = (workdir, paths, texts)
    # ``tuple.__new__`` with every field: the named tuple's ``__new__`` is a call around it.
    sources: StatusSources = _new_tuple(StatusSources, (status_path, *paths, (status_text, *texts)))
    return sources


_new_tuple: Any = tuple.__new__


_last_fallbacks: tuple[Path | None, tuple[Path, Path], tuple[str, str]] = (
    None,
    (Path(), Path()),
    ("", ""),
)


@frozen
class StatusOwner:
    """The attempt a status file must belong to (compared with the file's ownership keys)."""

    run_id: str
    node_id: str
    attempt_id: str

    def mismatches(self, doc: Mapping[str, Any]) -> list[str]:
        """``run_id is 'old' but this attempt's is 'new'`` for each key that differs."""
        found = []
        for key in OWNERSHIP_KEYS:
            value, expected = doc.get(key), getattr(self, key)
            if value is not None and value != expected:
                found.append(f"{key} is {value!r} but this attempt's is {expected!r}")
        return found


@frozen
class Rejection:
    """A status file that was present but not used; ``reason`` starts with its path."""

    path: Path
    source: SourceName
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "path": str(self.path), "reason": self.reason}


@frozen(slots=False)
class IngestionDecision:
    """What ingestion found: the deciding source (or ``none``) and every rejected file.

    ``outcome`` is the status that decides the attempt, ``None`` when no valid file was found
    (the exit code decides). ``failed`` marks a rejected canonical file: ``outcome`` is then a
    ``deterministic`` failure carrying the rejection reason.

    Not slotted: one per attempt, read once or twice, and a frozen attrs class fills a slot
    with a method call each (seven), where it fills ``__dict__`` directly.
    """

    node_id: str
    attempt_id: str
    source: SourceName | Literal["none"]
    copied: bool = False
    rejected: tuple[Rejection, ...] = ()
    outcome: Outcome | None = None
    failed: bool = False

    def status_or_error(self) -> Outcome | StatusFileError | None:
        """What the exit-code rule takes (``tool_outcome``, ``agent_failure_outcome``): a
        rejected canonical file is an error, not a status."""
        if self.failed and self.outcome is not None:
            return StatusFileError(self.outcome.failure_reason)
        return self.outcome

    def event_fields(self) -> dict[str, Any]:
        """The ``status_ingestion_decision`` event's fields (contract.md §4), JSON-ready."""
        return {
            "node_id": self.node_id,
            "attempt_id": self.attempt_id,
            "source": self.source,
            "copied": self.copied,
            "rejected": [rejection.to_json() for rejection in self.rejected],
        }


def remove_stale(sources: StatusSources, *, canonical: bool = True) -> None:
    """Step 1: remove every status file before the attempt starts; missing ones are fine.

    ``canonical=False`` leaves the canonical path alone: only for a stage dir that provably
    holds no status file (see :func:`clear_stale_status`). Raises :class:`StatusFileError`
    when one cannot be removed (a directory in the way, no permission): the stage must fail
    rather than let an old file decide it.
    """
    targets = sources.texts or sources[:3]
    _remove_all(targets if canonical else targets[1:])


def remove_stale_fallbacks(workdir: Path) -> None:
    """Step 1 for the work directory's two fallbacks alone (``persist/sweep.py``: one removal
    serving a fan-out's starting branches); raises as :func:`remove_stale` does."""
    _remove_all(_fallback_paths(workdir))


def _remove_all(paths: Sequence[StrPath]) -> None:
    """Unlink each of ``paths`` that is there. Existence is asked first, by ``access(2)``,
    which answers "absent" without an error: a failing ``unlink`` raises, and the exception
    cost more than the system call, for the two or three absent files of every stage (issue
    #22). ``access`` also says "absent" when a directory on the way cannot be searched by this
    user — then no file there can be seen or written by the engine or anything it starts, and
    none can decide the attempt (contract.md §3). It does not follow a final symlink: a link
    is removed, dangling or not, as ``unlink`` does."""
    for path in paths:
        if not _access(path, F_OK, follow_symlinks=False):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:  # removed meanwhile by someone else
            continue
        except OSError as exc:
            if exc.errno in _ABSENT_ERRNOS:
                continue
            if os.path.isdir(path):
                raise StatusFileError(
                    f"{path}: is a directory, where the stage's status file goes; "
                    "remove or rename it"
                ) from None
            raise StatusFileError(
                f"{path}: cannot remove the stale status file: {exc.strerror or exc}"
            ) from None


def ingest(
    sources: StatusSources,
    *,
    run_id: str,
    node_id: str,
    attempt_id: str,
    sleep: Callable[[float], object] = time.sleep,
    retries: int = READ_RETRIES,
    pause: float = READ_RETRY_PAUSE_S,
) -> IngestionDecision:
    """Steps 2-5: pick the status that decides the attempt, copying a fallback into place.

    ``sleep`` is called before each re-read of an unparsable fallback (tests inject one).
    Raises :class:`OSError` only when copying a valid fallback to the canonical path fails;
    the fallback is then left in place.
    """
    owner = StatusOwner(run_id, node_id, attempt_id)
    decide = _Decider(node_id, attempt_id)
    canonical = _look(sources.canonical, owner)
    if canonical.present:
        return decide.from_canonical(sources.canonical, canonical)
    rejected: list[Rejection] = []
    for name, path in sources.fallbacks():
        seen = _look_settled(path, owner, sleep, retries, pause)
        if not seen.present:
            continue
        if seen.outcome is None:
            rejected.append(Rejection(path, name, seen.problem))
            continue
        _copy_into_place(seen.raw, path, sources.canonical)
        return decide.adopted(name, seen.outcome, rejected)
    return decide.adopted("none", None, rejected)


def read_status_file(
    path: Path, owner: StatusOwner | None = None
) -> Outcome | StatusFileError | None:
    """The status at ``path``: an outcome, the reason it is unusable, or ``None`` if absent."""
    seen = _look(path, owner)
    if not seen.present:
        return None
    return seen.outcome if seen.outcome is not None else StatusFileError(seen.problem)


@frozen
class _Seen:
    """One look at a status file: absent, or its bytes with an outcome or a problem."""

    raw: bytes = b""
    present: bool = True
    outcome: Outcome | None = None
    problem: str = ""
    #: Not (yet) parsable text: a writer may still be in the middle of writing it.
    torn: bool = False


_ABSENT = _Seen(present=False)


def _look(path: Path, owner: StatusOwner | None) -> _Seen:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        if exc.errno in _ABSENT_ERRNOS:
            return _ABSENT
        return _Seen(problem=f"{path}: cannot read the status file: {exc.strerror or exc}")
    return _judge(str(path), raw, owner)


def _look_settled(
    path: Path,
    owner: StatusOwner,
    sleep: Callable[[float], object],
    retries: int,
    pause: float,
) -> _Seen:
    """Like :func:`_look`, re-reading a torn file up to ``retries`` times."""
    seen = _look(path, owner)
    for _ in range(retries):
        if not seen.torn:
            break
        sleep(pause)
        seen = _look(path, owner)
    return seen


@functools.lru_cache(maxsize=64)
def _fallback_paths(workdir: Path) -> tuple[Path, Path]:
    """The two fallback locations in ``workdir`` (the same for every stage of a run: built
    once, not twice per attempt)."""
    return workdir / "status.json", workdir / ".attractor" / "status.json"


def _judge(source: str, raw: bytes, owner: StatusOwner | None) -> _Seen:
    """Pure: what ``raw`` (the content of ``source``) says, or why it cannot be used.

    The ownership gate runs before the outcome is validated: a foreign file is reported as
    foreign, which is the useful thing to know about it, whatever else is wrong with it.
    """
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problem = f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); {_EXAMPLE}"
        return _Seen(raw, problem=problem, torn=True)
    except json.JSONDecodeError as exc:
        if not raw.strip():
            return _Seen(raw, problem=f"{source}: the status file is empty; {_EXAMPLE}", torn=True)
        problem = f"{source}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg}); {_EXAMPLE}"
        return _Seen(raw, problem=problem, torn=True)
    if isinstance(doc, Mapping) and owner is not None:
        mismatches = owner.mismatches(doc)
        if mismatches:
            problem = (
                f"{source}: belongs to another attempt: {'; '.join(mismatches)} "
                "(a stale file from an earlier run or attempt, or a sibling branch's?)"
            )
            return _Seen(raw, problem=problem)
    try:
        return _Seen(raw, outcome=Outcome.from_json(doc, source=source))
    except StatusFileError as exc:
        return _Seen(raw, problem=str(exc))


def _any_exists(paths: Sequence[StrPath]) -> bool:
    """Whether any of ``paths`` exists (following symlinks, as ``path.exists()`` does), asked
    by ``access(2)``: no exception for the usual answer, "absent", at every stage (see
    :func:`_remove_all`; a path this user cannot reach is one no status file can come from)."""
    for path in paths:  # noqa: SIM110 (a loop, not any() over a generator: one frame fewer)
        if _access(path, F_OK):
            return True
    return False


def _copy_into_place(raw: bytes, fallback: Path, canonical: Path) -> None:
    """Step 4: the exact bytes the tool wrote become the canonical file; then the fallback goes."""
    canonical.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(canonical, raw)
    fallback.unlink(missing_ok=True)


@frozen
class _Decider:
    """Builds the decisions for one attempt (keeps :func:`ingest` about the order of looks)."""

    node_id: str
    attempt_id: str

    def from_canonical(self, path: Path, seen: _Seen) -> IngestionDecision:
        if seen.outcome is not None:
            return IngestionDecision(
                self.node_id, self.attempt_id, "canonical", outcome=seen.outcome
            )
        failure = Outcome(
            StageStatus.FAIL, failure_reason=seen.problem, failure_class=DETERMINISTIC
        )
        return IngestionDecision(
            self.node_id,
            self.attempt_id,
            "canonical",
            rejected=(Rejection(path, "canonical", seen.problem),),
            outcome=failure,
            failed=True,
        )

    def adopted(
        self,
        source: SourceName | Literal["none"],
        outcome: Outcome | None,
        rejected: list[Rejection],
    ) -> IngestionDecision:
        return IngestionDecision(
            self.node_id,
            self.attempt_id,
            source,
            copied=outcome is not None,
            rejected=tuple(rejected),
            outcome=outcome,
        )


# --- the two calls every stage kind makes --------------------------------------------------


def clear_stale_status(attempt: _AttemptPaths, sources: StatusSources | None = None) -> None:
    """Step 1 for ``attempt``, before its work starts (raises like :func:`remove_stale`).
    ``sources``: the attempt's, when the caller has them already (it passes the same to
    :func:`ingest_status`).

    The canonical file is not unlinked when the attempt's ``fresh_stage_dir`` says the engine
    created the stage dir for this attempt (its ``mkdir`` succeeded, so the dir did not exist
    a moment before): a directory that did not exist holds no file from an earlier attempt or
    run, and nothing has been started for this attempt yet that could have written one since
    (between that ``mkdir`` and this call the engine writes only the ``.attempt.json`` marker
    and, after a resume, resets the git worktree, which is ``<logs_root>/worktree``, never a
    stage dir). So the unlink could only ever answer "absent"; a file some other process
    writes there after the ``mkdir`` is one it could as well have written after the unlink.
    The two fallbacks are always unlinked: the work directory outlives attempts and runs, and
    other processes (a tool in a sibling branch, an agent, an earlier run's leftovers) may
    have written there at any time — except for the first attempt of a fan-out branch whose
    set-up (which made its stage dir) also saw them removed after the branch asked for it
    (``fallbacks_cleared``, ``persist/sweep.py``): nothing this attempt could see was written
    before that removal. An attempt object without ``fresh_stage_dir`` (a direct caller's
    stand-in) clears all three.
    """
    fresh = getattr(attempt, "fresh_stage_dir", False) is True
    if fresh and getattr(attempt, "fallbacks_cleared", False) is True:
        return  # a fan-out branch's set-up removed the fallbacks for it (``persist/sweep.py``)
    sources = sources or StatusSources.for_attempt(attempt)
    targets = sources.texts or sources[:3]  # ``remove_stale``, inline: every attempt's
    _remove_all(targets[1:] if fresh else targets)


async def ingest_status(
    attempt: _Attempt, sources: StatusSources | None = None
) -> IngestionDecision:
    """Steps 2-5 for ``attempt``; emits its ``status_ingestion_decision`` and returns it."""
    sources = sources or StatusSources.for_attempt(attempt)
    if _any_exists(sources.texts or sources[:3]):
        decision = await _decide(attempt, sources)
        attempt.emit("status_ingestion_decision", **decision.event_fields())
        return decision
    # The common case, decided here: no file anywhere (the event's fields spelled out, as
    # ``event_fields`` gives them for this decision).
    node_id, attempt_id = attempt.node_id, attempt.attempt_id
    attempt.emit(
        "status_ingestion_decision",
        node_id=node_id,
        attempt_id=attempt_id,
        source="none",
        copied=False,
        rejected=[],
    )
    return IngestionDecision(node_id, attempt_id, "none")


async def _decide(attempt: _Attempt, sources: StatusSources) -> IngestionDecision:
    """Steps 2-5 when some status file exists: on a worker thread (it may pause to re-read a
    torn fallback); a failed copy of a valid fallback is a ``deterministic`` failure."""
    try:
        return await trio.to_thread.run_sync(
            functools.partial(
                ingest,
                sources,
                run_id=attempt.run_id,
                node_id=attempt.node_id,
                attempt_id=attempt.attempt_id,
            )
        )
    except OSError as exc:
        failure = Outcome(
            StageStatus.FAIL,
            failure_reason=f"{attempt.status_path}: cannot copy the status file into place: {exc}",
            failure_class=DETERMINISTIC,
        )
        return IngestionDecision(
            attempt.node_id, attempt.attempt_id, "none", outcome=failure, failed=True
        )
