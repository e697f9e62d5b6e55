"""Bearer-token auth for every route, the viewer's static files and SSE included.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: the latter buffers
through its own task group, which gets in the way of long-lived SSE streams. The token may
come as ``Authorization: Bearer <token>`` or as ``?token=<token>`` (a browser's
``EventSource`` cannot set headers, so the viewer uses the query parameter).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BearerAuth", "presented_tokens", "token_matches"]

UNAUTHORIZED_BODY: Final = json.dumps(
    {
        "error": "missing or wrong token: send `Authorization: Bearer <token>` "
        "(or ?token=<token>) with the token the server was started with "
        "(--token or ATTRACTOR_TOKEN)"
    }
).encode()


def presented_tokens(headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> list[str]:
    """Every token the request offers: bearer credentials, then ``token`` query values."""
    found: list[str] = []
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                found.append(credentials.strip())
    query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    found.extend(query.get("token", []))
    return found


def token_matches(expected: str, offered: Iterable[str]) -> bool:
    """Constant-time comparison against each offered token."""
    want = expected.encode()
    return any(secrets.compare_digest(want, token.encode()) for token in offered)


class BearerAuth:
    """Answers 401 unless the request carries ``token``; ``None`` disables the check."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        offered = presented_tokens(scope.get("headers", []), scope.get("query_string", b""))
        if token_matches(self.token, offered):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
                    (b"www-authenticate", b'Bearer realm="attractor-trio"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
