"""``benchmarks/_common.py``: where benchmark runs are placed, so that the kernel's cost of
recently freed inodes is not billed to the engine (see ``scratch_root``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """The module, with its repository (the default scratch parent) moved into ``tmp_path``."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    _common = importlib.import_module("_common")
    monkeypatch.setattr(_common, "REPO", tmp_path)
    monkeypatch.setattr(_common, "CLEANUP_MARKER", tmp_path / ".bench-last-cleanup")
    yield _common
    sys.modules.pop("_common", None)


def _probes(common: ModuleType, monkeypatch: pytest.MonkeyPatch, *microseconds: float) -> None:
    """Make the creation probes report ``microseconds`` in turn (they still create their dir)."""
    results = iter(microseconds)
    real = common.creation_probe

    def fake(directory: Path) -> object:
        real(directory, count=1)
        return common.CreationProbe(next(results))

    monkeypatch.setattr(common, "creation_probe", fake)


def test_a_slow_place_is_left_for_another_and_every_try_is_removed_at_the_end(
    common: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(common, "spread_subdirectories", lambda directory: True)
    _probes(common, monkeypatch, 900.0, 450.0, 20.0)
    with common.scratch_root(None, "t-") as root:
        tried = sorted((tmp_path / ".bench-tmp").iterdir())
        assert len(tried) == 3  # the two slow ones stay until the end: removing frees inodes
        assert root in tried and (root / "probe").is_dir()
    out = capsys.readouterr().out
    assert "20 µs per mkdir or create (directory 3 of 3 tried" in out
    assert not (tmp_path / ".bench-tmp").exists()  # created by the benchmark, so removed


def test_gives_up_after_the_last_try_and_says_it_is_slow(
    common: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common, "spread_subdirectories", lambda directory: True)
    _probes(common, monkeypatch, *[500.0] * common.PLACEMENT_TRIES)
    with common.scratch_root(None, "t-"):
        pass
    out = capsys.readouterr().out
    assert f"directory {common.PLACEMENT_TRIES} of {common.PLACEMENT_TRIES} tried" in out
    assert "slow: recently freed inodes nearby" in out


def test_a_directory_given_by_the_caller_is_not_retried_nor_flagged(
    common: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flagged: list[Path] = []
    monkeypatch.setattr(common, "spread_subdirectories", flagged.append)
    _probes(common, monkeypatch, 900.0)
    mine = tmp_path / "mine"
    mine.mkdir()
    with common.scratch_root(mine, "t-") as root:
        assert root.parent == mine
    assert flagged == []
    assert list(mine.iterdir()) == []  # it existed before: only what the benchmark made goes
    assert "900 µs per mkdir or create — slow" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform != "linux", reason="FS_TOPDIR_FL is a Linux inode flag")
def test_the_top_directory_flag_is_set_where_the_filesystem_has_it(
    common: ModuleType, tmp_path: Path
) -> None:
    import fcntl
    import os
    import struct

    if not common.spread_subdirectories(tmp_path):
        pytest.skip("this filesystem has no FS_TOPDIR_FL (tmpfs, overlayfs, ...)")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (flags,) = struct.unpack("i", fcntl.ioctl(fd, common.FS_IOC_GETFLAGS, bytes(4)))
    finally:
        os.close(fd)
    assert flags & common.FS_TOPDIR_FL
    assert common.spread_subdirectories(tmp_path)  # already set: still true, nothing changes
