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
        now: float | None = None,
    ) -> None:
        """``now``: the clock's reading, when the caller has just taken it."""
        self.name = name
        self.parent = parent
        self.clock = clock
        self.last_progress = clock() if now is None else now
        #: Open "do not count me as stalled" holds (a human gate waiting for an answer).
        self.holds = 0
        #: Live attempts anywhere below the root, by attempt id (only kept on the root).
        self.attempts: dict[str, tuple[dict[str, str], Liveness]] = {}
        #: The tree's root, found once (a node never changes its parent): every attempt asks
        #: twice, where walking up was a call and a loop each time.
        self._root: Liveness = self if parent is None else parent._root

    @property
    def root(self) -> Liveness:
        return self._root

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
        """A child node for the attempt, registered on the root, and progress up the tree:
        all at one reading of the clock (a bump after creating the node read it twice)."""
        now = self.clock()
        node = Liveness(attempt_id, self, self.clock, now)
        self._root.attempts[attempt_id] = (info, node)
        ancestor: Liveness | None = self
        while ancestor is not None:
            ancestor.last_progress = now
            ancestor = ancestor.parent
        return node

    def close_attempt(self, attempt_id: str) -> None:
        entry = self._root.attempts.pop(attempt_id, None)
        if entry is not None:
            entry[1].bump()

    def idle_attempts(self) -> list[dict[str, object]]:
        """Every live attempt with how long it has been silent (for ``watchdog_timeout``)."""
        return [
            {**info, "idle_s": round(node.idle(), 3)} for info, node in self.root.attempts.values()
        ]
