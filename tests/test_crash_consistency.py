"""Crash consistency (issue 3): SIGKILL ``attractor-trio run`` at random moments, resume each time.

After every kill, every JSON file in the logs root parses; in the end the run finishes and each
tool stage ran exactly once (each appends its node id to a ledger). The engine's own death must
neither lose a stage nor run one twice: a tool left running is adopted on resume.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attractor_trio.persist.attempt_marker import ATTEMPT_MARKER, read_attempt_marker

STAGES = 30
KILLS = 20


def _pipeline() -> str:
    ids = [f"t{i:02d}" for i in range(STAGES)]
    nodes = "\n".join(
        f'    {n} [tool_command="echo $ATTRACTOR_NODE_ID >> ledger.txt; sleep 0.4"]' for n in ids
    )
    chain = " -> ".join(["start", *ids, "done"])
    return (
        "digraph crash {\n    node [shape=parallelogram]\n"
        "    start [shape=Mdiamond]\n    done [shape=Msquare]\n"
        f"{nodes}\n    {chain}\n}}\n"
    )


def _all_json_parses(root: Path) -> None:
    """Every JSON document parses — but a stage's ``.attempt.json``, created in place in a
    stage dir its attempt made, may be empty or torn after a SIGKILL (contract.md §2): then
    it must read as absent."""
    for path in root.rglob("*.json"):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        if path.name == ATTEMPT_MARKER and read_attempt_marker(path.parent) is None:
            continue
        try:
            json.loads(path.read_text())
        except ValueError as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{path} does not parse after SIGKILL: {exc}")


def _command(tmp_path: Path, first: bool) -> list[str]:
    base = [sys.executable, "-m", "attractor_trio"]
    common = ["--quiet", "--stall-timeout", "0", "--workdir", str(tmp_path)]
    if first:
        return [
            *base,
            "run",
            str(tmp_path / "p.dot"),
            "--logs-root",
            str(tmp_path / "run"),
            *common,
        ]
    return [*base, "resume", str(tmp_path / "run"), *common]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_runs_every_stage_once(tmp_path: Path) -> None:
    (tmp_path / "p.dot").write_text(_pipeline())
    root = tmp_path / "run"
    rng = random.Random(20261123)
    kills = 0
    first = True
    while kills < KILLS and not (root / "final.json").exists():
        proc = subprocess.Popen(
            _command(tmp_path, first), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.4, 0.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        if root.exists():
            first = first and not (root / "manifest.json").exists()
            _all_json_parses(root)
    for _ in range(5):  # finish: resume until final.json exists
        if (root / "final.json").exists():
            break
        done = subprocess.run(
            _command(tmp_path, first), capture_output=True, text=True, timeout=120
        )
        assert done.returncode in (0,), done.stderr
        first = False
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "success", final
    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert ledger == [f"t{i:02d}" for i in range(STAGES)], f"after {kills} kills: {ledger}"
    assert kills == KILLS, f"the run finished after only {kills} kills"
    _all_json_parses(root)
    events = [
        json.loads(line)
        for line in (root / "progress.ndjson").read_text().splitlines()
        if line.strip().endswith("}")
    ]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def _mixed_pipeline() -> str:
    """Simulated stages, tool stages and a fan-out of tool branches, all writing the ledger."""
    branches = "\n".join(
        f'    b{i} [shape=parallelogram, tool_command="echo b{i} >> ledger.txt; sleep 0.8"]\n'
        f"    fan -> b{i} -> join"
        for i in range(4)
    )
    return f"""digraph mixed {{
    start [shape=Mdiamond]
    done [shape=Msquare]
    plan [prompt="plan"]
    prep [shape=parallelogram, tool_command="echo prep >> ledger.txt; sleep 0.8"]
    fan [shape=component, max_parallel=2]
    join [shape=tripleoctagon]
    review [prompt="review"]
    ship [shape=parallelogram, tool_command="echo ship >> ledger.txt; sleep 0.4"]
{branches}
    start -> plan -> prep -> fan
    join -> review -> ship -> done
}}
"""


@pytest.mark.slow
def test_sigkill_a_fan_out_pipeline_then_resume(tmp_path: Path) -> None:
    """Issue 10's process-level crash check: fan-outs and simulated stages too."""
    import os

    kills_wanted = int(os.environ.get("ATTRACTOR_CRASH_KILLS", "6"))
    (tmp_path / "p.dot").write_text(_mixed_pipeline())
    script = tmp_path / "sim.yaml"
    script.write_text("nodes:\n  plan: [{delay: 0.3}]\n  review: [{delay: 0.3}]\n")
    root = tmp_path / "run"
    rng = random.Random(int(os.environ.get("ATTRACTOR_CRASH_SEED", "7")))
    kills, first = 0, True
    for _ in range(kills_wanted * 3):
        if kills >= kills_wanted or (root / "final.json").exists():
            break
        args = [*_command(tmp_path, first), "--simulate", "--sim-script", str(script)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.45, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        if root.exists():
            first = first and not (root / "manifest.json").exists()
            _all_json_parses(root)
    for _ in range(5):
        if (root / "final.json").exists():
            break
        args = [*_command(tmp_path, first), "--simulate", "--sim-script", str(script)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        first = False
    assert json.loads((root / "final.json").read_text())["status"] == "success"
    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert sorted(ledger) == sorted(["prep", "b0", "b1", "b2", "b3", "ship"]), ledger
    assert kills >= min(kills_wanted, 3), f"only {kills} kills landed before the run finished"
    _all_json_parses(root)


# The engine's own write of its first checkpoint, replaced by a SIGKILL of the process: a real
# process death at the one moment a random kill rarely hits (manifest written, no checkpoint).
_DIE_AT_FIRST_CHECKPOINT = """
import os, signal, sys
import attractor_trio.scopes.run as run_scope
run_scope.write_checkpoint_bytes = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
from attractor_trio.cli.main import main
main(sys.argv[1:], prog_name="attractor-trio")
"""


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_then_resume(tmp_path: Path) -> None:
    """``run`` refuses a directory that holds a manifest, so ``resume`` must start such a run
    from its start node, with the ``--set`` values it was started with (CI found the dead end
    this used to be)."""
    stages = ("t00", "t01", "t02")
    nodes = "\n".join(
        f'    {n} [tool_command="echo $ATTRACTOR_NODE_ID >> ledger.txt"]' for n in stages
    )
    (tmp_path / "p.dot").write_text(
        "digraph early {\n    node [shape=parallelogram]\n"
        "    start [shape=Mdiamond]\n    done [shape=Msquare]\n"
        f"{nodes}\n    start -> {' -> '.join(stages)} -> done\n}}\n"
    )
    root = tmp_path / "run"
    first = _command(tmp_path, first=True)
    killed = subprocess.run(
        [sys.executable, "-c", _DIE_AT_FIRST_CHECKPOINT, *first[3:], "--set", "ticket=T-9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (root / "manifest.json").exists() and not (root / "checkpoint.json").exists()
    _all_json_parses(root)
    again = subprocess.run(_command(tmp_path, first=True), capture_output=True, text=True)
    assert again.returncode == 2 and "resume" in again.stderr  # run refuses, and says why
    resumed = subprocess.run(
        _command(tmp_path, first=False), capture_output=True, text=True, timeout=60
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((root / "final.json").read_text())["status"] == "success"
    assert (tmp_path / "ledger.txt").read_text().split() == list(stages)
    assert json.loads((root / "checkpoint.json").read_text())["context"]["ticket"] == "T-9"
