"""The liveness tree: progress bumps a node and every ancestor, the watchdog reads the root.

It mirrors the scope tree (run → branches → attempts). Because a bump walks up to the root,
one busy branch keeps the whole run alive, and a fan-out whose branches are all silent leaves
the root silent too — no per-branch bookkeeping in the watchdog. Heartbeat *events* are
reports about liveness, never progress: nothing here is called by the heartbeat task.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["Liveness"]


class Liveness:
    """One node of the tree. ``clock`` defaults to trio's (virtual under ``MockClock``)."""

    def __init__(
        self,
        name: str = "run",
        parent: Liveness | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.name = name
        self.parent = parent
        self.clock = clock
        self.last_progress = clock()
        #: Open "do not count me as stalled" holds (a human gate waiting for an answer).
        self.holds = 0
        #: Live attempts anywhere below the root, by attempt id (only kept on the root).
        self.attempts: dict[str, tuple[dict[str, str], Liveness]] = {}

    @property
    def root(self) -> Liveness:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def child(self, name: str) -> Liveness:
        return Liveness(name, self, self.clock)

    def bump(self) -> None:
        """Record progress here and in every ancestor."""
        now = self.clock()
        node: Liveness | None = self
        while node is not None:
            node.last_progress = now
            node = node.parent

    def idle(self) -> float:
        """Seconds since the last progress here or below; 0 while a hold is open."""
        if self.holds:
            return 0.0
        return max(0.0, self.clock() - self.last_progress)

    def hold(self, delta: int) -> None:
        """Open (+1) or close (-1) a hold on this node and its ancestors, and bump."""
        node: Liveness | None = self
        while node is not None:
            node.holds += delta
            node = node.parent
        self.bump()

    # --- attempts, for the watchdog's report ---------------------------------------------
    def open_attempt(self, attempt_id: str, info: dict[str, str]) -> Liveness:
        node = self.child(attempt_id)
        self.root.attempts[attempt_id] = (info, node)
        node.bump()
        return node

    def close_attempt(self, attempt_id: str) -> None:
        entry = self.root.attempts.pop(attempt_id, None)
        if entry is not None:
            entry[1].bump()

    def idle_attempts(self) -> list[dict[str, object]]:
        """Every live attempt with how long it has been silent (for ``watchdog_timeout``)."""
        return [
            {**info, "idle_s": round(node.idle(), 3)} for info, node in self.root.attempts.values()
        ]
