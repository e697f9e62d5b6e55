"""The codergen handler (spec §4.5): renders a stage's prompt and hands it to a backend.

The handler owns the prompt (``$goal`` expansion, the fidelity preamble of §5.4) and the
stage's text artifacts; the backend owns talking to a model. ``prompt.md`` is written
*before* the backend is called, so a stage that hangs or is cancelled still shows what it was
asked. ``status.json`` is left to the engine, which writes every stage's outcome the same way.

Failures become ``fail`` outcomes with a failure class where one is known (a typed provider
error, contract.md §9); ``trio.Cancelled`` is never caught, so cancellation reaches the engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ..backends.simulate import SimulationBackend
from ..context import RESPONSE_PREVIEW_CHARS, Context, StageSummary
from ..core.attempt import KnownPaths
from ..core.fidelity import (
    COMPLETED_COUNT_KEY,
    COMPLETED_SUMMARY_KEY,
    DEFAULT_FIDELITY,
    FIDELITY_MODES,
    preamble_for,
)
from ..core.outcome import Outcome, StageStatus, StatusFileError
from ..core.vocabulary import FailureClass
from ..dot.graph import Graph, Node
from ..dot.transforms import expand_variables
from ..persist.atomic import write_bytes_atomic
from ..persist.status import StatusSources, clear_stale_status, ingest_status
from ..providers.base import CodergenBackend, ProviderError, failure_class_of
from .base import AttemptInfo, require_attempt

__all__ = [
    "COMPLETED_SUMMARY_KEY",
    "FIDELITY_KEY",
    "RESPONSE_PREVIEW_CHARS",
    "CodergenHandler",
    "render_prompt",
]

#: Context key holding the fidelity mode the engine resolved for this stage (S5.4-06).
FIDELITY_KEY: Final = "internal.fidelity"
_PREAMBLE_SEPARATOR: Final = "\n---\n\n"


class CodergenHandler:
    """Spec S4.5 with a pluggable backend; ``backend=None`` simulates (S4.5-06)."""

    def __init__(self, backend: CodergenBackend | None = None) -> None:
        self.backend: CodergenBackend = backend if backend is not None else SimulationBackend()

    def runs_one_process(self, node: Node) -> bool:
        """Whether the backend runs the attempt as one stage process (a CLI agent): then on a
        cluster the attempt starts when a node starts it (contract.md §10)."""
        runs = getattr(self.backend, "runs_one_process", None)
        return bool(runs(node)) if callable(runs) else False

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        attempt = require_attempt(node, logs_root)
        prompt = render_prompt(node, context, graph, run_id=attempt.run_id)
        sources, stage_dir = _paths_of(attempt)  # once: step 1 and steps 2-5 share the sources
        try:
            clear_stale_status(attempt, sources)
        except StatusFileError as exc:
            return _failed(str(exc), FailureClass.DETERMINISTIC)
        # The engine made the stage dir; a direct caller may not have (then it is made here,
        # instead of a stat per stage to ask).
        _write_artifact(attempt, stage_dir, "prompt.md", prompt)
        try:
            result = await self.backend.run(node, prompt, context)
        except ProviderError as exc:
            return _failed(str(exc), failure_class_of(exc))
        except Exception as exc:
            return _failed(f"{type(exc).__name__}: {exc}", failure_class_of(exc))
        if isinstance(result, Outcome):
            return result  # S4.5-04: the backend's own outcome is final
        decision = await ingest_status(attempt, sources)
        outcome = _succeeded(node, str(result), attempt, stage_dir)
        if decision.outcome is None:
            return outcome
        # A status file (written by an agent's tool, or a CLI agent) decides the outcome.
        return decision.outcome.evolve(
            context_updates={**outcome.context_updates, **decision.outcome.context_updates}
        )


def _paths_of(attempt: AttemptInfo) -> tuple[StatusSources, str]:
    """The attempt's status sources and ``os.fspath(attempt.stage_dir)``: as the engine made
    them once for the node (``KnownPaths``) while the attempt names its stage dir and work
    directory, else anew."""
    known = attempt.known_status_path
    if (
        type(known) is KnownPaths
        and known.stage_dir is attempt.stage_dir
        and known.workdir is attempt.workdir
    ):
        return known.sources, known.stage_dir_text
    return StatusSources.for_attempt(attempt), os.fspath(attempt.stage_dir)


def _write_artifact(attempt: AttemptInfo, stage_dir: str, name: str, text: str) -> None:
    """A stage text artifact (not durable: see ``write_text_atomic``) in ``stage_dir`` (the
    attempt's, as text), making the stage dir when it is missing. In a stage dir this
    attempt created it is written in place (contract.md §2: no earlier attempt's text can be
    there). The path as a string: a ``Path`` join costs more than the write's own Python."""
    path = f"{stage_dir}/{name}"
    fresh = attempt.fresh_stage_dir
    data = text.encode("utf-8")  # ``write_text_atomic``'s encoding, without its call
    try:
        write_bytes_atomic(path, data, durable=False, fresh=fresh)
    except FileNotFoundError:
        os.makedirs(stage_dir, exist_ok=True)
        write_bytes_atomic(path, data, durable=False, fresh=fresh)


def _failed(reason: str, failure_class: str) -> Outcome:
    return Outcome(status=StageStatus.FAIL, failure_reason=reason, failure_class=failure_class)


def _succeeded(node: Node, response: str, attempt: AttemptInfo, stage_dir: str) -> Outcome:
    """S4.5-07/08: record the response, report success with a short preview in the context."""
    _write_artifact(attempt, stage_dir, "response.md", response)
    return Outcome.plain_success(  # a ``str`` and a fresh ``dict``: no converters needed
        f"Stage completed: {node.id}",
        {"last_stage": node.id, "last_response": response[:RESPONSE_PREVIEW_CHARS]},
    )


def render_prompt(node: Node, context: Mapping[str, Any], graph: Graph, *, run_id: str = "") -> str:
    """The prompt a backend receives (S4.5-01/02, S5.4-09).

    ``node.prompt``, else the label (which is the id when unset), with ``$goal`` expanded. A
    stage that starts a fresh session (any fidelity but ``full``) gets a carry-over preamble
    first — but only once some stage has completed: before that there is nothing to carry over
    and the preamble would only repeat the goal.
    """
    prompt = expand_variables(node.prompt or node.label, graph)
    # The engine's context read as the dict it keeps (its ``get`` is a Python call).
    values: Mapping[str, Any] = context._values if type(context) is Context else context
    mode = values.get(FIDELITY_KEY)  # the engine's is normalized already: no call to check
    mode = mode if type(mode) is str and mode in FIDELITY_MODES else _fidelity_mode(mode)
    summary = values.get(COMPLETED_SUMMARY_KEY)  # the engine's entries were checked as added
    completed = summary.stages if type(summary) is StageSummary else _completed_stages(summary)
    if mode == "full" or not completed:
        return prompt
    total = values.get(COMPLETED_COUNT_KEY)
    preamble = preamble_for(  # ``build_preamble``: ``mode`` is normalized and known already
        mode, graph.goal, run_id, completed, values, total if type(total) is int else None
    )
    if not preamble or preamble.isspace():  # (``isspace``: no stripped copy just to ask)
        return prompt
    return f"{preamble.rstrip()}\n{_PREAMBLE_SEPARATOR}{prompt}"


def _fidelity_mode(value: object) -> str:
    """The engine's resolved mode; anything unusable falls back to the default (``compact``)."""
    mode = value.strip().lower() if isinstance(value, str) else ""
    return mode if mode in FIDELITY_MODES else DEFAULT_FIDELITY


def _completed_stages(value: object) -> list[tuple[str, str, str]]:
    """Read ``[[node_id, status, notes], ...]`` defensively: skip what does not fit.

    The list comes back from a checkpoint on resume, so it may have been edited or written by
    an older version; a malformed entry must not fail the stage. One comprehension, because
    every codergen stage reads it (up to 200 entries).
    """
    if type(value) is StageSummary:  # the engine's: its entries are checked as they come
        return value.stages
    if not isinstance(value, list | tuple):
        return []
    return [
        (entry[0], entry[1], entry[2] if len(entry) > 2 and isinstance(entry[2], str) else "")
        for entry in value
        if isinstance(entry, list | tuple)
        and len(entry) >= 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], str)
    ]
