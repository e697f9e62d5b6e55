"""The atomic writer every run file goes through (contract.md §2 "Atomic means")."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import redaction
from attractor_trio.errors import AttractorError
from attractor_trio.persist.atomic import (
    CorruptFileError,
    cleanup_temp_files,
    create_in_place,
    dumps_json,
    is_temp_file_name,
    json_encoder,
    read_json,
    utc_timestamp,
    utc_timestamp_of_millis,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

from .helpers import fail_fsyncs, record_fsyncs


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if is_temp_file_name(p.name))


def test_json_layout_is_indented_utf8_in_insertion_order_with_trailing_newline(
    tmp_path: Path,
) -> None:
    target = tmp_path / "doc.json"
    write_json_atomic(target, {"zeta": 1, "alpha": ["ünï", "日本"]})
    text = target.read_text(encoding="utf-8")
    assert text == '{\n  "zeta": 1,\n  "alpha": [\n    "ünï",\n    "日本"\n  ]\n}\n'
    assert read_json(target) == {"zeta": 1, "alpha": ["ünï", "日本"]}


def test_replaces_existing_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    write_json_atomic(target, {"v": 1})
    write_json_atomic(target, {"v": 2})
    assert read_json(target) == {"v": 2}
    assert os.listdir(tmp_path) == ["doc.json"]


def test_write_text_atomic_writes_exact_text(tmp_path: Path) -> None:
    target = tmp_path / "graph.dot"
    write_text_atomic(target, "digraph G { a -> b }  // ✓")
    assert target.read_text(encoding="utf-8") == "digraph G { a -> b }  // ✓"


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": float("inf")}])
def test_serialization_error_leaves_old_file_and_no_temp(tmp_path: Path, bad: object) -> None:
    target = tmp_path / "doc.json"
    write_json_atomic(target, {"v": "old"})
    with pytest.raises((TypeError, ValueError)):
        write_json_atomic(target, bad)
    assert read_json(target) == {"v": "old"}
    assert os.listdir(tmp_path) == ["doc.json"]


def test_failure_while_writing_temp_removes_it_and_keeps_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "doc.json"
    write_json_atomic(target, {"v": "old"})

    fail_fsyncs(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        write_json_atomic(target, {"v": "new"})
    monkeypatch.undo()
    assert read_json(target) == {"v": "old"}
    assert os.listdir(tmp_path) == ["doc.json"]


def test_failure_at_rename_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "child").write_text("x")
    with pytest.raises(OSError):
        write_json_atomic(target, {"v": 1})
    assert _temp_files(tmp_path) == []


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def write_three_bytes(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data)[:3])

    monkeypatch.setattr(os, "write", write_three_bytes)
    write_json_atomic(tmp_path / "doc.json", {"message": "written three bytes at a time"})
    monkeypatch.undo()
    assert read_json(tmp_path / "doc.json") == {"message": "written three bytes at a time"}


def test_short_writes_are_completed_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file created in place (its first ``write`` inline, the rest through ``write_all``)."""
    real_write = os.write

    def write_three_bytes(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data)[:3])

    monkeypatch.setattr(os, "write", write_three_bytes)
    create_in_place(tmp_path / "prompt.md", b"written three bytes at a time")
    write_bytes_atomic(tmp_path / "response.md", b"and so is this one", durable=False, fresh=True)
    monkeypatch.undo()
    assert (tmp_path / "prompt.md").read_bytes() == b"written three bytes at a time"
    assert (tmp_path / "response.md").read_bytes() == b"and so is this one"


def test_fsyncs_the_file_and_then_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = record_fsyncs(monkeypatch)
    write_json_atomic(tmp_path / "doc.json", {"v": 1})
    assert kinds == ["file", "dir"]


def test_exclusive_write_refuses_existing_target_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "final.json"
    write_bytes_atomic(target, b"first\n", exclusive=True)
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"second\n", exclusive=True)
    assert target.read_bytes() == b"first\n"
    assert os.listdir(tmp_path) == ["final.json"]


def test_a_fresh_write_creates_the_file_in_place_without_a_temp_or_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fresh``: the target sits in a stage dir the attempt created (contract.md §2), so it
    is created where it is — and still redacted like every file of a run."""
    redaction.register_values(["hunter22"])
    opened: list[str] = []
    real_open = os.open

    def open_(path: str, flags: int, *args: Any) -> int:
        opened.append(os.path.basename(path))
        return real_open(path, flags, *args)

    def no_rename(*_args: object) -> None:
        raise AssertionError("renamed")

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", no_rename)
    write_text_atomic(tmp_path / "prompt.md", "the key is hunter22", durable=False, fresh=True)
    monkeypatch.undo()
    assert opened == ["prompt.md"]
    assert (tmp_path / "prompt.md").read_text() == f"the key is {redaction.REDACTED}"


def test_a_fresh_write_over_an_existing_file_replaces_it_atomically(tmp_path: Path) -> None:
    """A backend may have written ``response.md`` first: then the usual recipe replaces it."""
    target = tmp_path / "response.md"
    target.write_text("the backend's")
    inode = target.stat().st_ino
    write_text_atomic(target, "the handler's", durable=False, fresh=True)
    assert target.read_text() == "the handler's"
    assert target.stat().st_ino != inode
    assert os.listdir(tmp_path) == ["response.md"]


def test_a_failed_in_place_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(_fd: int, _data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        create_in_place(tmp_path / "prompt.md", b"text")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileExistsError):  # exclusive: never over an existing file
        create_in_place(tmp_path, b"text")


def test_a_durable_in_place_write_fsyncs_the_file_then_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinds = record_fsyncs(monkeypatch)
    create_in_place(tmp_path / "doc.json", b"{}", durable=True)
    assert kinds == ["file", "dir"]


def test_read_json_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "absent.json")


def test_read_json_reports_file_line_and_column(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_text('{\n  "a": 1,\n  "b": oops\n}\n')
    with pytest.raises(CorruptFileError) as info:
        read_json(target)
    error = info.value
    assert isinstance(error, AttractorError)
    assert (error.line, error.col) == (3, 8)
    assert str(error) == f"{target}:3:8: error: invalid JSON: Expecting value"


def test_read_json_empty_file(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_bytes(b"  \n")
    with pytest.raises(CorruptFileError, match="file is empty"):
        read_json(target)


def test_read_json_invalid_utf8(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(CorruptFileError, match="not valid UTF-8 at byte 7"):
        read_json(target)


def test_utc_timestamp_has_milliseconds_and_z() -> None:
    moment = datetime(2025, 1, 31, 12, 0, 5, 123999, tzinfo=UTC)
    assert utc_timestamp(moment) == "2025-01-31T12:00:05.123Z"
    plus_two = timezone(timedelta(hours=2))
    assert utc_timestamp(datetime(2025, 1, 31, 14, 0, 0, tzinfo=plus_two)) == (
        "2025-01-31T12:00:00.000Z"
    )
    assert utc_timestamp(datetime(2025, 1, 31, 12, 0, 0)) == "2025-01-31T12:00:00.000Z"


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 1, 31, 12, 0, 5, 123999, tzinfo=UTC),
        datetime(2025, 1, 31, 12, 0, 5, 0, tzinfo=UTC),
        datetime(2025, 1, 31, 12, 0, 5, 999000, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 7000, tzinfo=UTC),
    ],
)
def test_utc_timestamp_of_millis_is_the_text_of_that_millisecond(moment: datetime) -> None:
    millis = int(moment.timestamp()) * 1000 + moment.microsecond // 1000
    assert utc_timestamp_of_millis(millis) == utc_timestamp(moment)


def test_cleanup_removes_only_our_temp_files(tmp_path: Path) -> None:
    ours = [".doc.json.0123456789abcdef.tmp", ".graph.dot.fedcba9876543210.tmp"]
    theirs = ["doc.json", ".hidden", "x.tmp", ".doc.json.xyz.tmp", ".doc.json.0123456789ABCDEF.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.0123456789abcdef.tmp").mkdir()
    removed = cleanup_temp_files(tmp_path)
    assert [p.name for p in removed] == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted([*theirs, ".dir.0123456789abcdef.tmp"])


_KILL_CHILD = """
import sys
from attractor_trio.persist.atomic import write_json_atomic
target = sys.argv[1]
payload = "x" * 2_000_000
print("ready", flush=True)
n = 0
while True:
    n += 1
    write_json_atomic(target, {"n": n, "payload": payload, "check": n})
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_partial_target(tmp_path: Path) -> None:
    """A child rewrites a 2 MB document in a loop; we SIGKILL it 20 times at random instants.
    After every kill the target is absent or a complete document; only temps may be left."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    target = tmp_path / "big.json"
    # A hang guard, not a speed target: each child pays ~0.4 s of interpreter and package
    # start-up, more on a loaded machine.
    deadline = time.monotonic() + 40.0
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, str(target)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.05))  # picks the kill instant; not a synchronization
        child.kill()
        child.wait()
        child.stdout.close()
        leftovers = [name for name in os.listdir(tmp_path) if name != target.name]
        assert all(is_temp_file_name(name) for name in leftovers), (seed, leftovers)
        if target.exists():
            doc = read_json(target)
            assert doc["n"] == doc["check"] and len(doc["payload"]) == 2_000_000, seed
        assert time.monotonic() < deadline, "kill loop is too slow for this machine"
    cleanup_temp_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] in ([], [target.name])
    if target.exists():
        assert json.loads(target.read_text())["payload"] == "x" * 2_000_000


def test_utc_timestamp_for_now_matches_the_datetime_path(monkeypatch: pytest.MonkeyPatch) -> None:
    before = utc_timestamp(datetime.now(UTC))
    now = utc_timestamp()
    after = utc_timestamp(datetime.now(UTC))
    assert before <= now <= after
    # The per-second prefix is refreshed when the second changes.

    # The text is reused within one millisecond (and only within it).
    moments = iter(
        [
            1_738_324_805_123_456_789,
            1_738_324_805_123_999_999,
            1_738_324_805_124_000_000,
            1_738_324_805_999_000_000,
            1_738_324_806_000_100_000,
        ]
    )
    monkeypatch.setattr(time, "time_ns", lambda: next(moments))  # what atomic.py calls
    assert [utc_timestamp() for _ in range(5)] == [
        "2025-01-31T12:00:05.123Z",
        "2025-01-31T12:00:05.123Z",
        "2025-01-31T12:00:05.124Z",
        "2025-01-31T12:00:05.999Z",
        "2025-01-31T12:00:06.000Z",
    ]


def test_temp_names_are_unique_and_recognised(tmp_path: Path) -> None:
    import attractor_trio.persist.atomic as atomic

    names = set()
    for _ in range(2000):
        temp, fd = atomic.open_temp(tmp_path / "doc.json")
        os.close(fd)
        names.add(temp.name)
        assert is_temp_file_name(temp.name), temp.name
    assert len(names) == 2000
    before = atomic._temp_prefix
    atomic._new_temp_prefix()  # what a forked child does first (os.register_at_fork)
    assert atomic._temp_prefix != before


@pytest.mark.parametrize("target", ["doc.json", "run/a/status.json", "/abs/run/checkpoint.json"])
def test_a_temp_name_sits_next_to_its_target(target: str) -> None:
    from attractor_trio.persist.atomic import temp_name

    temp = temp_name(target)
    assert os.path.dirname(temp) == os.path.dirname(target)
    name = os.path.basename(temp)
    assert is_temp_file_name(name) and name.startswith(f".{os.path.basename(target)}.")
    assert temp_name(Path(target)) != temp


_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)


@given(_JSON_VALUES)
def test_the_indented_layout_is_exactly_the_json_modules(value: object) -> None:
    """dumps_json builds the indented text itself (the json module's indent is pure Python);
    the bytes, and the error for what JSON refuses (NaN, infinities), must not change."""
    try:
        expected = json.dumps(value, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    except ValueError:
        with pytest.raises(ValueError):
            dumps_json(value)
        return
    assert dumps_json(value) == expected


@given(_JSON_VALUES, st.sampled_from([(",", ":"), (", ", ": ")]))
def test_the_prebuilt_encoder_writes_what_json_dumps_writes(
    value: object, separators: tuple[str, str]
) -> None:
    encode = json_encoder(separators=separators)
    try:
        expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=separators)
    except ValueError:
        with pytest.raises(ValueError):
            encode(value)
        return
    assert encode(value) == expected


def test_the_prebuilt_encoder_refuses_what_json_refuses() -> None:
    encode = json_encoder(separators=(",", ":"))
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode({"x": object()})
    assert json_encoder(separators=(",", ":"), default=str)({"x": 1j}) == '{"x":"1j"}'


def test_a_key_seen_before_is_written_the_same_from_its_cached_text() -> None:
    """Keys' text is cached (run files repeat a few keys at every stage); a later document with
    the same key — also as a ``str`` subclass, or next to an equal-looking int key — is still
    exactly ``json.dumps``'s layout."""

    class Name(str):
        pass

    documents: list[dict[Any, Any]] = [
        {"status": "success", "notes": "ä"},
        {Name("status"): "fail", 1: "one", "1": "text one"},
        {"status": {"status": [1, 2.5, None, True]}},
    ]
    for document in documents:
        expected = json.dumps(document, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
        assert dumps_json(document) == expected
