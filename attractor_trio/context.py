"""The run context (spec S5.1): a key/value store shared by the stages, plus an append-only log.

The spec asks for a reader/writer lock because its reference engine shares one context between
threads. Here a run's traversal is a single trio task and every parallel branch works on its
own :meth:`Context.clone` (S3.8-03), so no two tasks ever touch the same instance concurrently
and a plain dict is enough. :class:`Context` is a read-only ``Mapping`` so routing and the
condition language can take it (or any dict) directly.
"""

from __future__ import annotations

import copy
import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Self, SupportsIndex

import attrs

from .dot.conditions import stringify
from .jsontext import encode_str as _encode_str
from .jsontext import json_chunk_encoder, json_encoder

__all__ = ["RESPONSE_PREVIEW_CHARS", "Context", "StageSummary"]

#: How much of a codergen response the ``last_response`` context key keeps (the handler and
#: the simulation backend both record it).
RESPONSE_PREVIEW_CHARS: Final = 200
#: Value types :meth:`Context.clone` shares instead of copying.
_IMMUTABLE: Final = frozenset({str, int, float, bool, type(None)})
#: What no context value is: :meth:`Context.snapshot_pieces`' "no text remembered".
_UNSEEN: Final = object()


class Context(Mapping[str, Any]):
    """Mutable run state. Values should be JSON data; :meth:`snapshot` coerces anything else."""

    def __init__(self, values: Mapping[str, Any] | None = None, logs: Iterable[str] = ()) -> None:
        self._values: dict[str, Any] = {}
        self._logs: list[str] = list(logs)
        #: key -> (its value, its entry's text, the key's JSON): see :meth:`snapshot_pieces`
        self._entry_texts: dict[str, tuple[Any, str, str]] = {}
        if values is not None:
            self.apply_updates(values)

    @classmethod
    def from_snapshot(cls, values: Mapping[str, Any], logs: Iterable[str] = ()) -> Context:
        """Rebuild a context from a checkpoint's ``context`` and ``logs`` (resume, S5.3-04)."""
        return cls(copy.deepcopy(dict(values)), logs)

    # --- Mapping --------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        """``Mapping.get`` without its ``KeyError`` round trip for a missing key (routing, the
        preamble and the traversal ask for several keys per stage, some of them absent)."""
        return self._values.get(key, default)

    def __repr__(self) -> str:
        return f"Context({self._values!r}, logs={len(self._logs)})"

    # --- spec S5.1-02 ---------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        if type(key) is not str and not isinstance(key, str):  # (a str: no isinstance call)
            raise TypeError(f"context keys are strings, got {type(key).__name__}: {key!r}")
        self._values[key] = value

    def get_string(self, key: str, default: str = "") -> str:
        """The value as text, spelled as conditions see it (``true``, not ``True``)."""
        value = self._values.get(key)
        return default if value is None else stringify(value)

    def apply_updates(self, updates: Mapping[str, Any]) -> None:
        """Set every key of ``updates`` in order (a stage's ``context_updates``, S3.2-07)."""
        values = self._values
        for key, value in updates.items():  # a ``str`` key without a call to :meth:`set`
            if type(key) is str:
                values[key] = value
            else:
                self.set(key, value)

    def record_stage(self, entry: list[Any], limit: int, summary_key: str, count_key: str) -> None:
        """Append ``entry`` to the :class:`StageSummary` at ``summary_key`` (the newest
        ``limit`` kept) and count it at ``count_key``, in that order: the traversal's
        completed-stage summary, after every stage, as one call (it was two reads, a
        conversion and an update through a dict). A summary from an older checkpoint (a plain
        list) is converted; one without a count is counted from its length."""
        values = self._values
        summary = values.get(summary_key)
        if type(summary) is not StageSummary:
            summary = StageSummary.of(summary)
        count = values.get(count_key)
        values[summary_key] = summary.appended(entry, limit)
        values[count_key] = (count if type(count) is int else len(summary)) + 1

    def append_log(self, entry: str) -> None:
        self._logs.append(entry)

    @property
    def logs(self) -> tuple[str, ...]:
        """The log so far; a tuple, so appending goes through :meth:`append_log`."""
        return tuple(self._logs)

    def snapshot(self) -> dict[str, Any]:
        """A deep copy that ``json.dumps`` accepts, for checkpoints and the HTTP API.

        Non-JSON values are coerced rather than refused — a checkpoint that cannot be written
        would lose the run: tuples become lists, sets sorted lists, enums their value, attrs
        instances dicts, anything else its ``str``.
        """
        return dict(json.loads(json.dumps(self._values, default=_jsonable)))

    def snapshot_json(self) -> str:
        """:meth:`snapshot` as compact JSON text, without the round trip through objects.
        Coercions are those of :meth:`snapshot`; NaN and infinities are refused
        (``ValueError``), as every persisted document refuses them."""
        return b"".join(self.snapshot_pieces()).decode("utf-8")

    def snapshot_pieces(self) -> list[bytes]:
        """:meth:`snapshot_json` as UTF-8 pieces, for the checkpoint (after every stage), which
        joins them into its own document.

        A :class:`StageSummary` value is its own cached bytes (it is the one large value, and
        it changes by one entry per stage): copied once per checkpoint, into the checkpoint,
        where joining the context's text, encoding it and joining it again made three copies.
        The other entries' texts (``"key":value``) are remembered per key with their value
        while it is a ``str``, ``int``, ``float``, ``bool`` or ``None`` — immutable, so the
        same object has the same text —: most keys keep their value from stage to stage
        (the goal, the run id, the fidelity, empty failure fields), and encoding the dozen
        of them anew through the C encoder (a chunk object per key, colon and comma) was most
        of this method. Any other value is encoded as ``json.dumps`` would, every time (it may
        have been changed in place). The text is exactly what one ``json.dumps`` of the dict
        gives: its entries' texts joined by commas."""
        values = self._values
        known = self._entry_texts
        texts = [""] * len(values)  # each entry's text; a summary's is its "key": only
        summaries: list[tuple[int, StageSummary]] = []
        for position, (key, value) in enumerate(values.items()):
            try:
                last, text, key_json = known[key]
            except KeyError:  # (once per key and context: no ``get`` call every time)
                last, text, key_json = _UNSEEN, "", _encode_str(key)
            if last is value:
                texts[position] = text
                continue
            kind = type(value)
            if kind is str:
                text = f"{key_json}:{_encode_str(value)}"
            elif kind is int:
                text = f"{key_json}:{value}"  # (an ``int``'s JSON is its decimal text)
            elif kind is StageSummary:
                texts[position] = f"{key_json}:"
                summaries.append((position, value))
                known[key] = (_UNSEEN, "", key_json)
                continue
            else:
                text = "".join(_CHUNKS({key: value}, 0))[1:-1]
            known[key] = (value, text, key_json) if kind in _IMMUTABLE else (_UNSEEN, "", key_json)
            texts[position] = text
        if not summaries:
            return [f"{{{','.join(texts)}}}".encode()]
        out: list[bytes] = []
        begin = 0
        for position, summary in summaries:
            head = ",".join(texts[begin : position + 1])  # (ends with the summary's "key":)
            out += (f"{',' if begin else '{'}{head}".encode(), summary.json_bytes())
            begin = position + 1
        out.append(f",{','.join(texts[begin:])}}}".encode() if begin < len(texts) else b"}")
        return out

    def clone(self) -> Context:
        """An independent copy (deep-copied values, copied log) for a parallel branch.

        Every branch of a fan-out gets one, so it skips what needs no copy: the keys were
        checked when they were set, and strings, numbers, booleans and ``None`` are shared
        (immutable); the rest is deep-copied, a :class:`StageSummary` by its cheaper
        :meth:`~StageSummary.__deepcopy__`."""
        twin = Context.__new__(Context)
        twin._values = {
            key: value if type(value) in _IMMUTABLE else copy.deepcopy(value)
            for key, value in self._values.items()
        }
        twin._logs = list(self._logs)
        twin._entry_texts = {}
        return twin


class StageSummary(list[Any]):
    """The completed-stage summary a context carries for fidelity preambles: a list of
    ``[node_id, status, notes]`` entries, newest last, at most a fixed number of them.

    Why a list subclass: every stage appends one entry and then both the checkpoint (the
    context's JSON) and the next codergen prompt (the entries, checked) read all of them — about
    180 µs per stage for a full summary when each was redone from scratch. This keeps each
    entry's JSON text and checked form beside it, so :meth:`appended` and both readers cost
    O(1) entries; it equals, encodes and round-trips through a checkpoint as the plain list it
    replaces. The engine builds a new one per stage (:meth:`appended`) and never mutates one;
    if someone else does (through any of the list's mutating methods, which mark it changed,
    or behind their back when the length changes), :meth:`json_text` and :attr:`stages`
    notice and start over from the list itself. Marking instead of comparing every entry's
    identity on each read keeps the three reads per stage O(1) for a summary of 200.
    """

    __slots__ = ("_changed", "_malformed", "_stages", "_text", "_texts")

    def __init__(self, entries: Iterable[Any] = ()) -> None:
        super().__init__(entries)
        stages = [_checked(e) for e in self]
        self._remember([_dumps(e).encode() for e in self], stages, stages.count(None))

    @classmethod
    def of(cls, value: Any) -> StageSummary:
        """``value`` itself when it is one, else a summary of the list it is (a checkpoint's,
        or an older engine's); ``None`` and other empties give an empty summary."""
        return value if type(value) is cls else cls(list(value or []))

    def appended(self, entry: list[Any], limit: int) -> StageSummary:
        """A new summary: these entries and ``entry``, the newest ``limit`` of them.

        Every stage: a well-formed ``[node_id, status, notes]`` entry is checked and
        encoded inline, and the cached forms are set without a call."""
        current = self
        if self._changed or len(self) != len(self._texts):
            current = StageSummary(self)
        drop = len(current) - limit + 1 if limit > 0 else len(current)
        if drop < 0:
            drop = 0
        new = StageSummary.__new__(StageSummary)
        # (a slice is a plain list, which ``__init__`` copies as a block; a summary, being a
        # subclass, it would copy item by item through an iterator)
        list.__init__(new, current[drop:])
        list.append(new, entry)  # not the marking append: the cached forms follow below
        if type(entry) is list and len(entry) == 3:
            node_id, status, notes = entry
            if type(node_id) is str and type(status) is str and type(notes) is str:
                checked: tuple[str, str, str] | None = (node_id, status, notes)
                # (as ``_dumps`` gives it: ``json.dumps`` escapes a ``str`` with this function)
                text = f"[{_encode_str(node_id)},{_encode_str(status)},{_encode_str(notes)}]"
            else:
                checked, text = _checked(entry), _dumps(entry)
        else:
            checked, text = _checked(entry), _dumps(entry)
        added = text.encode()
        texts = current._texts[drop:]
        texts.append(added)
        stages = current._stages[drop:]
        stages.append(checked)
        malformed = current._malformed
        if malformed and drop:
            malformed -= current._stages[:drop].count(None)
        new._texts, new._stages, new._changed = texts, stages, False
        new._malformed = malformed + (checked is None)
        new._text = _spliced(current._text, current._texts, drop, added)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> StageSummary:
        """A copy whose entries are copied and whose cached forms are reused (they are
        immutable text and tuples): a parallel branch's context copy, every branch, once
        took longer for this one value than for the rest of the context."""
        current = self._current()
        new = StageSummary.__new__(StageSummary)
        list.__init__(new, copy.deepcopy(list.copy(current), memo))
        new._remember(list(current._texts), list(current._stages), current._malformed)
        new._text = current._text
        return new

    def json_text(self) -> str:
        """The summary as compact JSON (what ``json.dumps`` gives for the list)."""
        return self.json_bytes().decode("utf-8")

    def json_bytes(self) -> bytes:
        """:meth:`json_text` in UTF-8: joined once, then carried over by :meth:`appended` (the
        checkpoint asks after every stage, and writes bytes)."""
        current = self._current()
        if current._text is None:
            current._text = b"[" + b",".join(current._texts) + b"]"
        return current._text

    @property
    def stages(self) -> list[tuple[str, str, str]]:
        """The well-formed entries as ``(node_id, status, notes)`` (malformed ones, which only
        an edited checkpoint can hold, are skipped). Their count is kept: asking whether any
        entry is ``None`` looked at every entry, every codergen prompt."""
        current = self._current()
        if not current._malformed:
            return current._stages  # type: ignore[return-value]
        return [stage for stage in current._stages if stage is not None]

    def _remember(
        self, texts: list[bytes], stages: list[tuple[str, str, str] | None], malformed: int
    ) -> None:
        self._texts = texts  # each entry's JSON, UTF-8
        self._stages = stages
        self._malformed = malformed
        self._text: bytes | None = None
        self._changed = False

    def _current(self) -> StageSummary:
        """``self`` when the cached forms still describe the list, else a fresh summary."""
        if not self._changed and len(self) == len(self._texts):
            return self
        return StageSummary(self)

    # --- every mutating list method marks the cached forms stale ---------------------------
    def _mark(self) -> None:
        self._changed = True

    def append(self, item: Any) -> None:
        self._mark()
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self._mark()
        super().extend(items)

    def insert(self, index: SupportsIndex, item: Any) -> None:
        self._mark()
        super().insert(index, item)

    def pop(self, index: SupportsIndex = -1) -> Any:
        self._mark()
        return super().pop(index)

    def remove(self, item: Any) -> None:
        self._mark()
        super().remove(item)

    def clear(self) -> None:
        self._mark()
        super().clear()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._mark()
        super().sort(*args, **kwargs)

    def reverse(self) -> None:
        self._mark()
        super().reverse()

    def __setitem__(self, index: Any, value: Any) -> None:
        self._mark()
        super().__setitem__(index, value)

    def __delitem__(self, index: Any) -> None:
        self._mark()
        super().__delitem__(index)

    def __iadd__(self, items: Iterable[Any]) -> Self:  # type: ignore[misc]
        self._mark()
        return super().__iadd__(items)

    def __imul__(self, count: SupportsIndex) -> Self:
        self._mark()
        return super().__imul__(count)


def _spliced(text: bytes | None, texts: list[bytes], drop: int, added: bytes) -> bytes | None:
    """The JSON of ``texts`` without its first ``drop`` entries and with ``added``, cut from
    ``text`` (the JSON of ``texts``, or ``None`` when it was never asked for): one copy of the
    kept text (a ``memoryview`` of it joined), not a join of every entry."""
    if text is None:
        return None
    start = 1 + sum(map(len, texts[:drop])) + drop  # "[" and the dropped entries' commas
    if start >= len(text) - 1:  # nothing left of the old entries
        return b"[" + added + b"]"
    return b"".join((b"[", memoryview(text)[start:-1], b",", added, b"]"))


def _checked(entry: Any) -> tuple[str, str, str] | None:
    """``(node_id, status, notes)`` of a well-formed summary entry, else ``None``."""
    if (
        isinstance(entry, list | tuple)
        and len(entry) >= 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
    ):
        notes = entry[2] if len(entry) > 2 and isinstance(entry[2], str) else ""
        return (entry[0], entry[1], notes)
    return None


def _dumps(value: Any) -> str:
    """Compact JSON as every persisted copy of the context is written."""
    return _ENCODE(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return str(value)


#: ``json.dumps(value, default=_jsonable, ensure_ascii=False, separators=(",", ":"),
#: allow_nan=False)`` from a prebuilt C encoder (``jsontext``): the context encodes a few
#: small values per stage (its summary entry, the checkpoint's plain values), and rebuilding
#: the encoder per call cost more than encoding them.
_ENCODE: Final = json_encoder(separators=(",", ":"), default=_jsonable)
#: What ``_ENCODE`` joins for a container (:meth:`Context.snapshot_json`'s runs of plain
#: values, every checkpoint): the same encoder, without two call layers.
_CHUNKS: Final = json_chunk_encoder(separators=(",", ":"), default=_jsonable)
