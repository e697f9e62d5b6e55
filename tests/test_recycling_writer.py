"""The checkpoint writer keeps both of its inodes open for the run (persist/recycling.py): a
write opens and closes nothing, the documents are right after many writes, a spare or a
target removed behind its back is replaced, and its descriptors are released by ``close()``
or when it is collected."""

from __future__ import annotations

import gc
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.persist import exchange
from attractor_trio.persist.atomic import cleanup_temp_files, is_temp_file_name, read_json
from attractor_trio.persist.recycling import RecyclingWriter

#: The real skipping of no-op fsyncs on tmpfs (tests/conftest.py turns it off elsewhere).
pytestmark = pytest.mark.noop_fsync

SHM = Path("/dev/shm")


@pytest.fixture(params=["disk", "tmpfs"])
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The test's directory (a disk here), and one on tmpfs (no fsync there)."""
    if request.param == "disk":
        yield tmp_path
        return
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
    shm = SHM / f"attractor-trio-test-{uuid.uuid4().hex}"
    shm.mkdir()
    yield shm
    shutil.rmtree(shm, ignore_errors=True)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _temps(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if is_temp_file_name(name))


def _record_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = os.open

    def open_(path: str | os.PathLike[str], flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    return opened


def test_a_write_opens_and_closes_nothing_once_both_inodes_are_known(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spare was opened by name and closed at every write (an ``openat`` and a ``close``
    per stage); now its descriptor is kept: pwrite + fsync + link + rename."""
    writer = RecyclingWriter(directory / "checkpoint.json")
    writer.write(b'{"n": 0}\n')  # creates the first spare
    writer.write(b'{"n": 1}\n')  # the spare is the displaced first document, already open
    opened = _record_opens(monkeypatch)
    closed: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    for n in range(2, 50):
        writer.write(b'{"n": %d}\n' % n)
    assert opened == [] and closed == []
    monkeypatch.undo()
    writer.close()


def test_every_document_is_exactly_what_was_written_after_many_writes(directory: Path) -> None:
    target = directory / "checkpoint.json"
    target.write_bytes(b"z" * 3000)  # an earlier run's checkpoint, longer than most
    writer = RecyclingWriter(target)
    rng = random.Random(22)
    for n in range(300):
        data = b"%d:" % n + bytes([97 + n % 26]) * rng.choice([0, 1, 10, 200, 2000, 5000])
        writer.write(data)
        assert target.read_bytes() == data, n
        assert len(_temps(directory)) == 1
    writer.close()
    assert os.listdir(directory) == ["checkpoint.json"]


def test_a_spare_removed_mid_run_is_replaced_by_a_fresh_temp(directory: Path) -> None:
    """The kept descriptor still writes the removed spare's inode, nobody's now: its rename
    fails (``FileNotFoundError``), and the same bytes go to a fresh temp by the recipe. No
    descriptor is lost on the way, and the writer carries on recycling."""
    target = directory / "checkpoint.json"
    writer = RecyclingWriter(target)
    for n in range(3):
        writer.write(b'{"n": %d}\n' % n)
    held = _open_descriptors()
    for n in range(3, 8):
        cleanup_temp_files(directory)  # what another cleaner of the directory would do
        assert _temps(directory) == []
        writer.write(b'{"n": %d, "pad": "%s"}\n' % (n, b"p" * n))
        assert target.read_bytes() == b'{"n": %d, "pad": "%s"}\n' % (n, b"p" * n)
        assert len(_temps(directory)) == 1  # the displaced document, the next spare
        assert _open_descriptors() == held
    for n in range(8, 12):
        writer.write(b'{"n": %d}\n' % n)
        assert target.read_bytes() == b'{"n": %d}\n' % n
    writer.close()
    assert os.listdir(directory) == ["checkpoint.json"]


def test_a_target_removed_behind_the_writers_back_is_written_again(directory: Path) -> None:
    target = directory / "checkpoint.json"
    writer = RecyclingWriter(target)
    for n in range(3):
        writer.write(b'{"n": %d}\n' % n)
    held = _open_descriptors()
    target.unlink()
    writer.write(b'{"n": 3}\n')  # nothing displaced: no spare, and the orphan is let go
    assert target.read_bytes() == b'{"n": 3}\n'
    assert _temps(directory) == [] and _open_descriptors() < held
    for n in range(4, 7):
        writer.write(b'{"n": %d}\n' % n)
        assert target.read_bytes() == b'{"n": %d}\n' % n
    assert _open_descriptors() == held
    writer.close()


def test_close_releases_every_descriptor_and_removes_the_spare(directory: Path) -> None:
    before = _open_descriptors()
    writer = RecyclingWriter(directory / "checkpoint.json")
    for n in range(10):
        writer.write(b'{"n": %d}\n' % n)
    assert before < _open_descriptors() <= before + 3  # spare, target, (on a disk) directory
    writer.close()
    assert _open_descriptors() == before
    assert os.listdir(directory) == ["checkpoint.json"]
    writer.close()  # twice: nothing more
    writer.write(b'{"n": 10}\n')  # a write after close starts afresh
    writer.close()
    assert _open_descriptors() == before


def test_a_writer_never_closed_releases_its_descriptors_when_collected(
    directory: Path,
) -> None:
    before = _open_descriptors()
    writer = RecyclingWriter(directory / "checkpoint.json")
    for n in range(4):
        writer.write(b'{"n": %d}\n' % n)
    del writer
    gc.collect()
    assert _open_descriptors() == before


def test_where_names_can_be_exchanged_the_spare_keeps_one_name_and_nothing_is_linked(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """persist/exchange.py: once the target is the writer's own, each write swaps the spare's
    and the target's names in one call (no ``link``, no new temp name), and the spare's name
    then holds the document before."""
    if not exchange.rename_exchange_available(directory):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    target = directory / "checkpoint.json"
    writer = RecyclingWriter(target)
    writer.write(b'{"n": 0}\n')
    links: list[object] = []
    real_link = os.link

    def link(*args: Any, **kwargs: Any) -> None:
        links.append(args)
        real_link(*args, **kwargs)

    monkeypatch.setattr(os, "link", link)
    names = set()
    for n in range(1, 6):
        writer.write(b'{"n": %d}\n' % n)
        assert read_json(target) == {"n": n}
        (spare,) = (name for name in os.listdir(directory) if is_temp_file_name(name))
        assert read_json(directory / spare) == {"n": n - 1}
        names.add(spare)
    assert links == [] and len(names) == 1
    writer.close()
    assert os.listdir(directory) == ["checkpoint.json"]


@pytest.mark.parametrize("exchanges", [True, False], ids=["exchange", "link-and-rename"])
def test_both_ways_recycle_the_two_inodes_and_leave_the_same_documents(
    directory: Path, monkeypatch: pytest.MonkeyPatch, exchanges: bool
) -> None:
    """Where names cannot be exchanged (``rename_exchange`` says so: an old kernel, a
    filesystem that refuses it) the writer keeps to ``link`` + ``rename``, with the same
    documents, the same two inodes in turn, and one spare at a time."""
    if not exchanges:
        monkeypatch.setattr(exchange, "rename_exchange", lambda first, second: False)
    elif not exchange.rename_exchange_available(directory):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    target = directory / "checkpoint.json"
    writer = RecyclingWriter(target)
    inodes = []
    for n in range(6):
        writer.write(b'{"n": %d, "pad": "%s"}\n' % (n, b"x" * (50 - 7 * n)))
        assert read_json(target)["n"] == n
        inodes.append(target.stat().st_ino)
        assert len([name for name in os.listdir(directory) if is_temp_file_name(name)]) == (
            1 if n else 0
        )
    assert inodes[0::2] == [inodes[0]] * 3 and inodes[1::2] == [inodes[1]] * 3
    assert inodes[0] != inodes[1]
    writer.close()
    assert os.listdir(directory) == ["checkpoint.json"]
