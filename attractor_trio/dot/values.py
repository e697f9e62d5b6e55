"""Parsing of typed attribute values (spec §2.4): integers, floats, booleans, durations.

Attributes are stored as the strings the author wrote; these functions turn them into typed
values on demand. Each raises :class:`AttributeValueError` with a message a user can act on, so
validation can report a bad value at its declaration and the engine never guesses.
"""

from __future__ import annotations

import re

__all__ = [
    "AttributeValueError",
    "format_duration",
    "parse_bool",
    "parse_duration",
    "parse_float",
    "parse_int",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_INT_RE = re.compile(r"^\s*-?\d+\s*$")
_FLOAT_RE = re.compile(r"^\s*-?(\d+(\.\d*)?|\.\d+)\s*$")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off", ""})


class AttributeValueError(ValueError):
    """An attribute value does not have the type its attribute requires."""


def parse_duration(text: str) -> float:
    """Return seconds for ``250ms``, ``10s``, ``15m``, ``2h``, ``1d``, ``0.5s`` or bare seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise AttributeValueError(
            f"invalid duration {text!r}: use a number with a unit ms, s, m, h or d "
            "(e.g. 250ms, 900s, 15m) or a bare number of seconds"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for display: the shortest exact unit form."""
    millis = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def parse_int(text: str) -> int:
    if not _INT_RE.match(text):
        raise AttributeValueError(f"invalid integer {text!r}: expected a whole number like 3")
    return int(text)


def parse_float(text: str) -> float:
    if not _FLOAT_RE.match(text):
        raise AttributeValueError(f"invalid number {text!r}: expected a number like 0.5")
    return float(text)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise AttributeValueError(f"invalid boolean {text!r}: expected true or false")
