"""Cancellation and watchdog benchmark: ``python benchmarks/cancel.py [--branches N]``.

Two measurements against real ``python -m attractor_trio run`` processes:

1. **Ctrl-C under a wide fan-out.** A ``parallel`` node (``max_parallel`` = N, default 100) fans
   out to N tool branches that each run ``sleep 300``, joined by one fan-in. Once every branch
   has started (N ``parallel_branch_started`` events in ``progress.ndjson``, and N ``sleep``
   processes running), the run gets SIGINT. Reported: time from the signal to process exit
   (target ≤ 1 s), the exit code (130), whether ``final.json`` exists, and how many processes
   the run started are still running afterwards (target 0).
2. **Watchdog detection latency.** ``a -> b -> c`` where ``b`` is a silent ``sleep 300``, run
   with ``--stall-timeout 2s``. Reported: the time from ``b``'s attempt start to the
   ``watchdog_timeout`` event, minus the stall timeout (how late the watchdog notices), and that
   the run exits 1 with ``exit_path=watchdog``.

Survivors are found by a unique marker in the run's environment, which the run passes to its
stages (``--pass-env``) and every process they start inherits (``/proc/<pid>/environ``);
zombies count as dead (PID 1 in some sandboxes does not reap orphans). Anything still running
at the end is SIGKILLed, and the run directories are removed. The exit status is 0 either way:
this is a report, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from attrs import frozen

REPO = Path(__file__).resolve().parents[1]
MARKER_ENV = "ATTRACTOR_BENCH_MARKER"
EXIT_TARGET_S = 1.0
STALL_TIMEOUT_S = 2.0


def fanout_pipeline(branches: int) -> str:
    lines = [
        "digraph fanout {",
        "  start [shape=Mdiamond]; exit [shape=Msquare]",
        f"  fan [shape=component, max_parallel={branches}]",
        "  join [shape=tripleoctagon]",
        "  start -> fan; join -> exit",
    ]
    for index in range(branches):
        name = f"b{index:03d}"
        lines.append(f'  {name} [shape=parallelogram, tool_command="sleep 300"]')
        lines.append(f"  fan -> {name} -> join")
    lines.append("}")
    return "\n".join(lines) + "\n"


WATCHDOG_PIPELINE = """digraph stall {
  start [shape=Mdiamond]; exit [shape=Msquare]
  a [shape=parallelogram, tool_command="echo a"]
  b [shape=parallelogram, tool_command="sleep 300"]
  c [shape=parallelogram, tool_command="echo c"]
  start -> a -> b -> c -> exit
}
"""


# ------------------------------------------------------------------------------ processes


def running_marked(marker: str) -> list[tuple[int, str]]:
    """``(pid, cmdline)`` of running (non-zombie) processes whose environment has ``marker``."""
    found = []
    needle = f"{MARKER_ENV}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :].split()[:1] not in ([b"Z"], [b"X"]):
            found.append((int(entry), cmdline))
    return found


def kill_marked(marker: str) -> None:
    for pid, _ in running_marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_run(
    work: Path, dot_text: str, marker: str, *args: str
) -> tuple[subprocess.Popen[bytes], Path]:
    dot = work / "p.dot"
    dot.write_text(dot_text)
    root = work / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attractor_trio",
            "run",
            str(dot),
            "--logs-root",
            str(root),
            "--quiet",
            # Stages get an allowlisted environment (contract.md §10): pass the marker on.
            "--pass-env",
            MARKER_ENV,
            *args,
        ],
        cwd=work,
        env={**os.environ, MARKER_ENV: marker, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, root


def events(root: Path) -> list[dict[str, Any]]:
    path = root / "progress.ndjson"
    if not path.exists():
        return []
    result = []
    for line in path.read_text().splitlines():
        try:
            result.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            continue
    return result


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


# ------------------------------------------------------------------------------ scenarios


@frozen
class FanoutResult:
    branches: int
    started_s: float | None  # run start until every branch's sleep is running
    exit_s: float | None  # SIGINT until process exit
    exit_code: int | None
    final_status: str | None
    survivors: int
    first_kill_s: float | None = None  # SIGINT until the first cancellation_exit event
    final_s: float | None = None  # SIGINT until the terminal event (after final.json)
    note: str = ""


def measure_fanout(work: Path, branches: int, profile: Path | None = None) -> FanoutResult:
    marker = uuid.uuid4().hex
    began = time.monotonic()
    proc, root = start_run(work, fanout_pipeline(branches), marker, "--kill-grace", "5s")
    try:

        def all_started() -> bool:
            if proc.poll() is not None:
                return True
            count = sum(e["event"] == "parallel_branch_started" for e in events(root))
            sleeps = sum(cmd.startswith("sleep") for _, cmd in running_marked(marker))
            return count >= branches and sleeps >= branches

        # Each look reads the whole event log and every process's environment: looking often
        # would take the CPU the run needs to start its 1,000 processes on a busy machine.
        start_budget = 40 + branches * 0.1
        if not wait_until(all_started, timeout=start_budget, poll=0.25) or proc.poll() is not None:
            return FanoutResult(
                branches, None, None, proc.poll(), None, 0, note="branches never started"
            )
        started = time.monotonic() - began
        spy = _start_profile(proc.pid, profile) if profile is not None else None
        signalled, wall = time.monotonic(), time.time()
        proc.send_signal(signal.SIGINT)
        try:
            code: int | None = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        exit_s = time.monotonic() - signalled
        if spy is not None:
            spy.wait(timeout=30)
        survivors = len(running_marked(marker))
        final = root / "final.json"
        status = json.loads(final.read_text())["status"] if final.exists() else None
        evs = events(root)
        kills = [ts(e) - wall for e in evs if e["event"] == "cancellation_exit"]
        ends = [ts(e) - wall for e in evs if e["event"] == "pipeline_failed"]
        return FanoutResult(
            branches,
            started,
            exit_s,
            code,
            status,
            survivors,
            first_kill_s=min(kills, default=None),
            final_s=min(ends, default=None),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_marked(marker)


def _start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` on the run from just before the SIGINT until it exits (``--profile``):
    where the cancel spends the trio thread's time. py-spy needs a moment to attach."""
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
        ]
    )
    time.sleep(1.0)
    return spy


@frozen
class WatchdogResult:
    latency_s: float | None  # b's attempt start until watchdog_timeout
    exit_code: int | None
    exit_path: str | None
    survivors: int
    note: str = ""


def measure_watchdog(work: Path) -> WatchdogResult:
    marker = uuid.uuid4().hex
    stall = f"{STALL_TIMEOUT_S:g}s"
    proc, root = start_run(work, WATCHDOG_PIPELINE, marker, "--stall-timeout", stall)
    try:
        try:
            code: int | None = proc.wait(timeout=STALL_TIMEOUT_S + 20)
        except subprocess.TimeoutExpired:
            code = None
        survivors = len(running_marked(marker))
        evs = events(root)
        b_start = [e for e in evs if e["event"] == "stage_attempt_started" and e["node_id"] == "b"]
        fired = [e for e in evs if e["event"] == "watchdog_timeout"]
        final = root / "final.json"
        exit_path = json.loads(final.read_text())["exit_path"] if final.exists() else None
        if not b_start or not fired:
            return WatchdogResult(None, code, exit_path, survivors, "no watchdog_timeout event")
        return WatchdogResult(ts(fired[0]) - ts(b_start[0]), code, exit_path, survivors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_marked(marker)


# ------------------------------------------------------------------------------ report


def _fmt(seconds: float | None, unit: str = "s") -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if unit == "ms" else f"{seconds:.2f} s"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(fan: FanoutResult, dog: WatchdogResult) -> str:
    rows = [
        ("measurement", "value", "target", ""),
        (f"fan-out: all {fan.branches} branches running", _fmt(fan.started_s), "—", fan.note),
        (
            "fan-out: SIGINT → process exit",
            _fmt(fan.exit_s, "ms"),
            f"≤ {EXIT_TARGET_S * 1000:.0f} ms",
            _verdict(fan.exit_s is not None and fan.exit_s <= EXIT_TARGET_S),
        ),
        ("  of which: SIGINT → first cancellation_exit", _fmt(fan.first_kill_s, "ms"), "", ""),
        ("  of which: SIGINT → terminal event", _fmt(fan.final_s, "ms"), "", ""),
        ("fan-out: exit code", str(fan.exit_code), "130", _verdict(fan.exit_code == 130)),
        (
            "fan-out: final.json status",
            str(fan.final_status),
            "canceled",
            _verdict(fan.final_status == "canceled"),
        ),
        ("fan-out: surviving processes", str(fan.survivors), "0", _verdict(fan.survivors == 0)),
        (
            f"watchdog: detection (stall {STALL_TIMEOUT_S:g}s)",
            _fmt(dog.latency_s),
            f"≥ {STALL_TIMEOUT_S:g} s",
            dog.note,
        ),
        (
            "watchdog: latency - stall_timeout",
            _fmt(None if dog.latency_s is None else dog.latency_s - STALL_TIMEOUT_S, "ms"),
            "small",
            "",
        ),
        ("watchdog: exit code", str(dog.exit_code), "1", _verdict(dog.exit_code == 1)),
        (
            "watchdog: exit_path",
            str(dog.exit_path),
            "watchdog",
            _verdict(dog.exit_path == "watchdog"),
        ),
        ("watchdog: surviving processes", str(dog.survivors), "0", _verdict(dog.survivors == 0)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=100, help="fan-out width (100)")
    parser.add_argument("--tmp-dir", type=Path, help="where run directories go (system temp)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy record the run's cancel into this file (raw format)"
    )
    args = parser.parse_args(argv)
    if args.branches < 1:
        parser.error("--branches must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="attractor-cancel-", dir=args.tmp_dir))
    try:
        (work / "fan").mkdir()
        (work / "dog").mkdir()
        print(f"cancel benchmark: {args.branches} branches, {os.cpu_count()} CPUs", flush=True)
        fan = measure_fanout(work / "fan", args.branches, args.profile)
        dog = measure_watchdog(work / "dog")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(fan, dog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
