"""Recognising cancellation when nurseries wrap it in exception groups."""

from __future__ import annotations

import trio

__all__ = ["only_cancelled"]


def only_cancelled(exc: BaseException) -> trio.Cancelled | None:
    """The first ``Cancelled`` if ``exc`` is cancellation and nothing else, else ``None``.

    A nursery re-raises its children's ``Cancelled`` inside a ``BaseExceptionGroup``; such a
    group still means "this code was cancelled" and must be treated like a bare ``Cancelled``.
    """
    if isinstance(exc, trio.Cancelled):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(trio.Cancelled)
        if rest is None and matched is not None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            assert isinstance(leaf, trio.Cancelled)
            return leaf
    return None
