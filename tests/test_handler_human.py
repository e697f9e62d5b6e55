"""The ``wait.human`` handler (spec §4.6, AMBIG-7, contract.md §9 "Human gates")."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio.context import Context
from attractor_trio.core.edges import select_edge
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.graph import Graph
from attractor_trio.dot.parser import parse_dot
from attractor_trio.handlers.base import Handler, reset_attempt, set_attempt
from attractor_trio.handlers.human import WaitHumanHandler, choices_for
from attractor_trio.interviewers import (
    Answer,
    AnswerValue,
    AutoApproveInterviewer,
    CallbackInterviewer,
    Choice,
    ConsoleInterviewer,
    Interviewer,
    NonInteractiveInterviewer,
    Option,
    Question,
    QuestionType,
    QueueInterviewer,
    RecordingInterviewer,
)

from .helpers import attempt_info

REVIEW = """
digraph Review {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  review_gate [shape=hexagon, label="Review the change" %s]
  start -> review_gate
  review_gate -> ship_it [label="[A] Approve"]
  review_gate -> fixes [label="[F] Fix"]
  ship_it -> exit
  fixes -> review_gate
}
"""


def review_graph(gate_attrs: str = "") -> Graph:
    return parse_dot(REVIEW % gate_attrs)


Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def events(tmp_path: Path) -> Iterator[Events]:
    """Installs a fake attempt whose ``emit`` records every event."""
    recorded: Events = []

    def emit(event: str, **fields: Any) -> None:
        recorded.append((event, fields))

    info = attempt_info(tmp_path, "review_gate", run_id="r1", emit=emit)
    token = set_attempt(info)
    yield recorded
    reset_attempt(token)


async def run_gate(
    interviewer: Interviewer, graph: Graph | None = None, node_id: str = "review_gate"
) -> Outcome:
    graph = graph or review_graph()
    handler = WaitHumanHandler(interviewer)
    return await handler.execute(graph.node(node_id), Context(), graph, Path("/nonexistent"))


def fix_answer() -> Answer:
    return Answer(value="F", selected_option=Option("F", "[F] Fix"))


# --- choices and question (S4.6-01, 03, 10) --------------------------------------------------
def test_handler_satisfies_the_handler_protocol() -> None:
    assert isinstance(WaitHumanHandler(AutoApproveInterviewer()), Handler)


def test_choices_come_from_outgoing_edges_label_or_target() -> None:
    graph = parse_dot(
        'digraph G { g [shape=hexagon]; g -> yes_path [label="Yes, deploy"]; g -> later }'
    )
    assert choices_for(graph.outgoing("g")) == [
        Choice("Y", "Yes, deploy", "yes_path"),
        Choice("L", "later", "later"),
    ]


async def test_question_presents_every_edge_as_an_option(events: Events) -> None:
    recorder = RecordingInterviewer(QueueInterviewer([fix_answer()]))
    await run_gate(recorder, review_graph(', human.timeout="90s"'))
    [(question, _)] = recorder.recordings
    assert question.text == "Review the change"
    assert question.type is QuestionType.MULTIPLE_CHOICE
    assert question.options == (Option("A", "[A] Approve"), Option("F", "[F] Fix"))
    assert question.stage == "review_gate"
    assert question.targets == ("ship_it", "fixes")
    assert question.timeout_seconds == 90.0
    assert question.default is None


async def test_question_text_defaults_to_the_node_id(events: Events) -> None:
    graph = parse_dot("digraph G { gate [shape=hexagon]; gate -> a }")
    recorder = RecordingInterviewer(AutoApproveInterviewer())
    await run_gate(recorder, graph, "gate")
    assert recorder.recordings[0][0].text == "gate"


# --- routing on the selection (S4.6-08, AMBIG-7, P-12) ---------------------------------------
async def test_selection_routes_with_label_and_target_and_sets_context(events: Events) -> None:
    graph = review_graph()
    outcome = await run_gate(QueueInterviewer([fix_answer()]), graph)
    assert outcome.status is StageStatus.SUCCESS
    assert outcome.suggested_next_ids == ("fixes",)
    assert outcome.preferred_label == "[F] Fix"
    assert outcome.context_updates == {
        "human.gate.selected": "F",
        "human.gate.label": "[F] Fix",
        "human.gate.target": "fixes",
    }
    # P-12: the engine's edge selection follows the human's choice.
    chosen = select_edge(graph, "review_gate", outcome, {})
    assert chosen is not None and chosen.edge.to_node == "fixes"
    assert chosen.method == "preferred_label"
    without_label = outcome.evolve(preferred_label="")
    chosen = select_edge(graph, "review_gate", without_label, {})
    assert chosen is not None and chosen.edge.to_node == "fixes"


async def test_auto_approve_takes_the_first_edge(events: Events) -> None:
    outcome = await run_gate(AutoApproveInterviewer())
    assert outcome.suggested_next_ids == ("ship_it",)
    assert outcome.context_updates["human.gate.selected"] == "A"


@pytest.mark.parametrize("typed", ["f", "fix", "[F] Fix", "fixes"])
async def test_typed_answers_match_key_label_or_target(typed: str, events: Events) -> None:
    outcome = await run_gate(CallbackInterviewer(lambda q: Answer(value=typed, text=typed)))
    assert outcome.suggested_next_ids == ("fixes",)


async def test_unmatched_answer_falls_back_to_the_first_choice_and_says_so(
    events: Events,
) -> None:
    outcome = await run_gate(QueueInterviewer([Answer(value="zzz", text="zzz")]))
    assert outcome.status is StageStatus.SUCCESS
    assert outcome.suggested_next_ids == ("ship_it",)
    assert "'zzz' matched no choice" in outcome.notes and "first choice" in outcome.notes


async def test_console_end_to_end(events: Events) -> None:
    out = io.StringIO()
    outcome = await run_gate(ConsoleInterviewer(stdin=io.StringIO("F\n"), stdout=out))
    assert out.getvalue() == ("[?] Review the change\n  [A] [A] Approve\n  [F] [F] Fix\nSelect: ")
    assert outcome.suggested_next_ids == ("fixes",)


# --- skipped and structural failures (S4.6-02, 06) -------------------------------------------
async def test_skipped_fails(events: Events) -> None:
    outcome = await run_gate(QueueInterviewer([]))
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason == "human skipped interaction"
    assert outcome.suggested_next_ids == ()


async def test_non_tty_gate_fails_with_a_reason_that_says_how_to_fix_it(
    events: Events,
) -> None:
    outcome = await run_gate(NonInteractiveInterviewer())
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason.startswith("human skipped interaction: human gate 'review_gate'")
    assert "not a TTY" in outcome.failure_reason and "--auto-approve" in outcome.failure_reason
    assert outcome.failure_class == "deterministic"


async def test_no_outgoing_edges_fails_without_asking(events: Events) -> None:
    graph = parse_dot("digraph G { gate [shape=hexagon] }")
    recorder = RecordingInterviewer(AutoApproveInterviewer())
    outcome = await run_gate(recorder, graph, "gate")
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason == "No outgoing edges for human gate"
    assert recorder.recordings == [] and events == []


async def test_malformed_human_timeout_fails_naming_the_attribute(events: Events) -> None:
    outcome = await run_gate(AutoApproveInterviewer(), review_graph(', human.timeout="soon"'))
    assert outcome.status is StageStatus.FAIL
    assert "human.timeout" in outcome.failure_reason and "review_gate" in outcome.failure_reason


# --- timeouts (S4.6-05, S6.5-02, contract.md §9) ------------------------------------------------
TIMED_OUT = Answer(value=AnswerValue.TIMEOUT)


@pytest.mark.parametrize("default", ["fixes", "F", "f"])
async def test_timeout_uses_default_choice_by_target_or_key(default: str, events: Events) -> None:
    graph = review_graph(f', human.default_choice="{default}"')
    outcome = await run_gate(QueueInterviewer([TIMED_OUT]), graph)
    assert outcome.status is StageStatus.SUCCESS
    assert outcome.suggested_next_ids == ("fixes",)
    assert outcome.preferred_label == "[F] Fix"
    assert outcome.notes == "human gate timeout, used default choice"
    assert outcome.context_updates["human.gate.target"] == "fixes"


async def test_default_choice_target_wins_over_a_key_of_the_same_spelling(
    events: Events,
) -> None:
    graph = parse_dot(
        'digraph G { g [shape=hexagon, human.default_choice="B"]; '
        'g -> A [label="B) first"]; g -> B [label="second"] }'
    )
    outcome = await run_gate(QueueInterviewer([TIMED_OUT]), graph, "g")
    assert outcome.suggested_next_ids == ("B",)


async def test_timeout_without_default_retries(events: Events) -> None:
    outcome = await run_gate(QueueInterviewer([TIMED_OUT]))
    assert outcome.status is StageStatus.RETRY
    assert outcome.failure_reason == "human gate timeout, no default"


async def test_timeout_with_a_default_naming_no_edge_retries_and_says_why(
    events: Events,
) -> None:
    graph = review_graph(', human.default_choice="nowhere"')
    outcome = await run_gate(QueueInterviewer([TIMED_OUT]), graph)
    assert outcome.status is StageStatus.RETRY
    assert "human.default_choice='nowhere'" in outcome.failure_reason
    assert "ship_it, fixes" in outcome.failure_reason


class IgnoresTimeouts(Interviewer):
    """A front end that never answers and ignores ``timeout_seconds``."""

    async def ask(self, question: Question) -> Answer:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_human_timeout_is_enforced_on_a_misbehaving_interviewer(
    autojump_clock: trio.testing.MockClock, events: Events
) -> None:
    graph = review_graph(', human.timeout="30s", human.default_choice="ship_it"')
    start = trio.current_time()
    with trio.fail_after(3600):  # without enforcement the gate would wait forever
        outcome = await run_gate(IgnoresTimeouts(), graph)
    assert trio.current_time() - start == pytest.approx(30.0)
    assert outcome.suggested_next_ids == ("ship_it",)
    assert outcome.notes == "human gate timeout, used default choice"
    assert [name for name, _ in events] == ["interview_started", "interview_timeout"]
    assert events[1][1]["duration_s"] == pytest.approx(30.0)


async def test_without_human_timeout_the_gate_waits(
    autojump_clock: trio.testing.MockClock, events: Events
) -> None:
    with trio.move_on_after(86_400) as scope:
        await run_gate(IgnoresTimeouts())
    assert scope.cancelled_caught


# --- events (S4.6-11, contract.md §4) -----------------------------------------------------------
async def test_events_for_a_completed_interview(
    autojump_clock: trio.testing.MockClock, events: Events
) -> None:
    async def slow_human(question: Question) -> Answer:
        await trio.sleep(12)
        return fix_answer()

    await run_gate(CallbackInterviewer(slow_human))
    assert events == [
        ("interview_started", {"node_id": "review_gate", "question": "Review the change"}),
        (
            "interview_completed",
            {
                "node_id": "review_gate",
                "question": "Review the change",
                "answer": "F",
                "duration_s": pytest.approx(12.0),
            },
        ),
    ]


async def test_events_for_a_timeout_reported_by_the_interviewer(events: Events) -> None:
    await run_gate(QueueInterviewer([TIMED_OUT]))
    assert [name for name, _ in events] == ["interview_started", "interview_timeout"]
    fields = events[1][1]
    assert set(fields) == {"node_id", "question", "duration_s"}
    assert fields["node_id"] == "review_gate"


async def test_events_for_a_skipped_interview(events: Events) -> None:
    await run_gate(QueueInterviewer([]))
    assert events[1][0] == "interview_completed" and events[1][1]["answer"] == "skipped"


async def test_handler_works_without_an_engine_attempt() -> None:
    outcome = await run_gate(AutoApproveInterviewer())
    assert outcome.status is StageStatus.SUCCESS
