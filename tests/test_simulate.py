"""The simulation backend (contract.md §6) and the typed provider errors (contract.md §9)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.backends.simulate import (
    PROGRESS_SLICE,
    STEP_KEYS,
    SimScript,
    SimStep,
    SimulationBackend,
    load_sim_script,
    parse_sim_script,
)
from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.graph import Node
from attractor_trio.errors import ConfigError
from attractor_trio.handlers.base import AttemptInfo, reset_attempt, set_attempt
from attractor_trio.providers.base import (
    ERROR_KINDS,
    FAILURE_CLASS_BY_KIND,
    AbortError,
    AccessDeniedError,
    AuthenticationError,
    CodergenBackend,
    ConfigurationError,
    ContentFilterError,
    ContextLengthError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    error_for_http_status,
    error_from_kind,
    failure_class_of,
    kind_for_http_status,
)

NODE = Node("implement")


def backend_for(nodes: dict[str, Any]) -> SimulationBackend:
    return SimulationBackend(parse_sim_script({"nodes": nodes}))


async def run(backend: SimulationBackend, node: Node = NODE) -> str | Outcome:
    return await backend.run(node, "the prompt", Context())


@contextmanager
def attempt_with_progress(calls: list[float], tmp_path: Path) -> Iterator[None]:
    """Install an attempt whose progress callback records the (virtual) time of each call."""
    info = AttemptInfo(
        run_id="r",
        node_id=NODE.id,
        attempt=1,
        max_attempts=1,
        attempt_id="implement-1",
        logs_root=tmp_path,
        stage_dir=tmp_path / NODE.id,
        workdir=tmp_path,
        progress=lambda: calls.append(trio.current_time()),
    )
    token = set_attempt(info)
    try:
        yield
    finally:
        reset_attempt(token)


# --- the error taxonomy ------------------------------------------------------------------------

CLASSES = {
    "auth": AuthenticationError,
    "access_denied": AccessDeniedError,
    "not_found": NotFoundError,
    "invalid_request": InvalidRequestError,
    "context_length": ContextLengthError,
    "content_filter": ContentFilterError,
    "rate_limit": RateLimitError,
    "server_error": ServerError,
    "timeout": RequestTimeoutError,
    "network": NetworkError,
    "aborted": AbortError,
    "quota_exceeded": QuotaExceededError,
    "configuration": ConfigurationError,
}
EXPECTED_CLASS = {
    "rate_limit": "transient_infra",
    "server_error": "transient_infra",
    "timeout": "transient_infra",
    "network": "transient_infra",
    "auth": "deterministic",
    "access_denied": "deterministic",
    "invalid_request": "deterministic",
    "not_found": "deterministic",
    "content_filter": "deterministic",
    "quota_exceeded": "deterministic",
    "configuration": "deterministic",
    "context_length": "budget_exhausted",
    "aborted": "canceled",
}


def test_every_kind_has_a_class_and_a_failure_class() -> None:
    assert set(ERROR_KINDS) == set(CLASSES) == set(EXPECTED_CLASS)
    assert dict(FAILURE_CLASS_BY_KIND) == EXPECTED_CLASS


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_error_from_kind_builds_the_typed_error(kind: str) -> None:
    exc = error_from_kind(kind, "boom", provider="anthropic", status_code=500)
    assert type(exc) is CLASSES[kind]
    assert isinstance(exc, ProviderError)
    assert exc.kind == kind
    assert failure_class_of(exc) == EXPECTED_CLASS[kind] == exc.failure_class
    assert exc.retryable is (EXPECTED_CLASS[kind] == "transient_infra")


def test_error_from_kind_rejects_unknown_kinds_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown provider error kind 'teapot'.*rate_limit"):
        error_from_kind("teapot", "x")


def test_provider_error_text_names_provider_and_status() -> None:
    exc = RateLimitError("slow down", provider="openai", status_code=429, retry_after=2.5)
    assert str(exc) == "openai: HTTP 429: slow down"
    assert exc.message == "slow down"
    assert exc.retry_after == 2.5
    assert str(NetworkError("connection refused")) == "connection refused"


def test_retryable_can_be_overridden() -> None:
    assert RequestTimeoutError("t", retryable=False).retryable is False
    assert AuthenticationError("a", retryable=True).retryable is True


def test_bare_provider_error_is_an_unknown_retryable_error() -> None:
    exc = ProviderError("weird")
    assert exc.kind == "server_error"
    assert exc.retryable is True
    assert failure_class_of(exc) == "transient_infra"


def test_failure_class_of_other_exceptions_is_unknown() -> None:
    assert failure_class_of(ValueError("x")) == ""


def test_failure_class_of_groups_needs_agreement() -> None:
    same = ExceptionGroup("g", [RateLimitError("a"), NetworkError("b")])
    mixed = ExceptionGroup("g", [RateLimitError("a"), AuthenticationError("b")])
    foreign = ExceptionGroup("g", [RateLimitError("a"), ValueError("b")])
    assert failure_class_of(same) == "transient_infra"
    assert failure_class_of(mixed) == ""
    assert failure_class_of(foreign) == ""


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "bad field", "invalid_request"),
        (422, "unprocessable", "invalid_request"),
        (401, "invalid x-api-key", "auth"),
        (403, "forbidden", "access_denied"),
        (404, "no such model", "not_found"),
        (408, "", "timeout"),
        (504, "gateway timeout", "timeout"),
        (413, "payload too large", "context_length"),
        (400, "prompt is too long: 210000 tokens > 200000 maximum", "context_length"),
        (400, "This model's maximum context length is 128000 tokens", "context_length"),
        (429, "rate limited", "rate_limit"),
        (429, "You exceeded your current quota (insufficient_quota)", "quota_exceeded"),
        (400, "blocked by content filter", "content_filter"),
        (402, "payment required", "quota_exceeded"),
        (500, "internal", "server_error"),
        (502, "bad gateway", "server_error"),
        (503, "overloaded", "server_error"),
        (529, "overloaded", "server_error"),
        (418, "teapot", "server_error"),
    ],
)
def test_http_status_to_kind(status: int, message: str, kind: str) -> None:
    assert kind_for_http_status(status, message) == kind


def test_error_for_http_status_records_the_status() -> None:
    exc = error_for_http_status(429, "slow down", provider="gemini", retry_after=3.0)
    assert isinstance(exc, RateLimitError)
    assert (exc.status_code, exc.provider, exc.retry_after) == (429, "gemini", 3.0)


# --- unscripted and scripted answers -----------------------------------------------------------


def test_backend_satisfies_the_protocol() -> None:
    assert isinstance(SimulationBackend(), CodergenBackend)


async def test_unscripted_backend_answers_with_the_simulated_text() -> None:
    assert await run(SimulationBackend()) == "[Simulated] Response for stage: implement"


async def test_nodes_missing_from_the_script_get_the_simulated_text() -> None:
    backend = backend_for({"other": {"outcome": "fail"}})
    assert await run(backend) == "[Simulated] Response for stage: implement"


async def test_response_step_returns_the_string() -> None:
    assert await run(backend_for({"implement": {"response": "patched"}})) == "patched"


async def test_outcome_step_returns_an_outcome_with_every_field() -> None:
    step = {
        "outcome": "fail",
        "failure_reason": "tests fail",
        "failure_class": "deterministic",
        "preferred_label": "Fix",
        "suggested_next_ids": ["fix"],
        "context_updates": {"tests_passed": False},
        "notes": "3 failures",
    }
    result = await run(backend_for({"implement": step}))
    assert result == Outcome(
        status=StageStatus.FAIL,
        failure_reason="tests fail",
        failure_class="deterministic",
        preferred_label="Fix",
        suggested_next_ids=("fix",),
        context_updates={"tests_passed": False},
        notes="3 failures",
    )


async def test_outcome_aliases_are_accepted() -> None:
    result = await run(backend_for({"implement": {"outcome": "ok"}}))
    assert isinstance(result, Outcome)
    assert result.status is StageStatus.SUCCESS


async def test_failure_class_aliases_are_normalized() -> None:
    result = await run(backend_for({"implement": {"outcome": "fail", "failure_class": "infra"}}))
    assert isinstance(result, Outcome)
    assert result.failure_class == "transient_infra"


async def test_each_attempt_consumes_the_next_step_and_the_last_repeats() -> None:
    backend = backend_for(
        {"implement": [{"outcome": "fail"}, {"outcome": "retry"}, {"response": "done"}]}
    )
    results = [await run(backend) for _ in range(5)]
    statuses = [r.status if isinstance(r, Outcome) else r for r in results]
    assert statuses == [StageStatus.FAIL, StageStatus.RETRY, "done", "done", "done"]
    assert backend.calls("implement") == 5


async def test_counters_are_per_node_and_per_backend_instance() -> None:
    script = parse_sim_script(
        {"nodes": {"a": [{"response": "a1"}, {"response": "a2"}], "b": [{"response": "b1"}]}}
    )
    first = SimulationBackend(script)
    assert await run(first, Node("a")) == "a1"
    assert await run(first, Node("b")) == "b1"
    assert await run(first, Node("a")) == "a2"
    second = SimulationBackend(script)
    assert await run(second, Node("a")) == "a1"


# --- time: delay, stall ------------------------------------------------------------------------


async def test_delay_works_that_long_reporting_progress_each_slice(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    calls: list[float] = []
    backend = backend_for({"implement": {"delay": "2s", "response": "slow"}})
    start = trio.current_time()
    with attempt_with_progress(calls, tmp_path):
        assert await run(backend) == "slow"
    assert trio.current_time() - start == pytest.approx(2.0)
    assert len(calls) >= 2.0 / PROGRESS_SLICE
    gaps = [b - a for a, b in zip([start, *calls], [*calls, trio.current_time()], strict=True)]
    assert max(gaps) <= PROGRESS_SLICE + 1e-9


class _TaskSteps(trio.abc.Instrument):
    """Counts how often one task is resumed while installed."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += task is self.task


async def test_a_delay_wakes_the_working_task_once_not_every_progress_slice(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Each slice used to be a ``trio.sleep`` of the stage's task (a cancel scope expiring
    through its whole stack): in a 1,000-branch fan-out, 4 wake-ups per branch and second.
    The ticks now come from one task per run; the working task wakes when the delay ends."""
    calls: list[float] = []
    steps = _TaskSteps(trio.lowlevel.current_task())
    backend = backend_for({"implement": {"delay": "3s"}})
    with attempt_with_progress(calls, tmp_path):
        trio.lowlevel.add_instrument(steps)
        await run(backend)
        trio.lowlevel.remove_instrument(steps)
    assert len(calls) >= 3.0 / PROGRESS_SLICE
    assert steps.steps <= 2


async def test_delay_without_an_engine_attempt_still_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    assert await run(backend_for({"implement": {"delay": 1.5}})) == (
        "[Simulated] Response for stage: implement"
    )
    assert trio.current_time() - start == pytest.approx(1.5)


async def test_finite_stall_is_silent(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    calls: list[float] = []
    start = trio.current_time()
    with attempt_with_progress(calls, tmp_path):
        await run(backend_for({"implement": {"stall": "90s", "outcome": "success"}}))
    assert trio.current_time() - start == pytest.approx(90.0)
    assert calls == []


async def test_stall_forever_never_returns_until_cancelled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    calls: list[float] = []
    backend = backend_for({"implement": {"stall": "forever"}})
    with attempt_with_progress(calls, tmp_path), trio.move_on_after(86_400) as scope:
        await run(backend)
    assert scope.cancelled_caught
    assert calls == []


async def test_delay_then_stall_reports_progress_only_while_working(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    calls: list[float] = []
    start = trio.current_time()
    backend = backend_for({"implement": {"delay": "1s", "stall": "forever"}})
    with attempt_with_progress(calls, tmp_path), trio.move_on_after(100):
        await run(backend)
    assert calls
    assert max(calls) - start == pytest.approx(1.0)


# --- errors ------------------------------------------------------------------------------------

CONTRACT_ERRORS = [
    ("rate_limit", RateLimitError, "transient_infra"),
    ("server_error", ServerError, "transient_infra"),
    ("timeout", RequestTimeoutError, "transient_infra"),
    ("network", NetworkError, "transient_infra"),
    ("auth", AuthenticationError, "deterministic"),
    ("invalid_request", InvalidRequestError, "deterministic"),
    ("context_length", ContextLengthError, "budget_exhausted"),
]


@pytest.mark.parametrize(("kind", "cls", "failure_class"), CONTRACT_ERRORS)
async def test_error_step_raises_the_typed_error(
    kind: str, cls: type[ProviderError], failure_class: str
) -> None:
    with pytest.raises(cls) as info:
        await run(backend_for({"implement": {"error": kind}}))
    exc = info.value
    assert exc.kind == kind
    assert exc.provider == "simulate"
    assert failure_class_of(exc) == failure_class
    assert len(exc.message) > 15  # a realistic sentence, not just the kind
    assert str(exc).startswith("simulate: ")


async def test_rate_limit_error_carries_retry_after() -> None:
    with pytest.raises(RateLimitError) as info:
        await run(backend_for({"implement": {"error": "rate_limit"}}))
    assert info.value.status_code == 429
    assert info.value.retry_after == 1.0


async def test_error_then_success_sequence() -> None:
    backend = backend_for({"implement": [{"error": "network"}, {"response": "recovered"}]})
    with pytest.raises(NetworkError):
        await run(backend)
    assert await run(backend) == "recovered"


async def test_error_after_delay(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    with pytest.raises(ServerError):
        await run(backend_for({"implement": {"delay": "3s", "error": "server_error"}}))
    assert trio.current_time() - start == pytest.approx(3.0)


# --- loading -----------------------------------------------------------------------------------

YAML_SCRIPT = """\
nodes:
  implement:
    - {error: rate_limit}
    - delay: 500ms
      response: patched
  review:
    outcome: fail
    failure_reason: tests fail
"""


def test_load_yaml(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(YAML_SCRIPT)
    script = load_sim_script(path)
    assert script.source == str(path)
    assert script.nodes == {
        "implement": (SimStep(error="rate_limit"), SimStep(delay=0.5, response="patched")),
        "review": (SimStep(outcome=StageStatus.FAIL, failure_reason="tests fail"),),
    }


def test_load_json(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"nodes": {"a": [{"stall": "forever"}, {"delay": 2}]}}))
    script = load_sim_script(str(path))
    assert script.nodes == {"a": (SimStep(stall=math.inf), SimStep(delay=2.0))}


def test_empty_files_and_missing_nodes_are_empty_scripts(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_sim_script(path).nodes == {}
    assert parse_sim_script({}).nodes == {}


def test_script_step_lookup_repeats_the_last_step() -> None:
    script = SimScript({"a": (SimStep(response="1"), SimStep(response="2"))})
    assert [script.step("a", i) for i in range(3)] == [
        SimStep(response="1"),
        SimStep(response="2"),
        SimStep(response="2"),
    ]
    assert script.step("b", 0) is None


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"{path}: cannot read sim script"):
        load_sim_script(path)


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+:\d+: error: invalid YAML"):
        load_sim_script(path)


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"nodes": {"a": }}')
    with pytest.raises(ConfigError, match=rf"^{path}:1:17: error: invalid JSON"):
        load_sim_script(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=rf"^{path}:1:1: error: binary input: invalid UTF-8"):
        load_sim_script(path)


def reject(data: object, *fragments: str) -> None:
    """``data`` must be refused with a message containing every fragment."""
    with pytest.raises(ConfigError) as info:
        parse_sim_script(data, source="sim.yaml")
    message = str(info.value)
    assert message.startswith("sim.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


def test_top_level_must_be_a_mapping() -> None:
    reject(["a"], "must be a mapping", "a list")


def test_unknown_top_level_key() -> None:
    reject({"nodes": {}, "node": {}}, "unknown top-level key(s) 'node'", "allowed keys: nodes")


def test_nodes_must_be_a_mapping() -> None:
    reject({"nodes": ["a"]}, "'nodes' must be a mapping", "a list")


def test_node_ids_must_be_strings() -> None:
    reject({"nodes": {1: {"outcome": "success"}}}, "node id 1 must be a string")


def test_steps_must_be_a_list_or_mapping() -> None:
    reject({"nodes": {"a": "fail"}}, "node 'a'", "expected a list of steps", "a string")


def test_step_list_must_not_be_empty() -> None:
    reject({"nodes": {"a": []}}, "node 'a'", "empty")


def test_step_must_be_a_mapping() -> None:
    reject({"nodes": {"a": [{"outcome": "fail"}, "success"]}}, "node 'a' step 2", "a string")


def test_unknown_step_key_names_node_step_and_allowed_keys() -> None:
    reject(
        {"nodes": {"review": [{"outcome": "fail"}, {"outcom": "fail"}]}},
        "node 'review' step 2",
        "unknown key(s) 'outcom'",
        "allowed keys: " + ", ".join(STEP_KEYS),
    )


@pytest.mark.parametrize(
    ("step", "fragments"),
    [
        (
            {"outcome": "great job"},
            ("'outcome' 'great job' is not a stage status", "partial_success"),
        ),
        ({"outcome": 1}, ("'outcome' 1 is not a stage status",)),
        ({"outcome": "fail", "failure_reason": 3}, ("'failure_reason' must be a string",)),
        ({"outcome": "fail", "failure_class": "flaky"}, ("unknown 'failure_class' 'flaky'",)),
        ({"outcome": "fail", "failure_class": 2}, ("'failure_class' must be a string",)),
        ({"outcome": "success", "preferred_label": ["x"]}, ("'preferred_label' must be",)),
        ({"outcome": "success", "notes": None}, ("'notes' must be a string, got null",)),
        ({"outcome": "success", "suggested_next_ids": "fix"}, ("'suggested_next_ids' must be",)),
        ({"outcome": "success", "suggested_next_ids": [1]}, ("'suggested_next_ids' must be",)),
        ({"outcome": "success", "context_updates": ["x"]}, ("'context_updates' must be",)),
        ({"outcome": "success", "context_updates": {1: "x"}}, ("'context_updates' must be",)),
        ({"response": 42}, ("'response' must be a string",)),
        ({"delay": "soon"}, ("'delay' 'soon' is not a duration",)),
        ({"delay": -1}, ("'delay' -1 is not a duration",)),
        ({"delay": True}, ("'delay' must be a duration", "a boolean")),
        ({"delay": "forever"}, ("'delay' 'forever' is not a duration",)),
        ({"stall": [1]}, ("'stall' must be a duration", "or 'forever'")),
        ({"stall": "always"}, ("'stall' 'always' is not a duration", "or 'forever'")),
        ({"error": "teapot"}, ("'error' 'teapot' is not a provider error kind", "rate_limit")),
        ({"error": 429}, ("'error' 429 is not a provider error kind",)),
    ],
)
def test_wrong_types_and_values(step: dict[str, Any], fragments: tuple[str, ...]) -> None:
    reject({"nodes": {"a": [step]}}, "node 'a' step 1", *fragments)


@pytest.mark.parametrize(
    ("step", "status"),
    [
        ({"error": "network", "outcome": "fail"}, "network"),
        ({"error": "network", "response": "x"}, "network"),
        ({"error": "network", "failure_reason": "x"}, "network"),
        ({"failure_reason": "x"}, StageStatus.FAIL),
        ({"failure_class": "deterministic"}, StageStatus.FAIL),
        ({"preferred_label": "Fix"}, StageStatus.SUCCESS),
        ({"notes": "n", "response": "x"}, StageStatus.SUCCESS),
        ({"outcome": "success", "response": "x"}, StageStatus.SUCCESS),
        ({"response": "x"}, "x"),
    ],
)
async def test_any_combination_of_step_keys_is_valid(
    step: dict[str, Any], status: StageStatus | str
) -> None:
    """contract.md §6: no combination is refused; ``error`` wins, outcome keys imply a status."""
    backend = backend_for({"implement": step})
    if "error" in step:
        with pytest.raises(ProviderError) as raised:
            await run(backend)
        assert raised.value.kind == status
        return
    result = await run(backend)
    assert (result.status if isinstance(result, Outcome) else result) == status


@pytest.mark.parametrize(
    ("raw", "seconds"), [("250ms", 0.25), ("1.5m", 90.0), (3, 3.0), (0.5, 0.5), ("0", 0.0)]
)
def test_durations(raw: object, seconds: float) -> None:
    script = parse_sim_script({"nodes": {"a": {"delay": raw, "stall": raw}}})
    assert script.nodes["a"][0].delay == seconds
    assert script.nodes["a"][0].stall == seconds
