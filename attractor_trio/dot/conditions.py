"""The edge condition language (spec §10): parsed once into clauses, evaluated many times.

``outcome=success && context.tests_passed=true`` is a conjunction of clauses ``key op literal``.
Parsing happens at validation time (rule ``condition_syntax``) so a typo is reported with its
column before anything runs; evaluation is a pure function of (outcome, preferred_label, context).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from ..errors import AttractorError

__all__ = [
    "STATUSES",
    "Clause",
    "Condition",
    "ConditionSyntaxError",
    "canonical_status",
    "evaluate_condition",
    "is_custom_outcome",
    "normalize_outcome",
    "outcome_hint",
    "parse_condition",
    "resolve_key",
    "stringify",
]

#: The lowercase status strings used in files and conditions (spec S5.2-02).
STATUSES = ("success", "partial_success", "retry", "fail", "skipped")

# Outcome aliases accepted in conditions, status files and sim scripts (Kilroy's
# ParseStageStatus; contract.md §10). Keys are already normalized (lowercase, ``-`` read as ``_``).
_ALIASES = {
    "ok": "success",
    "succeeded": "success",
    "pass": "success",
    "passed": "success",
    "failure": "fail",
    "failed": "fail",
    "error": "fail",
    "skip": "skipped",
    "degraded_success": "partial_success",
    "partialsuccess": "partial_success",
    "partial": "partial_success",
}
#: A custom outcome value (contract.md §10): a lowercase identifier once normalized.
_CUSTOM_OUTCOME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$")
_FALSY = frozenset({"", "false", "0", "no"})
# Operators and words the spec reserves for the future (S10.7-01): rejected, not misparsed.
_UNSUPPORTED = (
    ("||", "'||' (OR) is not supported; use separate edges, one per alternative"),
    ("==", "use a single '=' to compare (e.g. outcome=success)"),
    (">=", "'>=' is not supported: conditions compare with '=' and '!=' only"),
    ("<=", "'<=' is not supported: conditions compare with '=' and '!=' only"),
    (">", "'>' is not supported: conditions compare with '=' and '!=' only"),
    ("<", "'<' is not supported: conditions compare with '=' and '!=' only"),
)
_RESERVED_WORDS = frozenset({"contains", "matches", "or", "and", "not", "in"})


class ConditionSyntaxError(AttractorError):
    """A condition does not parse; ``col`` is 1-based within the condition text."""

    def __init__(self, message: str, *, col: int, text: str) -> None:
        super().__init__(message)
        self.message = message
        self.col = col
        self.text = text

    def __str__(self) -> str:
        return f"{self.message} (in condition {self.text!r} at column {self.col})"


def _normalized(text: str) -> str:
    """Every outcome value is compared lowercase with ``-`` read as ``_`` (contract.md §10)."""
    return text.strip().lower().replace("-", "_")


def canonical_status(text: str) -> str | None:
    """Map a status or alias (``ok``, ``failure``, ``error``, ``skip``…) to its canonical form."""
    lowered = _normalized(text)
    if lowered in STATUSES:
        return lowered
    return _ALIASES.get(lowered)


def normalize_outcome(text: str) -> str | None:
    """The outcome value ``text`` stands for: one of :data:`STATUSES` (aliases resolved), a
    custom value (any lowercase identifier, e.g. ``process``, ``needs_dod``), or ``None`` when
    it is neither (empty, spaces, punctuation).

    This is the one place that decides the outcome vocabulary: status files, sim scripts,
    conditions and the context's ``outcome`` all go through it.
    """
    canonical = canonical_status(text)
    if canonical is not None:
        return canonical
    lowered = _normalized(text)
    return lowered if _CUSTOM_OUTCOME_RE.match(lowered) else None


def is_custom_outcome(value: str) -> bool:
    """A normalized outcome value that is not one of the five statuses (it routes as success)."""
    return value not in STATUSES


def stringify(value: Any) -> str:
    """Context values as conditions see them: JSON spellings for booleans, ``""`` for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def resolve_key(key: str, outcome: str, preferred_label: str, context: Mapping[str, Any]) -> str:
    """Spec S10.4-01: ``outcome``, ``preferred_label``, ``context.X`` (then ``X``), else ``key``."""
    if key == "outcome":
        return normalize_outcome(outcome) or outcome.strip().lower()
    if key == "preferred_label":
        return preferred_label
    if key.startswith("context."):
        if key in context:
            return stringify(context[key])
        return stringify(context.get(key[len("context.") :]))
    return stringify(context.get(key))


@frozen
class Clause:
    """``key op literal``; ``op`` is ``=``, ``!=`` or ``truthy`` (a bare key)."""

    key: str
    op: str
    literal: str = ""
    col: int = 1

    def evaluate(self, outcome: str, preferred_label: str, context: Mapping[str, Any]) -> bool:
        value = resolve_key(self.key, outcome, preferred_label, context)
        if self.op == "truthy":
            return value.strip().lower() not in _FALSY
        equal = value == self.literal
        return equal if self.op == "=" else not equal


@frozen
class Condition:
    """A parsed condition: all clauses must hold. The empty condition is always true."""

    clauses: tuple[Clause, ...]
    source: str = ""

    def evaluate(
        self, outcome: str, preferred_label: str = "", context: Mapping[str, Any] | None = None
    ) -> bool:
        ctx = context if context is not None else {}
        return all(c.evaluate(outcome, preferred_label, ctx) for c in self.clauses)


@functools.lru_cache(maxsize=4096)
def parse_condition(text: str) -> Condition:
    """Parse ``text`` (spec §10.2/§10.5); raise :class:`ConditionSyntaxError` with a column."""
    _reject_unsupported(text)
    clauses = []
    offset = 0
    for part in text.split("&&"):
        stripped = part.strip()
        if stripped:
            col = offset + (len(part) - len(part.lstrip())) + 1
            clauses.append(_parse_clause(stripped, col, text))
        offset += len(part) + 2
    return Condition(tuple(clauses), text)


def evaluate_condition(
    text: str, outcome: str, preferred_label: str = "", context: Mapping[str, Any] | None = None
) -> bool:
    return parse_condition(text).evaluate(outcome, preferred_label, context)


def _reject_unsupported(text: str) -> None:
    in_quotes = _quoted_spans(text)
    for token, message in _UNSUPPORTED:
        index = _find_unquoted(text, token, in_quotes)
        if index >= 0:
            raise ConditionSyntaxError(message, col=index + 1, text=text)


def _quoted_spans(text: str) -> list[bool]:
    inside, escaped, flags = False, False, []
    for char in text:
        flags.append(inside)
        if escaped:
            escaped = False
        elif char == "\\" and inside:
            escaped = True
        elif char == '"':
            inside = not inside
    flags.append(False)
    return flags


def _find_unquoted(text: str, token: str, in_quotes: list[bool]) -> int:
    start = text.find(token)
    while start >= 0:
        if not in_quotes[start]:
            return start
        start = text.find(token, start + 1)
    return -1


def _parse_clause(clause: str, col: int, text: str) -> Clause:
    if "!=" in clause:
        key, _, literal = clause.partition("!=")
        op = "!="
    elif "=" in clause:
        key, _, literal = clause.partition("=")
        op = "="
    else:
        return Clause(_check_key(clause, col, text), "truthy", "", col)
    key = _check_key(key.strip(), col, text)
    value = _parse_literal(literal, col + len(clause) - len(literal), text)
    if key == "outcome":
        value = _check_outcome(value, col, text)
    return Clause(key, op, value, col)


def _check_key(key: str, col: int, text: str) -> str:
    if not key:
        raise ConditionSyntaxError(
            "missing key before the operator (e.g. outcome=success)", col=col, text=text
        )
    if key.startswith("!"):
        raise ConditionSyntaxError(
            "'!' (NOT) is not supported; use 'key!=value'", col=col, text=text
        )
    words = key.split()
    if len(words) > 1 and words[1].lower() in _RESERVED_WORDS:
        raise ConditionSyntaxError(
            f"'{words[1]}' is not part of the condition language; "
            "combine clauses with '&&' and compare with '=' or '!='",
            col=col,
            text=text,
        )
    if not _KEY_RE.match(key):
        raise ConditionSyntaxError(
            f"invalid key {key!r}: use outcome, preferred_label or context.<name>",
            col=col,
            text=text,
        )
    return key


def _parse_literal(raw: str, col: int, text: str) -> str:
    value = raw.strip()
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            raise ConditionSyntaxError("unterminated quoted value", col=col, text=text)
        return re.sub(r'\\(["\\])', r"\1", value[1:-1])
    return value


def _check_outcome(value: str, col: int, text: str) -> str:
    """A status, an alias (read as its status) or a custom value (contract.md §10); validation
    mentions custom values in an ``info`` diagnostic (:func:`outcome_hint`)."""
    normalized = normalize_outcome(value)
    if normalized is not None:
        return normalized
    raise ConditionSyntaxError(
        f"invalid outcome {value!r}: expected one of {', '.join(STATUSES)} "
        "or a custom value (a lowercase identifier such as needs_review)",
        col=col,
        text=text,
    )


def outcome_hint(value: str) -> str:
    """For a custom outcome in a condition: a did-you-mean when it is close to a status."""
    close = difflib.get_close_matches(value, STATUSES, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
