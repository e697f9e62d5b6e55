"""The repository checks and the ``--allow-dirty`` snapshot (contract.md §10).

Everything here only reads the user's repository (the snapshot adds objects through a
temporary index, no ref and no file changes): a refused run leaves no trace.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from attrs import frozen

from ..core.vocabulary import DEFAULT_KILL_GRACE
from ..errors import ConfigError
from .git import GitError, git

__all__ = [
    "DEFAULT_BRANCH_PREFIX",
    "WORKSPACE_FILE_NAME",
    "CheckedRepository",
    "WorkspaceConfig",
    "check_repository",
    "snapshot",
]

DEFAULT_BRANCH_PREFIX: Final = "attractor/"
#: The workspace's settings, written when the run starts (resume before the first checkpoint).
WORKSPACE_FILE_NAME: Final = "workspace.json"
#: How many dirty files an error message names before "and N more".
_SHOWN: Final = 10


@frozen
class WorkspaceConfig:
    """``--workspace git`` / run config ``workspace:`` (``repo`` defaults to the workdir)."""

    repo: Path | None = None
    branch_prefix: str = DEFAULT_BRANCH_PREFIX
    keep_worktree: bool = False
    allow_dirty: bool = False


@frozen
class CheckedRepository:
    """What :func:`check_repository` found: everything :func:`create_workspace` needs."""

    toplevel: Path
    head: str
    branch: str
    dirty: tuple[str, ...]
    #: Where the stages run inside a worktree: the workdir relative to the repository root.
    subdir: str


# ------------------------------------------------------------------------------- the checks


async def check_repository(
    config: WorkspaceConfig,
    *,
    run_id: str,
    workdir: Path | None,
    kill_grace: float = DEFAULT_KILL_GRACE,
    logs_root: Path | None = None,
) -> CheckedRepository:
    """Refuse (``ConfigError``, exit 2) anything the run could not start from; write nothing.
    Files under this run's own ``logs_root`` (already created by ``run --detach``) are not
    the user's work."""
    directory = (config.repo or workdir or Path.cwd()).resolve()
    if shutil.which("git") is None:
        raise GitError(
            "git workspace: the `git` command was not found on PATH; install git, "
            "or run without --workspace git"
        )
    if not directory.is_dir():
        raise ConfigError(f"git workspace: {directory} is not a directory")
    top = await git(["rev-parse", "--show-toplevel"], cwd=directory, check=False)
    if not top.ok:
        raise ConfigError(
            f"git workspace: {directory} is not inside a git repository "
            "(run `git init` and commit, or name a repository with workspace.repo)"
        )
    toplevel = Path(top.out.strip())
    head = await git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=toplevel, check=False)
    if not head.ok:
        raise ConfigError(
            f"git workspace: the repository {toplevel} has no commits yet; "
            "make a first commit, then run"
        )
    branch = await _free_branch_name(toplevel, config.branch_prefix + run_id, kill_grace)
    dirty = tuple(await _dirty_files(toplevel, kill_grace, logs_root))
    if dirty and not config.allow_dirty:
        raise ConfigError(
            f"git workspace: {toplevel} has uncommitted changes: {_list(dirty)}; commit or "
            "stash them, or pass --allow-dirty to snapshot them into the run branch"
        )
    return CheckedRepository(toplevel, head.out.strip(), branch, dirty, _subdir(toplevel, workdir))


async def _free_branch_name(toplevel: Path, branch: str, kill_grace: float) -> str:
    valid = await git(
        ["check-ref-format", "--branch", branch], cwd=toplevel, check=False, kill_grace=kill_grace
    )
    if not valid.ok:
        raise ConfigError(f"git workspace: '{branch}' is not a valid branch name")
    taken = await git(
        ["rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
        cwd=toplevel,
        check=False,
        kill_grace=kill_grace,
    )
    if taken.ok:
        raise ConfigError(f"git workspace: branch '{branch}' already exists in {toplevel}")
    return branch


async def _dirty_files(toplevel: Path, kill_grace: float, logs_root: Path | None) -> list[str]:
    """Modified, staged, deleted and untracked non-ignored paths — except other runs' directories
    (a logs root inside the repository, such as the default ``runs/``, is not the user's work)."""
    status = await git(
        ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames"],
        cwd=toplevel,
        kill_grace=kill_grace,
    )
    paths = [entry[3:] for entry in status.out.split("\0") if len(entry) > 3]
    own = _relative_to(toplevel, logs_root)
    return [
        p
        for p in paths
        if not _inside_run_directory(toplevel, p) and not (own and _is_below(p, own))
    ]


def _relative_to(toplevel: Path, path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.resolve().relative_to(toplevel.resolve()))
    except ValueError:
        return ""


def _is_below(relative: str, directory: str) -> bool:
    return relative == directory or relative.startswith(directory.rstrip("/") + "/")


def _inside_run_directory(toplevel: Path, relative: str) -> bool:
    for parent in Path(relative.rstrip("/")).parents:
        if parent != Path(".") and (toplevel / parent / WORKSPACE_FILE_NAME).exists():
            return True
        if parent != Path(".") and (toplevel / parent / "manifest.json").exists():
            return True
    return False


def _subdir(toplevel: Path, workdir: Path | None) -> str:
    here = (workdir or Path.cwd()).resolve()
    try:
        relative = here.relative_to(toplevel.resolve())
    except ValueError:
        return ""
    return "" if str(relative) == "." else str(relative)


def _list(paths: Iterable[str]) -> str:
    items = list(paths)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


async def snapshot(checked: CheckedRepository, run_id: str, kill_grace: float) -> str:
    """A commit on top of ``HEAD`` holding the dirty files, made through a temporary index so
    the user's index and files stay exactly as they were."""
    scratch = Path(tempfile.mkdtemp(prefix="attractor-snapshot-"))
    try:
        env = {"GIT_INDEX_FILE": str(scratch / "index")}
        paths = scratch / "paths"
        paths.write_bytes(b"\0".join(p.encode() for p in checked.dirty) + b"\0")

        async def run(*args: str) -> str:
            done = await git(list(args), cwd=checked.toplevel, env=env, kill_grace=kill_grace)
            return done.out.strip()

        await run("read-tree", checked.head)
        await run(
            "--literal-pathspecs", "add", "-A",
            f"--pathspec-from-file={paths}", "--pathspec-file-nul",
        )  # fmt: skip
        tree = await run("write-tree")
        message = f"attractor: uncommitted changes at the start of run {run_id}"
        return await run("commit-tree", tree, "-p", checked.head, "-m", message)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
