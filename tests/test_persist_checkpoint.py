"""``checkpoint.json`` (spec §5.3, contract.md §2): round trip, key set, every load error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.errors import AttractorError
from attractor_trio.persist.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

SPEC_KEYS = {"timestamp", "current_node", "completed_nodes", "node_retries", "context", "logs"}
EXTRA_KEYS = {"run_id", "node_outcomes", "visits", "failure_signatures", "extra"}


def _checkpoint() -> Checkpoint:
    return Checkpoint(
        timestamp="2025-01-31T12:00:00.123Z",
        run_id="run-1",
        current_node="review",
        completed_nodes=["start", "plan", "review", "plan"],
        node_retries={"plan": 1},
        context={"graph.goal": "ship it", "nested": {"list": [1, 2.5, None, True]}},
        logs=["plan: ok"],
        node_outcomes={
            "review": {
                "status": "fail",
                "preferred_label": "",
                "suggested_next_ids": [],
                "context_updates": {},
                "notes": "",
                "failure_reason": "tests failed: 3 of 10",
                "failure_class": "deterministic",
            }
        },
        visits={"start": 1, "plan": 2, "review": 1},
        failure_signatures={"review|deterministic|tests failed: <n> of <n>": 1},
        extra={"restart_count": 0},
    )


def _saved_doc(tmp_path: Path) -> dict[str, Any]:
    save_checkpoint(tmp_path, _checkpoint())
    doc: dict[str, Any] = json.loads((tmp_path / "checkpoint.json").read_text())
    return doc


def _write_doc(tmp_path: Path, doc: object) -> None:
    (tmp_path / "checkpoint.json").write_text(json.dumps(doc))


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, _checkpoint())
    assert path == tmp_path / "checkpoint.json"
    assert load_checkpoint(tmp_path) == _checkpoint()


def test_file_has_the_spec_keys_then_the_extras(tmp_path: Path) -> None:
    doc = _saved_doc(tmp_path)
    assert list(doc)[:6] == [
        "timestamp",
        "current_node",
        "completed_nodes",
        "node_retries",
        "context",
        "logs",
    ]
    assert set(doc) == SPEC_KEYS | EXTRA_KEYS


def test_defaults_and_timestamp_format() -> None:
    checkpoint = Checkpoint(run_id="r", current_node="start", completed_nodes=["start"])
    assert checkpoint.node_retries == {} and checkpoint.logs == ()
    assert checkpoint.visits == {} and checkpoint.failure_signatures == {}
    assert checkpoint.timestamp.endswith("Z") and len(checkpoint.timestamp) == 24


def test_checkpoint_copies_the_callers_collections() -> None:
    completed = ["start"]
    context: dict[str, Any] = {"k": 1}
    outcome: dict[str, Any] = {"status": "success"}
    checkpoint = Checkpoint(
        run_id="r",
        current_node="start",
        completed_nodes=completed,
        context=context,
        node_outcomes={"start": outcome},
    )
    completed.append("later")
    context["k"] = 2
    outcome["status"] = "fail"
    assert checkpoint.completed_nodes == ("start",)
    assert checkpoint.context == {"k": 1}
    assert checkpoint.node_outcomes["start"]["status"] == "success"


def test_extra_may_be_absent_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    doc = _saved_doc(tmp_path)
    del doc["extra"]
    doc["future_key"] = [1]
    _write_doc(tmp_path, doc)
    assert load_checkpoint(tmp_path).extra == {}


def test_missing_file_says_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert isinstance(info.value, AttractorError)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'checkpoint.json'}: error: no checkpoint found")
    assert "attractor-trio run" in message


def test_invalid_json_names_the_position(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").write_text('{"timestamp": "x",\n "current_node": }')
    with pytest.raises(CheckpointError, match=r"line 2 column 18: invalid JSON: Expecting value"):
        load_checkpoint(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").write_text("")
    with pytest.raises(CheckpointError, match=r"file is empty.*cannot be resumed"):
        load_checkpoint(tmp_path)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    _write_doc(tmp_path, ["not", "an", "object"])
    with pytest.raises(CheckpointError, match="expected a JSON object, got a list"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("timestamp", "a string (RFC 3339 time)"),
        ("run_id", "a string"),
        ("current_node", "a string (node id)"),
        ("completed_nodes", "a list of node id strings"),
        ("node_retries", "an object mapping node id to an integer"),
        ("context", "an object"),
        ("logs", "a list of strings"),
        ("node_outcomes", "an object mapping node id to an object"),
        ("visits", "an object mapping node id to an integer"),
        ("failure_signatures", "an object mapping failure signature to an integer"),
    ],
)
def test_missing_key_is_named_with_its_type(tmp_path: Path, key: str, expected: str) -> None:
    doc = _saved_doc(tmp_path)
    del doc[key]
    _write_doc(tmp_path, doc)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert f"missing key {key!r} (expected {expected})" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "found"),
    [
        ("timestamp", 12, "a number"),
        ("run_id", None, "null"),
        ("current_node", ["a"], "a list"),
        ("completed_nodes", ["a", 1], "a number at index 1"),
        ("completed_nodes", "a,b", "a string"),
        ("node_retries", {"plan": "1"}, "a string for 'plan'"),
        ("node_retries", {"plan": True}, "a boolean for 'plan'"),
        ("node_retries", {"plan": 1.5}, "a number for 'plan'"),
        ("context", [], "a list"),
        ("logs", [None], "null at index 0"),
        ("node_outcomes", {"a": "success"}, "a string for 'a'"),
        ("visits", [1], "a list"),
        ("failure_signatures", {"sig": {}}, "an object for 'sig'"),
        ("extra", "x", "a string"),
    ],
)
def test_ill_typed_key_is_named_with_expected_and_found_type(
    tmp_path: Path, key: str, value: object, found: str
) -> None:
    doc = _saved_doc(tmp_path)
    doc[key] = value
    _write_doc(tmp_path, doc)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert f"key {key!r} must be " in message
    assert f", got {found};" in message
    assert "cannot be resumed" in message
