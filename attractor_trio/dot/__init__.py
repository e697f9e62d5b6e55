"""The DOT front end: text → :class:`~attractor_trio.dot.graph.Graph` and back.

``parse_dot``/``load_dot`` read the spec's DOT subset (spec §2) with positions in every error;
``to_dot`` writes a graph that parses back to an equal one.
"""

from __future__ import annotations

from ..errors import DotSyntaxError as DotSyntaxError
from .lexer import derive_class as derive_class
from .parser import load_dot as load_dot
from .parser import parse_dot as parse_dot
from .serialize import to_dot as to_dot

__all__ = ["DotSyntaxError", "derive_class", "load_dot", "parse_dot", "to_dot"]
