"""Human-in-the-loop: questions, answers and the interviewers that answer them (spec §6).

Every human interaction goes through an :class:`Interviewer`, so the engine never knows
whether a person at a console, a scripted queue, an HTTP client or a policy answered. The
matching rules that turn typed text into a choice (AMBIG-20, contract.md §9) are pure functions
here, shared by the console, the queue file and the ``wait.human`` handler, so a gate answers
the same way whichever front end is used.
"""

from __future__ import annotations

import enum
import inspect
import math
import re
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import trio
from attrs import field, frozen

from .errors import ConfigError

__all__ = [
    "Answer",
    "AnswerValue",
    "AutoApproveInterviewer",
    "CallbackInterviewer",
    "Choice",
    "ConsoleInterviewer",
    "Interviewer",
    "NonInteractiveInterviewer",
    "Option",
    "Question",
    "QuestionType",
    "QueueFileInterviewer",
    "QueueInterviewer",
    "RecordingInterviewer",
    "choose_interviewer",
    "find_choice_matching",
    "interviewer_from_spec",
    "match_option",
    "parse_accelerator_key",
    "strip_accelerator",
]


# --- data model (S6.2, S6.3) ----------------------------------------------------------------
class QuestionType(enum.StrEnum):
    YES_NO = "yes_no"
    MULTIPLE_CHOICE = "multiple_choice"
    FREEFORM = "freeform"
    #: Semantically distinct from YES_NO: acknowledging, not deciding (S6.2-02).
    CONFIRMATION = "confirmation"


class AnswerValue(enum.StrEnum):
    """Special answer values. Compare by identity (``is``): an option key may spell ``"yes"``."""

    YES = "yes"
    NO = "no"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"


@frozen
class Option:
    """One choice of a question: accelerator ``key`` and the ``label`` shown (spec S6.2-03)."""

    key: str
    label: str


def _options(value: Iterable[Option]) -> tuple[Option, ...]:
    return tuple(value)


def _metadata(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@frozen
class Answer:
    """An interviewer's reply (spec S6.3-01): a value or option, and free text."""

    value: str | AnswerValue = ""
    selected_option: Option | None = None
    text: str = ""

    @property
    def timed_out(self) -> bool:
        return self.value is AnswerValue.TIMEOUT

    @property
    def skipped(self) -> bool:
        return self.value is AnswerValue.SKIPPED

    def describe(self) -> str:
        """One string for events and logs: the option key, else the value, else the text."""
        if self.selected_option is not None:
            return self.selected_option.key
        return str(self.value) if self.value != "" else self.text


@frozen(eq=True, hash=False)
class Question:
    """What to ask. ``metadata["targets"]``, when present, lists each option's target node id
    (same order as ``options``) so answers may name the node a choice leads to."""

    text: str
    type: QuestionType = QuestionType.MULTIPLE_CHOICE
    options: tuple[Option, ...] = field(default=(), converter=_options)
    default: Answer | None = None
    timeout_seconds: float | None = None
    stage: str = ""
    metadata: dict[str, Any] = field(factory=dict, converter=_metadata)

    @property
    def targets(self) -> tuple[str, ...]:
        raw = self.metadata.get("targets", ())
        return tuple(str(t) for t in raw) if isinstance(raw, list | tuple) else ()


@frozen
class Choice:
    """One outgoing edge of a human gate as the handler sees it (S4.6-01)."""

    key: str
    label: str
    to: str


# --- accelerators and matching (S4.6-09, AMBIG-20) ------------------------------------------
# The same three forms edge selection strips from labels (core/edges.py), so a key parsed here
# and a label normalized there agree.
_ACCELERATOR_FORMS = (
    re.compile(r"^\[([^\]\s])\]\s*(.*)$", re.DOTALL),  # [K] Label
    re.compile(r"^([A-Za-z0-9])\)\s*(.*)$", re.DOTALL),  # K) Label
    re.compile(r"^([A-Za-z0-9])\s+-\s+(.*)$", re.DOTALL),  # K - Label
)


def parse_accelerator_key(label: str) -> str:
    """``[K] Label``, ``K) Label``, ``K - Label`` → ``K``; otherwise the first character,
    uppercased (``Yes, deploy`` → ``Y``); ``""`` for an empty label."""
    text = label.strip()
    for form in _ACCELERATOR_FORMS:
        match = form.match(text)
        if match is not None:
            return match.group(1)
    return text[:1].upper()


def strip_accelerator(label: str) -> str:
    """The label without its accelerator prefix (``[A] Approve`` → ``Approve``)."""
    text = label.strip()
    for form in _ACCELERATOR_FORMS:
        match = form.match(text)
        if match is not None and match.group(2).strip():
            return match.group(2).strip()
    return text


def _match_index(
    raw: str, keys: Sequence[str], labels: Sequence[str], targets: Sequence[str]
) -> int | None:
    """Index of the entry ``raw`` names: key (case-insensitive), then label (case-insensitive,
    with or without its accelerator prefix), then target node id (exact, then case-insensitive).
    Each rule is tried over all entries before the next, so a key never loses to a label."""
    wanted = raw.strip()
    if not wanted:
        return None
    folded = wanted.casefold()
    rules: list[Callable[[int], bool]] = [
        lambda i: keys[i].casefold() == folded,
        lambda i: labels[i].strip().casefold() == folded,
        lambda i: strip_accelerator(labels[i]).casefold() == folded,
        lambda i: i < len(targets) and targets[i] == wanted,
        lambda i: i < len(targets) and targets[i].casefold() == folded,
    ]
    for rule in rules:
        for index in range(len(keys)):
            if rule(index):
                return index
    return None


def match_option(raw: str, question: Question) -> Option | None:
    """The option of ``question`` that the typed text ``raw`` names, or ``None``."""
    options = question.options
    index = _match_index(
        raw, [o.key for o in options], [o.label for o in options], question.targets
    )
    return None if index is None else options[index]


def find_choice_matching(answer: Answer | str, choices: Sequence[Choice]) -> Choice | None:
    """The choice an answer selects (AMBIG-20), or ``None`` (the handler then falls back).

    A ``selected_option`` wins when it equals a choice's key and label (keys may repeat), then
    by key; otherwise the answer's value and then its text are matched like typed input.
    Special values (``YES``, ``TIMEOUT`` …) never match a choice.
    """
    if isinstance(answer, str):
        answer = Answer(value=answer, text=answer)
    chosen = answer.selected_option
    if chosen is not None:
        for choice in choices:
            if (choice.key, choice.label) == (chosen.key, chosen.label):
                return choice
    candidates = [chosen.key] if chosen is not None else []
    if not isinstance(answer.value, AnswerValue):
        candidates.append(answer.value)
    candidates.append(answer.text)
    keys, labels = [c.key for c in choices], [c.label for c in choices]
    targets = [c.to for c in choices]
    for raw in candidates:
        index = _match_index(raw, keys, labels, targets)
        if index is not None:
            return choices[index]
    return None


def parse_yes_no(raw: str) -> AnswerValue | None:
    """``y``/``yes``/``true``/``1`` → YES, ``n``/``no``/``false``/``0`` → NO, else ``None``."""
    word = raw.strip().casefold()
    if word in ("y", "yes", "true", "1"):
        return AnswerValue.YES
    if word in ("n", "no", "false", "0"):
        return AnswerValue.NO
    return None


# --- the interface (S6.1) -------------------------------------------------------------------
@runtime_checkable
class Interviewer(Protocol):
    """Answers questions. Subclass it to inherit ``ask_multiple`` and ``inform`` defaults."""

    async def ask(self, question: Question) -> Answer: ...

    async def ask_multiple(self, questions: Sequence[Question]) -> list[Answer]:
        """Ask in order; one answer per question."""
        return [await self.ask(q) for q in questions]

    async def inform(self, message: str, stage: str = "") -> None:
        """Tell the human something that needs no answer; silent by default."""
        return None


class AutoApproveInterviewer(Interviewer):
    """S6.4-01: YES to yes/no and confirmations, the first option of a choice."""

    async def ask(self, question: Question) -> Answer:
        if question.type in (QuestionType.YES_NO, QuestionType.CONFIRMATION):
            return Answer(value=AnswerValue.YES)
        if question.type is QuestionType.MULTIPLE_CHOICE and question.options:
            first = question.options[0]
            return Answer(value=first.key, selected_option=first)
        return Answer(value="auto-approved", text="auto-approved")


class CallbackInterviewer(Interviewer):
    """S6.4-03: delegates to ``callback(question)``, which may be sync or async."""

    def __init__(self, callback: Callable[[Question], Answer | Awaitable[Answer]]) -> None:
        self._callback = callback

    async def ask(self, question: Question) -> Answer:
        result = self._callback(question)
        if inspect.isawaitable(result):
            return await result
        return result


class QueueInterviewer(Interviewer):
    """S6.4-04: pre-filled answers in order; an empty queue answers SKIPPED."""

    def __init__(self, answers: Iterable[Answer] = ()) -> None:
        self._answers: deque[Answer] = deque(answers)

    async def ask(self, question: Question) -> Answer:
        return self._answers.popleft() if self._answers else Answer(value=AnswerValue.SKIPPED)


class RecordingInterviewer(Interviewer):
    """S6.4-05: forwards to ``inner`` and keeps every ``(question, answer)`` pair."""

    def __init__(self, inner: Interviewer) -> None:
        self.inner = inner
        self.recordings: list[tuple[Question, Answer]] = []

    async def ask(self, question: Question) -> Answer:
        answer = await self.inner.ask(question)
        self.recordings.append((question, answer))
        return answer

    async def inform(self, message: str, stage: str = "") -> None:
        await self.inner.inform(message, stage)


class NonInteractiveInterviewer(Interviewer):
    """Used when nobody can answer (stdin is not a TTY, no interviewer chosen): every question
    is SKIPPED with a reason that says how to fix it, instead of blocking forever
    (contract.md §1)."""

    async def ask(self, question: Question) -> Answer:
        gate = question.stage or question.text
        return Answer(
            value=AnswerValue.SKIPPED,
            text=(
                f"human gate '{gate}' needs an answer but stdin is not a TTY; pass "
                "--auto-approve or --interviewer auto|console|queue:FILE"
            ),
        )


class QueueFileInterviewer(Interviewer):
    """``--interviewer queue:FILE``: one answer per line, consumed in order (blank lines are
    skipped); an exhausted file answers SKIPPED. A line that names no option answers SKIPPED
    with the file position, so a typo in a script fails loudly instead of taking option one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"--interviewer queue:{path}: cannot read the answers file: {exc}"
            ) from None
        self._lines: deque[tuple[int, str]] = deque(
            (number, line.strip())
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        )

    async def ask(self, question: Question) -> Answer:
        if not self._lines:
            return Answer(
                value=AnswerValue.SKIPPED,
                text=f"{self.path}: no answers left for '{question.stage or question.text}'",
            )
        number, line = self._lines.popleft()
        return self._interpret(f"{self.path}:{number}", line, question)

    @staticmethod
    def _interpret(where: str, line: str, question: Question) -> Answer:
        if question.type is QuestionType.MULTIPLE_CHOICE and question.options:
            option = match_option(line, question)
            if option is not None:
                return Answer(value=option.key, selected_option=option, text=line)
            valid = ", ".join(f"{o.key} ({o.label})" for o in question.options)
            return Answer(
                value=AnswerValue.SKIPPED,
                text=f"{where}: answer {line!r} matches no option; expected one of {valid}",
            )
        if question.type in (QuestionType.YES_NO, QuestionType.CONFIRMATION):
            verdict = parse_yes_no(line)
            if verdict is None:
                return Answer(
                    value=AnswerValue.SKIPPED,
                    text=f"{where}: answer {line!r} is not yes or no (write y or n)",
                )
            return Answer(value=verdict, text=line)
        return Answer(value=line, text=line)


# --- console (S6.4-02) ----------------------------------------------------------------------
class _PendingLine:
    """One ``readline`` that survives being abandoned: if the asking task is cancelled (a
    timeout), the next ask waits for this same read instead of racing a second reader for
    the next line, so no typed line is ever lost."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._started = False
        self._done = threading.Event()
        self._line: str | None = None

    def result(self) -> str | None:
        """Runs in a worker thread: the line (with newline), or ``None`` at EOF or on error."""
        with self._lock:
            first, self._started = not self._started, True
        if first:
            try:
                line = self._stream.readline()
                self._line = line if line else None
            except (OSError, ValueError):
                self._line = None
            finally:
                self._done.set()
        else:
            self._done.wait()
        return self._line


class ConsoleInterviewer(Interviewer):
    """Asks on a terminal. Reads happen in a worker thread that cancellation abandons, so a
    timeout or a cancelled run never waits for Enter. ``stdout`` is where prompts go (the CLI
    passes stderr under ``--json``); both streams default to the process's at ask time."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._pending: _PendingLine | None = None

    async def ask(self, question: Question) -> Answer:
        self._say(f"[?] {question.text}")
        if question.type is QuestionType.MULTIPLE_CHOICE:
            for option in question.options:
                self._say(f"  [{option.key}] {option.label}")
        timeout = question.timeout_seconds
        with trio.move_on_after(math.inf if timeout is None else max(timeout, 0.0)):
            return await self._dialogue(question)
        self._say(f"\n[!] no answer within {timeout or 0:g}s")
        return question.default or Answer(value=AnswerValue.TIMEOUT)

    async def inform(self, message: str, stage: str = "") -> None:
        self._say(f"[i] {stage}: {message}" if stage else f"[i] {message}")

    async def _dialogue(self, question: Question) -> Answer:
        if question.type is QuestionType.MULTIPLE_CHOICE and question.options:
            return await self._choose(question)
        if question.type in (QuestionType.YES_NO, QuestionType.CONFIRMATION):
            line = await self._read("[Y/N]: ")
            if line is None:
                return Answer(value=AnswerValue.SKIPPED)
            if not line.strip() and question.default is not None:
                return question.default
            yes = parse_yes_no(line) is AnswerValue.YES
            return Answer(value=AnswerValue.YES if yes else AnswerValue.NO, text=line.strip())
        line = await self._read("> ")
        if line is None:
            return Answer(value=AnswerValue.SKIPPED)
        if not line.strip() and question.default is not None:
            return question.default
        return Answer(text=line.rstrip("\r\n"))

    async def _choose(self, question: Question) -> Answer:
        """Re-prompts on input that names no option: guessing would route a typo somewhere."""
        while True:
            line = await self._read("Select: ")
            if line is None:
                return Answer(value=AnswerValue.SKIPPED)
            if not line.strip() and question.default is not None:
                return question.default
            option = match_option(line, question)
            if option is not None:
                return Answer(value=option.key, selected_option=option, text=line.strip())
            keys = ", ".join(o.key for o in question.options)
            self._say(f"[!] {line.strip()!r} is not an option; enter one of: {keys}")

    async def _read(self, prompt: str) -> str | None:
        out = self._out()
        out.write(prompt)
        out.flush()
        if self._pending is None:
            self._pending = _PendingLine(self._stdin or sys.stdin)
        line = await trio.to_thread.run_sync(self._pending.result, abandon_on_cancel=True)
        self._pending = None
        return line

    def _say(self, text: str) -> None:
        out = self._out()
        out.write(text + "\n")
        out.flush()

    def _out(self) -> TextIO:
        return self._stdout or sys.stdout


# --- construction from the command line (contract.md §1) ---------------------------------------
_VALID_SPECS = "auto, console, queue:FILE (http needs `attractor-trio serve`)"


def interviewer_from_spec(spec: str, *, prompt_stream: TextIO | None = None) -> Interviewer:
    """``--interviewer auto|console|queue:FILE``; anything else is a :class:`ConfigError`."""
    name, _, argument = spec.strip().partition(":")
    if name == "auto" and not argument:
        return AutoApproveInterviewer()
    if name == "console" and not argument:
        return ConsoleInterviewer(stdout=prompt_stream)
    if name == "queue":
        if not argument:
            raise ConfigError("--interviewer queue:FILE needs a file name, e.g. queue:answers.txt")
        return QueueFileInterviewer(argument)
    if name == "http":
        raise ConfigError(
            "--interviewer http requires `attractor-trio serve`: human gates of a served "
            "pipeline are answered via POST /pipelines/{id}/questions/{qid}/answer"
        )
    raise ConfigError(f"unknown --interviewer {spec!r}: expected one of {_VALID_SPECS}")


def choose_interviewer(
    spec: str | None = None,
    *,
    auto_approve: bool = False,
    stdin_is_tty: bool,
    prompt_stream: TextIO | None = None,
) -> Interviewer:
    """The interviewer a run uses: ``--auto-approve``, else ``--interviewer``, else the console
    on a TTY, else :class:`NonInteractiveInterviewer` (gates fail clearly, never hang)."""
    if auto_approve and spec not in (None, "auto"):
        raise ConfigError(
            f"--auto-approve conflicts with --interviewer {spec}: pass only one of them"
        )
    if auto_approve:
        return AutoApproveInterviewer()
    if spec is not None:
        return interviewer_from_spec(spec, prompt_stream=prompt_stream)
    if stdin_is_tty:
        return ConsoleInterviewer(stdout=prompt_stream)
    return NonInteractiveInterviewer()
