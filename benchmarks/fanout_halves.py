"""The two halves of scenario a's fan-out: ``python benchmarks/fanout_halves.py [--tmp-dir D]``.

Scenario a of ``fanout.py`` (1,000 branches of a 1 s simulated codergen stage, all at once),
timed by an event sink, which the hub calls on the trio thread as each event is written: the
trio thread's CPU (``getrusage(RUSAGE_THREAD)``) and the clock at ``parallel_started``, at the
first and the last branch's ``stage_attempt_started`` (its work begins right after), at the
first branch's ``status_ingestion_decision`` (the first work has ended) and at
``parallel_completed``. Reported: the *start half* (``parallel_started`` → the last branch's
work begins) and the *finish half* (the first work ends → ``parallel_completed``) as trio-thread
CPU per branch, and the window with its milestones.

Why: the window is about ``first work start + 1 s + the finish halves queued behind each other``
once a branch's finish costs more than its start, and ``last work start + 1 s + one finish``
otherwise (issue #22); these figures say which half sets it. One run per invocation, set up as
``attractor-trio run`` sets up its process (``fanout.py``); alternate invocations to compare.
``--tree`` measures another checkout's engine with this script (its ``benchmarks/fanout.py``
builds the pipeline): ``python benchmarks/fanout_halves.py --tree /tmp/before``.
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the run dir goes")
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout to measure")
    parser.add_argument("--branches", type=int, default=1000)
    args = parser.parse_args()
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree), str(tree / "benchmarks"), str(HERE)]
    import attractor_trio

    if not attractor_trio.__file__ or not attractor_trio.__file__.startswith(str(tree)):
        raise SystemExit(f"measuring {attractor_trio.__file__}, not the tree {tree}")
    import trio
    from _common import scratch_root
    from fanout import Scenario, backend_for, build_fanout

    from attractor_trio import load, run
    from attractor_trio.cli import limits

    count = args.branches
    scenario = Scenario("a", count, 1.0, count, budget_s=60.0)
    graph = load(build_fanout(count, count))
    limits.claim_the_process()
    limits.prepare_long_running_process()
    marks: dict[str, tuple[float, float]] = {}
    started = 0

    def mark(name: str) -> None:
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        marks.setdefault(name, (time.perf_counter(), usage.ru_utime + usage.ru_stime))

    def sink(event: dict[str, Any]) -> None:
        nonlocal started
        name = event["event"]
        if name in ("parallel_started", "parallel_completed"):
            mark(name)
        elif event["branch"] and name == "stage_attempt_started":
            started += 1
            mark("first_work")
            if started == count:
                mark("last_work")
        elif event["branch"] and name == "status_ingestion_decision":
            mark("first_finish")

    with scratch_root(args.tmp_dir, "fanout-halves-") as root:
        backend = backend_for(scenario)
        runner = functools.partial(run, graph, backend=backend, sinks=[sink])
        trio.run(functools.partial(runner, logs_root=root / "run"))

    def since(name: str) -> float:
        return marks[name][0] - marks["parallel_started"][0]

    def cpu_ms(first: str, last: str) -> float:
        return (marks[last][1] - marks[first][1]) * 1000 / count

    print(
        f"{count:,} branches: window {since('parallel_completed'):.3f} s; work starts "
        f"+{since('first_work'):.3f}..+{since('last_work'):.3f} s, first work ends "
        f"+{since('first_finish'):.3f} s; trio-thread CPU per branch: start half "
        f"{cpu_ms('parallel_started', 'last_work'):.3f} ms, finish half "
        f"{cpu_ms('first_finish', 'parallel_completed'):.3f} ms"
    )


if __name__ == "__main__":
    main()
