"""``status`` (summary, ``--json``) and ``status --follow`` (contract.md §1, §4, §9)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import click
import pytest
from click.testing import CliRunner

from attractor_trio.cli.observe import (
    FollowEnd,
    ProgressTail,
    follow_run,
    quiet_verdict,
    register,
    split_complete_lines,
)
from attractor_trio.cli.stop import OwnerState
from attractor_trio.observe.status import exit_code_for, fold_events, read_report, read_status
from attractor_trio.persist.atomic import utc_timestamp
from attractor_trio.persist.final import FinalRecord, write_final
from attractor_trio.persist.manifest import write_manifest

from .helpers import run_dot

CONTRACT_KEYS = {
    "run_id",
    "state",
    "current_node",
    "active_attempts",
    "failure_reason",
    "failure_class",
    "logs_root",
}

FAN_OUT = """digraph fan { graph [goal="g"]
  start [shape=Mdiamond]; exit [shape=Msquare]
  fan [shape=component]; join [shape=tripleoctagon]
  a [prompt="x"]; b [prompt="y"]
  start -> fan; fan -> a; fan -> b; a -> join; b -> join; join -> exit
}"""

FLAKY = """digraph flaky {
  start [shape=Mdiamond]; exit [shape=Msquare]
  work [prompt="w", max_retries=1, retry_policy="none"]
  start -> work -> exit
}"""


def invoke(*args: str) -> tuple[int, str, str]:
    group = click.Group("t")
    register(group)
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def ev(seq: int, event: str, branch: str = "", **fields: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": "2026-01-01T00:00:00.000Z",
        "run_id": "r",
        "event": event,
        "branch": branch,
        **fields,
    }


def line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


# --- the fold and the exit codes (pure) ---------------------------------------------------


def test_fold_tracks_current_stage_active_attempts_retries_and_failures() -> None:
    view = fold_events(
        [
            ev(1, "stage_started", node_id="work"),
            ev(2, "stage_attempt_started", node_id="work", attempt=1, max_attempts=3,
               attempt_id="w1"),
            ev(3, "stage_attempt_finished", node_id="work", attempt_id="w1", status="fail",
               failure_reason="boom", failure_class="transient_infra"),
            ev(4, "stage_retrying", node_id="work", attempt=2, delay_s=0.2),
            ev(5, "stage_attempt_started", node_id="work", attempt=2, max_attempts=3,
               attempt_id="w2"),
            ev(6, "stage_started", "fan/a", node_id="a"),
        ]
    )  # fmt: skip
    assert view.current_node == "work"  # branch stages do not move the main traversal
    assert [(a.node_id, a.attempt, a.max_attempts) for a in view.active] == [("work", 2, 3)]
    assert view.retries == 1
    assert view.last_failure is not None
    assert (view.last_failure.failure_reason, view.last_failure.failure_class) == (
        "boom",
        "transient_infra",
    )
    assert view.node_status == {"work": "running"}
    assert view.terminal is None


def test_fold_reports_branches_and_node_statuses_including_cancellation() -> None:
    view = fold_events(
        [
            ev(1, "parallel_branch_started", node_id="fan", branch_key="a", index=0),
            ev(2, "parallel_branch_started", node_id="fan", branch_key="b", index=1),
            ev(3, "stage_attempt_started", "fan/a", node_id="a", attempt=1, max_attempts=1,
               attempt_id="a1"),
            ev(4, "stage_attempt_finished", "fan/a", node_id="a", attempt_id="a1",
               status="success", failure_reason="", failure_class=""),
            ev(5, "parallel_branch_completed", node_id="fan", branch_key="a", index=0,
               status="success", duration_s=1.5),
            ev(6, "stage_attempt_started", "fan/b", node_id="b", attempt=1, max_attempts=1,
               attempt_id="b1"),
            ev(7, "stage_attempt_finished", "fan/b", node_id="b", attempt_id="b1",
               status="fail", failure_reason="canceled: SIGINT", failure_class="canceled"),
            ev(8, "stage_completed", "fan/b", node_id="b", status="fail", duration_s=1),
            ev(9, "stage_completed", node_id="p", status="partial_success", duration_s=1),
        ]
    )  # fmt: skip
    rows = {row.path: (row.status, row.duration_s) for row in view.branches}
    assert rows == {"fan/a": ("success", 1.5), "fan/b": ("running", None)}
    assert view.node_status == {"a": "success", "b": "canceled", "p": "partial_success"}


@pytest.mark.parametrize(
    ("status", "exit_path", "reason", "code"),
    [
        ("success", "completed", "", 0),
        ("fail", "stage_failed", "tests failed", 1),
        ("fail", "watchdog", "watchdog: no progress (stall timeout)", 1),
        ("canceled", "canceled", "run canceled: SIGINT", 130),
        ("canceled", "canceled", "run canceled: SIGTERM", 143),
        ("canceled", "canceled", "run canceled: stop", 143),
        ("canceled", "canceled", "run canceled: SIGHUP", 129),
        ("fail", "internal_error", "bug", 70),
    ],
)
def test_exit_codes_match_run(status: str, exit_path: str, reason: str, code: int) -> None:
    assert exit_code_for(status, exit_path, reason) == code


# --- status of finished runs --------------------------------------------------------------


async def test_status_summary_of_a_finished_fan_out_run(tmp_path: Path) -> None:
    root = tmp_path / "run"
    result = await run_dot(FAN_OUT, root)
    assert result.status == "success"
    code, out, _ = invoke("status", str(root))
    assert code == 0
    assert f"run:      {result.run_id} (fan)" in out
    assert "state:    success (completed)" in out
    assert "retries:  0" in out
    assert "branches:" in out
    assert [ln.split()[:2] for ln in out.splitlines() if ln.startswith("  fan/")] == [
        ["fan/a", "success"],
        ["fan/b", "success"],
    ]
    assert f"logs:     {root}" in out
    assert "reason:" not in out and "last failure" not in out


async def test_status_summary_of_a_failed_run_names_retries_and_the_failure(
    tmp_path: Path,
) -> None:
    root = tmp_path / "run"
    steps = {
        "work": [
            {"outcome": "fail", "failure_reason": "flaky network", "failure_class": "transient_infra"},
            {"outcome": "fail", "failure_reason": "tests failed: 3 errors", "failure_class": "deterministic"},
        ]
    }  # fmt: skip
    result = await run_dot(FLAKY, root, steps=steps)
    assert result.status == "fail"
    code, out, _ = invoke("status", str(root))
    assert code == 0
    assert "state:    fail (stage_failed)" in out
    assert "retries:  1" in out
    assert "reason:   tests failed: 3 errors [deterministic] (at work)" in out
    assert "last failure" not in out  # the same failure is not repeated
    assert "elapsed:  " in out and "(started " in out


async def test_status_json_keeps_the_contract_object(tmp_path: Path) -> None:
    root = tmp_path / "run"
    steps = {"work": [{"outcome": "fail", "failure_reason": "nope"}]}
    result = await run_dot(FLAKY, root, steps=steps)
    code, out, _ = invoke("status", str(root), "--json")
    status = json.loads(out)
    assert code == 0 and set(status) >= CONTRACT_KEYS
    assert status["run_id"] == result.run_id
    assert status["state"] == "fail"
    assert status["current_node"] == "work"
    assert status["active_attempts"] == []
    assert status["failure_reason"] == "nope"
    assert status["failure_class"] == result.failure_class
    assert status["logs_root"] == str(root)
    assert status["retries"] == 1 and status["name"] == "flaky"
    assert status["last_failure"]["node_id"] == "work"
    assert read_status(root)["run_id"] == result.run_id


def _fake_running_run(root: Path, pid: int, events: list[dict[str, Any]]) -> None:
    """A run directory as a live (or dead) owner leaves it: lock, manifest, live.json, log."""
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(
        root, run_id="r", name="p", label="", goal="", dot_path=None,
        dot_source="digraph p {}", argv=[], start_time="2026-01-01T00:00:00.000Z",
    )  # fmt: skip
    lock = {"pid": pid, "run_id": "r", "acquired_at": utc_timestamp()}
    (root / "run.lock.json").write_text(json.dumps(lock))
    live: dict[str, Any] = {"run_id": "r", "state": "running", "current_node": "work", "active_attempts": [],
            "last_event": None, "updated_at": "2026-01-01T00:01:00.000Z"}  # fmt: skip
    (root / "live.json").write_text(json.dumps(live))
    (root / "progress.ndjson").write_bytes(b"".join(line(e) for e in events))


STARTED = [
    ev(1, "pipeline_started", name="p", goal="", logs_root="x", resumed=False),
    ev(2, "stage_started", node_id="work", handler="tool", index=1),
    ev(3, "stage_attempt_started", node_id="work", attempt=1, max_attempts=2, attempt_id="w1"),
]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_status_of_a_running_run_shows_the_active_attempt(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _fake_running_run(root, os.getpid(), STARTED)
    now = datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    report = read_report(root, now=now)
    assert report.state == "running" and report.owner_alive is True
    assert report.elapsed_s == 120.0
    assert [a.to_json()["node_id"] for a in report.active] == ["work"]
    code, out, _ = invoke("status", str(root))
    assert code == 0 and "state:    running" in out
    assert "  work: attempt 1/2, running " in out


def test_status_of_a_dead_run_says_interrupted_and_how_to_resume(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _fake_running_run(root, dead_pid(), STARTED)
    report = read_report(root, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert report.interrupted and report.elapsed_s == 60.0  # up to its last sign of life
    code, out, _ = invoke("status", str(root))
    assert code == 0 and "interrupted" in out and f"attractor-trio resume {root}" in out
    code, out, _ = invoke("status", str(root), "--json")
    status = json.loads(out)
    assert status["state"] == "interrupted" and status["owner_alive"] is False
    assert status["interrupted"] is True


def test_status_of_a_non_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = invoke("status", str(tmp_path))
    assert code == 2 and "not a run directory" in err and "Traceback" not in err


def test_status_with_a_corrupt_final_json_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _fake_running_run(root, dead_pid(), STARTED)
    (root / "final.json").write_text('{"run_id": ')
    code, _, err = invoke("status", str(root))
    assert code == 2 and "final.json" in err and "Traceback" not in err


# --- tailing the log ------------------------------------------------------------------------


def test_split_keeps_the_unterminated_rest() -> None:
    assert split_complete_lines(b'{"a": 1}\n{"b"') == ([b'{"a": 1}'], b'{"b"')
    assert split_complete_lines(b"") == ([], b"")
    assert split_complete_lines(b"x\n") == ([b"x"], b"")


def test_tail_consumes_only_complete_lines_and_completes_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "progress.ndjson"
    tail = ProgressTail(path)
    assert tail.poll() == []  # no file yet
    first, second = line(ev(1, "a")), line(ev(2, "b"))
    path.write_bytes(first + second[:10])
    assert [e["seq"] for e in tail.poll()] == [1]
    assert tail.poll() == []
    with open(path, "ab") as f:
        f.write(second[10:])
    assert [e["seq"] for e in tail.poll()] == [2]
    assert tail.poll() == []


def test_tail_survives_a_resume_cutting_off_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "progress.ndjson"
    first = line(ev(1, "a"))
    path.write_bytes(first + b'{"seq": 2, "ev')  # the owner was killed mid-write
    tail = ProgressTail(path)
    assert [e["seq"] for e in tail.poll()] == [1]
    path.write_bytes(first)  # resume truncates the torn line ...
    assert tail.poll() == []
    with open(path, "ab") as f:  # ... and appends from seq 2
        f.write(line(ev(2, "b")) + line(ev(3, "c")))
    assert [e["seq"] for e in tail.poll()] == [2, 3]


def test_tail_reports_a_complete_line_that_is_not_an_event(tmp_path: Path) -> None:
    path = tmp_path / "progress.ndjson"
    path.write_bytes(line(ev(1, "a")) + b"garbage\n" + line(ev(2, "b")))
    warnings: list[str] = []
    tail = ProgressTail(path, warnings.append)
    assert [e["seq"] for e in tail.poll()] == [1, 2]
    assert warnings == [f"{path}:2:1: warning: skipped a line that is not a JSON event"]


def test_follow_waits_for_the_rest_of_a_torn_terminal_line(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _fake_running_run(root, os.getpid(), STARTED)
    terminal = line(
        ev(4, "pipeline_failed", status="canceled", failure_reason="run canceled: SIGINT",
           failure_class="canceled", exit_path="canceled", duration_s=1.0)
    )  # fmt: skip
    actions: list[Callable[[], None]] = [
        lambda: _append(root, terminal[:25]),
        lambda: None,  # a poll that sees only the same partial line
        lambda: _append(root, terminal[25:]),
    ]
    steps = iter(actions)
    seen: list[dict[str, Any]] = []
    end = follow_run(root, seen.append, sleep=lambda _: next(steps)())
    assert end == FollowEnd(130)
    assert [e["seq"] for e in seen] == [1, 2, 3, 4]
    assert next(steps, None) is None, "follow must have waited for the rest of the line"


def _append(root: Path, data: bytes) -> None:
    with open(root / "progress.ndjson", "ab") as f:
        f.write(data)


# --- when the owner is gone -----------------------------------------------------------------


def test_follow_stops_with_exit_1_when_the_owner_died(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _fake_running_run(root, dead_pid(), STARTED)
    code, out, err = invoke("status", str(root), "--follow")
    assert code == 1
    assert "▶ work attempt 1/2" in out  # what was logged is still shown
    assert "died" in err and f"attractor-trio resume {root}" in err


def test_follow_uses_final_json_when_the_terminal_event_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _fake_running_run(root, dead_pid(), STARTED)
    write_final(
        root,
        FinalRecord(
            run_id="r", status="canceled", exit_path="canceled", completed_nodes=[],
            start_time="2026-01-01T00:00:00.000Z", end_time="2026-01-01T00:00:01.000Z",
            duration_s=1, failure_reason="run canceled: SIGTERM", failure_class="canceled",
        ),
    )  # fmt: skip
    code, _, err = invoke("status", str(root), "--follow")
    assert code == 143 and "no terminal event" in err


def test_quiet_verdict_waits_for_a_starting_run_then_gives_up(tmp_path: Path) -> None:
    assert quiet_verdict(tmp_path, OwnerState.RUNNING, None, 3, 99.0) is None
    assert quiet_verdict(tmp_path, None, None, 0, 1.0, startup_grace_s=10) is None
    late = quiet_verdict(tmp_path, None, None, 0, 11.0, startup_grace_s=10)
    assert late is not None and late.exit_code == 1 and "no run.lock.json" in late.message
    gone = quiet_verdict(tmp_path, OwnerState.RECYCLED, None, 0, 0.0)
    assert gone is not None and gone.exit_code == 1 and "process is gone" in gone.message


async def test_follow_of_a_finished_run_replays_it_and_exits_like_run(tmp_path: Path) -> None:
    root = tmp_path / "run"
    await run_dot(FLAKY, root, steps={"work": [{"outcome": "fail", "failure_reason": "nope"}]})
    code, out, _ = invoke("status", str(root), "--follow")
    assert code == 1
    lines = out.splitlines()
    assert "pipeline flaky started" in lines[0]
    assert "work: retrying in" in out
    assert "pipeline fail after" in lines[-1] and "nope" in lines[-1]
    code, out, _ = invoke("status", str(root), "--follow", "--json")
    events = [json.loads(text) for text in out.splitlines()]
    assert code == 1 and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "pipeline_failed"


# --- following a live run in another process ------------------------------------------------

FOLLOW = [
    sys.executable,
    "-c",
    "import sys; from attractor_trio.cli.observe import status_command; "
    "status_command(sys.argv[1:], prog_name='attractor-trio status')",
]


class Lines:
    """Lines of a child's stdout, read by a thread so every wait can be bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for text in stream:
            self._queue.put(text.rstrip("\n"))
        self._queue.put(None)

    def until(self, predicate: Callable[[str], bool], timeout: float = 30) -> list[str]:
        """Lines up to and including the first that matches (EOF or timeout fails)."""
        got: list[str] = []
        while True:
            text = self._queue.get(timeout=timeout)
            assert text is not None, f"stream ended before the expected line; got {got}"
            got.append(text)
            if predicate(text):
                return got

    def rest(self, timeout: float = 30) -> list[str]:
        got: list[str] = []
        while (text := self._queue.get(timeout=timeout)) is not None:
            got.append(text)
        return got


def _gated_pipeline(tmp_path: Path) -> tuple[Path, Path]:
    """A run whose tool stage waits until the test creates the gate file."""
    gate = tmp_path / "gate"
    dot = tmp_path / "p.dot"
    dot.write_text(
        "digraph gated { start [shape=Mdiamond]; exit [shape=Msquare]\n"
        f' t [shape=parallelogram, tool_command="while [ ! -e {gate} ]; do sleep 0.05; done"]\n'
        " start -> t -> exit }"
    )
    return dot, gate


def _start(tmp_path: Path, dot: Path, root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "attractor_trio", "run", str(dot), "--logs-root", str(root),
         "--quiet", "--kill-grace", "1s"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(lambda: (root / "progress.ndjson").exists() or proc.poll() is not None)
    assert proc.poll() is None, f"the run ended early: {proc.stderr.read() if proc.stderr else ''}"
    return proc


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = datetime.now() + timedelta(seconds=timeout)
    while not condition():
        assert datetime.now() < deadline, "timed out"
        threading.Event().wait(0.02)


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_follow_streams_a_live_run_and_exits_0_when_it_succeeds(
    tmp_path: Path, reap: list[subprocess.Popen[str]]
) -> None:
    dot, gate = _gated_pipeline(tmp_path)
    root = tmp_path / "run"
    run = _start(tmp_path, dot, root)
    reap.append(run)
    follow = subprocess.Popen(
        [*FOLLOW, str(root), "--follow", "--json"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reap.append(follow)
    assert follow.stdout is not None
    lines = Lines(follow.stdout)
    early = lines.until(lambda text: '"stage_attempt_started"' in text and '"t"' in text)
    # The stage is still blocked on the gate: these events came while the run was running.
    assert run.poll() is None and follow.poll() is None
    assert not (root / "final.json").exists()
    gate.touch()
    late = lines.rest()
    assert follow.wait(timeout=30) == 0
    assert run.wait(timeout=30) == 0
    events = [json.loads(text) for text in early + late]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "pipeline_started"
    assert events[-1]["event"] == "pipeline_completed"
    finished_late = [json.loads(text)["event"] for text in late]
    assert "stage_attempt_finished" in finished_late


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_follow_exits_like_a_canceled_run(
    tmp_path: Path, reap: list[subprocess.Popen[str]], sig: signal.Signals, code: int
) -> None:
    dot, _gate = _gated_pipeline(tmp_path)
    root = tmp_path / "run"
    run = _start(tmp_path, dot, root)
    reap.append(run)
    follow = subprocess.Popen(
        [*FOLLOW, str(root), "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    reap.append(follow)
    assert follow.stdout is not None
    lines = Lines(follow.stdout)
    lines.until(lambda text: "▶ t attempt 1/1" in text)
    run.send_signal(sig)
    rest = lines.rest()
    assert follow.wait(timeout=30) == code
    assert run.wait(timeout=30) == code
    assert "pipeline canceled" in rest[-1]


def test_follow_gives_a_run_without_lock_or_events_a_startup_grace(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()  # `run` creates the directory a moment before it takes the lock
    ticks = iter(range(100))
    naps: list[float] = []
    end = follow_run(
        root, print, startup_grace_s=3, sleep=naps.append, clock=lambda: float(next(ticks))
    )
    assert end.exit_code == 1 and "no run.lock.json" in end.message
    assert naps == [0.2, 0.2]  # polled at t=1 and t=2, gave up at t=3


def test_status_of_a_retrying_run_shows_the_last_failure_and_the_branch_table(
    tmp_path: Path,
) -> None:
    root = tmp_path / "run"
    events = [
        *STARTED,
        ev(4, "stage_attempt_finished", node_id="work", attempt_id="w1", status="fail",
           failure_reason="flaky network", failure_class="transient_infra"),
        ev(5, "stage_retrying", node_id="work", attempt=2, delay_s=0.2),
        ev(6, "stage_started", node_id="fan", handler="parallel", index=2),
        ev(7, "parallel_branch_started", node_id="fan", branch_key="a", index=0),
        ev(8, "parallel_branch_started", node_id="fan", branch_key="bb", index=1),
        ev(9, "parallel_branch_completed", node_id="fan", branch_key="bb", index=1,
           status="fail", duration_s=75.0),
    ]  # fmt: skip
    _fake_running_run(root, os.getpid(), events)
    code, out, _ = invoke("status", str(root))
    assert code == 0
    assert "stage:    fan\n" in out and "retries:  1" in out
    assert "last failure: work: flaky network [transient_infra]" in out
    assert "reason:" not in out  # the run itself has not failed
    branch_rows = [ln.split() for ln in out.splitlines() if ln.startswith("  fan/")]
    assert branch_rows[0][:2] == ["fan/a", "running"]
    assert branch_rows[1] == ["fan/bb", "fail", "1m", "15s"]
