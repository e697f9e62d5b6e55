"""Git workspaces (contract.md §10): a run branch, a worktree, a commit per stage attempt.

The run-level decisions live here; every git command goes through :func:`.git.git` (a child
process in its own process group). The engine touches a workspace at a few points only:

* before the run directory exists: :func:`.repository.check_repository` (exit 2 on a missing git, a
  directory that is not a repository, a repository without commits, or a dirty tree);
* when the run starts: :func:`plan_workspace` (``workspace.json`` and the ``--allow-dirty``
  snapshot commit), then :meth:`Workspace.open` (the branch and ``LOGS_ROOT/worktree``); on
  resume :func:`.resume.resume_workspace`, which puts the branch back at the checkpoint's
  ``head`` and, before the first fresh attempt, the files too (:meth:`Workspace.settle`),
  after saving what an interrupted attempt left behind;
* after every stage attempt that ended with a status: :meth:`Workspace.commit_attempt`, whose
  new head the checkpoint written right after it records — a crash between the two is undone by
  the resume reset, so files and checkpoint always agree;
* for parallel branches: :meth:`Workspace.branch_workspace`, and at the fan-in
  :meth:`Workspace.join_branches` (merge in edge order, or not; a conflict restores the head).

The user's checkout is only ever read: the snapshot uses a temporary index, and every write
happens in worktrees under the logs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import trio
from attrs import define, field

from ..core.vocabulary import DEFAULT_KILL_GRACE
from ..persist.atomic import read_json, write_json_atomic
from .git import GitError, GitResult, git
from .repository import (
    DEFAULT_BRANCH_PREFIX,
    WORKSPACE_FILE_NAME,
    CheckedRepository,
    WorkspaceConfig,
    snapshot,
)

__all__ = ["Workspace", "plan_workspace", "reopen_workspace"]

# ------------------------------------------------------------------------- the run's workspace


@define
class Workspace:
    """One worktree on one branch: the run's, or a parallel branch's."""

    repo: Path
    run_id: str
    branch: str
    worktree: Path
    head: str
    subdir: str = ""
    branch_prefix: str = DEFAULT_BRANCH_PREFIX
    keep_worktree: bool = False
    kill_grace: float = DEFAULT_KILL_GRACE
    #: The head each node's last finished attempt left (its commit, or the head it found).
    node_commits: dict[str, str] = field(factory=dict)
    #: The head before each node's first visit (``resume --from NODE`` goes back there).
    node_bases: dict[str, str] = field(factory=dict)
    #: After a resume: the files may still hold an interrupted attempt's changes.
    unsettled: bool = False
    pending_patch: Path | None = None
    #: After a resume: the branch tip the crash left beyond ``head`` (commits to adopt).
    abandoned: str = ""
    #: Shared by a run's workspaces: concurrent ``git worktree add`` in one repository race
    #: for the administrative directory's name (``.git/worktrees/worktree``) and fail.
    admin_lock: trio.Lock = field(factory=trio.Lock)

    @property
    def workdir(self) -> Path:
        """Where stages run: the worktree, or the workdir's subdirectory inside it."""
        return self.worktree / self.subdir if self.subdir else self.worktree

    async def run_git(self, *args: str, check: bool = True, cwd: Path | None = None) -> GitResult:
        return await git(
            list(args), cwd=cwd or self.worktree, check=check, kill_grace=self.kill_grace
        )

    def note_visit(self, node_id: str) -> None:
        self.node_bases.setdefault(node_id, self.head)

    async def commit_attempt(self, node_id: str, number: int, status: str) -> None:
        """One commit for an attempt that changed files; none (and the same head) otherwise.

        An adopted orphan's attempt commits what the worktree holds: that is its work."""
        self.unsettled = False
        await self.run_git("add", "-A")
        trailers = (
            f"Attractor-Run-Id: {self.run_id}\nAttractor-Node: {node_id}\n"
            f"Attractor-Attempt: {number}"
        )
        committed = await self.run_git(
            "commit", "-q", "--no-verify", "-m", f"{node_id}: {status}", "-m", trailers,
            check=False,
        )  # fmt: skip
        if committed.ok:
            self.head = (await self.run_git("rev-parse", "HEAD")).out.strip()
        elif "nothing to commit" not in committed.out + committed.err:
            raise GitError(f"git commit failed in {self.worktree}: {committed.err.strip()}")
        self.node_commits[node_id] = self.head

    async def adopt_attempt(
        self, node_id: str, number: int, status: str, *, finished_in_engine: bool
    ) -> None:
        """The commit of an attempt a resumed run adopts instead of running it again.

        If the crashed engine had already committed it (the commit is on the branch tip that
        :meth:`reset_to_head` set aside, right on top of ``head``), the branch moves forward to
        that very commit. Otherwise an attempt the engine finished made no commit (it changed
        nothing), and an orphan that finished on its own (a tool stage) commits the worktree:
        it was the last thing running there.
        """
        found = await self._abandoned_commit(node_id, number)
        if found:
            await self.run_git("reset", "-q", "--mixed", found)
            self.head = found
        elif not finished_in_engine:
            await self.commit_attempt(node_id, number, status)
            return
        self.node_commits[node_id] = self.head

    async def _abandoned_commit(self, node_id: str, number: int) -> str:
        if not self.abandoned:
            return ""
        fields = "%H%x09%P%x09%(trailers:key=Attractor-Node,valueonly,separator=%x2C)%x09"
        fields += "%(trailers:key=Attractor-Attempt,valueonly,separator=%x2C)"
        log = await self.run_git(
            "log", "--reverse", f"--format={fields}", f"{self.head}..{self.abandoned}",
            check=False,
        )  # fmt: skip
        for line in log.out.splitlines():
            sha, parents, node, attempt = [*line.split("\t"), "", "", "", ""][:4]
            if parents == self.head and node == node_id and attempt == str(number):
                return sha
        return ""

    def checkpoint_json(self) -> dict[str, Any]:
        """The checkpoint's ``workspace`` object: enough for ``resume`` to need no flag."""
        return {
            "branch": self.branch,
            "head": self.head,
            "node_commits": dict(self.node_commits),
            "node_bases": dict(self.node_bases),
            "repo": str(self.repo),
            "worktree": str(self.worktree),
            "subdir": self.subdir,
            "branch_prefix": self.branch_prefix,
            "keep_worktree": self.keep_worktree,
        }

    def final_json(self) -> dict[str, str]:
        return {"branch": self.branch, "head": self.head}

    async def branch_workspace(self, key: str, worktree: Path) -> Workspace:
        """A parallel branch's worktree on ``<branch>--<key>``, from this workspace's head.

        A worktree left by an interrupted run is reused with its branch reset to the head (its
        files settle before the branch's first fresh attempt, as on resume): a re-run branch
        starts from the fan-out commit, never from a half-finished attempt.
        """
        worktree = _absolute(worktree)
        branch = f"{self.branch}--{key}"
        child = Workspace(
            repo=self.repo,
            run_id=self.run_id,
            branch=branch,
            worktree=worktree,
            head=self.head,
            subdir=self.subdir,
            branch_prefix=self.branch_prefix,
            keep_worktree=self.keep_worktree,
            kill_grace=self.kill_grace,
            admin_lock=self.admin_lock,
        )
        if await child._on_branch():
            await child.reset_to_head(worktree.parent / "interrupted-changes.patch")
            return child
        await self._drop_worktree(worktree)
        _make_parent(worktree)
        async with self.admin_lock:
            await self.run_git("worktree", "add", "-q", "-B", branch, str(worktree), self.head)
        return child

    async def _on_branch(self) -> bool:
        """Whether the worktree exists and has this workspace's branch checked out."""
        if not _is_worktree(self.worktree):
            return False
        current = await self.run_git("symbolic-ref", "-q", "HEAD", check=False)
        return current.out.strip() == f"refs/heads/{self.branch}"

    async def join_branches(
        self, keys: Iterable[str], successful: Iterable[str], *, merge: bool
    ) -> list[str] | None:
        """The fan-in: merge ``successful`` branches in ``keys`` order (when ``merge``), then
        remove every branch worktree, losers' too (the refs stay). Returns the conflicting
        files of the first merge that conflicted — the head is then back where it was before
        the first merge — or ``None``."""
        keys = list(keys)
        wanted = set(successful)
        before = self.head
        conflicts: list[str] | None = None
        try:
            for key in keys if merge else ():
                ref = f"{self.branch}--{key}"
                if key not in wanted or not await self._has_branch(ref):
                    continue
                merged = await self.run_git(
                    "merge", "--no-ff", "--no-edit", "-q", "-m", f"merge {ref}", ref, check=False
                )
                if not merged.ok:
                    conflicts = await self._conflicts(merged)
                    await self.run_git("merge", "--abort", check=False)
                    await self.run_git("reset", "-q", "--hard", before)
                    break
            if conflicts is None and merge:
                self.head = (await self.run_git("rev-parse", "HEAD")).out.strip()
        finally:
            with _shielded():
                await self._remove_branch_worktrees(f"{self.branch}--")
        return conflicts

    async def remove_worktree(self) -> None:
        """After a successful run (unless ``keep_worktree``): the directory goes, the branch
        stays."""
        if not self.keep_worktree:
            await self._drop_worktree(self.worktree)

    async def open(self) -> None:
        """Create the branch at ``head`` and check it out in the worktree (run start)."""
        async with self.admin_lock:
            await self.run_git(
                "worktree", "add", "-q", "-b", self.branch, str(self.worktree), self.head,
                cwd=self.repo,
            )  # fmt: skip

    async def reset_to_head(self, patch: Path | None) -> None:
        """Resume: put the branch (and index) back at ``head``; the files follow at
        :meth:`settle` — before the first fresh attempt, which saves what they held to
        ``patch`` first. The files stay until then because an orphaned attempt the engine
        adopts (exactly once, contract.md §10 "Recovery") made them: its commit takes them.
        The branch's old tip is remembered for :meth:`adopt_attempt`."""
        tip = await self.run_git("rev-parse", "-q", "--verify", f"refs/heads/{self.branch}",
                                 check=False, cwd=self.repo)  # fmt: skip
        self.abandoned = tip.out.strip() if tip.ok and tip.out.strip() != self.head else ""
        if not _is_worktree(self.worktree):
            await self._drop_worktree(self.worktree)
            async with self.admin_lock:
                await self.run_git(
                    "worktree", "add", "-q", "-B", self.branch, str(self.worktree), self.head,
                    cwd=self.repo,
                )  # fmt: skip
            return
        await self._remove_stale_lock()
        await self.run_git("checkout", "-q", "--no-recurse-submodules", self.branch, check=False)
        await self.run_git("reset", "-q", "--mixed", self.head)
        self.pending_patch = patch
        self.unsettled = True

    async def settle(self) -> None:
        """Before a fresh attempt after a resume: save the worktree's leftovers (if any) as the
        interrupted attempt's ``changes.patch``, then make the files exactly ``head``."""
        if not self.unsettled:
            return
        self.unsettled = False
        await self.run_git("add", "-A")
        diff = await self.run_git("diff", "--cached", "--binary", self.head)
        if diff.out and self.pending_patch is not None:
            _write_patch(self.pending_patch, diff.out)
        await self._force_files(self.head)

    async def rewind(self, node_id: str) -> str:
        """``resume --from NODE``: move the run branch (and worktree) back to the head before
        NODE's first visit; the previous tip stays as ``<branch>--before-from-<k>`` (the first
        free k). Returns that branch's name, or ``""`` when nothing moved (NODE never ran, or
        ran without changing the head)."""
        await self.settle()  # an interrupted attempt's leftovers are saved before moving
        target = self.node_bases.get(node_id, self.head)
        tip = (await self.run_git("rev-parse", f"refs/heads/{self.branch}")).out.strip()
        if target == tip:
            return ""
        k = 1
        while await self._has_branch(f"{self.branch}--before-from-{k}"):
            k += 1
        keep_as = f"{self.branch}--before-from-{k}"
        await self.run_git("branch", keep_as, tip)
        await self._force_files(target)
        self.head = target
        return keep_as

    # -------------------------------------------------------------------------------- helpers

    async def _force_files(self, commit: str) -> None:
        """Branch, index and files exactly ``commit``: untracked files go too."""
        await self.run_git("reset", "-q", "--hard", commit)
        await self.run_git("clean", "-fdq")

    async def _has_branch(self, ref: str) -> bool:
        found = await self.run_git("rev-parse", "--verify", "-q", f"refs/heads/{ref}", check=False)
        return found.ok

    async def _conflicts(self, merged: GitResult) -> list[str]:
        listed = await self.run_git("diff", "--name-only", "-z", "--diff-filter=U", check=False)
        files = sorted({f for f in listed.out.split("\0") if f})
        if files:
            return files
        lines = (merged.err.strip() or merged.out.strip()).splitlines()
        return [lines[-1] if lines else f"git merge exited {merged.code}"]

    async def _remove_branch_worktrees(self, prefix: str) -> None:
        """Every worktree on a branch below this one: the fan-out's branches, losers too."""
        listing = await self.run_git("worktree", "list", "--porcelain", check=False)
        path = ""
        for line in listing.out.splitlines():
            if line.startswith("worktree "):
                path = line[len("worktree ") :]
            elif line.startswith(f"branch refs/heads/{prefix}"):
                await self._drop_worktree(Path(path))

    async def _drop_worktree(self, worktree: Path) -> None:
        async with self.admin_lock:
            await self.run_git(
                "worktree", "remove", "--force", str(worktree), check=False, cwd=self.repo
            )
            shutil.rmtree(worktree, ignore_errors=True)
            await self.run_git("worktree", "prune", check=False, cwd=self.repo)

    async def _remove_stale_lock(self) -> None:
        """A git killed mid-command (SIGKILL of the engine) can leave ``index.lock`` behind."""
        gitdir = await self.run_git("rev-parse", "--absolute-git-dir")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(gitdir.out.strip()) / "index.lock")


def _is_worktree(path: Path) -> bool:
    return (path / ".git").is_file()


def _make_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)


def _absolute(path: Path) -> Path:
    return path.resolve()


def _write_patch(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _shielded() -> trio.CancelScope:
    """Cleanup that must finish even when the fan-in is being cancelled (bounded by git)."""
    return trio.CancelScope(shield=True)


# ------------------------------------------------------------------------- creation and resume


async def plan_workspace(
    checked: CheckedRepository,
    config: WorkspaceConfig,
    *,
    run_id: str,
    logs_root: Path,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> Workspace:
    """The run's workspace, recorded in ``LOGS_ROOT/workspace.json`` before the manifest (so a
    run killed at any point after its manifest resumes with it) but not yet on disk: the
    ``--allow-dirty`` snapshot is made (objects only, no ref); :meth:`Workspace.open` creates
    the branch and the worktree."""
    start = checked.head
    if checked.dirty:
        start = await snapshot(checked, run_id, kill_grace)
    workspace = Workspace(
        repo=checked.toplevel,
        run_id=run_id,
        branch=checked.branch,
        worktree=_absolute(logs_root) / "worktree",
        head=start,
        subdir=checked.subdir,
        branch_prefix=config.branch_prefix,
        keep_worktree=config.keep_worktree,
        kill_grace=kill_grace,
    )
    settings = workspace.checkpoint_json()
    settings.update(run_id=run_id, base=start, forked_from=checked.head)
    write_json_atomic(logs_root / WORKSPACE_FILE_NAME, settings)
    return workspace


async def reopen_workspace(
    logs_root: Path,
    saved: Mapping[str, Any] | None,
    *,
    run_id: str,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> Workspace | None:
    """The workspace of a run being resumed: settings from ``workspace.json``, the head and
    commits from the checkpoint (``saved``); ``None`` when the run has no workspace."""
    path = logs_root / WORKSPACE_FILE_NAME
    if saved is None and not path.exists():
        return None
    settings: dict[str, Any] = dict(read_json(path)) if path.exists() else {}
    settings.update(saved or {})
    head = str(settings.get("head") or settings.get("base") or "")
    return Workspace(
        repo=Path(settings["repo"]),
        run_id=run_id,
        branch=str(settings["branch"]),
        worktree=Path(settings["worktree"]),
        head=head,
        subdir=str(settings.get("subdir") or ""),
        branch_prefix=str(settings.get("branch_prefix") or DEFAULT_BRANCH_PREFIX),
        keep_worktree=bool(settings.get("keep_worktree")),
        kill_grace=kill_grace,
        node_commits={str(k): str(v) for k, v in dict(settings.get("node_commits", {})).items()},
        node_bases={str(k): str(v) for k, v in dict(settings.get("node_bases", {})).items()},
    )
