"""Human gates answered over HTTP (spec S6.5-03, S9.5-06/07).

A served run's ``wait.human`` stages ask an :class:`HttpInterviewer`. Each question waits in a
table of pending questions until ``POST /pipelines/{id}/questions/{qid}/answer`` arrives, the
question's timeout passes, or the run is cancelled; in every case it leaves the table, so
``GET /pipelines/{id}/questions`` only ever shows questions somebody can still answer.

Turning a request body into an :class:`Answer` is a pure function (:func:`answer_for`) that
refuses anything naming no option — with the valid keys in the message — because guessing
would route a typo somewhere nobody chose.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Final, final

import trio
from attrs import frozen

from ..interviewers import (
    Answer,
    AnswerValue,
    Interviewer,
    Question,
    QuestionType,
    match_option,
    parse_yes_no,
)

__all__ = [
    "HttpInterviewer",
    "InvalidAnswer",
    "PendingQuestion",
    "UnknownQuestion",
    "answer_for",
    "question_to_json",
]

ANSWER_KEYS: Final = ("value", "text")


class InvalidAnswer(ValueError):
    """The body names no valid answer to the question (HTTP 400); the message says why."""


class UnknownQuestion(LookupError):
    """No pending question has this id (HTTP 404): never asked, answered, or timed out."""


@final
@frozen
class PendingQuestion:
    """A question waiting for an answer, under the id clients answer it by."""

    id: str
    question: Question


def question_to_json(pending: PendingQuestion) -> dict[str, Any]:
    """The pinned wire shape: ``{id, node_id, text, type, options: [{key, label}]}``."""
    question = pending.question
    return {
        "id": pending.id,
        "node_id": question.stage,
        "text": question.text,
        "type": question.type.value,
        "options": [{"key": o.key, "label": o.label} for o in question.options],
    }


def _raw_answer(payload: object) -> tuple[str, str]:
    """``(raw, text)`` from ``{"value": KEY}`` or ``{"text": ...}``; ``value`` wins if both."""
    if not isinstance(payload, Mapping):
        raise InvalidAnswer('the answer must be a JSON object like {"value": "KEY"}')
    unknown = sorted(str(k) for k in payload if k not in ANSWER_KEYS)
    if unknown:
        raise InvalidAnswer(
            f"unknown key(s) {', '.join(unknown)} in the answer; use "
            '{"value": KEY} to pick an option or {"text": "..."} for free text'
        )
    present = [key for key in ANSWER_KEYS if key in payload]
    if not present:
        raise InvalidAnswer('the answer needs "value" (an option key) or "text"')
    for key in present:
        if not isinstance(payload[key], str):
            raise InvalidAnswer(f'"{key}" must be a string, got {type(payload[key]).__name__}')
    text = str(payload.get("text", payload.get("value", "")))
    return str(payload[present[0]]), text


def answer_for(question: Question, payload: object) -> Answer:
    """The :class:`Answer` a request body gives ``question``; :class:`InvalidAnswer` otherwise.

    Multiple choice: the value (else the text) must name an option by key (case-insensitive),
    label or target node id, as on the console. Yes/no and confirmation: ``y``/``yes``/``n``/
    ``no`` and friends. Free form: the text as given.
    """
    raw, text = _raw_answer(payload)
    if question.type is QuestionType.MULTIPLE_CHOICE and question.options:
        option = match_option(raw, question)
        if option is None:
            keys = ", ".join(o.key for o in question.options)
            labels = "; ".join(f"{o.key} = {o.label}" for o in question.options)
            raise InvalidAnswer(
                f"{raw!r} is not an option of this question; valid keys: {keys} ({labels})"
            )
        return Answer(value=option.key, selected_option=option, text=text)
    if question.type in (QuestionType.YES_NO, QuestionType.CONFIRMATION):
        verdict = parse_yes_no(raw)
        if verdict is None:
            raise InvalidAnswer(f"{raw!r} is not yes or no; answer with yes or no")
        return Answer(value=verdict, text=text)
    return Answer(value=raw, text=text)


class _Slot:
    """One pending question and the place its answer lands."""

    def __init__(self, question: Question) -> None:
        self.question = question
        self.answered = trio.Event()
        self.answer: Answer | None = None


class HttpInterviewer(Interviewer):
    """Keeps questions pending until an HTTP client answers them (one instance per run).

    The question's own ``timeout_seconds`` is honored here (and the ``wait.human`` handler
    holds every interviewer to it as well): on timeout the question's default, else
    ``TIMEOUT``, and the question disappears from :meth:`pending`.
    """

    def __init__(self, prefix: str = "q") -> None:
        self._prefix = prefix
        self._numbers = itertools.count(1)
        self._slots: dict[str, _Slot] = {}

    def pending(self) -> list[PendingQuestion]:
        """Questions waiting for an answer, oldest first."""
        return [PendingQuestion(qid, slot.question) for qid, slot in self._slots.items()]

    def answer(self, qid: str, payload: object) -> Answer:
        """Answer pending question ``qid`` from a request body; returns the answer given.

        Raises :class:`UnknownQuestion` or :class:`InvalidAnswer` (the question stays
        pending, so the client can correct itself).
        """
        slot = self._slots.get(qid)
        if slot is None or slot.answered.is_set():
            raise UnknownQuestion(qid)
        answer = answer_for(slot.question, payload)
        slot.answer = answer
        slot.answered.set()
        del self._slots[qid]
        return answer

    async def ask(self, question: Question) -> Answer:
        qid = f"{self._prefix}{next(self._numbers)}"
        slot = _Slot(question)
        self._slots[qid] = slot
        try:
            timeout = question.timeout_seconds
            with trio.move_on_after(math.inf if timeout is None else max(timeout, 0.0)):
                await slot.answered.wait()
            if slot.answer is not None:
                return slot.answer
            return question.default or Answer(value=AnswerValue.TIMEOUT)
        finally:
            self._slots.pop(qid, None)
