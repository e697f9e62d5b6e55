"""``Retry-After`` parsing shared by every adapter (spec Part 2A: honor it, bounded)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["retry_after_from_headers", "retry_after_seconds"]


def _non_negative(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Delta-seconds or an HTTP-date (relative to the wall clock ``now``); junk → ``None``."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """``retry-after-ms`` (OpenAI's) first, then ``Retry-After``; ``None`` when absent."""
    millis = _non_negative(headers.get("retry-after-ms", ""))
    if millis is not None:
        return millis / 1000
    return retry_after_seconds(headers.get("retry-after"), now)
