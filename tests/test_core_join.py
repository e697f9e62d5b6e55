"""Parallel join policies (contract.md §5/§9, spec S4.8-06..09, Kilroy's k_of_n/quorum/error_policy).

The table pins each policy x error policy on representative arrival orders, including the
order dependence of early decisions; the Hypothesis properties compare :class:`Join` with a
reference model written here from the contract's wording, independently of the implementation.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core.join import (
    BRANCH_STATUSES,
    ERROR_POLICIES,
    JOIN_POLICIES,
    Join,
    JoinConfig,
    JoinProtocolError,
    JoinResult,
)
from attractor_trio.core.outcome import StageStatus
from attractor_trio.dot.graph import Node
from attractor_trio.dot.values import AttributeValueError

S, P, K, F, R, C = "success", "partial_success", "skipped", "fail", "retry", "canceled"
SUCCESS, PARTIAL, FAIL = StageStatus.SUCCESS, StageStatus.PARTIAL_SUCCESS, StageStatus.FAIL


def feed(config: JoinConfig, statuses: list[str]) -> tuple[Join, int | None]:
    """Record ``b0, b1, ...`` in order; returns the join and how many records decided it."""
    join = Join(config)
    decided_after = None
    for index, status in enumerate(statuses):
        join.record(f"b{index}", status)
        if join.decided and decided_after is None:
            decided_after = index + 1
    return join, decided_after


# (policy, error_policy, extra config, statuses in arrival order, status, records that decided)
TABLE: list[tuple[str, str, dict[str, Any], list[str], StageStatus, int]] = [
    # wait_all: all failed → fail, some failed → partial, none failed → success (S4.8-06, §5).
    ("wait_all", "continue", {}, [S, S, S], SUCCESS, 3),
    ("wait_all", "continue", {}, [S, F, S], PARTIAL, 3),
    ("wait_all", "continue", {}, [F, F, F], FAIL, 3),
    ("wait_all", "continue", {}, [S, P, S], PARTIAL, 3),  # a partial branch leaves gaps
    ("wait_all", "continue", {}, [K, K, K], SUCCESS, 3),  # skipped is success-like
    ("wait_all", "continue", {}, [S, C, S], PARTIAL, 3),  # external cancel is a failure
    ("wait_all", "continue", {}, [C, C, F], FAIL, 3),
    ("wait_all", "continue", {}, [S, R, S], PARTIAL, 3),  # an unsettled retry did not succeed
    ("wait_all", "fail_fast", {}, [S, S, S], SUCCESS, 3),
    ("wait_all", "fail_fast", {}, [S, P, K], PARTIAL, 3),
    ("wait_all", "fail_fast", {}, [S, F, S], FAIL, 2),
    ("wait_all", "fail_fast", {}, [C, S, S], FAIL, 1),
    ("wait_all", "ignore", {}, [S, F, S], SUCCESS, 3),  # the failure is dropped from the join
    ("wait_all", "ignore", {}, [P, F, C], PARTIAL, 3),
    ("wait_all", "ignore", {}, [F, C, F], FAIL, 3),  # nothing left → fail
    # first_success (S4.8-07): decided at the first success-like branch.
    ("first_success", "continue", {}, [F, S, S], SUCCESS, 2),
    ("first_success", "continue", {}, [P, F, F], SUCCESS, 1),
    ("first_success", "continue", {}, [K, F, F], SUCCESS, 1),
    ("first_success", "continue", {}, [C, F, S], SUCCESS, 3),
    ("first_success", "continue", {}, [F, F, F], FAIL, 3),
    ("first_success", "fail_fast", {}, [S, F, F], SUCCESS, 1),
    ("first_success", "fail_fast", {}, [F, S, S], FAIL, 1),  # order decides
    ("first_success", "ignore", {}, [F, F, S], SUCCESS, 3),
    ("first_success", "ignore", {}, [F, C, F], FAIL, 3),
    # k_of_n: success once k succeeded, fail once k became impossible.
    ("k_of_n", "continue", {}, [F, S, F], SUCCESS, 2),  # k defaults to 1
    ("k_of_n", "continue", {"k": 2}, [S, S, F], SUCCESS, 2),
    ("k_of_n", "continue", {"k": 2}, [S, F, P], SUCCESS, 3),
    ("k_of_n", "continue", {"k": 2}, [F, C, S], FAIL, 2),
    ("k_of_n", "continue", {"k": 2}, [F, S, F], FAIL, 3),
    ("k_of_n", "continue", {"k": 3}, [F, S, S], FAIL, 1),
    ("k_of_n", "continue", {"k": 3}, [S, S, K], SUCCESS, 3),
    ("k_of_n", "fail_fast", {"k": 2}, [S, S, F], SUCCESS, 2),
    ("k_of_n", "fail_fast", {"k": 2}, [S, F, S], FAIL, 2),  # order decides
    ("k_of_n", "ignore", {"k": 2}, [F, S, S], SUCCESS, 3),
    ("k_of_n", "ignore", {"k": 2}, [F, F, S], FAIL, 2),
    # quorum: ceil(total * fraction) successes, default fraction 0.5.
    ("quorum", "continue", {}, [F, S, F, S], SUCCESS, 4),
    ("quorum", "continue", {}, [S, S, F, F], SUCCESS, 2),
    ("quorum", "continue", {}, [F, F, F, S], FAIL, 3),
    ("quorum", "continue", {"quorum_fraction": 0.75}, [S, S, F, S], SUCCESS, 4),
    ("quorum", "continue", {"quorum_fraction": 0.75}, [S, F, C, S], FAIL, 3),
    ("quorum", "fail_fast", {}, [S, C, S, S], FAIL, 2),
    ("quorum", "fail_fast", {}, [S, S, C, S], SUCCESS, 2),
    ("quorum", "ignore", {}, [F, S, F, S], SUCCESS, 4),
]


@pytest.mark.parametrize(
    ("policy", "error_policy", "extra", "statuses", "status", "decided_after"), TABLE
)
def test_join_table(
    policy: str,
    error_policy: str,
    extra: dict[str, Any],
    statuses: list[str],
    status: StageStatus,
    decided_after: int,
) -> None:
    config = JoinConfig(total=len(statuses), policy=policy, error_policy=error_policy, **extra)
    join, seen = feed(config, statuses)
    assert seen == decided_after
    result = join.result()
    assert result.status is status
    assert result.decided_early is (decided_after < len(statuses))


def test_the_table_covers_every_policy_pair() -> None:
    pairs = {(policy, error_policy) for policy, error_policy, *_ in TABLE}
    assert pairs == {(p, e) for p in JOIN_POLICIES for e in ERROR_POLICIES}


# --- configuration -------------------------------------------------------------------------


def test_defaults() -> None:
    config = JoinConfig(total=3)
    assert (config.policy, config.error_policy, config.k, config.quorum_fraction) == (
        "wait_all",
        "continue",
        None,
        0.5,
    )
    assert config.required is None  # wait_all has no success threshold


@pytest.mark.parametrize(
    ("extra", "total", "required"),
    [
        ({"policy": "first_success"}, 5, 1),
        ({"policy": "k_of_n"}, 5, 1),
        ({"policy": "k_of_n", "k": 4}, 5, 4),
        ({"policy": "quorum"}, 3, 2),
        ({"policy": "quorum"}, 4, 2),
        ({"policy": "quorum", "quorum_fraction": 1.0}, 7, 7),
        ({"policy": "quorum", "quorum_fraction": 0.01}, 3, 1),  # at least one
        ({"policy": "quorum", "quorum_fraction": 0.07}, 100, 7),  # 100 * 0.07 > 7 in floats
        ({"policy": "quorum", "quorum_fraction": 0.7}, 10, 7),
    ],
)
def test_required_successes(extra: dict[str, Any], total: int, required: int) -> None:
    assert JoinConfig(total=total, **extra).required == required


def test_policy_names_are_normalized() -> None:
    config = JoinConfig(total=2, policy=" First_Success ", error_policy="FAIL_FAST")
    assert (config.policy, config.error_policy) == ("first_success", "fail_fast")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"total": 3, "policy": "majority"},
            r"unknown join_policy 'majority'.*wait_all, first_success, k_of_n, quorum",
        ),
        (
            {"total": 3, "error_policy": "retry"},
            r"unknown error_policy 'retry'.*continue, fail_fast, ignore",
        ),
        ({"total": 0}, r"at least one branch"),
        (
            {"total": 3, "policy": "k_of_n", "k": 5},
            r"k=5 but the fan-out has 3 branches.*at most 3",
        ),
        ({"total": 3, "policy": "k_of_n", "k": 0}, r"k=0.*at least 1"),
        (
            {"total": 3, "policy": "quorum", "quorum_fraction": 0.0},
            r"quorum_fraction=0\.0.*greater than 0",
        ),
        (
            {"total": 3, "policy": "quorum", "quorum_fraction": 1.5},
            r"quorum_fraction=1\.5.*at most 1",
        ),
        ({"total": 3, "policy": "quorum", "quorum_fraction": math.nan}, r"quorum_fraction=nan"),
    ],
)
def test_invalid_configs_say_what_to_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JoinConfig(**kwargs)


def test_settings_of_other_policies_are_not_validated() -> None:
    # k and quorum_fraction only mean something to their own policy; a stale k on a
    # wait_all node must not break the run.
    assert JoinConfig(total=3, k=5, quorum_fraction=7.0).required is None


def test_for_node_reads_the_attributes() -> None:
    node = Node("fan", {"join_policy": "k_of_n", "error_policy": "fail_fast", "k": "2"})
    config = JoinConfig.for_node(node, total=3)
    assert config == JoinConfig(total=3, policy="k_of_n", error_policy="fail_fast", k=2)
    quorum = JoinConfig.for_node(Node("q", {"join_policy": "quorum", "quorum_fraction": "0.75"}), 4)
    assert quorum.required == 3
    assert JoinConfig.for_node(Node("plain"), 2) == JoinConfig(total=2)


def test_for_node_names_the_node_and_its_line() -> None:
    node = Node("fan", {"join_policy": "k_of_n", "k": "5"}, line=12, col=3)
    with pytest.raises(
        AttributeValueError, match=r"^node 'fan' at line 12:3: k=5 but the fan-out has 3"
    ):
        JoinConfig.for_node(node, total=3)
    with pytest.raises(AttributeValueError, match=r"^node 'odd': unknown join_policy 'most'"):
        JoinConfig.for_node(Node("odd", {"join_policy": "most"}), total=3)


# --- the recording protocol ------------------------------------------------------------------


def test_remaining_counts_down() -> None:
    join = Join(JoinConfig(total=3))
    assert (join.remaining, join.decided) == (3, False)
    join.record("a", S)
    join.record("b", F)
    assert (join.remaining, join.decided) == (1, False)
    join.record("c", S)
    assert (join.remaining, join.decided) == (0, True)


def test_recording_a_branch_twice_raises() -> None:
    join = Join(JoinConfig(total=3))
    join.record("a", S)
    with pytest.raises(JoinProtocolError, match=r"branch 'a' was already recorded"):
        join.record("a", F)
    assert join.remaining == 2


def test_recording_more_than_total_raises() -> None:
    join = Join(JoinConfig(total=1))
    join.record("a", S)
    with pytest.raises(JoinProtocolError, match=r"all 1 branches are already recorded.*'b'"):
        join.record("b", S)


def test_unknown_status_raises_and_changes_nothing() -> None:
    join = Join(JoinConfig(total=2, policy="first_success"))
    with pytest.raises(ValueError, match=r"branch 'a'.*unknown status 'exploded'.*canceled"):
        join.record("a", "exploded")
    assert (join.remaining, join.decided) == (2, False)
    join.record("a", S)  # the key is still free
    assert join.decided


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("cancelled", FAIL),
        (" Canceled ", FAIL),
        ("failure", FAIL),
        ("ok", SUCCESS),
        (StageStatus.SKIPPED, SUCCESS),
        (StageStatus.PARTIAL_SUCCESS, PARTIAL),
    ],
)
def test_status_spellings(status: str, outcome: StageStatus) -> None:
    join = Join(JoinConfig(total=1))
    join.record("a", status)
    assert join.result().status is outcome


def test_recorded_holds_canonical_statuses_in_arrival_order() -> None:
    join = Join(JoinConfig(total=3))
    join.record("z", "cancelled")
    join.record("a", "ok")
    recorded = join.recorded
    assert list(recorded.items()) == [("z", C), ("a", S)]
    assert join.config == JoinConfig(total=3)
    join.record("m", F)
    assert "m" not in recorded  # a copy, not a live view


def test_branch_statuses_are_the_accepted_canonical_names() -> None:
    assert set(BRANCH_STATUSES) == {S, P, K, F, R, C}


def test_result_before_the_decision_raises() -> None:
    join = Join(JoinConfig(total=2))
    join.record("a", S)
    with pytest.raises(JoinProtocolError, match=r"not decided.*1 of 2 branches"):
        join.result()


def test_losers_not_yet_recorded_count_as_canceled() -> None:
    join = Join(JoinConfig(total=4, policy="first_success"))
    join.record("a", F)
    join.record("b", S)
    assert (join.decided, join.remaining) == (True, 2)
    result = join.result()
    assert result == JoinResult(
        status=SUCCESS,
        success_count=1,
        failure_count=1,
        canceled_count=2,
        included=("a", "b"),
        reason="first_success: 1 of 4 branches succeeded (1 failed)",
        decided_early=True,
    )


def test_recording_the_losers_keeps_the_decision() -> None:
    join = Join(JoinConfig(total=4, policy="first_success"))
    join.record("a", S)
    join.record("b", C)  # canceled by us: a loser, not a failure
    join.record("c", F)  # finished before the cancel reached it
    join.record("d", S)  # likewise: its result is real, so the fan-in sees it
    result = join.result()
    assert result.status is SUCCESS
    assert (result.success_count, result.failure_count, result.canceled_count) == (2, 1, 1)
    assert result.included == ("a", "c", "d")
    assert result.reason == "first_success: 1 of 4 branches succeeded"
    assert result.decided_early


def test_fail_fast_cancels_siblings_and_names_the_failed_branch() -> None:
    join = Join(JoinConfig(total=3, error_policy="fail_fast"))
    join.record("lint", S)
    join.record("tests", F)
    assert (join.decided, join.remaining) == (True, 1)
    join.record("docs", C)
    result = join.result()
    assert result.status is FAIL
    assert result.reason == (
        "error_policy=fail_fast: branch 'tests' ended fail, so the join fails: "
        "1 of 3 branches succeeded (1 failed)"
    )
    assert (result.success_count, result.failure_count, result.canceled_count) == (1, 1, 1)
    assert result.included == ("lint", "tests")


def test_an_external_cancel_is_counted_as_canceled_and_included() -> None:
    join, _ = feed(JoinConfig(total=3), [S, C, F])
    result = join.result()
    assert (result.success_count, result.failure_count, result.canceled_count) == (1, 1, 1)
    assert result.included == ("b0", "b1", "b2")
    assert result.status is PARTIAL
    assert result.reason == "wait_all: 1 of 3 branches succeeded (1 failed, 1 canceled)"
    assert not result.decided_early


def test_ignore_drops_failures_from_included_but_counts_them() -> None:
    join, _ = feed(JoinConfig(total=4, error_policy="ignore"), [S, F, C, P])
    result = join.result()
    assert result.status is PARTIAL
    assert result.included == ("b0", "b3")
    assert (result.success_count, result.failure_count, result.canceled_count) == (2, 1, 1)


def test_ignore_with_nothing_left_fails_with_a_reason() -> None:
    join, _ = feed(JoinConfig(total=2, error_policy="ignore"), [F, F])
    result = join.result()
    assert result.status is FAIL
    assert result.included == ()
    assert result.reason == (
        "wait_all: 0 of 2 branches succeeded (2 failed); "
        "error_policy=ignore dropped every failed branch, nothing left to join"
    )


@pytest.mark.parametrize(
    ("config", "statuses", "reason"),
    [
        (
            JoinConfig(total=3, policy="first_success"),
            [F, C, F],
            "first_success: 0 of 3 branches succeeded (2 failed, 1 canceled)",
        ),
        (JoinConfig(total=3), [F, F, F], "wait_all: 0 of 3 branches succeeded (3 failed)"),
        (JoinConfig(total=3), [S, S, S], "wait_all: 3 of 3 branches succeeded"),
        (JoinConfig(total=3), [S, P, S], "wait_all: 3 of 3 branches succeeded (1 partially)"),
        (
            JoinConfig(total=4, policy="k_of_n", k=3),
            [F, F],
            "k_of_n: at most 2 of 4 branches can succeed (3 required; 2 failed)",
        ),
        (
            JoinConfig(total=3, policy="quorum"),
            [F, S, C],
            "quorum: 1 of 3 branches succeeded (2 required; 1 failed, 1 canceled)",
        ),
    ],
)
def test_reasons_name_the_policy_and_the_counts(
    config: JoinConfig, statuses: list[str], reason: str
) -> None:
    join, _ = feed(config, statuses)
    assert join.result().reason == reason


def test_the_decision_never_changes_after_it_is_made() -> None:
    join = Join(JoinConfig(total=3, policy="first_success"))
    join.record("a", S)
    before = join.result()
    join.record("b", F)
    join.record("c", F)
    after = join.result()
    assert (after.status, after.reason, after.decided_early) == (
        before.status,
        before.reason,
        before.decided_early,
    )


def test_a_decision_on_the_last_record_is_not_early() -> None:
    join, decided_after = feed(JoinConfig(total=3, policy="first_success"), [F, F, S])
    assert decided_after == 3
    assert not join.result().decided_early


def test_join_result_is_frozen() -> None:
    join, _ = feed(JoinConfig(total=1), [S])
    with pytest.raises(AttributeError):
        join.result().status = FAIL  # type: ignore[misc]


# --- properties against an independent reference model -------------------------------------

BAD = {F, R, C}
GOOD = {S, P, K}


def required_by_reference(policy: str, total: int, k: int | None, fraction: float) -> int:
    """Smallest success count meeting the threshold, by counting up (no ceil involved)."""
    if policy == "first_success":
        return 1
    if policy == "k_of_n":
        return 1 if k is None else k
    exact = Decimal(repr(fraction)) * total
    return next(n for n in range(1, total + 1) if n >= exact)


def reference_decision(
    policy: str, error_policy: str, total: int, need: int, statuses: list[str]
) -> tuple[int, StageStatus]:
    """The first prefix length that decides, and the status it decides (the contract's wording)."""
    for length in range(1, len(statuses) + 1):
        prefix = statuses[:length]
        left = total - length
        good = [s for s in prefix if s in GOOD]
        if error_policy == "fail_fast" and prefix[-1] in BAD:
            return length, FAIL
        if policy == "wait_all":
            if left:
                continue
            kept = good if error_policy == "ignore" else prefix
            if not good:
                return length, FAIL
            if len(kept) == len(good) and P not in good:
                return length, SUCCESS
            return length, PARTIAL
        if len(good) >= need:
            return length, SUCCESS
        if len(good) + left < need:
            return length, FAIL
    raise AssertionError("a fully recorded join is always decided")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[JoinConfig, list[str]]:
    total = draw(st.integers(1, 7))
    policy = draw(st.sampled_from(JOIN_POLICIES))
    error_policy = draw(st.sampled_from(ERROR_POLICIES))
    k = draw(st.none() | st.integers(1, total))
    fraction = draw(st.sampled_from([0.01, 0.1, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.7, 0.75, 1.0]))
    statuses = draw(st.lists(st.sampled_from(sorted(GOOD | BAD)), min_size=total, max_size=total))
    config = JoinConfig(
        total=total, policy=policy, error_policy=error_policy, k=k, quorum_fraction=fraction
    )
    return config, statuses


def need_of(config: JoinConfig) -> int:
    return required_by_reference(config.policy, config.total, config.k, config.quorum_fraction)


@given(scenarios())
def test_join_matches_the_reference_model(scenario: tuple[JoinConfig, list[str]]) -> None:
    config, statuses = scenario
    decided_at, status = reference_decision(
        config.policy, config.error_policy, config.total, need_of(config), statuses
    )
    join = Join(config)
    for index, branch_status in enumerate(statuses):
        join.record(f"b{index}", branch_status)
        assert join.decided is (index + 1 >= decided_at)  # never flips back
        if index + 1 == decided_at:
            snapshot = join.result()
            prefix = statuses[:decided_at]
            assert snapshot.status is status
            assert snapshot.success_count == sum(s in GOOD for s in prefix)
            assert snapshot.failure_count == sum(s in (F, R) for s in prefix)
            assert snapshot.canceled_count == prefix.count(C) + config.total - decided_at
    result = join.result()
    assert result.status is status
    assert result.decided_early is (decided_at < config.total)
    assert result.success_count == sum(s in GOOD for s in statuses)
    assert result.failure_count == sum(s in (F, R) for s in statuses)
    assert result.canceled_count == statuses.count(C)
    expected_included = tuple(
        f"b{i}"
        for i, s in enumerate(statuses)
        if not (config.error_policy == "ignore" and s in BAD) and not (s == C and i >= decided_at)
    )
    assert result.included == expected_included
    assert config.policy in result.reason or config.error_policy in result.reason


@given(scenarios(), st.randoms(use_true_random=False))
def test_wait_all_without_fail_fast_ignores_arrival_order(
    scenario: tuple[JoinConfig, list[str]], rng: Any
) -> None:
    config, statuses = scenario
    config = JoinConfig(
        total=config.total, error_policy=config.error_policy.replace("fail_fast", "continue")
    )
    shuffled = list(statuses)
    rng.shuffle(shuffled)
    first, _ = feed(config, statuses)
    second, _ = feed(config, shuffled)
    assert first.result().status is second.result().status
    assert first.result().reason == second.result().reason


@given(scenarios())
def test_required_matches_the_counting_reference(scenario: tuple[JoinConfig, list[str]]) -> None:
    config, _ = scenario
    if config.policy == "wait_all":
        assert config.required is None
    else:
        assert config.required == need_of(config)
