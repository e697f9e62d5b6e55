"""Input limits (contract.md §10): size caps checked before reading, binary input found by position.

Every file the engine reads on a user's behalf — pipelines, run configs, sim scripts — goes
through :func:`read_bounded`, so ``validate /dev/zero`` or a 17 MiB pipeline is refused after a
``stat`` (regular files) or after reading one byte past the cap (devices, FIFOs), never after
reading the whole thing. :func:`decode_text` then turns bytes into text or reports the first
offending byte (a NUL, invalid UTF-8) as ``line:col``; the server applies
:func:`first_bad_char` to DOT text that arrived as a JSON string.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Final

from ..errors import ConfigError
from .lexer import Positions

__all__ = [
    "DEFAULT_MAX_INPUT_SIZE",
    "MAX_CONFIG_SIZE",
    "MAX_INPUT_HINT",
    "BinaryInput",
    "InputTooLarge",
    "decode_text",
    "first_bad_char",
    "format_size",
    "parse_size",
    "read_bounded",
    "read_config_text",
]

#: Pipeline files (and server request bodies) larger than this are refused.
DEFAULT_MAX_INPUT_SIZE: Final = 16 * 1024 * 1024
MAX_INPUT_HINT: Final = "; raise the limit with --max-input-size"
#: Run-config and sim-script files larger than this are refused.
MAX_CONFIG_SIZE: Final = 1024 * 1024
_CHUNK: Final = 1024 * 1024
_UNITS: Final = {
    **{"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024},
    **{"m": 1000**2, "mb": 1000**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3},
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


class InputTooLarge(ConfigError):
    """A file over its size cap (exit 2, like any config error; nothing was read whole)."""


class BinaryInput(ValueError):
    """Bytes that are not text: ``line``/``col`` (1-based) locate the first offending byte."""

    def __init__(self, what: str, line: int, col: int, *, source: str = "file") -> None:
        self.message = f"binary input: {what}; the {source} must be UTF-8 text"
        super().__init__(self.message)
        #: The offending byte or character alone ("a NUL byte", "invalid UTF-8 (byte 0xff)").
        self.what = what
        self.line = line
        self.col = col


def parse_size(text: str) -> int:
    """``16MiB``, ``512k``, ``1000000`` → bytes (``k``/``M``/``G`` decimal, ``KiB``… binary)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    factor = _UNITS.get(unit)
    if match is None or factor is None:
        raise ValueError(f"{text!r} is not a size; use e.g. 16MiB, 500k or a number of bytes")
    return int(float(match.group(1)) * factor)


def format_size(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def read_bounded(path: str | os.PathLike[str], limit: int, what: str, hint: str = "") -> bytes:
    """The bytes of ``path``, or :class:`InputTooLarge` without reading more than ``limit + 1``.

    A regular file is judged by ``fstat`` before any read; anything else (``/dev/zero``, a
    FIFO, a pipe from ``<(...)``) by reading at most one byte past the cap. ``OSError`` (missing,
    unreadable, a directory) propagates for the caller to word.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            _too_large(path, limit, what, hint, f"{info.st_size} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = f.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            _too_large(path, limit, what, hint, "read past the limit")
    return b"".join(chunks)


def _too_large(path: str | os.PathLike[str], limit: int, what: str, hint: str, size: str) -> None:
    raise InputTooLarge(f"{path}: {what} is too large ({size}, over {format_size(limit)}){hint}")


def decode_text(data: bytes, *, bom: bool = True) -> str:
    """UTF-8 text (a leading BOM dropped when ``bom``), or :class:`BinaryInput` at the first
    NUL byte or invalid UTF-8 sequence, whichever comes first."""
    if bom and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start if nul < 0 else min(nul, exc.start)
        raise _binary_at(data, bad, nul == bad) from None
    if nul >= 0:
        raise _binary_at(data, nul, True)
    return text


def _binary_at(data: bytes, offset: int, is_nul: bool) -> BinaryInput:
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8")) + 1
    what = "a NUL byte" if is_nul else f"invalid UTF-8 (byte 0x{data[offset]:02x})"
    return BinaryInput(what, line, col)


def first_bad_char(text: str) -> BinaryInput | None:
    """A NUL or a lone UTF-16 surrogate (which JSON ``\\ud800`` escapes can smuggle into a
    string) in ``text``, located by line and column; ``None`` when the text is clean."""
    match = re.search("[\x00\ud800-\udfff]", text)
    if match is None:
        return None
    line, col = Positions(text).line_col(match.start())
    char = match.group()
    what = "a NUL character" if char == "\x00" else f"a lone surrogate U+{ord(char):04X}"
    return BinaryInput(what, line, col, source="source")


def read_config_text(path: str | os.PathLike[str], what: str) -> str:
    """A run-config or sim-script file as text: at most :data:`MAX_CONFIG_SIZE` bytes, and a
    binary file is a ``FILE:LINE:COL: error: ...`` config error (exit 2). ``OSError``
    propagates for the caller to word."""
    data = read_bounded(path, MAX_CONFIG_SIZE, what)
    try:
        return decode_text(data)
    except BinaryInput as exc:
        raise ConfigError(f"{path}:{exc.line}:{exc.col}: error: {exc.message}") from None
