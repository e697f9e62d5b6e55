"""Branch logs do not hold a file descriptor each (issue #22).

A fan-out gives every branch its own ``progress.ndjson`` (contract.md §2), and its branches are
alive together; a descriptor per open branch log made a 1,000-branch fan-out fail with
``EMFILE`` under the common limit of 1,024 descriptors. The hub keeps only the most recently
written branch logs open; the others reopen on their next event and go on numbering.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from attractor_trio.events import OPEN_BRANCH_LOGS, EventHub
from attractor_trio.persist.live import LiveWriter
from attractor_trio.persist.progress import ProgressWriter, read_progress

BRANCHES = OPEN_BRANCH_LOGS * 3


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def hub(tmp_path: Path) -> EventHub:
    writer = ProgressWriter(tmp_path / "progress.ndjson", "run-1")
    return EventHub(writer, LiveWriter(tmp_path, "run-1"))


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
