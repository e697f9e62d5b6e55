"""Branch logs do not hold a file descriptor each (issue #22).

A fan-out gives every branch its own ``progress.ndjson`` (contract.md §2), and its branches are
alive together; a descriptor per open branch log made a 1,000-branch fan-out fail with
``EMFILE`` under the common limit of 1,024 descriptors. The hub keeps only the most recently
written branch logs open; the others reopen on their next event and go on numbering.
"""

from __future__ import annotations

import json
import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from attractor_trio import load, run
from attractor_trio.aio.batched import BatchedCall
from attractor_trio.backends.simulate import SimulationBackend
from attractor_trio.core.attempt import current_attempt
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.events import (
    MAX_OPEN_BRANCH_LOGS,
    OPEN_BRANCH_LOGS,
    SET_UP_DESCRIPTORS,
    TRANSIENT_DESCRIPTORS,
    EventHub,
    branch_log_budget,
    create_branch_log,
)
from attractor_trio.persist import status as status_module
from attractor_trio.persist.live import LiveWriter
from attractor_trio.persist.progress import ProgressWriter, read_progress
from attractor_trio.scopes import run as run_scope
from attractor_trio.scopes.engine import RunResult

from .helpers import fan_out_dot, named, run_dot

BRANCHES = OPEN_BRANCH_LOGS * 3


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def hub(tmp_path: Path) -> EventHub:
    """A hub that keeps only the floor of branch logs open (as under a low descriptor limit)."""
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    return EventHub(writer, LiveWriter(tmp_path, "run-1"), open_branch_logs=OPEN_BRANCH_LOGS)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_many_open_branches_hold_a_bounded_number_of_descriptors(
    hub: EventHub, tmp_path: Path
) -> None:
    before = _open_descriptors()
    for index in range(BRANCHES):
        branch = f"par/b{index}"
        hub.open_branch(branch, tmp_path / "parallel" / "par" / f"b{index}" / "progress.ndjson")
        hub.emit("stage_started", branch, node_id=f"b{index}")
    assert _open_descriptors() - before <= OPEN_BRANCH_LOGS
    hub.close()


def test_a_branch_log_reopened_after_release_goes_on_numbering(
    hub: EventHub, tmp_path: Path
) -> None:
    paths = {}
    for index in range(BRANCHES):  # every branch's log is released at least once in between
        branch = f"par/b{index}"
        paths[branch] = tmp_path / f"b{index}" / "progress.ndjson"
        hub.open_branch(branch, paths[branch])
    for round_ in range(3):
        for index in range(BRANCHES):
            hub.emit("stage_heartbeat", f"par/b{index}", node_id=f"b{index}", round=round_)
    for branch, path in paths.items():
        hub.close_branch(branch)
        events = read_progress(path)
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert [e["round"] for e in events] == [0, 1, 2]
        assert {e["branch"] for e in events} == {branch}
    run_log = [json.loads(line) for line in (tmp_path / "progress.ndjson").read_text().splitlines()]
    assert [e["seq"] for e in run_log] == list(range(1, 3 * BRANCHES + 1))
    hub.close()


def test_a_released_writer_reopens_and_a_closed_one_refuses(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    writer.emit("a")
    writer.release()
    writer.release()  # idempotent
    writer.emit("b")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.emit("c")
    assert [e["event"] for e in read_progress(tmp_path / "progress.ndjson")] == ["a", "b"]


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        opened.append(os.fspath(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    return opened


def test_within_the_budget_a_branch_log_is_opened_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A branch writes its log when its stage starts and again when it ends; with more
    branches alive than logs kept open, each reopened its log to finish (issue #22)."""
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    hub = EventHub(writer, LiveWriter(tmp_path, "run-1"), open_branch_logs=BRANCHES)
    opened = _count_opens(monkeypatch)
    for index in range(BRANCHES):  # opened on the write pool, as the engine does
        path = tmp_path / f"b{index}" / "progress.ndjson"
        hub.open_branch(f"par/b{index}", path, create_branch_log(path))
        hub.emit("stage_started", f"par/b{index}", node_id=f"b{index}")
    for index in range(BRANCHES):
        hub.emit("stage_completed", f"par/b{index}", node_id=f"b{index}")
    branch_logs = [path for path in opened if path.endswith("progress.ndjson")]
    assert len(branch_logs) == len(set(branch_logs)) == BRANCHES
    hub.close()


@pytest.mark.parametrize(
    ("soft", "budget"),
    [(128, OPEN_BRANCH_LOGS), (1024, 128), (20_000, 2500), (1 << 20, MAX_OPEN_BRANCH_LOGS)],
)
def test_the_budget_is_an_eighth_of_the_soft_descriptor_limit_within_bounds(
    monkeypatch: pytest.MonkeyPatch, soft: int, budget: int
) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (soft, resource.RLIM_INFINITY))
    assert branch_log_budget(held=20) == budget


@pytest.mark.parametrize(
    ("soft", "held", "budget"),
    [
        (96, 14, 96 - 14 - SET_UP_DESCRIPTORS - TRANSIENT_DESCRIPTORS),
        (64, 14, 64 - 14 - SET_UP_DESCRIPTORS - TRANSIENT_DESCRIPTORS),
        (1024, 1000, 1),  # a host holding nearly all: every event reopens its log
        (1024, 20, 128),
    ],
)
def test_the_budget_leaves_room_for_everything_else_the_process_may_hold(
    monkeypatch: pytest.MonkeyPatch, soft: int, held: int, budget: int
) -> None:
    """Issue #22: under a hard limit of 96 the floor of 64 kept logs, the set-ups' descriptors
    in flight and the run's own were over the limit; the budget is what is left."""
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (soft, soft))
    assert branch_log_budget(held=held) == budget
    assert held + budget + SET_UP_DESCRIPTORS + TRANSIENT_DESCRIPTORS <= soft or budget == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_the_budget_counts_the_descriptors_open_now(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    held = len(os.listdir("/proc/self/fd")) - 1
    soft = held + SET_UP_DESCRIPTORS + TRANSIENT_DESCRIPTORS + 5
    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (soft, soft))
    assert branch_log_budget() == 5


def test_an_unlimited_soft_limit_keeps_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    infinity = resource.RLIM_INFINITY
    monkeypatch.setattr(resource, "getrlimit", lambda _kind: (infinity, infinity))
    assert branch_log_budget() == MAX_OPEN_BRANCH_LOGS


def test_a_branch_log_is_created_with_its_directory_and_kept_if_it_exists(
    tmp_path: Path,
) -> None:
    log = tmp_path / "parallel" / "par" / "b0" / "progress.ndjson"
    fd, size = create_branch_log(log)
    os.close(fd)
    assert (log.read_bytes(), size) == (b"", 0)
    log.write_bytes(b'{"seq": 1}\n')
    fd, size = create_branch_log(log)  # a resumed fan-out's branch: its log goes on
    os.write(fd, b'{"seq": 2}\n')
    os.close(fd)
    assert size == len(b'{"seq": 1}\n')
    assert log.read_bytes() == b'{"seq": 1}\n{"seq": 2}\n'


def test_a_fanout_creates_its_branch_logs_on_the_write_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a directory and a file are a branch's slowest calls on a busy ext4 (300 µs);
    on the trio thread every other branch waited for them (issue #22)."""
    created: list[str] = []
    real = create_branch_log

    def recording(path: Path) -> tuple[int, int]:
        created.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(run_scope, "create_branch_log", recording)
    dot = """digraph f {
        start [shape=Mdiamond]; done [shape=Msquare]
        par [shape=component]; join [shape=tripleoctagon]
        start -> par; par -> a -> join; par -> b -> join; join -> done
    }"""
    root = tmp_path / "run"
    result = trio.run(partial(run, load(dot), logs_root=root, backend=SimulationBackend()))
    assert result.status == "success"
    assert len(created) == 2
    assert all(name.startswith("attractor-trio-write-") for name in created)
    for key in ("a", "b"):
        events = read_progress(root / "parallel" / "par" / key / "progress.ndjson")
        assert events[0]["seq"] == 1 and events[0]["event"] == "stage_started"


def test_a_fanout_branch_log_is_opened_once_on_the_write_pool_not_again_on_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool created the log and closed it, and the trio thread opened it again: each
    system call there hands the GIL to a pool thread and waits to get it back, which made
    that open cost more than the whole job (issue #22). The descriptor is handed over now."""
    opened_by: list[str] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if os.fspath(path).endswith(f"{os.sep}progress.ndjson") and "parallel" in str(path):
            opened_by.append(threading.current_thread().name)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    result = trio.run(
        partial(run, load(fan_out_dot(3)), logs_root=tmp_path / "run", backend=SimulationBackend())
    )
    assert result.status == "success"
    assert len(opened_by) == 3
    assert all(name.startswith("attractor-trio-write-") for name in opened_by)


def test_a_wide_fanout_creates_its_branch_logs_in_a_few_pool_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool job costs the trio thread a hand-over each way, more than creating one log;
    branches starting together hand theirs over together (issue #22)."""
    batchers: list[BatchedCall[Any, Any]] = []

    class Recording(BatchedCall[Any, Any]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            batchers.append(self)

    monkeypatch.setattr(run_scope, "BatchedCall", Recording)
    root = tmp_path / "run"
    result = trio.run(
        partial(run, load(fan_out_dot(64)), logs_root=root, backend=SimulationBackend())
    )
    assert result.status == "success"
    [batcher] = batchers
    # Two alone, then full jobs (the last one or two shared out): a job per branch before.
    assert batcher.job_count <= 2 + -(-62 // batcher.chunk) + 1 < 64
    for index in range(64):
        events = read_progress(root / "parallel" / "par" / f"b{index}" / "progress.ndjson")
        assert events[0]["seq"] == 1 and events[0]["event"] == "stage_started"


def test_a_fanout_branch_makes_its_first_stage_dir_on_the_write_pool_and_its_attempt_owns_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mkdir`` is a starting branch's slowest call on a busy disk: the job that makes its log
    makes its first stage's dir too, and the attempt takes that dir as one its own ``mkdir``
    made — nothing stale can be in it, so its ``status.json`` is not unlinked first, while the
    work directory's two fallbacks still are (contract.md §3)."""
    made: list[tuple[str, str]] = []
    unlinked: list[tuple[str, str]] = []  # paths set out to be removed, and by which thread
    real_mkdir, real_access = os.mkdir, status_module._access

    def recording_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        made.append((os.fspath(path), threading.current_thread().name))
        real_mkdir(path, *args, **kwargs)

    def recording_access(path: Any, mode: int, **kwargs: Any) -> bool:
        if kwargs.get("follow_symlinks") is False:  # a removal's probe (persist/status.py)
            unlinked.append((os.fspath(path), threading.current_thread().name))
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "mkdir", recording_mkdir)
    monkeypatch.setattr(status_module, "_access", recording_access)
    root = tmp_path / "run"
    result = _simulated_fan_out(3, root, workdir=tmp_path)
    assert result.status == "success"
    for index in range(3):
        stage_dir = str(root / "parallel" / "par" / f"b{index}" / f"b{index}")
        [(_, thread)] = [(path, name) for path, name in made if path == stage_dir]
        assert thread.startswith("attractor-trio-write-")
        assert f"{stage_dir}/status.json" not in [path for path, _ in unlinked]
        assert (Path(stage_dir) / "prompt.md").is_file()
    # The work directory's fallbacks: removed on the write pool by the set-ups, at least once
    # and at most once per branch (``test_a_wide_fanout_removes_the_work_directorys_...``).
    swept = [thread for path, thread in unlinked if path == str(tmp_path / "status.json")]
    assert 1 <= len(swept) <= 3
    assert all(thread.startswith("attractor-trio-write-") for thread in swept)


def test_a_wide_fanout_removes_the_work_directorys_fallbacks_a_few_times_off_the_trio_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branches share one work directory: each first attempt unlinked its two fallbacks on
    the trio thread (128 calls for 64 branches). The set-ups remove them on the write pool,
    once per removal that began after a branch asked (``persist/sweep.py``) — a few times —
    and a stale file planted before the fan-out still decides no branch (contract.md §3)."""
    unlinked: list[tuple[str, str]] = []
    real_unlink = os.unlink

    def recording_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        unlinked.append((os.fspath(path), threading.current_thread().name))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", recording_unlink)
    stale = '{"outcome": "fail", "failure_reason": "stale, from an earlier run"}'
    (tmp_path / "status.json").write_text(stale)
    (tmp_path / ".attractor").mkdir()
    (tmp_path / ".attractor" / "status.json").write_text(stale)
    root = tmp_path / "run"
    result = _simulated_fan_out(64, root, workdir=tmp_path)
    assert result.status == "success", result.failure_reason
    decisions = [e["source"] for e in named(root, "status_ingestion_decision")]
    assert decisions == ["none"] * 64
    for fallback in (tmp_path / "status.json", tmp_path / ".attractor" / "status.json"):
        threads = [thread for path, thread in unlinked if path == str(fallback)]
        assert 1 <= len(threads) < 64 // 4, len(threads)
        assert all(thread.startswith("attractor-trio-write-") for thread in threads)
        assert not fallback.exists()


class RetriesLeavingAFallback:
    """A branch's attempt 1 asks for a retry after leaving a ``fail`` in the work directory's
    ``status.json`` (its own outcome decides it: the file is not ingested); attempt 2 writes
    nothing, so only that leftover could make it fail."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, node: Any, prompt: str, context: Any) -> Any:
        attempt = current_attempt()
        assert attempt is not None
        self.calls += 1
        if self.calls == 1:
            (attempt.workdir / "status.json").write_text('{"outcome": "fail"}')
            return Outcome(StageStatus.RETRY, failure_reason="try again")
        return "done"


async def test_a_branch_retry_clears_the_work_directory_itself(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The set-up's removal serves a branch's first attempt only: a retry of that stage
    removes what attempt 1 left in the work directory (contract.md §3 rule 1)."""
    root = tmp_path / "run"
    dot = fan_out_dot(1).replace('prompt="p"', 'prompt="p", max_retries=1')
    result = await run_dot(dot, root, backend=RetriesLeavingAFallback())
    assert result.status == "success", result.failure_reason
    decisions = [e["source"] for e in named(root, "status_ingestion_decision")]
    assert decisions == ["none"]


async def test_a_branch_stage_dir_that_exists_already_is_listed_and_cleared_as_before(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A stage dir the set-up did not make (here: left by an earlier run) may hold a stale
    ``status.json``: the attempt removes it instead of letting it decide the stage."""
    root = tmp_path / "run"
    stale = root / "parallel" / "par" / "b1" / "b1" / "status.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"outcome": "fail", "failure_reason": "stale, from an earlier run"}')
    result = await run_dot(fan_out_dot(2), root)
    assert result.status == "success", result.failure_reason
    decisions = {e["node_id"]: e["source"] for e in named(root, "status_ingestion_decision")}
    assert decisions == {"b0": "none", "b1": "none"}


async def test_a_run_cancelled_before_its_branches_first_stages_leaves_no_stage_dir(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set-up makes a branch's first stage dir ahead of the stage; a branch cancelled
    before that stage starts removes it again, so a cancelled run still leaves no stage dir
    that no attempt used."""
    handle = run_scope.RunHandle()
    real = run_scope._set_up_branch

    def set_up_then_cancel(paths: Any) -> Any:
        done = real(paths)  # inline under the virtual clock, on the trio thread
        handle.cancel("stop before the first stage")
        return done

    monkeypatch.setattr(
        run_scope, "BatchedCall", lambda fn, **kwargs: BatchedCall(set_up_then_cancel, **kwargs)
    )
    root = tmp_path / "run"
    result = await run_dot(fan_out_dot(3), root, handle=handle)
    assert result.status == "canceled"
    for index in range(3):
        branch_dir = root / "parallel" / "par" / f"b{index}"
        assert (branch_dir / "progress.ndjson").is_file()
        assert not (branch_dir / f"b{index}").exists()


def _simulated_fan_out(branches: int, root: Path, *, workdir: Path) -> RunResult:
    """A ``branches``-wide fan-out of simulated stages in ``root``, working in ``workdir``."""
    return trio.run(
        partial(
            run,
            load(fan_out_dot(branches)),
            logs_root=root,
            backend=SimulationBackend(),
            workdir=workdir,
        )
    )
