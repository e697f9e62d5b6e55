"""``POST /pipelines`` bodies: decode, parse, transform, validate — no IO, no trio.

Two body forms are accepted: JSON ``{"dot": "...", "options": {...}}`` (``application/json``)
and raw DOT (``text/vnd.graphviz``; raw DOT runs with default options). Any other media type
is refused (415) rather than guessed at: a browser may send ``text/plain`` and form bodies to
any site, so sniffing them would let a web page start a run (contract.md §10). Diagnostics come
back in the ``validate --json`` shape so a client renders parse and lint problems the same way.

JSON is decoded strictly (:func:`decode_json`): malformed, nested deeper than
:data:`MAX_JSON_DEPTH`, non-finite numbers, or strings with lone surrogates (``"\\ud800"``
escapes, which no file the engine writes could hold) are a 400 before anything is created.

The DOT text is always parsed as text, never looked up as a path: ``pipeline.load`` treats a
short string as a file name, and a server must not read files a client names.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, NoReturn, final

from attrs import frozen

from ..dot import parse_dot
from ..dot.graph import Diagnostic, Graph, Severity
from ..dot.inputs import BinaryInput, decode_text, first_bad_char
from ..dot.lexer import Positions
from ..dot.transforms import apply_transforms
from ..dot.validate import validate
from ..errors import AttractorError, DotSyntaxError
from .guard import media_type

__all__ = [
    "DOT_MEDIA_TYPE",
    "JSON_MEDIA_TYPE",
    "MAX_JSON_DEPTH",
    "SOURCE_NAME",
    "BadSubmission",
    "Submission",
    "check_source",
    "decode_json",
    "decode_submission",
]

DOT_MEDIA_TYPE: Final = "text/vnd.graphviz"
JSON_MEDIA_TYPE: Final = "application/json"
#: Arrays/objects nested deeper than this are refused (contract.md §10).
MAX_JSON_DEPTH: Final = 64
#: What positions in messages name as the file.
SOURCE_NAME: Final = "<request>"
BODY_KEYS: Final = ("dot", "options")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class BadSubmission(ValueError):
    """The body cannot be a submission (HTTP 400, or ``status``); the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@final
@frozen
class Submission:
    dot: str
    options: Any = None


def decode_submission(content_type: str, body: bytes) -> Submission:
    """The DOT text and raw options of a request body (415 for any other media type)."""
    media = media_type(content_type)
    if media == DOT_MEDIA_TYPE:
        return Submission(dot=_text(body))
    if media == JSON_MEDIA_TYPE:
        return _from_json(decode_json(body))
    raise BadSubmission(
        f"unsupported Content-Type {media or '(none)'!r}: send {JSON_MEDIA_TYPE} "
        f'({{"dot": "...", "options": {{...}}}}) or {DOT_MEDIA_TYPE} (the DOT source)',
        status=415,
    )


def _text(body: bytes) -> str:
    try:
        return decode_text(body)
    except BinaryInput as exc:
        raise BadSubmission(
            f"the body is not UTF-8 text: line {exc.line} column {exc.col}: {exc.what}"
        ) from None


def decode_json(body: bytes) -> object:
    """Strictly decoded JSON (see the module docstring); :class:`BadSubmission` otherwise."""
    text = _text(body)
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise BadSubmission(
            f"invalid JSON body at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        _too_deep()
    except BadSubmission:
        raise
    except ValueError:  # int() refuses integers of more than sys.get_int_max_str_digits()
        raise BadSubmission("invalid JSON body: a number has too many digits") from None
    _check_tree(doc)
    return doc


def _no_constant(name: str) -> NoReturn:
    raise BadSubmission(f"invalid JSON body: {name} is not a JSON number")


def _finite(text: str) -> float:
    """A JSON number; ``1e400`` would become ``inf``, which no JSON file can hold."""
    value = float(text)
    if not math.isfinite(value):
        raise BadSubmission(f"invalid JSON body: {text[:40]} is out of range for a number")
    return value


def _too_deep() -> NoReturn:
    raise BadSubmission(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} arrays/objects")


def _check_tree(doc: object) -> None:
    """Depth and Unicode of every value, without recursion (the tree may be deep)."""
    stack: list[tuple[object, int, str]] = [(doc, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            _check_string(value, where)
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                _too_deep()
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_string(key, f"a key of {where or 'the body'}")
                    stack.append((item, depth + 1, f"{where}.{key}" if where else str(key)))
            else:
                stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))


def _check_string(value: str, where: str) -> None:
    match = _SURROGATE.search(value)
    if match is not None:
        line, col = Positions(value).line_col(match.start())
        raise BadSubmission(
            f"invalid Unicode in {where or 'the body'} (line {line} column {col} of the "
            f"string): a lone UTF-16 surrogate U+{ord(match.group()):04X}"
        )


def _from_json(doc: object) -> Submission:
    if not isinstance(doc, dict):
        raise BadSubmission('the body must be a JSON object like {"dot": "digraph ..."}')
    unknown = sorted(str(k) for k in doc if k not in BODY_KEYS)
    if unknown:
        raise BadSubmission(
            f"unknown key(s) {', '.join(unknown)} in the body; expected "
            '{"dot": "digraph ...", "options": {...}}'
        )
    dot = doc.get("dot")
    if not isinstance(dot, str) or not dot.strip():
        raise BadSubmission('"dot" must be the pipeline\'s DOT source as a non-empty string')
    return Submission(dot=dot, options=doc.get("options"))


def check_source(source: str) -> tuple[Graph | None, list[Diagnostic]]:
    """Parse, transform and lint ``source``: the graph (``None`` if it did not parse) and
    every diagnostic; a parse failure is one ``syntax`` diagnostic with line and column."""
    problem = first_bad_char(source)
    if problem is not None:
        return None, [
            Diagnostic(
                "syntax", Severity.ERROR, problem.message, line=problem.line, col=problem.col
            )
        ]
    try:
        graph = apply_transforms(parse_dot(source, SOURCE_NAME))
    except DotSyntaxError as exc:
        return None, [Diagnostic("syntax", Severity.ERROR, exc.message, line=exc.line, col=exc.col)]
    except AttractorError as exc:
        return None, [Diagnostic("transform", Severity.ERROR, str(exc))]
    return graph, validate(graph)
