"""``aio/group_commit.py``: appends return only once an fsync covered them, appends that
arrive during a flush share the next one, and a crash's torn line or a failed fsync is never
mistaken for a record."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from attractor_trio.aio.group_commit import DurableLog, read_records
from attractor_trio.aio.offload import WritePool

from .helpers import fail_fsyncs, record_fsyncs


class SyncedSizes:
    """``os.fsync`` that notes the size of each regular file it syncs (and still syncs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.directories = 0
        real = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            real(fd)
            if stat.S_ISDIR(info.st_mode):
                self.directories += 1
            else:
                self.sizes.append(info.st_size)

        monkeypatch.setattr(os, "fsync", fsync)


async def _append_all(
    log: DurableLog, records: list[dict[str, Any]], sizes: SyncedSizes
) -> list[int]:
    """Append ``records`` from one task each, all at once; per record, how many bytes of the
    file an fsync had covered when its ``append`` returned."""
    covered: dict[int, int] = {}

    async def one(index: int) -> None:
        await log.append(records[index])
        covered[index] = max(sizes.sizes, default=0)

    async with trio.open_nursery() as nursery:
        for index in range(len(records)):
            nursery.start_soon(one, index)
    return [covered[i] for i in range(len(records))]


@pytest.fixture
def sizes(monkeypatch: pytest.MonkeyPatch) -> SyncedSizes:
    return SyncedSizes(monkeypatch)


def test_each_append_returns_after_an_fsync_that_covered_its_line(
    tmp_path: Path, sizes: SyncedSizes
) -> None:
    path = tmp_path / "results.ndjson"
    records = [{"id": f"b{i}", "status": "success"} for i in range(40)]

    async def main() -> list[int]:
        with DurableLog(path, WritePool(2)) as log:
            return await _append_all(log, records, sizes)

    covered = trio.run(main)
    content = path.read_bytes()
    for record, synced in zip(records, covered, strict=True):
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        end = content.index(line) + len(line)
        assert end <= synced, record  # the fsync had seen the whole line before append returned
    assert sorted(read_records(path), key=lambda r: int(r["id"][1:])) == records


def test_appends_that_arrive_during_a_flush_share_the_next_one(
    tmp_path: Path, sizes: SyncedSizes
) -> None:
    path = tmp_path / "results.ndjson"
    records = [{"id": f"b{i}"} for i in range(50)]

    async def main() -> None:
        with DurableLog(path, WritePool(2)) as log:
            await _append_all(log, records, sizes)

    trio.run(main)
    # The first task leads a flush of its own line; the other 49 queue behind it and share one.
    assert len(sizes.sizes) == 2
    assert len(read_records(path)) == 50


def test_creating_the_file_syncs_its_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = record_fsyncs(monkeypatch)
    path = tmp_path / "fan" / "results.ndjson"  # the directory is made on first use

    async def main() -> None:
        with DurableLog(path, WritePool(1)) as log:
            await log.append({"id": "a"})
            await log.append({"id": "b"})
        with DurableLog(path, WritePool(1)) as log:  # an existing file: no directory fsync
            await log.append({"id": "c"})

    trio.run(main)
    assert synced == ["file", "dir", "file", "file"]
    assert [r["id"] for r in read_records(path)] == ["a", "b", "c"]


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_record_starts_a_fresh_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.ndjson"
    path.write_bytes(b'{"id":"a"}\n{"id":"b","sta')  # killed in the middle of a write

    async def main() -> None:
        with DurableLog(path, WritePool(1)) as log:
            await log.append({"id": "c"})

    trio.run(main)
    assert path.read_bytes() == b'{"id":"a"}\n{"id":"b","sta\n{"id":"c"}\n'
    assert read_records(path) == [{"id": "a"}, {"id": "c"}]


def test_read_records_skips_what_is_not_an_object_and_a_missing_file_is_empty(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.ndjson"
    assert read_records(path) == []
    path.write_bytes(b'[1, 2]\n\n{"id": "a"}\nnot json\n\xff\xfe\n{"id": "b"}')
    assert read_records(path) == [{"id": "a"}, {"id": "b"}]


def test_a_failed_fsync_fails_every_record_it_covered_and_every_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_fsyncs(monkeypatch)
    path = tmp_path / "results.ndjson"
    errors: list[str] = []

    async def one(log: DurableLog, index: int) -> None:
        try:
            await log.append({"id": index})
        except OSError as exc:
            errors.append(str(exc))

    async def main() -> None:
        with DurableLog(path, WritePool(1)) as log:
            async with trio.open_nursery() as nursery:
                for index in range(3):
                    nursery.start_soon(one, log, index)
            await one(log, 99)

    trio.run(main)
    assert len(errors) == 4
    assert "Input/output error" in errors[0]  # the leader's own failure
    assert all(str(path) in e and "nothing more is appended" in e for e in errors[1:])


def test_an_unserializable_record_raises_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "results.ndjson"

    async def main() -> None:
        with DurableLog(path, WritePool(1)) as log:
            with pytest.raises(TypeError):
                await log.append({"id": object()})
            await log.append({"id": "ok"})

    trio.run(main)
    assert read_records(path) == [{"id": "ok"}]


def test_a_cancelled_appender_still_gets_its_record_written(tmp_path: Path) -> None:
    path = tmp_path / "results.ndjson"

    async def main() -> bool:
        with DurableLog(path, WritePool(1)) as log:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    for index in range(5):
                        nursery.start_soon(log.append, {"id": index})
                    await trio.lowlevel.checkpoint()  # one leads a flush, four wait for it
                    scope.cancel()
            return scope.cancel_called

    assert trio.run(main)
    assert sorted(r["id"] for r in read_records(path)) == [0, 1, 2, 3, 4]


def test_under_a_mock_clock_appends_still_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = record_fsyncs(monkeypatch)
    path = tmp_path / "results.ndjson"

    async def main() -> None:
        with DurableLog(path, WritePool(1)) as log:
            async with trio.open_nursery() as nursery:
                for index in range(10):
                    nursery.start_soon(log.append, {"id": index})

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert synced.count("file") == 2
    assert len(read_records(path)) == 10
