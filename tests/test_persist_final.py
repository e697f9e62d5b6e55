"""``final.json``: validated, written exactly once (contract.md §2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.errors import AttractorError
from attractor_trio.persist.atomic import CorruptFileError
from attractor_trio.persist.final import (
    EXIT_PATHS,
    FinalAlreadyWrittenError,
    FinalRecord,
    read_final,
    write_final,
)

KEYS = [
    "run_id",
    "status",
    "failure_reason",
    "failure_class",
    "failure_signature",
    "exit_path",
    "completed_nodes",
    "start_time",
    "end_time",
    "duration_s",
]


def _failed(**overrides: Any) -> FinalRecord:
    arguments: dict[str, Any] = {
        "run_id": "run-1",
        "status": "fail",
        "exit_path": "stage_failed",
        "failure_reason": "exit status 2: make: *** [test] Error 2",
        "failure_class": "deterministic",
        "failure_signature": "test|deterministic|exit status <n>: make: *** [test] error <n>",
        "completed_nodes": ["start", "build"],
        "start_time": "2025-01-31T12:00:00.000Z",
        "end_time": "2025-01-31T12:00:03.500Z",
        "duration_s": 3.5,
        **overrides,
    }
    return FinalRecord(**arguments)


def test_round_trip_with_exact_keys(tmp_path: Path) -> None:
    path = write_final(tmp_path, _failed())
    assert path == tmp_path / "final.json"
    doc = json.loads(path.read_text())
    assert list(doc) == KEYS
    assert doc["completed_nodes"] == ["start", "build"]
    assert read_final(tmp_path) == _failed()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


def test_success_record_has_null_failure_fields(tmp_path: Path) -> None:
    record = FinalRecord(
        run_id="r",
        status="success",
        exit_path="completed",
        completed_nodes=["start", "done"],
        start_time="a",
        end_time="b",
        duration_s=1,
    )
    write_final(tmp_path, record)
    doc = json.loads((tmp_path / "final.json").read_text())
    assert doc["failure_reason"] is None and doc["failure_class"] is None
    assert doc["duration_s"] == 1.0 and isinstance(doc["duration_s"], float)
    assert read_final(tmp_path) == record


def test_second_write_is_a_loud_error_and_keeps_the_first(tmp_path: Path) -> None:
    write_final(tmp_path, _failed())
    with pytest.raises(FinalAlreadyWrittenError) as info:
        write_final(tmp_path, _failed(status="canceled", exit_path="canceled"))
    assert isinstance(info.value, AttractorError)
    assert "written exactly once" in str(info.value)
    assert str(tmp_path / "final.json") in str(info.value)
    assert read_final(tmp_path) == _failed()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"status": "partial_success"}, "status must be one of canceled, fail, success"),
        ({"exit_path": "done"}, "exit_path must be one of canceled, completed"),
        ({"failure_class": "flaky"}, "failure_class must be null or one of budget_exhausted"),
        ({"status": "success"}, "successful run must have exit_path 'completed'"),
    ],
)
def test_invalid_records_cannot_be_built(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _failed(**overrides)


@pytest.mark.parametrize("exit_path", sorted(EXIT_PATHS - {"completed"}))
def test_every_contract_exit_path_is_accepted(exit_path: str) -> None:
    assert _failed(exit_path=exit_path).exit_path == exit_path


def test_read_absent_and_damaged(tmp_path: Path) -> None:
    assert read_final(tmp_path) is None
    write_final(tmp_path, _failed())
    doc = json.loads((tmp_path / "final.json").read_text())
    (tmp_path / "final.json").write_text(json.dumps({**doc, "duration_s": "3.5"}))
    with pytest.raises(CorruptFileError, match="key 'duration_s' must be a number, got a string"):
        read_final(tmp_path)
    (tmp_path / "final.json").write_text(json.dumps({**doc, "status": "done"}))
    with pytest.raises(CorruptFileError, match="invalid final record: status must be one of"):
        read_final(tmp_path)
    (tmp_path / "final.json").write_text("[]")
    with pytest.raises(CorruptFileError, match="must be a JSON object, got a list"):
        read_final(tmp_path)
