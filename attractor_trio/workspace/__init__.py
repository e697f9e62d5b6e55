"""Git workspaces (contract.md §10): :mod:`.repository` checks the user's repository before a
run, :mod:`.workspace` makes the run-level decisions, :mod:`.resume` resets on resume, and
:mod:`.git` runs the ``git`` CLI."""

from __future__ import annotations

from .git import ENGINE_IDENTITY, GitError
from .repository import (
    DEFAULT_BRANCH_PREFIX,
    WORKSPACE_FILE_NAME,
    CheckedRepository,
    WorkspaceConfig,
    check_repository,
)
from .workspace import Workspace, plan_workspace, reopen_workspace

__all__ = [
    "DEFAULT_BRANCH_PREFIX",
    "ENGINE_IDENTITY",
    "WORKSPACE_FILE_NAME",
    "CheckedRepository",
    "GitError",
    "Workspace",
    "WorkspaceConfig",
    "check_repository",
    "plan_workspace",
    "reopen_workspace",
]
