"""Event-log lines are written in batches, never later than a crash may observe (contract.md §4).

While a run's event loop buffers (``aio/event_flush.py``, ``persist/pending.py``), an event's
line waits in memory and the lines go out as one ``write(2)`` per file: before the loop waits,
before any file of the run is renamed into place, and when the writer syncs, releases or
closes. An append from another thread writes through at once.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.aio.event_flush import buffered_events
from attractor_trio.persist import exchange, pending
from attractor_trio.persist.progress import ProgressWriter, read_progress

from .helpers import fan_out_dot, run_dot

CHAIN = (
    "digraph C {\n  start [shape=Mdiamond]; done [shape=Msquare]\n"
    + "".join(f'  s{i} [shape=box, prompt="p"]\n' for i in range(10))
    + "  start -> "
    + " -> ".join(f"s{i}" for i in range(10))
    + " -> done\n}\n"
)


def _is_log(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith("progress.ndjson")
    except OSError:
        return False


@pytest.fixture
def buffering() -> Iterator[None]:
    """This thread buffers, as a run's event loop does (without the loop's instrument)."""
    pending.buffering_on()
    try:
        yield
    finally:
        pending.buffering_off()


async def test_a_run_writes_its_events_in_fewer_writes_than_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 0
    real_write = os.write

    def counting(fd: int, data: Any) -> int:
        nonlocal writes
        if _is_log(fd):
            writes += 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    root = tmp_path / "run"
    result = await run_dot(CHAIN, root)
    assert result.status == "success"
    events = read_progress(root / "progress.ndjson")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(events) >= 70
    assert writes < len(events) / 2, (writes, len(events))


@pytest.mark.parametrize("source", [CHAIN, fan_out_dot(6)], ids=["chain", "fan-out"])
async def test_every_event_emitted_before_a_rename_is_in_the_log_at_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """At each ``rename``/``link`` into the run directory (on any thread: the write pool's
    too), the run's log and every branch log hold every event emitted before it."""
    root = tmp_path / "run"
    emitted: list[dict[str, Any]] = []
    checked = 0

    def check(real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal checked
            seen = list(emitted)  # those whose emit returned before this rename
            if seen and os.fspath(dst).startswith(os.fspath(root)):
                checked += 1
                logged = {e["seq"] for e in read_progress(root / "progress.ndjson")}
                missing = [e["seq"] for e in seen if e["seq"] not in logged]
                assert not missing, f"events {missing} not in the log when {dst} appeared"
            return real(src, dst, *args, **kwargs)

        return spy

    monkeypatch.setattr(os, "replace", check(os.replace))
    monkeypatch.setattr(os, "link", check(os.link))
    monkeypatch.setattr(exchange, "rename_exchange", check(exchange.rename_exchange))
    result = await run_dot(source, root, sinks=[emitted.append])
    assert result.status == "success"
    assert checked >= 10


async def test_nothing_stays_held_once_the_loop_runs_again(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The instrument writes the held lines before the loop's next I/O wait, even one with
    no timeout (``sleep(0)``: other tasks are runnable)."""
    path = tmp_path / "progress.ndjson"
    with ProgressWriter(path, "r") as writer, buffered_events():
        writer.emit("one")
        writer.emit("two")
        assert path.read_bytes() == b""  # held, not written per event
        await trio.lowlevel.checkpoint()
        assert [e["event"] for e in read_progress(path)] == ["one", "two"]
        writer.emit("three")
        await trio.sleep(5)
        assert [e["event"] for e in read_progress(path)] == ["one", "two", "three"]


async def test_the_held_lines_are_written_when_buffering_ends(
    tmp_path: Path, autojump_clock: Any
) -> None:
    path = tmp_path / "progress.ndjson"
    with ProgressWriter(path, "r") as writer:
        with buffered_events():
            writer.emit("held")
            assert path.read_bytes() == b""
        assert [e["event"] for e in read_progress(path)] == ["held"]
        writer.emit("after")  # not buffering any more: written at once
        assert [e["event"] for e in read_progress(path)] == ["held", "after"]


async def test_an_append_from_a_worker_thread_writes_through(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Nobody would flush a worker thread's line while trio sleeps in ``epoll``; it is
    written at once, after the lines the trio thread holds (``seq`` order is file order)."""
    path = tmp_path / "progress.ndjson"

    def from_a_thread(writer: ProgressWriter) -> list[str]:
        assert threading.current_thread() is not threading.main_thread()
        writer.emit("from the thread")
        return [e["event"] for e in read_progress(path)]

    with ProgressWriter(path, "r") as writer, buffered_events():
        writer.emit("held on the trio thread")
        assert path.read_bytes() == b""
        on_disk = await trio.to_thread.run_sync(from_a_thread, writer)
    assert on_disk == ["held on the trio thread", "from the thread"]
    assert [e["seq"] for e in read_progress(path)] == [1, 2]


def test_outside_a_buffering_loop_each_event_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "progress.ndjson"
    with ProgressWriter(path, "r") as writer:
        writer.emit("a")
        assert [e["event"] for e in read_progress(path)] == ["a"]


@pytest.mark.usefixtures("buffering")
def test_a_batch_cut_short_by_a_full_disk_is_cut_back_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write fails part-way leaves no fragment in the file; its lines stay
    held (their ``seq`` is spent) and go out, in order, with the next flush."""
    path = tmp_path / "progress.ndjson"
    with ProgressWriter(path, "r") as writer:
        writer.emit("first")
        writer.flush()
        size = path.stat().st_size
        writer.emit("second")
        writer.emit("third")
        real_write = os.write

        def full_disk(fd: int, data: Any) -> int:
            if len(data) > 20:  # the batch: half of it lands, then the disk is full
                real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", full_disk)
        with pytest.raises(OSError, match="No space"):
            pending.flush_all()
        assert path.stat().st_size == size
        assert [e["event"] for e in read_progress(path)] == ["first"]
        monkeypatch.setattr(os, "write", real_write)
        writer.emit("fourth")
        writer.flush()
    events = read_progress(path)
    assert [(e["seq"], e["event"]) for e in events] == [
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (4, "fourth"),
    ]


def test_a_write_through_that_fails_spends_no_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append from a thread that does not buffer, behind held lines, fails as a whole:
    the held lines stay held and the failed event's ``seq`` goes to the next one."""
    path = tmp_path / "progress.ndjson"
    with ProgressWriter(path, "r") as writer:
        pending.buffering_on()
        try:
            writer.emit("held")
        finally:
            pending._buffering.pop(threading.get_ident(), None)  # stop without flushing
        monkeypatch.setattr(os, "write", _no_space)
        with pytest.raises(OSError):
            writer.emit("lost")
        monkeypatch.undo()
        writer.emit("next")
    assert [(e["seq"], e["event"]) for e in read_progress(path)] == [(1, "held"), (2, "next")]


def _no_space(fd: int, data: Any) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.usefixtures("buffering")
@pytest.mark.parametrize("how", ["sync", "release", "give_back", "close"])
def test_the_held_lines_are_written_before_the_descriptor_goes(tmp_path: Path, how: str) -> None:
    path = tmp_path / "progress.ndjson"
    writer = ProgressWriter(path, "r")
    try:
        writer.emit("held")
        assert path.read_bytes() == b""
        getattr(writer, how)()
        assert [e["event"] for e in read_progress(path)] == ["held"]
    finally:
        writer.close()


_KILLED_AT_RENAME = """
import os, signal, sys, trio
from functools import partial
from attractor_trio import SimulationBackend, load, run
source, root, side, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
side_fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
renames = 0
real_replace, real_link = os.replace, os.link

def killing(real):
    def at_rename(src, dst, *args, **kwargs):
        global renames
        if os.fspath(dst).startswith(root):
            renames += 1
            if renames == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return at_rename

os.replace, os.link = killing(real_replace), killing(real_link)
from attractor_trio.persist import exchange  # the checkpoint's names swapped in one call
exchange.rename_exchange = killing(exchange.rename_exchange)
sink = lambda envelope: os.write(side_fd, b"%d\\n" % envelope["seq"])
trio.run(partial(run, load(open(source).read()), logs_root=root, backend=SimulationBackend(),
                 heartbeat_interval=None, sinks=[sink], workdir=os.path.dirname(root)))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "nth"),
    [("chain", 5), ("chain", 12), ("chain", 30), ("fan-out", 6), ("fan-out", 12)],
)
def test_a_sigkill_at_a_rename_finds_every_earlier_event_in_the_log(
    tmp_path: Path, shape: str, nth: int
) -> None:
    """The crash case for real: SIGKILL the engine as it is about to rename its ``nth`` file
    into place; the run's log holds every event a sink saw before that (a sink sees an event
    right after its line was appended)."""
    import subprocess
    import sys

    source = tmp_path / "p.dot"
    source.write_text(CHAIN if shape == "chain" else fan_out_dot(4))
    root, side = tmp_path / "run", tmp_path / "seen.txt"
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_RENAME, source, root, side, str(nth)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode()
    seen = [int(line) for line in side.read_text().split()]
    assert seen
    logged = [e["seq"] for e in read_progress(root / "progress.ndjson")]
    assert logged[: len(seen)] == seen


@pytest.mark.usefixtures("buffering")
def test_a_released_log_with_held_lines_writes_them_and_keeps_no_descriptor(
    tmp_path: Path,
) -> None:
    """A branch log the hub released, written to and released again, must not be left to a
    later flush: that flush would reopen every such log at once (``EMFILE`` in a fan-out
    wider than the descriptor limit, ``test_fanout_scale``)."""
    path = tmp_path / "progress.ndjson"
    writer = ProgressWriter(path, "r")
    try:
        writer.release()
        before = len(os.listdir("/proc/self/fd"))
        writer.emit("after the release")
        writer.release()
        assert [e["event"] for e in read_progress(path)] == ["after the release"]
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        writer.close()


TOOL_CHAIN = (
    "digraph T {\n  start [shape=Mdiamond]; done [shape=Msquare]\n"
    '  a [shape=parallelogram, tool_command="echo a > a.txt"]\n'
    '  b [shape=parallelogram, tool_command="echo b > b.txt"]\n'
    "  start -> a -> b -> done\n}\n"
)


async def test_every_event_emitted_before_a_tool_starts_is_in_the_log_when_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool stage's process can write files of its own as soon as it is started: the events
    emitted before it are in the log by then."""
    root = tmp_path / "run"
    emitted: list[dict[str, Any]] = []
    started = 0
    real_open = trio.lowlevel.open_process

    async def spy(*args: Any, **kwargs: Any) -> Any:
        nonlocal started
        started += 1
        logged = {e["seq"] for e in read_progress(root / "progress.ndjson")}
        missing = [e["seq"] for e in emitted if e["seq"] not in logged]
        assert not missing, f"events {missing} not in the log when a tool started"
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(trio.lowlevel, "open_process", spy)
    result = await run_dot(TOOL_CHAIN, root, sinks=[emitted.append])
    assert result.status == "success", result.failure_reason
    assert started == 2
