"""``final.json``: a run's terminal record, written exactly once (contract.md §2).

The engine writes it from one shielded ``finally``, before the terminal event. Writing it twice
would mean two code paths each believe they ended the run — a bug that the Go engine hid behind
an idempotence flag. Here the file is created *exclusively* (temp file hard-linked into place):
a second write raises :class:`FinalAlreadyWrittenError`, also across processes, and a reader
never sees a half-written record.

The record's enumerations are checked when it is built, so an invalid ``status`` or
``exit_path`` is a loud error at the call site rather than a file that ``status`` cannot read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, final

import attrs

from ..core.vocabulary import ExitPath, FailureClass
from ..errors import AttractorError
from .atomic import (
    CorruptFileError,
    Schema,
    StrPath,
    dumps_json,
    is_number,
    is_object,
    is_str,
    is_str_list,
    or_null,
    read_json_object,
    write_bytes_atomic,
)

__all__ = [
    "EXIT_PATHS",
    "FAILURE_CLASSES",
    "FINAL_FILE_NAME",
    "FINAL_STATUSES",
    "FinalAlreadyWrittenError",
    "FinalRecord",
    "read_final",
    "write_final",
]

FINAL_FILE_NAME: Final = "final.json"
FINAL_STATUSES: Final = frozenset({"success", "fail", "canceled"})
EXIT_PATHS: Final = frozenset(ExitPath)
FAILURE_CLASSES: Final = frozenset(FailureClass)


class FinalAlreadyWrittenError(AttractorError):
    """``final.json`` exists already: some code path tried to end the run a second time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path}: error: final.json is already written; a run's terminal record is "
            "written exactly once (this is an engine bug)"
        )


def _one_of(allowed: frozenset[str]) -> Callable[[object, attrs.Attribute[str], str], None]:
    def check(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in allowed:
            raise ValueError(
                f"{attribute.name} must be one of {', '.join(sorted(allowed))}; got {value!r}"
            )

    return check


def _failure_class_check(
    _instance: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and value not in FAILURE_CLASSES:
        raise ValueError(
            f"{attribute.name} must be null or one of {', '.join(sorted(FAILURE_CLASSES))}; "
            f"got {value!r}"
        )


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@final
@attrs.frozen(kw_only=True)
class FinalRecord:
    """The content of ``final.json``. ``failure_*`` are ``None`` for a successful run;
    ``failure_reason`` is the causal stage's raw reason and ``failure_signature`` its
    normalized form (contract.md §5)."""

    run_id: str
    status: str = attrs.field(validator=_one_of(FINAL_STATUSES))
    exit_path: str = attrs.field(validator=_one_of(EXIT_PATHS))
    completed_nodes: tuple[str, ...] = attrs.field(converter=_str_tuple)
    start_time: str
    end_time: str
    duration_s: float = attrs.field(converter=float)
    failure_reason: str | None = None
    failure_class: str | None = attrs.field(default=None, validator=_failure_class_check)
    failure_signature: str | None = None
    #: The git workspace's ``{branch, head}`` (contract.md §10); absent from the file without one.
    workspace: Mapping[str, str] | None = None

    def __attrs_post_init__(self) -> None:
        if self.status == "success" and self.exit_path != ExitPath.COMPLETED:
            raise ValueError(
                f"a successful run must have exit_path 'completed', not {self.exit_path!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "failure_reason": self.failure_reason,
            "failure_class": self.failure_class,
            "failure_signature": self.failure_signature,
            "exit_path": self.exit_path,
            "completed_nodes": list(self.completed_nodes),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration_s": self.duration_s,
            **({} if self.workspace is None else {"workspace": dict(self.workspace)}),
        }


def write_final(logs_root: StrPath, record: FinalRecord, *, name: str = FINAL_FILE_NAME) -> Path:
    """Create ``<logs_root>/final.json`` (or ``name``: a dead segment's ``final-<k>.json``);
    raise :class:`FinalAlreadyWrittenError` if it exists."""
    path = Path(logs_root) / name
    try:
        write_bytes_atomic(path, dumps_json(record.to_json()).encode("utf-8"), exclusive=True)
    except FileExistsError:
        raise FinalAlreadyWrittenError(path) from None
    return path


_SCHEMA: Final[Schema] = {
    "run_id": ("a string", is_str, True),
    "status": ("a string", is_str, True),
    "failure_reason": ("a string or null", or_null(is_str), True),
    "failure_class": ("a string or null", or_null(is_str), True),
    "failure_signature": ("a string or null", or_null(is_str), True),
    "exit_path": ("a string", is_str, True),
    "completed_nodes": ("a list of node id strings", is_str_list, True),
    "start_time": ("a string (RFC 3339 time)", is_str, True),
    "end_time": ("a string (RFC 3339 time)", is_str, True),
    "duration_s": ("a number", is_number, True),
    "workspace": ("an object", is_object, False),
}


def read_final(logs_root: StrPath) -> FinalRecord | None:
    """The terminal record, or ``None`` while the run has not ended (or died without one).
    A damaged file raises :class:`CorruptFileError` naming the problem."""
    path = Path(logs_root) / FINAL_FILE_NAME
    try:
        doc = read_json_object(path, "final record", _SCHEMA)
    except FileNotFoundError:
        return None
    try:
        return FinalRecord(**{key: doc[key] for key in _SCHEMA if key in doc})
    except ValueError as exc:
        raise CorruptFileError(path, f"invalid final record: {exc}") from None
