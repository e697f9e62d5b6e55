"""Failure classes (contract.md §5): the vocabulary, explicit-hint aliases, retry blocking, and
the one classifier of unhinted failures (reason text → class)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.core import (
    FAILURE_CLASSES,
    RETRY_BLOCKING_CLASSES,
    Outcome,
    is_retry_blocked,
    normalize_failure_class,
)
from attractor_trio.core.failures import classify_failure, classify_reason, effective_class


def test_the_five_classes() -> None:
    assert FAILURE_CLASSES == (
        "transient_infra",
        "budget_exhausted",
        "deterministic",
        "structural",
        "canceled",
    )
    assert {"deterministic", "structural", "canceled"} == RETRY_BLOCKING_CLASSES


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("transient_infra", "transient_infra"),
        ("transient", "transient_infra"),
        ("infra", "transient_infra"),
        ("transient-infra", "transient_infra"),
        (" Transient Infra ", "transient_infra"),
        ("retryable", "transient_infra"),
        ("budget", "budget_exhausted"),
        ("budget_exhausted", "budget_exhausted"),
        ("Budget-Exhausted", "budget_exhausted"),
        ("deterministic", "deterministic"),
        ("permanent", "deterministic"),
        ("structural", "structural"),
        ("scope_violation", "structural"),
        ("canceled", "canceled"),
        ("cancelled", "canceled"),
        ("CANCELLED", "canceled"),
        ("", ""),
        ("   ", ""),
        ("flaky", ""),  # unknown → "" so the caller classifies the reason text instead
        ("transient_infra_x", ""),
    ],
)
def test_normalize_failure_class(hint: str, expected: str) -> None:
    assert normalize_failure_class(hint) == expected


@given(st.text(max_size=30))
def test_normalize_failure_class_is_total_and_idempotent(hint: str) -> None:
    result = normalize_failure_class(hint)
    assert result in (*FAILURE_CLASSES, "")
    assert normalize_failure_class(result) == result


@pytest.mark.parametrize(
    ("status", "failure_class", "blocked"),
    [
        ("fail", "deterministic", True),
        ("fail", "structural", True),
        ("fail", "canceled", True),
        ("retry", "deterministic", True),
        ("retry", "cancelled", True),  # aliases count
        ("fail", "permanent", True),
        ("fail", "transient_infra", False),
        ("fail", "budget_exhausted", False),
        ("fail", "", False),  # unhinted: retried (classification comes later)
        ("retry", "", False),
        ("success", "deterministic", False),
        ("partial_success", "canceled", False),
        ("skipped", "structural", False),
    ],
)
def test_is_retry_blocked(status: str, failure_class: str, blocked: bool) -> None:
    assert is_retry_blocked(Outcome(status, failure_class=failure_class)) is blocked


# --- classifying a failure from its reason text (contract.md §5) --------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        # Timeouts: our own stage timeout, Python/httpx/openai exception names, Go and gRPC.
        ("stage timed out after 30s", "transient_infra"),
        ("Timeout", "transient_infra"),
        ("httpx.ReadTimeout: The read operation timed out", "transient_infra"),
        ("openai.APITimeoutError: Request timed out.", "transient_infra"),
        ("asyncio.TimeoutError", "transient_infra"),
        ("Get https://x: context deadline exceeded", "transient_infra"),
        ("rpc error: code = DEADLINE_EXCEEDED", "transient_infra"),
        ("connect ETIMEDOUT 10.0.0.1:443", "transient_infra"),
        # Connections and sockets.
        ("read tcp: connection reset by peer", "transient_infra"),
        ("ConnectionResetError: [Errno 104] Connection reset by peer", "transient_infra"),
        ("dial tcp 127.0.0.1:8080: connect: connection refused", "transient_infra"),
        ("Error: read ECONNRESET", "transient_infra"),
        ("openai.APIConnectionError: Connection error.", "transient_infra"),
        ("httpx.ConnectError: [Errno 111]", "transient_infra"),
        ("write: broken pipe", "transient_infra"),
        ("BlockingIOError: [Errno 11] Resource temporarily unavailable", "transient_infra"),
        ("Server disconnected without sending a response.", "transient_infra"),
        ("stream disconnected before completion", "transient_infra"),
        ("connect: network is unreachable", "transient_infra"),
        # DNS.
        ("Temporary failure in name resolution", "transient_infra"),
        ("curl: (6) Could not resolve host: example.com", "transient_infra"),
        ("lookup api.example.com: no such host", "transient_infra"),
        ("getaddrinfo EAI_AGAIN registry.npmjs.org", "transient_infra"),
        # Rate limits and gateway/availability phrases.
        ("429 Too Many Requests", "transient_infra"),
        ("openai.RateLimitError: Error code: 429", "transient_infra"),
        ("rate-limited by upstream, please try again later", "transient_infra"),
        ("HTTP/1.1 502 Bad Gateway", "transient_infra"),
        ("503 Service Unavailable", "transient_infra"),
        ("504 Gateway Timeout", "transient_infra"),
        ("overloaded_error: Overloaded", "transient_infra"),
        ("The server is currently overloaded", "transient_infra"),
        # Budgets.
        ("This model's maximum context length is 8192 tokens", "budget_exhausted"),
        ("context_length_exceeded", "budget_exhausted"),
        ("stop_reason: max_tokens", "budget_exhausted"),
        ("token budget exhausted after 12 turns", "budget_exhausted"),
        ("agent stopped: turn limit reached", "budget_exhausted"),
        ("Quota exceeded for metric requests per minute", "budget_exhausted"),
        ("quotaExceeded", "budget_exhausted"),
        # Billing quota: waiting does not refill it (like the typed quota_exceeded error).
        ("429 Too Many Requests: You exceeded your current quota", "deterministic"),
        ("error code: insufficient_quota", "deterministic"),
        # Structural.
        ("write_scope_violation: touched src/other.py", "structural"),
        ("scope violation outside allowed paths", "structural"),
        # Tricky non-matches: status codes without their phrase, snake_case names, lookalikes.
        ("syntax error at line 502", "deterministic"),
        ("expected 502 got 200", "deterministic"),
        ("HTTP 503", "deterministic"),
        ("assert response.status == 504", "deterministic"),
        ("FAILED tests/test_net.py::test_timeout_handling - assert 1 == 2", "deterministic"),
        ("invalid value for timeout_s: -1", "deterministic"),
        ("ImportError: cannot import name 'RateLimiter'", "deterministic"),
        ("error: call of overloaded 'f(int)' is ambiguous", "deterministic"),
        ("SyntaxError: unexpected EOF while parsing", "deterministic"),
        ("500 Internal Server Error", "deterministic"),
        ("the user canceled the order", "deterministic"),  # only real cancellation is canceled
        ("tool exited with code 1", "deterministic"),
        ("", "deterministic"),
        # Decided: infra, but another attempt on the same input fails the same way.
        ("OSError: [Errno 28] No space left on device", "deterministic"),
        ("process killed by signal SIGKILL (out of memory)", "deterministic"),
    ],
)
def test_classify_reason(reason: str, expected: str) -> None:
    assert classify_reason(reason) == expected
    assert classify_failure("", reason) == expected


@given(st.text(max_size=200))
def test_classifier_is_total_and_deterministic(reason: str) -> None:
    first = classify_reason(reason)
    assert first in FAILURE_CLASSES
    assert first != "canceled"  # reason text never makes a failure canceled
    assert classify_reason(reason) == first


_HINTS = st.sampled_from(
    ["transient_infra", "transient", "budget", "permanent", "structural", "cancelled", "Retryable"]
)


@given(_HINTS, st.text(max_size=80))
def test_an_explicit_hint_always_wins(hint: str, reason: str) -> None:
    assert classify_failure(hint, reason) == normalize_failure_class(hint)
    assert classify_failure(hint, "connection reset by peer") == normalize_failure_class(hint)


@given(st.sampled_from(["", "  ", "flaky", "compilation_loop"]), st.text(max_size=80))
def test_an_empty_or_unknown_hint_falls_back_to_the_reason(hint: str, reason: str) -> None:
    assert classify_failure(hint, reason) == classify_reason(reason)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome("fail", failure_reason="connection refused"), "transient_infra"),
        (Outcome("retry", failure_reason="exit code 2"), "deterministic"),
        (Outcome("fail", failure_reason="timed out", failure_class="permanent"), "deterministic"),
        (Outcome("fail", failure_class="canceled"), "canceled"),
        (Outcome("success", failure_reason="timed out"), ""),
        (Outcome("partial_success", failure_class="deterministic"), ""),
        (Outcome("skipped"), ""),
    ],
)
def test_effective_class(outcome: Outcome, expected: str) -> None:
    assert effective_class(outcome) == expected


def test_retry_blocking_still_needs_an_explicit_hint() -> None:
    """contract.md §5: unhinted failures are retried even when their text reads deterministic."""
    outcome = Outcome("fail", failure_reason="tool exited with code 1")
    assert effective_class(outcome) == "deterministic"
    assert not is_retry_blocked(outcome)


@given(st.text(alphabet="0123456789 :/.-=()", max_size=40))
def test_numbers_alone_never_classify_as_transient(text: str) -> None:
    """Kilroy matched bare 502/503/504 substrings; here a status code needs its phrase."""
    assert classify_reason(f"exit status {text}") == "deterministic"
    assert classify_reason(f"line {text}: expected 502 got 200") == "deterministic"
