"""Parallel fan-out join (contract.md §5/§9, spec S4.8-06..09, Kilroy's ``k_of_n``/``quorum``/
``error_policy``): a sans-IO state machine the parallel handler feeds as branches finish.

The handler owns the tasks; :class:`Join` only says when the outcome is known and what it is,
so every rule is testable without an event loop.

Protocol (one, explicit):

1. Build ``Join(JoinConfig(...))`` with ``total`` = the number of branches (≥ 1; a fan-out
   without branches is the caller's case).
2. :meth:`Join.record` every branch exactly once, when it ends: ``success``,
   ``partial_success``, ``skipped``, ``fail`` (``retry`` counts as ``fail``: a branch that
   still wanted a retry did not succeed) or ``canceled``.
3. Once :attr:`Join.decided` is true while :attr:`Join.remaining` > 0, cancel the branches
   still running. Each of them may then be recorded (as ``canceled``, or as whatever it
   finished with before the cancel reached it) — or not at all.
4. :meth:`Join.result` is valid as soon as ``decided``. Branches not recorded by then are
   reported as canceled losers; recording them later refines the counts, never the decision.

Classification:

* ``success``, ``partial_success`` and ``skipped`` are success-like: each counts towards
  ``first_success``/``k_of_n``/``quorum``. Under ``wait_all`` a ``partial_success`` branch
  makes the join ``partial_success`` (it has gaps), like a failed one does.
* ``canceled`` recorded *before* the decision is an external or branch-timeout cancel: it is a
  failure for the join. Recorded *after* the decision it is a loser we canceled: no failure,
  and not part of ``included``. Either way it is counted in ``canceled_count`` only, so
  ``success_count + failure_count + canceled_count == total``.
* ``fail_fast`` decides ``fail`` at the first failure (``fail``, ``retry``, or a pre-decision
  ``canceled``) under every join policy; ``continue`` lets failures decide nothing by
  themselves; ``ignore`` drops failed branches from ``included`` and from ``wait_all``'s
  status (nothing left → ``fail``) but they still count in ``failure_count``. Thresholds are
  always over ``total``: a dropped failure cannot make ``k`` or a quorum smaller.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TypeVar

from attrs import evolve, field, frozen

from ..dot.conditions import canonical_status
from ..dot.graph import Node
from ..dot.values import AttributeValueError
from .outcome import StageStatus

__all__ = [
    "BRANCH_STATUSES",
    "ERROR_POLICIES",
    "JOIN_POLICIES",
    "Join",
    "JoinConfig",
    "JoinProtocolError",
    "JoinResult",
]

JOIN_POLICIES = ("wait_all", "first_success", "k_of_n", "quorum")
ERROR_POLICIES = ("continue", "fail_fast", "ignore")
#: What :meth:`Join.record` accepts, canonically (aliases such as ``failed`` or ``cancelled`` too).
BRANCH_STATUSES = ("success", "partial_success", "skipped", "fail", "retry", "canceled")

_T = TypeVar("_T")


class JoinProtocolError(RuntimeError):
    """The caller broke the recording protocol: a bug in the parallel handler, not user input."""


def _policy_name(value: str) -> str:
    return value.strip().lower()


@frozen(kw_only=True)
class JoinConfig:
    """How a fan-out of ``total`` branches is joined; invalid settings raise at construction.

    ``k`` and ``quorum_fraction`` are validated only under the policy that reads them, so a
    leftover ``k`` on a ``wait_all`` node does not break a run. Errors are
    :class:`~..dot.values.AttributeValueError` (a ``ValueError``) saying what to change.
    """

    total: int
    policy: str = field(default="wait_all", converter=_policy_name)
    error_policy: str = field(default="continue", converter=_policy_name)
    k: int | None = None
    quorum_fraction: float = 0.5

    def __attrs_post_init__(self) -> None:
        problem = _config_problem(self)
        if problem:
            raise AttributeValueError(problem)

    @property
    def may_decide_early(self) -> bool:
        """Whether the join can be decided while branches still run (:func:`_decide`): only a
        threshold policy or ``fail_fast`` ever leaves losers to cancel. ``wait_all`` under
        ``continue``/``ignore`` decides when the last branch is recorded, so its branches need
        no cancel scope of their own (``handlers/parallel.py``)."""
        return self.policy != "wait_all" or self.error_policy == "fail_fast"

    @property
    def required(self) -> int | None:
        """Successes needed for ``success``; ``None`` for ``wait_all``, which has no threshold.

        The quorum is ``ceil(total * fraction)`` over the fraction's decimal spelling, so
        ``0.07`` of 100 branches is 7 even though ``100 * 0.07`` is ``7.000…01`` in floats.
        """
        if self.policy == "wait_all":
            return None
        if self.policy == "first_success":
            return 1
        if self.policy == "k_of_n":
            return 1 if self.k is None else self.k
        return max(1, math.ceil(Decimal(repr(self.quorum_fraction)) * self.total))

    @classmethod
    def for_node(cls, node: Node, total: int) -> JoinConfig:
        """The config a parallel node's attributes ask for; errors name the node (and line)."""
        where = f"node '{node.id}'" + (f" at line {node.line}:{node.col}" if node.line else "")
        try:
            policy = _policy_name(node.join_policy)
            return cls(
                total=total,
                policy=policy,
                error_policy=node.error_policy,
                k=_attribute("k", lambda: node.k) if policy == "k_of_n" else None,
                quorum_fraction=(
                    _attribute("quorum_fraction", lambda: node.quorum_fraction)
                    if policy == "quorum"
                    else 0.5
                ),
            )
        except AttributeValueError as exc:
            raise AttributeValueError(f"{where}: {exc}") from None


def _attribute(name: str, read: Callable[[], _T]) -> _T:
    try:
        return read()
    except AttributeValueError as exc:
        raise AttributeValueError(f"{name}: {exc}") from None


def _config_problem(config: JoinConfig) -> str:
    if config.policy not in JOIN_POLICIES:
        return f"unknown join_policy {config.policy!r}: expected one of {', '.join(JOIN_POLICIES)}"
    if config.error_policy not in ERROR_POLICIES:
        return (
            f"unknown error_policy {config.error_policy!r}: "
            f"expected one of {', '.join(ERROR_POLICIES)}"
        )
    if config.total < 1:
        return f"a join needs at least one branch, got total={config.total}"
    if config.policy == "k_of_n" and config.k is not None:
        if config.k < 1:
            return f"k={config.k} is invalid: join_policy=k_of_n needs k of at least 1"
        if config.k > config.total:
            return (
                f"k={config.k} but the fan-out has {config.total} branches: "
                f"set k to at most {config.total}, or add branches"
            )
    fraction = config.quorum_fraction
    if config.policy == "quorum" and not (math.isfinite(fraction) and 0 < fraction <= 1):
        return (
            f"quorum_fraction={fraction} is invalid: it must be greater than 0 and at most 1 "
            "(e.g. 0.5 for half of the branches)"
        )
    return ""


@frozen
class JoinResult:
    """The joined outcome. ``included`` lists, in arrival order, the branches the fan-in sees."""

    status: StageStatus
    success_count: int
    failure_count: int
    canceled_count: int
    included: tuple[str, ...]
    reason: str
    decided_early: bool


class _Kind(enum.Enum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELED = "canceled"


_KIND_OF = {
    "success": _Kind.SUCCESS,
    "skipped": _Kind.SUCCESS,
    "partial_success": _Kind.PARTIAL,
    "fail": _Kind.FAILED,
    "retry": _Kind.FAILED,
    "canceled": _Kind.CANCELED,
}
_FAILING = (_Kind.FAILED, _Kind.CANCELED)


def _branch_status(key: str, status: str) -> str:
    lowered = str(status).strip().lower()
    if lowered in ("canceled", "cancelled"):
        return "canceled"
    canonical = canonical_status(lowered)
    if canonical is None:
        raise ValueError(
            f"branch {key!r} finished with unknown status {status!r}: "
            f"expected one of {', '.join(BRANCH_STATUSES)}"
        )
    return canonical


@frozen
class _Tally:
    success: int = 0
    partial: int = 0
    failed: int = 0
    canceled: int = 0

    @property
    def succeeded(self) -> int:
        return self.success + self.partial

    @property
    def failing(self) -> int:
        return self.failed + self.canceled

    def plus(self, kind: _Kind) -> _Tally:
        # Each kind's value names its counter.
        return evolve(self, **{kind.value: getattr(self, kind.value) + 1})


@frozen
class _Decision:
    status: StageStatus
    reason: str
    early: bool


class Join:
    """Feed it branch endings with :meth:`record`; read :attr:`decided` and :meth:`result`.

    See the module docstring for the protocol. Once decided, the decision never changes.
    """

    def __init__(self, config: JoinConfig) -> None:
        self._config = config
        self._statuses: dict[str, str] = {}  # insertion order is arrival order
        self._losers: set[str] = set()
        self._tally = _Tally()
        self._decision: _Decision | None = None

    @property
    def config(self) -> JoinConfig:
        return self._config

    @property
    def decided(self) -> bool:
        """The outcome is known; with branches :attr:`remaining`, the caller cancels them."""
        return self._decision is not None

    @property
    def remaining(self) -> int:
        """Branches not recorded yet."""
        return self._config.total - len(self._statuses)

    @property
    def recorded(self) -> Mapping[str, str]:
        """Canonical status of every recorded branch, in arrival order (a copy)."""
        return dict(self._statuses)

    def record(self, key: str, status: str) -> None:
        """Branch ``key`` ended with ``status``; a rejected call leaves the join unchanged."""
        if key in self._statuses:
            raise JoinProtocolError(
                f"branch {key!r} was already recorded as {self._statuses[key]}: "
                "record each branch exactly once"
            )
        if self.remaining == 0:
            raise JoinProtocolError(
                f"all {self._config.total} branches are already recorded; cannot record {key!r}"
            )
        canonical = _branch_status(key, status)
        kind = _KIND_OF[canonical]
        self._statuses[key] = canonical
        self._tally = self._tally.plus(kind)
        if self._decision is None:
            self._decision = _decide(self._config, self._tally, self.remaining, key, canonical)
        elif kind is _Kind.CANCELED:
            self._losers.add(key)

    def result(self) -> JoinResult:
        """The joined outcome; unrecorded branches count as canceled losers."""
        decision = self._decision
        if decision is None:
            raise JoinProtocolError(
                f"the join is not decided yet: {self.remaining} of {self._config.total} "
                "branches are still running; call result() once decided is true"
            )
        dropping_failures = self._config.error_policy == "ignore"
        included = tuple(
            key
            for key, status in self._statuses.items()
            if key not in self._losers and not (dropping_failures and _KIND_OF[status] in _FAILING)
        )
        return JoinResult(
            status=decision.status,
            success_count=self._tally.succeeded,
            failure_count=self._tally.failed,
            canceled_count=self._tally.canceled + self.remaining,
            included=included,
            reason=decision.reason,
            decided_early=decision.early,
        )


def _decide(
    config: JoinConfig, tally: _Tally, remaining: int, key: str, status: str
) -> _Decision | None:
    """The decision after ``key`` ended with ``status`` (``tally`` includes it), or None."""
    if config.error_policy == "fail_fast" and _KIND_OF[status] in _FAILING:
        return _Decision(
            StageStatus.FAIL,
            f"error_policy=fail_fast: branch {key!r} ended {status}, so the join fails: "
            f"{_summary(config, tally)}",
            early=remaining > 0,
        )
    if config.policy == "wait_all":
        return None if remaining else _wait_all(config, tally)
    return _threshold(config, tally, remaining)


def _wait_all(config: JoinConfig, tally: _Tally) -> _Decision:
    """All recorded: all failed → fail; any failure or partial → partial_success (S4.8-06)."""
    reason = f"wait_all: {_summary(config, tally)}"
    ignoring = config.error_policy == "ignore"
    if tally.succeeded == 0:
        if ignoring:
            reason += "; error_policy=ignore dropped every failed branch, nothing left to join"
        return _Decision(StageStatus.FAIL, reason, early=False)
    if tally.partial or (tally.failing and not ignoring):
        return _Decision(StageStatus.PARTIAL_SUCCESS, reason, early=False)
    return _Decision(StageStatus.SUCCESS, reason, early=False)


def _threshold(config: JoinConfig, tally: _Tally, remaining: int) -> _Decision | None:
    """``first_success``/``k_of_n``/``quorum``: met → success; out of reach → fail."""
    required = config.required
    assert required is not None  # only wait_all has no threshold
    reachable = tally.succeeded + remaining
    if tally.succeeded >= required:
        reason = f"{config.policy}: {_summary(config, tally)}"
        return _Decision(StageStatus.SUCCESS, reason, early=remaining > 0)
    if reachable >= required:
        return None
    if remaining:
        reason = (
            f"{config.policy}: at most {reachable} of {config.total} branches can succeed"
            f"{_detail(config, tally)}"
        )
    else:
        reason = f"{config.policy}: {_summary(config, tally)}"
    return _Decision(StageStatus.FAIL, reason, early=remaining > 0)


def _summary(config: JoinConfig, tally: _Tally) -> str:
    return f"{tally.succeeded} of {config.total} branches succeeded{_detail(config, tally)}"


def _detail(config: JoinConfig, tally: _Tally) -> str:
    """`` (2 required; 1 partially, 1 failed)``, leaving out what is zero or implied."""
    required = config.required
    threshold = f"{required} required" if required and config.policy != "first_success" else ""
    counts = ", ".join(
        f"{count} {word}"
        for count, word in (
            (tally.partial, "partially"),
            (tally.failed, "failed"),
            (tally.canceled, "canceled"),
        )
        if count
    )
    text = "; ".join(part for part in (threshold, counts) if part)
    return f" ({text})" if text else ""
