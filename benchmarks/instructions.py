"""User-space instructions per stage: ``python benchmarks/instructions.py [TREE ...] [--stages N]``.

Why: the figure that does not move with the machine's load. A chain of ``N`` and one of ``2N``
simulated stages (``engine.py``'s pipeline, on ``/dev/shm``) each run in a fresh process under
valgrind's callgrind; the difference of their instruction counts divided by ``N`` is what one
stage costs in user space, without start-up, imports and the run's fixed costs. Both processes
build and load *both* pipelines and run one of them, so the pipelines' generation, parse and
validation at load (≈ 160 k instructions per node, outside ``engine.py``'s timing too) cancel
out: the figure is the run's alone. (Before 2026-12-07's eighth stop it included them: 1.239 M
then is 1.09 M now, for the same tree.) The kernel's
side of a stage's system calls is not counted: a change that removes a system call shows in
``ab.py`` and ``stage_floor.py``, not here. ``PYTHONHASHSEED=0`` keeps dict and set layouts the
same from run to run; what still moves it (±0.5 %) is time: a timestamp formatted once per
millisecond, the traversal's hand-over to the scheduler every 2 ms.

Several trees (worktrees, or ``git archive REV | tar -x -C DIR``) are measured in turn, each
importing its own engine (checked by path); this tree by default. Needs ``valgrind``; about
45 s per tree at the default 300 stages.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import IMPORT_TREE, not_a_source_tree

_CHILD = (
    IMPORT_TREE
    + r"""
from pathlib import Path
stages, which, scratch = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
graphs = [engine.load(engine.build_pipeline(n)) for n in (stages, 2 * stages)]
engine.run_engine(graphs[which], Path(scratch) / "run")
"""
)


def instructions(tree: Path, stages: int, which: int, parent: Path) -> int:
    """Instructions callgrind counts for a process of ``tree``'s engine that loads chains of
    ``stages`` and ``2 * stages`` stages and runs the first (``which=0``) or the second."""
    with tempfile.TemporaryDirectory(prefix="instructions-", dir=parent) as scratch:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                "-c",
                _CHILD,
                str(tree),
                str(stages),
                str(which),
                scratch,
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{tree}: {done.stderr.strip().splitlines()[-1:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("trees", type=Path, nargs="*", default=[Path(__file__).parents[1]])
    parser.add_argument("--stages", type=int, default=300, help="N: chains of N and 2N (300)")
    parser.add_argument("--tmp-dir", type=Path, default=Path("/dev/shm"), help="(/dev/shm)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (it counts the instructions): install it")
    for tree in (tree.resolve() for tree in args.trees):
        if (problem := not_a_source_tree(tree)) is not None:
            parser.error(problem)
        short = instructions(tree, args.stages, 0, args.tmp_dir)
        long = instructions(tree, args.stages, 1, args.tmp_dir)
        print(f"{tree}: {(long - short) / args.stages / 1e6:.3f} M instructions per stage")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
