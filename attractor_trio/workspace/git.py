"""Running the ``git`` CLI: a child process in its own process group (contract.md §10).

Every git command the engine runs goes through :func:`git`, which uses the same process-group
machinery as stage processes (:func:`~attractor_trio.aio.process.run_in_process_group`):
cancelling the run (a signal, the watchdog, ``stop``) ends a slow ``git merge`` or ``git add``
exactly like a stage's ``make``, within the kill grace, and nothing git started survives.

The environment is the engine's own minus the variables that would point git at another
repository (``GIT_DIR``…), with ``LC_ALL=C`` so messages are parseable and prompts disabled.
Commits are made as ``attractor-trio <attractor-trio@localhost>`` unless the engine's
environment sets ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` — a machine without a git identity
(CI, a fresh container) can run a workspace pipeline, and every run commit is recognizable.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen

from ..aio.process import run_in_process_group
from ..core.vocabulary import DEFAULT_KILL_GRACE
from ..errors import ConfigError

__all__ = ["ENGINE_IDENTITY", "GitError", "GitResult", "git", "git_env"]

#: Who the engine commits as when the environment names nobody (see the module docstring).
ENGINE_IDENTITY: Final = {
    "GIT_AUTHOR_NAME": "attractor-trio",
    "GIT_AUTHOR_EMAIL": "attractor-trio@localhost",
    "GIT_COMMITTER_NAME": "attractor-trio",
    "GIT_COMMITTER_EMAIL": "attractor-trio@localhost",
}

#: Variables that would make git act on some other repository or index than the one we name.
_REDIRECTS: Final = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


#: No signing prompt, no user hooks, no automatic gc/maintenance racing between worktrees.
_SETTINGS: Final = (
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
)


class GitError(ConfigError):
    """A git command failed, or git could not be run at all (exit 2 before a run starts)."""


@frozen
class GitResult:
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0


_CALLS = itertools.count(1)
_SCRATCH: list[Path] = []


def _scratch() -> Path:
    """One private directory per process for git's output files (a directory per call would
    cost as much as a fast git command); removed when the process exits."""
    if not _SCRATCH or not _SCRATCH[0].is_dir():
        path = Path(tempfile.mkdtemp(prefix="attractor-git-"))
        atexit.register(shutil.rmtree, path, True)
        _SCRATCH[:] = [path]
    return _SCRATCH[0]


def _missing(directory: Path) -> bool:
    return not directory.is_dir()


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git child process (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in _REDIRECTS}
    for key, value in ENGINE_IDENTITY.items():
        env.setdefault(key, value)
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    env.update(extra or {})
    return env


async def git(
    args: Sequence[str],
    *,
    cwd: Path,
    check: bool = True,
    kill_grace: float = DEFAULT_KILL_GRACE,
    env: Mapping[str, str] | None = None,
) -> GitResult:
    """Run ``git ARGS`` in ``cwd``; raise :class:`GitError` on failure when ``check``.

    Output goes to temporary files (as for stages: no pipe a grandchild could hold open).
    """
    argv = ["git", *_SETTINGS, *args]
    name = f"{os.getpid()}-{next(_CALLS)}"
    out_path, err_path = _scratch() / f"{name}.out", _scratch() / f"{name}.err"
    try:
        try:
            result = await run_in_process_group(
                argv,
                cwd=cwd,
                env=git_env(env),
                stdout_path=out_path,
                stderr_path=err_path,
                kill_grace=kill_grace,
            )
        except FileNotFoundError:
            if _missing(cwd):
                raise GitError(f"git workspace: directory {cwd} does not exist") from None
            raise GitError(
                "git workspace: the `git` command was not found on PATH; install git, "
                "or run without --workspace git"
            ) from None
        out = out_path.read_text(errors="replace")
        err = err_path.read_text(errors="replace")
    finally:
        for path in (out_path, err_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    done = GitResult(result.exit_code, out, err)
    if check and not done.ok:
        detail = (err.strip() or out.strip()).splitlines()
        raise GitError(
            f"git {' '.join(args[:3])} failed in {cwd}: {detail[-1] if detail else done.code}"
        )
    return done
