"""Cycle breaker, visit limit and loop-restart gate (contract.md §5, §9; Kilroy parity, seed task 6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core.cycles import (
    CycleBreaker,
    CycleTrip,
    LoopRestartGate,
    RestartAllowed,
    RestartBlocked,
    RestartTripped,
    VisitLimit,
)
from attractor_trio.core.failures import failure_signature
from attractor_trio.core.outcome import Outcome


def failing(reason: str, failure_class: str = "", status: str = "fail") -> Outcome:
    return Outcome(status, failure_reason=reason, failure_class=failure_class)


def varying_reason(visit: int) -> str:
    """The same failure, with a count and a commit id that change on every visit."""
    return f"pytest: {visit + 2} tests failed at commit {visit:04d}abcdef{visit}"


# --- CycleBreaker ---------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=8))
def test_trips_exactly_at_the_limit_although_numbers_and_hex_differ(limit: int) -> None:
    breaker = CycleBreaker(limit)
    decisions = [breaker.observe("test", failing(varying_reason(v))) for v in range(limit)]
    assert decisions[:-1] == [None] * (limit - 1)
    trip = decisions[-1]
    assert isinstance(trip, CycleTrip)
    signature = failure_signature("test", "deterministic", varying_reason(0))
    assert trip.signature == signature
    assert (trip.node_id, trip.count, trip.limit) == ("test", limit, limit)
    assert trip.failure_reason == varying_reason(limit - 1)  # the raw, causal reason
    assert trip.failure_class == "deterministic"
    assert breaker.counts == {signature: limit}


def test_a_tripped_signature_trips_again() -> None:
    """A branch stopped by the breaker can be re-entered by the main traversal: stop it again."""
    breaker = CycleBreaker(2)
    assert breaker.observe("a", failing("boom")) is None
    assert breaker.observe("a", failing("boom")) is not None
    trip = breaker.observe("a", failing("boom"))
    assert trip is not None and trip.count == 3
    assert breaker.counts == {"a|deterministic|boom": 3}


def test_signatures_are_counted_separately() -> None:
    breaker = CycleBreaker(2)
    assert breaker.observe("a", failing("boom")) is None
    assert breaker.observe("b", failing("boom")) is None  # other node
    assert breaker.observe("a", failing("bang")) is None  # other reason
    assert breaker.observe("a", failing("boom", "structural")) is None  # other class
    assert breaker.observe("a", failing("boom")) is not None


@pytest.mark.parametrize(
    "outcome",
    [
        failing("connection reset by peer"),  # unhinted, classified transient
        failing("exit code 1", "transient_infra"),
        failing("exit code 1", "budget_exhausted"),
        failing("context length exceeded"),
        failing("exit code 1", "canceled"),
        Outcome("success"),
        Outcome("partial_success", failure_class="deterministic"),
        Outcome("skipped"),
    ],
)
def test_only_deterministic_and_structural_failures_count(outcome: Outcome) -> None:
    breaker = CycleBreaker(1)
    assert breaker.observe("n", outcome) is None
    assert breaker.counts == {}


@given(st.sampled_from(["timed out", "429 Too Many Requests", "503 Service Unavailable"]))
def test_never_trips_for_transient_reasons(reason: str) -> None:
    breaker = CycleBreaker(2)
    for visit in range(10):
        assert breaker.observe("n", failing(f"{reason} (visit {visit})")) is None


@pytest.mark.parametrize("status", ["fail", "retry"])
@pytest.mark.parametrize("failure_class", ["", "deterministic", "permanent", "structural"])
def test_counting_outcomes(status: str, failure_class: str) -> None:
    assert CycleBreaker(1).observe("n", failing("bad", failure_class, status)) is not None


@given(st.integers(min_value=1, max_value=6), st.data())
def test_counts_survive_a_checkpoint_round_trip(limit: int, data: st.DataObject) -> None:
    """Resume: a breaker rebuilt from the checkpoint trips where the original would have."""
    before_crash = data.draw(st.integers(min_value=0, max_value=limit - 1))
    first = CycleBreaker(limit)
    for visit in range(before_crash):
        assert first.observe("n", failing(varying_reason(visit))) is None
    snapshot = first.counts
    resumed = CycleBreaker(limit, snapshot)
    decisions = [
        resumed.observe("n", failing(varying_reason(v))) for v in range(limit - before_crash)
    ]
    assert decisions[:-1] == [None] * (limit - before_crash - 1)
    assert isinstance(decisions[-1], CycleTrip)
    assert decisions[-1].count == limit


def test_counts_are_copies() -> None:
    initial = {"n|deterministic|bad": 1}
    breaker = CycleBreaker(5, initial)
    breaker.observe("n", failing("bad"))
    assert initial == {"n|deterministic|bad": 1}
    breaker.counts["n|deterministic|bad"] = 0
    assert breaker.counts == {"n|deterministic|bad": 2}


def test_a_restored_count_at_or_over_the_limit_trips_on_the_next_failure() -> None:
    """E.g. the limit was lowered between the crash and the resume."""
    breaker = CycleBreaker(2, {"n|deterministic|bad": 5})
    trip = breaker.observe("n", failing("bad"))
    assert trip is not None
    assert trip.count == 6


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_of_zero_or_less_disables_the_breaker(limit: int) -> None:
    breaker = CycleBreaker(limit)
    for _ in range(5):
        assert breaker.observe("n", failing("bad")) is None
    assert breaker.counts == {}


def test_trip_event_fields_and_summary() -> None:
    trip = CycleBreaker(1).observe("build", failing("exit code 2"))
    assert trip is not None
    assert trip.event_fields("par/branch_a") == {
        "node_id": "build",
        "signature": "build|deterministic|exit code <n>",
        "count": 1,
        "limit": 1,
        "scope": "par/branch_a",
    }
    assert trip.summary == (
        "failure cycle: signature 'build|deterministic|exit code <n>' repeated 1 times (limit 1)"
    )


# --- VisitLimit -----------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=50))
def test_max_node_visits_allows_n_visits_and_aborts_visit_n_plus_1(limit: int) -> None:
    visit_limit = VisitLimit(limit)
    assert all(visit_limit.check("n", visit) for visit in range(1, limit + 1))
    assert not visit_limit.check("n", limit + 1)


@pytest.mark.parametrize("limit", [None, 0, -3])
def test_no_visit_limit(limit: int | None) -> None:
    assert VisitLimit(limit).check("n", 10**6)


def test_visit_limit_message_names_node_visits_and_limit() -> None:
    assert VisitLimit(3).message("loop", 4) == (
        "node 'loop' would be visited 4 times; max_node_visits=3"
    )


# --- LoopRestartGate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome("success"), RestartAllowed),
        (Outcome("partial_success"), RestartAllowed),
        (Outcome("skipped"), RestartAllowed),
        (failing("connection reset by peer"), RestartAllowed),
        (failing("exit 1", "transient_infra"), RestartAllowed),
        (failing("exit 1", "retryable", "retry"), RestartAllowed),
        (failing("exit 1"), RestartBlocked),
        (failing("timed out", "deterministic"), RestartBlocked),
        (failing("exit 1", "structural"), RestartBlocked),
        (failing("context length exceeded"), RestartBlocked),
        (failing("exit 1", "budget_exhausted"), RestartBlocked),
        (failing("exit 1", "canceled"), RestartBlocked),
    ],
)
def test_loop_restart_gate_table(outcome: Outcome, expected: type) -> None:
    assert isinstance(LoopRestartGate(3).check("n", outcome), expected)


def test_blocked_restart_names_node_class_and_reason() -> None:
    decision = LoopRestartGate(3).check("impl", failing("tests failed: 3"))
    assert decision == RestartBlocked("impl", "deterministic", "tests failed: 3")
    assert decision.reason == (
        "loop_restart from node 'impl' blocked: failure_class=deterministic "
        "(only success or transient_infra failures may restart the run): tests failed: 3"
    )


@given(st.integers(min_value=1, max_value=6))
def test_restart_circuit_breaker_trips_at_the_limit(limit: int) -> None:
    gate = LoopRestartGate(limit)
    decisions = [gate.check("fetch", failing(f"timed out after {v} seconds")) for v in range(limit)]
    assert all(isinstance(d, RestartAllowed) for d in decisions[:-1])
    signature = "fetch|transient_infra|timed out after <n> seconds"
    assert decisions[-1] == RestartTripped(
        "fetch", signature, limit, limit, f"timed out after {limit - 1} seconds", "transient_infra"
    )
    assert gate.counts == {signature: limit}


def test_success_restarts_are_not_counted() -> None:
    gate = LoopRestartGate(1)
    for _ in range(5):
        assert gate.check("n", Outcome("success")) == RestartAllowed()
    assert gate.counts == {}


def test_restart_counts_survive_resume_and_are_copies() -> None:
    gate = LoopRestartGate(3)
    gate.check("n", failing("timed out"))
    gate.check("n", failing("timed out"))
    snapshot = gate.counts
    snapshot["n|transient_infra|timed out"] = 0
    resumed = LoopRestartGate(3, gate.counts)
    assert isinstance(resumed.check("n", failing("timed out")), RestartTripped)


@pytest.mark.parametrize("limit", [0, -1])
def test_restart_breaker_disabled_by_a_limit_of_zero_or_less(limit: int) -> None:
    gate = LoopRestartGate(limit)
    for _ in range(5):
        assert gate.check("n", failing("timed out")) == RestartAllowed()
    assert gate.check("n", failing("exit 1")) == RestartBlocked("n", "deterministic", "exit 1")
    assert gate.counts == {}
