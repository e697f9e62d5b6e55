"""An open that meets EMFILE takes a kept branch log's descriptor and tries again (issue #22).

The hub's budget of kept branch logs leaves room for everything else the process holds, but it
is an estimate; a stage must not fail because a cache of open logs took the descriptor its
``prompt.md`` needed. These tests hold the process to a real, tiny soft limit (the lowest free
descriptor number: every new open fails with EMFILE until one below it is closed), restored
afterwards: deterministic, no timing.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from attractor_trio.events import EventHub, create_branch_log
from attractor_trio.persist import descriptors
from attractor_trio.persist.atomic import write_text_atomic
from attractor_trio.persist.live import LiveWriter
from attractor_trio.persist.progress import ProgressWriter, read_progress
from attractor_trio.persist.syncfs import Pending, finish_alone

KEPT = 6


@contextmanager
def _no_descriptor_left() -> Iterator[None]:
    """The soft limit set to the lowest free descriptor number, then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def only_this_tests_holders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hubs of earlier tests that were never closed (still registered until collected) must
    not give their descriptors back here."""
    monkeypatch.setattr(descriptors, "_holders", weakref.WeakSet())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[EventHub]:
    """A hub keeping KEPT branch logs open, each with one event written."""
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    hub = EventHub(writer, LiveWriter(tmp_path, "run-1"), open_branch_logs=KEPT)
    for index in range(KEPT):
        path = tmp_path / "parallel" / "par" / f"b{index}" / "progress.ndjson"
        hub.open_branch(f"par/b{index}", path, create_branch_log(path))
        hub.emit("stage_started", f"par/b{index}", node_id=f"b{index}")
    yield hub
    hub.close()


def _branch_seqs(tmp_path: Path, index: int) -> list[int]:
    path = tmp_path / "parallel" / "par" / f"b{index}" / "progress.ndjson"
    return [event["seq"] for event in read_progress(path)]


def test_a_stage_file_written_at_the_limit_takes_a_kept_branch_logs_descriptor(
    hub: EventHub, tmp_path: Path
) -> None:
    """The EMFILE seen in a CPU-starved fan-out: ``prompt.md`` written in the start half."""
    stage_dir = tmp_path / "parallel" / "par" / "b0" / "b0"
    stage_dir.mkdir()
    with _no_descriptor_left():
        write_text_atomic(stage_dir / "prompt.md", "part 0", durable=False, fresh=True)
        write_text_atomic(stage_dir / "response.md", "done", durable=False)
    assert (stage_dir / "prompt.md").read_text() == "part 0"
    assert (stage_dir / "response.md").read_text() == "done"
    # One descriptor given back (the first write closed it again, so the second reused it),
    # and the hub keeps one log fewer from now on.
    assert hub.open_branch_logs == KEPT - 1
    assert sum(writer._fd is None for writer in hub._open_branch_logs.values()) == 1


def test_a_branch_log_given_back_reopens_and_goes_on_numbering(
    hub: EventHub, tmp_path: Path
) -> None:
    """More branches than kept logs, then every branch writes again at the limit: each log
    released by the budget reopens by taking another one's descriptor."""
    branches = KEPT + 3
    for index in range(KEPT, branches):  # the budget releases the first three logs
        path = tmp_path / "parallel" / "par" / f"b{index}" / "progress.ndjson"
        hub.open_branch(f"par/b{index}", path, create_branch_log(path))
        hub.emit("stage_started", f"par/b{index}", node_id=f"b{index}")
    with _no_descriptor_left():
        for round_ in range(2):
            for index in range(branches):
                hub.emit("stage_heartbeat", f"par/b{index}", node_id=f"b{index}", round=round_)
    for index in range(branches):
        assert _branch_seqs(tmp_path, index) == [1, 2, 3]
    run_log = read_progress(tmp_path / "progress.ndjson")
    assert [event["seq"] for event in run_log] == list(range(1, 3 * branches + 1))


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda path: _branch_log_set_up(path), id="branch-log-set-up"),
        pytest.param(lambda path: _durable_on_its_own(path), id="status-json"),
    ],
)
def test_a_write_pool_thread_at_the_limit_takes_a_kept_descriptor_too(
    hub: EventHub, tmp_path: Path, write: Callable[[Path], Path]
) -> None:
    """The write pool's opens (a branch's log created, a durable ``status.json`` staged and
    committed) run on other threads; the hub gives a descriptor back to them as well."""
    target = tmp_path / "parallel" / "par" / "b9" / "progress.ndjson"
    target.parent.mkdir(parents=True)
    failures: list[BaseException] = []
    results: list[Path] = []

    def on_a_thread() -> None:
        try:
            results.append(write(target))
        except BaseException as exc:
            failures.append(exc)

    with _no_descriptor_left():
        thread = threading.Thread(target=on_a_thread)
        thread.start()
        thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    assert results[0].exists()


def _branch_log_set_up(path: Path) -> Path:
    descriptor, _ = create_branch_log(path)
    os.close(descriptor)  # the hub would have adopted it
    return path


def _durable_on_its_own(path: Path) -> Path:
    target = path.with_name("status.json")
    item = Pending(os.fspath(target), b"{}")
    item.stage()
    finish_alone(item)
    if item.error is not None:
        raise item.error
    return target


def test_a_busy_branch_log_is_skipped_and_another_gives_its_descriptor(hub: EventHub) -> None:
    """The writer whose own reopen asked for a descriptor holds its lock: it must not wait
    for itself; the next kept log gives its descriptor instead."""
    kept = list(hub._open_branch_logs.values())
    with kept[0]._lock:
        assert hub.give_back_descriptor()
    assert kept[0]._fd is not None and kept[1]._fd is None


def test_with_nothing_to_give_back_the_emfile_is_raised(tmp_path: Path) -> None:
    """No hub keeps a log (or all are given back already): the write fails as it did, with
    the system's error, after one attempt per descriptor given back."""
    with _no_descriptor_left(), pytest.raises(OSError) as raised:
        write_text_atomic(tmp_path / "prompt.md", "x", durable=False)
    assert raised.value.errno == errno.EMFILE
    assert not (tmp_path / "prompt.md").exists()


def test_other_errors_are_raised_at_once(hub: EventHub, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_text_atomic(tmp_path / "missing" / "prompt.md", "x", durable=False)
    assert hub.open_branch_logs == KEPT  # nothing given back for it


def test_a_closed_hub_gives_nothing_back(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    hub = EventHub(writer, LiveWriter(tmp_path, "run-1"), open_branch_logs=KEPT)
    path = tmp_path / "b0" / "progress.ndjson"
    hub.open_branch("par/b0", path)
    assert hub in list(descriptors._holders)
    hub.close()
    assert hub not in list(descriptors._holders)
