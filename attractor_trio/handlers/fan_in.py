"""Fan-in (spec §4.9): pick the best branch result; fail only when every branch failed.

Ranking is heuristic (status rank, then score, then id) unless the node has a ``prompt`` and
the run has a codergen backend, in which case the backend is asked to choose; an answer that
names no branch falls back to the heuristic and says so in ``notes`` (never silently).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..context import Context
from ..core.failures import DETERMINISTIC, STRUCTURAL, TRANSIENT_INFRA, normalize_failure_class
from ..core.outcome import Outcome, StageStatus
from ..dot.graph import Graph, Node
from ..dot.transforms import expand_variables
from .base import current_attempt

__all__ = ["FanInHandler", "heuristic_rank"]

_RANK = {"success": 0, "partial_success": 1, "retry": 2, "fail": 3, "canceled": 4}


def heuristic_rank(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """S4.9-03: sort by (status rank, -score, id)."""
    return sorted(
        results,
        key=lambda r: (
            _RANK.get(str(r.get("status")), 5),
            -float(r.get("score") or 0),
            str(r["id"]),
        ),
    )


class FanInHandler:
    def __init__(self, backend: Any = None) -> None:
        self.backend = backend

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        results = context.get("parallel.results") or []
        failed_join = _failed_join(graph, context)
        merged = await _join_workspaces(node, results, merge=failed_join is None)
        if failed_join is not None:
            return failed_join
        if merged is not None:
            return merged
        if not isinstance(results, list) or not results:
            return Outcome(
                StageStatus.FAIL,
                failure_reason="No parallel results to evaluate",
                failure_class=STRUCTURAL,
            )
        usable = [r for r in results if r.get("status") in ("success", "partial_success")]
        if not usable:
            return _all_failed(results)
        best, how = await self._choose(node, context, graph, usable)
        return Outcome(
            StageStatus.SUCCESS,
            context_updates={
                "parallel.fan_in.best_id": best["id"],
                "parallel.fan_in.best_outcome": best["status"],
                "parallel.fan_in.losers": [r["id"] for r in results if r["id"] != best["id"]],
            },
            notes=f"Selected best candidate: {best['id']} ({how})",
        )

    async def _choose(
        self, node: Node, context: Context, graph: Graph, usable: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        ranked = heuristic_rank(usable)
        if not node.prompt or self.backend is None:
            return ranked[0], "heuristic"
        prompt = _ranking_prompt(expand_variables(node.prompt, graph), usable)
        answer = await self.backend.run(node, prompt, context)
        text = answer if isinstance(answer, str) else getattr(answer, "preferred_label", "")
        chosen = _named_branch(text, usable)
        if chosen is None:
            return ranked[0], "heuristic: the ranking answer named no branch"
        return chosen, "llm"


def _ranking_prompt(instruction: str, results: list[dict[str, Any]]) -> str:
    lines = [instruction, "", "Candidates:"]
    for result in results:
        notes = str(result.get("notes") or "")[:300]
        lines.append(f"- {result['id']}: {result['status']} {notes}".rstrip())
    lines += ["", "Answer with the id of the best candidate on the first line."]
    return "\n".join(lines)


def _named_branch(text: str, results: list[dict[str, Any]]) -> dict[str, Any] | None:
    ids = {str(r["id"]): r for r in results}
    for token in re.findall(r"[A-Za-z_][A-Za-z0-9_#]*", text):
        if token in ids:
            return ids[token]
    return None


async def _join_workspaces(node: Node, results: Any, *, merge: bool) -> Outcome | None:
    """With a git workspace (contract.md §10): merge the successful branches into the run branch
    in the fan-out's edge order (``merge=all``, the default; ``merge=none`` merges nothing),
    then remove the branch worktrees. A conflict fails the fan-in, naming the files."""
    attempt = current_attempt()
    workspace = attempt.workspace if attempt is not None else None
    if workspace is None or not isinstance(results, list):
        return None
    keys = [str(r["id"]) for r in results if isinstance(r, dict) and "id" in r]
    successful = [str(r["id"]) for r in results if r.get("status") in _MERGED]
    conflicts = await workspace.join_branches(
        keys, successful, merge=merge and node.attrs.get("merge", "all") != "none"
    )
    if conflicts is None:
        return None
    return Outcome(
        StageStatus.FAIL,
        failure_reason=f"merge conflict at fan-in '{node.id}' in: {', '.join(conflicts)}",
        failure_class=DETERMINISTIC,
        notes="the run branch was left at its head from before the fan-in",
    )


_MERGED = frozenset({"success", "partial_success"})


def _failed_join(graph: Graph, context: Context) -> Outcome | None:
    """The fan-out this fan-in joins failed its join policy (every branch failed, ``fail_fast``,
    ``k_of_n`` or ``quorum`` not met, nothing left after ``ignore``): the fan-in fails with the
    fan-out's causal reason and class, so its own fail routing (condition edges,
    ``retry_target``) handles the failure (contract.md §9) instead of a surviving branch hiding
    it. ``None`` when the fan-in was not entered straight from a failed fan-out."""
    attempt = current_attempt()
    fan_out = graph.nodes.get(attempt.predecessor_node) if attempt is not None else None
    if fan_out is None or fan_out.handler_type != "parallel" or context.get("outcome") != "fail":
        return None
    reason, klass = context.get("failure_reason"), context.get("failure_class")
    return Outcome(
        StageStatus.FAIL,
        failure_reason=reason if isinstance(reason, str) and reason else "the fan-out failed",
        failure_class=klass if isinstance(klass, str) else "",
        notes=f"fan-out '{fan_out.id}' failed its join policy",
    )


def _all_failed(results: list[dict[str, Any]]) -> Outcome:
    """Every branch failed: the first failed branch's raw reason is the cause (a sibling
    canceled by ``fail_fast`` is not), class aggregated."""
    first = next((r for r in results if r.get("status") == "fail"), results[0])
    reasons = "; ".join(f"{r['id']}: {r.get('failure_reason') or r.get('status')}" for r in results)
    classes = {normalize_failure_class(str(r.get("failure_class") or "")) for r in results}
    klass = next((c for c in (STRUCTURAL, DETERMINISTIC, TRANSIENT_INFRA) if c in classes), "")
    return Outcome(
        StageStatus.FAIL,
        failure_reason=str(first.get("failure_reason") or f"branch {first['id']} failed"),
        failure_class=klass,
        notes=f"all {len(results)} branches failed: {reasons}"[:2000],
    )
