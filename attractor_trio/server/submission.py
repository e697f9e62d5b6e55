"""``POST /pipelines`` bodies: decode, parse, transform, validate — no IO, no trio.

Two body forms are accepted: JSON ``{"dot": "...", "options": {...}}`` and raw DOT
(``text/vnd.graphviz``; raw DOT runs with default options). Diagnostics come back in the
``validate --json`` shape so a client renders parse and lint problems the same way.

The DOT text is always parsed as text, never looked up as a path: ``pipeline.load`` treats a
short string as a file name, and a server must not read files a client names.
"""

from __future__ import annotations

import json
from typing import Any, Final, final

from attrs import frozen

from ..dot import parse_dot
from ..errors import AttractorError, DotSyntaxError
from ..graph import Diagnostic, Graph, Severity
from ..transforms import apply_transforms
from ..validate import validate

__all__ = [
    "DOT_MEDIA_TYPES",
    "SOURCE_NAME",
    "BadSubmission",
    "Submission",
    "check_source",
    "decode_submission",
]

DOT_MEDIA_TYPES: Final = ("text/vnd.graphviz", "text/plain")
JSON_MEDIA_TYPES: Final = ("application/json",)
#: What positions in messages name as the file.
SOURCE_NAME: Final = "<request>"
BODY_KEYS: Final = ("dot", "options")


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


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def decode_submission(content_type: str, body: bytes) -> Submission:
    """The DOT text and raw options of a request body.

    A body with no or another content type is taken as JSON when it starts with ``{`` and as
    DOT otherwise (``curl --data-binary @p.dot`` sends ``x-www-form-urlencoded``).
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadSubmission(f"the body is not UTF-8 text (byte {exc.start})") from None
    media = _media_type(content_type)
    is_json = media in JSON_MEDIA_TYPES or (
        media not in DOT_MEDIA_TYPES and text.lstrip().startswith("{")
    )
    if not is_json:
        return Submission(dot=text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadSubmission(
            f"invalid JSON body at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return _from_json(doc)


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
    try:
        graph = apply_transforms(parse_dot(source, SOURCE_NAME))
    except DotSyntaxError as exc:
        return None, [Diagnostic("syntax", Severity.ERROR, exc.message, line=exc.line, col=exc.col)]
    except AttractorError as exc:
        return None, [Diagnostic("transform", Severity.ERROR, str(exc))]
    return graph, validate(graph)
