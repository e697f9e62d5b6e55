"""``executor.upload_workdir`` cost: ``python benchmarks/ray_upload.py [--chain 20] [--mib 8]``.

Needs the ``ray`` extra. Starts the same local 2-node Ray cluster as ``ray_fanout.py`` and runs,
through :func:`attractor_trio.run` in ``<repo>/.bench-tmp/``, against a work directory of
``--mib`` MiB in ``--files`` files:

* **per-stage cost** — a chain of ``--chain`` tool stages (each appends a line to one file, so
  every stage brings a change back), once with a shared work directory and once with
  ``upload_workdir: true``; ``(upload - shared) / chain`` is what the snapshot, its trip, the
  node's copy, the diff and the driver's apply add to one attempt;
* **fan-out** — ``--branches`` branches from one state (one snapshot in the object store,
  content-addressed), each writing its own file back.

A report, not a test: it prints a Markdown table and exits 0.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _common import scratch_root
from _ray import chain_dot, fanout_dot, local_cluster, timed_run

from attractor_trio.backends.executors import ExecutorSettings, use_executor


def append_index(index: int) -> str:
    return f"echo {index} >> log.txt"


def write_own_file(index: int) -> str:
    return f"echo {index} > out-{index}.txt"


def fill(work: Path, mib: int, files: int) -> None:
    work.mkdir()
    size = mib * 2**20 // files
    for index in range(files):
        sub = work / f"d{index % 16}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{index}.bin").write_bytes(os.urandom(size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--branches", type=int, default=40)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--tmp-dir", type=Path)
    args = parser.parse_args()

    from attractor_trio.backends.executors.ray import RayExecutor

    with local_cluster(2), scratch_root(args.tmp_dir, "ray-upload-") as where:
        shared = RayExecutor(ExecutorSettings(kind="ray"))
        upload = RayExecutor(ExecutorSettings(kind="ray", upload_workdir=True))
        results = {}
        for label, executor in (("shared", shared), ("upload", upload)):
            work = where / f"work-{label}"
            fill(work, args.mib, args.files)
            with use_executor(executor):
                results[f"chain-{label}"] = timed_run(
                    chain_dot(args.chain, append_index), where, f"chain-{label}", work
                )
                results[f"fan-{label}"] = timed_run(
                    fanout_dot(args.branches, write_own_file), where, f"fan-{label}", work
                )
            lines = (work / "log.txt").read_text().split()
            assert lines == [str(i) for i in range(args.chain)], label
    print(f"work directory: {args.mib} MiB in {args.files} files; machine: {os.cpu_count()} cores")
    print("| pipeline | shared work dir | upload_workdir | added per attempt |")
    print("|---|---|---|---|")
    for name, count, key in (
        (f"{args.chain}-stage chain", args.chain, "chain"),
        (f"{args.branches}-branch fan-out", args.branches, "fan"),
    ):
        plain, shipped = results[f"{key}-shared"], results[f"{key}-upload"]
        added = (shipped - plain) / count * 1000
        print(f"| {name} | {plain:.2f} s | {shipped:.2f} s | {added:.0f} ms |")


if __name__ == "__main__":
    main()
