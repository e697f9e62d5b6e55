"""The codergen backend interface (spec S4.5-10) and the typed provider error taxonomy.

Every backend — API adapters, CLI agents, the simulator — reports a failed LLM call by raising
one :class:`ProviderError` subclass (unified-llm spec, digest Part 2A). The engine does not care
which vendor failed, only *what kind* of failure it was, because the kind decides whether a
retry can help. That decision lives in exactly one table, :data:`FAILURE_CLASS_BY_KIND`
(contract.md §9), so a provider adapter, the simulator and the codergen handler can never disagree
about it. Likewise :func:`kind_for_http_status` is the one place an HTTP status becomes a kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..core.failures import BUDGET_EXHAUSTED, CANCELED, DETERMINISTIC, TRANSIENT_INFRA
from ..errors import AttractorError

if TYPE_CHECKING:
    from ..context import Context
    from ..core.outcome import Outcome
    from ..dot.graph import Node

__all__ = [
    "ERROR_KINDS",
    "FAILURE_CLASS_BY_KIND",
    "AbortError",
    "AccessDeniedError",
    "AuthenticationError",
    "CodergenBackend",
    "ConfigurationError",
    "ContentFilterError",
    "ContextLengthError",
    "InvalidRequestError",
    "NetworkError",
    "NotFoundError",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerError",
    "error_for_http_status",
    "error_from_kind",
    "failure_class_of",
    "kind_for_http_status",
]


@runtime_checkable
class CodergenBackend(Protocol):
    """What runs an LLM stage (S4.5-10).

    Return the response text (the handler turns it into ``success``) or a full
    :class:`~attractor_trio.core.outcome.Outcome` (returned unchanged, S4.5-04). Raise a
    :class:`ProviderError` for a failed call so the failure gets the right class. Take no
    timeout: the engine bounds the attempt with a cancel scope, and ``trio.Cancelled`` must be
    allowed to propagate.
    """

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome: ...


#: Kind → failure class (contract.md §9). ``transient_infra`` and ``budget_exhausted`` are retried.
FAILURE_CLASS_BY_KIND: Mapping[str, str] = {
    "rate_limit": TRANSIENT_INFRA,
    "server_error": TRANSIENT_INFRA,
    "timeout": TRANSIENT_INFRA,
    "network": TRANSIENT_INFRA,
    "auth": DETERMINISTIC,
    "access_denied": DETERMINISTIC,
    "invalid_request": DETERMINISTIC,
    "not_found": DETERMINISTIC,
    "content_filter": DETERMINISTIC,
    "quota_exceeded": DETERMINISTIC,
    "configuration": DETERMINISTIC,
    "context_length": BUDGET_EXHAUSTED,
    "aborted": CANCELED,
}
ERROR_KINDS: tuple[str, ...] = tuple(FAILURE_CLASS_BY_KIND)


class ProviderError(AttractorError):
    """A failed provider call. Subclasses fix :attr:`kind`; the bare class is "unknown".

    An unknown provider error counts as ``server_error`` (transient): the unified-llm spec
    says unknown errors default to retryable. ``retryable`` defaults to "another attempt of the
    same request may succeed", i.e. the kind's class is ``transient_infra`` — note that makes
    ``timeout`` retryable, because contract.md §9 classes it transient (the SDK-level default of
    not retrying timeouts is the provider layer's own business).

    ``str(exc)`` is what ends up in ``failure_reason``: the provider, the HTTP status when
    there is one, and the message, e.g. ``anthropic: HTTP 429: rate limit exceeded``.
    """

    kind: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        error_code: str = "",
        retryable: bool | None = None,
        retry_after: float | None = None,
        raw: Any = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.error_code = error_code
        self.retryable = (
            FAILURE_CLASS_BY_KIND[self.kind] == TRANSIENT_INFRA if retryable is None else retryable
        )
        self.retry_after = retry_after
        self.raw = raw
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [p for p in (self.provider, self._status_text()) if p]
        return ": ".join([*parts, self.message])

    def _status_text(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else ""

    @property
    def failure_class(self) -> str:
        return FAILURE_CLASS_BY_KIND[self.kind]


class AuthenticationError(ProviderError):
    kind = "auth"


class AccessDeniedError(ProviderError):
    kind = "access_denied"


class NotFoundError(ProviderError):
    kind = "not_found"


class InvalidRequestError(ProviderError):
    kind = "invalid_request"


class ContextLengthError(ProviderError):
    kind = "context_length"


class ContentFilterError(ProviderError):
    kind = "content_filter"


class RateLimitError(ProviderError):
    kind = "rate_limit"


class ServerError(ProviderError):
    kind = "server_error"


class RequestTimeoutError(ProviderError):
    kind = "timeout"


class NetworkError(ProviderError):
    kind = "network"


class AbortError(ProviderError):
    """The request was aborted. Inside trio, real cancellation is ``trio.Cancelled``, not this."""

    kind = "aborted"


class QuotaExceededError(ProviderError):
    kind = "quota_exceeded"


class ConfigurationError(ProviderError):
    """No usable provider (missing key, unknown provider name): the setup, not the request."""

    kind = "configuration"


_CLASS_BY_KIND: Mapping[str, type[ProviderError]] = {
    cls.kind: cls
    for cls in (
        AuthenticationError,
        AccessDeniedError,
        NotFoundError,
        InvalidRequestError,
        ContextLengthError,
        ContentFilterError,
        RateLimitError,
        ServerError,
        RequestTimeoutError,
        NetworkError,
        AbortError,
        QuotaExceededError,
        ConfigurationError,
    )
}


def error_from_kind(kind: str, message: str, **kwargs: Any) -> ProviderError:
    """The typed error for ``kind`` (one of :data:`ERROR_KINDS`); ``kwargs`` as for the class."""
    try:
        cls = _CLASS_BY_KIND[kind]
    except KeyError:
        raise ValueError(
            f"unknown provider error kind {kind!r}: expected one of {', '.join(ERROR_KINDS)}"
        ) from None
    return cls(message, **kwargs)


def failure_class_of(exc: BaseException) -> str:
    """The failure class of a provider error; ``""`` for anything else (left to classify).

    An exception group (a backend that runs a nursery) has a class only when every leaf is a
    provider error and they all agree — a mixed group is not guessed at.
    """
    if isinstance(exc, ProviderError):
        return exc.failure_class
    if isinstance(exc, BaseExceptionGroup):
        classes = {failure_class_of(leaf) for leaf in exc.exceptions}
        return classes.pop() if len(classes) == 1 else ""
    return ""


_CONTEXT_LENGTH_HINTS = (
    "context length",
    "context_length",
    "context window",
    "too many tokens",
    "maximum context",
    "prompt is too long",
)
_CONTENT_FILTER_HINTS = ("content filter", "content_filter", "content policy", "safety")
_QUOTA_HINTS = ("insufficient_quota", "quota", "billing")
_KIND_BY_STATUS: Mapping[int, str] = {
    400: "invalid_request",
    401: "auth",
    402: "quota_exceeded",
    403: "access_denied",
    404: "not_found",
    408: "timeout",
    413: "context_length",
    422: "invalid_request",
    429: "rate_limit",
    504: "timeout",
}


def _mentions(message: str, hints: tuple[str, ...]) -> bool:
    lowered = message.lower()
    return any(hint in lowered for hint in hints)


def kind_for_http_status(status: int, message: str = "") -> str:
    """contract.md §9: an HTTP error status, refined by its message, → an error kind.

    Vendors overload statuses, so the message refines three of them: a context-length message
    is ``context_length`` whatever the status; a 400/403/422 that mentions a content filter is
    ``content_filter``; a 429 about quota or billing is ``quota_exceeded`` (OpenAI's
    ``insufficient_quota``), which waiting does not fix. Unknown statuses are ``server_error``:
    the unified-llm spec says unknown errors default to retryable.
    """
    if _mentions(message, _CONTEXT_LENGTH_HINTS):
        return "context_length"
    if status in (400, 403, 422) and _mentions(message, _CONTENT_FILTER_HINTS):
        return "content_filter"
    if status == 429 and _mentions(message, _QUOTA_HINTS):
        return "quota_exceeded"
    return _KIND_BY_STATUS.get(status, "server_error")


def error_for_http_status(
    status: int, message: str, *, provider: str = "", **kwargs: Any
) -> ProviderError:
    """The typed error for an HTTP error response (status code recorded on the error)."""
    kind = kind_for_http_status(status, message)
    return error_from_kind(kind, message, provider=provider, status_code=status, **kwargs)
