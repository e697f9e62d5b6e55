"""Interviewers (spec §6), accelerator keys (S4.6-09) and answer matching (AMBIG-20)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.errors import ConfigError
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
    QueueFileInterviewer,
    QueueInterviewer,
    RecordingInterviewer,
    choose_interviewer,
    find_choice_matching,
    interviewer_from_spec,
    match_option,
    parse_accelerator_key,
    strip_accelerator,
)

APPROVE = Option("A", "[A] Approve")
FIX = Option("F", "[F] Fix")


def choice_question(**kwargs: object) -> Question:
    fields: dict[str, object] = {
        "text": "Ship it?",
        "type": QuestionType.MULTIPLE_CHOICE,
        "options": [APPROVE, FIX],
        "stage": "review_gate",
        "metadata": {"targets": ["ship_it", "fixes"]},
    }
    fields.update(kwargs)
    return Question(**fields)  # type: ignore[arg-type]


# --- data model ------------------------------------------------------------------------------
def test_question_types_are_the_four_of_the_spec() -> None:
    assert [t.name for t in QuestionType] == [
        "YES_NO",
        "MULTIPLE_CHOICE",
        "FREEFORM",
        "CONFIRMATION",
    ]
    assert [v.name for v in AnswerValue] == ["YES", "NO", "SKIPPED", "TIMEOUT"]


def test_question_defaults_and_frozen_copies() -> None:
    options = [APPROVE]
    metadata = {"k": "v"}
    question = Question("t", QuestionType.FREEFORM, options=options, metadata=metadata)
    options.append(FIX)
    metadata["k"] = "changed"
    assert question.options == (APPROVE,)
    assert question.metadata == {"k": "v"}
    assert (question.default, question.timeout_seconds, question.stage) == (None, None, "")
    assert Answer() == Answer(value="", selected_option=None, text="")


def test_special_answers_are_recognised_by_identity_not_spelling() -> None:
    assert Answer(value=AnswerValue.TIMEOUT).timed_out
    assert not Answer(value="timeout").timed_out  # an option key spelled "timeout"
    assert Answer(value=AnswerValue.SKIPPED).skipped
    assert not Answer(value="skipped").skipped


def test_answer_describe_prefers_option_key_then_value_then_text() -> None:
    assert Answer(value="x", selected_option=FIX, text="fix").describe() == "F"
    assert Answer(value=AnswerValue.YES).describe() == "yes"
    assert Answer(text="free words").describe() == "free words"


# --- accelerators ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("[A] Approve", "A"),
        ("[y] yes please", "y"),
        ("A) Approve", "A"),
        ("2) Second", "2"),
        ("F - Fix it", "F"),
        ("Yes, deploy", "Y"),
        ("approve", "A"),
        ("  [K] padded", "K"),
        ("ship_it", "S"),
        ("", ""),
        ("[AB] not an accelerator", "["),
    ],
)
def test_parse_accelerator_key(label: str, key: str) -> None:
    assert parse_accelerator_key(label) == key


@pytest.mark.parametrize(
    ("label", "bare"),
    [
        ("[A] Approve", "Approve"),
        ("A) Approve", "Approve"),
        ("A - Approve", "Approve"),
        ("Approve", "Approve"),
        ("[A]", "[A]"),
    ],
)
def test_strip_accelerator(label: str, bare: str) -> None:
    assert strip_accelerator(label) == bare


@given(st.sampled_from("ABCxyz019"), st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_bracket_accelerator_round_trips(key: str, rest: str) -> None:
    label = f"[{key}] {rest.strip()}"
    assert parse_accelerator_key(label) == key
    assert strip_accelerator(label) == rest.strip()


# --- matching --------------------------------------------------------------------------------
CHOICES = [
    Choice("A", "[A] Approve", "ship_it"),
    Choice("F", "[F] Fix", "fixes"),
]


@pytest.mark.parametrize(
    ("typed", "target"),
    [
        ("A", "ship_it"),
        ("f", "fixes"),  # key, case-insensitive
        ("[F] Fix", "fixes"),  # full label
        ("approve", "ship_it"),  # label without accelerator, case-insensitive
        ("fixes", "fixes"),  # target id
        ("  SHIP_IT ", "ship_it"),  # target id, case-insensitive, padded
    ],
)
def test_find_choice_matching_by_key_label_or_target(typed: str, target: str) -> None:
    choice = find_choice_matching(Answer(value=typed, text=typed), CHOICES)
    assert choice is not None and choice.to == target
    assert find_choice_matching(typed, CHOICES) == choice


def test_find_choice_matching_returns_none_when_nothing_fits() -> None:
    assert find_choice_matching(Answer(value="Z", text="zebra"), CHOICES) is None
    assert find_choice_matching(Answer(), CHOICES) is None


def test_special_values_never_match_a_choice() -> None:
    choices = [Choice("T", "timeout", "t_node")]
    assert find_choice_matching(Answer(value=AnswerValue.TIMEOUT), choices) is None


def test_key_rule_beats_label_rule_across_all_choices() -> None:
    choices = [Choice("X", "Y", "first"), Choice("Y", "X", "second")]
    found = find_choice_matching("y", choices)
    assert found is not None and found.to == "second"


def test_selected_option_disambiguates_repeated_keys() -> None:
    choices = [Choice("A", "Approve", "ship"), Choice("A", "Abort", "stop")]
    found = find_choice_matching(Answer(selected_option=Option("A", "Abort")), choices)
    assert found is not None and found.to == "stop"


def test_text_is_tried_after_value() -> None:
    found = find_choice_matching(Answer(value="nonsense", text="fix"), CHOICES)
    assert found is not None and found.to == "fixes"


@given(
    st.lists(
        st.tuples(st.sampled_from("ABC"), st.text(max_size=8), st.sampled_from(["n1", "n2"])),
        min_size=1,
        max_size=5,
    ),
    st.data(),
)
def test_selected_option_always_finds_an_equal_choice(
    raw: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    choices = [Choice(k, label, to) for k, label, to in raw]
    picked = data.draw(st.sampled_from(choices))
    found = find_choice_matching(Answer(selected_option=Option(picked.key, picked.label)), choices)
    assert found is not None
    assert (found.key, found.label) == (picked.key, picked.label)


def test_match_option_uses_question_targets() -> None:
    assert match_option("fixes", choice_question()) == FIX
    assert match_option("fixes", choice_question(metadata={})) is None
    assert match_option("", choice_question()) is None


# --- the simple interviewers (S6.4-01, 03, 04, 05) -------------------------------------------
async def test_auto_approve_answers_yes_to_yes_no_and_confirmation() -> None:
    auto = AutoApproveInterviewer()
    for kind in (QuestionType.YES_NO, QuestionType.CONFIRMATION):
        answer = await auto.ask(Question("ok?", kind))
        assert answer.value is AnswerValue.YES


async def test_auto_approve_picks_the_first_option() -> None:
    answer = await AutoApproveInterviewer().ask(choice_question())
    assert answer == Answer(value="A", selected_option=APPROVE)


async def test_auto_approve_otherwise_says_auto_approved() -> None:
    for question in (Question("why?", QuestionType.FREEFORM), choice_question(options=[])):
        answer = await AutoApproveInterviewer().ask(question)
        assert answer == Answer(value="auto-approved", text="auto-approved")


async def test_callback_interviewer_accepts_sync_and_async_callbacks() -> None:
    seen: list[Question] = []

    def sync_cb(question: Question) -> Answer:
        seen.append(question)
        return Answer(value="sync")

    async def async_cb(question: Question) -> Answer:
        await trio.lowlevel.checkpoint()
        return Answer(value="async")

    question = choice_question()
    assert (await CallbackInterviewer(sync_cb).ask(question)).value == "sync"
    assert seen == [question]
    assert (await CallbackInterviewer(async_cb).ask(question)).value == "async"


async def test_queue_interviewer_dequeues_in_order_then_skips() -> None:
    queue = QueueInterviewer([Answer(value="1"), Answer(value="2")])
    answers = [await queue.ask(choice_question()) for _ in range(3)]
    assert [a.value for a in answers] == ["1", "2", AnswerValue.SKIPPED]
    assert answers[2].value is AnswerValue.SKIPPED


async def test_recording_interviewer_records_pairs_and_forwards_inform() -> None:
    informed: list[tuple[str, str]] = []

    class Inner(QueueInterviewer):
        async def inform(self, message: str, stage: str = "") -> None:
            informed.append((message, stage))

    recorder = RecordingInterviewer(Inner([Answer(value="F")]))
    q1, q2 = choice_question(), Question("why?", QuestionType.FREEFORM)
    a1, a2 = await recorder.ask(q1), await recorder.ask(q2)
    await recorder.inform("done", "gate")
    assert recorder.recordings == [(q1, a1), (q2, a2)]
    assert a1.value == "F" and a2.value is AnswerValue.SKIPPED
    assert informed == [("done", "gate")]


async def test_ask_multiple_asks_in_order_and_inform_defaults_to_silence() -> None:
    queue = QueueInterviewer([Answer(value="1"), Answer(value="2")])
    answers = await queue.ask_multiple([choice_question(), choice_question()])
    assert [a.value for a in answers] == ["1", "2"]
    await queue.inform("hello", "stage")  # the default is silent and does not raise
    assert isinstance(queue, Interviewer)


async def test_non_interactive_interviewer_skips_with_a_fixable_reason() -> None:
    answer = await NonInteractiveInterviewer().ask(choice_question())
    assert answer.value is AnswerValue.SKIPPED
    assert "human gate 'review_gate'" in answer.text
    assert "not a TTY" in answer.text
    assert "--auto-approve" in answer.text and "--interviewer" in answer.text


# --- queue file --------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "answers.txt"
    path.write_text(text, encoding="utf-8")
    return path


async def test_queue_file_consumes_lines_in_order_skipping_blank_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "f\n\n   \napprove\nfixes\n[F] Fix\n")
    interviewer = QueueFileInterviewer(path)
    picked = [(await interviewer.ask(choice_question())).selected_option for _ in range(4)]
    assert picked == [FIX, APPROVE, FIX, FIX]
    exhausted = await interviewer.ask(choice_question())
    assert exhausted.value is AnswerValue.SKIPPED
    assert "no answers left" in exhausted.text and "review_gate" in exhausted.text


async def test_queue_file_answer_keeps_key_value_and_raw_text(tmp_path: Path) -> None:
    answer = await QueueFileInterviewer(write(tmp_path, "  approve  \n")).ask(choice_question())
    assert answer == Answer(value="A", selected_option=APPROVE, text="approve")


async def test_queue_file_unmatched_line_fails_loudly_with_position(tmp_path: Path) -> None:
    path = write(tmp_path, "\nmaybe\n")
    answer = await QueueFileInterviewer(path).ask(choice_question())
    assert answer.value is AnswerValue.SKIPPED
    assert f"{path}:2" in answer.text and "'maybe'" in answer.text
    assert "A ([A] Approve)" in answer.text


async def test_queue_file_yes_no_and_freeform(tmp_path: Path) -> None:
    interviewer = QueueFileInterviewer(write(tmp_path, "Yes\nn\nperhaps\nsome words\n"))
    yes_no = Question("ok?", QuestionType.YES_NO)
    assert (await interviewer.ask(yes_no)).value is AnswerValue.YES
    assert (await interviewer.ask(Question("ok?", QuestionType.CONFIRMATION))).value is (
        AnswerValue.NO
    )
    bad = await interviewer.ask(yes_no)
    assert bad.value is AnswerValue.SKIPPED and "not yes or no" in bad.text
    free = await interviewer.ask(Question("why?", QuestionType.FREEFORM))
    assert free == Answer(value="some words", text="some words")


def test_queue_file_missing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue:.*missing\.txt.*cannot read"):
        QueueFileInterviewer(tmp_path / "missing.txt")


# --- construction from CLI strings -------------------------------------------------------------
def test_interviewer_from_spec_known_forms(tmp_path: Path) -> None:
    assert isinstance(interviewer_from_spec("auto"), AutoApproveInterviewer)
    assert isinstance(interviewer_from_spec("console"), ConsoleInterviewer)
    path = write(tmp_path, "A\n")
    queue = interviewer_from_spec(f"queue:{path}")
    assert isinstance(queue, QueueFileInterviewer) and queue.path == path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("queue:", "needs a file name"),
        ("http", "requires `attractor-trio serve`"),
        ("telepathy", "unknown --interviewer 'telepathy'.*auto, console, queue:FILE"),
        ("auto:x", "unknown --interviewer"),
    ],
)
def test_interviewer_from_spec_rejects_bad_forms(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        interviewer_from_spec(spec)


def test_choose_interviewer_precedence() -> None:
    assert isinstance(
        choose_interviewer(auto_approve=True, stdin_is_tty=False), AutoApproveInterviewer
    )
    assert isinstance(
        choose_interviewer("auto", auto_approve=True, stdin_is_tty=False), AutoApproveInterviewer
    )
    assert isinstance(choose_interviewer("console", stdin_is_tty=False), ConsoleInterviewer)
    assert isinstance(choose_interviewer(stdin_is_tty=True), ConsoleInterviewer)
    assert isinstance(choose_interviewer(stdin_is_tty=False), NonInteractiveInterviewer)
    with pytest.raises(ConfigError, match="--auto-approve conflicts with --interviewer console"):
        choose_interviewer("console", auto_approve=True, stdin_is_tty=True)


# --- console (S6.4-02) -------------------------------------------------------------------------
def console(typed: str) -> tuple[ConsoleInterviewer, io.StringIO]:
    out = io.StringIO()
    return ConsoleInterviewer(stdin=io.StringIO(typed), stdout=out), out


async def test_console_multiple_choice_prompt_and_selection() -> None:
    interviewer, out = console("f\n")
    answer = await interviewer.ask(choice_question())
    assert out.getvalue() == "[?] Ship it?\n  [A] [A] Approve\n  [F] [F] Fix\nSelect: "
    assert answer == Answer(value="F", selected_option=FIX, text="f")


async def test_console_re_prompts_until_the_input_names_an_option() -> None:
    interviewer, out = console("maybe\nfixes\n")
    answer = await interviewer.ask(choice_question())
    assert answer.selected_option == FIX
    assert out.getvalue().endswith(
        "Select: [!] 'maybe' is not an option; enter one of: A, F\nSelect: "
    )


async def test_console_empty_input_takes_the_question_default() -> None:
    default = Answer(value="A", selected_option=APPROVE)
    interviewer, _ = console("\n")
    assert await interviewer.ask(choice_question(default=default)) == default


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("y\n", AnswerValue.YES),
        ("Y\n", AnswerValue.YES),
        ("yes\n", AnswerValue.YES),
        ("n\n", AnswerValue.NO),
        ("whatever\n", AnswerValue.NO),
        ("\n", AnswerValue.NO),
    ],
)
async def test_console_yes_no(typed: str, value: AnswerValue) -> None:
    interviewer, out = console(typed)
    answer = await interviewer.ask(Question("Deploy?", QuestionType.YES_NO))
    assert out.getvalue() == "[?] Deploy?\n[Y/N]: "
    assert answer.value is value


async def test_console_confirmation_reads_y_n_too() -> None:
    interviewer, out = console("y\n")
    answer = await interviewer.ask(Question("Proceed?", QuestionType.CONFIRMATION))
    assert out.getvalue() == "[?] Proceed?\n[Y/N]: " and answer.value is AnswerValue.YES


async def test_console_freeform() -> None:
    interviewer, out = console("  keep the spaces \n")
    answer = await interviewer.ask(Question("Why?", QuestionType.FREEFORM))
    assert out.getvalue() == "[?] Why?\n> "
    assert answer == Answer(text="  keep the spaces ")


@pytest.mark.parametrize(
    "question",
    [choice_question(), Question("ok?", QuestionType.YES_NO), Question("?", QuestionType.FREEFORM)],
)
async def test_console_eof_is_skipped(question: Question) -> None:
    interviewer, _ = console("")
    assert (await interviewer.ask(question)).value is AnswerValue.SKIPPED


async def test_console_inform_prints_the_stage() -> None:
    interviewer, out = console("")
    await interviewer.inform("build finished", "build")
    await interviewer.inform("hello")
    assert out.getvalue() == "[i] build: build finished\n[i] hello\n"


@pytest.fixture
def silent_stdin() -> Iterator[tuple[TextIO, int]]:
    """A stdin that blocks until the test writes to (or closes) the pipe's write end."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r", encoding="utf-8")
    try:
        yield reader, write_fd
    finally:
        try:
            os.close(write_fd)  # EOF releases any abandoned reader thread
        except OSError:
            pass  # the test closed it already
        reader.close()


async def test_console_timeout_returns_timeout_without_waiting_for_input(
    silent_stdin: tuple[TextIO, int],
) -> None:
    stdin, write_fd = silent_stdin
    out = io.StringIO()
    interviewer = ConsoleInterviewer(stdin=stdin, stdout=out)
    with trio.fail_after(5):
        answer = await interviewer.ask(choice_question(timeout_seconds=0.2))
    assert answer.value is AnswerValue.TIMEOUT
    assert out.getvalue().endswith("Select: \n[!] no answer within 0.2s\n")
    # The abandoned read is reused, so the line typed next is not lost to a stray thread.
    os.write(write_fd, b"fix\n")
    with trio.fail_after(5):
        answer = await interviewer.ask(choice_question())
    assert answer.selected_option == FIX
    os.close(write_fd)
    with trio.fail_after(5):
        assert (await interviewer.ask(choice_question())).value is AnswerValue.SKIPPED


async def test_console_timeout_uses_the_question_default(
    silent_stdin: tuple[TextIO, int],
) -> None:
    stdin, _ = silent_stdin
    default = Answer(value=AnswerValue.NO)
    interviewer = ConsoleInterviewer(stdin=stdin, stdout=io.StringIO())
    with trio.fail_after(5):
        answer = await interviewer.ask(
            Question("ok?", QuestionType.YES_NO, default=default, timeout_seconds=0.2)
        )
    assert answer == default


async def test_console_read_is_cancellable(silent_stdin: tuple[TextIO, int]) -> None:
    stdin, _ = silent_stdin
    interviewer = ConsoleInterviewer(stdin=stdin, stdout=io.StringIO())
    with trio.fail_after(5):
        with trio.move_on_after(0.1) as scope:
            await interviewer.ask(choice_question())
    assert scope.cancelled_caught
