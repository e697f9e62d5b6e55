"""The file-system floor of a stage: ``python benchmarks/stage_floor.py [--stages N] [--repeat K]``.

Why: the tmpfs comparison with py-attractor (``engine.py --tmpfs``) asks how much of a stage's
cost is the work the contract's file layout demands and how much is the engine's own Python.
This script answers the first half. It replays, with precomputed bytes and straight-line
Python (no engine, no encoding, no events objects), the system calls one sequential stage
makes on the way to the run directory:

* ``ours``: what ``attractor_trio`` makes per stage on tmpfs, as ``strace -f`` lists it — the
  stage directory; the work directory's two ``status.json`` fallbacks removed before the
  attempt and looked for after it, with the stage's own; ``prompt.md``, ``response.md`` and
  the ``.attempt.json`` marker created in place; ``status.json`` by temp (with the ``fstat``
  that asks whether its fsync is a no-op) and rename; the checkpoint rewritten over a recycled
  spare whose descriptor is kept (``pwrite``, then one ``renameat2(RENAME_EXCHANGE)`` of the
  spare and the target where the filesystem can, else a link and a rename), growing by as many
  bytes per stage as the real one; the fsyncs of both files and both directories; two batched
  ``progress.ndjson`` writes. Set ``--no-fsync`` to leave out the fsyncs and the directory
  open they need (what a filesystem whose fsync is a no-op could skip).
* ``peer``: what py-attractor 0.3.0 makes per stage (``strace -f`` of its run): the stage
  directory and four files (``prompt.md``, ``response.md``, ``status.json``, the whole
  ``checkpoint.json``) each written through Python's buffered ``open(..., "w")``.

It prints the median microseconds per stage of each layout on ``/dev/shm`` (``--tmp-dir`` to
override). Reading it: the engine's per-stage figure from ``engine.py --tmpfs`` minus the
``ours`` floor is what the engine's Python costs; the same for py-attractor with ``peer``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attractor_trio.persist.exchange import rename_exchange

TMPFS = Path("/dev/shm")
#: Bytes of the documents one stage writes (a 1,000-stage chain of ``engine.py``).
PROMPT = b"p" * 719
RESPONSE = b"r" * 37
MARKER = b"m" * 442
STATUS = b"s" * 330
EVENTS = (b"e" * 1111, b"e" * 333)
#: How much the checkpoint grows per stage (77 KB after 1,000 stages).
CHECKPOINT_GROWTH = 77
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _absent(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _create(path: str, data: bytes) -> None:
    fd = os.open(path, _NEW, 0o644)
    os.write(fd, data)
    os.close(fd)


def ours(root: Path, stages: int, fsync: bool) -> float:
    """Seconds for ``stages`` stages of the engine's system calls."""
    run = str(root)
    work = str(root / "work")
    os.mkdir(work)
    os.mkdir(work + "/.attractor")
    fallbacks = (work + "/status.json", work + "/.attractor/status.json")
    events = os.open(run + "/progress.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    run_fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    target = run + "/checkpoint.json"
    spare_name = run + "/.checkpoint.spare.tmp"
    document = b"{}"
    _create(target, document)
    _create(spare_name, document)
    # Both inodes kept open for the run (``persist/recycling.py``), their names swapped by one
    # call where the filesystem can (``persist/exchange.py``), else a link and a rename.
    spare = os.open(spare_name, os.O_WRONLY | os.O_CLOEXEC)
    current = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    exchanges = rename_exchange(spare_name, target)
    begin = time.perf_counter()
    for index in range(stages):
        stage = f"{run}/s{index:04d}"
        os.mkdir(stage)
        for fallback in fallbacks:
            _absent(fallback)
        _create(stage + "/prompt.md", PROMPT)
        for candidate in (stage + "/status.json", *fallbacks):
            os.path.lexists(candidate)
        _create(stage + "/response.md", RESPONSE)
        _create(stage + "/.attempt.json", MARKER)
        document += b"c" * CHECKPOINT_GROWTH
        os.pwrite(spare, document, 0)
        temp = stage + "/.status.json.tmp"
        status = os.open(temp, _NEW, 0o644)
        os.write(status, STATUS)
        os.fstat(status)  # is its fsync a no-op? (``noop_fsync.py``: by the file's device)
        if fsync:
            os.fsync(spare)
            os.fsync(status)
        os.close(status)
        os.write(events, EVENTS[0])
        os.rename(temp, stage + "/status.json")
        if exchanges:
            rename_exchange(spare_name, target)
        else:
            keep = f"{run}/.checkpoint.{index}.tmp"
            os.link(target, keep)
            os.rename(spare_name, target)
            spare_name = keep
        spare, current = current, spare
        if fsync:
            directory = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(directory)
            os.fsync(run_fd)
            os.close(directory)
        os.write(events, EVENTS[1])
    elapsed = time.perf_counter() - begin
    for fd in (events, run_fd, spare, current):
        os.close(fd)
    return elapsed


def peer(root: Path, stages: int, fsync: bool) -> float:
    """Seconds for ``stages`` stages of py-attractor's system calls (it never fsyncs)."""
    document = "{}"
    begin = time.perf_counter()
    for index in range(stages):
        stage = root / f"s{index:04d}"
        stage.mkdir()
        for name, text in (("prompt.md", PROMPT), ("response.md", RESPONSE)):
            with open(stage / name, "w") as handle:
                handle.write(text.decode())
        with open(stage / "status.json", "w") as handle:
            handle.write(STATUS.decode())
        document += "c" * CHECKPOINT_GROWTH
        with open(root / "checkpoint.json", "w") as handle:
            handle.write(document)
    return time.perf_counter() - begin


LAYOUTS: dict[str, Callable[[Path, int, bool], float]] = {"ours": ours, "peer": peer}


def measure(layout: str, parent: Path, stages: int, repeat: int, fsync: bool) -> list[float]:
    """``repeat`` timed runs (after one untimed) of ``layout``: microseconds per stage."""
    per_stage: list[float] = []
    for run in range(repeat + 1):
        root = Path(tempfile.mkdtemp(prefix=f"floor-{layout}-", dir=parent))
        try:
            seconds = LAYOUTS[layout](root, stages, fsync)
        finally:
            shutil.rmtree(root)
        if run:
            per_stage.append(seconds / stages * 1e6)
    return per_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stages", type=int, default=1000, help="stages per run (1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per layout (5)")
    parser.add_argument("--tmp-dir", type=Path, default=TMPFS, help="where runs go (/dev/shm)")
    parser.add_argument("--no-fsync", action="store_true", help="ours without fsyncs")
    args = parser.parse_args(argv)
    if args.stages < 1 or args.repeat < 1:
        parser.error("--stages and --repeat must be at least 1")
    if not args.tmp_dir.is_dir():
        parser.error(f"--tmp-dir {args.tmp_dir}: not a directory")
    for layout in LAYOUTS:
        runs = measure(layout, args.tmp_dir, args.stages, args.repeat, not args.no_fsync)
        print(
            f"{layout}: median {statistics.median(runs):.1f} µs per stage "
            f"(min {min(runs):.1f}, max {max(runs):.1f}; {args.repeat} runs of {args.stages})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
