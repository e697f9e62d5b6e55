"""A stage process in its own process group, killed as a group (contract.md §3, §5; ARCHITECTURE 2).

Why a group: ``bash -c 'make test'`` forks compilers, test runners and background jobs. Trio's
default cancellation signals only the direct child, so a grandchild would outlive a cancelled
or timed-out stage. Every process started here therefore leads its own group
(``process_group=0``) and every signal goes to the whole group with :func:`os.killpg`.

Lifetime rules (decided; contract.md §5 "no process started by the run survives it"):

* **Cancelled** (node timeout, run cancellation, a losing branch): SIGTERM to the group, wait up
  to ``kill_grace`` for the leader, SIGKILL the group. The grace is skipped at once when the
  run's *grace-skip* event is set (a second SIGINT), also in the middle of a wait.
* **Normal exit**: whatever the leader left running in its group (``cmd &`` without ``wait``)
  is SIGKILLed. A stage's processes do not outlive the stage; a command that wants its
  background work finished must ``wait`` for it.
* Either way the group is signalled while the leader is an unreaped zombie (Linux pidfd), so
  its pid — the group id — cannot be recycled by an unrelated process before the final
  ``killpg``; then we wait (bounded) until no live member is left before returning.

A process that leaves the group on purpose (``setsid``, ``set -m`` job control) escapes; doing
that is opting out of the stage's lifetime. Output goes straight to files (no pipes), so a
grandchild holding a pipe open can never block us, and stdin is ``/dev/null`` so a command that
reads input gets EOF instead of hanging. The one exception is redaction (contract.md §10): when
secret values are known, output goes through pipes and is copied, redacted, into the same
files; a grandchild holding such a pipe delays the end of the stage by at most
:data:`_DRAIN_TIMEOUT`. A process still writing after the engine itself died gets SIGPIPE
(the tool handler then re-runs that attempt instead of adopting it).

The whole ending path runs shielded and every wait in it is bounded, so a cancelled caller
gets control back within ``kill_grace`` plus a few seconds at worst.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO, final

import trio
from attrs import define, frozen

from ..core import redaction
from ..persist import pending
from ..persist.logtext import file_size

__all__ = [
    "OUTPUT_POLL_INTERVAL",
    "ProcessResult",
    "live_group_members",
    "proc_stat_fields",
    "run_in_process_group",
    "use_grace_skip",
]

#: How often the output files are checked for growth (progress for the liveness tree).
OUTPUT_POLL_INTERVAL = 0.25
#: After SIGKILL, how long we wait for the leader and then for the rest of the group.
_AFTER_KILL_TIMEOUT = 5.0
_MEMBER_POLL_INTERVAL = 0.01

#: With redaction, how long the output pumps may take to drain once the group has ended.
_DRAIN_TIMEOUT = 1.0
#: Whether ``/proc`` can show a group empty (Linux); elsewhere stragglers are SIGKILLed blind.
_HAVE_PROC = os.path.isdir("/proc/self")
_PUMP_CHUNK = 64 * 1024

_GRACE_SKIP: ContextVar[trio.Event | None] = ContextVar("attractor_trio_grace_skip", default=None)


@frozen
class ProcessResult:
    """How a process-group leader ended.

    ``exit_code`` follows :attr:`subprocess.Popen.returncode`: negative means killed by signal
    ``-exit_code`` (then ``signaled`` is true). The byte counts are what this run appended to the
    log files.
    """

    exit_code: int
    signaled: bool
    duration_s: float
    stdout_bytes: int
    stderr_bytes: int

    @property
    def signal_name(self) -> str:
        """``"SIGKILL"`` etc. for a signalled leader, else ``""``."""
        if not self.signaled:
            return ""
        try:
            return signal.Signals(-self.exit_code).name
        except ValueError:
            return f"signal {-self.exit_code}"


@contextlib.contextmanager
def use_grace_skip(event: trio.Event) -> Iterator[trio.Event]:
    """Make ``event`` the grace-skip switch for processes started in this context.

    The run enters this before it starts its tasks (trio copies the context into children) and
    sets ``event`` on the second SIGINT: kills waiting out their grace stop waiting, later kills
    skip the grace. A context variable rather than a module global, so two runs in one process
    (tests, the HTTP server) do not share it.
    """
    token = _GRACE_SKIP.set(event)
    try:
        yield event
    finally:
        _GRACE_SKIP.reset(token)


async def run_in_process_group(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdout_path: Path,
    stderr_path: Path,
    kill_grace: float,
    on_output: Callable[[], None] | None = None,
    skip_grace: trio.Event | None = None,
) -> ProcessResult:
    """Run ``argv`` as the leader of a new process group; return once the whole group is gone.

    Takes no timeout (the caller's cancel scope is the deadline). On cancellation the group is
    terminated as described in the module docstring before :class:`trio.Cancelled` propagates.
    ``on_output`` is called (from this task) whenever a log file has grown since the last look.
    ``skip_grace`` defaults to the event installed with :func:`use_grace_skip`.
    """
    skip = _grace_skip_event(skip_grace)
    watcher = _OutputWatcher(stdout_path, stderr_path)
    started = time.monotonic()
    redactor = redaction.current()
    with _open_log(stdout_path) as out, _open_log(stderr_path) as err:
        piped = subprocess.PIPE if redactor else None
        pending.flush_all()  # the process may write files at once: earlier events are logged
        proc = await trio.lowlevel.open_process(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=piped or out,
            stderr=piped or err,
            process_group=0,
        )
        if piped is None:
            # The process has its own copies; ours would only cost two descriptors per running
            # stage (a 1,000-branch tool fan-out held 2,000 of them for nothing).
            out.close()
            err.close()
        leader = _Leader(proc)
        async with _redacting_pumps(proc, (out, err), redactor):
            exit_code = await _supervise(leader, watcher, on_output, kill_grace, skip)
    # Output the pumps copied after the leader's exit was seen is progress too.
    if watcher.grew() and on_output is not None:
        on_output()
    return ProcessResult(
        exit_code=exit_code,
        signaled=exit_code < 0,
        duration_s=time.monotonic() - started,
        stdout_bytes=watcher.written[0],
        stderr_bytes=watcher.written[1],
    )


async def _supervise(
    leader: _Leader,
    watcher: _OutputWatcher,
    on_output: Callable[[], None] | None,
    kill_grace: float,
    skip: trio.Event,
) -> int:
    """Watch the leader (and the logs' growth) until it exits; then end the group, shielded."""
    try:
        while not leader.exited:
            with trio.move_on_after(OUTPUT_POLL_INTERVAL):
                await leader.wait_exited()
            if watcher.grew() and on_output is not None:
                on_output()
    finally:
        with trio.CancelScope(shield=True):
            exit_code = await _end_group(leader, kill_grace, skip)
    return exit_code


@contextlib.asynccontextmanager
async def _redacting_pumps(
    proc: trio.Process, logs: tuple[BinaryIO, BinaryIO], redactor: redaction.Redactor
) -> AsyncIterator[None]:
    """With secrets to redact (contract.md §10), the process writes to pipes and two tasks copy
    its output, redacted, into the logs; without, it writes the files itself (no cost).

    A pipe can be held open by a process that left the group (``setsid``); so once the body
    (which ends the group) is done, the pumps get :data:`_DRAIN_TIMEOUT` to reach end of file,
    then stop, writing what they still hold. Nothing can keep the stage waiting longer."""
    if not redactor or proc.stdout is None or proc.stderr is None:
        yield
        return
    streams = (proc.stdout, proc.stderr)
    async with trio.open_nursery() as nursery:
        finished = [trio.Event(), trio.Event()]
        for stream, log, done in zip(streams, logs, finished, strict=True):
            nursery.start_soon(_pump, stream, log, redaction.StreamRedactor(redactor), done)
        try:
            yield
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_DRAIN_TIMEOUT):
                for done in finished:
                    await done.wait()
            nursery.cancel_scope.cancel()


async def _pump(
    stream: trio.abc.ReceiveStream,
    log: BinaryIO,
    redactor: redaction.StreamRedactor,
    done: trio.Event,
) -> None:
    """Copy ``stream`` into ``log`` through ``redactor`` until end of file (or cancelled)."""
    writable = True
    try:
        while chunk := await stream.receive_some(_PUMP_CHUNK):
            writable = writable and _append(log, redactor.feed(bytes(chunk)))
    finally:
        if writable:
            _append(log, redactor.flush())
        await trio.aclose_forcefully(stream)
        done.set()


def _append(log: BinaryIO, data: bytes) -> bool:
    """Write to a stage log; ``False`` once that failed (disk full). The pump keeps draining
    the pipe then, so the process is never blocked on it, as when it wrote the file itself."""
    try:
        log.write(data)
        log.flush()
    except OSError:
        return False
    return True


def _grace_skip_event(explicit: trio.Event | None) -> trio.Event:
    if explicit is not None:
        return explicit
    installed = _GRACE_SKIP.get()
    return installed if installed is not None else trio.Event()


async def _end_group(leader: _Leader, kill_grace: float, skip: trio.Event) -> int:
    """SIGTERM → grace → SIGKILL while the leader runs; SIGKILL stragglers; reap. Bounded.

    Stragglers are SIGKILLed by the :class:`_GroupWatch` once a ``/proc`` scan shows the group
    still has live members after the leader's exit, not blindly: during a mass cancel each
    ``killpg`` costs 0.2 to 0.8 ms of the trio thread (the kernel's task list is busy with the
    exits), and the leader usually took its group with it on SIGTERM."""
    if not leader.exited:
        leader.signal_group(signal.SIGTERM)
        if kill_grace > 0 and not skip.is_set():
            await _wait_exit_or_skip(leader, kill_grace, skip)
        if not leader.exited:
            leader.signal_group(signal.SIGKILL)
            with trio.move_on_after(_AFTER_KILL_TIMEOUT):
                await leader.wait_exited()
    if not _HAVE_PROC:  # nothing can show the group empty: kill whatever is left of it
        leader.signal_group(signal.SIGKILL)
    with trio.move_on_after(_AFTER_KILL_TIMEOUT):
        await _GroupWatch.current().wait_gone(leader.pgid, time.monotonic(), kill=True)
    return await leader.reap()


async def _wait_exit_or_skip(leader: _Leader, grace: float, skip: trio.Event) -> None:
    """Wait until the leader exits, the grace is over, or the grace is skipped — first wins.

    The skip is seen through :class:`_SkipFan`, one task per run for every group in its
    grace, not a nursery with a second waiting task per group: cancelling a 1,000-branch
    fan-out spawned 2,000 tasks on the trio thread before the first group was gone."""
    with trio.move_on_after(grace) as scope:
        fan = _SkipFan.of(skip)
        fan.scopes.add(scope)
        try:
            await leader.wait_exited()
        finally:
            fan.scopes.discard(scope)


@final
class _SkipFan:
    """The cancel scopes of the graces in progress that a grace-skip event must end: one
    system task per event waits for it and cancels them all (``CancelScope.cancel`` is
    synchronous). Kept per trio run (:data:`_SKIP_FANS`), so two runs never share one."""

    def __init__(self, event: trio.Event) -> None:
        self.event = event
        self.scopes: set[trio.CancelScope] = set()

    @classmethod
    def of(cls, event: trio.Event) -> _SkipFan:
        try:
            fans = _SKIP_FANS.get()
        except LookupError:
            fans = {}
            _SKIP_FANS.set(fans)
        fan = fans.get(event)
        if fan is None:
            fan = fans[event] = cls(event)
            trio.lowlevel.spawn_system_task(fan._cancel_on_skip, name="grace-skip fan")
        return fan

    async def _cancel_on_skip(self) -> None:
        await self.event.wait()
        for scope in list(self.scopes):
            scope.cancel()


_SKIP_FANS: trio.lowlevel.RunVar[dict[trio.Event, _SkipFan]] = trio.lowlevel.RunVar(
    "attractor_trio_skip_fans"
)


async def _wait_members_gone(pgid: int) -> None:
    """Return once no live (non-zombie) process is left in the group; the caller bounds it.

    SIGKILL is asynchronous: ``killpg`` returns before the targets are dead. Zombies count as
    gone — they hold no resources, and their new parent (often PID 1) reaps them, not us.
    Polling ``/proc`` is the only way to watch a group. Only a scan begun after this call (so
    after the caller's ``killpg``) can say the group is gone: an older one may predate it.
    The polling is done by one :class:`_GroupWatch` task for every group being ended; this
    task sleeps until it says so (ending 1,000 groups woke 1,000 pollers every 10 ms).
    """
    await _GroupWatch.current().wait_gone(pgid, time.monotonic())


@final
class _GroupWatch:
    """Groups waited for in this trio run, and the one task that polls ``/proc`` for them.

    The poller is a system task started when the first group is waited for and ending when
    none is left; each scan answers every waiting group at once (:func:`_live_groups`)."""

    def __init__(self) -> None:
        self.waiting: dict[int, list[_Waiter]] = {}
        self.polling = False

    @classmethod
    def current(cls) -> _GroupWatch:
        try:
            watch = _GROUP_WATCH.get()
        except LookupError:
            watch = cls()
            _GROUP_WATCH.set(watch)
        return watch

    async def wait_gone(self, pgid: int, since: float, *, kill: bool = False) -> None:
        """Return once a scan begun at ``since`` or later shows no live member in ``pgid``.
        With ``kill``, the first such scan that still finds members SIGKILLs the group."""
        waiter = _Waiter(since, trio.Event(), kill)
        self.waiting.setdefault(pgid, []).append(waiter)
        try:
            if not self.polling:
                self.polling = True
                trio.lowlevel.spawn_system_task(self._poll, name="process-group watch")
            await waiter.gone.wait()
        finally:
            self._forget(pgid, waiter)

    def _forget(self, pgid: int, waiter: _Waiter) -> None:
        waiters = self.waiting.get(pgid, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self.waiting.pop(pgid, None)

    async def _poll(self) -> None:
        try:
            while self.waiting:
                self._settle(_live_groups())
                if self.waiting:
                    await trio.sleep(_MEMBER_POLL_INTERVAL)
        finally:
            self.polling = False

    def _settle(self, scan: _Scan) -> None:
        """Wake the waiters whose group ``scan`` shows empty, if it began after they asked;
        SIGKILL the groups it shows alive whose waiters asked for that."""
        for pgid, waiters in list(self.waiting.items()):
            alive = not scan.complete or scan.groups.get(pgid, 0) > 0
            for waiter in waiters:
                if scan.began < waiter.since:
                    continue
                if not alive:
                    waiter.gone.set()
                elif waiter.kill:
                    waiter.kill = False
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.SIGKILL)


@define
class _Waiter:
    """One wait for a group to be empty: since when, the wake-up, and whether to SIGKILL it."""

    since: float
    gone: trio.Event
    kill: bool


_GROUP_WATCH: trio.lowlevel.RunVar[_GroupWatch] = trio.lowlevel.RunVar("attractor_trio_group_watch")


@frozen
class _Scan:
    """One pass over ``/proc``: live members per process group, and when it ran.

    ``complete`` is false when some process could not be read for another reason than being
    gone (``EMFILE`` in a wide fan-out, ``EACCES``): such a scan shows no group empty."""

    groups: dict[int, int]
    began: float
    ended: float
    complete: bool = True

    def fresh(self, now: float) -> bool:
        """Reused for half a poll interval, or as long as the scan itself took if that is
        longer, so that scanning never takes more than about half of the trio thread."""
        return now - self.ended < max(_MEMBER_POLL_INTERVAL / 2, self.ended - self.began)


_scan = _Scan({}, -1.0, -1.0)


def _live_groups() -> _Scan:
    """``{pgid: live members}`` from one ``/proc`` scan, shared by every group being ended.

    Cancelling a fan-out ends as many groups at once as it has branches; one scan answers
    them all, where a scan per group would serialize (≈4 ms each on a busy machine for 100
    groups). With 1,000 branches a scan reads 1,000 ``stat`` files and outlasts the poll
    interval, so a scan is reused for as long as it took (:meth:`_Scan.fresh`): reusing it only
    for half a poll interval made every group rescan, and ending 1,000 groups took minutes.
    """
    global _scan
    began = time.monotonic()
    if _scan.fresh(began):
        return _scan
    groups = _walk_proc()
    _scan = _Scan(groups or {}, began, time.monotonic(), complete=groups is not None)
    return _scan


def _walk_proc() -> dict[int, int] | None:
    """Live (non-zombie) processes per process group, read from ``/proc`` (``{}`` without it);
    ``None`` when ``/proc`` exists but some process could not be read (not because it was
    gone): a group must never look empty because the scan could not see its members."""
    groups: dict[int, int] = {}
    try:
        entries = os.scandir("/proc")
    except OSError:
        return None if _HAVE_PROC else groups
    with entries:
        for entry in entries:
            if entry.name.isdigit():
                try:
                    pgid = _live_pgid(entry.name)
                except (FileNotFoundError, ProcessLookupError):
                    continue  # exited while we looked: gone
                except OSError:
                    return None
                if pgid is not None:
                    groups[pgid] = groups.get(pgid, 0) + 1
    return groups


def _live_pgid(pid: str) -> int | None:
    """The group of a live process, ``None`` for a zombie; raises ``OSError`` if unreadable."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) <= 2 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[2])


def proc_stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name — state first, so field
    ``n`` of proc(5) is index ``n - 3`` — or ``None`` when unreadable (gone, or not Linux).
    The command name may hold spaces and parentheses, hence the split at the last ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def live_group_members(pgid: int) -> list[int]:
    """Pids of the non-zombie processes in group ``pgid`` (Linux ``/proc``; ``[]`` elsewhere)."""
    members = []
    try:
        entries = os.scandir("/proc")
    except OSError:
        return []
    with entries:
        for entry in entries:
            if entry.name.isdigit() and _live_in_group(entry.name, pgid):
                members.append(int(entry.name))
    return members


def _live_in_group(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid


@final
class _Leader:
    """The group leader, observed through a pidfd so that exit can be seen without reaping."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.pgid = proc.pid
        self.exited = False
        self._pidfd = _open_pidfd(proc.pid)

    async def wait_exited(self) -> None:
        """Return once the leader has exited; with a pidfd it stays an unreaped zombie."""
        if self._pidfd is None:
            await self.proc.wait()
        else:
            await trio.lowlevel.wait_readable(self._pidfd)
        self.exited = True

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def reap(self) -> int:
        """Collect the exit status (bounded) and release the pidfd."""
        with trio.move_on_after(_AFTER_KILL_TIMEOUT):
            await self.proc.wait()
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        code = self.proc.returncode
        return -signal.SIGKILL if code is None else code


def _open_pidfd(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd


def _open_log(path: Path) -> BinaryIO:
    """Append, so an earlier attempt's log (if the engine kept it in place) is not clobbered."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")


@final
class _OutputWatcher:
    """Remembers the log sizes; :meth:`grew` says whether either grew since the last call."""

    def __init__(self, *paths: Path) -> None:
        self._paths = paths
        self._start = [file_size(p) for p in paths]
        self._last = list(self._start)

    def grew(self) -> bool:
        now = [file_size(p) for p in self._paths]
        grew = now != self._last
        self._last = now
        return grew

    @property
    def written(self) -> list[int]:
        return [last - start for last, start in zip(self._last, self._start, strict=True)]
