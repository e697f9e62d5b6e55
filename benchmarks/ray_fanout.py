"""Ray scale-out benchmark: ``python benchmarks/ray_fanout.py [--branches 1000] [--chain 20]``.

Needs the ``ray`` extra. Starts a local 2-node Ray cluster (``ray.cluster_utils.Cluster``: a head
with 0 CPUs plus two worker nodes of ``--cpus-per-node`` CPUs, every server on 127.0.0.1) and
measures, through :func:`attractor_trio.run` with durability on, in ``<repo>/.bench-tmp/``:

* **fan-out** — ``start -> par -> {N tool branches: true} -> join -> done`` with
  ``max_parallel=N``, once with the local executor and once with ``--executor ray``;
* **per-stage overhead** — a chain of ``--chain`` tool stages (``true``) run one after the
  other, local and Ray; ``(ray - local) / chain`` is what Ray adds to one stage attempt
  (submission, scheduling, the remote worker's process start, streaming back).

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


def fanout_dot(count: int) -> str:
    lines = [
        "digraph F {",
        "  start [shape=Mdiamond]; done [shape=Msquare]",
        f"  par [shape=component, max_parallel={count}]; join [shape=tripleoctagon]",
        "  start -> par; join -> done",
    ]
    for index in range(count):
        lines.append(
            f'  b{index} [shape=parallelogram, tool_command="true"]; par -> b{index} -> join'
        )
    return "\n".join([*lines, "}"]) + "\n"


def chain_dot(count: int) -> str:
    nodes = [f'  s{i} [shape=parallelogram, tool_command="true"]' for i in range(count)]
    chain = " -> ".join(f"s{i}" for i in range(count))
    return (
        "digraph C {\n  start [shape=Mdiamond]; done [shape=Msquare]\n"
        + "\n".join(nodes)
        + f"\n  start -> {chain} -> done\n}}\n"
    )


def timed_run(dot: str, where: Path, name: str) -> float:
    path = where / f"{name}.dot"
    path.write_text(dot)
    graph = load(path)

    async def main() -> str:
        result = await run(graph, logs_root=where / name, workdir=where, heartbeat_interval=None)
        return str(result.status)

    started = time.perf_counter()
    status = trio.run(main)
    wall = time.perf_counter() - started
    if status != "success":
        raise SystemExit(f"{name}: run ended {status}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--tmp-dir", type=Path)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from attractor_trio.backends.executors.ray import RayExecutor

    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=args.cpus_per_node, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster_s = time.perf_counter() - started
    rows = []
    try:
        with scratch_root(args.tmp_dir, "ray-fanout-") as where:
            executor = RayExecutor(ExecutorSettings(kind="ray"))
            local_fan = timed_run(fanout_dot(args.branches), where, "fan-local")
            with use_executor(executor):
                ray_fan = timed_run(fanout_dot(args.branches), where, "fan-ray")
            local_chain = timed_run(chain_dot(args.chain), where, "chain-local")
            with use_executor(executor):
                ray_chain = timed_run(chain_dot(args.chain), where, "chain-ray")
        rows = [
            (f"{args.branches:,}-branch fan-out (`true`)", local_fan, ray_fan),
            (f"{args.chain}-stage chain (`true`)", local_chain, ray_chain),
        ]
    finally:
        ray.shutdown()
        cluster.shutdown()
    slots = 2 * args.cpus_per_node
    print(
        f"cluster: head 0 CPUs + 2 workers x {args.cpus_per_node} CPUs ({slots} stage slots), "
        f"started in {cluster_s:.1f} s; machine: {os.cpu_count()} cores"
    )
    print("| pipeline | local | ray | ray / local |")
    print("|---|---|---|---|")
    for name, local, remote in rows:
        print(f"| {name} | {local:.2f} s | {remote:.2f} s | {remote / local:.1f}x |")
    per_stage = (ray_chain - local_chain) / args.chain
    print(
        f"per-stage overhead Ray adds (chain): {per_stage * 1000:.0f} ms "
        f"(local {local_chain / args.chain * 1000:.0f} ms/stage, "
        f"ray {ray_chain / args.chain * 1000:.0f} ms/stage)"
    )
    print(
        f"fan-out throughput: local {args.branches / local_fan:.0f} stages/s, "
        f"ray {args.branches / ray_fan:.0f} stages/s"
    )


if __name__ == "__main__":
    main()
