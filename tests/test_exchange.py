"""persist/exchange.py: two names swapped in one call where the system can, a plain ``False``
where it cannot (the caller keeps ``link`` + ``rename``), and real failures raised."""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.persist import exchange


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("A")
    second.write_text("B")
    return first, second


def test_the_two_names_swap_their_files(tmp_path: Path) -> None:
    if not exchange.rename_exchange_available(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    first, second = _pair(tmp_path)
    inode = first.stat().st_ino
    assert exchange.rename_exchange(str(first), str(second)) is True
    assert (first.read_text(), second.read_text()) == ("B", "A")
    assert second.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # the probe left nothing


def test_a_missing_name_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    if not exchange.rename_exchange_available(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    first, _ = _pair(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        exchange.rename_exchange(str(first), str(tmp_path / "missing"))
    assert raised.value.filename == str(first)
    assert first.read_text() == "A"


def _failing_with(code: int) -> Any:
    def renameat2(*args: object) -> int:
        ctypes.set_errno(code)
        return -1

    return renameat2


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM])
def test_a_system_or_filesystem_that_cannot_says_false_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    monkeypatch.setattr(exchange, "_renameat2", _failing_with(code))
    first, second = _pair(tmp_path)
    assert exchange.rename_exchange(str(first), str(second)) is False
    assert (first.read_text(), second.read_text()) == ("A", "B")


def test_no_renameat2_in_the_c_library_says_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange, "_renameat2", None)
    first, second = _pair(tmp_path)
    assert exchange.rename_exchange(str(first), str(second)) is False
    assert exchange.rename_exchange_available(tmp_path) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_any_other_failure_is_raised_with_both_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange, "_renameat2", _failing_with(errno.EIO))
    first, second = _pair(tmp_path)
    with pytest.raises(OSError) as raised:
        exchange.rename_exchange(str(first), str(second))
    assert raised.value.errno == errno.EIO
    assert (raised.value.filename, raised.value.filename2) == (str(first), str(second))
