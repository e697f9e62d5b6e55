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
from typing import Any, Final

import attrs

from .dot.conditions import stringify

__all__ = ["RESPONSE_PREVIEW_CHARS", "Context"]

#: How much of a codergen response the ``last_response`` context key keeps (the handler and
#: the simulation backend both record it).
RESPONSE_PREVIEW_CHARS: Final = 200


class Context(Mapping[str, Any]):
    """Mutable run state. Values should be JSON data; :meth:`snapshot` coerces anything else."""

    def __init__(self, values: Mapping[str, Any] | None = None, logs: Iterable[str] = ()) -> None:
        self._values: dict[str, Any] = {}
        self._logs: list[str] = list(logs)
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

    def __repr__(self) -> str:
        return f"Context({self._values!r}, logs={len(self._logs)})"

    # --- spec S5.1-02 ---------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"context keys are strings, got {type(key).__name__}: {key!r}")
        self._values[key] = value

    def get_string(self, key: str, default: str = "") -> str:
        """The value as text, spelled as conditions see it (``true``, not ``True``)."""
        value = self._values.get(key)
        return default if value is None else stringify(value)

    def apply_updates(self, updates: Mapping[str, Any]) -> None:
        """Set every key of ``updates`` in order (a stage's ``context_updates``, S3.2-07)."""
        for key, value in updates.items():
            self.set(key, value)

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
        """:meth:`snapshot` as compact JSON text, without the round trip through objects: the
        checkpoint writes it after every stage. Coercions are those of :meth:`snapshot`; NaN and
        infinities are refused (``ValueError``), as every persisted document refuses them."""
        return json.dumps(
            self._values,
            default=_jsonable,
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )

    def clone(self) -> Context:
        """An independent copy (deep-copied values, copied log) for a parallel branch."""
        return Context(copy.deepcopy(self._values), self._logs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return str(value)
