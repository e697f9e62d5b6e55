"""The run's vocabulary: the words every layer uses to say what happened, spelled once.

A stage ends with a :class:`Status`; a failure has a :class:`FailureClass` (contract.md §5); a
run ends by an :class:`ExitPath` (contract.md §4, ``final.json``); a cancellation has a
:class:`CancelCause`. Each is a :class:`enum.StrEnum` whose values are the exact strings that
files, events and conditions carry, so a member *is* that string — ``json.dumps``, f-strings
and ``==`` against a string read back from a file all see the same bytes as before. Code
compares and produces members, never re-spelled literals, so a typo is a ``NameError`` at
import and not a silent mismatch at run time.

This module imports nothing from the package: it is the leaf every layer may depend on.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "DEFAULT_KILL_GRACE",
    "CancelCause",
    "ExitPath",
    "FailureClass",
    "Status",
]

#: Seconds a stage's process group gets between SIGTERM and SIGKILL when it is canceled
#: (contract.md §10: ``--kill-grace`` / run config ``kill_grace``) — one default for every caller.
DEFAULT_KILL_GRACE: Final = 5.0


class _Word(enum.StrEnum):
    """A vocabulary word that is indistinguishable from its string even under ``repr``, so
    messages that quote a value (``exit_path 'watchdog'``) read exactly as before."""

    __repr__ = str.__repr__


class Status(enum.StrEnum):
    """The five stage statuses; values are the lowercase strings used in files and conditions."""

    SUCCESS = "success"
    PARTIAL_SUCCESS = "partial_success"
    RETRY = "retry"
    FAIL = "fail"
    SKIPPED = "skipped"


class FailureClass(_Word):
    """What kind of failure a ``fail``/``retry`` outcome is (contract.md §5).

    Definition order is the canonical order (``FAILURE_CLASSES``, messages listing them).
    """

    TRANSIENT_INFRA = "transient_infra"
    BUDGET_EXHAUSTED = "budget_exhausted"
    DETERMINISTIC = "deterministic"
    STRUCTURAL = "structural"
    CANCELED = "canceled"


class ExitPath(_Word):
    """How a run ended: ``final.json``'s ``exit_path`` and the terminal event's."""

    COMPLETED = "completed"
    STAGE_FAILED = "stage_failed"
    GOAL_GATE_UNSATISFIED = "goal_gate_unsatisfied"
    NO_ROUTE = "no_route"
    CANCELED = "canceled"
    WATCHDOG = "watchdog"
    CYCLE_BREAKER = "cycle_breaker"
    VISIT_LIMIT = "visit_limit"
    INTERNAL_ERROR = "internal_error"


class CancelCause(_Word):
    """Who or what canceled a run. The cause is data carried beside the human reason text,
    so deciding the outcome (a watchdog cancel is a ``fail`` with exit path ``watchdog``,
    every other cause is ``canceled``) never parses that text.

    The signal causes are spelled as the signal names because the CLI's exit code and the
    reason text (``run canceled: SIGINT``) use exactly those.
    """

    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    SIGHUP = "SIGHUP"
    #: ``RunController.cancel`` / ``RunHandle.cancel`` from an embedding application.
    API = "api"
    #: ``POST /pipelines/{id}/cancel``.
    HTTP = "http"
    #: The server shutting down with runs still in flight.
    SHUTDOWN = "shutdown"
    #: The stall watchdog: no progress anywhere for ``stall_timeout`` seconds.
    WATCHDOG = "watchdog"
    #: A supervising stage (``stack.manager_loop``) stopping its child run.
    SUPERVISOR = "supervisor"
    #: The fuzz harness (a scheduled cancel, an exhausted budget, a time limit).
    HARNESS = "harness"

    @property
    def fails_run(self) -> bool:
        """A cancel that is a failure of the run (retryable by ``resume``), not a request to
        stop: only the watchdog's (contract.md §10)."""
        return self is CancelCause.WATCHDOG
