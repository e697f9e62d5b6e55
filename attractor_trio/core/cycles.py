"""Guards against a pipeline that loops without making progress (contract.md §5, §9).

Three independent guards, all sans-IO: the engine feeds them facts and executes their verdict.

* :class:`CycleBreaker` — each visit's *final* ``fail``/``retry`` outcome (after the stage's own
  retries) of class ``deterministic`` or ``structural`` bumps a counter keyed by its failure
  signature; reaching the limit (graph ``loop_restart_signature_limit``, default 3) ends the run,
  or the branch inside a parallel branch, with ``exit_path=cycle_breaker``. Signatures normalize
  numbers and hex ids, so "3 tests failed at abc1234" and "4 tests failed at def5678" are one
  cycle. Transient, budget and canceled failures never count: retrying them is legitimate.
* :class:`VisitLimit` — graph ``max_node_visits``: catches cycles whose reasons keep changing.
* :class:`LoopRestartGate` — a ``loop_restart`` edge may be taken after success or a
  ``transient_infra`` failure only; repeated restarts for one transient signature trip their
  own breaker with the same limit.

The counters are plain ``{signature: count}`` maps, handed out as copies by ``counts`` for the
checkpoint and passed back to the constructor on resume, so a crash cannot reset them.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import frozen

from .failures import (
    DETERMINISTIC,
    STRUCTURAL,
    TRANSIENT_INFRA,
    effective_class,
    failure_signature,
)
from .outcome import Outcome, is_success_like

__all__ = [
    "CYCLE_COUNTED_CLASSES",
    "CycleBreaker",
    "CycleTrip",
    "LoopRestartGate",
    "RestartAllowed",
    "RestartBlocked",
    "RestartDecision",
    "RestartTripped",
    "VisitLimit",
]

#: Classes whose repetition means "the same input fails the same way": a loop, not bad luck.
CYCLE_COUNTED_CLASSES = frozenset({DETERMINISTIC, STRUCTURAL})


@frozen
class CycleTrip:
    """The cycle breaker tripped: end the run (or branch) with ``exit_path=cycle_breaker``.

    ``failure_reason`` is the raw reason of the visit that tripped it — final.json carries the
    causal reason (contract.md §5), ``signature`` goes to ``failure_signature``.
    """

    node_id: str
    signature: str
    count: int
    limit: int
    failure_reason: str
    failure_class: str

    def event_fields(self, scope: str) -> dict[str, object]:
        """The ``failure_cycle_break`` payload; ``scope`` is ``main`` or the branch path."""
        return {
            "node_id": self.node_id,
            "signature": self.signature,
            "count": self.count,
            "limit": self.limit,
            "scope": scope,
        }

    @property
    def summary(self) -> str:
        """One line for humans (stderr, notes); not a replacement for the causal reason."""
        return (
            f"failure cycle: signature {self.signature!r} repeated {self.count} times "
            f"(limit {self.limit})"
        )


def _copy_counts(counts: Mapping[str, int] | None) -> dict[str, int]:
    return {str(key): int(value) for key, value in (counts or {}).items()}


class _SignatureCounts:
    """What the breaker and the restart gate share: a limit and ``{signature: count}``,
    restored from a checkpoint and copied out for the next one."""

    def __init__(self, limit: int, counts: Mapping[str, int] | None = None) -> None:
        self._limit = limit
        self._counts = _copy_counts(counts)

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def counts(self) -> dict[str, int]:
        """A copy of ``{signature: count}`` for the checkpoint."""
        return dict(self._counts)


class CycleBreaker(_SignatureCounts):
    """Counts deterministic/structural failure signatures; trips once per signature at ``limit``.

    ``limit <= 0`` disables it (nothing is counted). Synchronous and IO-free, so one instance may
    be shared by the main traversal and its parallel branches under trio without locking.
    """

    def observe(self, node_id: str, outcome: Outcome) -> CycleTrip | None:
        """Record one visit's final outcome; a :class:`CycleTrip` when this visit trips.

        A count restored at or above the limit (the limit was lowered before a resume) trips
        on the next matching failure. Later failures with a tripped signature still count but
        trip again: a branch stopped by the breaker may run again when the main traversal re-enters
        its fan-out, and must be stopped again (the main traversal ends at its first trip).
        """
        failure_class = effective_class(outcome)
        if self._limit <= 0 or failure_class not in CYCLE_COUNTED_CLASSES:
            return None
        signature = failure_signature(node_id, failure_class, outcome.failure_reason)
        count = self._counts.get(signature, 0) + 1
        self._counts[signature] = count
        if count < self._limit:
            return None
        return CycleTrip(
            node_id, signature, count, self._limit, outcome.failure_reason, failure_class
        )


@frozen
class VisitLimit:
    """Graph ``max_node_visits``: ``N`` allows N visits of any node; visit N+1 aborts.

    ``None`` (the default) or a non-positive value means no limit.
    """

    max_visits: int | None

    def check(self, node_id: str, visits: int) -> bool:
        """May ``node_id`` be visited for the ``visits``-th time (1-based, this visit included)?

        ``node_id`` is unused today; it keeps the call site stable for per-node limits.
        """
        del node_id
        return self.max_visits is None or self.max_visits <= 0 or visits <= self.max_visits

    def message(self, node_id: str, visits: int) -> str:
        """The ``failure_reason`` of a ``visit_limit`` abort."""
        return (
            f"node '{node_id}' would be visited {visits} times; max_node_visits={self.max_visits}"
        )


@frozen
class RestartAllowed:
    """Take the ``loop_restart`` edge."""


@frozen
class RestartBlocked:
    """The failure's class forbids a restart: a fresh run would fail the same way.

    The engine treats the edge as not taken and fails with the stage's own reason.
    """

    node_id: str
    failure_class: str
    failure_reason: str

    @property
    def reason(self) -> str:
        """Why, for the ``loop_restart_blocked`` note and logs."""
        return (
            f"loop_restart from node '{self.node_id}' blocked: failure_class={self.failure_class} "
            f"(only success or transient_infra failures may restart the run): "
            f"{self.failure_reason}"
        )


@frozen
class RestartTripped:
    """The same transient failure restarted the run ``count`` times: stop (``cycle_breaker``)."""

    node_id: str
    signature: str
    count: int
    limit: int
    failure_reason: str
    failure_class: str


RestartDecision = RestartAllowed | RestartBlocked | RestartTripped


class LoopRestartGate(_SignatureCounts):
    """Decides whether a ``loop_restart`` edge may be taken after ``outcome``.

    Success-like outcomes always may, uncounted (restarting on success is how a pipeline
    iterates; graph ``max_restarts`` bounds that). A ``transient_infra`` failure may, and bumps
    its signature; reaching ``limit`` trips instead. Any other failure class is blocked.
    ``limit <= 0`` disables the breaker but not the class rule.
    """

    def check(self, node_id: str, outcome: Outcome) -> RestartDecision:
        """Call once per ``loop_restart`` edge about to be taken from ``node_id``."""
        if is_success_like(outcome):
            return RestartAllowed()
        failure_class = effective_class(outcome)
        if failure_class != TRANSIENT_INFRA:
            return RestartBlocked(node_id, failure_class, outcome.failure_reason)
        if self._limit <= 0:
            return RestartAllowed()
        signature = failure_signature(node_id, failure_class, outcome.failure_reason)
        count = self._counts.get(signature, 0) + 1
        self._counts[signature] = count
        if count < self._limit:
            return RestartAllowed()
        return RestartTripped(
            node_id, signature, count, self._limit, outcome.failure_reason, failure_class
        )
