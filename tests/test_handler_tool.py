"""The tool handler: real ``bash -c`` processes (bounded, real clock) and the pure decision."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.aio.process import ProcessResult
from attractor_trio.backends.executors import use_executor
from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus, StatusFileError
from attractor_trio.dot.graph import Graph, Node
from attractor_trio.handlers.base import (
    AttemptInfo,
    current_attempt,
    reset_attempt,
    set_attempt,
)
from attractor_trio.handlers.tool import (
    OUTPUT_LIMIT_BYTES,
    ToolHandler,
    clip_output,
    read_status_file,
    tail_text,
    tool_outcome,
)

from .helpers import attempt_info

BOUND = 15
GRAPH = Graph(name="g")


def _node(command: str) -> Node:
    return Node(id="build", attrs={"shape": "parallelogram", "tool_command": command})


@pytest.fixture
def attempt(tmp_path: Path) -> Iterator[AttemptInfo]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    info = AttemptInfo(
        run_id="run-7",
        node_id="build",
        attempt=2,
        max_attempts=3,
        attempt_id="build-2-abc",
        logs_root=tmp_path / "logs",
        stage_dir=tmp_path / "logs" / "build",
        workdir=workdir,
        predecessor_node="plan",
        predecessor_outcome="success",
        kill_grace=0.3,
    )
    token = set_attempt(info)
    yield info
    reset_attempt(token)


async def _execute(command: str, attempt: AttemptInfo) -> Outcome:
    with trio.fail_after(BOUND):
        return await ToolHandler().execute(_node(command), Context(), GRAPH, attempt.logs_root)


async def test_empty_command_is_a_structural_failure(tmp_path: Path) -> None:
    outcome = await ToolHandler().execute(_node("  "), Context(), GRAPH, tmp_path)
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason == "No tool_command specified"
    assert outcome.failure_class == "structural"


async def test_exit_zero_is_success_with_output(attempt: AttemptInfo) -> None:
    outcome = await _execute("echo hello; echo world", attempt)
    assert outcome.status is StageStatus.SUCCESS
    assert outcome.context_updates == {"tool.output": "hello\nworld", "tool.exit_code": 0}
    assert outcome.notes == "Tool completed: echo hello; echo world"
    assert outcome.failure_reason == ""


async def test_logs_are_written_in_the_stage_dir(attempt: AttemptInfo) -> None:
    await _execute("echo to-out; echo to-err >&2", attempt)
    assert (attempt.stage_dir / "stdout.log").read_text() == "to-out\n"
    assert (attempt.stage_dir / "stderr.log").read_text() == "to-err\n"


async def test_nonzero_exit_fails_with_code_and_stderr_tail(attempt: AttemptInfo) -> None:
    outcome = await _execute(
        "echo partial; for i in $(seq 1 30); do echo e$i >&2; done; exit 4", attempt
    )
    assert outcome.status is StageStatus.FAIL
    expected_tail = "\n".join(f"e{i}" for i in range(11, 31))
    assert outcome.failure_reason == f"tool exited with code 4: ...\n{expected_tail}"
    assert outcome.failure_class == ""
    assert outcome.context_updates == {"tool.output": "partial", "tool.exit_code": 4}


async def test_nonzero_exit_without_stderr_quotes_stdout(attempt: AttemptInfo) -> None:
    outcome = await _execute("echo '1 failed, 2 passed'; exit 1", attempt)
    assert outcome.failure_reason == (
        "tool exited with code 1 (stderr empty; end of stdout: 1 failed, 2 passed)"
    )


async def test_killed_by_signal_says_so(attempt: AttemptInfo) -> None:
    outcome = await _execute("kill -KILL $$", attempt)
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason == "tool killed by signal SIGKILL (no output)"
    assert outcome.context_updates["tool.exit_code"] == -9


async def test_process_gets_the_attractor_environment(attempt: AttemptInfo) -> None:
    names = [
        "ATTRACTOR_RUN_ID",
        "ATTRACTOR_NODE_ID",
        "ATTRACTOR_ATTEMPT",
        "ATTRACTOR_ATTEMPT_ID",
        "ATTRACTOR_LOGS_ROOT",
        "ATTRACTOR_STAGE_DIR",
        "ATTRACTOR_STATUS_PATH",
        "ATTRACTOR_WORKDIR",
        "ATTRACTOR_PREDECESSOR_NODE",
        "ATTRACTOR_PREDECESSOR_OUTCOME",
    ]
    command = "; ".join(f'echo "{n}=${n}"' for n in names) + '; echo "PATH=${PATH:+set}"; pwd'
    outcome = await _execute(command, attempt)
    lines = outcome.context_updates["tool.output"].splitlines()
    assert lines == [
        "ATTRACTOR_RUN_ID=run-7",
        "ATTRACTOR_NODE_ID=build",
        "ATTRACTOR_ATTEMPT=2",
        "ATTRACTOR_ATTEMPT_ID=build-2-abc",
        f"ATTRACTOR_LOGS_ROOT={attempt.logs_root}",
        f"ATTRACTOR_STAGE_DIR={attempt.stage_dir}",
        f"ATTRACTOR_STATUS_PATH={attempt.stage_dir / 'status.json'}",
        f"ATTRACTOR_WORKDIR={attempt.workdir}",
        "ATTRACTOR_PREDECESSOR_NODE=plan",
        "ATTRACTOR_PREDECESSOR_OUTCOME=success",
        "PATH=set",
        str(attempt.workdir),
    ]


async def test_status_file_decides_the_outcome(attempt: AttemptInfo) -> None:
    status = {"outcome": "fail", "preferred_label": "fix", "failure_reason": "lint errors"}
    outcome = await _execute(
        f"echo checked; echo '{json.dumps(status)}' > \"$ATTRACTOR_STATUS_PATH\"", attempt
    )
    assert outcome.status is StageStatus.FAIL
    assert outcome.preferred_label == "fix"
    assert outcome.failure_reason == "lint errors"
    assert outcome.context_updates == {"tool.output": "checked", "tool.exit_code": 0}


async def test_stale_status_file_is_removed_before_the_run(attempt: AttemptInfo) -> None:
    attempt.stage_dir.mkdir(parents=True)
    attempt.status_path.write_text('{"outcome": "success"}')
    outcome = await _execute("exit 2", attempt)
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason.startswith("tool exited with code 2")


async def test_invalid_status_file_fails_deterministically(attempt: AttemptInfo) -> None:
    outcome = await _execute(
        'echo \'{"outcome": "great job"}\' > "$ATTRACTOR_STATUS_PATH"', attempt
    )
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_class == "deterministic"
    assert str(attempt.status_path) in outcome.failure_reason
    assert "great" in outcome.failure_reason


# --- status ingestion (contract.md §3): the fallbacks, the ownership gate, the event -------------

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def events(attempt: AttemptInfo) -> Iterator[Events]:
    """The events the attempt emits (the ``attempt`` fixture, with a recording ``emit``)."""
    recorded: Events = []
    token = set_attempt(
        evolve(attempt, emit=lambda name, **fields: recorded.append((name, fields)))
    )
    yield recorded
    reset_attempt(token)


def _decision(events: Events) -> dict[str, Any]:
    """The one ``status_ingestion_decision`` of the attempt."""
    (fields,) = [fields for name, fields in events if name == "status_ingestion_decision"]
    return fields


def _workdir_files(attempt: AttemptInfo) -> tuple[Path, Path]:
    return attempt.workdir / "status.json", attempt.workdir / ".attractor" / "status.json"


async def test_workdir_status_decides_and_is_moved_to_the_stage_dir(
    attempt: AttemptInfo, events: Events
) -> None:
    outcome = await _execute(
        'echo \'{"outcome":"fail","failure_reason":"x"}\' > "$ATTRACTOR_WORKDIR/status.json"',
        attempt,
    )
    assert (outcome.status, outcome.failure_reason) == (StageStatus.FAIL, "x")
    assert outcome.context_updates == {"tool.output": "", "tool.exit_code": 0}
    assert _decision(events) == {
        "node_id": "build",
        "attempt_id": "build-2-abc",
        "source": "workdir",
        "copied": True,
        "rejected": [],
    }
    assert json.loads(attempt.status_path.read_text()) == {"outcome": "fail", "failure_reason": "x"}
    assert not _workdir_files(attempt)[0].exists()


async def test_dot_attractor_status_routes_by_its_label(
    attempt: AttemptInfo, events: Events
) -> None:
    outcome = await _execute(
        'mkdir -p .attractor; printf \'{"outcome":"success","preferred_label":"deploy",'
        '"attempt_id":"%s"}\' "$ATTRACTOR_ATTEMPT_ID" > .attractor/status.json',
        attempt,
    )
    assert (outcome.status, outcome.preferred_label) == (StageStatus.SUCCESS, "deploy")
    assert _decision(events)["source"] == "workdir_dot"
    assert _decision(events)["copied"] is True
    assert json.loads(attempt.status_path.read_text())["attempt_id"] == "build-2-abc"
    assert not _workdir_files(attempt)[1].exists()
    assert (attempt.workdir / ".attractor").is_dir()


async def test_canonical_status_wins_and_fallbacks_stay(
    attempt: AttemptInfo, events: Events
) -> None:
    outcome = await _execute(
        """echo '{"outcome":"retry","failure_reason":"later"}' > "$ATTRACTOR_STATUS_PATH";"""
        """ echo '{"outcome":"success"}' > status.json""",
        attempt,
    )
    assert (outcome.status, outcome.failure_reason) == (StageStatus.RETRY, "later")
    assert _decision(events)["source"] == "canonical"
    assert _decision(events)["copied"] is False
    assert _workdir_files(attempt)[0].read_text() == '{"outcome":"success"}\n'


async def test_foreign_fallback_is_skipped_and_the_exit_code_decides(
    attempt: AttemptInfo, events: Events
) -> None:
    outcome = await _execute(
        """echo '{"outcome":"success","attempt_id":"build-1-old"}' > status.json;"""
        " echo broken >&2; exit 3",
        attempt,
    )
    assert (outcome.status, outcome.failure_reason) == (
        StageStatus.FAIL,
        "tool exited with code 3: broken",
    )
    decision = _decision(events)
    assert (decision["source"], decision["copied"]) == ("none", False)
    (rejected,) = decision["rejected"]
    assert rejected["source"] == "workdir"
    assert rejected["path"] == str(_workdir_files(attempt)[0])
    assert "attempt_id is 'build-1-old' but this attempt's is 'build-2-abc'" in rejected["reason"]
    assert not attempt.status_path.exists()
    assert _workdir_files(attempt)[0].exists()


async def test_foreign_canonical_fails_deterministically_despite_exit_zero(
    attempt: AttemptInfo, events: Events
) -> None:
    outcome = await _execute(
        """echo '{"outcome":"success","run_id":"run-6"}' > "$ATTRACTOR_STATUS_PATH";"""
        """ echo '{"outcome":"success"}' > status.json""",
        attempt,
    )
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, "deterministic")
    assert outcome.failure_reason.startswith(
        f"{attempt.status_path}: belongs to another attempt: run_id is 'run-6' "
        "but this attempt's is 'run-7'"
    )
    decision = _decision(events)
    assert decision["source"] == "canonical"
    assert [r["reason"] for r in decision["rejected"]] == [outcome.failure_reason]


async def test_no_status_anywhere_still_emits_one_decision(
    attempt: AttemptInfo, events: Events
) -> None:
    outcome = await _execute("true", attempt)
    assert outcome.status is StageStatus.SUCCESS
    assert _decision(events) == {
        "node_id": "build",
        "attempt_id": "build-2-abc",
        "source": "none",
        "copied": False,
        "rejected": [],
    }


async def test_stale_fallbacks_are_removed_before_the_run(
    attempt: AttemptInfo, events: Events
) -> None:
    workdir_status, dot_status = _workdir_files(attempt)
    dot_status.parent.mkdir()
    workdir_status.write_text('{"outcome": "success"}')
    dot_status.write_text('{"outcome": "success"}')
    outcome = await _execute("ls -A .attractor >&2; exit 2", attempt)
    assert (outcome.status, outcome.failure_reason) == (
        StageStatus.FAIL,
        "tool exited with code 2 (no output)",
    )
    assert _decision(events)["source"] == "none"
    assert not workdir_status.exists() and not dot_status.exists()


async def test_a_directory_in_the_way_fails_before_the_command_runs(
    attempt: AttemptInfo, events: Events
) -> None:
    _workdir_files(attempt)[0].mkdir()
    outcome = await _execute("touch ran", attempt)
    assert (outcome.status, outcome.failure_class) == (StageStatus.FAIL, "deterministic")
    assert outcome.failure_reason == (
        f"{_workdir_files(attempt)[0]}: is a directory, where the stage's status file goes; "
        "remove or rename it"
    )
    assert not (attempt.workdir / "ran").exists()
    assert events == []


async def test_adopting_an_orphan_ingests_what_it_wrote(
    attempt: AttemptInfo, events: Events
) -> None:
    """A crashed engine's tool finished meanwhile: its workdir status decides, not removed."""
    attempt.stage_dir.mkdir(parents=True)
    (attempt.stage_dir / ".tool-started").write_text("999999999")
    (attempt.stage_dir / ".tool-exit").write_text("0\n")
    _workdir_files(attempt)[0].write_text('{"outcome": "fail", "failure_reason": "orphan says no"}')
    with trio.fail_after(BOUND):
        recording = current_attempt()  # the handler is handed the attempt, with its emit
        assert recording is not None
        outcome = await ToolHandler().adopt(_node("unused"), Context(), GRAPH, recording)
    assert outcome is not None
    assert (outcome.status, outcome.failure_reason) == (StageStatus.FAIL, "orphan says no")
    assert _decision(events)["source"] == "workdir"
    assert json.loads(attempt.status_path.read_text())["failure_reason"] == "orphan says no"


class _RemoteExecutor:
    """Stands for a cluster executor: adopting must never start a process."""

    async def run_process(self, *args: Any, **kwargs: Any) -> ProcessResult:
        raise AssertionError("adopt started a process")


async def test_a_remote_attempt_whose_journal_came_back_is_re_run_not_adopted(
    attempt: AttemptInfo, events: Events
) -> None:
    """contract.md §10: a remote attempt's files reach the driver one by one after its process
    ended; a driver killed after ``.tool-exit`` but before the ``status.json`` behind it (or
    the ``upload_workdir`` patch) must not decide the attempt from them: it runs again."""
    attempt.stage_dir.mkdir(parents=True)
    (attempt.stage_dir / ".tool-started").write_text("999999999")  # a pid on another machine
    (attempt.stage_dir / ".tool-exit").write_text("0\n")  # its status.json never arrived
    with use_executor(_RemoteExecutor()), trio.fail_after(BOUND):
        recording = current_attempt()
        assert recording is not None
        outcome = await ToolHandler().adopt(_node("unused"), Context(), GRAPH, recording)
    assert outcome is None
    assert events == []


async def test_output_is_this_attempts_only(attempt: AttemptInfo) -> None:
    attempt.stage_dir.mkdir(parents=True)
    (attempt.stage_dir / "stdout.log").write_text("from attempt 1\n")
    outcome = await _execute("echo from attempt 2", attempt)
    assert outcome.context_updates["tool.output"] == "from attempt 2"


async def test_large_output_is_clipped_with_a_marker(attempt: AttemptInfo) -> None:
    outcome = await _execute("head -c 30000 /dev/zero | tr '\\0' x; echo; echo END", attempt)
    output = outcome.context_updates["tool.output"]
    assert output.startswith("x" * 100)
    assert output.endswith("x\nEND")
    assert f"bytes truncated; full output in {attempt.stage_dir / 'stdout.log'}" in output
    assert len(output.encode()) < OUTPUT_LIMIT_BYTES + 200


async def test_progress_reported_when_output_grows(tmp_path: Path, attempt: AttemptInfo) -> None:
    calls: list[int] = []
    token = set_attempt(
        AttemptInfo(
            run_id="r",
            node_id="build",
            attempt=1,
            max_attempts=1,
            attempt_id="a",
            logs_root=tmp_path / "logs",
            stage_dir=tmp_path / "logs" / "build",
            workdir=attempt.workdir,
            progress=lambda: calls.append(1),
        )
    )
    try:
        await _execute("echo tick; sleep 0.4", attempt)
    finally:
        reset_attempt(token)
    assert calls == [1]


async def test_missing_workdir_fails_with_a_clear_reason(tmp_path: Path) -> None:
    token = set_attempt(
        attempt_info(tmp_path, "build", attempt_id="a", workdir=tmp_path / "nowhere")
    )
    try:
        outcome = await ToolHandler().execute(_node("true"), Context(), GRAPH, tmp_path)
    finally:
        reset_attempt(token)
    assert outcome.status is StageStatus.FAIL
    assert outcome.failure_reason.startswith(
        f"tool could not start (bash -c in {tmp_path / 'nowhere'})"
    )


def _group_alive(pgid: int) -> bool:
    out = subprocess.run(
        ["ps", "-eo", "pgid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    return any(int(pg) == pgid and not stat.startswith("Z") for pg, stat in rows)


async def test_cancellation_kills_the_whole_group_before_propagating(attempt: AttemptInfo) -> None:
    pid_file = attempt.workdir / "pids"
    command = f"echo $$ > {pid_file}; sleep 30 & echo $! >> {pid_file}; sleep 30"
    started = time.monotonic()
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.5) as scope:
            await ToolHandler().execute(_node(command), Context(), GRAPH, attempt.logs_root)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 3
    leader, background = map(int, pid_file.read_text().split())
    assert not _group_alive(leader)
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)  # the leader itself was reaped, not left a zombie
    assert not _group_alive(background)


@pytest.mark.slow
async def test_cancellation_sigkills_a_term_ignoring_command(attempt: AttemptInfo) -> None:
    started = time.monotonic()
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.5) as scope:
            await _execute(f"trap '' TERM; echo $$ > {attempt.workdir}/pid; sleep 30", attempt)
    assert scope.cancelled_caught
    assert 0.5 + attempt.kill_grace <= time.monotonic() - started < 5
    assert not _group_alive(int((attempt.workdir / "pid").read_text()))


# --- the pure parts ----------------------------------------------------------------------


def _result(code: int) -> ProcessResult:
    return ProcessResult(code, code < 0, 0.1, 0, 0)


def test_status_file_without_reason_gets_one() -> None:
    outcome = tool_outcome(
        "make",
        _result(2),
        output="",
        stderr_tail="boom",
        stdout_tail="",
        status=Outcome(StageStatus.RETRY, notes="try again"),
    )
    assert outcome.status is StageStatus.RETRY
    assert outcome.failure_reason == (
        "status file says retry without failure_reason; tool exited with code 2: boom"
    )
    assert outcome.notes == "try again"


def test_status_file_context_updates_win_over_tool_keys() -> None:
    status = Outcome(StageStatus.SUCCESS, context_updates={"tool.output": "mine", "k": 1})
    outcome = tool_outcome(
        "x", _result(0), output="raw", stderr_tail="", stdout_tail="", status=status
    )
    assert outcome.context_updates == {"tool.output": "mine", "tool.exit_code": 0, "k": 1}
    assert outcome.notes == "Tool completed: x"


def test_status_error_fails_deterministically() -> None:
    outcome = tool_outcome(
        "x",
        _result(0),
        output="o",
        stderr_tail="",
        stdout_tail="",
        status=StatusFileError("s.json: bad"),
    )
    assert (outcome.status, outcome.failure_reason, outcome.failure_class) == (
        StageStatus.FAIL,
        "s.json: bad",
        "deterministic",
    )


def test_read_status_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert read_status_file(path) is None
    path.write_text("{not json")
    error = read_status_file(path)
    assert isinstance(error, StatusFileError)
    assert str(error).startswith(f"{path}:1:2: invalid JSON")
    path.write_text('{"status": "partial_success", "notes": "ok"}')
    assert read_status_file(path) == Outcome(StageStatus.PARTIAL_SUCCESS, notes="ok")


def test_tail_text_keeps_the_last_lines() -> None:
    assert tail_text(b"a\nb\nc\n\n", max_lines=2) == "...\nb\nc"
    assert tail_text(b"  a\nb  \n", max_lines=2) == "a\nb"
    assert tail_text(b"\x80\x80tail") == "tail"


_CLIPPED = re.compile(
    r"(.*)\n\[\.\.\. (\d+) bytes truncated; full output in out\.log \.\.\.\](?:\n(.*))?", re.DOTALL
)


@given(st.text(max_size=300), st.integers(min_value=2, max_value=120))
def test_clip_output_bounds_and_marks(text: str, limit: int) -> None:
    data = text.encode()
    clipped = clip_output(data, limit, full_log="out.log")
    if len(data) <= limit:
        assert clipped == text.rstrip("\r\n")
    else:
        match = _CLIPPED.fullmatch(clipped)
        assert match is not None
        head, omitted, tail = match.group(1), int(match.group(2)), match.group(3) or ""
        assert omitted == len(data) - 2 * (limit // 2)
        assert len(head.encode()) <= limit // 2
        assert len(tail.encode()) <= limit // 2
        assert text.startswith(head)
        assert text.rstrip("\r\n").endswith(tail)
        assert "\ufffd" not in clipped or "\ufffd" in text


def _orphan_wrapper(attempt: AttemptInfo, command: str) -> subprocess.CompletedProcess[str]:
    """The wrapper a dead engine spawned, starting only now (its ``bash`` was slow to start)."""
    from attractor_trio.handlers import tool as tool_module

    argv = tool_module._Journal(attempt).argv(command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=BOUND, check=False)


async def test_a_resumed_engine_that_gets_there_first_revokes_the_orphans_attempt(
    attempt: AttemptInfo,
) -> None:
    """The engine died between spawning the wrapper and the wrapper's first line; the resumed
    engine finds nothing recorded. It claims the attempt as revoked and re-runs the command;
    the late orphan must then run nothing (before, both ran it: the crash test saw a stage
    twice in its ledger when the orphan's ``bash`` started slower than the resumed engine)."""
    attempt.stage_dir.mkdir(parents=True)
    with trio.fail_after(BOUND):
        adopted = await ToolHandler().adopt(_node("unused"), Context(), GRAPH, attempt)
    assert adopted is None  # re-run the command in a new attempt
    late = _orphan_wrapper(attempt, f"echo ran >> {attempt.workdir / 'ledger.txt'}")
    assert late.returncode == 0, late.stderr
    assert not (attempt.workdir / "ledger.txt").exists()
    # A second resume finds the attempt revoked, not an orphan to wait for.
    with trio.fail_after(BOUND):
        assert await ToolHandler().adopt(_node("unused"), Context(), GRAPH, attempt) is None


async def test_an_orphan_that_claimed_first_is_adopted_not_re_run(
    attempt: AttemptInfo,
) -> None:
    """The orphan won the claim: the resumed engine waits for it and takes its exit code."""
    attempt.stage_dir.mkdir(parents=True)
    orphan = await trio.to_thread.run_sync(
        _orphan_wrapper, attempt, f"echo ran >> {attempt.workdir / 'ledger.txt'}; exit 3"
    )
    assert orphan.returncode == 3, orphan.stderr
    with trio.fail_after(BOUND):
        adopted = await ToolHandler().adopt(_node("unused"), Context(), GRAPH, attempt)
    assert adopted is not None and adopted.status is StageStatus.FAIL
    assert adopted.failure_reason.startswith("tool exited with code 3")
    assert (attempt.workdir / "ledger.txt").read_text() == "ran\n"


async def test_an_orphan_that_lost_its_output_pipe_is_re_run_not_adopted(
    attempt: AttemptInfo,
) -> None:
    """With secrets known, output goes through the engine's pipes (contract.md §10); an orphan
    that writes after the engine died is killed by SIGPIPE. It did not finish: re-run it."""
    from attractor_trio.handlers import tool as tool_module

    attempt.stage_dir.mkdir(parents=True)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the engine that read it is gone
    try:
        argv = tool_module._Journal(attempt).argv("echo output")
        orphan = await trio.to_thread.run_sync(
            functools.partial(subprocess.run, argv, stdout=write_end, timeout=BOUND, check=False)
        )
    finally:
        os.close(write_end)
    assert orphan.returncode == -signal.SIGPIPE
    with trio.fail_after(BOUND):
        assert await ToolHandler().adopt(_node("unused"), Context(), GRAPH, attempt) is None


async def test_a_wrapper_that_cannot_claim_fails_loudly(attempt: AttemptInfo) -> None:
    """Someone else's claim (not a revocation) is an error, never a silent success."""
    from attractor_trio.handlers import tool as tool_module

    claim = tool_module._Journal(attempt).claim
    claim.parent.mkdir(parents=True)
    claim.write_text("12345")
    late = _orphan_wrapper(attempt, f"echo ran >> {attempt.workdir / 'ledger.txt'}")
    assert late.returncode == 125
    assert "cannot claim the attempt" in late.stderr
    assert not (attempt.workdir / "ledger.txt").exists()
