"""The simulation backend (contract.md §6): runs a pipeline without any LLM.

Unscripted, every stage succeeds with ``[Simulated] Response for stage: <node_id>`` (S4.5-06).
A sim script (``--sim-script FILE``) makes chosen stages fail, retry, route, work slowly,
hang or raise typed provider errors, so retries, routing, liveness and cancellation can be
exercised end to end — deterministically, and under virtual time in tests.

Script shape (YAML or JSON)::

    nodes:
      implement:                       # one step per attempt; the last one repeats
        - {error: rate_limit}
        - {delay: 2s, response: "patched it"}
      review: {outcome: fail, failure_reason: "tests fail", failure_class: deterministic}

Loading validates everything up front: a typo in a script must stop the run before it
starts, with the file, node, step number and the allowed keys in the message, instead of
silently simulating something else.

Any combination of the step keys is valid (contract.md §6); :class:`SimStep` says what each
combination does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio
import yaml
from attrs import field, frozen

from ..aio.ticking_sleep import sleep_reporting_progress
from ..context import RESPONSE_PREVIEW_CHARS
from ..core.attempt import current_attempt
from ..core.failures import FAILURE_CLASSES, normalize_failure_class
from ..core.outcome import Outcome, StageStatus, outcome_from_value
from ..dot.conditions import STATUSES, normalize_outcome
from ..dot.inputs import read_config_text
from ..dot.values import AttributeValueError, parse_duration
from ..errors import ConfigError
from ..persist.atomic import write_text_atomic
from ..providers.base import ERROR_KINDS, error_from_kind

if TYPE_CHECKING:
    from ..context import Context
    from ..dot.graph import Node

__all__ = [
    "PROGRESS_SLICE",
    "SIMULATED_PROVIDER",
    "SimScript",
    "SimStep",
    "SimulationBackend",
    "load_sim_script",
    "parse_sim_script",
    "simulated_response",
]

#: While a ``delay`` step "works", it reports progress at least this often (seconds).
PROGRESS_SLICE: Final = 0.25
SIMULATED_PROVIDER: Final = "simulate"

TOP_LEVEL_KEYS: Final = ("nodes",)
OUTCOME_KEYS: Final = (
    "failure_reason",
    "failure_class",
    "preferred_label",
    "suggested_next_ids",
    "context_updates",
    "notes",
)
STEP_KEYS: Final = ("outcome", *OUTCOME_KEYS, "response", "delay", "stall", "error")

# (status code or None, message, retry_after) — worded like the real vendors' errors so
# failure reasons, signatures and logs look the way they will in production.
_ERROR_TEMPLATES: Mapping[str, tuple[int | None, str, float | None]] = {
    "rate_limit": (429, "rate limit exceeded: too many requests, retry after 1s", 1.0),
    "server_error": (503, "service unavailable: the model is overloaded, try again later", None),
    "timeout": (None, "request timed out after 120s waiting for the provider to respond", None),
    "network": (None, "connection reset by peer while reading the response", None),
    "auth": (401, "invalid API key: authentication failed", None),
    "access_denied": (403, "access denied: this key may not use the requested model", None),
    "not_found": (404, "model not found: the requested model does not exist", None),
    "invalid_request": (400, "invalid request: messages: field required", None),
    "context_length": (413, "prompt is too long: context length of 200000 tokens exceeded", None),
    "content_filter": (400, "response blocked by the content filter (safety)", None),
    "quota_exceeded": (429, "insufficient_quota: you exceeded your current quota", None),
    "configuration": (None, "no provider configured for this stage", None),
    "aborted": (None, "request aborted", None),
}


def simulated_response(node_id: str) -> str:
    """The unscripted response text (S4.5-06)."""
    return f"[Simulated] Response for stage: {node_id}"


@frozen
class SimStep:
    """What one attempt of a node does: work (``delay``), hang (``stall``), then answer.

    The answer is, in order of precedence: raise ``error`` (the call failed, so the step's
    outcome keys describe an answer that never came); return an :class:`Outcome` when
    ``outcome`` or any outcome key is set — with ``response`` recorded as the stage's
    ``response.md`` too, as a real model answers and reports a status; else return
    ``response`` (default: the unscripted text). Outcome keys without ``outcome`` mean
    ``fail`` when they include ``failure_reason`` or ``failure_class``, else ``success``.
    ``stall`` is ``math.inf`` for ``forever``.
    """

    #: A normalized outcome value: a status or a custom value (contract.md §10).
    outcome: str | None = None
    failure_reason: str = ""
    failure_class: str = ""
    preferred_label: str = ""
    suggested_next_ids: tuple[str, ...] = ()
    context_updates: dict[str, Any] = field(factory=dict)
    notes: str = ""
    response: str | None = None
    delay: float = 0.0
    stall: float = 0.0
    error: str | None = None

    def to_outcome(self) -> Outcome | None:
        status = self.outcome or self._implied_status()
        if status is None:
            return None
        return outcome_from_value(
            status,
            preferred_label=self.preferred_label,
            suggested_next_ids=self.suggested_next_ids,
            context_updates=self.context_updates,
            notes=self.notes,
            failure_reason=self.failure_reason,
            failure_class=self.failure_class,
        )

    def _implied_status(self) -> str | None:
        if self.failure_reason or self.failure_class:
            return StageStatus.FAIL.value
        answered = (self.preferred_label, self.suggested_next_ids, self.context_updates, self.notes)
        return StageStatus.SUCCESS.value if any(answered) else None


@frozen
class SimScript:
    """Node id → its steps (never empty). ``source`` names the file for messages."""

    nodes: dict[str, tuple[SimStep, ...]] = field(factory=dict)
    source: str = "<sim script>"

    def step(self, node_id: str, attempt_index: int) -> SimStep | None:
        """The step for the ``attempt_index``-th call (0-based); the last repeats."""
        steps = self.nodes.get(node_id)
        if not steps:
            return None
        return steps[min(attempt_index, len(steps) - 1)]


class SimulationBackend:
    """A :class:`~.base.CodergenBackend` that answers from a :class:`SimScript`.

    The per-node attempt counters live in the instance, so one backend serves exactly one
    run: a second run (or a resumed one) gets a fresh backend and starts at step 1 again.
    """

    def __init__(self, script: SimScript | None = None) -> None:
        self.script = script or SimScript()
        self._calls: dict[str, int] = {}

    def calls(self, node_id: str) -> int:
        """How many attempts of ``node_id`` this backend has answered (or is answering)."""
        return self._calls.get(node_id, 0)

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        index = self._calls.get(node.id, 0)
        self._calls[node.id] = index + 1
        step = self.script.step(node.id, index)
        if step is None:
            return simulated_response(node.id)
        return await _perform(step, node.id)


async def _perform(step: SimStep, node_id: str) -> str | Outcome:
    if step.delay > 0:
        await _work(step.delay, _progress_callback())
    if step.stall == math.inf:
        await trio.sleep_forever()
    elif step.stall > 0:
        await trio.sleep(step.stall)
    if step.error is not None:
        raise _simulated_error(step.error)
    outcome = step.to_outcome()
    if outcome is None:
        return simulated_response(node_id) if step.response is None else step.response
    if step.response is not None:
        return _with_response(outcome, step.response, node_id)
    return outcome


def _with_response(outcome: Outcome, response: str, node_id: str) -> Outcome:
    """A scripted outcome that also answered ``response``: recorded as the handler records a
    response (``response.md``, ``last_stage``/``last_response``); the step's own
    ``context_updates`` win."""
    info = current_attempt()
    if info is not None:
        info.stage_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(info.stage_dir / "response.md", response, durable=False)
    updates = {"last_stage": node_id, "last_response": response[:RESPONSE_PREVIEW_CHARS]}
    return outcome.evolve(context_updates={**updates, **outcome.context_updates})


def _progress_callback() -> Callable[[], None]:
    info = current_attempt()
    return info.progress if info is not None else (lambda: None)


async def _work(seconds: float, progress: Callable[[], None]) -> None:
    """Sleep ``seconds``, reporting progress every slice, like a chatty agent: one wake-up at
    the end, the ticks come from the run's one ticker task (``aio/ticking_sleep.py``)."""
    await sleep_reporting_progress(seconds, progress, PROGRESS_SLICE)


def _simulated_error(kind: str) -> Exception:
    status, message, retry_after = _ERROR_TEMPLATES[kind]
    return error_from_kind(
        kind,
        message,
        provider=SIMULATED_PROVIDER,
        status_code=status,
        retry_after=retry_after,
    )


# --- loading --------------------------------------------------------------------------------


def load_sim_script(path: str | Path) -> SimScript:
    """Read and validate a sim script; ``.json`` files as JSON, everything else as YAML."""
    source = str(path)
    try:
        text = read_config_text(path, "the sim script")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read sim script: {exc.strerror or exc}") from None
    data = _decode_json(text, source) if source.endswith(".json") else _decode_yaml(text, source)
    return parse_sim_script(data, source=source)


def _decode_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}:{exc.lineno}:{exc.colno}: error: invalid JSON in sim script: {exc.msg}"
        ) from None


def _decode_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "malformed YAML"
        raise ConfigError(f"{where}: error: invalid YAML in sim script: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: error: invalid YAML in sim script: {exc}") from None


def parse_sim_script(data: object, *, source: str = "<sim script>") -> SimScript:
    """Validate decoded script data (``None`` — an empty file — is an empty script)."""
    if data is None:
        return SimScript(source=source)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: a sim script must be a mapping like "
            f"{{nodes: {{<node_id>: [step, ...]}}}}, got {_type_name(data)}"
        )
    unknown = [str(key) for key in data if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}"
        )
    nodes = data.get("nodes")
    if nodes is None:
        return SimScript(source=source)
    if not isinstance(nodes, Mapping):
        raise ConfigError(
            f"{source}: 'nodes' must be a mapping of node id to steps, got {_type_name(nodes)}"
        )
    parsed = {
        _node_id(key, source): _parse_steps(key, value, source) for key, value in nodes.items()
    }
    return SimScript(nodes=parsed, source=source)


def _node_id(key: object, source: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(f'{source}: node id {key!r} must be a string; quote it in YAML ("{key}")')
    return key


def _parse_steps(node_id: str, value: object, source: str) -> tuple[SimStep, ...]:
    where = f"{source}: node {node_id!r}"
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(
            f"{where}: expected a list of steps (or one step mapping), got {_type_name(value)}"
        )
    if not value:
        raise ConfigError(f"{where}: the step list is empty; give at least one step")
    return tuple(
        _parse_step(raw, f"{where} step {number}") for number, raw in enumerate(value, start=1)
    )


def _parse_step(raw: object, where: str) -> SimStep:
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where}: a step must be a mapping like {{outcome: success}}, got {_type_name(raw)}"
        )
    unknown = [str(key) for key in raw if key not in STEP_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(STEP_KEYS)}"
        )
    return SimStep(
        outcome=_outcome(raw, where),
        failure_reason=_str(raw, "failure_reason", where),
        failure_class=_failure_class(raw, where),
        preferred_label=_str(raw, "preferred_label", where),
        suggested_next_ids=_ids(raw, where),
        context_updates=_updates(raw, where),
        notes=_str(raw, "notes", where),
        response=_str(raw, "response", where) if "response" in raw else None,
        delay=_seconds(raw, "delay", where, allow_forever=False),
        stall=_seconds(raw, "stall", where, allow_forever=True),
        error=_error_kind(raw, where),
    )


def _outcome(raw: Mapping[Any, Any], where: str) -> str | None:
    """A status, an alias or a custom outcome value (contract.md §10), normalized."""
    if "outcome" not in raw:
        return None
    value = raw["outcome"]
    normalized = normalize_outcome(value) if isinstance(value, str) else None
    if normalized is None:
        raise ConfigError(
            f"{where}: 'outcome' {value!r} is not a stage status; use one of {', '.join(STATUSES)} "
            "or a custom value (a lowercase identifier such as needs_review)"
        )
    return normalized


def _str(raw: Mapping[Any, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: '{key}' must be a string, got {_type_name(value)}")
    return value


def _failure_class(raw: Mapping[Any, Any], where: str) -> str:
    text = _str(raw, "failure_class", where)
    if not text:
        return ""
    canonical = normalize_failure_class(text)
    if not canonical:
        raise ConfigError(
            f"{where}: unknown 'failure_class' {text!r}; use one of {', '.join(FAILURE_CLASSES)}"
        )
    return canonical


def _ids(raw: Mapping[Any, Any], where: str) -> tuple[str, ...]:
    value = raw.get("suggested_next_ids", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(
            f"{where}: 'suggested_next_ids' must be a list of node ids like [review], "
            f"got {_type_name(value)}"
        )
    return tuple(value)


def _updates(raw: Mapping[Any, Any], where: str) -> dict[str, Any]:
    value = raw.get("context_updates", {})
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ConfigError(
            f"{where}: 'context_updates' must be a mapping of string keys to values "
            f"like {{tests_passed: true}}, got {_type_name(value)}"
        )
    return dict(value)


def _seconds(raw: Mapping[Any, Any], key: str, where: str, *, allow_forever: bool) -> float:
    value = raw.get(key, 0)
    if allow_forever and value == "forever":
        return math.inf
    hint = "a duration like 500ms, 2s or 1.5m, or a number of seconds"
    if allow_forever:
        hint += ", or 'forever'"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: '{key}' must be {hint}, got {_type_name(value)}")
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except AttributeValueError:
        raise ConfigError(f"{where}: '{key}' {value!r} is not {hint}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where}: '{key}' {value!r} is not {hint}")
    return seconds


def _error_kind(raw: Mapping[Any, Any], where: str) -> str | None:
    if "error" not in raw:
        return None
    value = raw["error"]
    if not isinstance(value, str) or value not in ERROR_KINDS:
        raise ConfigError(
            f"{where}: 'error' {value!r} is not a provider error kind; "
            f"use one of {', '.join(ERROR_KINDS)}"
        )
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, int | float):
        return f"a number ({value})"
    return type(value).__name__
