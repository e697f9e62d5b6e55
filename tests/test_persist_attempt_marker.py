"""The ``.attempt.json`` marker's encoding (``persist/attempt_marker.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.persist.attempt_marker import (
    ATTEMPT_MARKER,
    encode_attempt_marker,
    read_attempt_marker,
)

# Floats include NaN and the infinities: plain ``json.dumps`` writes them, so the marker may.
_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(record=st.dictionaries(st.text(max_size=6), _values, max_size=8))
def test_the_marker_is_json_dumps_of_its_record_byte_for_byte(record: dict[str, Any]) -> None:
    """The prebuilt encoder writes what ``json.dumps(record)`` wrote before it (``\\u``
    escapes for non-ASCII text, ``NaN`` as ``json`` writes it), so markers do not change."""
    assert encode_attempt_marker(record) == json.dumps(record).encode("utf-8")


def test_a_finished_marker_with_an_outcome_keeps_its_format() -> None:
    record = {
        "node_id": "réview",
        "number": 2,
        "attempt": 1,
        "attempt_id": "réview-1-abc123",
        "epoch": "e1",
        "finished": True,
        "interrupted": False,
        "outcome": {"status": "fail", "failure_reason": "✗ tests", "context_updates": {}},
    }
    data = encode_attempt_marker(record)
    assert data == json.dumps(record).encode("utf-8")
    assert data.isascii() and json.loads(data) == record


def test_an_empty_or_torn_marker_reads_exactly_as_an_absent_one(tmp_path: Path) -> None:
    """The first marker in a fresh stage dir is created in place (contract.md §2): a SIGKILL
    may leave any prefix of it, and every prefix must read as no marker at all."""
    record = {
        "node_id": "plan",
        "number": 3,
        "attempt": 1,
        "attempt_id": "plan-3-abc123",
        "epoch": "",
        "finished": True,
        "interrupted": False,
        "outcome": {"outcome": "success", "status": "success", "notes": "ünïcode ✓"},
    }
    data = encode_attempt_marker(record)
    assert read_attempt_marker(tmp_path) is None  # absent
    marker = tmp_path / ATTEMPT_MARKER
    for cut in range(len(data)):
        marker.write_bytes(data[:cut])
        assert read_attempt_marker(tmp_path) is None, data[:cut]
    marker.write_bytes(data)
    assert read_attempt_marker(tmp_path) == record
