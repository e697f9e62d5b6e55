"""The one way every JSON/text file in a run directory is written and read.

contract.md §2: after a SIGKILL at any instant, every JSON file in ``LOGS_ROOT`` is either absent or
a complete, valid document. That holds only if *every* writer goes through
:func:`write_json_atomic` (the Go engine wrote ``live.json``, ``graph.dot`` and ``run.pid`` with
plain truncate-and-write; see ``spec/peer-kilroy-notes.md`` Appendix A.1).

The recipe: serialize first (a serialization error must never leave a partial file), write a temp
file *in the same directory* (``rename`` is only atomic within one filesystem), flush and fsync
it, rename it over the target, fsync the directory (so the rename itself survives a power loss),
and remove the temp on any failure. A SIGKILL between "temp created" and "rename" can still leave
a temp file behind; :func:`cleanup_temp_files` removes those at the next start.

The module also owns the two format rules every persisted file shares: JSON layout
(:func:`dumps_json`) and timestamps (:func:`utc_timestamp`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..core import redaction
from ..errors import AttractorError
from ..jsontext import encode_str as _encode_str
from ..jsontext import json_chunk_encoder, json_encoder
from . import descriptors, noop_fsync, pending

__all__ = [
    "Check",
    "CorruptFileError",
    "Schema",
    "StrPath",
    "cleanup_temp_files",
    "create_in_place",
    "dumps_json",
    "fsync_directory",
    "fsync_directory_fd",
    "is_int",
    "is_map_of",
    "is_number",
    "is_object",
    "is_str",
    "is_str_list",
    "is_temp_file_name",
    "json_chunk_encoder",
    "json_encoder",
    "json_type_name",
    "open_temp",
    "or_null",
    "read_json",
    "read_json_object",
    "remove_quietly",
    "replacing",
    "shape_problem",
    "temp_name",
    "utc_timestamp",
    "utc_timestamp_of_millis",
    "write_all",
    "write_all_at",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

StrPath = str | os.PathLike[str]

# `.<target name>.<16 hex chars>.tmp` — the leading dot keeps temps out of casual listings, the
# random token keeps concurrent writers of the same target apart, and the exact shape lets
# cleanup_temp_files recognise *our* temps without touching anything else.
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
#: A new file (exclusive create) and a directory to fsync, as ``os.open`` flags.
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_DIRECTORY: Final = os.O_RDONLY | os.O_DIRECTORY


class CorruptFileError(AttractorError):
    """A persisted file exists but is not what attractor-trio wrote (bad JSON, wrong shape).

    ``str()`` is the user-facing message ``FILE[:LINE:COL]: error: DETAIL`` (contract.md §9
    position format), so the CLI can print it without a traceback.
    """

    def __init__(
        self, path: StrPath, detail: str, *, line: int | None = None, col: int | None = None
    ) -> None:
        self.path = Path(path)
        self.detail = detail
        self.line = line
        self.col = col
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}:{self.col if self.col is not None else 1}"
        return f"{where}: error: {self.detail}"


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with milliseconds and ``Z`` (``2025-01-31T12:00:00.123Z``), the only
    timestamp form in run files and events. Naive datetimes are taken to be UTC.

    Every event gets one, so the current time takes a fast path: the text up to the second is
    formatted once per second, and the whole text once per millisecond (a stage emits several
    events within one)."""
    if now is None:
        global _second_prefix, _millisecond_text
        millis = time.time_ns() // 1_000_000
        cached_millis, text = _millisecond_text
        if millis == cached_millis:
            return text
        seconds, millis_part = divmod(millis, 1000)  # utc_timestamp_of_millis, inline
        cached_second, prefix = _second_prefix
        if seconds != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
            _second_prefix = (seconds, prefix)
        text = prefix + _MILLIS_TEXTS[millis_part]
        _millisecond_text = (millis, text)
        return text
    moment = now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_timestamp_of_millis(millis: int) -> str:
    """:func:`utc_timestamp` of ``millis`` milliseconds since the epoch, for a caller that
    read the clock itself and keeps the text while the millisecond lasts (the event log:
    ``progress.py``). The text up to the second is formatted once per second."""
    global _second_prefix
    seconds, millis_part = divmod(millis, 1000)
    cached_second, prefix = _second_prefix
    if seconds != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        _second_prefix = (seconds, prefix)
    return prefix + _MILLIS_TEXTS[millis_part]


#: ``f"{n:03d}Z"`` for every millisecond of a second: an index instead of a format per text.
_MILLIS_TEXTS: Final = tuple(f"{n:03d}Z" for n in range(1000))
_second_prefix: tuple[int, str] = (-1, "")
_millisecond_text: tuple[int, str] = (-1, "")


def dumps_json(obj: Any, *, compact: bool = False) -> str:
    """The JSON layout of every persisted document: UTF-8 text (no ``\\u`` escapes), two-space
    indent, keys in insertion order, trailing newline. NaN/Infinity are refused because they are
    not JSON and other readers (jq, browsers) reject them.

    ``compact`` drops the indent: CPython's C encoder only runs without one, which makes large
    documents (the checkpoint, rewritten after every stage) several times cheaper to write."""
    if compact:
        text = _dumps_compact(obj)
    else:
        try:
            text = _indented(obj, "\n")
        except _NotPlain:  # not plain JSON data: the json module's own rules and errors
            text = json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False)
    return text + "\n"


class _NotPlain(Exception):
    """A value :func:`_indented` leaves to ``json.dumps`` (a non-string key, a subclass)."""


_encode_scalar = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _indented(value: Any, newline: str) -> str:
    """``json.dumps(value, ensure_ascii=False, indent=2)`` for plain JSON data, byte for byte.

    Why: with ``indent`` the json module runs its pure-Python encoder (CPython 3.11's C
    encoder has no indent), about 40 µs for a stage's ``status.json``, written at every stage;
    this builds the same text with one C call per leaf, and the leaves of a container without
    a call of their own (most entries of a status file are strings and numbers). ``newline``
    is the line break plus the current indent. Anything that is not exactly a
    str/int/float/bool/None, list, tuple or dict with string keys raises :class:`_NotPlain`,
    and the caller falls back to ``json.dumps``.
    """
    kind = type(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = newline + "  "
        parts = []
        keys = _KEY_TEXTS
        for key, item in value.items():
            key_text = keys.get(key)
            if key_text is None:
                if type(key) is not str:
                    raise _NotPlain
                key_text = _encode_str(key) + ": "
                if len(keys) < 4096:  # the keys of run files are few; other documents' may not be
                    keys[key] = key_text
            item_kind = type(item)
            if item_kind is str:  # most entries, without a call through the table
                parts.append(key_text + _encode_str(item))
            else:
                parts.append(key_text + _LEAVES.get(item_kind, _indented)(item, inner))
        return "{" + inner + ("," + inner).join(parts) + newline + "}"
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        inner = newline + "  "
        leaves = _LEAVES
        items = [leaves.get(type(item), _indented)(item, inner) for item in value]
        return "[" + inner + ("," + inner).join(items) + newline + "]"
    leaf = _LEAVES.get(kind)
    if leaf is None:
        raise _NotPlain
    return leaf(value, newline)


#: A dict key's text with the separator (``"key": ``), by key: status files and the like
#: repeat the same few keys at every stage.
_KEY_TEXTS: dict[str, str] = {}


def _float_text(value: float, _newline: str) -> str:
    return _encode_scalar(value)  # refuses NaN and infinities, as every document does


#: The text of each JSON leaf type, by exact type (``(value, newline) -> text``).
_LEAVES: Final[dict[type, Callable[[Any, str], str]]] = {
    str: lambda value, _newline: _encode_str(value),
    int: lambda value, _newline: int.__repr__(value),
    bool: lambda value, _newline: "true" if value else "false",
    type(None): lambda _value, _newline: "null",
    float: _float_text,
}


_dumps_compact = json_encoder(separators=(",", ":"))


def write_json_atomic(path: StrPath, obj: Any, *, compact: bool = False) -> None:
    """Atomically replace ``path`` with ``obj`` as JSON. Serialization happens before any file is
    touched, so a ``TypeError``/``ValueError`` from an unserializable value leaves the old file
    (or its absence) intact. The parent directory must exist."""
    write_bytes_atomic(path, dumps_json(obj, compact=compact).encode("utf-8"))


def write_text_atomic(
    path: StrPath, text: str, *, durable: bool = True, fresh: bool = False
) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8), e.g. ``graph.dot``.

    ``durable=False`` skips both fsyncs: the file is still never seen half-written (rename is
    atomic, and a killed process cannot tear it), but a power cut may lose it. For bulky stage
    artifacts (``prompt.md``, ``response.md``); every JSON file stays durable. ``fresh``: see
    :func:`write_bytes_atomic`.
    """
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable, fresh=fresh)


def write_bytes_atomic(
    path: StrPath,
    data: bytes,
    *,
    exclusive: bool = False,
    durable: bool = True,
    redacted: bool = False,
    fresh: bool = False,
) -> None:
    """Write ``data`` to a same-directory temp file, fsync, move it to ``path``, fsync the dir.

    With ``exclusive=True`` the temp is hard-linked into place instead of renamed, which fails
    with :class:`FileExistsError` when ``path`` exists: an *exclusive* create that readers can
    never observe half-written (used for ``run.lock.json`` and ``final.json``).

    ``fresh=True`` says ``path`` is in a stage directory the current attempt created, so no
    earlier text can sit there: the file is created in place (:func:`create_in_place`: no
    temp, no rename; contract.md §2 says what a SIGKILL may leave). If the file exists after
    all (a backend wrote it first) the temp-and-rename recipe replaces it as usual.

    Every file of a run passes here, so this is where secrets are redacted (contract.md §10);
    ``redacted=True`` says the caller's encoder already did (the checkpoint, piece by piece).
    """
    if not redacted and redaction.active is not None:  # (``file_bytes`` returns it as is)
        data = redaction.file_bytes(path, data)
    if fresh and not exclusive:
        try:
            create_in_place(path, data, durable=durable)
            return
        except FileExistsError:
            pass
    # ``replacing``'s recipe, inline: every stage writes four files this way, and the
    # generator-based context manager and Path arithmetic cost more than the system calls.
    target = os.fspath(path)
    temp = temp_name(target)
    fd = _create_new(temp)
    try:
        synced = _fill_and_close(fd, data, durable)
        pending.flush_all()  # events emitted before this file appears are in the log first
        if exclusive:
            os.link(temp, target)
            os.unlink(temp)
        else:
            os.replace(temp, target)
    except BaseException:
        remove_quietly(temp)
        raise
    if synced:  # the temp's directory is the target's: its fsync is a no-op where the temp's was
        _fsync_directory_of(target)


def create_in_place(path: StrPath, data: bytes, *, durable: bool = False) -> None:
    """Create ``path`` holding ``data`` (already redacted) in place: an exclusive create, one
    write, close. Raises :class:`FileExistsError` if ``path`` exists, and removes the file
    again if the write fails, so a failure leaves no partial file behind.

    Why not the atomic recipe: for a file in a stage directory the current attempt has just
    created (``prompt.md``, ``response.md``, the ``.attempt.json`` marker) there is no older
    version a reader could lose, so the temp name, the rename and its directory update buy
    nothing but three system calls and their Python. The price, stated in contract.md §2: a
    SIGKILL during the write may leave the file empty or short, which every reader of these
    files treats as absent."""
    target = os.fspath(path)
    # Outside the ``try``: an existing file is not ours to remove. ``_create_new`` and (not
    # durable) ``_fill_and_close`` inline: every stage creates three files here.
    try:
        fd = os.open(target, _NEW_FILE, 0o644)
    except OSError as exc:  # EMFILE: a kept branch log gives its descriptor back
        fd = descriptors.open_after_error(exc, target, _NEW_FILE, 0o644)
    try:
        if durable:
            synced = _fill_and_close(fd, data, durable)
        else:
            try:
                written = os.write(fd, data)  # ``write_all``, its usual one ``write`` inline
                if written != len(data):
                    write_all(fd, memoryview(data)[written:])
            finally:
                os.close(fd)
            return
    except BaseException:
        remove_quietly(target)
        raise
    if synced:
        _fsync_directory_of(target)


def _create_new(target: str) -> int:
    """Exclusively create ``target`` for writing: its descriptor."""
    try:
        return os.open(target, _NEW_FILE, 0o644)
    except OSError as exc:  # EMFILE: a kept branch log gives its descriptor back
        return descriptors.open_after_error(exc, target, _NEW_FILE, 0o644)


def _fill_and_close(fd: int, data: bytes, durable: bool) -> bool:
    """Write ``data`` to the new file ``fd`` (fsynced when ``durable``) and close it. Whether
    it was fsynced: not when fsync is a no-op on its filesystem (``noop_fsync.py``), and then
    the directory it was created in needs none either."""
    try:
        write_all(fd, data)
        if durable and noop_fsync.skips_fsync(fd):
            durable = False
        elif durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    return durable


def _fsync_directory_of(target: str) -> None:
    """fsync the directory of ``target``, a string (no ``Path`` to build)."""
    _open_and_fsync_directory(os.path.dirname(target) or ".")


@contextlib.contextmanager
def replacing(target: Path, *, exclusive: bool = False) -> Iterator[int]:
    """The recipe's middle, shared by every writer (also the async one in
    ``aio/offload.py``): yields a descriptor of a fresh temp file next to ``target``; when
    the block ends normally the temp is closed and moved into place (renamed, or linked when
    ``exclusive``), and on any failure it is removed. Writing and fsyncing the descriptor, and
    fsyncing the directory afterwards, are the caller's."""
    temp, fd = open_temp(target)
    try:
        try:
            yield fd
        finally:
            os.close(fd)
        pending.flush_all()  # events emitted before this file appears are in the log first
        if exclusive:
            os.link(temp, target)
            os.unlink(temp)
        else:
            os.replace(temp, target)
    except BaseException:
        remove_quietly(temp)
        raise


def read_json(path: StrPath) -> Any:
    """Parse a persisted JSON file. A missing file raises :class:`FileNotFoundError` (callers
    decide whether absence is normal); anything unparsable raises :class:`CorruptFileError`
    naming the file and the position of the problem."""
    target = Path(path)
    raw = target.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(target, f"not valid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        raise CorruptFileError(target, "file is empty, expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(
            target, f"invalid JSON: {exc.msg}", line=exc.lineno, col=exc.colno
        ) from None


def read_json_object(path: Path, what: str, schema: Schema | None = None) -> dict[str, Any]:
    """A persisted JSON object, checked against ``schema``: the reading every run file shares.
    Not an object, or a schema violation, raises :class:`CorruptFileError` naming ``what``
    (``"final record must be a JSON object, got a list"``, ``"invalid manifest: missing key
    'run_id' ..."``); a missing file raises :class:`FileNotFoundError` for the caller to judge."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise CorruptFileError(path, f"{what} must be a JSON object, got {json_type_name(doc)}")
    problem = None if schema is None else shape_problem(doc, schema)
    if problem is not None:
        raise CorruptFileError(path, f"invalid {what}: {problem}")
    return doc


def fsync_directory(directory: StrPath) -> None:
    """Make a rename/link/unlink in ``directory`` durable. Filesystems that cannot fsync a
    directory (EINVAL) are tolerated: there is nothing more we can do there. Where fsync is a
    no-op (tmpfs, ramfs: ``noop_fsync.py``) the directory is not even opened."""
    if not noop_fsync.directory_skips_fsync(directory):
        _open_and_fsync_directory(directory)


def _open_and_fsync_directory(directory: StrPath) -> None:
    try:
        fd = os.open(directory, _DIRECTORY)
    except OSError as exc:
        fd = descriptors.open_after_error(exc, directory, _DIRECTORY)
    try:
        fsync_directory_fd(fd)
    finally:
        os.close(fd)


def fsync_directory_fd(fd: int) -> None:
    """:func:`fsync_directory` on an open directory descriptor."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


def is_temp_file_name(name: str) -> bool:
    """True for names this module gives its temp files (``.<name>.<16 hex>.tmp``)."""
    return _TEMP_NAME.match(name) is not None


def cleanup_temp_files(directory: StrPath) -> list[Path]:
    """Remove temp files that a killed writer left in ``directory`` (not recursive); return them.

    Temps are *not* removed automatically: a concurrent writer's in-flight temp would vanish
    before its rename. Call this once at start, right after acquiring the run lock and before
    any writer runs (the engine does this for ``LOGS_ROOT``).
    """
    removed: list[Path] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and is_temp_file_name(entry.name):
                remove_quietly(Path(entry.path))
                removed.append(Path(entry.path))
    return sorted(removed)


def _new_temp_prefix() -> None:
    global _temp_prefix
    _temp_prefix = secrets.token_hex(4)


_temp_prefix = ""
_new_temp_prefix()
os.register_at_fork(after_in_child=_new_temp_prefix)  # a forked writer must not collide
_temp_counter = itertools.count()


def open_temp(target: Path) -> tuple[Path, int]:
    """Create a fresh, empty temp file next to ``target`` (named as ``cleanup_temp_files``
    expects); return its path and a write-only descriptor the caller must close.

    The name's 16 hex digits are a random per-process prefix and a counter: unique among
    this process's writers and (with ``O_EXCL`` as the backstop) other processes', without
    asking the kernel for randomness on every write."""
    temp = Path(temp_name(target))
    try:
        return temp, os.open(temp, _NEW_FILE, 0o644)
    except OSError as exc:
        return temp, descriptors.open_after_error(exc, temp, _NEW_FILE, 0o644)


def temp_name(target: StrPath) -> str:
    """A fresh temp file name next to ``target``, as :func:`cleanup_temp_files` expects.

    One f-string on ``rpartition`` rather than ``os.path.split`` and ``join``: every file a
    stage writes asks for one."""
    head, slash, name = os.fspath(target).rpartition("/")
    return f"{head}{slash}.{name}.{_temp_prefix}{next(_temp_counter) & 0xFFFFFFFF:08x}.tmp"


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` may write less than asked (signals, huge buffers); loop until done."""
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view) :]


def write_all_at(fd: int, data: bytes, offset: int) -> None:
    """:func:`write_all` at ``offset`` (``pwrite``: no ``lseek`` first)."""
    written = os.pwrite(fd, data, offset)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        offset += written
        written = os.pwrite(fd, view, offset)
        view = view[written:]


def remove_quietly(path: StrPath) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- Shape checks shared by the readers -------------------------------------------------------
# A check returns None when a value is fine, else what was found instead ("a string",
# "a string for 'plan'", ...), so an error message can point at the offending member.
Check = Callable[[object], str | None]
# key -> (expected type as told to the user, check, required).
Schema = Mapping[str, tuple[str, Check, bool]]


def shape_problem(doc: Mapping[str, Any], schema: Schema) -> str | None:
    """The first schema violation in ``doc`` as a sentence naming the key and the expected
    type, or ``None``. Pure, so each reader wraps it in its own error type."""
    for key, (expected, check, required) in schema.items():
        if key not in doc:
            if required:
                return f"missing key {key!r} (expected {expected})"
            continue
        found = check(doc[key])
        if found is not None:
            return f"key {key!r} must be {expected}, got {found}"
    return None


def is_str(value: object) -> str | None:
    return None if isinstance(value, str) else json_type_name(value)


def is_int(value: object) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else json_type_name(value)


def is_number(value: object) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else json_type_name(value)


def is_object(value: object) -> str | None:
    return None if isinstance(value, dict) else json_type_name(value)


def is_str_list(value: object) -> str | None:
    if not isinstance(value, list):
        return json_type_name(value)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            return f"{json_type_name(item)} at index {index}"
    return None


def is_map_of(check: Check) -> Check:
    def check_map(value: object) -> str | None:
        if not isinstance(value, dict):
            return json_type_name(value)
        for key, item in value.items():
            found = check(item)
            if found is not None:
                return f"{found} for {key!r}"
        return None

    return check_map


def or_null(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def json_type_name(value: object) -> str:
    """How a JSON value's type is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
