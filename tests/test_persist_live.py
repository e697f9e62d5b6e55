"""``live.json``: atomic, throttled snapshot (contract.md §2, §9 states)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.persist.atomic import CorruptFileError, dumps_json
from attractor_trio.persist.live import LIVE_STATES, LiveWriter, read_live


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _writer(tmp_path: Path, clock: FakeClock) -> LiveWriter:
    stamps = iter(f"t{i}" for i in range(1000))
    return LiveWriter(tmp_path, "run-1", 0.25, clock=clock, now=lambda: next(stamps))


def _on_disk(tmp_path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((tmp_path / "live.json").read_text())
    return doc


def test_first_update_is_written_with_all_keys(tmp_path: Path) -> None:
    writer = _writer(tmp_path, FakeClock())
    assert writer.update(state="starting") is True
    assert _on_disk(tmp_path) == {
        "run_id": "run-1",
        "state": "starting",
        "current_node": "",
        "active_attempts": [],
        "last_event": None,
        "updated_at": "t0",
    }
    assert not writer.pending


def test_updates_inside_the_interval_stay_pending_until_time_passes(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = _writer(tmp_path, clock)
    writer.update(state="running", current_node="a")
    clock.now += 0.1
    assert writer.update(current_node="b") is False
    assert writer.pending
    assert _on_disk(tmp_path)["current_node"] == "a"
    clock.now += 0.15
    event = {"seq": 7, "event": "stage_started"}
    attempts = [{"node_id": "c", "attempt_id": "c-1"}]
    assert writer.update(current_node="c", active_attempts=attempts, last_event=event) is True
    doc = _on_disk(tmp_path)
    assert doc["current_node"] == "c"
    assert doc["active_attempts"] == attempts and doc["last_event"] == event


def test_flush_forces_pending_state_out(tmp_path: Path) -> None:
    writer = _writer(tmp_path, FakeClock())
    writer.update(state="running")
    writer.update(current_node="late")
    assert writer.flush() is True
    assert _on_disk(tmp_path)["current_node"] == "late"
    assert writer.flush() is False  # nothing pending


def test_state_changes_are_never_throttled(tmp_path: Path) -> None:
    writer = _writer(tmp_path, FakeClock())
    writer.update(state="running")
    assert writer.update(state="finalizing") is True
    assert writer.update(state="success") is True
    assert _on_disk(tmp_path)["state"] == "success"
    assert writer.update(state="success") is False  # not a change


def test_empty_string_clears_current_node_and_none_leaves_it(tmp_path: Path) -> None:
    writer = _writer(tmp_path, FakeClock())
    writer.update(current_node="a")
    writer.update(active_attempts=[])
    assert writer.snapshot()["current_node"] == "a"
    writer.update(current_node="")
    assert writer.snapshot()["current_node"] == ""


def test_unknown_state_is_refused(tmp_path: Path) -> None:
    writer = _writer(tmp_path, FakeClock())
    with pytest.raises(ValueError, match="live state must be one of starting, running"):
        writer.update(state="paused")
    assert set(LIVE_STATES) == {"starting", "running", "finalizing", "success", "fail", "canceled"}


def test_read_live(tmp_path: Path) -> None:
    assert read_live(tmp_path) is None
    _writer(tmp_path, FakeClock()).update(state="running")
    assert read_live(tmp_path)["state"] == "running"  # type: ignore[index]
    (tmp_path / "live.json").write_text('"x"')
    with pytest.raises(CorruptFileError, match="live snapshot must be a JSON object"):
        read_live(tmp_path)


def test_followed_active_attempts_are_read_when_written_not_copied_per_update(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    writer = _writer(tmp_path, clock)
    active: dict[str, dict[str, Any]] = {}
    writer.follow_active_attempts(active)
    writer.update(state="running")
    assert _on_disk(tmp_path)["active_attempts"] == []
    active["a-1"] = {"node_id": "a", "attempt_id": "a-1"}
    active["b-1"] = {"node_id": "b", "attempt_id": "b-1"}
    assert writer.snapshot()["active_attempts"] == [
        {"node_id": "a", "attempt_id": "a-1"},
        {"node_id": "b", "attempt_id": "b-1"},
    ]
    del active["a-1"]
    clock.now += 1
    writer.update(current_node="b")
    assert _on_disk(tmp_path)["active_attempts"] == [{"node_id": "b", "attempt_id": "b-1"}]
    snapshot = writer.snapshot()
    snapshot["active_attempts"][0]["node_id"] = "changed"  # a snapshot is a copy
    assert active["b-1"]["node_id"] == "b"


def test_followed_active_attempts_are_written_byte_for_byte_as_dumps_json_lays_them_out(
    tmp_path: Path,
) -> None:
    """Each open attempt is encoded once and spliced in (a fan-out has one per branch); the
    file must stay exactly what ``dumps_json`` of the whole document gives, write after write,
    as attempts open, close and reopen under the same key."""
    clock = FakeClock()
    writer = _writer(tmp_path, clock)
    active: dict[str, dict[str, Any]] = {}
    writer.follow_active_attempts(active)

    def written_as_dumps_json() -> None:
        expected = {**writer.snapshot(), "updated_at": _on_disk(tmp_path)["updated_at"]}
        assert (tmp_path / "live.json").read_text(encoding="utf-8") == dumps_json(expected)

    writer.update(state="running", last_event={"event": "x", "note": 'ünï "q"\n'})
    written_as_dumps_json()
    for round_ in range(4):
        for index in range(3):
            active[f"n{index}-{round_}"] = {
                "node_id": f"n{index}",
                "attempt_id": f"n{index}-{round_}",
                "attempt": round_,
                "branch": "par/ö" if index else "",
                "nested": {"list": [1, 2.5, None, True], "empty": {}},
            }
        active.pop(f"n1-{round_ - 1}", None)
        active["n2-0"] = dict(active.get("n2-0", {}), attempt=round_)  # replaced, not mutated
        clock.now += 1
        writer.update(current_node=f"n{round_}")
        written_as_dumps_json()
    active.clear()
    writer.update(state="success")
    written_as_dumps_json()
    assert _on_disk(tmp_path)["active_attempts"] == []


class _Log:
    last_line = b""


def test_the_followed_log_s_last_line_is_last_event_until_an_update_replaces_it(
    tmp_path: Path,
) -> None:
    """The hub's writer is followed: its new last line is a pending change, parsed only when
    a snapshot is taken or written; an explicit ``last_event`` wins over lines before it."""
    clock = FakeClock()
    writer, log = _writer(tmp_path, clock), _Log()
    writer.follow_log(log)
    assert writer.flush() is True  # the first snapshot, no event yet
    assert _on_disk(tmp_path)["last_event"] is None and not writer.pending
    line = b'{"seq": 3, "ts": "t", "event": "stage_started", "x": [1, 2.5]}\n'
    log.last_line = line
    assert writer.pending and writer.snapshot()["last_event"] == json.loads(line)
    assert writer.pending  # a snapshot is not a write
    writer.note_current("a")
    assert not writer.due()  # within the interval
    clock.now += 0.25
    assert writer.due() and writer.flush() is True
    assert _on_disk(tmp_path)["last_event"] == json.loads(line)
    assert _on_disk(tmp_path)["current_node"] == "a" and not writer.pending
    log.last_line = line.replace(b"3", b"6")
    writer.update(last_event={"seq": 7})
    assert writer.flush() is True
    assert _on_disk(tmp_path)["last_event"] == {"seq": 7}
    log.last_line = line.replace(b"3", b"8")
    assert writer.snapshot()["last_event"]["seq"] == 8
