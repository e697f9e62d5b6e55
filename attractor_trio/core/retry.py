"""Retry accounting (spec §3.5 and §3.6, contract.md §5): how many attempts, how long between them,
and what to do after each attempt — as data, so the engine only executes the decision.

Attempt count (contract.md §9 "More pinned details"): ``max_retries + 1`` when the node's
``max_retries`` (else the graph's ``default_max_retries``) is present; else the preset's count
when ``retry_policy``/``default_retry_policy`` is set explicitly; else one attempt. Delays come
from the preset named by ``retry_policy`` → ``default_retry_policy`` → ``standard``.

Both ``retry`` and ``fail`` are retried while attempts remain (AMBIG-3, DoD 11.5), except
failures whose class says a retry cannot help (:func:`~.failures.is_retry_blocked`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from attrs import field, frozen

from ..dot.graph import Graph, Node
from ..dot.values import AttributeValueError
from .failures import is_retry_blocked
from .outcome import Outcome, StageStatus, is_success_like

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "BackoffConfig",
    "Blocked",
    "Done",
    "Exhausted",
    "Retry",
    "RetryDecision",
    "RetryPolicy",
    "after_attempt",
    "delay_for_attempt",
    "policy_for",
    "preset_named",
]


@frozen
class BackoffConfig:
    """Spec S3.6-02: exponential backoff in milliseconds, optionally jittered."""

    initial_delay_ms: float = 200.0
    backoff_factor: float = 2.0
    max_delay_ms: float = 60_000.0
    jitter: bool = True


def _at_least_one(_instance: object, _attribute: object, value: int) -> None:
    if value < 1:
        raise ValueError(f"max_attempts must be at least 1, got {value}")


@frozen
class RetryPolicy:
    """Spec S3.6-01 without ``should_retry``: which failures retry is decided by class."""

    max_attempts: int = field(validator=_at_least_one)
    backoff: BackoffConfig = BackoffConfig()


DEFAULT_PRESET = "standard"

#: Spec S3.6-04..08; "Max Attempts" is the attempt count (AMBIG-11).
PRESETS: Mapping[str, RetryPolicy] = {
    "none": RetryPolicy(1, BackoffConfig(initial_delay_ms=0.0, backoff_factor=1.0, jitter=False)),
    "standard": RetryPolicy(5, BackoffConfig(initial_delay_ms=200.0, backoff_factor=2.0)),
    "aggressive": RetryPolicy(5, BackoffConfig(initial_delay_ms=500.0, backoff_factor=2.0)),
    "linear": RetryPolicy(3, BackoffConfig(initial_delay_ms=500.0, backoff_factor=1.0)),
    "patient": RetryPolicy(3, BackoffConfig(initial_delay_ms=2000.0, backoff_factor=3.0)),
}


def delay_for_attempt(backoff: BackoffConfig, attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed ``attempt`` (1-based), spec S3.6-03.

    ``initial * factor^(attempt-1)``, capped at ``max_delay_ms``, then (with jitter) scaled by
    ``U(0.5, 1.5)`` — so a jittered delay may reach 1.5 times the cap, as the spec orders it.
    ``rng`` is injected so tests and fuzzing replay exact schedules.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    try:
        raw = backoff.initial_delay_ms * backoff.backoff_factor ** (attempt - 1)
    except OverflowError:
        raw = backoff.max_delay_ms
    millis = min(raw, backoff.max_delay_ms)
    if backoff.jitter:
        millis *= rng.uniform(0.5, 1.5)
    return max(millis, 0.0) / 1000.0


def preset_named(name: str, *, where: str = "") -> RetryPolicy:
    """The preset for ``name`` (case-insensitive); an unknown name says which ones exist."""
    preset = PRESETS.get(name.strip().lower())
    if preset is None:
        prefix = f"{where}: " if where else ""
        raise AttributeValueError(
            f"{prefix}unknown retry policy {name!r}: expected one of {', '.join(PRESETS)}"
        )
    return preset


def policy_for(node: Node, graph: Graph) -> RetryPolicy:
    """The node's effective policy; see the module docstring for the precedence."""
    explicit_name = node.retry_policy or graph.default_retry_policy
    where = f"node '{node.id}'" if node.retry_policy else f"graph '{graph.name}'"
    preset = preset_named(explicit_name or DEFAULT_PRESET, where=where)
    max_retries = node.max_retries if node.max_retries is not None else graph.default_max_retries
    if max_retries is not None:
        attempts = max(max_retries, 0) + 1
    elif explicit_name:
        attempts = preset.max_attempts
    else:
        attempts = 1
    return RetryPolicy(attempts, preset.backoff)


@frozen
class Done:
    """The attempt succeeded (``success``/``partial_success``/``skipped``): use ``outcome``."""

    outcome: Outcome


@frozen
class Retry:
    """Wait ``delay_for_attempt(policy.backoff, delay_attempt, rng)``, then run attempt+1."""

    delay_attempt: int
    outcome: Outcome

    @property
    def next_attempt(self) -> int:
        return self.delay_attempt + 1


@frozen
class Blocked:
    """Not retried because of its failure class; the engine emits ``stage_retry_blocked``.

    ``outcome`` is final: a blocked ``retry`` has already been settled like an exhausted one.
    """

    outcome: Outcome


@frozen
class Exhausted:
    """No attempts left; ``outcome`` is the stage's final outcome."""

    outcome: Outcome


RetryDecision = Done | Retry | Blocked | Exhausted


def after_attempt(
    outcome: Outcome, attempt: int, policy: RetryPolicy, allow_partial: bool
) -> RetryDecision:
    """Decide what follows attempt number ``attempt`` (1-based) that produced ``outcome``."""
    if is_success_like(outcome):
        return Done(outcome)
    if is_retry_blocked(outcome):
        return Blocked(_settle(outcome, allow_partial))
    if attempt < policy.max_attempts:
        return Retry(attempt, outcome)
    return Exhausted(_settle(outcome, allow_partial))


def _settle(outcome: Outcome, allow_partial: bool) -> Outcome:
    """The final form of a ``retry``/``fail`` outcome that will not be attempted again.

    ``retry`` becomes ``partial_success`` under ``allow_partial`` (S3.5-06), else ``fail``.
    A ``fail`` stays as it is. The stage's own ``failure_reason`` and class always survive
    (contract.md §5: final.json carries the causal reason, never a generic wrapper); the spec's
    ``max retries exceeded`` is the reason only when the stage gave none.
    """
    if outcome.status is not StageStatus.RETRY:
        return outcome
    if allow_partial:
        return outcome.evolve(
            status=StageStatus.PARTIAL_SUCCESS, notes="retries exhausted, partial accepted"
        )
    return outcome.evolve(
        status=StageStatus.FAIL,
        failure_reason=outcome.failure_reason or "max retries exceeded",
        notes="max retries exceeded",
    )
