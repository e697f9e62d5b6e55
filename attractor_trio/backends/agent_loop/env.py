"""Where the coding agent's tools act: a local working directory (coding-agent-loop spec §4.2).

:class:`LocalEnvironment` owns the three things that must not be left to each tool:

* **Path safety.** Every path a model names is resolved against the working directory and,
  after following symlinks, must stay inside it (unless ``allow_outside_workdir``). A model that
  writes ``../x``, ``/etc/passwd`` or through a symlink pointing out of the tree gets an error it
  can act on, not a file outside the stage's sandbox of responsibility.
* **Secrets.** The shell sees the caller's environment minus every ``*_API_KEY``, ``*_SECRET``,
  ``*_TOKEN``, ``*_PASSWORD`` and ``*_CREDENTIAL`` variable (case-insensitive) and every name the
  redaction layer treats as a secret (``*PASSWORD*``, ``*_CREDENTIALS``): the engine holds
  provider keys, and a model that runs ``env`` must not be able to print them into a log.
* **Process lifetime.** Commands run through
  :func:`~attractor_trio.backends.executors.run_stage_process` (a local process group; with
  ``--executor ray`` the whole session runs on a node, where it is a process group led by the
  orphan guard), so a timed-out or cancelled command takes its whole process group with it
  (SIGTERM, ``kill_grace``, SIGKILL).

The filesystem helpers are synchronous on purpose: :class:`~.tools.ToolBox` runs them in a
worker thread, and they are easy to test without trio.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import trio
from attrs import frozen

from ...core.redaction import is_secret_env_name
from ...persist.logtext import decode_head, decode_tail
from ...persist.status import OWNERSHIP_KEYS
from ..executors.base import run_stage_process

__all__ = [
    "SECRET_SUFFIXES",
    "SKIPPED_DIRS",
    "ExecResult",
    "LocalEnvironment",
    "ToolError",
    "filter_env",
    "is_binary",
    "is_secret_name",
    "matches_filter",
]

#: Environment variables whose (upper-cased) name ends in one of these never reach the shell.
SECRET_SUFFIXES: Final = ("_API_KEY", "_SECRET", "_TOKEN", "_PASSWORD", "_CREDENTIAL")
#: Version-control directories that grep and glob never descend into.
SKIPPED_DIRS: Final = frozenset({".git", ".hg", ".svn"})
#: A file whose first bytes contain NUL is treated as binary (git's heuristic).
BINARY_SNIFF_BYTES: Final = 8192
#: A shell log larger than this is read as its first and last half (the model sees ≤ 30 000
#: characters anyway; this only bounds memory for a command that printed gigabytes).
LOG_READ_CAP_BYTES: Final = 4 * 1024 * 1024


class ToolError(Exception):
    """A problem the model can fix (bad path, missing file, ambiguous edit…).

    ``str()`` is exactly the text the model receives as an ``is_error`` tool result, so it says
    what is wrong and what to do instead.
    """


def is_secret_name(name: str) -> bool:
    """``OPENAI_API_KEY``, ``github_token``, ``TOKEN`` — a bare suffix counts as a secret too.

    The spec's suffixes, and every name the redaction layer treats as a secret
    (``DB_PASSWORD_FILE``, ``GCP_CREDENTIALS``): a value the engine would redact in its own files
    must not be printable by a model that runs ``env``.
    """
    return ("_" + name.upper()).endswith(SECRET_SUFFIXES) or is_secret_env_name(name)


def filter_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables :func:`is_secret_name` flags (spec §4.2)."""
    return {name: value for name, value in env.items() if not is_secret_name(name)}


def is_binary(path: Path) -> bool:
    """True when the start of the file contains a NUL byte."""
    with open(path, "rb") as f:
        return b"\0" in f.read(BINARY_SNIFF_BYTES)


@frozen
class ExecResult:
    """How a shell command ended (spec §4.1 ``ExecResult``).

    ``exit_code`` is ``None`` when the command timed out (the group was killed by us); negative
    means killed by signal ``-exit_code`` (``signal_name`` then names it).
    """

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    duration_ms: int
    signal_name: str = ""
    log_paths: tuple[Path, Path] | None = None


class LocalEnvironment:
    """Tools' view of one stage: its working directory, stage directory, environment, owner.

    ``env`` is the environment the shell would inherit (typically ``os.environ`` plus the
    attempt's ``ATTRACTOR_*`` variables); secrets are dropped here, once. ``status_path``
    defaults to ``<stage_dir>/status.json``; ``owner`` carries the ``run_id``/``node_id``/
    ``attempt_id`` that ``report_status`` writes so status ingestion accepts the file.
    ``on_output`` is called whenever a tool produces output (liveness).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        stage_dir: Path,
        env: Mapping[str, str],
        kill_grace: float = 2.0,
        allow_outside_workdir: bool = False,
        on_output: Callable[[], None] | None = None,
        status_path: Path | None = None,
        owner: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.stage_dir = Path(stage_dir)
        self.env = filter_env(env)
        self.kill_grace = kill_grace
        self.allow_outside_workdir = allow_outside_workdir
        self.status_path = Path(status_path) if status_path else self.stage_dir / "status.json"
        self.owner = {key: str(owner[key]) for key in OWNERSHIP_KEYS if owner and key in owner}
        self._on_output = on_output
        self._shell_count = 0

    @property
    def platform(self) -> str:
        """``linux``, ``darwin``… (for the system prompt's environment block)."""
        return platform.system().lower()

    @property
    def os_version(self) -> str:
        return platform.release()

    def notify_output(self) -> None:
        """Tell the liveness tree that a tool produced output."""
        if self._on_output is not None:
            self._on_output()

    # -- paths ------------------------------------------------------------------------------

    def resolve(self, path: str, *, argument: str = "file_path") -> Path:
        """The absolute, symlink-free path for ``path`` (relative to the workdir), or ToolError.

        ``resolve()`` follows symlinks, so a link inside the tree that points out of it is
        caught by the same check as ``../x``.
        """
        if not path.strip():
            raise ToolError(f"{argument} is empty: give a path relative to {self.workdir}")
        if "\0" in path:
            raise ToolError(f"{argument} {path!r} contains a NUL character")
        given = Path(path)
        joined = given if given.is_absolute() else self.workdir / given
        try:
            resolved = joined.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            raise ToolError(f"{argument} {path!r} cannot be resolved: {exc}") from None
        if not self.allow_outside_workdir and not self.is_inside(resolved):
            raise ToolError(
                f"{argument} {path!r} is outside the working directory {self.workdir} "
                f"(it resolves to {resolved}); tools may only use files inside it, so give a "
                "path relative to the working directory"
            )
        return resolved

    def is_inside(self, resolved: Path) -> bool:
        return resolved.is_relative_to(self.workdir)

    def display(self, path: Path) -> str:
        """``path`` as the model should write it back: relative to the workdir when inside."""
        try:
            relative = path.relative_to(self.workdir)
        except ValueError:
            return str(path)
        return relative.as_posix() if relative.parts else "."

    # -- search -----------------------------------------------------------------------------

    def walk_files(self, root: Path) -> Iterator[Path]:
        """Files under ``root`` (or ``root`` itself), sorted by path, without VCS directories.

        Symlinked directories are not followed; a symlinked file is skipped when it points
        outside the working directory (the same rule :meth:`resolve` applies).
        """
        if not root.is_dir():
            yield root
            return
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(name for name in dirnames if name not in SKIPPED_DIRS)
            for name in sorted(filenames):
                path = Path(directory, name)
                if path.is_symlink() and not self._link_allowed(path):
                    continue
                yield path

    def glob(self, pattern: str, base: Path) -> list[Path]:
        """Paths under ``base`` matching ``pattern``, newest modification first, then by name."""
        if not pattern.strip():
            raise ToolError("pattern is empty: give a glob pattern such as '**/*.py'")
        if Path(pattern).is_absolute():
            raise ToolError(
                f"pattern {pattern!r} is absolute: patterns are relative to the search path "
                "(set 'path' to choose the directory)"
            )
        try:
            matches = list(base.glob(pattern))
        except (ValueError, NotImplementedError) as exc:
            raise ToolError(f"invalid glob pattern {pattern!r}: {exc}") from None
        dated = {}
        for match in matches:
            if SKIPPED_DIRS.intersection(match.parts[len(base.parts) :]):
                continue
            path = Path(os.path.normpath(match))  # ``../work/x`` is ``x``: one spelling each
            mtime = self._glob_candidate_mtime(path, base)
            if mtime is not None:
                dated[path] = (-mtime, self.display(path))
        return sorted(dated, key=dated.__getitem__)

    def _glob_candidate_mtime(self, path: Path, base: Path) -> float | None:
        """The path's mtime, or ``None`` for the search root, a path outside, or a gone one."""
        if path in (base, self.workdir):
            return None
        try:
            if not self.allow_outside_workdir and not self.is_inside(path.resolve()):
                return None
            return path.stat().st_mtime
        except (OSError, RuntimeError):
            return None

    def _link_allowed(self, path: Path) -> bool:
        if self.allow_outside_workdir:
            return True
        try:
            return self.is_inside(path.resolve())
        except (OSError, RuntimeError):
            return False

    # -- shell ------------------------------------------------------------------------------

    async def exec_command(self, command: str, timeout_ms: int) -> ExecResult:
        """Run ``/bin/bash -c command`` in the workdir; kill its process group on timeout.

        Output goes to ``<stage_dir>/tools/shell-<n>.stdout|stderr`` (kept for post-mortems;
        the model sees a truncated copy). Cancellation of the caller propagates after the group
        is gone (``run_in_process_group`` guarantees that).
        """
        stdout_path, stderr_path = self._next_log_paths()
        started = time.monotonic()
        result = None
        with trio.move_on_after(timeout_ms / 1000) as deadline:
            result = await run_stage_process(
                ["/bin/bash", "-c", command],
                cwd=self.workdir,
                env=dict(self.env),
                stdout_path=stdout_path,
                stderr_path=stderr_path,
                kill_grace=self.kill_grace,
                on_output=self._on_output,
            )
        duration_ms = round((time.monotonic() - started) * 1000)
        stdout, stderr = await trio.to_thread.run_sync(_read_logs, stdout_path, stderr_path)
        return ExecResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=None if result is None else result.exit_code,
            timed_out=deadline.cancelled_caught,
            duration_ms=duration_ms,
            signal_name="" if result is None else result.signal_name,
            log_paths=(stdout_path, stderr_path),
        )

    def _next_log_paths(self) -> tuple[Path, Path]:
        """The first unused ``shell-<n>`` pair (a re-created environment must not append)."""
        if not self.workdir.is_dir():
            raise ToolError(f"the working directory {self.workdir} does not exist")
        tools_dir = self.stage_dir / "tools"
        tools_dir.mkdir(parents=True, exist_ok=True)
        while True:
            self._shell_count += 1
            stem = tools_dir / f"shell-{self._shell_count}"
            stdout_path, stderr_path = Path(f"{stem}.stdout"), Path(f"{stem}.stderr")
            if not stdout_path.exists() and not stderr_path.exists():
                return stdout_path, stderr_path


def _read_logs(stdout_path: Path, stderr_path: Path) -> tuple[str, str]:
    return _read_log(stdout_path), _read_log(stderr_path)


def _read_log(path: Path) -> str:
    """The log as text; beyond :data:`LOG_READ_CAP_BYTES`, its two ends around a marker."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= LOG_READ_CAP_BYTES:
                return f.read().decode("utf-8", "replace")
            half = LOG_READ_CAP_BYTES // 2
            head = decode_head(f.read(half))
            f.seek(size - half)
            tail = decode_tail(f.read(half))
    except FileNotFoundError:
        return ""
    return f"{head}\n[... {size - 2 * half} bytes omitted ...]\n{tail}"


def matches_filter(relative: str, name: str, glob_filter: str) -> bool:
    """grep's ``glob_filter``: ``*.py`` matches file names, ``src/*.py`` relative paths.

    A leading ``**/`` also matches at the top level (``**/*.py`` matches ``a.py``).
    """
    patterns = [glob_filter]
    if glob_filter.startswith("**/"):
        patterns.append(glob_filter[3:])
    subject = relative if "/" in glob_filter else name
    return any(fnmatch.fnmatchcase(subject, pattern) for pattern in patterns)
