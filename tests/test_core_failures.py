"""Failure classes (CONTRACT §5): the vocabulary, explicit-hint aliases, retry blocking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import (
    FAILURE_CLASSES,
    RETRY_BLOCKING_CLASSES,
    Outcome,
    is_retry_blocked,
    normalize_failure_class,
)


def test_the_five_classes() -> None:
    assert FAILURE_CLASSES == (
        "transient_infra",
        "budget_exhausted",
        "deterministic",
        "structural",
        "canceled",
    )
    assert {"deterministic", "structural", "canceled"} == RETRY_BLOCKING_CLASSES


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("transient_infra", "transient_infra"),
        ("transient", "transient_infra"),
        ("infra", "transient_infra"),
        ("transient-infra", "transient_infra"),
        (" Transient Infra ", "transient_infra"),
        ("retryable", "transient_infra"),
        ("budget", "budget_exhausted"),
        ("budget_exhausted", "budget_exhausted"),
        ("Budget-Exhausted", "budget_exhausted"),
        ("deterministic", "deterministic"),
        ("permanent", "deterministic"),
        ("structural", "structural"),
        ("scope_violation", "structural"),
        ("canceled", "canceled"),
        ("cancelled", "canceled"),
        ("CANCELLED", "canceled"),
        ("", ""),
        ("   ", ""),
        ("flaky", ""),  # unknown → "" so the caller classifies the reason text instead
        ("transient_infra_x", ""),
    ],
)
def test_normalize_failure_class(hint: str, expected: str) -> None:
    assert normalize_failure_class(hint) == expected


@given(st.text(max_size=30))
def test_normalize_failure_class_is_total_and_idempotent(hint: str) -> None:
    result = normalize_failure_class(hint)
    assert result in (*FAILURE_CLASSES, "")
    assert normalize_failure_class(result) == result


@pytest.mark.parametrize(
    ("status", "failure_class", "blocked"),
    [
        ("fail", "deterministic", True),
        ("fail", "structural", True),
        ("fail", "canceled", True),
        ("retry", "deterministic", True),
        ("retry", "cancelled", True),  # aliases count
        ("fail", "permanent", True),
        ("fail", "transient_infra", False),
        ("fail", "budget_exhausted", False),
        ("fail", "", False),  # unhinted: retried (classification comes later)
        ("retry", "", False),
        ("success", "deterministic", False),
        ("partial_success", "canceled", False),
        ("skipped", "structural", False),
    ],
)
def test_is_retry_blocked(status: str, failure_class: str, blocked: bool) -> None:
    assert is_retry_blocked(Outcome(status, failure_class=failure_class)) is blocked
