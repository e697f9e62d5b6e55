"""One removal of the work directory's stale status files serving many starting attempts.

Why: contract.md §3 ingestion rule 1 removes the two work-directory fallbacks
(``status.json``, ``.attractor/status.json``) before every attempt. The 1,000 branches of a
wide fan-out share one work directory, and their first attempts did 2,000 ``unlink`` calls of
the same two paths on the trio thread, one after another, before the last branch could begin
its work (issue #22). What the rule guarantees is that nothing written *before* the attempt
starts can decide it; the engine cannot order the attempt against writers running beside it
(sibling branches' stage processes, other processes), whose files may land a moment after any
removal. So a removal that began after a branch asked for its set-up, and finished before its
first attempt starts, removes everything the attempt's own removal would have had to: that
attempt's own ``unlink`` calls could only add an ordering the engine does not promise anyway.

How: requests and removals draw tickets from one counter (``next`` on an ``itertools.count``
is atomic under the GIL, so tickets order the trio thread's requests against the write-pool
threads' removals). A set-up takes its ticket on the trio thread when the branch asks; on the
pool thread it is served if a removal that drew a later ticket has *finished* (one still under
way in another thread might finish after the branch's attempt started, so it does not count),
and otherwise removes the two files itself. A removal that fails (a directory in the way, no
permission) serves no one: each attempt then removes and fails as rule 1 says.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..core.outcome import StatusFileError
from .status import remove_stale_fallbacks

__all__ = ["FallbackSweep"]


class FallbackSweep:
    """The work-directory fallbacks of one work directory, removed at most once per batch of
    attempts that start together (see the module's docstring). One per run and work directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._tickets = itertools.count(1)
        #: The ticket of the latest removal that finished (0: none yet).
        self._done = 0
        #: How many removals ran (for tests and benchmarks).
        self.removals = 0

    def ticket(self) -> int:
        """Taken when an attempt's set-up is asked for (on the trio thread)."""
        return next(self._tickets)

    def sweep(self, ticket: int) -> bool:
        """Blocking (a write-pool thread): make sure a removal that began after ``ticket`` has
        finished, running one if none has. ``False`` if the removal failed: the attempt must
        then remove (and fail) on its own."""
        if self._done > ticket:
            return True
        began = next(self._tickets)
        self.removals += 1
        try:
            remove_stale_fallbacks(self.workdir)
        except (StatusFileError, OSError):
            return False
        if began > self._done:
            self._done = began
        return True
