"""The request guard: a web page must never drive the server (contract.md §10 "Server").

Three checks, before authentication and before any route runs, so a refused request creates
nothing:

* ``Host`` must name this server — a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``,
  any port), the address it was bound to, or an ``--allow-host`` entry — otherwise 421. This
  defeats DNS rebinding: a page at ``http://evil.example:8400`` whose name was re-pointed at
  127.0.0.1 still sends ``Host: evil.example:8400``.
* An ``Origin`` header, when present, must be this server's own origin (``http(s)://`` plus
  the request's ``Host``) — otherwise 403. Browsers send ``Origin`` on every cross-site POST
  and every ``fetch``; tools like curl send none. This defeats CSRF from any other page.
* A ``POST`` with a body must be ``application/json`` or ``text/vnd.graphviz`` — otherwise
  415. A browser can send ``text/plain`` and form bodies cross-site without a preflight; it
  cannot send these two. A bodiless ``POST`` (``curl -X POST .../cancel``) needs no type.

The same idea as Jupyter Server's ``check_host``/``check_origin``, as plain ASGI middleware
(see :mod:`.auth` for why not Starlette's ``BaseHTTPMiddleware``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BODY_MEDIA_TYPES", "LOOPBACK_NAMES", "RequestGuard", "host_name", "media_type"]

LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "[::1]"})
BODY_MEDIA_TYPES: Final = ("application/json", "text/vnd.graphviz")


def host_name(host: str) -> str:
    """``Host`` without its port, lowercased: ``[::1]:8400`` → ``[::1]``, ``a:1`` → ``a``."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, port = host.partition("]")
        name, port = name + "]", port.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    # Anything but digits after the colon is no port: the whole value must then match.
    return name if port.isdigit() or not port else host


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def bind_name(bind_host: str) -> str | None:
    """The name a client uses for a specific bound address (``None`` for wildcards, whose
    clients may use any of the machine's names: those need ``--allow-host``)."""
    try:
        address = ipaddress.ip_address(bind_host.strip("[]"))
    except ValueError:
        return bind_host.lower()
    if address.is_unspecified:
        return None
    return f"[{address}]" if address.version == 6 else str(address)


class RequestGuard:
    """Refuses foreign ``Host``/``Origin`` headers and untyped or cross-site-able POST bodies."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: Iterable[str] = (), bind_host: str = ""
    ) -> None:
        self.app = app
        extra = {h.strip().lower() for h in allowed_hosts if h.strip()}
        own = bind_name(bind_host) if bind_host else None
        #: Entries with a port match that exact ``Host``; entries without match any port.
        self.allowed = LOOPBACK_NAMES | extra | ({own} if own else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        body = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """``(status, message)`` for a request to refuse, ``None`` to let it through."""
        headers = _headers(scope.get("headers", []))
        host = headers.get("host", "").strip().lower()
        if not host or (host not in self.allowed and host_name(host) not in self.allowed):
            return 421, (
                f"this server does not answer to Host {host or '(none)'!r}; use "
                "http://127.0.0.1:PORT/ or start it with --allow-host NAME"
            )
        origin = headers.get("origin")
        if origin is not None and origin.strip().lower() not in (
            f"http://{host}",
            f"https://{host}",
        ):
            return 403, (
                f"cross-origin request refused (Origin {origin!r}); web pages other than "
                "this server's own may not call its API"
            )
        if scope.get("method") == "POST" and _has_body(headers):
            media = media_type(headers.get("content-type", ""))
            if media not in BODY_MEDIA_TYPES:
                return 415, (
                    f"unsupported Content-Type {media or '(none)'!r}: POST bodies must be "
                    "application/json or text/vnd.graphviz"
                )
        return None


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers by lowercased name (a repeated header keeps its first value)."""
    found: dict[str, str] = {}
    for name, value in raw:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _has_body(headers: dict[str, str]) -> bool:
    if "transfer-encoding" in headers:
        return True
    return headers.get("content-length", "0").strip() not in ("", "0")
