"""``persist/outcome_text.py`` and ``attempt_marker.encode_marker`` spell out the texts the
generic encoders gave for a stage's outcome: ``status.json`` (``dumps_json``) and the
``.attempt.json`` marker (``json.dumps``). They must stay byte for byte the same, for any
outcome and marker record, the unusual ones (enum members, non-string values, values
``dumps_json`` hands to ``json.dumps``, non-ASCII text) included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.core.vocabulary import FailureClass
from attractor_trio.persist.atomic import dumps_json
from attractor_trio.persist.attempt_marker import encode_attempt_marker, encode_marker
from attractor_trio.persist.outcome_text import marker_outcome_text, status_text

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _same(outcome: Outcome) -> None:
    document = outcome.to_json()
    assert status_text(outcome) == dumps_json(document)
    assert marker_outcome_text(outcome) == json.dumps(document)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from(list(StageStatus)),
    label=_TEXT,
    ids=st.lists(_TEXT, max_size=3),
    updates=st.dictionaries(_TEXT, _JSON, max_size=4),
    notes=_TEXT,
    reason=_TEXT,
    failure_class=st.sampled_from(["", "deterministic", "transient_infra", "odd \u00e9 \n"]),
    signature=_TEXT,
)
def test_the_outcome_texts_are_the_generic_encoders(
    status: StageStatus,
    label: str,
    ids: list[str],
    updates: dict[str, Any],
    notes: str,
    reason: str,
    failure_class: str,
    signature: str,
) -> None:
    _same(
        Outcome(
            status,
            preferred_label=label,
            suggested_next_ids=ids,
            context_updates=updates,
            notes=notes,
            failure_reason=reason,
            failure_class=failure_class,
            failure_signature=signature,
        )
    )


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(StageStatus.SUCCESS),
        Outcome(StageStatus.SUCCESS, custom="needs_review", notes="Stage completed: a"),
        Outcome(StageStatus.FAIL, failure_class=FailureClass.TRANSIENT_INFRA),  # an enum member
        Outcome(StageStatus.FAIL, notes=5),  # type: ignore[arg-type]
        Outcome(StageStatus.SUCCESS, context_updates={"n": (1, 2), "s": {"a"}.pop()}),
        Outcome(StageStatus.SUCCESS, context_updates={"k": FailureClass.CANCELED}),
        Outcome(StageStatus.SUCCESS, suggested_next_ids=("a", "b\u00e9")),
    ],
)
def test_unusual_outcomes_take_the_generic_path_to_the_same_text(outcome: Outcome) -> None:
    _same(outcome)


@pytest.mark.parametrize("notes", ["Stage completed: a", "del \x7f", "caf\u00e9", '\n\t"\\'])
def test_the_marker_after_the_status_file_of_the_same_outcome(notes: str) -> None:
    """The marker reuses the status file's string texts where the two encodings agree (ASCII
    without DEL): the same text as ``json.dumps`` whatever the notes, the order, or an
    outcome in between."""
    first, second = Outcome(StageStatus.SUCCESS, notes=notes), Outcome(StageStatus.FAIL)
    status_text(first)
    assert marker_outcome_text(first) == json.dumps(first.to_json())
    status_text(first)
    status_text(second)
    assert marker_outcome_text(first) == json.dumps(first.to_json())
    assert marker_outcome_text(second) == json.dumps(second.to_json())


def test_values_the_encoders_refuse_are_refused_alike() -> None:
    outcome = Outcome(StageStatus.SUCCESS, context_updates={"x": math.nan, "o": object()})
    with pytest.raises((ValueError, TypeError)) as generic:
        dumps_json(outcome.to_json())
    with pytest.raises(type(generic.value)):
        status_text(outcome)


@settings(max_examples=200, deadline=None)
@given(
    node_id=_TEXT,
    number=st.integers(min_value=0),
    attempt=st.integers(min_value=0),
    attempt_id=_TEXT,
    epoch=_TEXT,
    finished=st.booleans(),
    interrupted=st.booleans(),
    with_outcome=st.booleans(),
)
def test_the_marker_is_the_json_dumps_of_its_record(
    node_id: str,
    number: int,
    attempt: int,
    attempt_id: str,
    epoch: str,
    finished: bool,
    interrupted: bool,
    with_outcome: bool,
) -> None:
    record: dict[str, Any] = {
        "node_id": node_id,
        "number": number,
        "attempt": attempt,
        "attempt_id": attempt_id,
        "epoch": epoch,
        "finished": finished,
        "interrupted": interrupted,
    }
    outcome = Outcome(StageStatus.SUCCESS, context_updates={"k": node_id}, notes=epoch)
    text = None
    if with_outcome:
        record["outcome"] = outcome.to_json()
        text = marker_outcome_text(outcome)
    expected = json.dumps(record).encode()
    assert encode_attempt_marker(record) == expected
    assert encode_marker(
        node_id, number, attempt, attempt_id, epoch, finished, interrupted, text
    ) == (expected)


def test_a_marker_field_of_another_type_takes_the_generic_encoder() -> None:
    expected = json.dumps(
        {
            "node_id": "n",
            "number": True,
            "attempt": 1,
            "attempt_id": "n-1",
            "epoch": FailureClass.CANCELED,
            "finished": False,
            "interrupted": True,
        }
    ).encode()
    assert encode_marker("n", True, 1, "n-1", FailureClass.CANCELED, False, True) == expected
