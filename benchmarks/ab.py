"""Two source trees, alternated: ``python benchmarks/ab.py TREE_A TREE_B [--rounds R]``.

Why: on a shared 2-core machine one tree's runs and another's, taken minutes apart, differ by
more than most changes are worth (±20 %). Every comparison in ``benchmarks/README.md`` is
therefore interleaved: A, B, A, B, … each in a fresh process. This script does that for the
sequential per-stage path of ``engine.py`` (a simulated ``--stages`` chain on ``--tmp-dir``,
``/dev/shm`` by default) and reports, per tree, the wall time and the process CPU time per
stage (min and median over every timed run). The CPU minimum is the steadiest figure: a
neighbour stealing the CPU adds wall time, never CPU time, and rarely to every run.

For tmpfs only: on a disk use ``engine.py`` itself, alternated by hand. There, the run
directories' many inodes are freed between runs, and ext4 without a journal skips freed
inodes for minutes (``_common.scratch_root``, which ``engine.py`` uses, explains and avoids
it): here a tree's later runs would pay for its earlier ones.

A tree is any directory holding ``attractor_trio/`` and ``benchmarks/engine.py`` (a worktree,
or ``git archive REV | tar -x -C DIR``); its own engine is imported, checked by path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import IMPORT_TREE, not_a_source_tree

#: Run inside each child: its tree first on ``sys.path``; one untimed run, then ``runs`` timed.
_CHILD = (
    IMPORT_TREE
    + r"""
import json, shutil, time
from pathlib import Path
stages, runs, scratch = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
graph = engine.load(engine.build_pipeline(stages))
walls, cpus = [], []
for index in range(runs + 1):
    root = Path(scratch) / f"run-{index}"
    cpu, wall = time.process_time(), time.perf_counter()
    engine.run_engine(graph, root)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shutil.rmtree(root)
    if index:
        walls.append(wall / stages * 1e6)
        cpus.append(cpu / stages * 1e6)
print(json.dumps({"wall": walls, "cpu": cpus}))
"""
)


def one_round(tree: Path, stages: int, runs: int, parent: Path) -> dict[str, list[float]]:
    """``runs`` timed runs of ``tree``'s engine in a fresh process: µs per stage."""
    with tempfile.TemporaryDirectory(prefix="ab-", dir=parent) as scratch:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tree), str(stages), str(runs), scratch],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip().splitlines()[-1:]}")
    result: dict[str, list[float]] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("trees", type=Path, nargs=2, metavar="TREE")
    parser.add_argument("--rounds", type=int, default=5, help="processes per tree (5)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per process (3)")
    parser.add_argument("--stages", type=int, default=1000, help="chain length (1000)")
    parser.add_argument("--tmp-dir", type=Path, default=Path("/dev/shm"), help="(/dev/shm)")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if (problem := not_a_source_tree(tree)) is not None:
            parser.error(problem)
    samples: dict[Path, dict[str, list[float]]] = {tree: {"wall": [], "cpu": []} for tree in trees}
    for _ in range(args.rounds):
        for tree in trees:
            for key, values in one_round(tree, args.stages, args.runs, args.tmp_dir).items():
                samples[tree][key] += values
    for tree in trees:
        wall, cpu = samples[tree]["wall"], samples[tree]["cpu"]
        print(
            f"{tree}: wall min {min(wall):.1f} median {statistics.median(wall):.1f} µs/stage; "
            f"CPU min {min(cpu):.1f} median {statistics.median(cpu):.1f} "
            f"({len(wall)} runs of {args.stages} stages)"
        )
    (a, b) = (min(samples[tree]["cpu"]) for tree in trees)
    print(f"B/A, CPU min: {b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
