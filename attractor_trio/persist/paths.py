"""``child(parent, name)``: ``parent / name`` for one plain path component, without re-parsing.

Why: on Python 3.11 ``Path.__truediv__`` parses its argument and copies the parent's parts
through ``_parse_args``/``parse_parts`` — about 1.6 µs a join, five times 0.3 µs. A starting
fan-out branch joins five paths (its dir, its log, its first stage dir twice over, that
stage's ``status.json``), on the trio thread, before the last of 1,000 branches can begin its
work (issue #22; ~6 % of the start half in py-spy). The names joined there are node ids,
branch keys and fixed file names: one component each, which needs no parsing.

How: on 3.11, a name that is one component (no separator, not empty, not ``.``) is appended
to the parent's parsed parts with the same private constructor ``_make_child`` ends in; any
other name, and any other Python (whose ``pathlib`` internals differ), takes ``/``. The result
is the same ``Path`` either way (``test_paths``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["child"]

_FAST = sys.version_info[:2] == (3, 11)


def child(parent: Path, name: str) -> Path:
    """``parent / name``, cheaper when ``name`` is a single plain component (see above)."""
    if _FAST and name and name != "." and "/" not in name:
        # ``_from_parsed_parts``, inline (a call fewer: the attempt scope joins two a stage).
        p: Any = parent
        joined: Any = _new_path(type(parent))
        joined._drv = p._drv
        joined._root = p._root
        joined._parts = [*p._parts, name]
        result: Path = joined  # (no ``cast``: that is a call too)
        return result
    return parent / name


_new_path: Any = object.__new__
