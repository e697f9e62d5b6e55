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
        dict.__setitem__(self, key, value)  # (not ``super()``: a proxy object per set)
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


#: Entries per sealed chunk of an encoder's text. A stage re-encodes only its own entries, but
#: the *text* of a collection still had to be copied whole into each new checkpoint string, a
#: few times over (every ``+`` and ``join`` of a 60 KB document at 1,000 stages): the copying
#: grew with the run. The text is therefore kept as chunks of this many entries, sealed once
#: as bytes, and the checkpoint is one ``b"".join`` of them — one copy per checkpoint, and
#: per stage only the unsealed tail (fewer than this many entries) is joined again.
CHUNK: Final = 64


class _ChunkedText:
    """The comma-separated fragments of one collection as sealed byte chunks plus a tail.

    ``fragments`` is the owner's list of entry texts in order; :meth:`pieces` yields bytes
    whose concatenation is ``",".join(fragments).encode()``. The owner tells it which
    positions changed (:meth:`changed`) or how many leading ones stayed (:meth:`keep`).

    The tail (the entries after the last sealed chunk) is kept encoded too and extended by
    the entries appended since: a stage appends to most collections, and joining and encoding
    the whole tail again — half a chunk on average, for each of five collections — was most
    of a checkpoint's encoding."""

    __slots__ = ("_begin", "_chunk", "_sealed", "_stale", "_tail", "_tail_end")

    def __init__(self, chunk: int) -> None:
        self._chunk = chunk
        self._sealed: list[bytes] = []  # chunk i: entries [i*chunk, (i+1)*chunk)
        self._begin = 0  # where the tail starts: ``len(_sealed) * chunk``, kept
        self._stale: set[int] = set()  # sealed chunks whose text must be encoded again
        self._tail = b""  # entries [len(_sealed)*chunk, _tail_end), as :meth:`_encode` gives
        self._tail_end = -1  # -1: no valid tail (encode it again)

    def reset(self) -> None:
        self._sealed.clear()
        self._begin = 0
        self._stale.clear()
        self._tail_end = -1

    def changed(self, position: int) -> None:
        """The entry at ``position`` has new text."""
        index = position // self._chunk
        if index < len(self._sealed):
            self._stale.add(index)
        elif position < self._tail_end:
            self._tail_end = -1

    def keep(self, count: int) -> None:
        """Only the first ``count`` entries are still valid."""
        kept = count // self._chunk
        if kept < len(self._sealed):
            del self._sealed[kept:]
            self._begin = kept * self._chunk
            self._tail_end = -1  # the tail starts elsewhere now
        elif count < self._tail_end:
            self._tail_end = -1
        if self._stale:
            self._stale = {index for index in self._stale if index < kept}

    def pieces(self, fragments: Sequence[str], out: list[bytes]) -> None:
        if self._stale:
            self._encode_stale(fragments)
        out += self._sealed
        count = len(fragments)
        end = self._tail_end
        if end == count - 1 and self._begin < end and count - self._begin < self._chunk:
            # The usual stage: one entry appended to a valid tail (a shortcut of
            # :meth:`_unsealed`, which slices and joins for it).
            tail = self._tail = self._tail + f",{fragments[end]}".encode()
            self._tail_end = count
            out.append(tail)
            return
        self._unsealed(fragments, count, out)

    def _encode_stale(self, fragments: Sequence[str]) -> None:
        chunk, sealed = self._chunk, self._sealed
        for index in self._stale:
            begin = index * chunk
            sealed[index] = self._encode(fragments, begin, begin + chunk)
        self._stale.clear()

    def _unsealed(self, fragments: Sequence[str], count: int, out: list[bytes]) -> None:
        """:meth:`pieces` after the sealed chunks: seal the chunks that filled up, then the
        tail (its valid part kept, the rest encoded)."""
        chunk, sealed, begin = self._chunk, self._sealed, self._begin
        while count - begin >= chunk:
            text = self._encode(fragments, begin, begin + chunk)
            sealed.append(text)
            out.append(text)
            begin += chunk
            self._tail_end = -1  # the tail was part of this chunk
        self._begin = begin
        if begin == count:
            self._tail_end = -1
            return
        end = self._tail_end
        if end <= begin or end > count:
            tail = self._encode(fragments, begin, count)
        elif end < count:
            tail = self._tail + self._encode(fragments, end, count)  # "," first: end > 0
        else:
            tail = self._tail
        self._tail, self._tail_end = tail, count
        out.append(tail)

    @staticmethod
    def _encode(fragments: Sequence[str], begin: int, end: int) -> bytes:
        text = ",".join(fragments[begin:end])
        return (f",{text}" if begin else text).encode("utf-8")


class _CollectionEncoder:
    """What the two encoders share: the whole text and its pieces, around the entries each
    encodes its own way (:meth:`encode_entries`, which the checkpoint calls directly, with
    the brackets in its own constant pieces)."""

    _OPEN: bytes
    _CLOSE: bytes

    def encode(self, collection: Any) -> str:
        """The collection's JSON text."""
        return b"".join(self.encode_pieces(collection)).decode("utf-8")

    def encode_pieces(self, collection: Any, out: list[bytes] | None = None) -> list[bytes]:
        """The collection's JSON as UTF-8 pieces appended to ``out`` (a new list by default)."""
        if out is None:
            out = []
        out.append(self._OPEN)
        self.encode_entries(collection, out)
        out.append(self._CLOSE)
        return out

    def encode_entries(self, collection: Any, out: list[bytes]) -> None:
        raise NotImplementedError


class ObjectEncoder(_CollectionEncoder):
    """Encodes one mapping as a JSON object, call after call, re-encoding only changed entries.

    ``convert`` turns a value into what ``json.dumps`` should see (``Outcome`` -> its routing
    fields, say); it must depend on the value alone. With ``redact``, an entry holding a secret
    value is encoded redacted (contract.md §10) — checked as it is encoded, so O(changes) too.
    """

    _OPEN, _CLOSE = b"{", b"}"

    def __init__(
        self,
        convert: Callable[[Any], Any] = _identity,
        *,
        redact: bool = False,
        chunk: int = CHUNK,
    ) -> None:
        # ``None`` for no conversion: an entry's encoding skips a call (every stage, three
        # of the checkpoint's collections).
        self._convert = None if convert is _identity else convert
        self._redact = redact
        self._source: JournaledDict[Any, Any] | None = None
        self._keys: dict[Any, int] = {}  # key -> its position in _fragments
        self._fragments: list[str] = []
        self._text = _ChunkedText(chunk)
        self._last_one: tuple[str, str, str] | None = None  # see :meth:`_one_entry_json`

    def encode_entries(self, mapping: Mapping[Any, Any], out: list[bytes]) -> None:
        """:meth:`encode_pieces` without the braces: the checkpoint's encoder has them in its
        own constant pieces (two appends fewer per collection, every stage).

        The usual stage reads the journal in place (no copy of it, no call to take it) and
        empties it once the entries are encoded; should an entry's encoding fail, the next
        call starts over from the whole mapping."""
        source = self._source
        if mapping is not source or source._reset:  # (``None``: never the mapping)
            self._restart(mapping)
        elif source._changed:
            changed = source._changed
            keys, fragments, convert = self._keys, self._fragments, self._convert
            try:
                for key in changed:
                    value = source[key]
                    if convert is None and type(key) is str and type(value) is int:
                        fragment = f"{encode_basestring(key)}:{value}"  # (``_fragment``'s)
                    else:
                        fragment = self._fragment(key, value)
                    position = keys.get(key)
                    if position is None:
                        keys[key] = len(fragments)
                        fragments.append(fragment)
                    else:
                        fragments[position] = fragment
                        self._text.changed(position)
            except BaseException:
                self._source = None
                raise
            changed.clear()
        self._text.pieces(self._fragments, out)

    def _restart(self, mapping: Mapping[Any, Any]) -> None:
        """Encode the whole mapping, and follow its journal from here on if it keeps one."""
        self._source = None
        if isinstance(mapping, JournaledDict):
            mapping.take_changes()
            self._rebuild(mapping)
            self._source = mapping
        else:
            self._rebuild(mapping)  # a plain mapping: nothing tells us what changed

    def _rebuild(self, mapping: Mapping[Any, Any]) -> None:
        self._text.reset()
        fragments = [self._fragment(key, value) for key, value in mapping.items()]
        self._fragments = fragments
        self._keys = {key: position for position, key in enumerate(mapping)}

    def _fragment(self, key: Any, value: Any) -> str:
        if self._convert is not None:
            value = self._convert(value)
        if type(key) is str and type(value) is int:  # most entries: a node id and a count
            return f"{encode_basestring(key)}:{value}"
        if type(key) is str and type(value) is dict and len(value) == 1:
            text = f"{encode_basestring(key)}:{self._one_entry_json(value)}"
        else:
            text = dumps_compact({key: value})[1:-1]
        if self._redact:
            secrets = redaction.active  # (``None`` while no secret is registered)
            if secrets is not None and secrets.found_in_text(text):
                text = dumps_compact(secrets.value({key: value}))[1:-1]
        return text

    def _one_entry_json(self, value: dict[Any, Any]) -> str:
        """A one-entry object's JSON: an outcome's converted document is usually just its
        status, the same from stage to stage, so a ``str`` name and ``str`` value's text is
        remembered (two equal strings have one text) instead of a trip through the C encoder
        for the entry's two nested objects."""
        ((name, field),) = value.items()
        if type(name) is not str or type(field) is not str:
            return dumps_compact(value)
        last = self._last_one
        if last is None or last[0] != name or last[1] != field:
            last = self._last_one = (
                name,
                field,
                f"{{{encode_basestring(name)}:{encode_basestring(field)}}}",
            )
        return last[2]


class ArrayEncoder(_CollectionEncoder):
    """Encodes one sequence as a JSON array, re-encoding only what follows its stable prefix."""

    _OPEN, _CLOSE = b"[", b"]"

    def __init__(self, *, chunk: int = CHUNK) -> None:
        self._source: JournaledList[Any] | None = None
        self._fragments: list[str] = []
        self._text = _ChunkedText(chunk)

    def encode_entries(self, items: Sequence[Any], out: list[bytes]) -> None:
        """:meth:`encode_pieces` without the brackets (see :meth:`ObjectEncoder.encode_entries`).
        The usual stage appended one item: it is encoded alone, without a slice and a map."""
        source = self._source
        fragments = self._fragments
        if source is not None and items is source:
            stable = source._stable  # (:meth:`JournaledList.take_stable`, read in place)
            count = source._stable = len(source)
            have = len(fragments)
            if stable > have:
                stable = have
        else:
            if isinstance(items, JournaledList):
                items.take_stable()
                self._source = items
            else:
                self._source = None
            stable, count, have = 0, len(items), len(fragments)
        if stable < have:  # (else nothing was dropped, and ``keep`` changes nothing)
            del fragments[stable:]
            self._text.keep(stable)
        if count - stable == 1:
            item = items[stable]
            fragments.append(encode_basestring(item) if type(item) is str else _item(item))
        else:
            fragments += map(_item, items[stable:])
        self._text.pieces(fragments, out)
