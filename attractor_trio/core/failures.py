"""Failure classes (contract.md §5): what kind of failure a ``fail``/``retry`` outcome is.

The class decides whether a stage may be retried, whether a repeated failure counts toward
the cycle breaker, whether a ``loop_restart`` edge may be taken, and what ``final.json`` says.
This module holds the vocabulary, the normalizer for *explicit* hints (a status file's
``failure_class``, a typed provider error) and :func:`classify_failure`, the one classifier all
of those consumers share, so they can never disagree about a failure.

Retry gating deliberately looks only at explicit hints (:func:`is_retry_blocked`): contract.md §5
retries unhinted failures, because reason text is a heuristic and one extra attempt is cheaper
than a wrongly blocked transient failure. The text heuristic matters where a wrong guess is
bounded anyway: the cycle breaker (a misread transient failure is caught by the visit limit),
the loop-restart gate and the reported class.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import redaction
from .vocabulary import FailureClass, Status

if TYPE_CHECKING:
    from .outcome import Outcome

__all__ = [
    "BUDGET_EXHAUSTED",
    "CANCELED",
    "DETERMINISTIC",
    "FAILURE_CLASSES",
    "REASON_RULES",
    "RETRY_BLOCKING_CLASSES",
    "STRUCTURAL",
    "TRANSIENT_INFRA",
    "FailureClass",
    "classify_failure",
    "classify_reason",
    "effective_class",
    "failure_signature",
    "is_retry_blocked",
    "normalize_failure_class",
    "normalize_reason",
]

# Module-level names for the members, kept because they are this module's public API.
TRANSIENT_INFRA = FailureClass.TRANSIENT_INFRA
BUDGET_EXHAUSTED = FailureClass.BUDGET_EXHAUSTED
DETERMINISTIC = FailureClass.DETERMINISTIC
STRUCTURAL = FailureClass.STRUCTURAL
CANCELED = FailureClass.CANCELED

FAILURE_CLASSES: tuple[FailureClass, ...] = tuple(FailureClass)

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
    if outcome.status not in (Status.FAIL, Status.RETRY):
        return False
    return normalize_failure_class(outcome.failure_class) in RETRY_BLOCKING_CLASSES


def _rule(failure_class: str, pattern: str) -> tuple[str, re.Pattern[str]]:
    return failure_class, re.compile(pattern, re.IGNORECASE)


# Reason text → class, first match wins; anything else is deterministic. Every pattern is
# word-boundary aware: ``\b`` does not fire between ``_`` and a letter, so snake_case names
# (``test_timeout_handling``, ``timeout_s``) never match, and HTTP status codes count only
# together with their reason phrase ("line 502", "expected 503 got 200" stay deterministic).
# Deliberately absent, so they classify as deterministic: "no space left on device" and
# OOM kills / "killed by signal SIGKILL" (infra, but the same input fails the same way, and
# the cycle breaker should stop a loop around them — stage retries still happen, unhinted);
# "500 Internal Server Error" (in tool output usually the tested app's bug; typed provider
# server errors carry their own hint); "canceled" (only real cancellation is ``canceled``);
# bare "overloaded" (C++ "call of overloaded ..."), "unexpected EOF" (parser errors).
REASON_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # Billing quota (OpenAI ``insufficient_quota``): waiting will not refill it — the same
    # class as the typed ``quota_exceeded`` provider error. Must precede "too many requests".
    _rule(DETERMINISTIC, r"\binsufficient_quota\b|\bexceeded your current quota\b"),
    # An agent wrote outside its allowed paths (Kilroy's write_scope_violation).
    _rule(STRUCTURAL, r"\b(?:write[ _-])?scope[ _-]violation\b"),
    # The prompt or conversation outgrew the model's window (also context_length_exceeded).
    _rule(BUDGET_EXHAUSTED, r"\bcontext[ _-]?(?:length|window)(?:[ _-]?exceeded)?\b"),
    # Output token caps: max_tokens, "maximum tokens", max_output_tokens.
    _rule(BUDGET_EXHAUSTED, r"\bmax(?:imum)?[ _-]?(?:output[ _-]?)?tokens\b"),
    # Token budgets and limits of an agent loop.
    _rule(BUDGET_EXHAUSTED, r"\btokens?[ _-](?:budget|limit)\b"),
    # Turn/iteration caps of an agent loop.
    _rule(BUDGET_EXHAUSTED, r"\b(?:turn|iteration)[ _-]limit\b|\bmax(?:imum)?[ _-]?turns\b"),
    _rule(BUDGET_EXHAUSTED, r"\bbudget[ _-](?:exhausted|exceeded)\b"),
    # Generic quotas (Gemini's per-minute "Quota exceeded", Google's quotaExceeded): retried
    # with backoff, but no loop restart and no cycle count.
    _rule(BUDGET_EXHAUSTED, r"\bquota(?:[ _-]?exceeded)?\b"),
    # Timeouts: timeout, time-out, TimeoutError, ReadTimeout, APITimeoutError, socket.timeout.
    _rule(
        TRANSIENT_INFRA,
        r"\b(?:api|read|connect|connection|write|pool|socket|idle|request)?"
        r"time[ _-]?out(?:error|exception)?\b",
    ),
    _rule(TRANSIENT_INFRA, r"\btimed[ _-]out\b"),
    # Go's "context deadline exceeded", gRPC DEADLINE_EXCEEDED.
    _rule(TRANSIENT_INFRA, r"\bdeadline[ _-]exceeded\b"),
    # Sockets: "connection reset by peer", ConnectionRefusedError, "connection closed".
    _rule(TRANSIENT_INFRA, r"\bconnection[ _]?(?:reset|refused|aborted|closed)(?:error)?\b"),
    # errno names as printed by Node, Go and libc wrappers.
    _rule(
        TRANSIENT_INFRA,
        r"\b(?:econn(?:reset|refused|aborted)|etimedout|epipe|eai_again|e(?:host|net)unreach)\b",
    ),
    # Client-library connection errors: openai APIConnectionError, httpx ConnectError.
    _rule(TRANSIENT_INFRA, r"\b(?:api)?connect(?:ion)?[ _]?error\b"),
    _rule(TRANSIENT_INFRA, r"\bbroken[ _]?pipe(?:error)?\b"),
    # EAGAIN "Resource temporarily unavailable", "Temporary failure in name resolution".
    _rule(TRANSIENT_INFRA, r"\btemporar(?:il)?y (?:unavailable|failure)\b"),
    # DNS: curl, Go, glibc, macOS.
    _rule(
        TRANSIENT_INFRA,
        r"\b(?:could not|failed to) resolve\b|\bno such host\b|\bname or service not known\b"
        r"|\bnodename nor servname\b|\bgetaddrinfo\b",
    ),
    _rule(TRANSIENT_INFRA, r"\b(?:network|host) is unreachable\b|\bno route to host\b"),
    # The connection dropped mid-request or mid-stream.
    _rule(
        TRANSIENT_INFRA,
        r"\bserver disconnected\b|\bremote end closed connection\b"
        r"|\bstream (?:disconnected|closed before)\b|\bdial tcp\b",
    ),
    # Rate limits: "rate limit", rate_limit, rate-limited, RateLimitError (not "RateLimiter").
    _rule(TRANSIENT_INFRA, r"\brate[ _-]?limit(?:ed|ing|s|error|exceeded)?\b"),
    # HTTP 429/502/503/504 by their reason phrases, never by the bare number.
    _rule(
        TRANSIENT_INFRA,
        r"\btoo many requests\b|\bbad gateway\b|\bservice[ _]?unavailable(?:error)?\b"
        r"|\bgateway time-?out\b",
    ),
    # Provider overload (Anthropic overloaded_error, "server is currently overloaded").
    _rule(
        TRANSIENT_INFRA,
        r"\boverloaded_error\b"
        r"|\b(?:server|service|api|model|engine)s? (?:is |are )?(?:currently )?overloaded\b",
    ),
    _rule(TRANSIENT_INFRA, r"\btry again later\b"),
)


def classify_reason(reason: str) -> str:
    """The class of an unhinted failure, from its reason text (see :data:`REASON_RULES`).

    Never ``canceled``: a stage that merely *says* it was canceled is a failure like any other
    (contract.md §9); only real cancellation cancels a run. Empty text is ``deterministic``.
    """
    for failure_class, pattern in REASON_RULES:
        if pattern.search(reason):
            return failure_class
    return DETERMINISTIC


def classify_failure(failure_class_hint: str, reason: str) -> str:
    """The one classifier: an explicit hint (aliases normalized) wins, else the reason text.

    An unknown hint (a typo, Kilroy's ``compilation_loop``) is not trusted: the reason decides.
    """
    return normalize_failure_class(failure_class_hint) or classify_reason(reason)


def effective_class(outcome: Outcome) -> str:
    """The class of a ``fail``/``retry`` outcome; ``""`` for the success-like statuses.

    This is the class the cycle breaker, the loop-restart gate and ``final.json`` use.
    """
    if outcome.status not in (Status.FAIL, Status.RETRY):
        return ""
    return classify_failure(outcome.failure_class, outcome.failure_reason)


_HEX_RUN = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7,}\b")
_DIGIT_RUN = re.compile(r"\b\d+\b")
_SPACE_RUN = re.compile(r"\s+")
SIGNATURE_REASON_LIMIT = 240


def normalize_reason(reason: str) -> str:
    """contract.md §9: lowercase; hex runs (≥ 7, with a digit) → ``<hex>``; digit runs → ``<n>``;
    whitespace collapsed; at most 240 characters. Two failures that differ only in ids,
    counts or timestamps normalize to the same text."""
    text = reason.lower()
    text = _HEX_RUN.sub("<hex>", text)
    text = _DIGIT_RUN.sub("<n>", text)
    text = _SPACE_RUN.sub(" ", text).strip()
    return text[:SIGNATURE_REASON_LIMIT]


def failure_signature(node_id: str, failure_class: str, reason: str) -> str:
    """``node_id|class|normalized reason``: the key of the cycle breaker and of final.json.

    The reason is redacted *before* it is normalized: normalizing rewrites digits, after which
    the redaction of files and events would no longer recognise a secret (contract.md §10)."""
    klass = normalize_failure_class(failure_class) or failure_class
    return f"{node_id}|{klass}|{normalize_reason(redaction.current().text(reason))}"
