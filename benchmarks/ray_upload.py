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
import sys
import time
from pathlib import Path

for _name, _value in (
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("RAY_AUTH_MODE", "disabled"),
    ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
):
    os.environ.setdefault(_name, _value)

import trio  # noqa: E402
from _common import REPO, scratch_root  # noqa: E402

sys.path.insert(0, str(REPO))

from attractor_trio import load, run  # noqa: E402
from attractor_trio.backends.executors import ExecutorSettings, use_executor  # noqa: E402


def chain_dot(count: int) -> str:
    nodes = [
        f'  s{i} [shape=parallelogram, tool_command="echo {i} >> log.txt"]' for i in range(count)
    ]
    chain = " -> ".join(f"s{i}" for i in range(count))
    return (
        "digraph C {\n  start [shape=Mdiamond]; done [shape=Msquare]\n"
        + "\n".join(nodes)
        + f"\n  start -> {chain} -> done\n}}\n"
    )


def fanout_dot(count: int) -> str:
    lines = [
        "digraph F {",
        "  start [shape=Mdiamond]; done [shape=Msquare]",
        f"  par [shape=component, max_parallel={count}]; join [shape=tripleoctagon]",
        "  start -> par; join -> done",
    ]
    for index in range(count):
        lines.append(
            f'  b{index} [shape=parallelogram, tool_command="echo {index} > out-{index}.txt"]; '
            f"par -> b{index} -> join"
        )
    return "\n".join([*lines, "}"]) + "\n"


def fill(work: Path, mib: int, files: int) -> None:
    work.mkdir()
    size = mib * 2**20 // files
    for index in range(files):
        sub = work / f"d{index % 16}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{index}.bin").write_bytes(os.urandom(size))


def timed_run(dot: str, where: Path, name: str, work: Path) -> float:
    path = where / f"{name}.dot"
    path.write_text(dot)
    graph = load(path)

    async def main() -> str:
        result = await run(graph, logs_root=where / name, workdir=work, heartbeat_interval=None)
        return str(result.status)

    started = time.perf_counter()
    status = trio.run(main)
    wall = time.perf_counter() - started
    if status != "success":
        raise SystemExit(f"{name}: run ended {status}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--branches", type=int, default=40)
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--tmp-dir", type=Path)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from attractor_trio.backends.executors.ray import RayExecutor

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        with scratch_root(args.tmp_dir, "ray-upload-") as where:
            shared = RayExecutor(ExecutorSettings(kind="ray"))
            upload = RayExecutor(ExecutorSettings(kind="ray", upload_workdir=True))
            results = {}
            for label, executor in (("shared", shared), ("upload", upload)):
                work = where / f"work-{label}"
                fill(work, args.mib, args.files)
                with use_executor(executor):
                    results[f"chain-{label}"] = timed_run(
                        chain_dot(args.chain), where, f"chain-{label}", work
                    )
                    results[f"fan-{label}"] = timed_run(
                        fanout_dot(args.branches), where, f"fan-{label}", work
                    )
                lines = (work / "log.txt").read_text().split()
                assert lines == [str(i) for i in range(args.chain)], label
    finally:
        ray.shutdown()
        cluster.shutdown()
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
