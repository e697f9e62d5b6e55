"""The run's vocabulary (issue 20): one enum per word family, spelled exactly as the files
and events spell it, and a cancel whose *cause* — not its text — decides how the run ends."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import trio

import attractor_trio
from attractor_trio.core import failures
from attractor_trio.core.outcome import StageStatus
from attractor_trio.core.vocabulary import (
    DEFAULT_KILL_GRACE,
    CancelCause,
    ExitPath,
    FailureClass,
    Status,
)
from attractor_trio.persist import final as final_module
from attractor_trio.scopes import engine

from .helpers import read_json, run_dot

#: The spellings in final.json, events and status files (contract.md §4, §5), written out here
#: so a renamed member cannot silently change a file.
EXIT_PATH_SPELLINGS = [
    "completed",
    "stage_failed",
    "goal_gate_unsatisfied",
    "no_route",
    "canceled",
    "watchdog",
    "cycle_breaker",
    "visit_limit",
    "internal_error",
]
FAILURE_CLASS_SPELLINGS = [
    "transient_infra",
    "budget_exhausted",
    "deterministic",
    "structural",
    "canceled",
]


def test_enum_values_are_the_file_spellings() -> None:
    assert [p.value for p in ExitPath] == EXIT_PATH_SPELLINGS
    assert [c.value for c in FailureClass] == FAILURE_CLASS_SPELLINGS
    assert [s.value for s in Status] == ["success", "partial_success", "retry", "fail", "skipped"]
    assert {c.value for c in CancelCause} >= {"SIGINT", "SIGTERM", "SIGHUP", "watchdog"}


@pytest.mark.parametrize("member", [*ExitPath, *FailureClass, *Status])
def test_a_member_serializes_byte_identically_to_its_string(member: str) -> None:
    plain = str.__str__(member)
    assert json.dumps({"k": member}) == json.dumps({"k": plain})
    assert f"{member}" == str(member) == plain and member == plain
    assert type(member)(plain) is member  # read back from a file, it is the member again


def test_words_quote_like_their_strings() -> None:
    """Messages that quote a value with !r read as before the enums existed."""
    assert repr(ExitPath.WATCHDOG) == "'watchdog'"
    assert f"{FailureClass.STRUCTURAL!r}" == "'structural'"


def test_every_layer_shares_the_one_definition() -> None:
    assert StageStatus is Status is attractor_trio.Status
    assert tuple(FailureClass) == failures.FAILURE_CLASSES
    assert failures.TRANSIENT_INFRA is FailureClass.TRANSIENT_INFRA
    assert frozenset(FailureClass) == final_module.FAILURE_CLASSES
    assert frozenset(ExitPath) == final_module.EXIT_PATHS
    assert inspect.signature(engine.run).parameters["kill_grace"].default == DEFAULT_KILL_GRACE


def test_only_the_watchdog_cause_fails_a_run() -> None:
    assert [c for c in CancelCause if c.fails_run] == [CancelCause.WATCHDOG]


LONG = """digraph c { start [shape=Mdiamond]; done [shape=Msquare]
    work [prompt="work"]; start -> work -> done }"""


class _CancelsWhileWorking:
    """A backend that cancels the run from inside its stage with a given reason and cause."""

    def __init__(self, handle: engine.RunHandle, reason: str, cause: CancelCause | None) -> None:
        self.handle, self.reason, self.cause = handle, reason, cause

    async def run(self, node: Any, prompt: str, context: Any) -> Any:
        if self.cause is None:
            self.handle.cancel(self.reason)
        else:
            self.handle.cancel(self.reason, self.cause)
        await trio.sleep_forever()


@pytest.mark.parametrize(
    ("reason", "cause", "status", "exit_path", "failure_class"),
    [
        # The text looks like the watchdog's, but an embedding app asked: a plain cancel.
        ("watchdog: pretend", CancelCause.API, "canceled", "canceled", "canceled"),
        ("watchdog: pretend", None, "canceled", "canceled", "canceled"),
        # The watchdog's cause fails the run whatever the text says.
        ("no progress anywhere", CancelCause.WATCHDOG, "fail", "watchdog", "transient_infra"),
        ("SIGHUP", CancelCause.SIGHUP, "canceled", "canceled", "canceled"),
    ],
)
async def test_the_cancel_cause_reaches_final_json_without_text_parsing(
    tmp_path: Path,
    autojump_clock: Any,
    reason: str,
    cause: CancelCause | None,
    status: str,
    exit_path: str,
    failure_class: str,
) -> None:
    root = tmp_path / "run"
    handle = engine.RunHandle()
    result = await run_dot(
        LONG, root, backend=_CancelsWhileWorking(handle, reason, cause), handle=handle
    )
    final = read_json(root / "final.json")
    assert (final["status"], final["exit_path"], final["failure_class"]) == (
        status,
        exit_path,
        failure_class,
    )
    assert reason in final["failure_reason"]
    assert (result.status, result.exit_path) == (status, exit_path)
