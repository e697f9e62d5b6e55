"""Python calls per stage: ``python benchmarks/calls.py [TREE] [--stages N] [--top K]``.

Why: on a shared 2-core machine wall and CPU time move by ±20 % from one minute to the next,
while the number of Python calls a stage makes barely moves — and every call costs its frames
(a sequential simulated stage makes ~800 of them in ≈ 0.27 ms). So each change on the per-stage
path is first judged here and by ``instructions.py``, then confirmed by ``ab.py``.

A chain of ``N`` and one of ``2N`` simulated stages (``engine.py``'s pipeline) each run once
under :mod:`cProfile` on ``/dev/shm`` after an untimed warm-up; their difference divided by
``N`` is the count per stage, without the run's fixed costs (start, validation, finalize).
Printed by callee file, and with ``--top K`` the ``K`` functions called most per stage. The
count still moves by a few calls with the machine's load: the traversal hands over to the
scheduler by wall time (``scopes/traversal.py``).

``TREE``: a source tree (a worktree, or ``git archive REV | tar -x -C DIR``) whose engine is
imported, checked by path; this one by default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _common import IMPORT_TREE, not_a_source_tree

#: Run in a child so that ``TREE``'s engine, not this one, is imported.
_CHILD = (
    IMPORT_TREE
    + r"""
import cProfile, json, pstats
from pathlib import Path
stages, scratch = int(sys.argv[2]), sys.argv[3]
engine.run_engine(engine.load(engine.build_pipeline(stages)), Path(scratch) / "warm-up")
counts = []
for n in (stages, 2 * stages):
    graph = engine.load(engine.build_pipeline(n))
    profile = cProfile.Profile()
    profile.enable()
    engine.run_engine(graph, Path(scratch) / f"run-{n}")
    profile.disable()
    counts.append({"\x00".join(map(str, key)): value[1]
                   for key, value in pstats.Stats(profile).stats.items()})
print(json.dumps(counts))
"""
)


def per_stage(tree: Path, stages: int, parent: Path) -> Counter[tuple[str, str]]:
    """``(file, function)`` → calls per stage in ``tree``'s engine."""
    with tempfile.TemporaryDirectory(prefix="calls-", dir=parent) as scratch:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tree), str(stages), scratch],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip().splitlines()[-1:]}")
    short, long = json.loads(done.stdout)
    result: Counter[tuple[str, str]] = Counter()
    for key in set(short) | set(long):
        filename, line, function = key.split("\x00")
        where = "builtin" if filename == "~" else _short(filename, tree)
        result[(where, f"{function}:{line}" if where != "builtin" else function)] += (
            long.get(key, 0) - short.get(key, 0)
        ) / stages
    return result


def _short(filename: str, tree: Path) -> str:
    if "site-packages/" in filename:
        return filename.rpartition("site-packages/")[2]
    return filename.removeprefix(f"{tree}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("tree", type=Path, nargs="?", default=Path(__file__).parents[1])
    parser.add_argument("--stages", type=int, default=500, help="N: chains of N and 2N (500)")
    parser.add_argument("--top", type=int, default=0, help="also the K most called functions")
    parser.add_argument("--tmp-dir", type=Path, default=Path("/dev/shm"), help="(/dev/shm)")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    if (problem := not_a_source_tree(tree)) is not None:
        parser.error(problem)
    counts = per_stage(tree, args.stages, args.tmp_dir)
    by_file: Counter[str] = Counter()
    for (where, _), value in counts.items():
        by_file[where] += value
    print(f"{tree}: {sum(by_file.values()):.1f} Python calls per stage")
    for where, value in by_file.most_common(25):
        if value >= 0.5:
            print(f"{value:8.1f}  {where}")
    if args.top:
        print(f"the {args.top} most called per stage:")
        for (where, function), value in counts.most_common(args.top):
            print(f"{value:8.1f}  {where}:{function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
