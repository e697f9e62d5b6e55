"""Fan-out benchmark: ``python benchmarks/fanout.py [--scenario a|b|c|all] [--profile]``.

Three scenarios, each run in a fresh subprocess so their peak RSS (``ru_maxrss``) does not mix:

* **a** — 1,000 branches of a simulated codergen stage that works for 1 s (sim step
  ``delay: 1s``), ``max_parallel=1000``. Targets (issue #22): the fan-out — from
  ``parallel_started`` to ``parallel_completed`` in the event log — within 1.5 s, and peak
  RSS ≤ 300 MB. The whole run's wall time is reported too.
* **b** — 10,000 branches that answer at once (no delay), ``max_parallel=10000``. No
  targets: it reports wall, RSS, per-branch overhead and the event count. If it has not
  finished after ``--budget-b`` seconds (60) it is cancelled — the engine still finalizes —
  and the report says how many branches had completed by then.
* **c** — memory against width: the 1 s branches of (a) at 1,000, 2,500, 5,000 and 10,000
  branches (``--sweep``), one fresh process each. Reported: each run's peak RSS and its growth
  over the process's RSS before the run, per branch; then the least-squares line through the
  growths (slope in KB per branch, intercept) and how far each point lies from it — growth is
  linear when the deviations are small and the per-branch figures flat.

Both run ``start -> par -> {branches} -> join -> done`` through :func:`attractor_trio.run` on the
real clock with durability on (fsync as in production) and the default heartbeat interval, under
``<repo>/.bench-tmp/`` (``--tmp-dir``): on tmpfs fsync is free and would flatter the numbers. Each
scenario's process is set up as ``attractor-trio run`` sets up its own once the pipeline is loaded
(``cli/limits.py``: descriptor limit raised, startup heap frozen out of the garbage collector);
``--library`` leaves it as an application embedding :func:`attractor_trio.run` would, for
comparison. Everything created is removed afterwards. Per-branch overhead is ``wall / branches``;
for scenario a also ``(wall - delay) / branches``, the part that is not the simulated work. The
table prints PASS/FAIL against the targets; the exit status is 0 either way (a report, not a test).
``--profile`` runs the scenarios under cProfile (which slows them down, so their times are not
comparable) and prints the top 15 functions by own time — where the time goes — and the top 15
``attractor_trio`` functions by cumulative time.

The engine's per-branch cost is mostly file-system calls (creating the branch's directories
and files, fsync), so the numbers move with the disk's current load; the last line measures
the disk's floor at that moment (a fresh directory plus one durable JSON write) to compare by.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from unittest import mock

import trio
from _common import REPO, FsyncMeter, filesystem_type, scratch_root
from attrs import asdict, frozen

sys.path.insert(0, str(REPO))

from attractor_trio import Graph, load, run
from attractor_trio.backends.simulate import (
    SimulationBackend,
    parse_sim_script,
)
from attractor_trio.cli import limits
from attractor_trio.persist.atomic import write_json_atomic

PROFILE_TOP = 15


@frozen
class Scenario:
    name: str
    branches: int
    delay_s: float
    max_parallel: int
    budget_s: float
    #: Target for the fan-out itself: ``parallel_started`` → ``parallel_completed``.
    fanout_target_s: float | None = None
    rss_target_mb: float | None = None

    @property
    def title(self) -> str:
        delay = f"delay {self.delay_s:g}s" if self.delay_s else "no delay"
        return f"{self.name}: {self.branches:,} branches, {delay}"


@frozen
class Measurement:
    """What a scenario's subprocess reports (as JSON)."""

    status: str
    wall_s: float
    load_s: float
    rss_before_mb: float  # peak after imports and loading the graph, before the run
    rss_peak_mb: float
    fsyncs: int
    fsync_s: float
    log: LogSummary


# ------------------------------------------------------------------------------- pipeline


def branch_ids(count: int) -> list[str]:
    return [f"b{index:05d}" for index in range(count)]


def build_fanout(count: int, max_parallel: int) -> str:
    """DOT text: start -> par -> each of ``count`` codergen branches -> join -> done."""
    lines = [
        f"digraph FanOut{count} {{",
        f'    graph [goal="Benchmark a {count}-branch fan-out"]',
        "    start [shape=Mdiamond]",
        "    done  [shape=Msquare]",
        f"    par   [shape=component, max_parallel={max_parallel}]",
        "    join  [shape=tripleoctagon]",
        "    start -> par",
        "    join -> done",
    ]
    ids = branch_ids(count)
    lines += [f'    {node} [shape=box, prompt="Do part {node} of: $goal"]' for node in ids]
    lines += [f"    par -> {node} -> join" for node in ids]
    lines.append("}")
    return "\n".join(lines) + "\n"


def backend_for(scenario: Scenario) -> SimulationBackend:
    if not scenario.delay_s:
        return SimulationBackend()
    step = {"delay": f"{scenario.delay_s:g}s"}
    return SimulationBackend(
        parse_sim_script({"nodes": {node: [step] for node in branch_ids(scenario.branches)}})
    )


# --------------------------------------------------------------------------- the subprocess


def peak_rss_mb() -> float:
    """This process's peak RSS so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def run_within_budget(graph: Graph, scenario: Scenario, logs_root: Path) -> str:
    """The run's status, or ``canceled`` when the budget ran out (the run still finalizes)."""
    with trio.move_on_after(scenario.budget_s):
        result = await run(graph, logs_root=logs_root, backend=backend_for(scenario))
        return result.status
    return "canceled"


def measure(
    scenario: Scenario, logs_root: Path, profiler: cProfile.Profile | None, library: bool
) -> Measurement:
    begin = time.perf_counter()
    graph = load(build_fanout(scenario.branches, scenario.max_parallel))
    load_s = time.perf_counter() - begin
    if not library:  # the process as `attractor-trio run` sets up its own, after the load
        limits.claim_the_process()
        limits.prepare_long_running_process()
    rss_before = peak_rss_mb()
    meter = FsyncMeter()
    with mock.patch.object(os, "fsync", meter), _profiling(profiler):
        begin = time.perf_counter()
        status = trio.run(run_within_budget, graph, scenario, logs_root)
        wall = time.perf_counter() - begin
    log = read_log(logs_root / "progress.ndjson")
    return Measurement(
        status=status,
        wall_s=wall,
        load_s=load_s,
        rss_before_mb=rss_before,
        rss_peak_mb=peak_rss_mb(),
        log=log,
        fsyncs=meter.calls,
        fsync_s=meter.seconds,
    )


@contextlib.contextmanager
def _profiling(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


@frozen
class Phases:
    """Seconds between milestones of the run, from the events' timestamps (ms resolution)."""

    until_first_branch: float  # pipeline_started -> first parallel_branch_started
    branches: float  # -> last parallel_branch_completed
    join: float  # -> parallel_completed (or the terminal event, if there is none)
    after: float  # -> the terminal event
    fanout: float  # parallel_started -> parallel_completed: the issue's fan-out figure


@frozen
class LogSummary:
    events: int
    branches_started: int
    branches_completed: int  # parallel_branch_completed, not canceled
    branch_stages_finished: int  # branch stage attempts that ended successfully
    canceled_attempts: int  # cancellation_exit
    most_alive: int  # the most branches started and not yet completed at one time
    phases: Phases


def read_log(path: Path) -> LogSummary:
    """Count what the run's event log shows, and time its phases."""
    counts: Counter[str] = Counter()
    marks: dict[str, float] = {}
    alive = most_alive = 0
    with path.open(encoding="utf-8") as log:
        for line in log:
            event = json.loads(line)
            name = event["event"]
            counts["events"] += 1
            if name == "stage_attempt_finished" and event["branch"]:
                counts["stages"] += event["status"] == "success"
            elif name == "cancellation_exit":
                counts["canceled"] += 1
            elif name.startswith("parallel") or name.startswith("pipeline_"):
                at = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
                if name == "parallel_branch_started":
                    counts["started"] += 1
                    marks.setdefault("first_branch", at)
                    alive += 1
                    most_alive = max(most_alive, alive)
                elif name == "parallel_branch_completed":
                    counts["completed"] += event["status"] != "canceled"
                    marks["last_branch"] = at
                    alive -= 1
                elif not event["branch"]:
                    marks[name] = at
    return LogSummary(
        events=counts["events"],
        branches_started=counts["started"],
        branches_completed=counts["completed"],
        branch_stages_finished=counts["stages"],
        canceled_attempts=counts["canceled"],
        most_alive=most_alive,
        phases=_phases(marks),
    )


def _phases(marks: dict[str, float]) -> Phases:
    """A phase that never ended (a cancelled run) lasts until the terminal event."""
    begin = marks.get("pipeline_started", 0.0)
    end = marks.get("pipeline_completed", marks.get("pipeline_failed", begin))
    first = marks.get("first_branch", end)
    last = marks.get("last_branch", end)
    joined = marks.get("parallel_completed", end)
    fanned = marks.get("parallel_started", begin)
    return Phases(first - begin, last - first, joined - last, end - joined, joined - fanned)


def profile_report(profiler: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"top {PROFILE_TOP} by own time (where the time goes):\n")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(PROFILE_TOP)
    out.write(f"top {PROFILE_TOP} attractor_trio functions by cumulative time:\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats("attractor_trio", PROFILE_TOP)
    return out.getvalue().replace(f"{REPO}{os.sep}", "")


def child_main(
    scenario: Scenario, root: Path, result_path: Path, profile: bool, library: bool
) -> None:
    profiler = cProfile.Profile() if profile else None
    measurement = measure(scenario, root / "run", profiler, library)
    result_path.write_text(json.dumps(asdict(measurement)))
    if profiler is not None:
        print(f"--- cProfile, scenario {scenario.title}")
        print(profile_report(profiler), flush=True)


# ------------------------------------------------------------------------------ the parent

#: Scenario c's widths (``--sweep``): 1k, 2.5k, 5k and 10k branches.
DEFAULT_SWEEP = (1000, 2500, 5000, 10_000)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    chosen = [
        Scenario(
            "a",
            args.branches_a,
            1.0,
            args.branches_a,
            budget_s=60.0,
            fanout_target_s=1.5,
            rss_target_mb=300.0,
        ),
        Scenario("b", args.branches_b, 0.0, args.branches_b, budget_s=args.budget_b),
        *(Scenario(f"c{n}", n, 1.0, n, budget_s=max(60.0, n / 50)) for n in args.sweep),
    ]
    return [s for s in chosen if args.scenario in ("all", s.name[0])]


def run_child(scenario: Scenario, root: Path, profile: bool, library: bool) -> Measurement | str:
    """The scenario in a fresh interpreter; its measurement, or why there is none."""
    result_path = root / "measurement.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        json.dumps(asdict(scenario)),
        "--tmp-dir",
        str(root),
        *(["--profile"] if profile else []),
        *(["--library"] if library else []),
    ]
    hard_limit = scenario.budget_s * (3 if profile else 1) + 120
    try:
        done = subprocess.run(command, timeout=hard_limit, check=False)
    except subprocess.TimeoutExpired:
        return f"no result: killed after {hard_limit:g} s"
    if done.returncode != 0 or not result_path.exists():
        return f"no result: the subprocess exited {done.returncode}"
    fields = json.loads(result_path.read_text())
    log = fields.pop("log")
    phases = Phases(**log.pop("phases"))
    return Measurement(**fields, log=LogSummary(**log, phases=phases))


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return "-"
    return "PASS" if value <= target else "FAIL"


def report(rows: list[tuple[Scenario, Measurement | str]], profiled: bool) -> None:
    header = (
        f"{'scenario':<34} {'status':<9} {'wall s':>7} {'fan-out s':>9} {'target':>7} {'':<4} "
        f"{'ms/branch':>9} {'RSS MB':>7} {'target':>7} {'':<4} {'events':>8}"
    )
    print(header)
    print("-" * len(header))
    for scenario, measured in rows:
        if isinstance(measured, str):
            print(f"{scenario.title:<34} {measured}")
            continue
        fanout, rss = measured.log.phases.fanout, measured.rss_peak_mb
        fanout_target = f"≤{scenario.fanout_target_s:g}" if scenario.fanout_target_s else "-"
        rss_target = f"≤{scenario.rss_target_mb:g}" if scenario.rss_target_mb else "-"
        print(
            f"{scenario.title:<34} {measured.status:<9} {measured.wall_s:>7.2f} {fanout:>9.2f} "
            f"{fanout_target:>7} {verdict(fanout, scenario.fanout_target_s):<4} "
            f"{measured.wall_s / scenario.branches * 1000:>9.3f} {rss:>7.1f} {rss_target:>7} "
            f"{verdict(rss, scenario.rss_target_mb):<4} {measured.log.events:>8,}"
        )
    print()
    for scenario, measured in rows:
        if not isinstance(measured, str):
            print(details(scenario, measured))
    sweep = [(s.branches, m) for s, m in rows if s.name.startswith("c") and not isinstance(m, str)]
    if sweep:
        print(linearity(sweep))
    if profiled:
        print("(profiled: cProfile slows the runs down; the times above are not comparable)")


def details(scenario: Scenario, m: Measurement) -> str:
    n, log, p = scenario.branches, m.log, m.log.phases
    lines = [
        f"{scenario.name}: {log.branches_completed:,} of {n:,} branches completed; "
        f"{log.events / n:.1f} events per branch; at most {log.most_alive:,} alive at once; "
        f"graph load {m.load_s:.2f} s (not in wall)",
        f"   RSS before the run {m.rss_before_mb:.1f} MB, peak {m.rss_peak_mb:.1f} MB "
        f"(+{(m.rss_peak_mb - m.rss_before_mb) * 1024 / n:.1f} KB per branch)",
        f"   fsync: {m.fsyncs / n:.1f} per branch, {m.fsync_s:.2f} s = "
        f"{m.fsync_s / m.wall_s:.0%} of wall",
        f"   phases: to the 1st branch {p.until_first_branch:.2f} s, branches {p.branches:.2f} s, "
        f"join {p.join:.2f} s, after the join {p.after:.2f} s; "
        f"parallel_started → parallel_completed {p.fanout:.2f} s",
    ]
    if scenario.delay_s:
        beyond = (p.fanout - scenario.delay_s) / n * 1000
        lines.append(
            f"   beyond the {scenario.delay_s:g} s of simulated work: {beyond:.3f} ms per branch"
        )
    if m.status == "canceled":
        lines.append(
            f"   cancelled at the {scenario.budget_s:g} s budget: by then "
            f"{log.branches_started:,} branches had started and {log.branch_stages_finished:,} "
            f"had finished their stage; {log.canceled_attempts:,} attempt(s) were cancelled, "
            f"which took {m.wall_s - scenario.budget_s:.1f} s after the deadline"
        )
    return "\n".join(lines)


@frozen
class LinearFit:
    """Least squares ``growth_mb = slope_mb * branches + intercept_mb`` over scenario c."""

    slope_mb: float
    intercept_mb: float
    #: Per point: (measured - fitted) / measured, in the points' order.
    deviations: tuple[float, ...]


def fit_line(points: list[tuple[int, float]]) -> LinearFit:
    """The least-squares line through ``(branches, growth MB)`` points (two or more)."""
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    intercept = mean_y - slope * mean_x
    deviations = tuple((y - (slope * x + intercept)) / y if y else 0.0 for x, y in points)
    return LinearFit(slope, intercept, deviations)


def linearity(sweep: list[tuple[int, Measurement]]) -> str:
    """Scenario c's table: RSS growth per width, and how well a straight line fits it."""
    lines = [
        "memory against width (scenario c, 1 s branches; growth = peak RSS - RSS before the run):",
        f"   {'branches':>8} {'status':<9} {'fan-out s':>9} {'most alive':>10} {'peak MB':>8} "
        f"{'growth MB':>9} {'KB/branch':>9} {'off the line':>12}",
    ]
    points = [(n, m.rss_peak_mb - m.rss_before_mb) for n, m in sweep]
    fit = fit_line(points) if len(points) >= 2 else None
    for index, (n, m) in enumerate(sweep):
        growth = points[index][1]
        off = f"{fit.deviations[index]:+.1%}" if fit else "-"
        lines.append(
            f"   {n:>8,} {m.status:<9} {m.log.phases.fanout:>9.2f} {m.log.most_alive:>10,} "
            f"{m.rss_peak_mb:>8.1f} {growth:>9.1f} {growth * 1024 / n:>9.1f} {off:>12}"
        )
    if fit is not None:
        worst = max(abs(d) for d in fit.deviations)
        lines.append(
            f"   least squares: {fit.slope_mb * 1024:.1f} KB per branch + "
            f"{fit.intercept_mb:.1f} MB; largest deviation from the line {worst:.1%}"
        )
    return "\n".join(lines)


def sweep_widths(text: str) -> tuple[int, ...]:
    """``--sweep 1000,2500``: positive widths, comma-separated."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of widths: {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be at least 1: {text!r}")
    return widths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=("a", "b", "c", "all"), default="all")
    parser.add_argument("--branches-a", type=int, default=1000, help="scenario a (1000)")
    parser.add_argument("--branches-b", type=int, default=10_000, help="scenario b (10000)")
    parser.add_argument(
        "--budget-b", type=float, default=60.0, help="seconds before b is cancelled (60)"
    )
    parser.add_argument(
        "--sweep",
        type=sweep_widths,
        default=DEFAULT_SWEEP,
        help="scenario c's widths (1000,2500,5000,10000)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile top 15 per scenario")
    parser.add_argument(
        "--library",
        action="store_true",
        help="leave the process as an embedding application would (no descriptor limit raised, "
        "no gc.freeze); by default it is set up as `attractor-trio run` sets up its own",
    )
    parser.add_argument("--tmp-dir", type=Path, help="where run dirs go (<repo>/.bench-tmp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a Scenario as JSON
    args = parser.parse_args(argv)
    if args.branches_a < 1 or args.branches_b < 1 or args.budget_b <= 0:
        parser.error("--branches-a and --branches-b must be at least 1 and --budget-b positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        root: Path = args.tmp_dir
        child_main(
            Scenario(**json.loads(args.child)),
            root,
            root / "measurement.json",
            args.profile,
            args.library,
        )
        return 0
    began = time.perf_counter()
    rows: list[tuple[Scenario, Measurement | str]] = []
    with scratch_root(args.tmp_dir, "fanout-") as root:
        print(
            f"fan-out benchmark: run dirs under {root.parent} ({filesystem_type(root)}), "
            f"durability on, real clock, {os.cpu_count()} CPUs; process set up "
            + ("as a library caller's (--library)" if args.library else "as `attractor-trio run`'s")
        )
        for scenario in scenarios(args):
            scenario_root = root / scenario.name
            scenario_root.mkdir()
            print(f"running {scenario.title}, max_parallel={scenario.max_parallel} …", flush=True)
            rows.append((scenario, run_child(scenario, scenario_root, args.profile, args.library)))
        floor = disk_floor(root / "floor")
        print()
        report(rows, args.profile)
        print(floor)
        # Removed at the end, not between scenarios: freed inodes would slow the next one
        # (see _common.scratch_root).
        print(f"removing {root} …", flush=True)
    print(f"total {time.perf_counter() - began:.1f} s")
    return 0


def disk_floor(root: Path, count: int = 200) -> str:
    """What this disk costs right now for the engine's basic unit of durable work — a fresh
    directory holding one atomically written, fsynced JSON file — so that runs made while the
    machine is busy can be compared with quiet ones."""
    root.mkdir()
    begin = time.perf_counter()
    for index in range(count):
        directory = root / f"d{index:04d}"
        directory.mkdir()
        write_json_atomic(directory / "status.json", {"outcome": "success", "index": index})
    per_op = (time.perf_counter() - begin) / count * 1000
    return f"disk floor now: mkdir + durable write_json_atomic = {per_op:.2f} ms each"


if __name__ == "__main__":
    sys.exit(main())
