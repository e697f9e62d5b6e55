"""Reading the tails of stage logs as text: shared by tool stages and CLI agents.

Logs are appended across attempts and may be cut anywhere, including inside a multi-byte
character; these helpers read byte ranges and decode them without inventing characters.
"""

from __future__ import annotations

import codecs
from pathlib import Path

__all__ = ["TAIL_LINES", "decode_head", "decode_tail", "file_size", "tail_text"]

#: How many lines of a failed process's output its failure record quotes.
TAIL_LINES = 20


def file_size(path: Path) -> int:
    """Size in bytes, 0 when the file is missing (the process may not have written yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def decode_head(data: bytes) -> str:
    """Decode, dropping a multi-byte character cut in half at the end."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=False)


def decode_tail(data: bytes) -> str:
    """Decode, dropping continuation bytes of a character cut in half at the start."""
    skip = 0
    while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
        skip += 1
    return data[skip:].decode("utf-8", "replace")


def tail_text(data: bytes, max_lines: int = TAIL_LINES) -> str:
    """The last ``max_lines`` lines of ``data``, stripped, prefixed with ``...`` when cut."""
    lines = decode_tail(data).strip().splitlines()
    if len(lines) <= max_lines:
        return "\n".join(lines)
    return "...\n" + "\n".join(lines[-max_lines:])
