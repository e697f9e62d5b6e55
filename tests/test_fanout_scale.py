"""Wide fan-outs stay within the process's descriptors (issue #22).

A fan-out keeps every branch alive at once when its stages are slow. A 1,000-branch fan-out
failed with ``EMFILE`` under the common soft limit of 1,024 descriptors: each branch held its
``progress.ndjson`` open, and each running tool stage its pidfds. Real processes on the real
clock: the CLI runs with a lowered ``RLIMIT_NOFILE`` (bounded waits, ``slow``).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BRANCHES = 300
#: Well under BRANCHES: a descriptor held per live branch cannot fit.
DESCRIPTOR_LIMIT = 128
#: Lower than the old floor of 64 kept branch logs plus what else a run holds: on ``main``
#: before the budget counted every holder, this limit failed with EMFILE every time.
TIGHT_DESCRIPTOR_LIMIT = 64


def _wide_fanout(branches: int, stage: str = "shape=box") -> str:
    lines = [
        "digraph Wide {",
        "  start [shape=Mdiamond]; done [shape=Msquare]",
        f"  par [shape=component, max_parallel={branches}]",
        "  join [shape=tripleoctagon]",
        "  start -> par; join -> done",
    ]
    lines += [f'  b{i:04d} [{stage}, prompt="part {i}"]' for i in range(branches)]
    lines += [f"  par -> b{i:04d} -> join" for i in range(branches)]
    return "\n".join([*lines, "}"]) + "\n"


def _limit_descriptors_hard(limit: int = DESCRIPTOR_LIMIT) -> Callable[[], None]:
    """Soft and hard limit: the run cannot raise it, so what it holds must fit."""

    def limit_them() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return limit_them


def _limit_descriptors_soft() -> None:
    """The usual shape: a low soft limit under a high hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, hard))


def _run(tmp_path: Path, dot: str, limit: Callable[[], None], *args: str) -> Path:
    pipeline = tmp_path / "wide.dot"
    pipeline.write_text(dot)
    logs = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "attractor_trio", "run", str(pipeline), "--logs-root", str(logs),
         *args],
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=limit,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((logs / "final.json").read_text())["status"] == "success"
    return logs


def _most_alive_at_once(events: list[dict[str, Any]]) -> int:
    """The most branch stages running at once, in the run log's order (by ``seq``)."""
    alive = most = 0
    for event in events:
        if event["branch"] and event["event"] == "stage_attempt_started":
            alive += 1
            most = max(most, alive)
        elif event["branch"] and event["event"] == "stage_attempt_finished":
            alive -= 1
    return most


@pytest.mark.slow
@pytest.mark.parametrize("limit", [DESCRIPTOR_LIMIT, TIGHT_DESCRIPTOR_LIMIT])
def test_a_fanout_wider_than_the_descriptor_limit_completes(tmp_path: Path, limit: int) -> None:
    """The property, not a speed: more branches alive at once than the process may hold
    descriptors, and the run succeeds. The kept branch logs leave room for everything else
    the run holds (events.branch_log_budget), so this holds however slowly the trio thread
    gets to adopt the set-ups' descriptors (a CPU-starved run failed here with EMFILE)."""
    script = tmp_path / "sim.json"
    # Every branch works long enough for many of them to be alive together (300 branches
    # start in ~0.05 s on an idle machine, ~0.3 s with the CPU busy).
    steps = {f"b{i:04d}": [{"delay": "1500ms"}] for i in range(BRANCHES)}
    script.write_text(json.dumps({"nodes": steps}))
    logs = _run(
        tmp_path,
        _wide_fanout(BRANCHES),
        _limit_descriptors_hard(limit),
        "--simulate",
        "--sim-script",
        str(script),
    )
    events = [json.loads(line) for line in (logs / "progress.ndjson").read_text().splitlines()]
    started = [e for e in events if e["event"] == "stage_attempt_started" and e["branch"]]
    assert len(started) == BRANCHES
    assert _most_alive_at_once(events) > limit
    # Each branch still has its own complete log (contract.md §2).
    for index in (0, BRANCHES // 2, BRANCHES - 1):
        key = f"b{index:04d}"
        own = (logs / "parallel" / "par" / key / "progress.ndjson").read_text().splitlines()
        names = [json.loads(line)["event"] for line in own]
        assert names[0] == "stage_started" and "stage_completed" in names
        assert [json.loads(line)["seq"] for line in own] == list(range(1, len(own) + 1))


@pytest.mark.slow
def test_running_tool_stages_may_use_the_hard_descriptor_limit(tmp_path: Path) -> None:
    """Each running tool stage holds its leader's pidfds: 100 of them at once need more than a
    soft limit of 128, which the CLI raises to the hard limit."""
    stage = 'shape=parallelogram, tool_command="sleep 2"'
    logs = _run(tmp_path, _wide_fanout(100, stage), _limit_descriptors_soft)
    events = [json.loads(line) for line in (logs / "progress.ndjson").read_text().splitlines()]
    started = [e["seq"] for e in events if e["event"] == "stage_attempt_started" and e["branch"]]
    first_finished = next(
        e["seq"] for e in events if e["event"] == "stage_attempt_finished" and e["branch"]
    )
    assert len(started) == 100 and max(started) < first_finished
