"""``manifest.json`` and ``graph.dot``: what a run is, written once at its start (contract.md §2).

``graph.dot`` holds the DOT source exactly as parsed and ``manifest.dot_sha256`` its SHA-256,
so ``resume`` can tell whether the pipeline file changed since the run began. ``graph.dot`` is
written first: a manifest on disk implies the graph it describes is there too. Both writes are
atomic (the Go engine wrote ``graph.dot`` non-atomically).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, final

import attrs

from .._version import __version__
from .atomic import (
    Schema,
    StrPath,
    is_object,
    is_str,
    is_str_list,
    or_null,
    read_json_object,
    utc_timestamp,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "GRAPH_FILE_NAME",
    "MANIFEST_FILE_NAME",
    "Manifest",
    "dot_sha256",
    "read_manifest",
    "write_manifest",
]

MANIFEST_FILE_NAME: Final = "manifest.json"
GRAPH_FILE_NAME: Final = "graph.dot"


def _str_tuple(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(values)


@final
@attrs.frozen(kw_only=True)
class Manifest:
    """The content of ``manifest.json``. ``name`` is the digraph id, ``label`` the graph label
    (contract.md §9); ``dot_path`` is absolute, or ``None`` for graphs built through the API."""

    run_id: str
    name: str
    label: str
    goal: str
    dot_path: str | None
    dot_sha256: str
    start_time: str
    engine_version: str
    argv: tuple[str, ...] = attrs.field(converter=_str_tuple)
    # The context the run was started with (``--set``, the API's ``context=``): what resume
    # starts from when the run died before its first checkpoint. ``None`` in a manifest
    # written before this key existed.
    context: Mapping[str, Any] | None = None
    # The options the run was started with (the CLI's run options, JSON values), which
    # ``resume`` reuses unless given again (contract.md §10). ``None`` when not recorded.
    options: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "label": self.label,
            "goal": self.goal,
            "dot_path": self.dot_path,
            "dot_sha256": self.dot_sha256,
            "start_time": self.start_time,
            "engine_version": self.engine_version,
            "argv": list(self.argv),
            "context": None if self.context is None else dict(self.context),
            "options": None if self.options is None else dict(self.options),
        }


def dot_sha256(dot_source: str) -> str:
    """Hex SHA-256 of the DOT source's UTF-8 bytes (what ``graph.dot`` contains)."""
    return hashlib.sha256(dot_source.encode("utf-8")).hexdigest()


def write_manifest(
    logs_root: StrPath,
    *,
    run_id: str,
    name: str,
    label: str,
    goal: str,
    dot_path: StrPath | None,
    dot_source: str,
    argv: Sequence[str],
    context: Mapping[str, Any] | None = None,
    start_time: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Write ``graph.dot`` then ``manifest.json`` into ``logs_root`` (which must exist).
    ``context`` is the run's starting context (JSON values), ``{}`` when none was given."""
    root = Path(logs_root)
    manifest = Manifest(
        run_id=run_id,
        name=name,
        label=label,
        goal=goal,
        dot_path=None if dot_path is None else os.path.abspath(dot_path),
        dot_sha256=dot_sha256(dot_source),
        start_time=utc_timestamp() if start_time is None else start_time,
        engine_version=__version__,
        argv=argv,
        context=dict(context or {}),
        options=None if options is None else dict(options),
    )
    write_text_atomic(root / GRAPH_FILE_NAME, dot_source)
    write_json_atomic(root / MANIFEST_FILE_NAME, manifest.to_json())
    return manifest


_SCHEMA: Final[Schema] = {
    "run_id": ("a string", is_str, True),
    "name": ("a string", is_str, True),
    "label": ("a string", is_str, True),
    "goal": ("a string", is_str, True),
    "dot_path": ("a string or null", or_null(is_str), True),
    "dot_sha256": ("a string", is_str, True),
    "start_time": ("a string (RFC 3339 time)", is_str, True),
    "engine_version": ("a string", is_str, True),
    "argv": ("a list of strings", is_str_list, True),
    "context": ("an object or null", or_null(is_object), False),
    "options": ("an object or null", or_null(is_object), False),
}


def read_manifest(logs_root: StrPath) -> Manifest | None:
    """The run's manifest, or ``None`` when ``logs_root`` has none (not a run directory, or a
    run that failed before starting). A manifest that exists but is damaged raises
    :class:`CorruptFileError` naming the key and the expected type."""
    path = Path(logs_root) / MANIFEST_FILE_NAME
    try:
        doc = read_json_object(path, "manifest", _SCHEMA)
    except FileNotFoundError:
        return None
    return Manifest(**{key: doc[key] for key in _SCHEMA if key in doc})
