"""``progress.ndjson``: envelope, seq continuity, torn lines, resume, branch forwarding
(contract.md §4, §9)."""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attractor_trio.persist import progress
from attractor_trio.persist.atomic import CorruptFileError
from attractor_trio.persist.progress import (
    ProgressWriter,
    next_seq_for_resume,
    read_progress,
)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _line(seq: int, **fields: Any) -> str:
    doc = {"seq": seq, "ts": "2025-01-01T00:00:00.000Z", "run_id": "r", "event": "e", "branch": ""}
    return json.dumps({**doc, **fields}) + "\n"


def test_emit_writes_envelope_in_order_and_returns_it(tmp_path: Path) -> None:
    path = tmp_path / "progress.ndjson"
    with ProgressWriter(path, "run-1") as writer:
        first = writer.emit("pipeline_started", name="G", goal="g", logs_root="/x", resumed=False)
        second = writer.emit("stage_started", "par/a", node_id="a", handler="tool", index=0)
    envelope = ["seq", "ts", "run_id", "event", "branch"]
    assert list(first) == [*envelope, "name", "goal", "logs_root", "resumed"]
    assert first["seq"] == 1 and second["seq"] == 2
    assert first["run_id"] == "run-1" and first["branch"] == ""
    assert second["branch"] == "par/a"
    assert TS.match(first["ts"])
    assert read_progress(path) == [first, second]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2


def test_start_seq_continues_numbering(tmp_path: Path) -> None:
    with ProgressWriter(tmp_path / "p.ndjson", "r", start_seq=41) as writer:
        assert writer.emit("a")["seq"] == 41
        assert writer.emit("b")["seq"] == 42
        assert writer.next_seq == 43
    with pytest.raises(ValueError, match="start_seq"):
        ProgressWriter(tmp_path / "q.ndjson", "r", start_seq=0)


def test_envelope_keys_cannot_be_shadowed_and_no_seq_is_consumed(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    with ProgressWriter(path, "r") as writer:
        with pytest.raises(ValueError, match="run_id, seq"):
            writer.emit("x", seq=7, run_id="other")
        assert writer.emit("y")["seq"] == 1
    assert [e["event"] for e in read_progress(path)] == ["y"]


def test_unserializable_field_writes_nothing_and_consumes_no_seq(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    with ProgressWriter(path, "r") as writer:
        with pytest.raises(TypeError):
            writer.emit("x", payload=object())
        with pytest.raises(ValueError):
            writer.emit("x", value=float("nan"))
        assert writer.emit("y")["seq"] == 1
    assert path.read_text().count("\n") == 1


def test_non_ascii_fields_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    with ProgressWriter(path, "r") as writer:
        writer.emit("interview_started", node_id="gate", question="Déployer ? 日本")
    assert "Déployer ? 日本" in path.read_text(encoding="utf-8")


def test_closed_writer_refuses(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path / "p.ndjson", "r")
    writer.sync()
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.emit("x")
    with pytest.raises(ValueError, match="closed"):
        writer.sync()


def test_branch_events_are_numbered_from_one_and_forwarded_with_run_seq(tmp_path: Path) -> None:
    run_path = tmp_path / "progress.ndjson"
    branch_path = tmp_path / "branch.ndjson"
    with ProgressWriter(run_path, "run-1") as run, ProgressWriter(branch_path, "run-1") as branch:
        run.emit("pipeline_started")
        run.emit("parallel_started", node_id="fan")
        for node in ("a", "b"):
            local = branch.emit("stage_started", "fan/a", node_id=node, handler="tool", index=0)
            copy = run.forward(local)
            assert copy["branch"] == "fan/a"
            assert copy["node_id"] == node and copy["handler"] == "tool"
            assert copy["run_id"] == "run-1"
        run.emit("parallel_completed", node_id="fan")
    branch_events = read_progress(branch_path)
    run_events = read_progress(run_path)
    assert [e["seq"] for e in branch_events] == [1, 2]
    assert [e["seq"] for e in run_events] == [1, 2, 3, 4, 5]
    assert [e["branch"] for e in run_events] == ["", "", "fan/a", "fan/a", ""]
    assert [e.get("node_id") for e in run_events[2:4]] == ["a", "b"]


def test_forward_requires_an_event_name(tmp_path: Path) -> None:
    with ProgressWriter(tmp_path / "p.ndjson", "r") as writer:
        with pytest.raises(ValueError, match="event"):
            writer.forward({"seq": 1, "branch": "x/y"})
        with pytest.raises(ValueError, match="branch"):
            writer.forward({"event": "e", "branch": 3})
        assert writer.next_seq == 1


def test_concurrent_emitters_get_gap_free_seq_and_ordered_ts(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    with ProgressWriter(path, "r") as writer:
        threads = [
            threading.Thread(target=lambda: [writer.emit("tick", n=i) for i in range(200)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    events = read_progress(path)
    assert [e["seq"] for e in events] == list(range(1, 801))
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_read_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(_line(1) + _line(2) + '{"seq": 3, "ts": "2025-')
    assert [e["seq"] for e in read_progress(path)] == [1, 2]


def test_read_accepts_a_complete_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(_line(1) + _line(2).rstrip("\n"))
    assert [e["seq"] for e in read_progress(path)] == [1, 2]


@pytest.mark.parametrize("bad", ["{torn", "[1, 2]", '{"no_seq": true}', '{"seq": "1"}'])
def test_read_rejects_an_invalid_middle_line_with_its_number(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(_line(1) + bad + "\n" + _line(3))
    with pytest.raises(CorruptFileError) as info:
        read_progress(path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{path}:2:1: error: not a JSON event object")


def test_resume_seq_for_missing_empty_and_clean_files(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    assert next_seq_for_resume(path) == 1
    assert not path.exists()
    path.write_text("")
    assert next_seq_for_resume(path) == 1
    path.write_text(_line(1) + _line(2) + "\n")
    assert next_seq_for_resume(path) == 3
    assert path.read_text() == _line(1) + _line(2) + "\n"


def test_resume_truncates_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(_line(1) + _line(2) + '{"seq": 3, "ev')
    assert next_seq_for_resume(path) == 3
    assert path.read_text() == _line(1) + _line(2)


def test_resume_truncates_a_zero_filled_tail(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_bytes((_line(1) + _line(2)).encode() + b"\0" * 4096)
    assert next_seq_for_resume(path) == 3
    assert path.read_text() == _line(1) + _line(2)


def test_resume_of_a_file_holding_only_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text('{"seq": 1')
    assert next_seq_for_resume(path) == 1
    assert path.read_bytes() == b""


def test_resume_adds_a_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(_line(1) + _line(2).rstrip("\n"))
    assert next_seq_for_resume(path) == 3
    assert path.read_text() == _line(1) + _line(2)


def test_resume_refuses_when_the_line_before_a_torn_one_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text(_line(1) + "garbage\n" + '{"seq": 3')
    with pytest.raises(CorruptFileError) as info:
        next_seq_for_resume(path)
    assert info.value.line == 2


def test_resume_reads_backwards_through_large_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    big = "y" * 150_000  # each line spans several 64 KiB read chunks
    path.write_text(_line(1, blob=big) + _line(2, blob=big) + '{"seq": 3, "blob": "' + big)
    assert next_seq_for_resume(path) == 3
    assert [e["seq"] for e in read_progress(path)] == [1, 2]
    assert path.read_text().endswith("\n")


def test_writer_resume_continues_after_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    with ProgressWriter(path, "r") as writer:
        writer.emit("a")
        writer.emit("b")
    with path.open("a") as handle:
        handle.write('{"seq": 3, "ts"')
    with ProgressWriter.resume(path, "r") as writer:
        assert writer.emit("c")["seq"] == 3
    assert [(e["seq"], e["event"]) for e in read_progress(path)] == [(1, "a"), (2, "b"), (3, "c")]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=6),
    data=st.data(),
)
def test_crash_at_any_byte_then_resume_gives_a_gap_free_log(
    tmp_path: Path, sizes: list[int], data: st.DataObject
) -> None:
    """Cut a valid log at any byte (what a crash can leave); resume must keep exactly the
    events whose JSON survived whole and continue numbering right after them."""
    path = tmp_path / "crash.ndjson"
    path.unlink(missing_ok=True)
    with ProgressWriter(path, "r") as writer:
        for size in sizes:
            writer.emit("e", pad="é" * size)
    full = path.read_bytes()
    cut = data.draw(st.integers(min_value=0, max_value=len(full)), label="cut")
    path.write_bytes(full[:cut])
    survivors = [line for line in full.split(b"\n") if line][: full[:cut].count(b"\n")]
    rest = full[:cut].split(b"\n")[-1]
    expected_next = len(survivors) + 1 + (1 if rest and _is_complete(rest) else 0)
    assert next_seq_for_resume(path) == expected_next
    with ProgressWriter(path, "r", start_seq=expected_next) as writer:
        writer.emit("after")
    assert [e["seq"] for e in read_progress(path)] == list(range(1, expected_next + 1))


def _is_complete(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def test_failed_write_leaves_no_fragment_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.ndjson"
    real_write = os.write
    calls = {"n": 0}

    def disk_full_after_five_bytes(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    with ProgressWriter(path, "r") as writer:
        writer.emit("a")
        monkeypatch.setattr(os, "write", disk_full_after_five_bytes)
        with pytest.raises(OSError, match="No space"):
            writer.emit("b")
        monkeypatch.undo()
        assert writer.emit("c")["seq"] == 2
    assert [(e["seq"], e["event"]) for e in read_progress(path)] == [(1, "a"), (2, "c")]


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``write(2)`` may write part of a line (a signal): the writer writes the rest."""
    path = tmp_path / "p.ndjson"
    real_write = os.write
    calls = {"n": 0}

    def five_bytes_first(fd: int, data: bytes) -> int:
        calls["n"] += 1
        return real_write(fd, bytes(data)[:5] if calls["n"] == 1 else data)

    with ProgressWriter(path, "r") as writer:
        monkeypatch.setattr(os, "write", five_bytes_first)
        writer.emit("a", node_id="n")
        monkeypatch.undo()
        writer.emit("b")
    assert [(e["seq"], e["event"]) for e in read_progress(path)] == [(1, "a"), (2, "b")]
    assert calls["n"] >= 2


@pytest.mark.parametrize("with_line", [False, True], ids=["re-encoded", "renumbered"])
def test_forwarding_the_written_line_gives_the_same_copy_as_re_encoding(
    tmp_path: Path, with_line: bool
) -> None:
    run_path, branch_path = tmp_path / "progress.ndjson", tmp_path / "branch.ndjson"
    with ProgressWriter(run_path, "run-1") as run, ProgressWriter(branch_path, "run-1") as branch:
        run.emit("pipeline_started")
        local = branch.emit("stage_started", "fan/a", node_id="ä,b", notes='x, "y"', index=7)
        copy = run.forward(local, branch.last_line if with_line else None)
    assert copy == {**local, "seq": 2, "ts": copy["ts"]}
    assert list(copy) == list(local)  # seq stays first: the envelope order of contract.md §4
    on_disk = read_progress(run_path)[1]
    assert on_disk == copy
    if with_line:  # same text and time as the branch's line, only the number differs
        assert copy["ts"] == local["ts"]
        assert run_path.read_bytes().splitlines()[1] == branch.last_line.rstrip(b"\n").replace(
            b'{"seq": 1,', b'{"seq": 2,', 1
        )


def test_a_line_of_another_run_is_re_encoded(tmp_path: Path) -> None:
    a_path, b_path = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    with ProgressWriter(a_path, "run-a") as run, ProgressWriter(b_path, "run-b") as other:
        local = other.emit("stage_started", "x/y", node_id="n")
        copy = run.forward(local, other.last_line)
    assert copy["run_id"] == "run-a"
    assert read_progress(tmp_path / "a.ndjson")[0]["run_id"] == "run-a"


# Finite floats only: the writer refuses NaN and the infinities (not JSON; ``allow_nan=False``),
# where ``json.dumps`` would write them — an infinity drawn here failed the byte-for-byte test.
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    run_id=st.text(min_size=1, max_size=8),
    event=st.text(min_size=1, max_size=8),
    branch=st.text(max_size=6),
    fields=st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in ("seq", "ts", "run_id", "event", "branch")),
        json_values,
        max_size=4,
    ),
)
def test_each_line_is_json_dumps_of_the_envelope_byte_for_byte(
    tmp_path: Path, run_id: str, event: str, branch: str, fields: dict[str, Any]
) -> None:
    """The writer builds the line from cached pieces instead of encoding the envelope whole;
    the bytes must still be exactly ``json.dumps(envelope, ensure_ascii=False)``."""
    path = tmp_path / f"p-{os.urandom(4).hex()}.ndjson"
    with ProgressWriter(path, run_id) as writer:
        envelope = writer.emit(event, branch, **fields)
        line = writer.last_line
    assert line == (json.dumps(envelope, ensure_ascii=False) + "\n").encode("utf-8")
    assert path.read_bytes() == line
    assert json.loads(line) == envelope


def test_ts_is_the_clock_s_millisecond_for_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer keeps the last ``ts`` text while the clock stays within its millisecond:
    events get the same text within one, a new one in the next, across seconds too."""
    moments = iter(
        [
            1_738_324_805_123_456_789,
            1_738_324_805_123_999_999,
            1_738_324_805_124_000_000,
            1_738_324_805_999_000_000,
            1_738_324_806_000_100_000,
            1_738_324_806_000_900_000,
        ]
    )
    monkeypatch.setattr(progress, "_time_ns", lambda: next(moments))  # what append reads
    with ProgressWriter(tmp_path / "progress.ndjson", "r") as writer:
        stamps = [writer.emit("e")["ts"] for _ in range(6)]
    assert stamps == [
        "2025-01-31T12:00:05.123Z",
        "2025-01-31T12:00:05.123Z",
        "2025-01-31T12:00:05.124Z",
        "2025-01-31T12:00:05.999Z",
        "2025-01-31T12:00:06.000Z",
        "2025-01-31T12:00:06.000Z",
    ]
    assert [e["ts"] for e in read_progress(tmp_path / "progress.ndjson")] == stamps
