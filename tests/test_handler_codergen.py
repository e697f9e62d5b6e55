"""The codergen handler (spec §4.5) and its prompt preamble (§5.4)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.backends.simulate import SimulationBackend, parse_sim_script
from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.handlers.base import AttemptInfo, Handler, reset_attempt, set_attempt
from attractor_trio.handlers.codergen import CodergenHandler, render_prompt
from attractor_trio.providers.base import (
    AuthenticationError,
    ContextLengthError,
    RateLimitError,
)

GOAL = "ship the parser"


def make_graph(*nodes: Node, goal: str = GOAL) -> Graph:
    return Graph("g", attrs={"goal": goal}, nodes={n.id: n for n in nodes})


class RecordingBackend:
    """Returns ``result`` (or raises it) and records what it was called with."""

    def __init__(self, result: Any = "the answer") -> None:
        self.result = result
        self.calls: list[tuple[Node, str, Context]] = []
        self.prompt_file_at_call: str | None = None

    async def run(self, node: Node, prompt: str, context: Context) -> str | Outcome:
        self.calls.append((node, prompt, context))
        prompt_file = Path(context["test.stage_dir"]) / "prompt.md"
        if prompt_file.exists():
            self.prompt_file_at_call = prompt_file.read_text()
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[no-any-return]


async def execute(
    node: Node,
    tmp_path: Path,
    backend: Any = None,
    context: Context | None = None,
    graph: Graph | None = None,
) -> Outcome:
    context = context if context is not None else Context()
    context.set("test.stage_dir", str(tmp_path / node.id))
    handler = CodergenHandler(backend)
    return await handler.execute(node, context, graph or make_graph(node), tmp_path)


def test_handler_satisfies_the_handler_protocol() -> None:
    assert isinstance(CodergenHandler(), Handler)


# --- S4.5-01/02: the prompt --------------------------------------------------------------------


async def test_prompt_attribute_is_used_and_goal_expanded(tmp_path: Path) -> None:
    node = Node("plan", {"prompt": "Plan how to $goal. Keep $other as is.", "label": "Plan"})
    backend = RecordingBackend()
    await execute(node, tmp_path, backend)
    expected = f"Plan how to {GOAL}. Keep $other as is."
    assert backend.calls[0][1] == expected
    assert (tmp_path / "plan" / "prompt.md").read_text() == expected


async def test_label_is_the_prompt_when_prompt_is_empty(tmp_path: Path) -> None:
    backend = RecordingBackend()
    await execute(Node("plan", {"label": "Work on $goal"}), tmp_path, backend)
    assert backend.calls[0][1] == f"Work on {GOAL}"


async def test_node_id_is_the_prompt_when_there_is_no_label(tmp_path: Path) -> None:
    backend = RecordingBackend()
    await execute(Node("plan"), tmp_path, backend)
    assert backend.calls[0][1] == "plan"


async def test_backend_receives_the_node_and_the_context(tmp_path: Path) -> None:
    node = Node("plan", {"llm_model": "claude-opus-4-6"})
    context = Context({"k": "v"})
    backend = RecordingBackend()
    await execute(node, tmp_path, backend, context)
    called_node, _, called_context = backend.calls[0]
    assert called_node is node
    assert called_context is context


# --- S4.5-03: prompt.md before the call ----------------------------------------------------------


async def test_prompt_file_is_written_before_the_backend_is_called(tmp_path: Path) -> None:
    backend = RecordingBackend()
    await execute(Node("plan", {"prompt": "do it"}), tmp_path, backend)
    assert backend.prompt_file_at_call == "do it"


async def test_stage_dir_comes_from_the_current_attempt(tmp_path: Path) -> None:
    stage_dir = tmp_path / "elsewhere" / "plan"
    info = AttemptInfo(
        run_id="run-1",
        node_id="plan",
        attempt=2,
        max_attempts=3,
        attempt_id="plan-2",
        logs_root=tmp_path,
        stage_dir=stage_dir,
        workdir=tmp_path,
    )
    token = set_attempt(info)
    try:
        await CodergenHandler().execute(Node("plan"), Context(), make_graph(Node("plan")), tmp_path)
    finally:
        reset_attempt(token)
    assert (stage_dir / "prompt.md").exists()
    assert (stage_dir / "response.md").exists()
    assert not (tmp_path / "plan").exists()


# --- S4.5-04: an Outcome passes through ----------------------------------------------------------


async def test_outcome_result_is_returned_unchanged_without_response_file(
    tmp_path: Path,
) -> None:
    outcome = Outcome(StageStatus.PARTIAL_SUCCESS, preferred_label="Fix", notes="half")
    result = await execute(Node("plan"), tmp_path, RecordingBackend(outcome))
    assert result is outcome
    assert (tmp_path / "plan" / "prompt.md").exists()
    assert not (tmp_path / "plan" / "response.md").exists()
    assert not (tmp_path / "plan" / "status.json").exists()  # the engine writes it


# --- S4.5-05: exceptions become fail -------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "failure_class"),
    [
        (RateLimitError("slow down", provider="openai", status_code=429), "transient_infra"),
        (AuthenticationError("bad key", provider="anthropic", status_code=401), "deterministic"),
        (ContextLengthError("too many tokens"), "budget_exhausted"),
    ],
)
async def test_provider_errors_fail_with_their_class(
    tmp_path: Path, exc: Exception, failure_class: str
) -> None:
    result = await execute(Node("plan"), tmp_path, RecordingBackend(exc))
    assert result.status is StageStatus.FAIL
    assert result.failure_reason == str(exc)
    assert result.failure_class == failure_class
    assert not (tmp_path / "plan" / "response.md").exists()


async def test_other_exceptions_fail_naming_the_type(tmp_path: Path) -> None:
    result = await execute(Node("plan"), tmp_path, RecordingBackend(KeyError("model")))
    assert result.status is StageStatus.FAIL
    assert result.failure_reason == "KeyError: 'model'"
    assert result.failure_class == ""


async def test_exception_group_of_provider_errors_keeps_the_class(tmp_path: Path) -> None:
    group = ExceptionGroup("stream", [RateLimitError("a"), RateLimitError("b")])
    result = await execute(Node("plan"), tmp_path, RecordingBackend(group))
    assert result.status is StageStatus.FAIL
    assert result.failure_reason.startswith("ExceptionGroup: stream")
    assert result.failure_class == "transient_infra"


async def test_simulated_typed_error_fails_the_stage(tmp_path: Path) -> None:
    backend = SimulationBackend(parse_sim_script({"nodes": {"plan": {"error": "timeout"}}}))
    result = await execute(Node("plan"), tmp_path, backend)
    assert result.status is StageStatus.FAIL
    assert result.failure_class == "transient_infra"
    assert "timed out" in result.failure_reason


async def test_cancellation_propagates_and_leaves_the_prompt(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    backend = SimulationBackend(parse_sim_script({"nodes": {"plan": {"stall": "forever"}}}))
    results: list[Outcome] = []
    with trio.move_on_after(600) as scope:
        results.append(await execute(Node("plan"), tmp_path, backend))
    assert scope.cancelled_caught
    assert results == []
    assert (tmp_path / "plan" / "prompt.md").exists()
    assert not (tmp_path / "plan" / "response.md").exists()


async def test_base_exceptions_are_not_caught(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        await execute(Node("plan"), tmp_path, RecordingBackend(KeyboardInterrupt()))


# --- S4.5-06..08, S4.5-12: text results ----------------------------------------------------------


async def test_no_backend_simulates(tmp_path: Path) -> None:
    result = await execute(Node("plan"), tmp_path)
    text = "[Simulated] Response for stage: plan"
    assert (tmp_path / "plan" / "response.md").read_text() == text
    assert result == Outcome(
        status=StageStatus.SUCCESS,
        notes="Stage completed: plan",
        context_updates={"last_stage": "plan", "last_response": text},
    )


async def test_text_result_is_written_and_previewed_in_200_chars(tmp_path: Path) -> None:
    long_text = "x" * 150 + "y" * 150
    result = await execute(Node("plan"), tmp_path, RecordingBackend(long_text))
    assert (tmp_path / "plan" / "response.md").read_text() == long_text
    assert result.context_updates["last_response"] == long_text[:200]
    assert result.context_updates["last_stage"] == "plan"
    assert result.notes == "Stage completed: plan"


async def test_non_string_results_are_stringified(tmp_path: Path) -> None:
    await execute(Node("plan"), tmp_path, RecordingBackend(42))
    assert (tmp_path / "plan" / "response.md").read_text() == "42"


async def test_artifacts_live_under_logs_root_node_id(tmp_path: Path) -> None:
    await execute(Node("plan"), tmp_path)
    assert sorted(p.name for p in (tmp_path / "plan").iterdir()) == ["prompt.md", "response.md"]


# --- §5.4: the fidelity preamble -----------------------------------------------------------------

COMPLETED = [["start", "success", ""], ["plan", "success", "Stage completed: plan"]]


@contextmanager
def run_attempt(tmp_path: Path, node_id: str) -> Iterator[None]:
    info = AttemptInfo(
        run_id="run-42",
        node_id=node_id,
        attempt=1,
        max_attempts=1,
        attempt_id=f"{node_id}-1",
        logs_root=tmp_path,
        stage_dir=tmp_path / node_id,
        workdir=tmp_path,
    )
    token = set_attempt(info)
    try:
        yield
    finally:
        reset_attempt(token)


async def test_compact_preamble_precedes_the_prompt(tmp_path: Path) -> None:
    context = Context({"internal.completed_summary": COMPLETED, "tests_passed": True})
    node = Node("implement", {"prompt": "Implement $goal"})
    with run_attempt(tmp_path, "implement"):
        await execute(node, tmp_path, context=context)
    prompt = (tmp_path / "implement" / "prompt.md").read_text()
    assert prompt.startswith(f"Goal: {GOAL}\nRun: run-42\n")
    assert "- plan: success" in prompt
    assert "- tests_passed = true" in prompt
    assert "internal." not in prompt
    assert prompt.endswith(f"\n---\n\nImplement {GOAL}")


def test_default_and_unknown_modes_are_compact() -> None:
    node = Node("n", {"prompt": "p"})
    base = {"internal.completed_summary": COMPLETED, "k": "v"}

    def render(**extra: str) -> str:
        return render_prompt(node, {**base, **extra}, make_graph(node), run_id="r")

    compact = render(**{"internal.fidelity": "compact"})
    assert "- k = v" in compact
    assert render() == compact
    assert render(**{"internal.fidelity": "everything"}) == compact
    assert render(**{"internal.fidelity": " Compact "}) == compact
    assert render(**{"internal.fidelity": "truncate"}) != compact


def test_full_fidelity_gets_no_preamble() -> None:
    node = Node("n", {"prompt": "p"})
    context = {"internal.completed_summary": COMPLETED, "internal.fidelity": "full"}
    assert render_prompt(node, context, make_graph(node), run_id="r") == "p"


def test_truncate_carries_only_goal_and_run() -> None:
    node = Node("n", {"prompt": "p"})
    context = {"internal.completed_summary": COMPLETED, "internal.fidelity": "truncate", "k": "v"}
    assert render_prompt(node, context, make_graph(node), run_id="r") == (
        f"Goal: {GOAL}\nRun: r\n\n---\n\np"
    )


def test_summary_modes_are_passed_through() -> None:
    node = Node("n", {"prompt": "p"})
    context = {"internal.completed_summary": COMPLETED, "internal.fidelity": "summary:high"}
    prompt = render_prompt(node, context, make_graph(node), run_id="r")
    assert "Outcomes: success=2" in prompt
    assert "plan: success — Stage completed: plan" in prompt


def test_no_preamble_before_any_stage_completed() -> None:
    node = Node("n", {"prompt": "p"})
    assert render_prompt(node, {"k": "v"}, make_graph(node), run_id="r") == "p"
    assert render_prompt(node, {"internal.completed_summary": []}, make_graph(node)) == "p"


@pytest.mark.parametrize(
    "summary",
    ["start", 7, [["only-id"]], [[1, "success"]], [None], {"start": "success"}],
)
def test_malformed_completed_summary_is_ignored(summary: object) -> None:
    node = Node("n", {"prompt": "p"})
    context = {"internal.completed_summary": summary}
    assert render_prompt(node, context, make_graph(node), run_id="r") == "p"


def test_partially_malformed_summary_keeps_the_good_entries() -> None:
    node = Node("n", {"prompt": "p"})
    summary = [["plan", "success", 3], "junk", ["review", "fail"]]
    context = {"internal.completed_summary": summary, "internal.fidelity": "summary:high"}
    prompt = render_prompt(node, context, make_graph(node), run_id="r")
    assert "- plan: success\n" in prompt
    assert "- review: fail\n" in prompt
    assert "junk" not in prompt
