"""Fault schedules: what each attempt of each stage does, and when the run is cancelled.

A :class:`Schedule` is plain data, so a counterexample found by the fuzzer can be printed
(:meth:`Schedule.describe`), stored (:meth:`Schedule.to_json`) and replayed later
(:meth:`Schedule.from_json`) without Hypothesis. The defaults are chosen so that *shrinking
towards the defaults* means *shrinking towards a plain successful run*: a node without steps
succeeds at once, and a schedule without a cancel point is never cancelled. Counting the
non-default steps (:attr:`Schedule.non_default_steps`) therefore measures how small a
reproducer is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from attrs import field, frozen

from ..dot.conditions import is_custom_outcome, normalize_outcome

__all__ = ["STEP_KINDS", "Schedule", "Step"]

#: ``success``/``partial``/``fail``/``retry``: return that status after ``delay`` (``success``
#: with an ``outcome``: report that custom outcome value, contract.md §10); ``raise``: the handler
#: raises; ``stall``: silent forever (only cancellation, the watchdog or
#: a node timeout ends it); ``timeout``: works past the node's ``timeout`` (a ``stall`` on a
#: node without one).
STEP_KINDS: Final = ("success", "partial", "fail", "retry", "raise", "stall", "timeout")
_STEP_KEYS: Final = ("kind", "failure_class", "reason", "delay", "outcome")
_SCHEDULE_KEYS: Final = ("steps", "cancel_at", "cancel_after_event")


def _known_kind(_instance: object, _attribute: object, value: str) -> None:
    if value not in STEP_KINDS:
        raise ValueError(f"unknown step kind {value!r}; use one of {', '.join(STEP_KINDS)}")


def _custom_outcome(instance: Step, _attribute: object, value: str) -> None:
    if not value:
        return
    if instance.kind != "success":
        raise ValueError(
            f"a custom outcome ({value!r}) needs kind 'success', not {instance.kind!r}"
        )
    if normalize_outcome(value) != value or not is_custom_outcome(value):
        raise ValueError(f"outcome {value!r} is not a custom outcome value (lowercase identifier)")


def _valid_delay(_instance: object, _attribute: object, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"step delay must be a finite number of seconds >= 0, got {value!r}")


@frozen
class Step:
    """What one attempt does: work ``delay`` virtual seconds (reporting progress), then
    ``kind``. An empty ``reason`` means a generated one naming the node and attempt, so a
    failure always carries a reason the invariant checker can trace."""

    kind: str = field(default="success", validator=_known_kind)
    failure_class: str = ""
    reason: str = ""
    delay: float = field(default=0.0, converter=float, validator=_valid_delay)
    #: A custom outcome value reported instead of ``success`` (routes like success).
    outcome: str = field(default="", validator=_custom_outcome)

    @property
    def is_default(self) -> bool:
        return self == Step()

    def describe(self) -> str:
        parts = [f"outcome {self.outcome}" if self.outcome else self.kind]
        if self.delay:
            parts.append(f"after {_seconds(self.delay)}")
        if self.failure_class:
            parts.append(f"class={self.failure_class}")
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind}
        if self.failure_class:
            doc["failure_class"] = self.failure_class
        if self.reason:
            doc["reason"] = self.reason
        if self.delay:
            doc["delay"] = self.delay
        if self.outcome:
            doc["outcome"] = self.outcome
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str = "step") -> Step:
        data = _mapping(doc, where, _STEP_KEYS)
        try:
            return cls(
                kind=_text(data, "kind", where, "success"),
                failure_class=_text(data, "failure_class", where),
                reason=_text(data, "reason", where),
                delay=_number(data, "delay", where) or 0.0,
                outcome=_text(data, "outcome", where),
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


def _steps_map(value: Mapping[str, Any]) -> dict[str, tuple[Step, ...]]:
    return {str(node): tuple(steps) for node, steps in value.items()}


@frozen
class Schedule:
    """Node id → per-attempt steps (the last one repeats; a missing node succeeds), plus at
    most a cancel point: ``cancel_at`` virtual seconds after the start, or when the event
    with ``seq == cancel_after_event`` is emitted."""

    steps: Mapping[str, tuple[Step, ...]] = field(factory=dict, converter=_steps_map)
    cancel_at: float | None = None
    cancel_after_event: int | None = None

    def step_for(self, node_id: str, index: int) -> Step:
        """The step of the ``index``-th call (0-based) of ``node_id``; the last repeats."""
        steps = self.steps.get(node_id)
        if not steps:
            return Step()
        return steps[min(index, len(steps) - 1)]

    @property
    def non_default_steps(self) -> int:
        """How many steps differ from plain success (the size of a reproducer)."""
        return sum(not step.is_default for steps in self.steps.values() for step in steps)

    def describe(self) -> str:
        """A human-readable reproducer, one line per scheduled node."""
        lines = []
        for node_id, steps in sorted(self.steps.items()):
            if all(step.is_default for step in steps):
                continue  # the same as not scheduling the node at all
            attempts = "; ".join(
                f"#{number} {step.describe()}" for number, step in enumerate(steps, start=1)
            )
            suffix = " (last repeats)" if len(steps) > 1 else " (every attempt)"
            lines.append(f"  {node_id}: {attempts}{suffix}")
        if not lines:
            lines.append("  every stage succeeds at once")
        if self.cancel_at is not None:
            lines.append(f"  cancel the run at t={_seconds(self.cancel_at)} (virtual)")
        if self.cancel_after_event is not None:
            lines.append(f"  cancel the run when event seq {self.cancel_after_event} is emitted")
        return "schedule:\n" + "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": {
                node: [step.to_json() for step in steps] for node, steps in self.steps.items()
            },
            "cancel_at": self.cancel_at,
            "cancel_after_event": self.cancel_after_event,
        }

    @classmethod
    def from_json(cls, doc: object) -> Schedule:
        """Read what :meth:`to_json` wrote; a malformed document raises ``ValueError`` that
        names the offending key."""
        data = _mapping(doc, "schedule", _SCHEDULE_KEYS)
        raw_steps = _mapping(data.get("steps", {}), "schedule.steps", None)
        steps: dict[str, tuple[Step, ...]] = {}
        for node, entries in raw_steps.items():
            where = f"schedule.steps.{node}"
            if not isinstance(entries, list) or not entries:
                raise ValueError(f"{where}: expected a non-empty list of steps")
            steps[node] = tuple(
                Step.from_json(entry, f"{where}[{i}]") for i, entry in enumerate(entries)
            )
        cancel_at = _number(data, "cancel_at", "schedule")
        event = data.get("cancel_after_event")
        if event is not None and (isinstance(event, bool) or not isinstance(event, int)):
            raise ValueError(f"schedule: 'cancel_after_event' must be an integer, got {event!r}")
        return cls(steps=steps, cancel_at=cancel_at, cancel_after_event=event)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _mapping(doc: object, where: str, allowed: tuple[str, ...] | None) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    unknown = [str(key) for key in doc if allowed is not None and key not in allowed]
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed or ())}"
        )
    return doc


def _text(data: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {key!r} must be a number of seconds, got {value!r}")
    return float(value)
