"""What a stage returns (spec §5.2, Appendix C): :class:`StageStatus` and :class:`Outcome`.

An :class:`Outcome` is a frozen value so a decision made from it (routing, retry, goal gates)
cannot be invalidated by a handler mutating it later. It round-trips through ``status.json``:
:meth:`Outcome.to_json` writes both ``outcome`` and ``status`` (AMBIG-9, readers of either
spelling work), :meth:`Outcome.from_json` accepts either, the status aliases and custom values
of :func:`~attractor_trio.dot.conditions.normalize_outcome`, and rejects anything ill-typed with a
message that says which key is wrong and what it should be.

A custom outcome value (contract.md §10: ``process``, ``needs_dod``…) is an :class:`Outcome` whose
``status`` is ``SUCCESS`` — it counts as success for retries, failure classes and goal gates —
and whose ``custom`` holds the value; :attr:`Outcome.value` is what conditions, events, files and
the context see, so ``outcome=process`` matches it and ``outcome=success`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from attrs import evolve, field, frozen

from ..dot.conditions import STATUSES, canonical_status, is_custom_outcome, normalize_outcome
from ..errors import AttractorError
from .vocabulary import Status

__all__ = [
    "CONTEXT_OUTCOME_KEYS",
    "Outcome",
    "StageStatus",
    "Status",
    "StatusFileError",
    "context_updates_after",
    "is_success_like",
    "outcome_from_value",
    "passthrough_outcome",
    "satisfies_goal_gate",
]


#: The stage statuses under their historical public name (one enum: :class:`Status`).
StageStatus = Status
_SUCCESS = StageStatus.SUCCESS
_SUCCESS_VALUE = _SUCCESS._value_


class StatusFileError(AttractorError):
    """A status document is not a valid outcome; the message names the key and the fix."""


def _to_status(value: StageStatus | str) -> StageStatus:
    if isinstance(value, StageStatus):
        return value
    canonical = canonical_status(value)
    if canonical is None:
        raise ValueError(f"unknown stage status {value!r}: expected one of {', '.join(STATUSES)}")
    return StageStatus(canonical)


def _to_custom(value: str) -> str:
    if not value:
        return ""
    normalized = normalize_outcome(value)
    if normalized is None or not is_custom_outcome(normalized):
        raise ValueError(f"custom outcome {value!r} must be a lowercase identifier, not a status")
    return normalized


def _to_ids(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _to_updates(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@frozen(eq=True, hash=False, slots=False)
class Outcome:
    """A stage's result (spec S5.2-01) plus the failure metadata of contract.md §3.

    ``context_updates`` is copied on construction so the caller's dict can change freely.
    ``failure_class`` is kept as written; :func:`~.failures.normalize_failure_class` interprets it.

    Not slotted: a frozen attrs class fills each slot through a method call, ``__dict__`` by
    item assignment (one or two outcomes per stage), and :attr:`value` is kept there too.
    """

    status: StageStatus = field(converter=_to_status)
    preferred_label: str = ""
    suggested_next_ids: tuple[str, ...] = field(default=(), converter=_to_ids)
    context_updates: dict[str, Any] = field(factory=dict, converter=_to_updates)
    notes: str = ""
    failure_reason: str = ""
    failure_class: str = ""
    failure_signature: str = ""
    #: A custom outcome value (status is then ``SUCCESS``); ``""`` for the five statuses.
    custom: str = field(default="", converter=_to_custom)

    def __attrs_post_init__(self) -> None:
        custom = self.custom
        if custom and self.status is not StageStatus.SUCCESS:
            raise ValueError(f"custom outcome {custom!r} needs status success")
        # ``value``, worked out once: a stage reads it about five times, and a property was
        # a Python call each. (Not a field: not compared, printed, or passed to ``evolve``.)
        self.__dict__["value"] = custom or self.status._value_

    if TYPE_CHECKING:

        @property
        def value(self) -> str:
            """The outcome as reported: the custom value, else the status string (kept in the
            instance's ``__dict__`` by ``__attrs_post_init__``: no class attribute)."""
            return self.custom or self.status._value_

    @classmethod
    def plain_success(cls, notes: str, context_updates: dict[str, Any]) -> Outcome:
        """``Outcome(StageStatus.SUCCESS, notes=notes, context_updates=context_updates)``,
        without the constructor's converters and post-init (five Python calls: every codergen
        stage makes one): for a caller whose ``notes`` is a ``str`` and whose
        ``context_updates`` is a fresh ``dict`` the outcome may keep (the copy the converter
        would make). The same attributes in the same order (``test_core_outcome``)."""
        outcome = object.__new__(cls)
        outcome.__dict__.update(
            status=_SUCCESS,
            preferred_label="",
            suggested_next_ids=(),
            context_updates=context_updates,
            notes=notes,
            failure_reason="",
            failure_class="",
            failure_signature="",
            custom="",
            value=_SUCCESS_VALUE,
        )
        return outcome

    def evolve(self, **changes: Any) -> Outcome:
        """A copy with ``changes`` (fields keep their converters)."""
        return evolve(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The ``status.json`` document: key ``outcome`` (the spec's) and ``status`` (Kilroy's)."""
        value = self.custom or self.status._value_
        return {
            "outcome": value,
            "status": value,
            "preferred_label": self.preferred_label,
            "suggested_next_ids": list(self.suggested_next_ids),
            "context_updates": dict(self.context_updates),
            "notes": self.notes,
            "failure_reason": self.failure_reason,
            "failure_class": self.failure_class,
            "failure_signature": self.failure_signature,
        }

    @classmethod
    def from_json(cls, obj: object, *, source: str = "status file") -> Outcome:
        """Read a status document; ``source`` (usually its path) prefixes every error message.

        Unknown keys (ownership keys ``run_id``/``node_id``/``attempt_id``, tool-specific extras)
        are ignored here; ownership is checked by the ingestion layer. ``null`` counts as absent.
        """
        if not isinstance(obj, Mapping):
            raise StatusFileError(
                f'{source}: expected a JSON object like {{"outcome": "success"}}, '
                f"got {_json_type(obj)}"
            )
        status, custom = _read_status(obj, source)
        label = _read_str(obj, "preferred_label", source)
        if "preferred_label" not in obj or obj["preferred_label"] is None:
            label = _read_str(obj, "preferred_next_label", source)  # pre-fb57a55 spelling
        return cls(
            status=status,
            preferred_label=label,
            suggested_next_ids=_read_ids(obj, source),
            context_updates=_read_updates(obj, source),
            notes=_read_str(obj, "notes", source),
            failure_reason=_read_str(obj, "failure_reason", source),
            failure_class=_read_str(obj, "failure_class", source),
            failure_signature=_read_str(obj, "failure_signature", source),
            custom=custom,
        )


def outcome_from_value(text: str, **fields: Any) -> Outcome:
    """The outcome a reported value stands for (status, alias or custom); ``ValueError`` when
    ``text`` is none of these. Status files and sim scripts share it."""
    normalized = normalize_outcome(text)
    if normalized is None:
        raise ValueError(
            f"unknown outcome {text!r}: expected one of {', '.join(STATUSES)} "
            "or a custom value (a lowercase identifier such as needs_review)"
        )
    if is_custom_outcome(normalized):
        return Outcome(StageStatus.SUCCESS, custom=normalized, **fields)
    return Outcome(StageStatus(normalized), **fields)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"a number ({value})"
    return names.get(type(value), type(value).__name__)


def _read_status(obj: Mapping[str, Any], source: str) -> tuple[StageStatus, str]:
    """The status and the custom value (``""`` for the five statuses) of a status document."""
    found = {key: obj[key] for key in ("outcome", "status") if obj.get(key) is not None}
    if not found:
        raise StatusFileError(
            f"{source}: missing 'outcome': add \"outcome\": one of {', '.join(STATUSES)}"
        )
    values = set()
    for key, raw in found.items():
        if not isinstance(raw, str):
            raise StatusFileError(f"{source}: '{key}' must be a string, got {_json_type(raw)}")
        normalized = normalize_outcome(raw)
        if normalized is None:
            raise StatusFileError(
                f"{source}: unknown {key} {raw!r}: expected one of {', '.join(STATUSES)} "
                "or a custom value (a lowercase identifier such as needs_review)"
            )
        values.add(normalized)
    if len(values) > 1:
        raise StatusFileError(
            f"{source}: 'outcome' ({found['outcome']!r}) and 'status' ({found['status']!r}) "
            "disagree: write one of them, or the same value in both"
        )
    value = values.pop()
    if is_custom_outcome(value):
        return StageStatus.SUCCESS, value
    return StageStatus(value), ""


def _read_str(obj: Mapping[str, Any], key: str, source: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StatusFileError(f"{source}: '{key}' must be a string, got {_json_type(value)}")
    return value


def _read_ids(obj: Mapping[str, Any], source: str) -> tuple[str, ...]:
    value = obj.get("suggested_next_ids")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StatusFileError(
            f"{source}: 'suggested_next_ids' must be a list of node id strings "
            f'like ["review"], got {_json_type(value)}'
        )
    return tuple(value)


def _read_updates(obj: Mapping[str, Any], source: str) -> dict[str, Any]:
    value = obj.get("context_updates")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StatusFileError(
            f'{source}: \'context_updates\' must be an object like {{"key": "value"}}, '
            f"got {_json_type(value)}"
        )
    return dict(value)


def _status_of(value: Outcome | StageStatus | str) -> StageStatus:
    return value.status if isinstance(value, Outcome) else _to_status(value)


def is_success_like(value: Outcome | StageStatus | str) -> bool:
    """Routes like success: ``success``, ``partial_success`` and ``skipped`` (AMBIG-12)."""
    return _status_of(value) in (
        StageStatus.SUCCESS,
        StageStatus.PARTIAL_SUCCESS,
        StageStatus.SKIPPED,
    )


def satisfies_goal_gate(value: Outcome | StageStatus | str) -> bool:
    """Spec S3.4-02: only ``success``/``partial_success``; ``skipped`` does not (contract.md §5)."""
    return _status_of(value) in (StageStatus.SUCCESS, StageStatus.PARTIAL_SUCCESS)


#: Context keys the engine sets from every stage's outcome (spec S3.2-07, Kilroy's pass-through).
CONTEXT_OUTCOME_KEYS = ("outcome", "preferred_label", "failure_reason", "failure_class")


def context_updates_after(outcome: Outcome) -> dict[str, Any]:
    """Everything the engine writes into the context after a stage, in application order.

    The stage's own ``context_updates`` come first, then the built-in keys, so a handler
    cannot fake ``outcome``. All four built-ins are always written — an empty value clears a
    stale one, otherwise a diamond downstream would pass through an older stage's label.
    """
    updates = dict(outcome.context_updates)
    updates.update(
        {
            "outcome": outcome.value,
            "preferred_label": outcome.preferred_label,
            "failure_reason": outcome.failure_reason,
            "failure_class": outcome.failure_class,
        }
    )
    return updates


def passthrough_outcome(node_id: str, context: Mapping[str, Any]) -> Outcome:
    """A conditional node's outcome: the previous stage's, read back from the context.

    AMBIG-1 / contract.md §5: returning a fixed ``success`` would make ``outcome!=success`` edges
    out of a diamond unreachable and would lose the failure reason on the way to the exit.
    """
    previous = context.get("outcome")
    fields: dict[str, Any] = {
        "preferred_label": _context_str(context, "preferred_label"),
        "notes": f"Conditional node evaluated: {node_id}",
        "failure_reason": _context_str(context, "failure_reason"),
        "failure_class": _context_str(context, "failure_class"),
    }
    try:
        return outcome_from_value(previous if isinstance(previous, str) else "", **fields)
    except ValueError:
        return Outcome(StageStatus.SUCCESS, **fields)


def _context_str(context: Mapping[str, Any], key: str) -> str:
    value = context.get(key)
    return value if isinstance(value, str) else ""
