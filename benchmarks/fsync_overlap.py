"""Do two concurrent fsyncs overlap here? ``python benchmarks/fsync_overlap.py [--rounds N]``.

A main-line stage boundary is two waits of two fsyncs each (``persist/commit.py``): the status
temp and the checkpoint temp, then the stage directory and the run directory. The engine runs
the two fsyncs of a wait concurrently (one on the caller's thread, one on a helper thread),
which pays only if the disk serves them in parallel. This times, on the filesystem the engine
benchmarks use (``<repo>/.bench-tmp`` by default), medians and p10/p90 over ``--rounds`` of:

* one file fsync, two one after another, two concurrently (each file dirtied with 300 bytes);
* one directory fsync (after a rename in it), two in sequence, two concurrently;
* a whole boundary (2 files, their renames, 2 directories), inline vs concurrent.

Concurrency here uses a plain thread and two locks, the engine's hand-off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import filesystem_type, scratch_root


class Helper:
    """One thread that fsyncs what it is handed (the engine's lock-pair hand-off)."""

    def __init__(self) -> None:
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        self.fd = -1
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            self.go.acquire()
            os.fsync(self.fd)
            self.done.release()

    def fsync_with(self, own: int, other: int) -> None:
        self.fd = other
        self.go.release()
        os.fsync(own)
        self.done.acquire()


def one_after_another(first: int, second: int) -> None:
    os.fsync(first)
    os.fsync(second)


def dirty(path: Path, round_: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"x" * 300 + str(round_).encode())
    return fd


def renamed_in(directory: Path) -> int:
    (directory / "t").write_bytes(b"")
    os.replace(directory / "t", directory / "r")
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY)


def measure(root: Path, rounds: int) -> dict[str, list[float]]:
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    helper = Helper()

    def timed(fds: list[int], body: Callable[[], None]) -> float:
        begin = time.perf_counter()
        body()
        elapsed = time.perf_counter() - begin
        for fd in fds:
            os.close(fd)
        return elapsed

    def one_file(r: int) -> float:
        f = dirty(a / "f", r)
        return timed([f], lambda: os.fsync(f))

    def files(r: int, concurrent: bool) -> float:
        f, g = dirty(a / "f", r), dirty(b / "g", r)
        if concurrent:
            return timed([f, g], lambda: helper.fsync_with(f, g))
        return timed([f, g], lambda: one_after_another(f, g))

    def one_dir(r: int) -> float:
        d = renamed_in(a)
        return timed([d], lambda: os.fsync(d))

    def dirs(r: int, concurrent: bool) -> float:
        d, e = renamed_in(a), renamed_in(b)
        if concurrent:
            return timed([d, e], lambda: helper.fsync_with(d, e))
        return timed([d, e], lambda: one_after_another(d, e))

    def boundary(r: int, concurrent: bool) -> float:
        wait = helper.fsync_with if concurrent else one_after_another
        f, g = dirty(a / "f", r), dirty(b / "g", r)
        begin = time.perf_counter()
        wait(f, g)
        os.close(f)
        os.close(g)
        os.replace(a / "f", a / "F")
        os.replace(b / "g", b / "G")
        d = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
        e = os.open(b, os.O_RDONLY | os.O_DIRECTORY)
        wait(d, e)
        elapsed = time.perf_counter() - begin
        os.close(d)
        os.close(e)
        return elapsed

    cases: dict[str, Callable[[int], float]] = {
        "1 file": one_file,
        "2 files, one after another": lambda r: files(r, False),
        "2 files, concurrently": lambda r: files(r, True),
        "1 directory": one_dir,
        "2 directories, one after another": lambda r: dirs(r, False),
        "2 directories, concurrently": lambda r: dirs(r, True),
        "boundary (2 files + 2 dirs), inline": lambda r: boundary(r, False),
        "boundary (2 files + 2 dirs), concurrent": lambda r: boundary(r, True),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds):  # interleaved, so a busy moment hits every case alike
        for name, case in cases.items():
            results[name].append(case(round_))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--tmp-dir", type=Path, help="where to fsync (<repo>/.bench-tmp)")
    args = parser.parse_args()
    with scratch_root(args.tmp_dir, "fsync-") as root:
        print(f"fsyncs under {root} ({filesystem_type(root)}), {args.rounds} rounds")
        for name, seconds in measure(root, args.rounds).items():
            ordered = sorted(seconds)
            tenth = len(ordered) // 10
            print(
                f"  {name:42s} median {statistics.median(ordered) * 1e3:6.3f} ms"
                f"  p10 {ordered[tenth] * 1e3:6.3f}  p90 {ordered[-tenth - 1] * 1e3:6.3f}"
            )


if __name__ == "__main__":
    main()
