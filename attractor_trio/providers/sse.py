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
    parser = _EventParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            yield event
    for event in parser.close():
        yield event


class _EventParser:
    """Bytes in, events out (no IO): the line splitting and field rules of the SSE spec."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._pending: list[str] = []  # the current line, while no terminator has arrived
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(chunk)
        waiting_cr = bool(self._pending) and self._pending[-1].endswith("\r")
        if "\n" not in text and "\r" not in text and not waiting_cr:
            self._pending.append(text)  # no re-scan of a long line on every chunk
            return []
        combined = "".join(self._pending) + text
        held = "\r" if combined.endswith("\r") else ""  # an LF may follow in the next chunk
        *lines, rest = _LINE_END.split(combined[: len(combined) - len(held)])
        self._pending = [rest + held]
        return [event for line in lines if (event := self._line(line)) is not None]

    def close(self) -> list[SSEEvent]:
        """At the end of the body: a held CR still ends its line; an unterminated one is cut."""
        tail = "".join(self._pending) + self._decoder.decode(b"", final=True)
        event = self._line(tail[:-1]) if tail.endswith("\r") else None
        return [event] if event is not None else []

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            dispatch = bool(self._data)
            self._event, self._data = "", []
            return event if dispatch else None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        # ``:comment``, ``id:``, ``retry:`` and unknown fields carry nothing an adapter needs.
        return None
