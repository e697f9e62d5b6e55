"""The exception tree, translated to exit codes at the CLI boundary (ARCHITECTURE pattern 5)."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Any

from attrs import frozen

__all__ = [
    "AttractorError",
    "ConfigError",
    "Diagnostic",
    "DotSyntaxError",
    "LogsRootInUseError",
    "Severity",
    "ValidationFailed",
    "error_line",
]


class AttractorError(Exception):
    """Base of every error this package raises on purpose."""


class DotSyntaxError(AttractorError):
    """The DOT source is not in the supported subset; carries ``file:line:col``."""

    def __init__(self, message: str, *, line: int, col: int, file: str = "<string>") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col
        self.file = file

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: error: {self.message}"


# A validation finding lives here, beside the error that carries it, so this module stays a leaf
# that every layer (the front end included) can import.
class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@frozen
class Diagnostic:
    """One lint finding (spec §7.1): rule, severity, message, and where it points."""

    rule: str
    severity: Severity
    message: str
    node_id: str | None = None
    edge: tuple[str, str] | None = None
    fix: str | None = None
    line: int = 0
    col: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
            "node_id": self.node_id,
            "edge": None if self.edge is None else {"from": self.edge[0], "to": self.edge[1]},
            "line": self.line,
            "col": self.col,
            "fix": self.fix,
        }

    def format(self, path: str) -> str:
        """``FILE:LINE:COL: severity: message`` (contract.md §9)."""
        where = f"{path}:{self.line}:{self.col}" if self.line else path
        text = f"{where}: {self.severity.value}: {self.message} [{self.rule}]"
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class ValidationFailed(AttractorError):
    """``validate_or_raise`` found ERROR diagnostics; the graph must not run."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity.value == "error"]
        lines = "\n".join(f"  [{d.rule}] {d.message}" for d in errors)
        super().__init__(f"pipeline has {len(errors)} validation error(s):\n{lines}")


# The spec (§7.3) names this ValidationError; keep that name as an alias.
ValidationError = ValidationFailed


class ConfigError(AttractorError):
    """A run config, option or environment value is invalid."""


class LogsRootInUseError(ConfigError):
    """The logs root already holds a run (its ``manifest.json``): never reused (contract.md §10).

    Raised by ``run``/``open_run`` before any file is touched; continue that run with
    ``resume`` or choose another logs root. A ``ConfigError``, so the CLI exits 2.
    """


_POSITIONED = re.compile(r"^\S[^\n]*?(:\d+:\d+)?: error: ")


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for ``exc``: messages about a file (``FILE[:LINE:COL]: error:
    ...``) as they are, everything else after ``attractor-trio: error:``."""
    text = str(exc)
    return text if _POSITIONED.match(text) else f"attractor-trio: error: {text}"
