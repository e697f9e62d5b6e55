"""A scripted stand-in for the Anthropic Messages API, so the agent example runs offline.

Each ``POST /v1/messages`` gets the next assistant turn from ``replies.json`` (a list of turns,
each a list of Messages-API content blocks: ``{"type": "text", "text": ...}`` or
``{"type": "tool_use", "id": ..., "name": ..., "input": {...}}``), streamed as the real API
streams it (``message_start`` … ``message_stop`` server-sent events). The model's side of the
conversation is scripted; everything else — the adapter, the agent loop, the tools, the
shell, the status file, routing — is the real thing.

    python examples/agent_feature/fake_anthropic.py --port 8765 [replies.json]

Once the script is used up, further requests get HTTP 400 ("script exhausted"), which fails the
stage loudly instead of looping.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


class FakeAnthropic:
    """Serves ``turns`` in order; ``requests`` keeps every request body (parsed JSON)."""

    def __init__(self, turns: list[list[dict[str, Any]]]) -> None:
        self.turns = list(turns)
        self.requests: list[dict[str, Any]] = []
        self.port = 0

    @classmethod
    def from_file(cls, path: Path = HERE / "replies.json") -> FakeAnthropic:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, port: int = 0, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            path, body = await _read_request(stream)
            if path.rstrip("/").endswith("/v1/messages"):
                self.requests.append(json.loads(body or b"{}"))
                await _send(stream, self._next_reply())
            else:
                await _send(stream, _error(404, "not_found_error", f"no such path {path}"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            pass
        finally:
            await stream.aclose()

    def _next_reply(self) -> tuple[int, str, list[bytes]]:
        if not self.turns:
            return _error(400, "invalid_request_error", "fake_anthropic: script exhausted")
        return 200, "text/event-stream", _stream(self.turns.pop(0))


def _stream(blocks: list[dict[str, Any]]) -> list[bytes]:
    """One assistant turn as the Messages API's SSE event sequence."""
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "fake-claude",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    events = [_event({"type": "message_start", "message": message})]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            _event({"type": "content_block_start", "index": index, "content_block": start}),
            _event({"type": "content_block_delta", "index": index, "delta": delta}),
            _event({"type": "content_block_stop", "index": index}),
        ]
    uses_tools = any(block["type"] == "tool_use" for block in blocks)
    stop = {"stop_reason": "tool_use" if uses_tools else "end_turn", "stop_sequence": None}
    events.append(_event({"type": "message_delta", "delta": stop, "usage": {"output_tokens": 5}}))
    events.append(_event({"type": "message_stop"}))
    return events


def _event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def _error(status: int, kind: str, message: str) -> tuple[int, str, list[bytes]]:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return status, "application/json", [json.dumps(body).encode()]


async def _read_request(stream: trio.SocketStream) -> tuple[str, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError("connection closed before the request head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return lines[0].split(" ")[1].partition("?")[0], body


async def _send(stream: trio.SocketStream, reply: tuple[int, str, list[bytes]]) -> None:
    status, content_type, pieces = reply
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"content-type: {content_type}\r\nconnection: close\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    )
    await stream.send_all(head.encode("latin-1"))
    for piece in pieces:
        await stream.send_all(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    await stream.send_all(b"0\r\n\r\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replies", nargs="?", type=Path, default=HERE / "replies.json")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    fake = FakeAnthropic.from_file(args.replies)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(fake.serve, port=args.port))
            print(f"fake Anthropic API on {fake.base_url}", file=sys.stderr, flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
