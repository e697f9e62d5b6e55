"""The process exit codes of every command (contract.md §1, §9), spelled once.

They live in ``core`` rather than ``cli`` because the status reports (``observe``) state the
exit code a finished run returned, and the layering lets no layer below ``cli`` import it.
The per-command names are aliases, so each command reads in its own words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "EXIT_CLEAN",
    "EXIT_FAIL",
    "EXIT_FOUND",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_STOPPED",
    "EXIT_OK",
    "EXIT_SIGHUP",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "RUN_STATUS_EXIT",
    "SIGNAL_EXIT",
]

#: Success: the run succeeded, the pipeline is valid, the listing/report was printed.
EXIT_OK: Final = 0
#: The run failed; ``validate`` found errors; ``stop`` could not stop the run.
EXIT_FAIL: Final = 1
#: Bad usage or input: options, config, DOT syntax or validation errors given to ``run``.
EXIT_USAGE: Final = 2
#: The engine itself failed (``exit_path`` ``internal_error``); ``EX_SOFTWARE``.
EXIT_INTERNAL: Final = 70
#: 128 + the signal number, as a shell reports a process ended by that signal.
EXIT_SIGHUP: Final = 129
EXIT_SIGINT: Final = 130
EXIT_SIGTERM: Final = 143

#: ``run``: a finished run's status → exit code (anything else exits ``EXIT_FAIL``).
RUN_STATUS_EXIT: Final[Mapping[str, int]] = {"success": EXIT_OK, "fail": EXIT_FAIL}
#: ``run``/``serve``: the signal (or ``stop``) that canceled the process → exit code.
SIGNAL_EXIT: Final[Mapping[str, int]] = {
    "SIGHUP": EXIT_SIGHUP,
    "SIGINT": EXIT_SIGINT,
    "SIGTERM": EXIT_SIGTERM,
    "stop": EXIT_SIGTERM,
}

#: ``stop``: the run ended (or had already ended) / it did not.
EXIT_STOPPED: Final = EXIT_OK
EXIT_NOT_STOPPED: Final = EXIT_FAIL
#: ``fuzz``: no defect found / a defect found.
EXIT_CLEAN: Final = EXIT_OK
EXIT_FOUND: Final = EXIT_FAIL
#: ``status --follow`` stopped by Ctrl-C (the run goes on).
EXIT_INTERRUPTED: Final = EXIT_SIGINT
