"""gitignore-style rules for work-directory snapshots (contract.md §10, ``upload_workdir``).

The subset of gitignore the snapshot honours, without git: comments, blank lines, ``!``
negation, trailing ``/`` (directories only), a ``/`` inside anchoring the pattern at the
``.gitignore``'s directory (else it matches at any depth below), ``*``, ``?``, ``[…]``, ``**``
and backslash escapes; the last matching pattern decides, deeper files after shallower ones.
An excluded directory is not entered, so nothing below it can be re-included (as in git).
Not read: ``.git/info/exclude``, ``core.excludesFile`` and ``.gitignore`` files above the work
directory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import final

from attrs import frozen

__all__ = ["ALWAYS_EXCLUDED", "Matcher"]

#: Never shipped, wherever they are: a repository's metadata belongs to the driver (its commits,
#: its locks), and a stage's changes to it could not be merged back file by file.
ALWAYS_EXCLUDED = (".git",)


@frozen
class _Glob:
    base: str
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _translate(pattern: str) -> str:
    """A gitignore glob as a regular expression (``*``, ``?``, ``[…]``, ``**``, ``\\`` escapes)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            at_segment_start = i == 0 or pattern[i - 1] == "/"
            if pattern.startswith("**", i) and at_segment_start:
                if i + 2 == n:
                    out.append(".*")
                    i += 2
                    continue
                if pattern[i + 2] == "/":
                    out.append("(?:[^/]*/)*")
                    i += 3
                    continue
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            start = i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1
            end = pattern.find("]", start + 1 if pattern[start : start + 1] == "]" else start)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _compile(base: str, line: str) -> _Glob | None:
    text = line.rstrip("\r\n")
    stripped = text.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(text):
        stripped += " "
    if not stripped or stripped.startswith("#"):
        return None
    negate = stripped.startswith("!")
    if negate or stripped.startswith(("\\!", "\\#")):  # \\! and \\# escape a literal ! or #
        stripped = stripped[1:]
    dir_only = stripped.endswith("/")
    stripped = stripped.rstrip("/")
    if not stripped:
        return None
    anchored = "/" in stripped
    body = _translate(stripped.lstrip("/"))
    regex = body if anchored else "(?:.*/)?" + body
    return _Glob(base, re.compile(regex, re.DOTALL), negate, dir_only)


def _globs(base: str, text: str) -> list[_Glob]:
    return [g for line in text.splitlines() if (g := _compile(base, line)) is not None]


def _matches(globs: Iterable[_Glob], path: str, is_dir: bool) -> bool:
    """gitignore semantics: the last matching glob decides; a glob applies below its base."""
    ignored = False
    for glob in globs:
        if glob.base:
            if not path.startswith(glob.base + "/"):
                continue
            rel = path[len(glob.base) + 1 :]
        else:
            rel = path
        if (not glob.dir_only or is_dir) and glob.regex.fullmatch(rel):
            ignored = not glob.negate
    return ignored


@final
class Matcher:
    """Which root-relative paths stay behind: ``skip`` (exact paths), ``.git`` and ``excludes``
    (final), then the ``.gitignore`` files, learned as the walk meets them."""

    def __init__(
        self,
        skip: Iterable[str],
        excludes: Iterable[str],
        gitignores: Iterable[tuple[str, str]],
    ) -> None:
        self._skip = set(skip)
        self._final = _globs("", "\n".join((*ALWAYS_EXCLUDED, *excludes)))
        self._git: list[_Glob] = []
        for base, text in gitignores:
            self.learn(base, text)

    def learn(self, base: str, text: str) -> None:
        self._git.extend(_globs(base, text))

    def excluded(self, path: str, is_dir: bool) -> bool:
        if path in self._skip:
            return True
        if _matches(self._final, path, is_dir):
            return True
        return _matches(self._git, path, is_dir)
