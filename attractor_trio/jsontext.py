"""JSON text from prebuilt C encoders: the exact text of ``json.dumps`` with fixed options.

Why a module of its own: ``json.dumps`` with any non-default option builds a ``JSONEncoder``
and then its C encoder on every call, which costs more than encoding the small documents the
engine writes at every stage (events, the checkpoint's pieces, the attempt marker, the
context's summary entries). It imports nothing of the package, so it sits at the bottom layer
where both ``persist`` and ``context`` (which may not import each other's layer) can use it
(issue #22).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["encode_str", "json_chunk_encoder", "json_encoder"]

#: ``json.dumps(text, ensure_ascii=False)`` for a ``str``: the C function the encoders use.
encode_str: Callable[[str], str] = json.encoder.encode_basestring


def json_encoder(
    *, separators: tuple[str, str], default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=separators,
    default=default)`` as one prebuilt function.

    Why: ``json.dumps`` with any non-default option builds a ``JSONEncoder`` and then its C
    encoder on every call, which costs more than encoding a small document; the engine encodes
    several per stage (events, checkpoint pieces). The text is the same; only a circular
    structure, which no run file holds, fails with ``RecursionError`` instead of ``ValueError``.
    """
    encode = json_chunk_encoder(separators=separators, default=default)

    def encoded(value: Any) -> str:
        if type(value) is str:
            return encode_str(value)
        return "".join(encode(value, 0))

    return encoded


def json_chunk_encoder(
    *,
    separators: tuple[str, str],
    default: Callable[[Any], Any] | None = None,
    ensure_ascii: bool = False,
    allow_nan: bool = False,
) -> Callable[[Any, int], Sequence[str]]:
    """What :func:`json_encoder` joins: ``encode(container, 0)`` gives the text of a list or
    dict (not of a bare string) as chunks, for a caller on a hot path (every event) that
    saves the wrapper's call. ``ensure_ascii`` and ``allow_nan``: as plain ``json.dumps``
    writes (the ``.attempt.json`` marker's format)."""
    base = json.JSONEncoder(
        ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=separators, default=default
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        return lambda value, _level: (base.encode(value),)
    item_separator, key_separator = separators
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else encode_str
    encode: Callable[[Any, int], Sequence[str]] = make(
        None, base.default, strings, None, key_separator, item_separator, False, False, allow_nan
    )
    return encode
