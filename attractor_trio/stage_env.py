"""The environment of every stage process: an allowlist, explicit passes, the stage variables.

contract.md §10: a tool stage, a CLI agent, the agent loop's ``shell`` tool and its tool hooks
never inherit the engine's whole environment (provider keys, database passwords, the server's
``ATTRACTOR_TOKEN``). They get :data:`BASE_ALLOWLIST`, the names (globs allowed) the user
passes with ``--pass-env NAME`` or run config ``env: {pass: [...]}``, and the attempt's own
``ATTRACTOR_*`` variables (:meth:`AttemptInfo.process_env`). ``ATTRACTOR_TOKEN`` never passes,
not even through a glob. :func:`stage_environment` is the one place this is composed.

The passes travel in a context variable the run installs (:func:`use_env_passes`), like the
grace-skip switch: trio copies it into every task of the run, and two runs in one process
(the HTTP server) keep their own.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .core.attempt import AttemptInfo

__all__ = [
    "BASE_ALLOWLIST",
    "NEVER_PASSED",
    "check_pass_pattern",
    "stage_environment",
    "use_env_passes",
]

#: What every stage gets from the engine's environment (names or globs).
BASE_ALLOWLIST: Final = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TERM",
)
#: Never passed to a stage, whatever the passes say.
NEVER_PASSED: Final = frozenset({"ATTRACTOR_TOKEN"})

_PASSES: ContextVar[tuple[str, ...]] = ContextVar("attractor_trio_env_passes", default=())
_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")


def check_pass_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a variable name or glob (``None`` when it is fine)."""
    if not pattern or _PATTERN.fullmatch(pattern) is None:
        return f"'{pattern}' is not an environment variable name or glob (like GITHUB_TOKEN, AWS_*)"
    return None


@contextlib.contextmanager
def use_env_passes(patterns: Iterable[str]) -> Iterator[None]:
    """Make ``patterns`` the passes of the stages started in this context (the run's tasks)."""
    token = _PASSES.set(tuple(patterns))
    try:
        yield
    finally:
        _PASSES.reset(token)


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


def stage_environment(
    attempt: AttemptInfo,
    *,
    extra_names: Iterable[str] = (),
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The allowlisted part of ``inherited`` (the engine's environment), the passes and
    ``extra_names`` (a CLI agent's ``api_key_env``), then the attempt's stage variables."""
    source = os.environ if inherited is None else inherited
    allowed = _matcher((*BASE_ALLOWLIST, *_PASSES.get(), *(n for n in extra_names if n)))
    env = {
        name: value
        for name, value in source.items()
        if allowed.match(name) is not None and name not in NEVER_PASSED
    }
    env.update(attempt.process_env())
    return env
