"""Retry policy and decisions (spec §3.5-3.6, contract.md §5 + attempt-count rules, parity P-09)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import (
    PRESETS,
    BackoffConfig,
    Blocked,
    Done,
    Exhausted,
    Outcome,
    Retry,
    RetryPolicy,
    StageStatus,
    after_attempt,
    delay_for_attempt,
    policy_for,
)
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.dot.values import AttributeValueError

NO_JITTER = random.Random(0)


def nominal_delays_ms(name: str) -> list[float]:
    preset = PRESETS[name]
    backoff = BackoffConfig(
        preset.backoff.initial_delay_ms,
        preset.backoff.backoff_factor,
        preset.backoff.max_delay_ms,
        jitter=False,
    )
    return [
        round(delay_for_attempt(backoff, n, NO_JITTER) * 1000, 6)
        for n in range(1, preset.max_attempts + 1)
    ]


@pytest.mark.parametrize(
    ("name", "attempts", "delays"),
    [
        ("none", 1, [0.0]),
        ("standard", 5, [200, 400, 800, 1600, 3200]),
        ("aggressive", 5, [500, 1000, 2000, 4000, 8000]),
        ("linear", 3, [500, 500, 500]),
        ("patient", 3, [2000, 6000, 18000]),
    ],
)
def test_presets_match_the_spec_table(name: str, attempts: int, delays: list[float]) -> None:
    assert PRESETS[name].max_attempts == attempts
    assert nominal_delays_ms(name) == delays


def test_backoff_defaults() -> None:  # S3.6-02
    assert BackoffConfig() == BackoffConfig(200.0, 2.0, 60_000.0, True)


def test_delay_is_capped_and_survives_huge_attempts() -> None:
    backoff = BackoffConfig(
        initial_delay_ms=1000, backoff_factor=10, max_delay_ms=5000, jitter=False
    )
    assert delay_for_attempt(backoff, 3, NO_JITTER) == 5.0
    assert delay_for_attempt(backoff, 100_000, NO_JITTER) == 5.0


def test_delay_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        delay_for_attempt(BackoffConfig(), 0, NO_JITTER)


def test_policy_requires_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(0)


backoffs = st.builds(
    BackoffConfig,
    initial_delay_ms=st.floats(0, 10_000),
    backoff_factor=st.floats(1, 5),
    max_delay_ms=st.floats(0, 100_000),
    jitter=st.booleans(),
)


@given(backoffs, st.integers(1, 60), st.randoms(use_true_random=False))
def test_delay_bounds(backoff: BackoffConfig, attempt: int, rng: random.Random) -> None:
    nominal = min(
        backoff.initial_delay_ms * backoff.backoff_factor ** (attempt - 1), backoff.max_delay_ms
    )
    seconds = delay_for_attempt(backoff, attempt, rng)
    if backoff.jitter:
        assert 0.5 * nominal / 1000 - 1e-9 <= seconds <= 1.5 * nominal / 1000 + 1e-9
    else:
        assert seconds == pytest.approx(nominal / 1000)
    assert seconds <= 1.5 * backoff.max_delay_ms / 1000 + 1e-9


def test_jitter_is_driven_by_the_injected_rng() -> None:
    backoff = BackoffConfig()
    first = [delay_for_attempt(backoff, 2, random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1
    assert first[0] != delay_for_attempt(backoff, 2, random.Random(8))


# --- attempt count (contract.md §9 "More pinned details") ----------------------------------------


def policy(node_attrs: dict[str, str], graph_attrs: dict[str, str] | None = None) -> RetryPolicy:
    return policy_for(Node("n", node_attrs), Graph("g", graph_attrs or {}))


@pytest.mark.parametrize(
    ("node_attrs", "graph_attrs", "attempts", "preset"),
    [
        ({}, {}, 1, "standard"),  # spec default: 0 retries
        ({"max_retries": "3"}, {}, 4, "standard"),  # S3.5-02
        ({"max_retries": "0"}, {"default_max_retries": "5"}, 1, "standard"),
        ({}, {"default_max_retries": "2"}, 3, "standard"),
        ({}, {"default_max_retry": "2"}, 3, "standard"),  # legacy alias
        ({"retry_policy": "patient"}, {}, 3, "patient"),  # preset's count when explicit
        ({}, {"default_retry_policy": "aggressive"}, 5, "aggressive"),
        ({"retry_policy": "linear"}, {"default_retry_policy": "patient"}, 3, "linear"),
        ({"retry_policy": "patient", "max_retries": "1"}, {}, 2, "patient"),
        ({"retry_policy": "patient"}, {"default_max_retries": "0"}, 1, "patient"),
        ({"retry_policy": "none"}, {}, 1, "none"),
        ({"retry_policy": "none", "max_retries": "2"}, {}, 3, "none"),
        ({"retry_policy": " Linear "}, {}, 3, "linear"),
        ({"max_retries": "-4"}, {}, 1, "standard"),
    ],
)
def test_attempt_count_rules(
    node_attrs: dict[str, str], graph_attrs: dict[str, str], attempts: int, preset: str
) -> None:
    assert policy(node_attrs, graph_attrs) == RetryPolicy(attempts, PRESETS[preset].backoff)


def test_unknown_retry_policy_names_the_node_and_the_choices() -> None:
    with pytest.raises(AttributeValueError, match="node 'n': unknown retry policy 'eager'"):
        policy({"retry_policy": "eager"})
    with pytest.raises(AttributeValueError, match=r"graph 'g'.*none, standard, aggressive"):
        policy({}, {"default_retry_policy": "eager"})


# --- decisions -----------------------------------------------------------------------------

THREE = RetryPolicy(3)


@pytest.mark.parametrize("status", ["success", "partial_success", "skipped"])
def test_success_like_outcomes_are_done_as_is(status: str) -> None:
    outcome = Outcome(status, notes="n")
    assert after_attempt(outcome, 1, THREE, allow_partial=False) == Done(outcome)


@pytest.mark.parametrize("status", ["retry", "fail"])
def test_retry_and_fail_are_retried_while_attempts_remain(status: str) -> None:
    outcome = Outcome(status, failure_reason="flaky", failure_class="transient_infra")
    decision = after_attempt(outcome, 2, THREE, allow_partial=False)
    assert decision == Retry(2, outcome)
    assert isinstance(decision, Retry) and decision.next_attempt == 3


def test_p09_retry_on_failure_with_max_retries_2() -> None:
    node_policy = policy({"max_retries": "2"})
    assert node_policy.max_attempts == 3
    failure = Outcome("fail", failure_reason="exit code 1")
    decisions = [after_attempt(failure, n, node_policy, allow_partial=False) for n in (1, 2, 3)]
    assert decisions == [Retry(1, failure), Retry(2, failure), Exhausted(failure)]
    assert after_attempt(Outcome("success"), 3, node_policy, False) == Done(Outcome("success"))


def test_exhausted_fail_keeps_its_raw_reason_and_class() -> None:
    failure = Outcome("fail", failure_reason="ENOENT: x.py", failure_class="transient_infra")
    assert after_attempt(failure, 3, THREE, allow_partial=True) == Exhausted(failure)


def test_exhausted_retry_becomes_fail_max_retries_exceeded() -> None:
    decision = after_attempt(Outcome("retry", context_updates={"k": 1}), 3, THREE, False)
    assert decision == Exhausted(
        Outcome(
            "fail",
            context_updates={"k": 1},
            failure_reason="max retries exceeded",
            notes="max retries exceeded",
        )
    )


def test_exhausted_retry_keeps_a_reason_it_had() -> None:
    retry = Outcome("retry", failure_reason="human gate timeout, no default")
    decision = after_attempt(retry, 1, RetryPolicy(1), False)
    assert isinstance(decision, Exhausted)
    assert decision.outcome.status is StageStatus.FAIL
    assert decision.outcome.failure_reason == "human gate timeout, no default"


def test_exhausted_retry_with_allow_partial_is_partial_success() -> None:
    decision = after_attempt(Outcome("retry", preferred_label="x"), 3, THREE, allow_partial=True)
    assert decision == Exhausted(
        Outcome("partial_success", preferred_label="x", notes="retries exhausted, partial accepted")
    )


def test_attempts_beyond_the_limit_are_exhausted() -> None:
    assert isinstance(after_attempt(Outcome("fail"), 7, THREE, False), Exhausted)


@pytest.mark.parametrize("failure_class", ["deterministic", "structural", "canceled", "cancelled"])
def test_blocked_classes_are_never_retried(failure_class: str) -> None:
    failure = Outcome("fail", failure_reason="401 unauthorized", failure_class=failure_class)
    assert after_attempt(failure, 1, THREE, allow_partial=False) == Blocked(failure)


def test_blocked_retry_is_settled_like_an_exhausted_one() -> None:
    retry = Outcome("retry", failure_reason="bad input", failure_class="deterministic")
    decision = after_attempt(retry, 1, THREE, allow_partial=False)
    assert isinstance(decision, Blocked)
    assert decision.outcome.status is StageStatus.FAIL
    assert decision.outcome.failure_reason == "bad input"
    assert decision.outcome.failure_class == "deterministic"
    partial = after_attempt(retry, 1, THREE, allow_partial=True)
    assert isinstance(partial, Blocked)
    assert partial.outcome.status is StageStatus.PARTIAL_SUCCESS


@given(
    st.sampled_from(list(StageStatus)),
    st.sampled_from(["", "transient_infra", "budget_exhausted", "deterministic", "canceled"]),
    st.integers(1, 6),
    st.integers(1, 6),
    st.booleans(),
)
def test_decision_invariants(
    status: StageStatus, failure_class: str, attempt: int, max_attempts: int, allow_partial: bool
) -> None:
    outcome = Outcome(status, failure_reason="why", failure_class=failure_class)
    decision = after_attempt(outcome, attempt, RetryPolicy(max_attempts), allow_partial)
    if isinstance(decision, Retry):
        assert attempt < max_attempts
        assert status in (StageStatus.RETRY, StageStatus.FAIL)
    else:
        final = decision.outcome
        assert final.status is not StageStatus.RETRY  # nothing leaves the loop as "retry"
        if final.status is StageStatus.FAIL:
            assert final.failure_reason == "why"  # the raw cause survives
