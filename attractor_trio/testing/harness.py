"""Execute a :class:`~.schedules.Schedule` against the real engine under virtual time.

:class:`ScheduledHandler` stands in for the codergen *and* tool handlers (no model, no
process): each call performs the schedule's next step for that node.
:class:`ScheduledBackend` does the same one level lower, as a codergen backend, so the real
:class:`~attractor_trio.handlers.codergen.CodergenHandler` runs around it. Both record what they
performed, so the invariant checker can hold each attempt's logged outcome against the step
that produced it.

:func:`run_schedule` runs the pipeline through :func:`attractor_trio.scopes.engine.run` inside
``trio.run`` with ``MockClock(autojump_threshold=0)``: hours of backoff, stalls and heartbeats
take milliseconds, and under Hypothesis trio's scheduler is seeded by the example, so a
counterexample replays exactly. A run that does not end is cancelled (when the virtual
``time_limit`` passes, or after ``max_events`` events, which catches zero-time loops) and
reported as ``hung`` — it still finalizes, so its run directory can be checked too. So is a
run whose virtual time stops advancing because some task busy-loops (``frozen_at``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio
import trio.testing
from attrs import define, field, frozen

from ..core.outcome import Outcome, StageStatus
from ..core.vocabulary import CancelCause
from ..events import TERMINAL_EVENTS
from ..handlers.base import Handler, current_attempt
from ..handlers.parallel import RESULTS_FILE_NAME
from ..persist.atomic import CorruptFileError
from ..persist.final import FinalRecord, read_final
from ..persist.progress import read_progress
from ..scopes import engine
from .schedules import Schedule, Step

if TYPE_CHECKING:
    from ..context import Context
    from ..dot.graph import Graph, Node
    from ..scopes.engine import RunResult

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_STALL_TIMEOUT",
    "WORK_SLICE",
    "Observation",
    "Performed",
    "RunFiles",
    "RunawayRun",
    "ScheduledBackend",
    "ScheduledError",
    "ScheduledHandler",
    "default_reason",
    "run_schedule",
]

#: A ``delay`` reports progress at least this often (virtual seconds), like a chatty agent.
WORK_SLICE: Final = 1.0
DEFAULT_HEARTBEAT_INTERVAL: Final = 10.0
DEFAULT_STALL_TIMEOUT: Final = 120.0
DEFAULT_MAX_EVENTS: Final = 4000
#: After a harness cancel, how long (virtual) the run gets before its caller's scope is
#: cancelled too.
_ESCALATE_AFTER: Final = 3600.0
_RESOLUTION: Final = 1e-9
#: Task steps at one virtual instant, with no event in between, that count as a livelock.
FROZEN_STEP_LIMIT: Final = 10_000


class ScheduledError(RuntimeError):
    """What a ``raise`` step raises (a plain exception: the engine turns it into ``fail``)."""


class RunawayRun(BaseException):
    """Raised from the event sink when a run keeps emitting long after it was cancelled.

    A ``BaseException`` so no handler's ``except Exception`` can absorb it: it is the last
    resort that brings a run which ignores cancellation back to the harness.
    """


@frozen
class Performed:
    """One handler call: which step of the schedule it executed, for which attempt."""

    node_id: str
    attempt_id: str
    index: int
    step: Step


def _noop() -> None:
    return None


@define
class _StepPerformer:
    """Per-node call counters and the record of performed steps (one per run)."""

    schedule: Schedule
    performed: list[Performed] = field(factory=list)
    _calls: dict[str, int] = field(factory=dict)

    async def perform(self, node: Node) -> Outcome:
        index = self._calls.get(node.id, 0)
        self._calls[node.id] = index + 1
        step = self.schedule.step_for(node.id, index)
        info = current_attempt()
        attempt_id = info.attempt_id if info is not None else f"{node.id}-call-{index + 1}"
        self.performed.append(Performed(node.id, attempt_id, index, step))
        progress = info.progress if info is not None else _noop
        await _work(step.delay, progress)
        return await _conclude(step, node, index, progress)


class ScheduledHandler(_StepPerformer):
    """A handler (for codergen and tool nodes) that performs the schedule's steps."""

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        return await self.perform(node)


class ScheduledBackend(_StepPerformer):
    """A codergen backend that performs the schedule's steps (the real handler wraps it)."""

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        return await self.perform(node)


async def _work(seconds: float, progress: Callable[[], None]) -> None:
    """Work ``seconds`` of virtual time, reporting progress every slice; always checkpoints,
    so a zero-delay step is still a place where cancellation is delivered.

    Sleeps to absolute instants and stops within a nanosecond of the deadline: sleeping a
    float-rounding remainder would round to "now" and spin without time advancing."""
    deadline = trio.current_time() + seconds
    progress()
    await trio.lowlevel.checkpoint()
    while deadline - trio.current_time() > _RESOLUTION:
        await trio.sleep_until(min(trio.current_time() + WORK_SLICE, deadline))
        progress()


def default_reason(step: Step, node_id: str, index: int) -> str:
    """The failure reason a ``fail``/``retry``/``raise`` step reports on ``index``-th call."""
    return step.reason or f"scheduled {step.kind} of {node_id} on call {index + 1}"


async def _conclude(step: Step, node: Node, index: int, progress: Callable[[], None]) -> Outcome:
    kind = step.kind
    if kind in ("success", "partial"):
        status = StageStatus.SUCCESS if kind == "success" else StageStatus.PARTIAL_SUCCESS
        return Outcome(status, notes=f"scheduled {kind}", custom=step.outcome)
    if kind in ("fail", "retry"):
        return Outcome(
            StageStatus.FAIL if kind == "fail" else StageStatus.RETRY,
            failure_reason=default_reason(step, node.id, index),
            failure_class=step.failure_class,
        )
    if kind == "raise":
        raise ScheduledError(default_reason(step, node.id, index))
    timeout = node.timeout
    if kind == "timeout" and timeout is not None:
        # Outlive the deadline while visibly working; returning at all means it was not enforced.
        await _work(timeout + 1.0, progress)
        return Outcome(StageStatus.SUCCESS, notes="outlived its node timeout")
    await trio.sleep_forever()  # stall (or timeout without a deadline): silent until ended


@frozen
class Observation:
    """Everything a fuzz example produced. ``events`` is ``progress.ndjson`` as written and
    ``stream`` what the event sink received; ``cancel_seq`` the last ``seq`` emitted when the
    harness asked the run to cancel (0: before any event; ``None``: never); ``performed`` the
    steps scheduled handlers executed; ``frozen_at`` the virtual time at which some task
    busy-looped without ever waiting (``hung`` is then set too)."""

    result: RunResult | None
    events: list[dict[str, Any]]
    logs_root: Path
    elapsed: float
    hung: bool
    error: BaseException | None
    schedule: Schedule = field(factory=Schedule)
    cancel_seq: int | None = None
    cancel_reason: str = ""
    performed: tuple[Performed, ...] = ()
    stream: list[dict[str, Any]] = field(factory=list)
    frozen_at: float | None = None


@define
class _Monitor:
    """The run's event sink: cancels at the scheduled event, enforces the event budget, and
    remembers the ``seq`` at which the harness cancelled."""

    handle: engine.RunHandle
    cancel_after_event: int | None
    max_events: int
    stream: list[dict[str, Any]] = field(factory=list)
    cancel_seq: int | None = None
    cancel_reason: str = ""
    terminal: bool = False
    hung: bool = False
    runaway: bool = False

    @property
    def last_seq(self) -> int:
        return int(self.stream[-1]["seq"]) if self.stream else 0

    def __call__(self, envelope: dict[str, Any]) -> None:
        self.stream.append(envelope)
        if envelope["event"] in TERMINAL_EVENTS:
            self.terminal = True
            return
        seq = envelope["seq"]
        if seq == self.cancel_after_event:
            self.cancel(f"fuzz schedule: cancel after event {seq}")
        if seq >= self.max_events and not self.hung:
            self.hung = True
            self.cancel(f"fuzz harness: event budget of {self.max_events} exhausted")
        if seq >= 2 * self.max_events and not self.runaway:
            self.runaway = True
            raise RunawayRun(f"run kept emitting after cancellation (seq {seq})")

    def cancel(self, reason: str) -> None:
        if self.cancel_seq is None:
            self.cancel_seq = self.last_seq
            self.cancel_reason = reason
        self.handle.cancel(reason, CancelCause.HARNESS)


class _FrozenTimeGuard(trio.abc.Instrument):
    """Virtual time only moves when every task waits. A task that never does (a busy loop, or
    a sleep so short that its deadline rounds to "now") freezes it, so the time limit never
    comes and the harness would hang for real. Count task steps at one virtual instant with
    no event emitted; past the limit, report the run hung and cancel it (then its caller)."""

    def __init__(self, monitor: _Monitor, outer: trio.CancelScope, limit: int) -> None:
        self.monitor, self.outer, self.limit = monitor, outer, limit
        self.instant = -math.inf
        self.events = 0
        self.steps = 0
        self.frozen_at: float | None = None

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        now, events = trio.current_time(), len(self.monitor.stream)
        if now != self.instant or events != self.events:
            self.instant, self.events, self.steps = now, events, 0
            return
        self.steps += 1
        if self.steps < self.limit:
            return
        self.steps = 0
        if self.frozen_at is None:
            self.frozen_at = now
            self.monitor.hung = True
            self.monitor.cancel(f"fuzz harness: virtual time stopped advancing at t={now:g}s")
        else:
            self.outer.cancel()


@define
class _Box:
    result: RunResult | None = None
    error: BaseException | None = None
    elapsed: float = 0.0


def run_schedule(
    graph: Graph,
    schedule: Schedule,
    logs_root: Path,
    *,
    time_limit: float = 86400.0,
    handlers: Mapping[str, Handler] | None = None,
    backend: Any = None,
    heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    max_events: int = DEFAULT_MAX_EVENTS,
    seed: int = 0,
) -> Observation:
    """Run ``graph`` under ``schedule`` in virtual time and return what happened.

    Codergen and tool nodes are served by a :class:`ScheduledHandler`; with ``backend``,
    codergen nodes go through the real codergen handler and that backend instead (pass a
    :class:`ScheduledBackend` or a subclass). ``handlers`` override either. An invalid graph
    raises before anything runs; anything raised during the run lands in ``error``.
    """
    scheduled = ScheduledHandler(schedule)
    chosen: dict[str, Handler] = {"tool": scheduled}
    if backend is None:
        chosen["codergen"] = scheduled
    chosen.update(handlers or {})
    engine.check_runnable(graph, backend=backend, handlers=chosen, require_backend=False)
    logs_root = Path(logs_root)
    monitor = _Monitor(engine.RunHandle(), schedule.cancel_after_event, max_events)
    box = _Box()
    outer = trio.CancelScope()
    guard = _FrozenTimeGuard(monitor, outer, FROZEN_STEP_LIMIT)

    async def main() -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            if schedule.cancel_at is not None:
                nursery.start_soon(_cancel_at, schedule.cancel_at, monitor)
            nursery.start_soon(_limit, time_limit, monitor, outer)
            with outer:
                try:
                    box.result = await engine.run(
                        graph,
                        logs_root=logs_root,
                        backend=backend,
                        handlers=chosen,
                        workdir=logs_root,
                        heartbeat_interval=heartbeat_interval,
                        stall_timeout=stall_timeout,
                        handle=monitor.handle,
                        sinks=[monitor],
                        seed=seed,
                        require_backend=False,
                    )
                except (Exception, RunawayRun) as exc:
                    box.error = exc
            box.elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[guard])
    except trio.TrioInternalError as exc:  # e.g. a leaked system task raised
        box.error = exc.__cause__ or exc
    performers = [scheduled, backend, *(handlers or {}).values()]
    return Observation(
        result=box.result,
        events=_read_events(logs_root, monitor.stream),
        logs_root=logs_root,
        elapsed=box.elapsed,
        hung=monitor.hung,
        error=box.error,
        schedule=schedule,
        cancel_seq=monitor.cancel_seq,
        cancel_reason=monitor.cancel_reason,
        performed=_performed(performers),
        stream=monitor.stream,
        frozen_at=guard.frozen_at,
    )


async def _cancel_at(when: float, monitor: _Monitor) -> None:
    await trio.sleep(when)
    if not monitor.terminal:
        monitor.cancel(f"fuzz schedule: cancel at t={when:g}s")


async def _limit(time_limit: float, monitor: _Monitor, outer: trio.CancelScope) -> None:
    """Cancel a run that outlives ``time_limit``; if it ignores that, cancel its caller."""
    await trio.sleep(time_limit)
    if monitor.terminal:
        return
    monitor.hung = True
    monitor.cancel(f"fuzz harness: time limit of {time_limit:g}s passed")
    await trio.sleep(_ESCALATE_AFTER)
    outer.cancel()


def _read_events(logs_root: Path, stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log as written; the in-memory stream when the log is missing or unreadable (the
    checker reports the file itself separately)."""
    try:
        return read_progress(logs_root / "progress.ndjson")
    except (OSError, CorruptFileError):
        return list(stream)


def _performed(candidates: list[Any]) -> tuple[Performed, ...]:
    seen: set[int] = set()
    records: list[Performed] = []
    for candidate in candidates:
        if isinstance(candidate, _StepPerformer) and id(candidate) not in seen:
            seen.add(id(candidate))
            records.extend(candidate.performed)
    return tuple(records)


@frozen
class RunFiles:
    """What the invariant checker needs from a run directory, read once: the IO half of
    :func:`~.invariants.check_invariants`, whose checks are pure functions of this."""

    unparsable_json: tuple[tuple[str, str], ...]
    bad_progress_lines: tuple[int, ...]
    bad_branch_results: tuple[str, ...]
    final: FinalRecord | None
    final_problem: str
    checkpoint: Mapping[str, Any] | None
    live: Mapping[str, Any] | None
    lock_exists: bool
    status_dirs: frozenset[str]

    @classmethod
    def read(cls, root: Path) -> RunFiles:
        unparsable, docs = _parse_json_files(root)
        final, problem = _read_final(root)
        status_dirs = frozenset(p.parent.name for p in root.rglob("status.json"))
        return cls(
            unparsable_json=tuple(unparsable),
            bad_progress_lines=tuple(_bad_progress_lines(root / "progress.ndjson")),
            bad_branch_results=tuple(_bad_branch_results(root)),
            final=final,
            final_problem=problem,
            checkpoint=docs.get("checkpoint.json"),
            live=docs.get("live.json"),
            lock_exists=(root / "run.lock.json").exists(),
            status_dirs=status_dirs,
        )


def _parse_json_files(root: Path) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    unparsable: list[tuple[str, str]] = []
    docs: dict[str, Any] = {}
    for path in sorted(root.rglob("*.json")):
        rel = str(path.relative_to(root))
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            unparsable.append((rel, str(exc)))
            continue
        if rel in ("checkpoint.json", "live.json") and isinstance(doc, dict):
            docs[rel] = doc
    return unparsable, docs


def _read_final(root: Path) -> tuple[FinalRecord | None, str]:
    try:
        final = read_final(root)
    except CorruptFileError as exc:
        return None, str(exc)
    return final, "" if final is not None else "missing"


def _bad_branch_results(root: Path) -> Iterator[str]:
    """Problems in the fan-outs' ``results.ndjson``: a line that is not a branch result (in a
    run that was not killed, none may be torn), or a branch recorded twice by one fan-out
    execution (a resumed fan-out must not redo a recorded branch)."""
    for path in sorted(root.rglob(RESULTS_FILE_NAME)):
        rel, seen = path.relative_to(root), set()
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                yield f"{rel} line {number}: not JSON"
                continue
            if not isinstance(record, dict) or not all(
                isinstance(record.get(key), str) for key in ("id", "status", "token")
            ):
                yield f"{rel} line {number}: not a branch result (id, status, token)"
                continue
            if (record["id"], record["token"]) in seen:
                yield f"{rel} line {number}: branch {record['id']!r} recorded twice"
            seen.add((record["id"], record["token"]))


def _bad_progress_lines(path: Path) -> Iterator[int]:
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            try:
                json.loads(raw)
            except ValueError:
                yield number
