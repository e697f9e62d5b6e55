"""What ``status`` reports: the terminal state from ``final.json``, else ``live.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import AttractorError
from .persist.final import read_final
from .persist.live import read_live
from .persist.lock import read_run_lock

__all__ = ["read_status"]


def read_status(logs_root: Path) -> dict[str, Any]:
    """``{run_id, state, current_node, active_attempts, failure_reason, failure_class, ...}``."""
    final = read_final(logs_root)
    live = read_live(logs_root) or {}
    if final is None and not live:
        lock = read_run_lock(logs_root)
        if lock is None:
            raise AttractorError(f"{logs_root}: no live.json or final.json — not a run directory?")
        live = {"run_id": lock.run_id, "state": "starting"}
    if final is not None:
        return {
            "run_id": final.run_id,
            "state": final.status,
            "current_node": live.get("current_node", ""),
            "active_attempts": [],
            "failure_reason": final.failure_reason or "",
            "failure_class": final.failure_class or "",
            "exit_path": final.exit_path,
            "logs_root": str(logs_root),
        }
    return {
        "run_id": live.get("run_id", ""),
        "state": live.get("state", "running"),
        "current_node": live.get("current_node", ""),
        "active_attempts": live.get("active_attempts", []),
        "failure_reason": "",
        "failure_class": "",
        "exit_path": "",
        "logs_root": str(logs_root),
    }
