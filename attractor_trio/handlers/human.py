"""The ``wait.human`` handler (spec §4.6): ask which outgoing edge to take, route on the answer.

The decisions (which outcome an answer, a timeout or a missing default produce) are pure
functions of the answer and the gate's choices; :class:`WaitHumanHandler` only asks, times
and emits events. Routing information is returned both ways (AMBIG-7): ``suggested_next_ids``
names the target and ``preferred_label`` the edge label, so edge selection agrees either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ..core.outcome import Outcome, StageStatus
from ..core.vocabulary import FailureClass
from ..dot.graph import Edge, Graph, Node
from ..dot.values import AttributeValueError
from ..interviewers import (
    Answer,
    AnswerValue,
    Choice,
    Interviewer,
    Option,
    Question,
    QuestionType,
    find_choice_matching,
    parse_accelerator_key,
)
from .base import require_attempt

if TYPE_CHECKING:
    from ..context import Context

__all__ = [
    "WaitHumanHandler",
    "choices_for",
    "outcome_for_answer",
    "outcome_for_timeout",
    "question_for",
]

NO_EDGES_REASON = "No outgoing edges for human gate"
SKIPPED_REASON = "human skipped interaction"
TIMEOUT_NO_DEFAULT_REASON = "human gate timeout, no default"
TIMEOUT_DEFAULT_NOTES = "human gate timeout, used default choice"


def choices_for(edges: Sequence[Edge]) -> list[Choice]:
    """S4.6-01: one choice per outgoing edge, labelled by the edge label or its target."""
    choices = []
    for edge in edges:
        label = edge.label or edge.to_node
        choices.append(Choice(key=parse_accelerator_key(label), label=label, to=edge.to_node))
    return choices


def question_for(node: Node, choices: Sequence[Choice], timeout: float | None) -> Question:
    """S4.6-03. The text is the node label, which defaults to the node id (spec S2.6), so a
    console user can tell gates apart; ``metadata["targets"]`` lets answers name a target."""
    return Question(
        text=node.label or "Select an option:",
        type=QuestionType.MULTIPLE_CHOICE,
        options=[Option(c.key, c.label) for c in choices],
        timeout_seconds=timeout,
        stage=node.id,
        metadata={"node_id": node.id, "targets": [c.to for c in choices]},
    )


def _selected(choice: Choice, notes: str) -> Outcome:
    """S4.6-08 + AMBIG-7 + contract.md §9 context keys."""
    return Outcome(
        status=StageStatus.SUCCESS,
        preferred_label=choice.label,
        suggested_next_ids=[choice.to],
        context_updates={
            "human.gate.selected": choice.key,
            "human.gate.label": choice.label,
            "human.gate.target": choice.to,
        },
        notes=notes,
    )


def outcome_for_answer(answer: Answer, choices: Sequence[Choice]) -> Outcome:
    """S4.6-05…08 for an answer that arrived (a TIMEOUT value routes like a timeout elsewhere)."""
    if answer.value is AnswerValue.SKIPPED:
        reason = f"{SKIPPED_REASON}: {answer.text}" if answer.text else SKIPPED_REASON
        return Outcome(
            status=StageStatus.FAIL, failure_reason=reason, failure_class=FailureClass.DETERMINISTIC
        )
    choice = find_choice_matching(answer, choices)
    if choice is not None:
        return _selected(choice, f"human selected [{choice.key}] {choice.label} -> {choice.to}")
    first = choices[0]
    return _selected(
        first,
        f"answer {answer.describe()!r} matched no choice; used the first choice "
        f"[{first.key}] {first.label} -> {first.to}",
    )


def outcome_for_timeout(default_choice: str, choices: Sequence[Choice]) -> Outcome:
    """S4.6-05 / S6.5-02: ``human.default_choice`` names a target node id or an option key."""
    if not default_choice:
        return Outcome(status=StageStatus.RETRY, failure_reason=TIMEOUT_NO_DEFAULT_REASON)
    by_target = [c for c in choices if c.to == default_choice]
    choice = by_target[0] if by_target else find_choice_matching(default_choice, choices)
    if choice is None:
        targets = ", ".join(c.to for c in choices)
        return Outcome(
            status=StageStatus.RETRY,
            failure_reason=(
                f"{TIMEOUT_NO_DEFAULT_REASON}: human.default_choice={default_choice!r} names "
                f"no outgoing edge (targets: {targets}); set it to one of them"
            ),
        )
    return _selected(choice, TIMEOUT_DEFAULT_NOTES)


class WaitHumanHandler:
    """Presents the outgoing edges as choices and routes on the selection (S4.6-10, P-12)."""

    def __init__(self, interviewer: Interviewer) -> None:
        self.interviewer = interviewer

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        choices = choices_for(graph.outgoing(node.id))
        if not choices:
            return Outcome(
                status=StageStatus.FAIL,
                failure_reason=NO_EDGES_REASON,
                failure_class=FailureClass.STRUCTURAL,
            )
        try:
            timeout = node.human_timeout
        except AttributeValueError as exc:
            return Outcome(
                status=StageStatus.FAIL,
                failure_reason=f"node {node.id!r}: human.timeout: {exc}",
                failure_class=FailureClass.DETERMINISTIC,
            )
        question = question_for(node, choices, timeout)
        attempt = require_attempt(node, logs_root)
        attempt.emit("interview_started", node_id=node.id, question=question.text)
        started = trio.current_time()
        answer = await self._ask_bounded(question)
        duration = trio.current_time() - started
        if answer.value is AnswerValue.TIMEOUT:
            attempt.emit(
                "interview_timeout", node_id=node.id, question=question.text, duration_s=duration
            )
            return outcome_for_timeout(node.human_default_choice, choices)
        attempt.emit(
            "interview_completed",
            node_id=node.id,
            question=question.text,
            answer=answer.describe(),
            duration_s=duration,
        )
        return outcome_for_answer(answer, choices)

    async def _ask_bounded(self, question: Question) -> Answer:
        """The interviewer is told the timeout and also held to it: a front end that ignores
        ``timeout_seconds`` cannot keep the gate waiting past ``human.timeout``."""
        if question.timeout_seconds is None:
            return await self.interviewer.ask(question)
        with trio.move_on_after(question.timeout_seconds):
            return await self.interviewer.ask(question)
        return Answer(value=AnswerValue.TIMEOUT)
