"""An event's fields as the event log writes them, by a function made for each event name.

Why: a stage emits seven events, and the C JSON encoder was the largest part of each (≈ 10,000
of ≈ 30,000 instructions: its arguments parsed, the dict's items made tuples, every key
encoded again, the chunks joined). The events' fields are keyword arguments spelled in the code, so
for one event name they come with the same names, in the same order, nearly always with values
of the same types. :func:`text_function` makes, once per event name, a function that checks
exactly that (the names, their order, each value's type as first seen) and writes the text
with one f-string: ≈ 4,100 instructions less per event (the seven events of a stage, alone:
220 k → 191 k). Whatever it does not expect (another
shape, another type, a float that is not finite) it declines (``None``), and the encoder
writes that event as before (:func:`generic_tail`): the text is the same either way
(``tests/test_persist_field_text.py`` checks it against ``json.dumps`` with hypothesis).

The code is made by ``exec`` from names that are Python identifiers only (their JSON text is
then just the name in quotes); an event whose fields have other names keeps the encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ..jsontext import encode_str, json_chunk_encoder, json_encoder

__all__ = [
    "ENVELOPE_KEYS",
    "MAX_FUNCTIONS",
    "TailText",
    "functions",
    "generic_tail",
    "text_function",
]

#: The keys every event line starts with (``progress.py``); no field may use one.
ENVELOPE_KEYS: Final = ("seq", "ts", "run_id", "event", "branch")
_ENVELOPE_KEY_SET: Final = frozenset(ENVELOPE_KEYS)

#: ``fields`` → ``", " + the fields' JSON text without its "{"`` (``"}"`` for no fields), or
#: ``None`` when the fields are not what the function was made for.
TailText = Callable[[Mapping[str, Any]], str | None]

_SEPARATORS: Final = (", ", ": ")
_encode_fields: Final = json_chunk_encoder(separators=_SEPARATORS)
#: Made functions kept at most (event names come from code, but a plugin could invent many).
MAX_FUNCTIONS: Final = 256
#: Filled from any thread: a dict's get and set are atomic, and two threads making one
#: event's function at once make equal ones.
_functions: dict[str, TailText] = {}


def generic_tail(fields: Mapping[str, Any]) -> str:
    """The tail by the C encoder: any fields, and its errors (``TypeError``, ``ValueError``)
    for those that are not JSON; a ``ValueError`` for fields that use an envelope key."""
    if not _ENVELOPE_KEY_SET.isdisjoint(fields):
        clash = sorted(_ENVELOPE_KEY_SET.intersection(fields))
        raise ValueError(f"event fields may not use envelope keys: {', '.join(clash)}")
    if not fields:
        return "}"
    return ", " + "".join(_encode_fields(fields, 0))[1:]


#: The made functions by event name, read by ``progress.py`` inline (never rebound).
functions: Final[Mapping[str, TailText]] = _functions


def text_function(event: str, fields: Mapping[str, Any]) -> TailText:
    """The function that writes ``event``'s tail, made for the shape of ``fields`` on the
    first call for the event and kept (:func:`generic_tail` is kept for fields it cannot
    make one for); :func:`generic_tail`, unkept, once :data:`MAX_FUNCTIONS` are."""
    made = _functions.get(event)
    if made is None:
        if len(_functions) >= MAX_FUNCTIONS:
            return generic_tail
        made = _make(fields) or generic_tail
        _functions[event] = made
    return made


#: Each value's check (``{v}`` its name; true when it does NOT fit) and text, by first type.
#: A string has none: ``_str`` raises ``TypeError`` for anything else, which declines (a test
#: per value cost more); a ``str`` subclass (a ``StrEnum``) is written as its string, as the
#: encoder does. ``int`` only exactly (an ``IntEnum`` formats as its name); a float only when
#: finite (else the encoder raises its ``ValueError``); other types go through the encoder
#: value by value (its ``TypeError`` or ``ValueError`` declines too, and the encoder raises it
#: again).
_KINDS: Final[dict[type, tuple[str, str]]] = {
    str: ("", "{{_str({v})}}"),
    int: ("type({v}) is not int", "{{{v}}}"),
    bool: ("type({v}) is not bool", '{{"true" if {v} else "false"}}'),
    float: ("type({v}) is not float or {v} - {v} != 0.0", "{{{v}!r}}"),
    type(None): ("{v} is not None", "null"),
}
_ANY: Final = ("", "{{_value({v})}}")


def _make(fields: Mapping[str, Any]) -> TailText | None:
    """Compile the function for the names and value types of ``fields``."""
    names = list(fields)
    if not all(type(n) is str and n.isidentifier() and n not in _ENVELOPE_KEY_SET for n in names):
        return None
    if not names:
        return _no_fields
    keys = [f"k{i}" for i in range(len(names))]
    values = [f"v{i}" for i in range(len(names))]
    checks = [f"{key} != {name!r}" for key, name in zip(keys, names, strict=True)]
    texts = []
    for i, (name, value) in enumerate(zip(names, fields.values(), strict=True)):
        check, text = _kinds_of(value)
        if check:
            checks.append(check.format(v=values[i]))
        texts.append(f'{", " if i else ""}"{name}": {text.format(v=values[i])}')
    # Another number of fields fails the unpacking (``ValueError``), a value that is not a
    # string ``_str`` (``TypeError``): both decline, at no cost when nothing fails (3.11).
    source = (
        "def tail(fields):\n"
        "    try:\n"
        f"        {', '.join(keys)}, = fields\n"
        f"        {', '.join(values)}, = fields.values()\n"
        f"        if {' or '.join(checks)}:\n"
        "            return None\n"
        f"        return f', {''.join(texts)}}}}}'\n"
        "    except (TypeError, ValueError):\n"
        "        return None\n"
    )
    namespace: dict[str, Any] = {"_str": encode_str, "_value": _value}
    exec(source, namespace)  # names checked above (identifiers only); values are never code
    made: TailText = namespace["tail"]
    return made


def _kinds_of(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        return _KINDS[str]
    return _KINDS.get(type(value), _ANY)


def _no_fields(fields: Mapping[str, Any]) -> str | None:
    return None if fields else "}"


#: A value of a type without its own text: the encoder's text of it alone.
_value: Final = json_encoder(separators=_SEPARATORS)
