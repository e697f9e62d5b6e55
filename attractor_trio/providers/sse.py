"""Server-sent events, parsed per the WHATWG rules, for every streaming provider adapter.

Vendors stream over SSE; one shared parser means one set of edge cases (multi-line ``data:``,
``:`` comments, CRLF split across chunks, a missing space after the colon) handled once. It only
frames events — what ``data`` means is the adapter's business.

Lines are split here rather than with ``httpx.Response.aiter_lines``: that follows
``str.splitlines`` and also breaks on U+2028, U+0085 and friends, which JSON carries unescaped —
a model writing one of them would tear an event in two.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncGenerator

import httpx
from attrs import frozen

__all__ = ["SSEEvent", "iter_sse"]

#: The only line terminators SSE knows.
_LINE_END = re.compile(r"\r\n|\r|\n")


@frozen
class SSEEvent:
    """One dispatched event: ``event`` defaults to ``message``; ``data`` lines joined by ``\\n``."""

    event: str
    data: str


async def iter_sse(response: httpx.Response) -> AsyncGenerator[SSEEvent, None]:
    """Yield each event of a streaming ``response`` as its terminating blank line arrives.

    A trailing event without its blank line is dropped, as the SSE spec says: the stream was cut
    and its data may be partial. Events with no ``data:`` line are not dispatched.
    """
    splitter = _LineSplitter()
    event = ""
    data: list[str] = []
    async for chunk in response.aiter_bytes():
        for line in splitter.feed(chunk):
            if not line:
                if data:
                    yield SSEEvent(event or "message", "\n".join(data))
                event, data = "", []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            # ``:comment``, ``id:``, ``retry:`` and unknown fields carry nothing adapters need.


class _LineSplitter:
    """Bytes in, complete lines (without terminators) out; an unterminated tail never leaves."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._pending: list[str] = []  # the current line, while no terminator has arrived

    def feed(self, chunk: bytes) -> list[str]:
        text = self._decoder.decode(chunk)
        waiting_cr = bool(self._pending) and self._pending[-1].endswith("\r")
        if "\n" not in text and "\r" not in text and not waiting_cr:
            self._pending.append(text)  # no re-scan of a long line on every chunk
            return []
        *lines, rest = _LINE_END.split("".join(self._pending) + text)
        if rest == "" and lines and text.endswith("\r"):
            rest = lines.pop() + "\r"  # a final CR waits: an LF may follow in the next chunk
        self._pending = [rest]
        return lines
