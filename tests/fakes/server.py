"""A real HTTP/1.1 server on 127.0.0.1 for provider tests, with scripted replies.

Speaks just enough HTTP for httpx: one request per connection (``Connection: close``),
``Content-Length`` request bodies, and replies that are either a whole body or a chunked
stream with per-chunk delays, optional mid-stream disconnects, or no reply at all (a hung
server). Each vendor's fake (``tests/fakes/<vendor>.py``) builds :class:`Reply` objects in
that vendor's wire format; this module knows no vendor.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import trio
from attrs import define, field

__all__ = ["FakeServer", "Recorded", "Reply", "open_fake_server"]


@define
class Reply:
    status: int = 200
    headers: dict[str, str] = field(factory=dict)
    body: bytes = b""
    #: Streamed reply: ``(delay_s, data)`` pieces sent with chunked transfer encoding.
    chunks: list[tuple[float, bytes]] = field(factory=list)
    #: Drop the connection after this many chunks (a mid-stream disconnect).
    disconnect_after: int | None = None
    #: Never answer (the client's own timeout or cancellation must end the call).
    hang: bool = False

    @classmethod
    def json(cls, obj: Any, status: int = 200, **headers: str) -> Reply:
        return cls(
            status, {"content-type": "application/json", **headers}, json.dumps(obj).encode()
        )

    @classmethod
    def sse(cls, events: list[bytes], delay: float = 0.0, **kw: Any) -> Reply:
        return cls(
            200, {"content-type": "text/event-stream"}, chunks=[(delay, e) for e in events], **kw
        )


@define
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@define
class FakeServer:
    port: int = 0
    requests: list[Recorded] = field(factory=list)
    _scripts: list[tuple[re.Pattern[str], list[Reply]]] = field(factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path_regex: str, *replies: Reply) -> None:
        """Replies for requests whose path matches; consumed in order, the last repeats."""
        self._scripts.append((re.compile(path_regex), list(replies)))

    def _next(self, path: str) -> Reply:
        for pattern, replies in self._scripts:
            if pattern.search(path):
                return replies.pop(0) if len(replies) > 1 else replies[0]
        return Reply.json({"error": {"message": f"no script for {path}"}}, status=404)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            request = await _read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            await _send(stream, self._next(request.path))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()


async def _read_request(stream: trio.SocketStream) -> Recorded | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    path, _, query = target.partition("?")
    return Recorded(method, path, query, headers, body)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


async def _send(stream: trio.SocketStream, reply: Reply) -> None:
    if reply.hang:
        await trio.sleep_forever()
    status = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
    headers = {"connection": "close", **reply.headers}
    if reply.chunks:
        headers["transfer-encoding"] = "chunked"
    else:
        headers["content-length"] = str(len(reply.body))
    head = status + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    await stream.send_all(head.encode("latin-1"))
    if not reply.chunks:
        await stream.send_all(reply.body)
        return
    for index, (delay, data) in enumerate(reply.chunks):
        if reply.disconnect_after is not None and index >= reply.disconnect_after:
            return  # drop the connection mid-stream, without the terminating chunk
        if delay:
            await trio.sleep(delay)
        await stream.send_all(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await stream.send_all(b"0\r\n\r\n")


async def open_fake_server(nursery: trio.Nursery) -> FakeServer:
    server = FakeServer()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, host="127.0.0.1"), server.handle, 0
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server
