"""Git workspace cost: ``python benchmarks/workspace.py [--stages N] [--repeat R]``.

A linear pipeline of N (default 100) tool stages, each writing its own small file (so every
stage makes a commit with ``--workspace git``), runs as a real ``python -m attractor_trio run``
process R times (default 3) without and R times with the git workspace, alternating, in a fresh
temporary repository. Reported: the median wall time of each, and the difference divided by N —
what the workspace adds per stage (``git add``, ``commit``, ``rev-parse`` as child processes,
plus creating the branch and worktree once and removing it at the end). Because wall times on a
shared machine are noisy, it also reports, from each run's ``progress.ndjson``, the median time
from a stage's ``stage_attempt_finished`` to its ``checkpoint_saved`` — the step that holds the
commit — with and without the workspace.
The exit status is 0 either way: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pipeline(stages: int) -> str:
    ids = [f"s{i:03d}" for i in range(stages)]
    nodes = "\n".join(
        f'  {n} [shape=parallelogram, tool_command="echo {n} > {n}.txt"]' for n in ids
    )
    chain = " -> ".join(["start", *ids, "exit"])
    return (
        "digraph bench {\n  start [shape=Mdiamond]\n  exit [shape=Msquare]\n"
        f"{nodes}\n  {chain}\n}}\n"
    )


def make_repo(path: Path) -> None:
    path.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"}
    for args in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "0"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, env=env)


def commit_step_ms(logs: Path) -> list[float]:
    """Per stage: ms from ``stage_attempt_finished`` to the next ``checkpoint_saved``."""
    finished: float | None = None
    steps = []
    for line in (logs / "progress.ndjson").read_text().splitlines():
        event = json.loads(line)
        stamp = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
        if event["event"] == "stage_attempt_finished" and event["node_id"].startswith("s"):
            finished = stamp
        elif event["event"] == "checkpoint_saved" and finished is not None:
            steps.append((stamp - finished) * 1000)
            finished = None
    return steps


def one_run(
    scratch: Path, repo: Path, dot: Path, n: int, workspace: bool, steps: list[float]
) -> float:
    logs = scratch / f"logs-{n}-{'git' if workspace else 'plain'}"
    workdir = repo if workspace else scratch / f"plain-{n}"
    workdir.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "attractor_trio", "run", str(dot), "--logs-root", str(logs)]
    argv += ["--workdir", str(workdir), "--quiet", "--stall-timeout", "0", "--run-id", f"b{n}"]
    if workspace:
        argv += ["--workspace", "git"]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr.strip()}")
    steps.extend(commit_step_ms(logs))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="attractor-bench-ws-"))
    try:
        repo = scratch / "repo"
        make_repo(repo)
        dot = scratch / "bench.dot"
        dot.write_text(pipeline(args.stages))
        plain, git = [], []
        plain_steps: list[float] = []
        git_steps: list[float] = []
        for n in range(args.repeat):
            plain.append(one_run(scratch, repo, dot, n, False, plain_steps))
            git.append(one_run(scratch, repo, dot, n, True, git_steps))
        p, g = statistics.median(plain), statistics.median(git)
        per_stage = (g - p) / args.stages * 1000
        print(f"{args.stages} tool stages, median of {args.repeat} runs each")
        print(f"  without workspace: {p:.2f} s ({p / args.stages * 1000:.1f} ms per stage)")
        print(f"  --workspace git:   {g:.2f} s ({g / args.stages * 1000:.1f} ms per stage)")
        print(f"  workspace cost:    {per_stage:.1f} ms per stage (a commit each), wall")
        ps, gs = statistics.median(plain_steps), statistics.median(git_steps)
        print(
            f"  finished→checkpoint step, median: {ps:.1f} ms plain, {gs:.1f} ms with git "
            f"(commit ≈ {gs - ps:.1f} ms; p90 with git "
            f"{statistics.quantiles(git_steps, n=10)[-1]:.1f} ms)"
        )
        print(f"  runs: plain {[round(x, 2) for x in plain]}, git {[round(x, 2) for x in git]}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
