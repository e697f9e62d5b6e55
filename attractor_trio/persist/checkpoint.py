"""``checkpoint.json``: the state a run resumes from (spec §5.3, contract.md §2).

The spec fixes six keys — ``timestamp``, ``current_node``, ``completed_nodes``, ``node_retries``,
``context``, ``logs`` (S5.3-02; the spec's struct field ``context_values`` is serialized as
``context``, AMBIG-10). attractor-trio adds ``run_id``, ``node_outcomes`` (each completed node's
outcome, so resume can re-run edge selection from ``current_node`` — S5.3-05), ``visits``,
``failure_signatures`` (cycle-breaker counters survive resume, contract.md §5) and a free-form
``extra`` object.

Loading validates every key's type and names the key and the expected type on failure: a
resume from a damaged checkpoint must stop with a clear message, not a ``KeyError`` deep in
the engine. Unknown top-level keys are ignored (forward compatibility); ``extra`` may be absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final, final

import attrs

from ..core import redaction
from ..errors import AttractorError
from .atomic import (
    CorruptFileError,
    Schema,
    StrPath,
    is_int,
    is_map_of,
    is_object,
    is_str,
    is_str_list,
    json_type_name,
    read_json,
    shape_problem,
    utc_timestamp,
    write_bytes_atomic,
    write_json_atomic,
)
from .commit import DirectorySyncs
from .journaled import ArrayEncoder, ObjectEncoder, dumps_compact
from .recycling import RecyclingWriter

__all__ = [
    "CHECKPOINT_FILE_NAME",
    "Checkpoint",
    "CheckpointEncoder",
    "CheckpointError",
    "checkpoint_writer",
    "load_checkpoint",
    "save_checkpoint",
    "write_checkpoint_bytes",
]

CHECKPOINT_FILE_NAME: Final = "checkpoint.json"


class CheckpointError(AttractorError):
    """``checkpoint.json`` is missing or unusable; the message says which and how to proceed."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: error: {detail}")


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _int_map(values: Mapping[str, int]) -> dict[str, int]:
    return dict(values)


def _any_map(values: Mapping[str, Any]) -> dict[str, Any]:
    return dict(values)


def _outcome_map(values: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {node_id: dict(outcome) for node_id, outcome in values.items()}


@final
@attrs.frozen(kw_only=True)
class Checkpoint:
    """One saved checkpoint. Collections are copied on construction so the caller's later
    mutations cannot change a checkpoint already taken."""

    run_id: str
    current_node: str
    completed_nodes: tuple[str, ...] = attrs.field(converter=_str_tuple)
    node_retries: Mapping[str, int] = attrs.field(factory=dict, converter=_int_map)
    context: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_map)
    logs: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    node_outcomes: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_outcome_map
    )
    visits: Mapping[str, int] = attrs.field(factory=dict, converter=_int_map)
    failure_signatures: Mapping[str, int] = attrs.field(factory=dict, converter=_int_map)
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_any_map)
    timestamp: str = attrs.field(factory=utc_timestamp)
    #: The git workspace (contract.md §10): ``branch``, ``head``, ``node_commits``; or ``None``.
    workspace: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The document written to disk: spec keys first, then the extras."""
        return {
            "timestamp": self.timestamp,
            "current_node": self.current_node,
            "completed_nodes": list(self.completed_nodes),
            "node_retries": dict(self.node_retries),
            "context": dict(self.context),
            "logs": list(self.logs),
            "run_id": self.run_id,
            "node_outcomes": {k: dict(v) for k, v in self.node_outcomes.items()},
            "visits": dict(self.visits),
            "failure_signatures": dict(self.failure_signatures),
            "extra": dict(self.extra),
            **({} if self.workspace is None else {"workspace": dict(self.workspace)}),
        }


def save_checkpoint(logs_root: StrPath, checkpoint: Checkpoint) -> Path:
    """Atomically write ``<logs_root>/checkpoint.json``; return its path."""
    path = Path(logs_root) / CHECKPOINT_FILE_NAME
    write_json_atomic(path, checkpoint.to_json(), compact=True)
    return path


class CheckpointEncoder:
    """Encodes one run's successive checkpoints, re-encoding only what changed since the last.

    The engine checkpoints after every stage; :meth:`encode` gives the same bytes as
    ``write_json_atomic(path, Checkpoint(...).to_json(), compact=True)`` would write, but the
    per-node collections cost O(entries changed) instead of O(nodes so far) when the engine
    keeps them in :class:`~.journaled.JournaledDict` / :class:`~.journaled.JournaledList`
    (see ``journaled.py`` for why; ``tests/test_persist_journaled.py`` checks the
    equivalence). The context arrives already encoded (:meth:`Context.snapshot_json`, or its
    UTF-8 pieces from :meth:`Context.snapshot_pieces`): its values may be mutable and are
    small, so it is encoded whole.
    """

    def __init__(self, convert_outcome: Callable[[Any], Any]) -> None:
        self._completed = ArrayEncoder()
        self._retries = ObjectEncoder()
        # Outcomes carry text (failure reasons): each is redacted when it is encoded, so
        # redaction stays O(entries changed) like the encoding (contract.md §10).
        self._outcomes = ObjectEncoder(convert_outcome, redact=True)
        self._visits = ObjectEncoder()
        self._attempts = ObjectEncoder()

    def encode(
        self,
        *,
        run_id: str,
        current_node: str,
        completed_nodes: Sequence[str],
        node_retries: Mapping[str, int],
        context_json: str | Sequence[bytes],
        logs: Sequence[str],
        node_outcomes: Mapping[str, Any],
        visits: Mapping[str, int],
        failure_signatures: Mapping[str, int],
        restart_count: int,
        restart_failure_signatures: Mapping[str, int],
        node_attempts: Mapping[str, int],
        timestamp: str | None = None,
        workspace: Mapping[str, Any] | None = None,
    ) -> bytes:
        # One list of UTF-8 pieces, joined once: the per-node collections arrive as their
        # encoders' cached chunks, so nothing but that one join grows with the run. The
        # collections' brackets are in the constant pieces around them.
        active = redaction.active  # ``None`` while no secret is registered: nothing to redact
        out = [
            b'{"timestamp":',
            # (the engine's own timestamp is digits, "-", ":", "T", "." and "Z": no escaping)
            _str_json(timestamp) if timestamp else f'"{utc_timestamp()}"'.encode(),
            b',"current_node":',
            encode_basestring(current_node).encode(),
            b',"completed_nodes":[',
        ]
        self._completed.encode_entries(completed_nodes, out)
        out.append(b'],"node_retries":{')
        self._retries.encode_entries(node_retries, out)
        out.append(b'},"context":')
        if isinstance(context_json, str):
            out.append((active.json_text(context_json) if active else context_json).encode())
        elif active is not None:
            out.append(active.json_text(b"".join(context_json).decode()).encode())
        else:
            out += context_json  # (:meth:`Context.snapshot_pieces`: copied once, by the join)
        out += (
            b',"logs":',
            _utf8(dumps_compact(redaction.current().value(list(logs)))) if logs else b"[]",
            b',"run_id":',
            encode_basestring(run_id).encode(),
            b',"node_outcomes":{',
        )
        self._outcomes.encode_entries(node_outcomes, out)
        out.append(b'},"visits":{')
        self._visits.encode_entries(visits, out)
        out += (
            b'},"failure_signatures":',
            # Usually empty: no copy, no redaction pass, no encoder call for those.
            (
                _object_json(redaction.current().value(dict(failure_signatures)))
                if failure_signatures
                else b"{}"
            ),
            b',"extra":{"restart_count":',
            # (an int's JSON is its decimal text: no encoder call for it, every checkpoint)
            b"%d" % restart_count
            if type(restart_count) is int
            else _utf8(dumps_compact(restart_count)),
            b',"restart_failure_signatures":',
            _object_json(dict(restart_failure_signatures)) if restart_failure_signatures else b"{}",
            b',"node_attempts":{',
        )
        self._attempts.encode_entries(node_attempts, out)
        out.append(b"}}")
        if workspace is not None:
            out += (b',"workspace":', _utf8(dumps_compact(dict(workspace))))
        out.append(b"}\n")
        return b"".join(out)


def _str_json(text: str) -> bytes:
    return encode_basestring(text).encode("utf-8")


def _object_json(mapping: dict[str, Any]) -> bytes:
    return _utf8(dumps_compact(mapping)) if mapping else b"{}"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def checkpoint_writer(logs_root: StrPath, owed: DirectorySyncs) -> RecyclingWriter:
    """The writer a run rewrites its checkpoint with after every stage: the stage boundary's
    one commit, which also pays the directory fsyncs the stage owes (``owed``) before its
    rename, and reuses the displaced checkpoint's inode as the next temp (``commit.py``)."""
    return RecyclingWriter(Path(logs_root) / CHECKPOINT_FILE_NAME, owed)


def write_checkpoint_bytes(logs_root: StrPath | RecyclingWriter, data: bytes) -> Path:
    """Atomically write already-encoded checkpoint bytes (from :class:`CheckpointEncoder`,
    which redacted them piece by piece: scanning the whole document again would make every
    stage cost O(stages so far)), into ``logs_root`` or through the run's
    :func:`checkpoint_writer`."""
    if isinstance(logs_root, RecyclingWriter):
        logs_root.write(data)
        return logs_root.path
    path = Path(logs_root) / CHECKPOINT_FILE_NAME
    write_bytes_atomic(path, data, redacted=True)
    return path


def load_checkpoint(logs_root: StrPath) -> Checkpoint:
    """Read and validate ``<logs_root>/checkpoint.json`` (resume step 1, S5.3-03)."""
    path = Path(logs_root) / CHECKPOINT_FILE_NAME
    try:
        doc = read_json(path)
    except FileNotFoundError:
        raise CheckpointError(
            path,
            "no checkpoint found, so there is nothing to resume: LOGS_ROOT is not a run "
            "directory, or its run stopped before its first stage completed and its manifest "
            "does not record the context it started with (start it again with "
            "`attractor-trio run --logs-root NEW_DIR`)",
        ) from None
    except CorruptFileError as exc:
        raise CheckpointError(path, f"{_position(exc)}{exc.detail}; {_DAMAGED_HINT}") from None
    if not isinstance(doc, dict):
        raise CheckpointError(path, f"expected a JSON object, got {json_type_name(doc)}")
    return _checkpoint_from_json(path, doc)


_DAMAGED_HINT: Final = (
    "the checkpoint is damaged and the run cannot be resumed from it; restore the file or "
    "start a new run"
)


def _position(exc: CorruptFileError) -> str:
    return "" if exc.line is None else f"line {exc.line} column {exc.col}: "


_SCHEMA: Final[Schema] = {
    "timestamp": ("a string (RFC 3339 time)", is_str, True),
    "run_id": ("a string", is_str, True),
    "current_node": ("a string (node id)", is_str, True),
    "completed_nodes": ("a list of node id strings", is_str_list, True),
    "node_retries": ("an object mapping node id to an integer", is_map_of(is_int), True),
    "context": ("an object", is_object, True),
    "logs": ("a list of strings", is_str_list, True),
    "node_outcomes": ("an object mapping node id to an object", is_map_of(is_object), True),
    "visits": ("an object mapping node id to an integer", is_map_of(is_int), True),
    "failure_signatures": (
        "an object mapping failure signature to an integer",
        is_map_of(is_int),
        True,
    ),
    "extra": ("an object", is_object, False),
    "workspace": ("an object", is_object, False),
}


def _checkpoint_from_json(path: Path, doc: dict[str, Any]) -> Checkpoint:
    problem = shape_problem(doc, _SCHEMA)
    if problem is not None:
        raise CheckpointError(path, f"{problem}; {_DAMAGED_HINT}")
    return Checkpoint(
        timestamp=doc["timestamp"],
        run_id=doc["run_id"],
        current_node=doc["current_node"],
        completed_nodes=doc["completed_nodes"],
        node_retries=doc["node_retries"],
        context=doc["context"],
        logs=doc["logs"],
        node_outcomes=doc["node_outcomes"],
        visits=doc["visits"],
        failure_signatures=doc["failure_signatures"],
        extra=doc.get("extra", {}),
        workspace=doc.get("workspace"),
    )
