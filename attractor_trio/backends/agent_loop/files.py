"""The file tools' bodies: read, write, edit, grep, glob (coding-agent-loop spec §3.3).

Synchronous functions returning the text the model sees; a problem the model can fix raises
:class:`~.env.ToolError` with the fix in the message. :class:`~.tools.ToolBox` runs them in a
worker thread. Files are handled as bytes decoded as UTF-8, with no newline translation, so an
edit never silently converts a CRLF file, and line numbers in ``read_file`` and ``grep`` agree
(both split on ``\\n`` only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from .env import LocalEnvironment, ToolError, is_binary, matches_filter

__all__ = ["MATCH_LINE_CHARS", "edit_file", "glob", "grep", "read_numbered", "write_file"]

#: A matching line longer than this is clipped in grep's output (minified files).
MATCH_LINE_CHARS: Final = 500


def read_numbered(env: LocalEnvironment, file_path: str, offset: int, limit: int) -> str:
    """Lines ``offset..offset+limit-1`` as ``N | text``, plus how to read on if more remain."""
    path = _existing_file(env, file_path)
    if is_binary(path):
        raise ToolError(
            f"{file_path} is a binary file; inspect it with shell (e.g. `file` or `xxd | head`)"
        )
    shown: list[tuple[int, str]] = []
    total = 0
    with open(path, "rb") as f:
        for total, raw in enumerate(f, start=1):
            if offset <= total < offset + limit:
                shown.append((total, _line_text(raw)))
    if total == 0:
        return f"({file_path} is empty)"
    if not shown:
        raise ToolError(
            f"offset {offset} is past the end of {file_path}, which has {total} lines; "
            "use a smaller offset"
        )
    last = shown[-1][0]
    width = len(str(last))
    text = "\n".join(f"{number:>{width}} | {line}" for number, line in shown)
    if last < total:
        text += (
            f"\n[Showing lines {offset}-{last} of {total}. "
            f"To read more, call read_file with offset={last + 1}.]"
        )
    return text


def write_file(env: LocalEnvironment, file_path: str, content: str) -> str:
    """Write in place (keeps the file's mode, e.g. an executable script), parents created."""
    path = env.resolve(file_path)
    if path.is_dir():
        raise ToolError(f"{file_path} is a directory; give the path of a file inside it")
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)
    verb = "Overwrote" if existed else "Created"
    return f"{verb} {env.display(path)} ({len(data)} bytes)."


def edit_file(
    env: LocalEnvironment, file_path: str, old_string: str, new_string: str, replace_all: bool
) -> str:
    """Replace ``old_string`` (exactly once unless ``replace_all``) and write the file back."""
    if not old_string:
        raise ToolError("old_string is empty; to create a file or replace all of it use write_file")
    if old_string == new_string:
        raise ToolError("old_string and new_string are identical; there is nothing to change")
    path = _existing_file(env, file_path)
    text = _read_text(path, file_path)
    old, new = _matching_newlines(text, old_string, new_string)
    count = text.count(old)
    if count == 0:
        raise ToolError(
            f"old_string was not found in {file_path}. It must match the file exactly, "
            "including whitespace and indentation (without read_file's 'N | ' prefixes); "
            "read the file again and copy the text"
        )
    if count > 1 and not replace_all:
        raise ToolError(
            f"old_string occurs {count} times in {file_path}; include more surrounding lines "
            "to make it unique, or set replace_all=true to replace every occurrence"
        )
    with open(path, "wb") as f:
        f.write(text.replace(old, new).encode("utf-8"))
    return f"Edited {env.display(path)}: replaced {count} occurrence{'s' if count > 1 else ''}."


def grep(
    env: LocalEnvironment,
    pattern: str,
    path: str,
    glob_filter: str,
    case_insensitive: bool,
    max_results: int,
) -> str:
    """``path:line:text`` for each matching line, files in path order, at most ``max_results``."""
    try:
        regex = re.compile(pattern, re.IGNORECASE if case_insensitive else 0)
    except re.error as exc:
        raise ToolError(
            f"invalid regular expression {pattern!r}: {exc} (Python re syntax; escape "
            "characters such as ( [ . * with a backslash to match them literally)"
        ) from None
    root = _existing(env, path)
    hits: list[str] = []
    for file in env.walk_files(root):
        relative = file.relative_to(root).as_posix() if file != root else file.name
        if glob_filter and not matches_filter(relative, file.name, glob_filter):
            continue
        for number, line in _matching_lines(file, regex):
            hits.append(f"{env.display(file)}:{number}:{_clip(line)}")
            if len(hits) > max_results:
                break
        if len(hits) > max_results:
            break
    if not hits:
        where = env.display(root) + (f" (files matching {glob_filter!r})" if glob_filter else "")
        return f"No matches for {pattern!r} in {where}."
    if len(hits) > max_results:
        hits[max_results:] = [
            f"[Stopped after {max_results} matches; there are more. Narrow the pattern, path "
            "or glob_filter, or raise max_results.]"
        ]
    return "\n".join(hits)


def glob(env: LocalEnvironment, pattern: str, path: str) -> str:
    """Matching paths relative to the workdir, newest first; directories end in ``/``."""
    base = _existing(env, path)
    if not base.is_dir():
        raise ToolError(f"path {path!r} is a file, not a directory; give the directory to search")
    found = env.glob(pattern, base)
    if not found:
        return f"No files match {pattern!r} under {env.display(base)}."
    return "\n".join(env.display(p) + ("/" if p.is_dir() else "") for p in found)


def _existing(env: LocalEnvironment, path: str) -> Path:
    resolved = env.resolve(path, argument="path")
    if not resolved.exists():
        raise ToolError(
            f"path {path!r} does not exist in the working directory {env.workdir}; "
            "use glob to find the right path"
        )
    return resolved


def _existing_file(env: LocalEnvironment, file_path: str) -> Path:
    path = env.resolve(file_path)
    if not path.exists():
        raise ToolError(
            f"file not found: {file_path} (in the working directory {env.workdir}); "
            "use glob to find the right path, or write_file to create it"
        )
    if path.is_dir():
        raise ToolError(f"{file_path} is a directory, not a file; use glob to list its contents")
    return path


def _read_text(path: Path, file_path: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(
            f"{file_path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "edit it with shell instead"
        ) from None


def _matching_newlines(text: str, old: str, new: str) -> tuple[str, str]:
    """In a CRLF file, ``\\n``-only strings (as models write them) are matched as CRLF."""
    if "\r\n" in text and "\r\n" not in old and "\n" in old and old not in text:
        return old.replace("\n", "\r\n"), new.replace("\r\n", "\n").replace("\n", "\r\n")
    return old, new


def _line_text(raw: bytes) -> str:
    return raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")


def _matching_lines(file: Path, regex: re.Pattern[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of matching lines; unreadable and binary files yield nothing."""
    try:
        if is_binary(file):
            return
        with open(file, "rb") as f:
            for number, raw in enumerate(f, start=1):
                line = _line_text(raw)
                if regex.search(line):
                    yield number, line
    except OSError:
        return


def _clip(line: str) -> str:
    if len(line) <= MATCH_LINE_CHARS:
        return line
    return f"{line[:MATCH_LINE_CHARS]} [... {len(line) - MATCH_LINE_CHARS} more characters]"
