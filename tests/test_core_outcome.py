"""Outcome (spec §5.2, Appendix C, AMBIG-9): status values, JSON round trip, strict reading."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import (
    CONTEXT_OUTCOME_KEYS,
    Outcome,
    StageStatus,
    StatusFileError,
    context_updates_after,
    is_success_like,
    passthrough_outcome,
    satisfies_goal_gate,
)
from attractor_trio.dot.conditions import STATUSES
from attractor_trio.errors import AttractorError


def test_stage_status_values_are_the_lowercase_file_strings() -> None:
    assert [s.value for s in StageStatus] == list(STATUSES)
    assert StageStatus("partial_success") is StageStatus.PARTIAL_SUCCESS
    assert isinstance(StageStatus.FAIL, str)
    assert str(StageStatus.FAIL) == "fail"


def test_outcome_defaults_and_status_conversion() -> None:
    outcome = Outcome("ok")  # alias accepted on construction
    assert outcome.status is StageStatus.SUCCESS
    assert (outcome.preferred_label, outcome.suggested_next_ids, outcome.context_updates) == (
        "",
        (),
        {},
    )
    assert Outcome(StageStatus.FAIL).status is StageStatus.FAIL
    with pytest.raises(ValueError, match="unknown stage status 'bogus'"):
        Outcome("bogus")


def test_outcome_copies_its_inputs() -> None:
    updates = {"k": 1}
    ids = ["a"]
    outcome = Outcome("success", suggested_next_ids=ids, context_updates=updates)
    updates["k"] = 2
    ids.append("b")
    assert outcome.context_updates == {"k": 1}
    assert outcome.suggested_next_ids == ("a",)


def test_to_json_writes_outcome_and_status_keys() -> None:
    outcome = Outcome(
        "retry",
        preferred_label="Fix",
        suggested_next_ids=["b"],
        context_updates={"x": [1]},
        notes="n",
        failure_reason="flaky",
        failure_class="transient_infra",
        failure_signature="sig",
    )
    assert outcome.to_json() == {
        "outcome": "retry",
        "status": "retry",
        "preferred_label": "Fix",
        "suggested_next_ids": ["b"],
        "context_updates": {"x": [1]},
        "notes": "n",
        "failure_reason": "flaky",
        "failure_class": "transient_infra",
        "failure_signature": "sig",
    }


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
outcomes = st.builds(
    Outcome,
    status=st.sampled_from(list(StageStatus)),
    preferred_label=st.text(max_size=10),
    suggested_next_ids=st.lists(st.text(max_size=5), max_size=3),
    context_updates=st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
    notes=st.text(max_size=10),
    failure_reason=st.text(max_size=10),
    failure_class=st.text(max_size=10),
    failure_signature=st.text(max_size=10),
)


@given(outcomes)
def test_json_round_trip(outcome: Outcome) -> None:
    document = json.loads(json.dumps(outcome.to_json()))
    assert Outcome.from_json(document) == outcome


@pytest.mark.parametrize(
    ("document", "status"),
    [
        ({"outcome": "success"}, StageStatus.SUCCESS),
        ({"status": "fail"}, StageStatus.FAIL),  # Kilroy's key
        ({"outcome": "FAILED"}, StageStatus.FAIL),  # alias, case-insensitive
        ({"outcome": "skip"}, StageStatus.SKIPPED),
        ({"outcome": "partial-success", "status": "partial_success"}, StageStatus.PARTIAL_SUCCESS),
        ({"outcome": None, "status": "retry"}, StageStatus.RETRY),
    ],
)
def test_from_json_accepts_either_key_and_aliases(
    document: dict[str, Any], status: StageStatus
) -> None:
    assert Outcome.from_json(document).status is status


def test_from_json_ignores_ownership_and_unknown_keys_and_null_fields() -> None:
    outcome = Outcome.from_json(
        {
            "outcome": "success",
            "run_id": "r1",
            "node_id": "a",
            "attempt_id": "a-1",
            "meta": {"x": 1},
            "notes": None,
            "suggested_next_ids": None,
            "context_updates": None,
        }
    )
    assert outcome == Outcome("success")


def test_from_json_reads_the_legacy_preferred_next_label() -> None:
    assert (
        Outcome.from_json({"outcome": "success", "preferred_next_label": "Go"}).preferred_label
        == "Go"
    )
    both = {"outcome": "success", "preferred_label": "A", "preferred_next_label": "B"}
    assert Outcome.from_json(both).preferred_label == "A"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], 'expected a JSON object like {"outcome": "success"}, got an array'),
        ("success", "got a string"),
        ({}, "missing 'outcome': add \"outcome\": one of success, partial_success"),
        ({"notes": "x"}, "missing 'outcome'"),
        ({"outcome": "all done"}, "unknown outcome 'all done': expected one of success"),
        ({"status": "yes!"}, "unknown status 'yes!'"),
        ({"outcome": 1}, "'outcome' must be a string, got a number (1)"),
        ({"outcome": True}, "'outcome' must be a string, got a boolean"),
        (
            {"outcome": "success", "status": "fail"},
            "'outcome' ('success') and 'status' ('fail') disagree",
        ),
        (
            {"outcome": "success", "suggested_next_ids": "b"},
            "'suggested_next_ids' must be a list of node id strings",
        ),
        (
            {"outcome": "success", "suggested_next_ids": ["a", 2]},
            "'suggested_next_ids' must be a list",
        ),
        ({"outcome": "success", "context_updates": []}, "'context_updates' must be an object"),
        ({"outcome": "success", "notes": 3}, "'notes' must be a string, got a number (3)"),
        (
            {"outcome": "success", "preferred_label": ["x"]},
            "'preferred_label' must be a string, got an array",
        ),
        (
            {"outcome": "fail", "failure_reason": {}},
            "'failure_reason' must be a string, got an object",
        ),
        ({"outcome": "fail", "failure_class": 0}, "'failure_class' must be a string"),
        ({"outcome": "fail", "failure_signature": False}, "'failure_signature' must be a string"),
    ],
)
def test_from_json_rejects_bad_documents_with_a_clear_message(
    document: object, message: str
) -> None:
    with pytest.raises(StatusFileError) as info:
        Outcome.from_json(document, source="run/a/status.json")
    assert isinstance(info.value, AttractorError)
    text = str(info.value)
    assert text.startswith("run/a/status.json: ")
    assert message in text


def test_plain_success_is_the_constructors_outcome() -> None:
    """The codergen handler's shortcut builds what the constructor builds: equal, with the
    same attributes in the same order (so pickles and copies agree), ``value`` included."""
    updates = {"last_stage": "a", "last_response": "text"}
    built = Outcome(StageStatus.SUCCESS, notes="Stage completed: a", context_updates=updates)
    quick = Outcome.plain_success("Stage completed: a", dict(updates))
    assert quick == built
    assert list(vars(quick).items()) == list(vars(built).items())
    assert quick.value == built.value == "success"
    assert quick.evolve(notes="x") == built.evolve(notes="x")


@pytest.mark.parametrize(
    ("outcome", "value"),
    [
        (Outcome(StageStatus.FAIL), "fail"),
        (Outcome("partial"), "partial_success"),
        (Outcome(StageStatus.SUCCESS, custom="Needs-DoD"), "needs_dod"),
        (Outcome(StageStatus.RETRY).evolve(status="success", custom="process"), "process"),
    ],
)
def test_value_is_worked_out_once_at_construction(outcome: Outcome, value: str) -> None:
    assert outcome.value == value
    assert vars(outcome)["value"] == value  # kept, not recomputed per read
    assert "value" not in {field.name for field in attrs.fields(Outcome)}  # not compared


def test_evolve_keeps_converters() -> None:
    assert Outcome("success").evolve(status="failure").status is StageStatus.FAIL


@pytest.mark.parametrize(
    ("status", "success_like", "gate"),
    [
        ("success", True, True),
        ("partial_success", True, True),
        ("skipped", True, False),  # AMBIG-12 / contract.md §5
        ("retry", False, False),
        ("fail", False, False),
    ],
)
def test_success_like_and_goal_gate_predicates(status: str, success_like: bool, gate: bool) -> None:
    for value in (status, StageStatus(status), Outcome(status)):
        assert is_success_like(value) is success_like
        assert satisfies_goal_gate(value) is gate


def test_context_updates_after_applies_stage_updates_then_builtins() -> None:
    outcome = Outcome(
        "fail",
        context_updates={"outcome": "success", "k": "v"},
        failure_reason="boom",
        failure_class="deterministic",
    )
    assert context_updates_after(outcome) == {
        "outcome": "fail",  # a stage cannot fake the engine's key
        "k": "v",
        "preferred_label": "",
        "failure_reason": "boom",
        "failure_class": "deterministic",
    }
    assert set(CONTEXT_OUTCOME_KEYS) <= set(context_updates_after(Outcome("success")))


def test_passthrough_outcome_re_emits_the_previous_stage() -> None:
    context = {
        "outcome": "fail",
        "preferred_label": "Fix",
        "failure_reason": "tests failed",
        "failure_class": "deterministic",
    }
    outcome = passthrough_outcome("gate", context)
    assert outcome == Outcome(
        "fail",
        preferred_label="Fix",
        notes="Conditional node evaluated: gate",
        failure_reason="tests failed",
        failure_class="deterministic",
    )


@pytest.mark.parametrize("previous", [None, "", "garbage", 3])
def test_passthrough_outcome_defaults_to_success(previous: object) -> None:
    context = {} if previous is None else {"outcome": previous, "failure_reason": 5}
    outcome = passthrough_outcome("gate", context)
    assert outcome.status is StageStatus.SUCCESS
    assert outcome.failure_reason == ""
