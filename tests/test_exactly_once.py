"""Exactly once across crashes (contract.md §10): a SIGKILL at every file-system commit point.

The engine process kills itself right after its Nth commit (``os.replace``/``os.rename``, or
the ``os.link`` that creates ``final.json`` and the lock) — the instants at which what is on
disk changes. For every N a fresh run is killed there and resumed until it finishes; each tool
stage appends its node id to a ledger, which must list every stage exactly once. The kill
between a stage's finished marker and the checkpoint rename is among them (it used to run the
stage a second time). The randomized variant kills the resumes too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ("t1", "t2", "t3")

# argv[1]: N (die right after the Nth commit) or -N (right before it); 0 never dies.
_KILL_AT_NTH_COMMIT = """
import os, signal, sys
target, before = abs(int(sys.argv[1])), sys.argv[1].startswith("-")
count = [0]
def wrap(real):
    def commit(*args, **kwargs):
        count[0] += 1
        if count[0] == target and before:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if count[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return commit
os.replace, os.rename, os.link = wrap(os.replace), wrap(os.rename), wrap(os.link)
from attractor_trio.cli.main import main
main(sys.argv[2:], prog_name="attractor-trio")
"""


def _pipeline(tmp_path: Path) -> None:
    nodes = "\n".join(
        f'    {n} [tool_command="echo $ATTRACTOR_NODE_ID >> ledger.txt"]' for n in STAGES
    )
    (tmp_path / "p.dot").write_text(
        "digraph once {\n    node [shape=parallelogram]\n"
        "    start [shape=Mdiamond]\n    done [shape=Msquare]\n"
        f"{nodes}\n    start -> {' -> '.join(STAGES)} -> done\n}}\n"
    )


def _cli(tmp_path: Path, kill_at: int) -> list[str]:
    """``run`` while the run has no manifest yet (``run`` refuses one that has), else ``resume``;
    ``kill_at=0`` never kills."""
    root = tmp_path / "run"
    common = ["--quiet", "--stall-timeout", "0", "--workdir", str(tmp_path)]
    if (root / "manifest.json").exists():
        args = ["resume", str(root), *common]
    else:
        args = ["run", str(tmp_path / "p.dot"), "--logs-root", str(root), *common]
    return [sys.executable, "-c", _KILL_AT_NTH_COMMIT, str(kill_at), *args]


def _attempt(tmp_path: Path, kill_at: int) -> int:
    done = subprocess.run(_cli(tmp_path, kill_at), capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def _finish_and_check(tmp_path: Path) -> None:
    root = tmp_path / "run"
    if not (root / "final.json").exists():
        assert _attempt(tmp_path, 0) == 0
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "success", final
    ledger = (tmp_path / "ledger.txt").read_text().split()
    assert ledger == list(STAGES), ledger


@pytest.mark.slow
def test_a_kill_after_every_commit_point_then_resume_runs_every_stage_once(
    tmp_path: Path,
) -> None:
    """Exhaustive: N = 1, 2, … until a run gets through without reaching its Nth commit."""
    killed_at = []
    for n in range(1, 200):
        case = tmp_path / f"kill-{n}"
        case.mkdir()
        _pipeline(case)
        if _attempt(case, n) == 0:
            break
        killed_at.append(n)
        _finish_and_check(case)
    assert len(killed_at) >= 15, f"only {len(killed_at)} commit points: {killed_at}"
    assert killed_at == list(range(1, len(killed_at) + 1))


@pytest.mark.slow
def test_random_kills_of_the_run_and_its_resumes_run_every_stage_once(tmp_path: Path) -> None:
    """Randomized: each process (the run, then every resume) dies right before or right after
    a random commit."""
    rng = random.Random(int(os.environ.get("ATTRACTOR_CRASH_SEED", "20261206")))
    _pipeline(tmp_path)
    kills = 0
    for _ in range(4):
        if _attempt(tmp_path, rng.choice((1, -1)) * rng.randint(1, 12)) == 0:
            break
        kills += 1
    assert kills >= 2, "the run finished before the kills landed"
    _finish_and_check(tmp_path)
