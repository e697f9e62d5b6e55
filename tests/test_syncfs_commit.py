"""Group commit across parallel branches (``persist/syncfs.py``, ``aio/offload.py``): several
durable atomic writes pending at once are committed by two ``syncfs`` calls — every temp synced,
then the renames, then one more ``syncfs`` for the directories, and only then is any of them
reported done. A lone write keeps its own fsyncs; a missing, failing or slow ``syncfs`` falls
back to per-file fsyncs (contract.md §2)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from attractor_trio.aio.offload import WritePool, write_bytes_durably
from attractor_trio.persist import syncfs
from attractor_trio.persist.atomic import is_temp_file_name, read_json
from attractor_trio.persist.syncfs import SyncfsGuard, guard

from .helpers import record_fsyncs, run_fan_out_cancelled_once_all_run

Log = list[tuple[str, Any]]


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Log:
    """The process-wide guard reset, its ``syncfs`` replaced by a recorder, and ``os.replace``
    recorded: ``("syncfs", {temp path: its bytes})`` — every temp under ``tmp_path`` when it
    was called —, ``("rename", (temp, target))``; tests add ``("done", target)``."""
    entries: Log = []

    def recording_syncfs(fd: int) -> None:
        temps = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if is_temp_file_name(p.name)}
        entries.append(("syncfs", temps))

    real_replace = os.replace

    def recording_replace(source: str, target: str) -> None:
        entries.append(("rename", (str(source), str(target))))
        real_replace(source, target)

    _reset_guard(monkeypatch, recording_syncfs)
    monkeypatch.setattr(os, "replace", recording_replace)
    return entries


def _reset_guard(monkeypatch: pytest.MonkeyPatch, sync: syncfs.Sync) -> None:
    monkeypatch.setattr(syncfs, "syncfs_covers", lambda fd, device: True)  # any test filesystem
    monkeypatch.setattr(guard, "sync", sync)
    monkeypatch.setattr(guard, "available", True)
    monkeypatch.setattr(guard, "off_until", 0.0)
    monkeypatch.setattr(guard, "slow", 0)
    monkeypatch.setattr(guard, "probation", False)
    monkeypatch.setattr(guard, "fsync_s", 1.0)  # no test's syncfs is slow next to 1 s fsyncs


def _write_together(
    targets: list[Path], log: Log | None = None, pool_threads: int = 1
) -> dict[Path, BaseException | None]:
    """Write ``targets`` (each gets ``{"name": <its parent's name>}``) from concurrent tasks
    while the pool's only thread is busy, so the first write leads alone and the rest queue
    into one batch; each task's outcome, and ``("done", target)`` in ``log`` as it returns."""
    pool = WritePool(pool_threads)
    gate = threading.Event()
    outcomes: dict[Path, BaseException | None] = {}

    async def one(target: Path) -> None:
        try:
            await write_bytes_durably(target, _document(target), pool)
        except OSError as exc:
            outcomes[target] = exc
        else:
            outcomes[target] = None
        if log is not None:
            log.append(("done", str(target)))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(pool_threads):
                nursery.start_soon(pool.run, lambda: gate.wait(10))
            await trio.testing.wait_all_tasks_blocked()
            for target in targets:
                nursery.start_soon(one, target)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()

    trio.run(main)
    return outcomes


def _document(target: Path) -> bytes:
    return b'{"name": "' + target.parent.name.encode() + b'"}\n'


def _targets(root: Path, count: int) -> list[Path]:
    paths = [root / f"b{index}" / "status.json" for index in range(count)]
    for path in paths:
        path.parent.mkdir(parents=True)
    return paths


def _no_temps(root: Path) -> bool:
    return not [p for p in root.rglob("*") if is_temp_file_name(p.name)]


def _lone(log: Log) -> str:
    """The first write's target: it led alone (trio starts tasks in no fixed order)."""
    return str(next(value[1] for kind, value in log if kind == "rename"))


def _syncfs_calls(log: Log) -> int:
    return sum(1 for kind, _ in log if kind == "syncfs")


def test_a_batch_syncs_every_temp_before_its_rename_and_reports_after_the_directory_sync(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 6)

    outcomes = _write_together(targets, log)

    assert set(outcomes.values()) == {None}
    assert fsyncs == ["file", "dir"]  # the lone first write keeps its own fsyncs
    assert _syncfs_calls(log) == 2  # the other five: one syncfs before, one after the renames
    for target in targets:
        assert read_json(target) == {"name": target.parent.name}
    for position, (kind, value) in enumerate(log):
        if kind != "rename":
            continue
        temp, renamed = value
        if renamed == _lone(log):
            continue  # the lone write: fsynced before its rename (``fsyncs`` above)
        synced = [v for k, v in log[:position] if k == "syncfs" and temp in v]
        assert synced, f"{renamed} renamed before a syncfs covered its temp"
        assert synced[-1][temp] == _document(Path(renamed))  # complete when synced
        done = log.index(("done", renamed))
        assert "syncfs" in [k for k, _ in log[position:done]], (
            f"{renamed} reported before its directory was synced"
        )
    assert _no_temps(tmp_path)


def test_nothing_is_reported_done_before_the_second_syncfs(tmp_path: Path, log: Log) -> None:
    targets = _targets(tmp_path, 4)
    _write_together(targets, log)
    kinds = [kind for kind, _ in log]
    second_syncfs = [i for i, kind in enumerate(kinds) if kind == "syncfs"][1]
    batch_done = [log.index(("done", str(t))) for t in targets if str(t) != _lone(log)]
    assert min(batch_done) > second_syncfs
    renames = [i for i, (kind, v) in enumerate(log) if kind == "rename"]
    first_syncfs = kinds.index("syncfs")
    assert all(first_syncfs < i < second_syncfs for i in renames[1:])  # the batch's renames


def test_a_lone_write_keeps_its_own_fsyncs(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = record_fsyncs(monkeypatch)
    target = tmp_path / "status.json"
    trio.run(write_bytes_durably, target, b'{"alone": true}\n')
    assert read_json(target) == {"alone": True}
    assert fsyncs == ["file", "dir"]
    assert _syncfs_calls(log) == 0


def test_without_syncfs_every_write_fsyncs_its_file_and_directory(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "available", False)
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 5)
    assert set(_write_together(targets).values()) == {None}
    assert fsyncs == ["file", "dir"] * 5
    assert _syncfs_calls(log) == 0
    assert all(read_json(t) == {"name": t.parent.name} for t in targets)


def test_a_failing_first_syncfs_falls_back_to_per_file_fsyncs_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def failing(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "syncfs: Input/output error (simulated)")

    _reset_guard(monkeypatch, failing)
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 5)

    assert set(_write_together(targets).values()) == {None}
    assert len(calls) == 1  # tried once, then never again in this process
    assert not guard.available
    assert fsyncs == ["file", "dir"] * 5  # the lone write, then each of the batch by itself
    assert all(read_json(t) == {"name": t.parent.name} for t in targets)
    assert _no_temps(tmp_path)


def test_a_failing_second_syncfs_falls_back_to_directory_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def second_fails(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "syncfs: Input/output error (simulated)")

    _reset_guard(monkeypatch, second_fails)
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 5)

    assert set(_write_together(targets).values()) == {None}
    assert fsyncs == ["file", "dir", "dir", "dir", "dir", "dir"]  # lone; the batch's 4 dirs
    assert all(read_json(t) == {"name": t.parent.name} for t in targets)


def test_a_directory_that_cannot_be_synced_fails_only_its_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "syncfs failed (simulated)")

    _reset_guard(monkeypatch, lambda fd: None)
    targets = _targets(tmp_path, 4)
    real_fsync = os.fsync
    bad = os.stat(targets[2].parent).st_ino

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == bad:
            raise OSError(errno.EIO, "fsync: Input/output error (simulated)")
        real_fsync(fd)

    calls = [0]

    def second_fails(fd: int) -> None:
        calls[0] += 1
        if calls[0] == 2:
            failing(fd)

    monkeypatch.setattr(guard, "sync", second_fails)
    monkeypatch.setattr(os, "fsync", fsync)
    outcomes = _write_together(targets)
    assert isinstance(outcomes[targets[2]], OSError)
    assert {t for t, error in outcomes.items() if error is None} == {
        targets[0],
        targets[1],
        targets[3],
    }


def test_a_failed_rename_fails_only_its_own_write(tmp_path: Path, log: Log) -> None:
    targets = _targets(tmp_path, 5)
    (targets[3]).mkdir()  # a directory in the way: its rename fails
    (targets[3] / "keep").write_text("x")
    outcomes = _write_together(targets, log)
    assert isinstance(outcomes[targets[3]], OSError)
    assert all(outcomes[t] is None for t in targets if t != targets[3])
    assert _syncfs_calls(log) == 2
    assert _no_temps(tmp_path)


def test_while_the_guard_has_syncfs_off_every_write_fsyncs_by_itself(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "off_until", guard.clock() + 3600)
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 4)
    assert set(_write_together(targets, pool_threads=2).values()) == {None}
    assert fsyncs.count("file") == 4 and fsyncs.count("dir") == 4
    assert _syncfs_calls(log) == 0


def test_a_cancelled_writer_in_a_batch_still_gets_its_write(tmp_path: Path, log: Log) -> None:
    pool = WritePool(1)
    gate = threading.Event()
    targets = _targets(tmp_path, 3)
    caught: list[bool] = []

    async def cancelled_writer(target: Path) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await write_bytes_durably(target, _document(target), pool)  # not a cancel point
            await trio.lowlevel.checkpoint()
        caught.append(scope.cancelled_caught)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run, lambda: gate.wait(10))
            await trio.testing.wait_all_tasks_blocked()
            for target in targets:
                nursery.start_soon(cancelled_writer, target)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()

    trio.run(main)
    assert caught == [True, True, True]
    assert all(read_json(t) == {"name": t.parent.name} for t in targets)
    assert _syncfs_calls(log) == 2


def test_a_filesystem_syncfs_does_not_cover_keeps_per_file_fsyncs(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncfs, "syncfs_covers", lambda fd, device: False)  # FUSE, NFS, ...
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 4)
    assert set(_write_together(targets).values()) == {None}
    assert fsyncs == ["file", "dir"] * 4
    assert _syncfs_calls(log) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="statfs magic numbers")
def test_syncfs_covers_the_local_journaling_filesystems_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncfs, "_covered_devices", {})
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        device = os.fstat(fd).st_dev
        assert isinstance(syncfs.syncfs_covers(fd, device), bool)
        monkeypatch.setattr(syncfs, "SYNCFS_FILESYSTEMS", frozenset())
        monkeypatch.setattr(syncfs, "_covered_devices", {})
        assert not syncfs.syncfs_covers(fd, device)
        if Path("/dev/shm").is_dir():
            monkeypatch.setattr(syncfs, "SYNCFS_FILESYSTEMS", frozenset({0x01021994}))
            monkeypatch.setattr(syncfs, "_covered_devices", {})
            shm = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert syncfs.syncfs_covers(shm, os.fstat(shm).st_dev)  # tmpfs's magic
            finally:
                os.close(shm)
    finally:
        os.close(fd)


def test_a_write_kept_out_of_the_batches_fsyncs_by_itself(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = record_fsyncs(monkeypatch)
    targets = _targets(tmp_path, 4)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(
                    partial(write_bytes_durably, target, _document(target), together=False)
                )

    trio.run(main)
    assert sorted(fsyncs) == ["dir"] * 4 + ["file"] * 4  # on the pool's threads at once
    assert _syncfs_calls(log) == 0


async def test_cancelled_branches_keep_their_status_writes_out_of_the_batches(
    tmp_path: Path, log: Log
) -> None:
    """On the way out of a cancelled run a batch's first ``syncfs`` would also flush all the
    run wrote without fsync; the cancelled branches' status files keep their own fsyncs."""
    await run_fan_out_cancelled_once_all_run(tmp_path / "run", 6)
    assert _syncfs_calls(log) == 0


def test_a_slow_run_of_syncfs_turns_it_off_then_probation() -> None:
    now = [100.0]
    gate = SyncfsGuard(sync=lambda fd: None, threads=4)
    gate.clock = lambda: now[0]
    gate.fsync_s = 1e-3  # 10 replaced fsyncs over 4 threads: slow beyond 4 * 2.5 ms = 10 ms

    gate.measured_syncfs(0.2, 10)  # the first one writes back the branches' unsynced files
    assert gate.allows()
    gate.measured_syncfs(0.005, 10)  # fast: the slow run starts over
    gate.measured_syncfs(0.2, 10)
    gate.measured_syncfs(0.2, 10)
    assert gate.allows()
    gate.measured_syncfs(0.2, 10)  # the third slow one in a row
    assert not gate.allows()
    now[0] += gate.FIRST_BACKOFF_S
    assert gate.allows()
    gate.measured_syncfs(0.2, 10)  # on probation: one slow one is enough, for twice as long
    assert not gate.allows()
    now[0] += gate.FIRST_BACKOFF_S
    assert not gate.allows()
    now[0] += gate.FIRST_BACKOFF_S
    assert gate.allows()
    gate.measured_syncfs(0.001, 10)  # a fast one forgets it all
    assert gate.backoff_s == gate.FIRST_BACKOFF_S and not gate.probation


def test_the_fsync_estimate_follows_measured_fsyncs() -> None:
    gate = SyncfsGuard(sync=lambda fd: None)
    for _ in range(60):
        gate.measured_fsync(4e-3)
    assert gate.fsync_s == pytest.approx(4e-3, rel=0.01)


def test_the_real_syncfs_works_here_or_is_reported_missing(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if sys.platform.startswith("linux"):
            syncfs.libc_syncfs(fd)
        else:
            with pytest.raises(OSError):
                syncfs.libc_syncfs(fd)
    finally:
        os.close(fd)


# A run whose first syncfs of a batch — the temps written, nothing renamed — or whose second —
# renamed, the directories not yet synced — is replaced by a SIGKILL of the process. The first
# write (it leads alone) takes 0.3 s, so that the others queue into a batch on any disk.
_DIE_AT_SYNCFS = """
import os, signal, sys, time
import attractor_trio.aio.offload as offload
from attractor_trio.persist.syncfs import guard, libc_syncfs
alone = offload.stage_and_finish
def slow_first(item, first=[True]):
    if first[0]:
        first[0] = False
        time.sleep(0.3)
    alone(item)
offload.stage_and_finish = slow_first
calls = [0]
def die_at(fd, nth=int(os.environ["DIE_AT_SYNCFS"])):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    libc_syncfs(fd)
guard.sync = die_at
from attractor_trio.cli.main import main
main(sys.argv[1:], prog_name="attractor-trio")
"""


@pytest.mark.slow
@pytest.mark.parametrize("nth", [1, 2], ids=["before-renames", "after-renames"])
def test_sigkill_at_a_batch_syncfs_then_resume_runs_every_branch_once(
    tmp_path: Path, nth: int
) -> None:
    branches = 24
    lines = [
        "digraph fan {",
        "  start [shape=Mdiamond]; done [shape=Msquare]",
        f"  par [shape=component, max_parallel={branches}]; join [shape=tripleoctagon]",
        "  start -> par; join -> done",
    ]
    lines += [
        f'  b{i} [shape=parallelogram, tool_command="echo b{i} >> ledger.txt"]; par -> b{i} -> join'
        for i in range(branches)
    ]
    (tmp_path / "p.dot").write_text("\n".join([*lines, "}"]) + "\n")
    root = tmp_path / "run"
    common = ["--quiet", "--stall-timeout", "0", "--workdir", str(tmp_path)]
    env = {**os.environ, "DIE_AT_SYNCFS": str(nth)}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _DIE_AT_SYNCFS,
            "run",
            str(tmp_path / "p.dot"),
            "--logs-root",
            str(root),
            *common,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (root / "final.json").exists()
    for path in root.rglob("*.json"):
        if not is_temp_file_name(path.name):
            read_json(path)  # every document complete: the old one, or the new one
    resumed = subprocess.run(
        [sys.executable, "-m", "attractor_trio", "resume", str(root), *common],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(root / "final.json")["status"] == "success"
    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert sorted(ledger) == sorted(f"b{i}" for i in range(branches)), ledger
