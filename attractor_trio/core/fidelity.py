"""Context fidelity (spec §5.4): how much of the run a stage's LLM session gets to see.

``full`` reuses a session keyed by a thread key; every other mode starts fresh and gets a
text preamble built here from the goal, the completed stages and the context. The preamble is
deterministic (stages in run order, context keys sorted) so prompts — and therefore recorded
``prompt.md`` files and simulated runs — are reproducible.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from ..dot.conditions import stringify
from ..dot.graph import Edge, Graph, Node

__all__ = [
    "COMPLETED_COUNT_KEY",
    "COMPLETED_SUMMARY_KEY",
    "DEFAULT_FIDELITY",
    "FIDELITY_MODES",
    "build_preamble",
    "preamble_for",
    "resolve_fidelity",
    "resolve_thread_key",
]

#: Context key holding the last completed stages as ``[node_id, status, notes]`` lists, in order.
COMPLETED_SUMMARY_KEY = "internal.completed_summary"
#: Context key holding how many stages completed in all (the summary keeps only the last ones).
COMPLETED_COUNT_KEY = "internal.completed_count"

FIDELITY_MODES = ("full", "truncate", "compact", "summary:low", "summary:medium", "summary:high")
DEFAULT_FIDELITY = "compact"


def _mode(value: str) -> str:
    """A recognised mode, or ``""`` — an invalid value (lint ``fidelity_valid`` warns) is unset."""
    if not value:
        return ""
    mode = value.strip().lower()
    return mode if mode in FIDELITY_MODES else ""


def resolve_fidelity(edge: Edge | None, node: Node, graph: Graph) -> str:
    """S5.4-06: incoming edge → target node → graph ``default_fidelity`` → ``compact``.
    (An unset place, the usual case for all three, is passed over without a call.)"""
    value = edge.fidelity if edge is not None else ""
    if value and (mode := _mode(value)):
        return mode
    value = node.fidelity
    if value and (mode := _mode(value)):
        return mode
    value = graph.default_fidelity
    return (_mode(value) if value else "") or DEFAULT_FIDELITY


def resolve_thread_key(node: Node, edge: Edge | None, graph: Graph, previous_node_id: str) -> str:
    """S5.4-07 (node beats edge here, unlike fidelity — AMBIG-15, as the spec orders it).

    Node ``thread_id`` → edge ``thread_id`` → graph ``thread_id`` → innermost enclosing
    subgraph's class → the previous node's id (the node's own id at the start of a run).
    """
    candidates = (
        node.thread_id,
        edge.thread_id if edge is not None else "",
        graph.get("thread_id"),
        node.subgraph_classes[-1] if node.subgraph_classes else "",
        previous_node_id,
    )
    for candidate in candidates:
        if candidate:  # (most are unset: no strip to find that out)
            stripped = candidate.strip()
            if stripped:
                return stripped
    return node.id


@frozen
class _Detail:
    """How much a preamble mode shows; ``None`` means no limit."""

    stages: int | None
    notes_chars: int
    value_chars: int
    max_keys: int | None
    nonscalar: bool
    counts: bool
    budget: int | None


# Budgets approximate the spec's token sizes (~600/1500/3000 tokens at ~4 chars per token).
_DETAILS: Mapping[str, _Detail] = {
    "compact": _Detail(20, 0, 80, 30, nonscalar=False, counts=False, budget=None),
    "summary:low": _Detail(5, 0, 60, 10, nonscalar=False, counts=True, budget=2400),
    "summary:medium": _Detail(15, 160, 160, 40, nonscalar=False, counts=True, budget=6000),
    "summary:high": _Detail(None, 400, 400, None, nonscalar=True, counts=True, budget=12000),
}
_TRUNCATION_MARKER = "\n[... preamble truncated to {budget} characters]"
# Bookkeeping no prompt needs; the goal is printed in the header already.
_HIDDEN_PREFIXES = ("internal.",)
_HIDDEN_KEYS = frozenset({"graph.goal"})


def build_preamble(
    mode: str,
    *,
    goal: str,
    run_id: str,
    completed: Sequence[tuple[str, str, str]],
    context: Mapping[str, Any],
    total: int | None = None,
) -> str:
    """The carry-over text for a fresh session (S5.4-03..05, S9.2-03); ``""`` for ``full``.

    ``completed`` holds ``(node_id, status, notes)`` in run order — the most recent ones, when
    the engine has dropped older entries; ``total`` is how many stages completed in all (the
    count the preamble states), ``len(completed)`` when not given. ``truncate`` carries only the
    goal and run id; ``compact`` adds recent stages and scalar context values; the ``summary``
    levels add status counts, notes and more context, cut to their budget with a marker.
    """
    normalized = mode.strip().lower()
    if normalized not in FIDELITY_MODES:
        raise ValueError(f"unknown fidelity {mode!r}: expected one of {', '.join(FIDELITY_MODES)}")
    return preamble_for(normalized, goal, run_id, completed, context, total)


def preamble_for(
    normalized: str,
    goal: str,
    run_id: str,
    completed: Sequence[tuple[str, str, str]],
    context: Mapping[str, Any],
    total: int | None,
) -> str:
    """:func:`build_preamble` for a mode already normalized and known (the codergen handler
    has just done both: once per prompt is enough)."""
    if normalized == "full":
        return ""
    lines = [f"Goal: {goal}" if goal else "Goal: (none)", f"Run: {run_id}"]
    detail = _DETAILS.get(normalized)
    if detail is not None:
        count = max(total or 0, len(completed))
        lines += _stage_lines(completed, count, detail) + _context_lines(context, detail)
    text = "\n".join(lines) + "\n"
    return text if detail is None or detail.budget is None else _fit(text, detail.budget)


def _stage_lines(
    completed: Sequence[tuple[str, str, str]], total: int, detail: _Detail
) -> list[str]:
    if not completed:
        return ["", "Completed stages: none yet"]
    lines = ["", f"Completed stages ({total}):"]
    if detail.counts:
        counts = Counter(status for _, status, _ in completed)
        scope = f" (last {len(completed)})" if total > len(completed) else ""
        lines.append(
            f"Outcomes{scope}: " + ", ".join(f"{s}={n}" for s, n in sorted(counts.items()))
        )
    shown = completed if detail.stages is None else completed[-detail.stages :]
    if len(shown) < total:
        lines.append(f"- ({total - len(shown)} earlier stages omitted)")
    if not detail.notes_chars:  # every codergen prompt lists up to 20: see ``_stage_block``
        if shown:
            lines.append(_stage_block(shown))
        return lines
    for node_id, status, notes in shown:
        text = f"- {node_id}: {status}"
        if notes.strip():
            text += f" — {_clip(' '.join(notes.split()), detail.notes_chars)}"
        lines.append(text)
    return lines


def _stage_block(shown: Sequence[tuple[str, str, str]]) -> str:
    """The ``- node_id: status`` lines of ``shown`` (not empty), joined. Remembered from one
    call to the next: a run's next prompt usually shows the same window moved on by the
    stage that just completed, so the text loses its first line and gains one (rather than
    twenty lines formatted and joined again, every codergen prompt). The window is compared
    with the remembered one entry by entry (the same entry objects, mostly: C compares them
    by identity first), so any other window is formatted anew."""
    global _last_block
    last_shown, last_text = _last_block
    if shown == last_shown:
        return last_text
    if len(shown) > 1 and len(shown) == len(last_shown) and shown[:-1] == last_shown[1:]:
        dropped, _, _ = last_shown[0]
        dropped_status = last_shown[0][1]
        node_id, status, _ = shown[-1]
        cut = len(f"- {dropped}: {dropped_status}\n")
        text = f"{last_text[cut:]}\n- {node_id}: {status}"
    else:
        text = "\n".join([f"- {node_id}: {status}" for node_id, status, _notes in shown])
    _last_block = (shown, text)
    return text


_last_block: tuple[Sequence[tuple[str, str, str]], str] = ((), "")


def _context_lines(context: Mapping[str, Any], detail: _Detail) -> list[str]:
    """One line per shown context value, after a header. Every codergen prompt builds these
    (seven or so values in a plain run): a text value, the usual one, is rendered here rather
    than through :func:`_render` and :func:`_clip`, and each line is made once, straight into
    the result."""
    limit = detail.value_chars
    lines = ["", "Context:"]
    # (The codergen handler hands over the engine's ``Context`` as the dict it keeps: its
    # ``__iter__`` and ``__getitem__`` are a Python call each, eight a prompt.)
    values = context
    known = _TEXT_LINES.get(limit)
    if known is None:
        known = _TEXT_LINES[limit] = {}
    for key in _visible_keys(tuple(values)):
        value = values[key]
        if type(value) is str:  # ``_render``'s text case, inline, and remembered
            last = known.get(key)
            if last is not None and last[0] == value:  # (the same object, mostly)
                lines.append(last[1])
                continue
            text = " ".join(value.split())
            if len(text) > limit:
                text = _clip(text, limit)
            line = f"- {key} = {text}"
            if len(known) >= _TEXT_LINES_LIMIT:
                known.clear()
            known[key] = (value, line)
            lines.append(line)
            continue
        rendered = _render(value, detail)
        if rendered is not None:
            lines.append(f"- {key} = {rendered}")
    shown = len(lines) - 2
    if not shown:
        return []
    max_keys = detail.max_keys
    if max_keys is not None and shown > max_keys:
        del lines[2 + max_keys :]
        lines.append(f"- ({shown - max_keys} more keys omitted)")
    return lines


#: value limit → key → (its last text value, that value's line): most values (the outcome,
#: the empty failure fields) are the same from one prompt to the next, and their line was
#: split, joined and formatted again every time. One entry per key, found by the key alone
#: (no tuple built and hashed per value); a value that changed is formatted anew.
_TEXT_LINES: dict[int, dict[str, tuple[str, str]]] = {}
_TEXT_LINES_LIMIT = 1024


def _visible_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """``keys`` a preamble may show, sorted. Remembered per key set: a run's context has the
    same keys from one stage to the next, and every codergen prompt asks."""
    visible = _VISIBLE_KEYS.get(keys)
    if visible is None:
        if len(_VISIBLE_KEYS) >= _VISIBLE_KEYS_LIMIT:
            _VISIBLE_KEYS.clear()
        visible = _VISIBLE_KEYS[keys] = tuple(
            key
            for key in sorted(keys)
            if key not in _HIDDEN_KEYS and not key.startswith(_HIDDEN_PREFIXES)
        )
    return visible


_VISIBLE_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}
_VISIBLE_KEYS_LIMIT = 256


def _render(value: Any, detail: _Detail) -> str | None:
    """One context value on one line, or ``None`` when this mode does not show it."""
    if value is None:
        return None
    if type(value) is str:  # the usual value, which ``stringify`` returns as it is
        text = value
    elif isinstance(value, str | int | float | bool):
        text = stringify(value)
    elif detail.nonscalar:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    else:
        return None
    return _clip(" ".join(text.split()), detail.value_chars)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _fit(text: str, budget: int | None) -> str:
    if budget is None or len(text) <= budget:
        return text
    marker = _TRUNCATION_MARKER.format(budget=budget)
    return text[: budget - len(marker)] + marker
