"""No fsync where fsync is a no-op (persist/noop_fsync.py, contract.md §2): tmpfs and ramfs.

A chain run on tmpfs issues no fsync at all (nor opens a directory only to fsync it); the same
run where the filesystem is a disk — ext4 here, or tmpfs that ``statfs`` calls ext4 — issues
exactly the fsyncs it always did; a directory on another filesystem than the one already
known, or one whose type cannot be asked, is fsynced.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from attractor_trio.persist import noop_fsync, syncfs
from attractor_trio.persist.atomic import fsync_directory, write_bytes_atomic
from attractor_trio.persist.commit import DirectorySyncs
from attractor_trio.persist.recycling import RecyclingWriter

from .helpers import TWO_STAGE_CHAIN as LINEAR
from .helpers import fan_out_dot, run_dot

#: The real skipping of no-op fsyncs on tmpfs (tests/conftest.py turns it off elsewhere).
pytestmark = pytest.mark.noop_fsync

SHM = Path("/dev/shm")
EXT4_MAGIC = 0xEF53
#: What that run fsyncs on a disk, by name relative to the run directory (a temp named
#: ``.<target>.TMP``): taken from the tree before this change (main at 8c2c54b) on ext4.
FSYNCS_ON_A_DISK = Counter(
    {
        ".": 13,
        ".checkpoint.json.TMP": 4,
        ".final.json.TMP": 1,
        ".graph.dot.TMP": 1,
        ".live.json.TMP": 4,
        ".manifest.json.TMP": 1,
        ".run.lock.json.TMP": 1,
        "a": 1,
        "a/.status.json.TMP": 1,
        "b": 1,
        "b/.status.json.TMP": 1,
        "exit": 1,
        "exit/.status.json.TMP": 1,
        "progress.ndjson": 2,
        "start": 1,
        "start/.status.json.TMP": 1,
    }
)


def _is_tmpfs(path: Path) -> bool:
    return path.is_dir() and noop_fsync.fs_magic(str(path)) == 0x01021994


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A fresh directory on tmpfs (``/dev/shm``), removed afterwards."""
    if not _is_tmpfs(SHM):
        pytest.skip("/dev/shm is not a tmpfs here")
    directory = SHM / f"attractor-trio-test-{uuid.uuid4().hex}"
    directory.mkdir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def _forget_devices() -> Iterator[None]:
    """Each test decides afresh (a test may fake the filesystem type)."""
    noop_fsync.forget()
    yield
    noop_fsync.forget()


def _name_of(fd: int, root: Path) -> str:
    """``fd``'s file relative to ``root``, a temp as ``.<target>.TMP``; a kept descriptor
    whose first name was renamed over by its inode's current name."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if path.endswith(" (deleted)"):
        inode = os.fstat(fd).st_ino
        with os.scandir(os.path.dirname(path)) as entries:
            path = next(entry.path for entry in entries if entry.inode() == inode)
    return re.sub(r"\.[0-9a-f]{16}\.tmp$", ".TMP", os.path.relpath(path, root))


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch, root: Path) -> Counter[str]:
    fsyncs: Counter[str] = Counter()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsyncs[_name_of(fd, root)] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return fsyncs


async def _chain_fsyncs(root: Path, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The fsyncs of a successful :data:`LINEAR` run in ``root``, by name."""
    fsyncs = _record_fsyncs(monkeypatch, root)
    assert (await run_dot(LINEAR, root)).status == "success"
    return fsyncs


def _record_directory_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = os.open

    def open_(path: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_DIRECTORY:
            opened.append(os.fspath(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    return opened


def _fake_ext4(monkeypatch: pytest.MonkeyPatch) -> None:
    """``statfs`` says every filesystem is ext4."""
    monkeypatch.setattr(noop_fsync, "fs_magic", lambda target: EXT4_MAGIC)


# ------------------------------------------------------------------------------ a run


async def test_a_chain_on_tmpfs_issues_no_fsync_and_opens_no_directory_to_fsync(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shm_dir / "run"
    fsyncs = _record_fsyncs(monkeypatch, root)
    opened = _record_directory_opens(monkeypatch)
    result = await run_dot(LINEAR, root)
    assert result.status == "success"
    assert fsyncs == Counter()
    stage_dirs = [path for path in opened if Path(path).name in ("start", "a", "b", "exit")]
    assert stage_dirs == []  # (the run directory's flock still opens it once)


async def test_a_fan_out_on_tmpfs_issues_no_fsync_nor_syncfs(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branches' ``status.json`` (the write pool, group commit by ``syncfs``) and the
    fan-out's ``results.ndjson`` (its own group commit) too."""
    root = shm_dir / "run"
    fsyncs = _record_fsyncs(monkeypatch, root)
    synced_filesystems: list[int] = []
    monkeypatch.setattr(syncfs.guard, "sync", synced_filesystems.append)
    result = await run_dot(fan_out_dot(6), root)
    assert result.status == "success"
    assert fsyncs == Counter() and synced_filesystems == []


async def test_a_chain_on_a_disk_fsyncs_what_it_always_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _is_tmpfs(tmp_path):
        pytest.skip("the test's temporary directory is on tmpfs here")
    assert await _chain_fsyncs(tmp_path / "run", monkeypatch) == FSYNCS_ON_A_DISK


async def test_fsync_always_in_the_environment_fsyncs_tmpfs_as_a_disk(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ATTRACTOR_TRIO_FSYNC_ALWAYS=1`` (what the test suite sets for every other test) is
    read at the run's start: a chain on tmpfs then makes a disk's fsyncs."""
    monkeypatch.setenv(noop_fsync.FSYNC_ALWAYS_ENV, "1")
    assert await _chain_fsyncs(shm_dir / "run", monkeypatch) == FSYNCS_ON_A_DISK


async def test_tmpfs_that_statfs_calls_a_disk_is_fsynced_as_a_disk(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision is the filesystem type's, not the path's: the same tmpfs directory,
    reported as ext4, gets every fsync of the disk run."""
    _fake_ext4(monkeypatch)
    assert await _chain_fsyncs(shm_dir / "run", monkeypatch) == FSYNCS_ON_A_DISK


async def test_where_statfs_cannot_be_asked_everything_is_fsynced(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(noop_fsync, "_fstatfs", None)
    monkeypatch.setattr(noop_fsync, "_statfs", None)
    assert await _chain_fsyncs(shm_dir / "run", monkeypatch) == FSYNCS_ON_A_DISK


# ------------------------------------------------------------- across a filesystem boundary


def test_a_stage_directory_on_another_filesystem_is_fsynced_in_the_commit(
    shm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a mount under the run directory would be: the run directory is tmpfs (known by its
    device once the checkpoint writer has written there), the stage directory a disk. The
    stage's ``status.json`` temp and its directory are fsynced; the checkpoint and the run
    directory are not."""
    if _is_tmpfs(tmp_path):
        pytest.skip("the test's temporary directory is on tmpfs here")
    stage = tmp_path / "stage"
    stage.mkdir()
    owed = DirectorySyncs()
    writer = RecyclingWriter(shm_dir / "checkpoint.json", owed)
    writer.write(b"{}\n")  # the run directory's device is known (tmpfs) from here on
    fsyncs = _record_fsyncs(monkeypatch, tmp_path)
    owed.hold(stage / "status.json", b'{"outcome": "success"}\n')
    writer.write(b'{"n": 1}\n')
    assert fsyncs == Counter({"stage": 1, "stage/.status.json.TMP": 1})
    assert (stage / "status.json").read_bytes() == b'{"outcome": "success"}\n'
    writer.close()


def test_atomic_writes_decide_by_the_filesystem_written(
    shm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _is_tmpfs(tmp_path):
        pytest.skip("the test's temporary directory is on tmpfs here")
    fsyncs = _record_fsyncs(monkeypatch, tmp_path)
    write_bytes_atomic(shm_dir / "a.json", b"{}\n")  # tmpfs: nothing
    assert fsyncs == Counter()
    write_bytes_atomic(tmp_path / "b.json", b"{}\n")  # then a disk: the file and its directory
    assert fsyncs == Counter({".b.json.TMP": 1, ".": 1})
    fsyncs.clear()
    write_bytes_atomic(tmp_path / "c.md", b"x", fresh=True, durable=True)  # created in place
    assert fsyncs == Counter({"c.md": 1, ".": 1})
    fsyncs.clear()
    fsync_directory(shm_dir)
    fsync_directory(tmp_path)
    assert fsyncs == Counter({".": 1})


def test_fsync_directory_of_a_directory_that_cannot_be_asked_still_tries(
    tmp_path: Path,
) -> None:
    """Unknown is a disk: the open happens and fails as it always did."""
    with pytest.raises(FileNotFoundError):
        fsync_directory(tmp_path / "missing")


def test_the_filesystem_is_asked_once_per_device(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[object] = []
    real = noop_fsync.fs_magic

    def fs_magic(target: int | str) -> int | None:
        asked.append(target)
        return real(target)

    monkeypatch.setattr(noop_fsync, "fs_magic", fs_magic)
    for n in range(5):
        write_bytes_atomic(shm_dir / f"{n}.json", b"{}\n")
    assert len(asked) == 1
    noop_fsync.forget()  # a run starts
    write_bytes_atomic(shm_dir / "again.json", b"{}\n")
    assert len(asked) == 2
