"""Failure classes (CONTRACT §5): what kind of failure a ``fail``/``retry`` outcome is.

The class decides whether a stage may be retried and whether a repeated failure counts toward
the cycle breaker. This module holds the vocabulary and the normalizer for *explicit* hints (a
status file's ``failure_class``, a typed provider error). Classifying an unhinted failure from
its reason text, signatures and the cycle breaker slot in next to it; they build on
:func:`normalize_failure_class` so an alias never splits one class into two.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .outcome import Outcome

__all__ = [
    "BUDGET_EXHAUSTED",
    "CANCELED",
    "DETERMINISTIC",
    "FAILURE_CLASSES",
    "RETRY_BLOCKING_CLASSES",
    "STRUCTURAL",
    "TRANSIENT_INFRA",
    "failure_signature",
    "is_retry_blocked",
    "normalize_failure_class",
    "normalize_reason",
]

TRANSIENT_INFRA = "transient_infra"
BUDGET_EXHAUSTED = "budget_exhausted"
DETERMINISTIC = "deterministic"
STRUCTURAL = "structural"
CANCELED = "canceled"

FAILURE_CLASSES = (TRANSIENT_INFRA, BUDGET_EXHAUSTED, DETERMINISTIC, STRUCTURAL, CANCELED)

#: Classes a retry cannot fix: the same input fails the same way, or the run is being stopped.
RETRY_BLOCKING_CLASSES = frozenset({DETERMINISTIC, STRUCTURAL, CANCELED})

# Spellings seen in status files, provider taxonomies and Kilroy's runbooks, after
# lowercasing and turning '-' and spaces into '_'.
_ALIASES = {
    "transient": TRANSIENT_INFRA,
    "infra": TRANSIENT_INFRA,
    "transient_infrastructure": TRANSIENT_INFRA,
    "retryable": TRANSIENT_INFRA,
    "budget": BUDGET_EXHAUSTED,
    "budget_exceeded": BUDGET_EXHAUSTED,
    "permanent": DETERMINISTIC,
    "logic": DETERMINISTIC,
    "product": DETERMINISTIC,
    "scope_violation": STRUCTURAL,
    "cancelled": CANCELED,
    "cancel": CANCELED,
}


def normalize_failure_class(hint: str) -> str:
    """Map an explicit hint to one of :data:`FAILURE_CLASSES`; ``""`` when it names none.

    ``""`` (not a guess) for an unknown hint, so the caller can fall back to classifying the
    reason text instead of trusting a typo.
    """
    key = "_".join(hint.strip().lower().replace("-", " ").split())
    if key in FAILURE_CLASSES:
        return key
    return _ALIASES.get(key, "")


def is_retry_blocked(outcome: Outcome) -> bool:
    """True for a ``fail``/``retry`` outcome whose class says another attempt cannot help."""
    if outcome.status.value not in ("fail", "retry"):
        return False
    return normalize_failure_class(outcome.failure_class) in RETRY_BLOCKING_CLASSES


_HEX_RUN = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,}\b")
_DIGIT_RUN = re.compile(r"\b\d+\b")
_SPACE_RUN = re.compile(r"\s+")
SIGNATURE_REASON_LIMIT = 240


def normalize_reason(reason: str) -> str:
    """CONTRACT §9: lowercase; hex runs (≥ 7, with a digit) → ``<hex>``; digit runs → ``<n>``;
    whitespace collapsed; at most 240 characters. Two failures that differ only in ids,
    counts or timestamps normalize to the same text."""
    text = reason.lower()
    text = _HEX_RUN.sub("<hex>", text)
    text = _DIGIT_RUN.sub("<n>", text)
    text = _SPACE_RUN.sub(" ", text).strip()
    return text[:SIGNATURE_REASON_LIMIT]


def failure_signature(node_id: str, failure_class: str, reason: str) -> str:
    """``node_id|class|normalized reason``: the key of the cycle breaker and of final.json."""
    klass = normalize_failure_class(failure_class) or failure_class
    return f"{node_id}|{klass}|{normalize_reason(reason)}"
