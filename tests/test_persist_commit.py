"""One commit per stage boundary (persist/commit.py): concurrent fsyncs, owed directory syncs
paid before the checkpoint's rename, and the checkpoint rewritten through a recycled inode."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import attractor_trio.scopes.run as run_module
from attractor_trio.persist import commit, exchange
from attractor_trio.persist.atomic import cleanup_temp_files, is_temp_file_name, read_json
from attractor_trio.persist.checkpoint import write_checkpoint_bytes
from attractor_trio.persist.commit import DirectorySyncs, fsync_together
from attractor_trio.persist.recycling import RecyclingWriter

from .helpers import TWO_STAGE_CHAIN as LINEAR
from .helpers import fail_fsyncs, run_dot


def _temps(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if is_temp_file_name(name))


def _path_of(fd: int) -> str:
    """The name of ``fd``'s file now. The checkpoint writer keeps its inodes open for the run,
    and ``/proc`` names a kept descriptor by the name it had (``checkpoint.json (deleted)``)
    once that name was renamed over: the inode's current name in the same directory then."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if path.endswith(" (deleted)"):
        inode = os.fstat(fd).st_ino
        with os.scandir(os.path.dirname(path)) as entries:
            return next(entry.path for entry in entries if entry.inode() == inode)
    return path


def _journal_fsyncs(monkeypatch: pytest.MonkeyPatch, journal: list[str]) -> None:
    """Note the path of every fsync'ed descriptor in ``journal`` (and still sync)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        journal.append(_path_of(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _journal_renames(monkeypatch: pytest.MonkeyPatch, journal: list[str], root: Path) -> None:
    """Note ``rename <target relative to root>`` for every ``os.replace``, and for every
    exchange of a spare's name with its target's (the checkpoint's rename where it can)."""
    real_replace, real_exchange = os.replace, exchange.rename_exchange

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        journal.append(f"rename {Path(target).relative_to(root)}")
        real_replace(source, target)

    def swap(spare: str, target: str) -> bool:
        done = real_exchange(spare, target)
        if done:
            journal.append(f"rename {Path(target).relative_to(root)}")
        return done

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(exchange, "rename_exchange", swap)


def _journal_creates(monkeypatch: pytest.MonkeyPatch, journal: list[str], root: Path) -> None:
    """Note ``create <path relative to root>`` for every exclusive create of a file that is
    not a temp (a file written in place, contract.md §2)."""
    real_open = os.open

    def open_(path: str | os.PathLike[str], flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_EXCL and not is_temp_file_name(Path(path).name):
            journal.append(f"create {Path(path).relative_to(root)}")
        return fd

    monkeypatch.setattr(os, "open", open_)


# ------------------------------------------------------------------------- RecyclingWriter


def test_each_write_replaces_the_target_and_keeps_one_spare(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.json"
    writer = RecyclingWriter(target)
    for n in range(5):
        writer.write(json.dumps({"n": n, "pad": "x" * (100 - 10 * n)}).encode())
        assert read_json(target)["n"] == n  # shorter documents are not padded by old bytes
        assert len(_temps(tmp_path)) == (1 if n else 0)
    writer.close()
    assert os.listdir(tmp_path) == ["checkpoint.json"]


def test_the_displaced_inode_is_the_next_temp_so_nothing_is_created_or_freed(
    tmp_path: Path,
) -> None:
    """A rename over the old checkpoint freed its blocks (85-150 µs on a disk mounted with
    ``discard``): the old inode is kept under a temp name and becomes the next document."""
    target = tmp_path / "checkpoint.json"
    writer = RecyclingWriter(target)
    inodes = []
    for n in range(4):
        writer.write(b'{"n": %d}\n' % n)
        inodes.append(target.stat().st_ino)
    assert inodes[2] == inodes[0] and inodes[3] == inodes[1] and inodes[0] != inodes[1]


@pytest.mark.parametrize("step", ["link", "replace", "fsync", "rename_exchange"])
def test_a_failure_at_any_step_leaves_the_previous_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """``link`` and ``replace`` are the recipe's steps where names cannot be exchanged (made
    so here); ``rename_exchange`` is the one call that replaces them where they can."""
    if step in ("link", "replace"):
        monkeypatch.setattr(exchange, "rename_exchange", lambda first, second: False)
    target = tmp_path / "checkpoint.json"
    writer = RecyclingWriter(target)
    writer.write(b'{"n": 1}\n')
    writer.write(b'{"n": 2}\n')  # now there is a spare holding document 1

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(5, f"{step} failed (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(exchange if step == "rename_exchange" else os, step, broken)
        with pytest.raises(OSError, match="simulated"):
            writer.write(b'{"n": 3}\n')
    assert read_json(target) == {"n": 2}
    writer.write(b'{"n": 4}\n')  # and the writer carries on
    assert read_json(target) == {"n": 4}
    cleanup_temp_files(tmp_path)  # what the next start does with a killed writer's temps
    writer.close()
    assert os.listdir(tmp_path) == ["checkpoint.json"]


@pytest.mark.parametrize("fail_after_rename", [False, True])
def test_the_spare_is_truncated_whenever_the_new_document_is_shorter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_after_rename: bool
) -> None:
    """The writer skips ``ftruncate`` when it knows the spare holds no more bytes than the new
    document; with a target left by an earlier process, or after a failed commit, it must
    not guess: every document on disk is exactly the bytes written."""
    target = tmp_path / "checkpoint.json"
    target.write_bytes(b"x" * 500)  # a previous run's (longer) checkpoint
    writer = RecyclingWriter(target)
    real_fsync, calls = os.fsync, []

    def second_wait_fails(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1 and os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(5, "directory fsync failed (simulated)")
        real_fsync(fd)

    sizes = [10, 300, 5, 400, 10, 50, 1, 200, 3, 3]  # a stale size at 5 would leave junk
    for n, size in enumerate(sizes):
        data = b"%d:" % n + b"y" * size
        if fail_after_rename and n == 4:
            with monkeypatch.context() as patch:
                patch.setattr(os, "fsync", second_wait_fails)
                with pytest.raises(OSError, match="simulated"):
                    writer.write(data)
        else:
            writer.write(data)
        assert target.read_bytes() == data, n
    writer.close()


def test_a_spare_removed_behind_the_writers_back_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.json"
    writer = RecyclingWriter(target)
    writer.write(b'{"n": 1}\n')
    writer.write(b'{"n": 2}\n')
    cleanup_temp_files(tmp_path)
    writer.write(b'{"n": 3}\n')
    assert read_json(target) == {"n": 3}


# -------------------------------------------------------------------- owed directory syncs


def test_owed_directories_are_synced_with_the_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    owed = DirectorySyncs()
    owed.defer(stage)
    journal: list[str] = []
    _journal_fsyncs(monkeypatch, journal)
    _journal_renames(monkeypatch, journal, tmp_path)
    RecyclingWriter(tmp_path / "checkpoint.json", owed).write(b"{}\n")
    rename = journal.index("rename checkpoint.json")
    assert str(stage) in journal[:rename]  # paid before the rename that depends on it
    assert journal[rename + 1 :] == [str(tmp_path)]  # then the run directory, as always
    assert not owed


def test_owed_syncs_can_be_paid_without_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    _journal_fsyncs(monkeypatch, synced)
    owed = DirectorySyncs()
    owed.defer(tmp_path)
    owed.defer(tmp_path / "gone")  # removed meanwhile: nothing to sync
    owed.sync()
    assert synced == [str(tmp_path)]
    owed.sync()
    assert synced == [str(tmp_path)]


def test_a_failed_owed_sync_fails_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoint.json"
    owed = DirectorySyncs()
    owed.defer(tmp_path)
    fail_fsyncs(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        RecyclingWriter(target, owed).write(b"{}\n")
    assert not target.exists()
    assert _temps(tmp_path) == []


def test_a_held_file_is_renamed_just_before_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    owed = DirectorySyncs()
    owed.hold(stage / "status.json", b'{"outcome": "success"}\n')
    assert owed
    journal: list[str] = []
    _journal_fsyncs(monkeypatch, journal)
    _journal_renames(monkeypatch, journal, tmp_path)
    RecyclingWriter(tmp_path / "checkpoint.json", owed).write(b"{}\n")
    assert journal[2:4] == ["rename stage/status.json", "rename checkpoint.json"]
    assert sorted(Path(p).parent for p in journal[:2]) == [tmp_path, stage]  # both temps
    assert sorted(journal[4:]) == sorted([str(tmp_path), str(stage)])
    assert read_json(stage / "status.json") == {"outcome": "success"}
    assert not owed
    assert _temps(stage) == []


def test_a_failed_first_wait_renames_nothing_and_keeps_the_held_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither name moves unless both files are durable; the held file is written again by
    the next commit (or by the end of the run)."""
    stage = tmp_path / "stage"
    stage.mkdir()
    target = tmp_path / "checkpoint.json"
    owed = DirectorySyncs()
    owed.hold(stage / "status.json", b"{}\n")
    with monkeypatch.context() as patch:
        fail_fsyncs(patch)
        with pytest.raises(OSError, match="simulated"):
            RecyclingWriter(target, owed).write(b"{}\n")
    assert not target.exists() and not (stage / "status.json").exists()
    assert _temps(stage) == [] and _temps(tmp_path) == []
    owed.sync()
    assert read_json(stage / "status.json") == {}


def test_held_files_are_redacted(tmp_path: Path) -> None:
    from attractor_trio.core import redaction

    redaction.register_values(["hunter2-secret"])
    try:
        owed = DirectorySyncs()
        owed.hold(tmp_path / "status.json", b'{"notes": "pw hunter2-secret"}')
    finally:
        redaction.reset()
    owed.sync()
    assert "hunter2-secret" not in (tmp_path / "status.json").read_text()


def test_both_waits_of_a_boundary_are_concurrent_on_a_slow_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_disk: None
) -> None:
    """Each fake fsync waits until its partner is in flight: the status temp with the
    checkpoint temp, then the stage directory with the run directory. One after another they
    would never meet (the barrier breaks after its timeout and the write fails)."""
    stage = tmp_path / "stage"
    stage.mkdir()
    barrier = threading.Barrier(2, timeout=5)
    calls: list[str] = []

    def fsync(fd: int) -> None:
        calls.append(_path_of(fd))
        barrier.wait()

    owed = DirectorySyncs()
    owed.hold(stage / "status.json", b"{}\n")
    monkeypatch.setattr(os, "fsync", fsync)
    RecyclingWriter(tmp_path / "checkpoint.json", owed).write(b"{}\n")
    assert len(calls) == 4


# ------------------------------------------------------------------------ fsync_together


@pytest.fixture
def fds(tmp_path: Path) -> Iterator[list[int]]:
    """Three descriptors of one directory (fsyncing a directory is cheap), closed afterwards."""
    opened = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) for _ in range(3)]
    yield opened
    for fd in opened:
        os.close(fd)


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """fsync is expensive here (as measured so far), so fsyncs go to the helper threads."""
    monkeypatch.setattr(commit, "_slow_waits", 1_000_000)
    yield


def test_independent_fsyncs_run_concurrently_on_a_slow_disk(
    monkeypatch: pytest.MonkeyPatch, slow_disk: None, fds: list[int]
) -> None:
    """Each fake fsync waits until all three are in flight: run one after another, they
    would never meet (the barrier breaks after its timeout and the test fails)."""
    barrier = threading.Barrier(3, timeout=5)
    monkeypatch.setattr(os, "fsync", lambda fd: barrier.wait())
    fsync_together(fds)


def test_on_a_cheap_disk_fsyncs_stay_on_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch, fds: list[int]
) -> None:
    """On tmpfs a thread hand-off costs more than the fsyncs it would overlap."""
    monkeypatch.setattr(commit, "_slow_waits", 0)
    threads: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: threads.append(threading.current_thread().name))
    fsync_together(fds)
    assert threads == [threading.current_thread().name] * 3


def test_every_fsync_finishes_before_an_error_is_raised(
    monkeypatch: pytest.MonkeyPatch, slow_disk: None, fds: list[int]
) -> None:
    finished: list[int] = []

    def fsync(fd: int) -> None:
        if fd == fds[0]:
            raise OSError(5, "Input/output error (simulated)")
        finished.append(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="simulated"):
        fsync_together(fds)
    assert sorted(finished) == sorted(fds[1:])


def test_a_helpers_error_is_raised_and_the_helpers_are_reused(
    monkeypatch: pytest.MonkeyPatch, slow_disk: None, fds: list[int]
) -> None:
    """The helper threads live on between waits (a thread per wait would cost more than the
    hand-off saves), and an fsync failing on one is the caller's error."""
    fsync_together(fds)
    helpers = {t.ident for t in threading.enumerate() if t.name == "attractor-trio-fsync"}
    for _ in range(20):
        fsync_together(fds)
    after = {t.ident for t in threading.enumerate() if t.name == "attractor-trio-fsync"}
    assert after == helpers and len(helpers) >= 2

    def fsync(fd: int) -> None:
        if fd == fds[2]:
            raise OSError(5, "Input/output error (simulated)")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="simulated"):
        fsync_together(fds)
    monkeypatch.undo()
    monkeypatch.setattr(commit, "_slow_waits", 1_000_000)
    fsync_together(fds)  # and the helper that failed serves the next wait


class _FakeFsyncTime:
    """``os.fsync`` that takes ``costs`` seconds of a fake clock, one by one, recording which
    thread ran each; ``commit._clock`` reads that clock."""

    def __init__(self, costs: list[float]) -> None:
        self.now = 0.0
        self.costs = costs
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def fsync(self, fd: int) -> None:
        with self._lock:
            self.now += self.costs.pop(0) if self.costs else 1e-6
            self.threads.append(threading.current_thread().name)

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake_fsync_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeFsyncTime]:
    fake = _FakeFsyncTime([])
    monkeypatch.setattr(os, "fsync", fake.fsync)
    monkeypatch.setattr(commit, "_clock", fake.clock)
    monkeypatch.setattr(commit, "_slow_waits", 0)
    yield fake


def test_stalled_fsyncs_on_a_cheap_disk_do_not_send_the_next_waits_to_helpers(
    fake_fsync_time: _FakeFsyncTime, fds: list[int]
) -> None:
    """The cost is wall time around ``fsync``, which also counts a stall of the thread (another
    process on the CPU, a profiler's pause, the GIL held elsewhere). On tmpfs (1-2 µs) one
    5 ms stall made the running average send the next dozen waits to the helper threads, a
    hand-off each for nothing; stalls in three waits in a row do not either now."""
    fake = fake_fsync_time
    for _ in range(5):
        fsync_together(fds)
    fake.costs = [1e-6, 5e-3, 1e-6] * 3  # a stall in each of the next three waits
    for _ in range(10):
        fsync_together(fds)
    assert set(fake.threads) == {threading.current_thread().name}
    assert commit._slow_waits == 0


def test_a_slow_disk_sends_the_waits_to_the_helpers_and_a_cheap_one_back(
    fake_fsync_time: _FakeFsyncTime, fds: list[int]
) -> None:
    """Where every fsync costs real time (0.15-0.5 ms on ext4 here), the waits go to the
    helpers once a few have measured it; when fsync turns cheap, they come back inline."""
    fake = fake_fsync_time
    me = threading.current_thread().name
    fake.costs = [300e-6] * (3 * commit.SLOW_WAITS + 3)
    for _ in range(commit.SLOW_WAITS):
        fsync_together(fds)  # measured inline
    assert fake.threads == [me] * 3 * commit.SLOW_WAITS
    fake.threads.clear()
    fsync_together(fds)
    assert fake.threads.count(me) == 1 and len(fake.threads) == 3
    fake.costs = []  # 1 µs from now on
    fsync_together(fds)  # on the helpers still, and measured cheap
    fake.threads.clear()
    fsync_together(fds)
    assert fake.threads == [me] * 3


def test_while_another_thread_uses_the_helpers_a_wait_runs_inline(
    monkeypatch: pytest.MonkeyPatch, slow_disk: None, fds: list[int]
) -> None:
    """The helper threads are the process's (at most three); a second thread committing at
    the same moment does its fsyncs itself instead of starting more threads or waiting."""
    threads: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: threads.append(threading.current_thread().name))
    with commit._helpers_lock:  # another thread's wait is using the helpers
        fsync_together(fds)
    assert threads == [threading.current_thread().name] * 3
    threads.clear()
    monkeypatch.setattr(commit, "_slow_waits", 1_000_000)  # (the fake fsyncs were cheap)
    fsync_together(fds)
    assert threads.count(threading.current_thread().name) == 1 and len(threads) == 3


# ------------------------------------------------------------------------------- the engine


def _is_temp_of(path: str, directory: Path) -> bool:
    return Path(path).parent == directory and is_temp_file_name(Path(path).name)


async def test_a_stage_boundary_is_two_waits_status_renamed_just_before_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage boundary is one commit of two waits: the status temp and the checkpoint temp
    fsynced together, ``status.json`` renamed, then ``checkpoint.json``, then the stage
    directory and the run directory fsynced together. The finished marker (the exactly-once
    commit point, carrying the outcome) is in place before both: created in place, as are
    ``prompt.md`` and ``response.md``, in a stage dir the attempt made (contract.md §2)."""
    journal: list[str] = []
    root = tmp_path / "run"
    _journal_fsyncs(monkeypatch, journal)
    _journal_renames(monkeypatch, journal, root)
    _journal_creates(monkeypatch, journal, root)
    result = await run_dot(LINEAR, root)
    assert result.status == "success"
    previous = 0
    for stage in ("start", "a", "b", "exit"):
        status = journal.index(f"rename {stage}/status.json", previous)
        checkpoint = journal.index("rename checkpoint.json", status)
        assert checkpoint == status + 1, stage  # renamed together, the status file first
        wait_1 = journal[status - 2 : status]
        assert sorted(_is_temp_of(p, root / stage) for p in wait_1) == [False, True], stage
        assert sorted(_is_temp_of(p, root) for p in wait_1) == [False, True], stage
        wait_2 = journal[checkpoint + 1 : checkpoint + 3]
        assert sorted(wait_2) == sorted([str(root / stage), str(root)]), stage
        previous = checkpoint
    for stage in ("a", "b"):  # the commit point precedes both renames, and holds the outcome
        marker = journal.index(f"create {stage}/.attempt.json")
        assert marker < journal.index(f"rename {stage}/status.json"), stage
        assert journal.index(f"create {stage}/response.md") < marker, stage
        assert f"rename {stage}/.attempt.json" not in journal, stage
        assert f"rename {stage}/prompt.md" not in journal, stage
        assert read_json(root / stage / ".attempt.json")["outcome"]["outcome"] == "success"
    assert not [name for name in os.listdir(root) if is_temp_file_name(name)]


async def test_a_stage_without_its_checkpoint_has_its_debt_paid_before_final_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint that would have paid the stage's directory fsync never happens (here an
    engine bug in it): finalize pays it before ``final.json`` and removes the spare."""
    journal: list[str] = []
    root = tmp_path / "run"
    _journal_fsyncs(monkeypatch, journal)

    real_write = write_checkpoint_bytes

    def broken_checkpoint(destination: RecyclingWriter, data: bytes) -> Path:
        if b'"current_node":"a"' in data:
            raise RuntimeError("planted bug")
        return real_write(destination, data)

    monkeypatch.setattr(run_module, "write_checkpoint_bytes", broken_checkpoint)
    result = await run_dot(LINEAR, root)
    assert result.exit_path == "internal_error"
    final = next(i for i, path in enumerate(journal) if ".final.json." in path)
    assert str(root / "a") in journal[:final]
    assert read_json(root / "a" / "status.json")["outcome"] == "success"  # the held file too
    assert not [name for name in os.listdir(root) if is_temp_file_name(name)]


async def test_a_retried_attempts_status_is_on_disk_before_stage_retrying(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A held status file waits for the stage boundary, but an attempt that will be retried
    has no boundary: its ``status.json`` is written before ``stage_retrying`` (so it is there
    during the backoff, and archived with the attempt's files)."""
    root = tmp_path / "run"
    seen: list[object] = []

    def sink(envelope: dict[str, object]) -> None:
        if envelope["event"] == "stage_retrying":
            seen.append(read_json(root / "a" / "status.json")["failure_reason"])

    retried = LINEAR.replace(
        'a [shape=box, prompt="A"]', 'a [shape=box, prompt="A", max_retries=1]'
    )
    steps = {"a": [{"outcome": "fail", "failure_reason": "boom"}, {"outcome": "success"}]}
    result = await run_dot(retried, root, steps=steps, sinks=[sink])
    assert result.status == "success"
    assert seen == ["boom"]
    assert read_json(root / "a" / "attempt-1" / "status.json")["failure_reason"] == "boom"
