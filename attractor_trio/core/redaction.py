"""Secret redaction: the one layer every writer of the engine goes through (contract.md §10).

Secret values are known when a run starts: the engine's environment variables whose name looks
like a credential (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*PASSWORD*``, ``*_CREDENTIALS``,
any case) with a value of at least :data:`MIN_PATTERN_SECRET` characters, plus the variables a
configuration names explicitly (every provider's ``api_key_env``, ``ATTRACTOR_TOKEN``), whose
values count from :data:`MIN_NAMED_SECRET` characters. Every occurrence is replaced by
:data:`REDACTED` in files under LOGS_ROOT, events, console output and server responses.

The set is process-wide and only grows (:func:`register_environment`): the environment is the
process's, and a value that is a secret for one run (the HTTP server runs many) is a secret
for all of them. Over-redacting a credential is harmless; forgetting one is not.

Cost: with no secrets every entry point returns its argument after one attribute test, so the
benchmarks see nothing; a path that runs for every event or file (``progress.py``,
:func:`file_bytes`) reads :data:`active` instead, which is ``None`` then: no call at all.
With secrets, the check is one ``in`` scan per secret form (the two-way substring search,
several GB/s) and the regex only runs when a secret is present.

JSON stays valid: inside a JSON string a secret is matched in its escaped form, and a document
where a replacement lands outside a string (a numeric password equal to a number in the file)
is redacted value by value instead (:meth:`Redactor.json_bytes`).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

__all__ = [
    "MIN_NAMED_SECRET",
    "MIN_PATTERN_SECRET",
    "REDACTED",
    "Redactor",
    "StreamRedactor",
    "active",
    "current",
    "file_bytes",
    "is_secret_env_name",
    "register_environment",
    "register_values",
    "reset",
]

REDACTED: Final = "[REDACTED]"
#: Variables found by their name alone are secrets only from this length (``TOKEN=1`` is not).
MIN_PATTERN_SECRET: Final = 8
#: Variables named as keys (``api_key_env``, ``ATTRACTOR_TOKEN``): shorter values would turn
#: ordinary words into ``[REDACTED]`` everywhere and protect nothing.
MIN_NAMED_SECRET: Final = 4
#: Named by contract.md §10 as a secret whatever else is configured.
ALWAYS_SECRET_NAMES: Final = ("ATTRACTOR_TOKEN",)

_SECRET_NAME = re.compile(r"(?:^|_)(?:API_KEY|TOKEN|SECRET|CREDENTIALS)$|PASSWORD", re.IGNORECASE)


def is_secret_env_name(name: str) -> bool:
    """``OPENAI_API_KEY``, ``GITHUB_TOKEN``, ``DB_PASSWORD_FILE``, ``AWS_CREDENTIALS``…"""
    return _SECRET_NAME.search(name) is not None


def _forms(value: str) -> set[str]:
    """The value as written in plain text and inside a JSON string (both escape styles)."""
    forms = {value}
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(json.dumps(value)[1:-1])
    return forms


@final
class Redactor:
    """An immutable set of secret values and the compiled patterns that find them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: frozenset[str] = frozenset(v for v in values if v)
        forms = sorted({f for v in self.values for f in _forms(v)}, key=len, reverse=True)
        self._text_forms = tuple(forms)
        self._byte_forms = tuple(f.encode("utf-8") for f in forms)
        alternation = "|".join(re.escape(f) for f in forms)
        self._text = re.compile(alternation) if forms else None
        self._bytes = re.compile(alternation.encode("utf-8")) if forms else None
        #: The longest form in bytes: what a stream must hold back between chunks.
        self.longest = max((len(f) for f in self._byte_forms), default=0)
        self._replacement = REDACTED.encode("utf-8")

    def __bool__(self) -> bool:
        return self._text is not None

    def found_in_text(self, text: str) -> bool:
        # A loop, not any(genexpr) (noqa SIM110): this runs for every write and event, and the
        # generator's frame costs more than the scans it makes for a few secrets.
        for form in self._text_forms:  # noqa: SIM110
            if form in text:
                return True
        return False

    def found_in_bytes(self, data: bytes) -> bool:
        for form in self._byte_forms:  # noqa: SIM110
            if form in data:
                return True
        return False

    def text(self, text: str) -> str:
        """``text`` with every secret replaced (the same object when there is none)."""
        if self._text is None or not self.found_in_text(text):
            return text
        return self._text.sub(REDACTED, text)

    def data(self, data: bytes) -> bytes:
        if self._bytes is None or not self.found_in_bytes(data):
            return data
        return self._bytes.sub(self._replacement, data)

    def value(self, value: Any) -> Any:
        """A JSON-like value (a copy) with every string, keys included, redacted."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self._key(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _key(self, key: Any) -> Any:
        return self.text(key) if isinstance(key, str) else key

    def json_bytes(self, data: bytes, *, lines: bool = False) -> bytes:
        """Redact a serialized JSON document (``lines``: one document per line) so that it
        stays valid JSON, whatever the secret looks like."""
        if self._bytes is None or not self.found_in_bytes(data):
            return data
        if lines:
            return b"\n".join(self.json_bytes(line) for line in data.split(b"\n"))
        redacted = self._bytes.sub(self._replacement, data)
        try:
            json.loads(redacted)
        except ValueError:
            return self._json_by_value(data, redacted)
        return redacted

    def json_text(self, text: str) -> str:
        """:meth:`json_bytes` for a JSON document held as text."""
        if self._text is None or not self.found_in_text(text):
            return text
        return self.json_bytes(text.encode("utf-8")).decode("utf-8")

    def _json_by_value(self, original: bytes, fallback: bytes) -> bytes:
        """A secret matched outside a string (a number, ``true``…): redact the parsed values."""
        try:
            doc = json.loads(original)
        except ValueError:
            return fallback  # not JSON in the first place (a torn line): plain redaction
        text = json.dumps(self.value(doc), ensure_ascii=False, allow_nan=False)
        return (text + ("\n" if original.endswith(b"\n") else "")).encode("utf-8")


@final
class StreamRedactor:
    """Redacts a byte stream fed in arbitrary chunks: a secret split across two chunks is
    still found, because an end of chunk that could be the start of a secret is held back
    until the next chunk (or :meth:`flush`) shows whether it is one. Only such an end is held:
    other output reaches the log at once (liveness and ``tail -f`` see it)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._forms = redactor._byte_forms
        self._first_bytes = frozenset(form[0] for form in self._forms)
        self._keep = max(redactor.longest - 1, 0)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """What can be written now: redacted, and never the possible start of a secret."""
        data = self._pending + chunk
        pattern = self._redactor._bytes
        if pattern is None:
            self._pending = b""
            return data
        out: list[bytes] = []
        position = 0
        cut = -1
        matches = pattern.finditer(data) if self._redactor.found_in_bytes(data) else ()
        for match in matches:
            if match.end() > len(data) - self._keep and self._begins_secret(data[match.start() :]):
                cut = match.start()  # a longer secret may go on in the next chunk
                break
            out += (data[position : match.start()], self._redactor._replacement)
            position = match.end()
        if cut < 0:
            cut = self._hold_from(data, position)
        out.append(data[position:cut])
        self._pending = data[cut:]
        return b"".join(out)

    def _begins_secret(self, tail: bytes) -> bool:
        """``tail`` is the start, but not the whole, of some secret form."""
        return any(len(form) > len(tail) and form.startswith(tail) for form in self._forms)

    def _hold_from(self, data: bytes, start: int) -> int:
        """Where the longest end of ``data`` (after ``start``) that begins a secret starts."""
        for index in range(max(start, len(data) - self._keep), len(data)):
            if data[index] in self._first_bytes and self._begins_secret(data[index:]):
                return index
        return len(data)

    def flush(self) -> bytes:
        """The held-back tail, redacted (the stream has ended)."""
        tail, self._pending = self._pending, b""
        return self._redactor.data(tail)


_lock = threading.Lock()
_current = Redactor()
#: :func:`current` while it holds a secret, else ``None``: for the paths that run for every
#: event and file, where ``redaction.current()`` and its ``bool`` were two calls per event
#: (21 per stage) that found nothing to do (issue #22). Set together with ``_current``.
active: Redactor | None = None


def current() -> Redactor:
    """The process's redactor (empty, and free to use, until a secret is registered)."""
    return _current


def register_values(values: Iterable[str]) -> Redactor:
    """Add secret values (e.g. the server's ``--token``); returns the new redactor."""
    global _current, active
    with _lock:
        fresh = set(values) - _current.values
        if fresh:
            _current = Redactor(_current.values | fresh)
            active = _current if _current else None
        return _current


def register_environment(env: Mapping[str, str], names: Iterable[str] = ()) -> Redactor:
    """Register the secrets in ``env``: credential-looking names (values of at least
    :data:`MIN_PATTERN_SECRET` characters) and the explicitly ``names``d variables plus
    ``ATTRACTOR_TOKEN`` (at least :data:`MIN_NAMED_SECRET`)."""
    named = {n for n in (*names, *ALWAYS_SECRET_NAMES) if n}
    values = [
        value
        for name, value in env.items()
        if (name in named and len(value) >= MIN_NAMED_SECRET)
        or (len(value) >= MIN_PATTERN_SECRET and is_secret_env_name(name))
    ]
    return register_values(values)


def reset() -> None:
    """Forget every registered secret (tests)."""
    global _current, active
    with _lock:
        _current = Redactor()
        active = None


def file_bytes(path: os.PathLike[str] | str, data: bytes) -> bytes:
    """``data`` about to be written to ``path``, redacted the way its format needs: JSON
    documents (``.json``) and JSON lines (``.ndjson``) stay valid, anything else is text."""
    redactor = active
    if redactor is None:
        return data
    name = os.fspath(path)
    if name.endswith(".json"):
        return redactor.json_bytes(data)
    if name.endswith(".ndjson"):
        return redactor.json_bytes(data, lines=True)
    return redactor.data(data)
