"""What the hub hands ``live.json`` and the sinks for each event: the envelope as written.

``live.json``'s ``last_event`` is the last event of the run's log (contract.md §2, §9), byte
for byte as ``dumps_json`` lays out that envelope, whatever its fields hold and whether the
event was the run's own, a branch's forwarded copy, or redacted (contract.md §10).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.core import redaction
from attractor_trio.events import EventHub
from attractor_trio.persist.atomic import dumps_json
from attractor_trio.persist.live import LiveWriter
from attractor_trio.persist.progress import ProgressWriter, read_progress

SECRET = "sk-live-events-0123456789"


@pytest.fixture
def secrets() -> Iterator[None]:
    redaction.register_values([SECRET])
    yield
    redaction.reset()


def _hub(tmp_path: Path, sinks: list[Any]) -> EventHub:
    stamps = iter(f"t{i}" for i in range(10_000))
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    live = LiveWriter(tmp_path, "run-1", 0.0, now=lambda: next(stamps))  # every event written
    return EventHub(writer, live, sinks)


FIELDS: list[dict[str, Any]] = [
    {"node_id": "a", "handler": "codergen", "index": 1},
    {"node_id": "a", "attempt": 1, "max_attempts": 2, "attempt_id": "a-1-x"},
    {"copied": False, "rejected": [], "nested": {"k": [1, 2.5, None, True]}, "t": (1, "2")},
    {"duration_s": 0.1 + 0.2, "neg": -0.0, "big": 10**30, "text": 'ünï "q"\n\t\u2028'},
    {"node_id": "a", "attempt_id": "a-1-x", "status": "success", "failure_reason": ""},
    {},
]


def _check(tmp_path: Path, hub: EventHub, envelope: dict[str, Any], node: str) -> None:
    """``live.json`` is ``dumps_json`` of the snapshot whose ``last_event`` is ``envelope``."""
    written = json.loads(json.dumps(envelope))  # as the log holds it: tuples are lists
    doc_text = (tmp_path / "live.json").read_text(encoding="utf-8")
    doc = json.loads(doc_text)
    assert doc["last_event"] == written and doc["current_node"] == node
    expected = {**doc, "last_event": envelope}
    assert doc_text == dumps_json(expected)
    assert json.loads(json.dumps(hub.live.snapshot()["last_event"])) == written


def test_live_last_event_is_each_envelope_as_written(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    hub = _hub(tmp_path, [seen.append])
    returned = []
    for index, fields in enumerate(FIELDS):
        event = "stage_started" if index == 0 else f"e{index}"
        envelope = hub.emit(event, **fields)
        returned.append(envelope)
        _check(tmp_path, hub, envelope, "a")
    assert seen == returned
    hub.close()
    assert read_progress(tmp_path / "progress.ndjson") == json.loads(json.dumps(returned))


def test_a_forwarded_branch_event_is_the_run_log_s_copy(tmp_path: Path) -> None:
    hub = _hub(tmp_path, [])
    hub.emit("stage_started", node_id="par", handler="parallel", index=1)
    hub.open_branch("par/b", tmp_path / "parallel" / "par" / "b" / "progress.ndjson")
    for fields in FIELDS:
        envelope = hub.emit("branch_event", "par/b", **fields)
        assert envelope["seq"] == hub.writer.next_seq - 1 and envelope["branch"] == "par/b"
        _check(tmp_path, hub, envelope, "par")
    hub.emit_fields("unlogged", "par/other", {"n": 1})  # a branch without a log of its own
    _check(tmp_path, hub, read_progress(tmp_path / "progress.ndjson")[-1], "par")
    hub.close()


@pytest.mark.usefixtures("secrets")
def test_a_redacted_event_reaches_live_json_redacted(tmp_path: Path) -> None:
    hub = _hub(tmp_path, [])
    envelope = hub.emit("stage_started", node_id="a", note=f"key={SECRET}", index=1)
    assert envelope["note"] == f"key={redaction.REDACTED}"
    _check(tmp_path, hub, envelope, "a")
    assert SECRET not in (tmp_path / "live.json").read_text(encoding="utf-8")
    hub.close()


def test_a_field_named_like_the_envelope_is_refused_whichever_way_it_comes(
    tmp_path: Path,
) -> None:
    """``event`` and ``branch`` are positional only: such a field reaches the writer, which
    refuses it, rather than clashing with the parameter (a ``TypeError`` before)."""
    hub = _hub(tmp_path, [])
    attempts: list[Callable[[], object]] = [
        lambda: hub.emit("e", "", branch="b"),
        lambda: hub.emit("e", event="x"),
        lambda: hub.emit_fields("e", "", {"branch": "b"}),
        lambda: hub.bind("par/b")("e", branch="other"),
    ]
    for emit in attempts:
        with pytest.raises(ValueError, match="envelope keys"):
            emit()
    assert hub.writer.next_seq == 1  # nothing written
    hub.close()
