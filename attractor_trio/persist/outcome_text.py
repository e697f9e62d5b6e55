"""The two texts of its outcome every stage writes: ``status.json`` and the finished marker's.

Why not the generic encoders: every stage writes its outcome twice, as ``status.json``
(:func:`~.atomic.dumps_json`: two-space indent, UTF-8) and inside its finished
``.attempt.json`` marker (``json.dumps`` defaults: ASCII escapes). Both encoded the
document :meth:`Outcome.to_json` builds, string by string: about thirty strings per stage,
where only two or three vary (the notes, the context updates' values). Here the keys are
fixed text, the status and the usual empty fields come from a table, and only the rest is
encoded. The text is byte for byte the generic encoders'; anything unusual (a field that
is not a plain ``str``, a context value ``dumps_json`` leaves to ``json.dumps``) takes the
generic path (``test_persist_outcome_text``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from ..core.outcome import Outcome
from ..core.vocabulary import FailureClass, Status
from ..jsontext import encode_str
from .atomic import _indented, _NotPlain, dumps_json
from .attempt_marker import marker_json_chunks

__all__ = ["marker_outcome_text", "status_text"]

_encode_ascii: Final = json.encoder.encode_basestring_ascii

#: Text of the strings most fields hold (``""``, the statuses, the failure classes), in each
#: of the two encodings (they agree on these ASCII words).
_COMMON: Final[dict[str, str]] = {
    word: encode_str(word) for word in ("", *map(str, Status), *map(str, FailureClass))
}


def _string_texts(outcome: Outcome, encode: Callable[[str], str]) -> list[str] | None:
    """The JSON texts of the outcome's six string fields, in the documents' order (the usual
    words from :data:`_COMMON`, the rest through ``encode``); ``None`` when one is not an
    exact ``str`` (the caller then takes the generic encoder)."""
    common = _COMMON
    texts = []
    for value in (
        outcome.custom or outcome.status._value_,
        outcome.preferred_label,
        outcome.notes,
        outcome.failure_reason,
        outcome.failure_class,
        outcome.failure_signature,
    ):
        if type(value) is not str:
            return None
        text = common.get(value)
        texts.append(encode(value) if text is None else text)
    return texts


def status_text(outcome: Outcome) -> str:
    """``dumps_json(outcome.to_json())``: the ``status.json`` text."""
    global _last
    texts = _string_texts(outcome, encode_str)
    if texts is None:
        return dumps_json(outcome.to_json())
    _last = (outcome, texts)
    status, label, notes, reason, failure_class, signature = texts
    ids = outcome.suggested_next_ids
    updates = outcome.context_updates
    try:
        ids_text = _indented(list(ids), "\n  ") if ids else "[]"
        updates_text = _indented(updates, "\n  ") if updates else "{}"
    except _NotPlain:
        return dumps_json(outcome.to_json())
    return (
        f'{{\n  "outcome": {status},\n  "status": {status},\n  "preferred_label": {label},'
        f'\n  "suggested_next_ids": {ids_text},\n  "context_updates": {updates_text},'
        f'\n  "notes": {notes},\n  "failure_reason": {reason},\n  "failure_class": '
        f'{failure_class},\n  "failure_signature": {signature}\n}}\n'
    )


#: The last outcome :func:`status_text` wrote and its six string texts: the finished marker
#: of the same outcome follows, and where those texts are ASCII without DEL (the usual
#: case) the two encodings agree (``ensure_ascii`` escapes only the rest).
_last: tuple[Outcome | None, list[str]] = (None, [])


def marker_outcome_text(outcome: Outcome) -> str:
    """The finished marker's ``outcome`` value: ``json.dumps(outcome.to_json())``."""
    last, reused = _last
    joined = "".join(reused) if last is outcome else "\x7f"
    agree = joined.isascii() and "\x7f" not in joined  # (DEL: the one ASCII they tell apart)
    texts = reused if agree else _string_texts(outcome, _encode_ascii)
    if texts is None:
        return _generic_marker_text(outcome.to_json())
    status, label, notes, reason, failure_class, signature = texts
    ids = outcome.suggested_next_ids
    updates = outcome.context_updates
    ids_text = _generic_marker_text(list(ids)) if ids else "[]"
    updates_text = _generic_marker_text(updates) if updates else "{}"
    return (
        f'{{"outcome": {status}, "status": {status}, "preferred_label": {label}, '
        f'"suggested_next_ids": {ids_text}, "context_updates": {updates_text}, '
        f'"notes": {notes}, "failure_reason": {reason}, "failure_class": {failure_class}, '
        f'"failure_signature": {signature}}}'
    )


def _generic_marker_text(value: Any) -> str:
    return "".join(marker_json_chunks(value, 0))
