"""Containers that remember what changed, and JSON encoders that re-encode only that.

Why: ``checkpoint.json`` is rewritten after every stage and holds several per-node collections
(``completed_nodes``, ``node_outcomes``, ``node_retries``, ``visits``, ``node_attempts``). Encoding
them from scratch makes a stage cost O(stages so far) — about 0.9 ms per stage at 1,000 stages,
and quadratic in total. A stage changes one or two entries, so the engine keeps those collections
in :class:`JournaledDict` / :class:`JournaledList`, and :class:`ObjectEncoder` /
:class:`ArrayEncoder` keep each entry's encoded text and re-encode only the changed ones.

The output is byte-for-byte what ``json.dumps`` (compact separators) gives for the whole
collection, whatever the sequence of mutations: every entry is encoded by ``json.dumps`` itself
(wrapped in a one-entry container, so keys are converted exactly as ``json`` converts them), and
anything the journal cannot describe as "these entries changed" (a deletion, a reorder, a
collection the encoder has not seen before, a plain ``dict``) falls back to a full re-encode.
``tests/test_journaled.py`` checks the equivalence with Hypothesis over random mutation sequences.

No IO and no trio here: decisions as data (and the process's redactor, which is pure).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any, Final, SupportsIndex, TypeVar

from ..core import redaction
from .atomic import json_encoder

__all__ = ["ArrayEncoder", "JournaledDict", "JournaledList", "ObjectEncoder", "dumps_compact"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


#: The compact JSON of every persisted document (see ``atomic.dumps_json``), no newline.
dumps_compact: Final = json_encoder(separators=(",", ":"))


class JournaledDict(dict[K, V]):
    """A ``dict`` that notes which keys were set since :meth:`take_changes`.

    Every mutating method is overridden; one that can move or remove keys (``del``, ``pop``,
    ``popitem``, ``clear``) marks the whole dict as reset, because an encoder keyed by entry
    could no longer reproduce the dict's order. Those are rare (a loop restart clears), so the
    common case — a stage sets a few keys — stays O(changes).
    """

    __slots__ = ("_changed", "_reset")

    def __init__(self, *args: Any, **kwargs: V) -> None:
        super().__init__(*args, **kwargs)
        self._changed: dict[K, None] = {}
        self._reset = True

    def take_changes(self) -> tuple[bool, list[K]]:
        """``(reset, keys set since the last call)`` — and start a new journal."""
        reset, changed = self._reset, list(self._changed)
        self._reset = False
        self._changed.clear()
        return reset, changed

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self._changed[key] = None

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._reset = True

    def update(self, *args: Any, **kwargs: V) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> JournaledDict[K, V]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: K, *default: Any) -> Any:
        self._reset = True
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        self._reset = True
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self._reset = True
        self._changed.clear()

    def __reduce__(self) -> Any:
        """Copies and pickles are journaled dicts too (with a fresh journal)."""
        return (type(self), (dict(self),))


class JournaledList(list[T]):
    """A ``list`` that knows how long a prefix stayed untouched since :meth:`take_stable`.

    Appending (``append``, ``extend``, ``+=``) keeps the prefix; any other mutation counts the
    whole list as changed.
    """

    __slots__ = ("_stable",)

    def __init__(self, items: Iterable[T] = ()) -> None:
        super().__init__(items)
        self._stable = 0

    def take_stable(self) -> int:
        """How many leading items are unchanged since the last call — and start over."""
        stable = self._stable
        self._stable = len(self)
        return stable

    def _touched(self) -> None:
        self._stable = 0

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self._touched()

    def __delitem__(self, index: SupportsIndex | slice) -> None:
        super().__delitem__(index)
        self._touched()

    def __imul__(self, count: SupportsIndex) -> JournaledList[T]:
        self._touched()
        return super().__imul__(count)

    def insert(self, index: SupportsIndex, value: T) -> None:
        super().insert(index, value)
        self._touched()

    def pop(self, index: SupportsIndex = -1) -> T:
        self._touched()
        return super().pop(index)

    def remove(self, value: T) -> None:
        super().remove(value)
        self._touched()

    def clear(self) -> None:
        super().clear()
        self._touched()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._touched()

    def reverse(self) -> None:
        super().reverse()
        self._touched()

    def __reduce__(self) -> Any:
        return (type(self), (list(self),))


def _identity(value: Any) -> Any:
    return value


def _item(item: Any) -> str:
    """One array item's JSON; node ids (strings) without a trip through ``json.dumps``."""
    return encode_basestring(item) if type(item) is str else dumps_compact([item])[1:-1]


class ObjectEncoder:
    """Encodes one mapping as a JSON object, call after call, re-encoding only changed entries.

    ``convert`` turns a value into what ``json.dumps`` should see (``Outcome`` -> its routing
    fields, say); it must depend on the value alone. With ``redact``, an entry holding a secret
    value is encoded redacted (contract.md §10) — checked as it is encoded, so O(changes) too.
    """

    def __init__(self, convert: Callable[[Any], Any] = _identity, *, redact: bool = False) -> None:
        self._convert = convert
        self._redact = redact
        self._source: object = None
        self._fragments: dict[Any, str] = {}
        # The fragments joined, and how many of them: a stage usually only adds a key at the
        # end, and appending its text beats joining every fragment again (O(entries) objects).
        self._joined = ""
        self._joined_count = 0

    def encode(self, mapping: Mapping[Any, Any]) -> str:
        fragments = self._fragments
        if isinstance(mapping, JournaledDict) and mapping is self._source:
            reset, changed = mapping.take_changes()
            if reset:
                self._rebuild(mapping)
            else:
                for key in changed:
                    if key in fragments:
                        self._joined_count = -1  # an entry before the end changed: re-join
                    fragments[key] = self._fragment(key, mapping[key])
        else:
            if isinstance(mapping, JournaledDict):
                mapping.take_changes()
                self._source = mapping
            else:
                self._source = None  # a plain mapping: nothing tells us what changed
            self._rebuild(mapping)
        return "{" + self._body() + "}"

    def _body(self) -> str:
        fragments = self._fragments
        count = len(fragments)
        if self._joined_count < 0 or count < self._joined_count:
            self._joined, self._joined_count = ",".join(fragments.values()), count
        elif count > self._joined_count:
            added = ",".join(itertools.islice(fragments.values(), self._joined_count, None))
            self._joined = f"{self._joined},{added}" if self._joined_count else added
            self._joined_count = count
        return self._joined

    def _rebuild(self, mapping: Mapping[Any, Any]) -> None:
        self._fragments = {key: self._fragment(key, value) for key, value in mapping.items()}
        self._joined_count = -1

    def _fragment(self, key: Any, value: Any) -> str:
        value = self._convert(value)
        if type(key) is str and type(value) is int:  # most entries: a node id and a count
            return f"{encode_basestring(key)}:{value}"
        text = dumps_compact({key: value})[1:-1]
        if self._redact:
            secrets = redaction.current()
            if secrets and secrets.found_in_text(text):
                text = dumps_compact(secrets.value({key: value}))[1:-1]
        return text


class ArrayEncoder:
    """Encodes one sequence as a JSON array, re-encoding only what follows its stable prefix."""

    def __init__(self) -> None:
        self._source: object = None
        self._fragments: list[str] = []
        # The first ``_joined_count`` fragments joined (see ObjectEncoder).
        self._joined = ""
        self._joined_count = 0

    def encode(self, items: Sequence[Any]) -> str:
        if isinstance(items, JournaledList) and items is self._source:
            del self._fragments[items.take_stable() :]
        else:
            if isinstance(items, JournaledList):
                items.take_stable()
                self._source = items
            else:
                self._source = None
            self._fragments = []
        fragments = self._fragments
        if len(fragments) < self._joined_count:  # the stable prefix shrank: the text is stale
            self._joined_count = -1
        fragments.extend(_item(item) for item in items[len(fragments) :])
        count = len(fragments)
        if self._joined_count < 0:
            self._joined, self._joined_count = ",".join(fragments), count
        elif count > self._joined_count:
            added = ",".join(fragments[self._joined_count :])
            self._joined = f"{self._joined},{added}" if self._joined_count else added
            self._joined_count = count
        return "[" + self._joined + "]"
