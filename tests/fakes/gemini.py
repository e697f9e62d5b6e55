"""Gemini wire-format builders for the fake server: stream chunks, SSE replies, error bodies.

Shapes follow the native API: each SSE ``data:`` is a partial ``GenerateContentResponse``
(``candidates[0].content.parts``, ``finishReason`` on the last chunk, cumulative
``usageMetadata``); errors are ``{"error": {code, message, status, details}}``.
"""

from __future__ import annotations

import json
from typing import Any

from .server import Reply

__all__ = [
    "MODEL_VERSION",
    "PATH",
    "blocked_prompt",
    "call_part",
    "chunk",
    "error_body",
    "error_reply",
    "event",
    "json_error",
    "quota_failure",
    "retry_info",
    "stream",
    "text_stream",
    "usage",
]

MODEL_VERSION = "gemini-2.5-flash-001"
#: Path regex for ``FakeServer.script``: any model's streaming endpoint.
PATH = r"^/v1beta/models/[^/]+:streamGenerateContent$"


def usage(prompt: int = 11, candidates: int = 7, thoughts: int = 0) -> dict[str, Any]:
    body = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
    }
    if thoughts:
        body["thoughtsTokenCount"] = thoughts
    return body


def call_part(name: str, args: dict[str, Any], signature: str = "") -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature:
        part["thoughtSignature"] = signature
    return part


def chunk(
    *parts: dict[str, Any],
    finish: str = "",
    usage_metadata: dict[str, Any] | None = None,
    finish_message: str = "",
) -> dict[str, Any]:
    """One partial ``GenerateContentResponse``; text parts may be given as plain strings."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    if finish_message:
        candidate["finishMessage"] = finish_message
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL_VERSION}
    if usage_metadata is not None:
        body["usageMetadata"] = usage_metadata
    return body


def blocked_prompt(reason: str = "SAFETY") -> dict[str, Any]:
    return {
        "promptFeedback": {"blockReason": reason, "safetyRatings": []},
        "usageMetadata": usage(candidates=0),
        "modelVersion": MODEL_VERSION,
    }


def event(body: Any) -> bytes:
    """One SSE event as Gemini frames it (CRLF line ends)."""
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def stream(*bodies: Any, delay: float = 0.0, **kw: Any) -> Reply:
    return Reply.sse([event(b) for b in bodies], delay=delay, **kw)


def text_stream(*texts: str, finish: str = "STOP", delay: float = 0.0) -> Reply:
    """A reply streaming ``texts`` one chunk each; the last chunk carries finish and usage."""
    bodies = [chunk({"text": t}) for t in texts]
    bodies[-1] = chunk({"text": texts[-1]}, finish=finish, usage_metadata=usage())
    return stream(*bodies, delay=delay)


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                "quotaId": quota_id,
            }
        ],
    }


def error_body(code: int, message: str, status: str, *details: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_reply(
    code: int, message: str, status: str, *details: dict[str, Any], **headers: str
) -> Reply:
    return Reply.json(error_body(code, message, status, *details), status=code, **headers)


def json_error(reply: Reply) -> dict[str, Any]:
    """The ``error`` object of a JSON error reply (for asserting on messages and statuses)."""
    error: dict[str, Any] = json.loads(reply.body)["error"]
    return error
