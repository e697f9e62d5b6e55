"""The run's event stream (contract.md §4): one hub that numbers, persists and fans out events.

Emission is synchronous and ordered: :meth:`EventHub.emit` appends the line to
``progress.ndjson``, updates ``live.json`` (throttled) and hands the envelope to every sink
before returning. No queue or task sits between a stage and its log; the line itself may wait
in the writer until the event loop next waits or a file of the run is renamed into place
(``persist/pending.py``: one ``write(2)`` per batch), so an event emitted before a file
appeared is in the log even if the process dies right after, and ``seq`` order is emission
order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .persist import descriptors
from .persist.live import LiveWriter
from .persist.progress import ProgressWriter, open_log

__all__ = [
    "BRANCH_SET_UP_CHUNK",
    "BRANCH_SET_UP_JOBS",
    "MAX_OPEN_BRANCH_LOGS",
    "OPEN_BRANCH_LOGS",
    "SET_UP_DESCRIPTORS",
    "TERMINAL_EVENTS",
    "TRANSIENT_DESCRIPTORS",
    "EventHub",
    "EventSink",
    "branch_log_budget",
    "create_branch_log",
]

EventSink = Callable[[dict[str, Any]], None]
TERMINAL_EVENTS = frozenset({"pipeline_completed", "pipeline_failed"})
_ATTEMPT_EVENTS = frozenset({"stage_attempt_started", "stage_attempt_finished"})
#: Branch logs kept open at once, the most recently written, at least; the others give their
#: descriptor back and reopen on their next event. A fan-out's branches are alive together, so
#: holding one descriptor per branch log failed 1,000-branch fan-outs with EMFILE (issue #22).
OPEN_BRANCH_LOGS: Final = 64
#: ... and at most; between the two, an eighth of the descriptors the process may open
#: (:func:`branch_log_budget`).
MAX_OPEN_BRANCH_LOGS: Final = 4096
#: A fan-out's branch set-ups (``scopes/run.py``: :func:`create_branch_log` and the first
#: stage's dir, ``aio/batched.py``): calls per write-pool job, and jobs in flight at once.
BRANCH_SET_UP_CHUNK: Final = 8
BRANCH_SET_UP_JOBS: Final = 2
#: Branch logs the set-ups may hold open before the hub adopts them: every job in flight
#: full, and the results of one more handed back but not yet taken by their branches.
SET_UP_DESCRIPTORS: Final = (BRANCH_SET_UP_JOBS + 1) * BRANCH_SET_UP_CHUNK
#: Descriptors kept free for opens that come and go while a fan-out runs: a stage file on
#: the trio thread (``prompt.md``, a marker, ``live.json``, a checkpoint temp and its
#: directory), a temp and its directory on each of the write pool's 4 threads, a batch
#: commit's filesystem handles, a released branch log reopened before the least recent one
#: is closed. An estimate with room to spare; an open that still meets ``EMFILE`` takes a
#: kept branch log's descriptor (:meth:`EventHub.give_back_descriptor`).
TRANSIENT_DESCRIPTORS: Final = 16


class EventHub:
    """Numbers events, writes them, tracks live state, and calls sinks."""

    def __init__(
        self,
        writer: ProgressWriter,
        live: LiveWriter,
        sinks: list[EventSink] | None = None,
        *,
        open_branch_logs: int | None = None,
    ) -> None:
        self.writer = writer
        self.live = live
        self.sinks: list[EventSink] = list(sinks or [])
        self.closed = False
        self._active: dict[str, dict[str, Any]] = {}
        live.follow_active_attempts(self._active)  # read at write time, never copied per event
        live.follow_log(writer)  # its last line is live.json's last_event, parsed when written
        self._branches: dict[str, ProgressWriter] = {}
        self._open_branch_logs: OrderedDict[str, ProgressWriter] = OrderedDict()
        #: How many branch logs stay open (``None``: :func:`branch_log_budget`, taken now,
        #: inside the run's event loop, after ``run`` has raised the soft limit); one fewer
        #: each time another open needed a descriptor (:meth:`give_back_descriptor`).
        self.open_branch_logs = open_branch_logs or branch_log_budget()
        descriptors.register(self)

    @property
    def run_id(self) -> str:
        return self.writer.run_id

    def emit(self, event: str, branch: str = "", /, **fields: Any) -> dict[str, Any]:
        """Write ``event`` (its ``fields`` beside the envelope) to the run's log, and to
        ``branch``'s own when it has one; note it for ``live.json``; hand the envelope as
        written to every sink, and return it. ``event`` and ``branch`` are positional only,
        so a field of either name reaches the writer, which refuses it (``ValueError``)
        whichever way the event came: :meth:`emit_fields` and :meth:`bind` pass here.

        One call layer for the main line (the engine's ``emit`` is this method): a stage
        emits seven events, and every layer and helper between the caller and the log cost
        a noticeable part of each. For the same reason the live-state bookkeeping is inline
        here: ``live.json`` follows the run log's last line
        (:meth:`~.persist.live.LiveWriter.follow_log`), and is written when its throttle
        allows, tested here rather than by a call per event."""
        if self.closed:
            raise RuntimeError(f"event {event!r} emitted after the terminal event")
        writer = self.writer
        if branch:
            envelope = self._emit_in_branch(event, branch, fields)
        else:
            envelope = writer.append(event, branch, fields)
        if event in _ATTEMPT_EVENTS:
            self._track_attempt(event, envelope)
        live = self.live
        if event == "stage_started" and not branch and envelope.get("node_id"):
            live.note_current(envelope["node_id"])
        if live.clock() - live.written_at >= live.min_interval:  # live.due(), inline
            live.flush()  # the event is the writer's last line: live.json is behind
        if self.sinks:
            for sink in list(self.sinks):
                try:
                    sink(envelope)
                except OSError:
                    self._drop_sink(sink)
        if event in TERMINAL_EVENTS:
            self.closed = True
        return envelope

    def emit_fields(self, event: str, branch: str, fields: dict[str, Any]) -> dict[str, Any]:
        """:meth:`emit` with the fields as one dict."""
        return self.emit(event, branch, **fields)

    def _emit_in_branch(self, event: str, branch: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Write to ``branch``'s own log when it has one (numbered from 1), and forward the
        line to the run's log with the run's seq; else to the run's log only."""
        branch_writer = self._branches.get(branch)
        if branch_writer is None:
            return self.writer.append(event, branch, fields)
        written = branch_writer.append(event, branch, fields)
        self._keep_open(branch, branch_writer)
        return self.writer.forward(written, branch_writer.last_line)

    def _drop_sink(self, sink: EventSink) -> None:
        """A sink whose output is gone (the terminal closed: EIO; the reader of a pipe quit:
        EPIPE) is dropped, not allowed to fail the run: the log on disk is the record, and
        the run must still finalize and release its lock (contract.md §10, SIGHUP)."""
        self.sinks.remove(sink)
        close = getattr(sink, "close", None)
        if callable(close):
            try:
                close()
            except OSError:
                pass

    def open_branch(self, branch: str, path: Path, opened: tuple[int, int] | None = None) -> None:
        """Give ``branch`` its own ``progress.ndjson`` (contract.md §2) until
        :meth:`close_branch`. The engine opens the file beforehand, off the trio thread
        (:func:`create_branch_log`), and hands its descriptor and size over as ``opened``;
        without them it is opened here, its directory made only when it is missing."""
        if opened is not None:
            writer = ProgressWriter(path, self.run_id, opened=opened)
        else:
            try:
                writer = ProgressWriter(path, self.run_id)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = ProgressWriter(path, self.run_id)
        self._branches[branch] = writer
        self._keep_open(branch, writer)

    def close_branch(self, branch: str) -> None:
        self._open_branch_logs.pop(branch, None)
        writer = self._branches.pop(branch, None)
        if writer is not None:
            writer.close()

    def _keep_open(self, branch: str, writer: ProgressWriter) -> None:
        """``branch``'s log was just used: keep its descriptor, release the least recent."""
        logs = self._open_branch_logs
        logs[branch] = writer
        logs.move_to_end(branch)
        if len(logs) > self.open_branch_logs:
            logs.popitem(last=False)[1].release()

    def give_back_descriptor(self) -> bool:
        """Close the descriptor of the least recently written branch log still holding one
        (it reopens on its next event), for an ``open`` that met ``EMFILE``
        (``persist/descriptors.py``), and keep one log fewer open from now on: the budget did
        not fit what else the process holds. Whether a descriptor was closed.

        Called from any thread (the write pool's too): it only copies the kept logs (one C
        call under the GIL) and closes one under that writer's lock, skipping a writer busy
        writing; the trio thread's bookkeeping of which logs are kept is left alone."""
        for _ in range(3):  # a copy interrupted by a change on another thread: again
            try:
                kept = list(self._open_branch_logs.values())
            except RuntimeError:
                continue
            for writer in kept:
                if writer.give_back():
                    self.open_branch_logs = max(1, self.open_branch_logs - 1)
                    return True
            return False
        return False

    def close(self) -> None:
        """Release the log files once the run has finalized (a server hosting many runs in
        one process must not keep a descriptor per finished run)."""
        descriptors.unregister(self)
        for branch in list(self._branches):
            self.close_branch(branch)
        self.writer.close()

    def bind(self, branch: str) -> Callable[..., dict[str, Any]]:
        """An ``emit`` whose events carry ``branch``."""

        hub_emit = self.emit

        def emit(event: str, **fields: Any) -> dict[str, Any]:
            return hub_emit(event, branch, **fields)

        return emit

    def _track_attempt(self, event: str, envelope: dict[str, Any]) -> None:
        """Keep the open attempts that ``live.json`` lists (it follows ``_active``)."""
        key = envelope["attempt_id"]
        if event == "stage_attempt_started":
            self._active[key] = {
                "node_id": envelope["node_id"],
                "attempt_id": key,
                "attempt": envelope["attempt"],
                "branch": envelope["branch"],
                "started_at": envelope["ts"],
            }
        else:
            self._active.pop(key, None)


def branch_log_budget(held: int | None = None) -> int:
    """How many branch logs to keep open: an eighth of the soft descriptor limit, within
    :data:`OPEN_BRANCH_LOGS` and :data:`MAX_OPEN_BRANCH_LOGS` — but never more than fit
    beside everything else the process may hold at once::

        limit - held - SET_UP_DESCRIPTORS - TRANSIENT_DESCRIPTORS   (at least 1)

    ``held``: the descriptors open now (default: counted, :func:`~attractor_trio.persist.
    descriptors.open_descriptor_count`; the hub is made inside the run's event loop, so
    they include trio's own, the run's log and lock, stdio, a host's). With a hard limit of
    128 that leaves 64, as before, but with 96 it leaves about 40: the floor of 64 alone,
    with the set-ups in flight and the run's own, was over the limit (issue #22).

    Why not always the floor: a branch's log is written when its stage starts and again when
    it ends, a stage's length later; with more branches alive than logs open, every branch
    reopened its log to finish (an ``open`` and a ``close`` more per branch). ``run`` and
    ``resume`` raise the soft limit to the hard one, which leaves room for them; under a low
    limit that cannot be raised the floor holds, as before."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return OPEN_BRANCH_LOGS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_BRANCH_LOGS
    wanted = max(OPEN_BRANCH_LOGS, min(MAX_OPEN_BRANCH_LOGS, soft // 8))
    if held is None:
        held = descriptors.open_descriptor_count()
    room = soft - held - SET_UP_DESCRIPTORS - TRANSIENT_DESCRIPTORS
    return max(1, min(wanted, room))


def create_branch_log(path: Path) -> tuple[int, int]:
    """Create a branch's directory and its empty ``progress.ndjson`` (kept if it exists) and
    open it for appending: the descriptor and the file's size, for :meth:`EventHub.open_branch`
    (which owns the descriptor from then on); blocking, meant for the write pool.

    Why apart: creating a directory and a file are the two slowest calls a branch makes when
    it starts — 35 µs each on an idle ext4 here, 300 µs while other processes write — and on
    the trio thread every other branch waits them out; on the pool they overlap with the
    other branches' work. The descriptor is handed over rather than closed and opened again
    on the trio thread: that second open cost the trio thread more than the whole job's
    hand-over, because each system call there gives the GIL to a pool thread and waits to
    get it back (issue #22). The first event follows through :meth:`EventHub.open_branch`, so
    a crash in between leaves an empty log, as a crash between opening and writing always
    could."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open_log(path)
