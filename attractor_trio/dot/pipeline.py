"""Front-end lifecycle: PARSE → TRANSFORM → VALIDATE (spec §3.1, §9.1-02 ``prepare_pipeline``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from . import load_dot, parse_dot
from .graph import Diagnostic, Graph
from .inputs import DEFAULT_MAX_INPUT_SIZE
from .transforms import Transform, apply_transforms
from .validate import LintRule, validate, validate_or_raise

__all__ = ["load", "prepare_pipeline"]


def _looks_like_source(text: str) -> bool:
    return "{" in text or "\n" in text


def load(
    path_or_source: str | os.PathLike[str],
    *,
    transforms: Sequence[Transform] | None = None,
    max_size: int = DEFAULT_MAX_INPUT_SIZE,
) -> Graph:
    """Parse a DOT file or DOT text and apply the transforms (built-ins, then registered).

    A ``str`` containing ``{`` or a newline is DOT text; anything else is a path (a file over
    ``max_size`` bytes is refused with ``InputTooLarge`` before it is read whole).
    Raises :class:`~attractor_trio.errors.DotSyntaxError` with ``file:line:col``.
    """
    if isinstance(path_or_source, str) and _looks_like_source(path_or_source):
        graph = parse_dot(path_or_source)
    else:
        graph = load_dot(Path(path_or_source), max_size=max_size)
    return apply_transforms(graph, transforms)


def prepare_pipeline(
    path_or_source: str | os.PathLike[str],
    *,
    transforms: Sequence[Transform] | None = None,
    extra_rules: Sequence[LintRule] | None = None,
    strict: bool = True,
    max_size: int = DEFAULT_MAX_INPUT_SIZE,
) -> tuple[Graph, list[Diagnostic]]:
    """Parse, transform and validate; with ``strict`` raise ``ValidationFailed`` on errors."""
    graph = load(path_or_source, transforms=transforms, max_size=max_size)
    check = validate_or_raise if strict else validate
    return graph, check(graph, extra_rules=extra_rules)
