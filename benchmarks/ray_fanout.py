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
from pathlib import Path

from _common import scratch_root
from _ray import chain_dot, fanout_dot, local_cluster, timed_run

from attractor_trio.backends.executors import ExecutorSettings, use_executor


def true(_index: int) -> str:
    return "true"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--tmp-dir", type=Path)
    args = parser.parse_args()

    from attractor_trio.backends.executors.ray import RayExecutor

    with (
        local_cluster(args.cpus_per_node) as cluster_s,
        scratch_root(args.tmp_dir, "ray-fanout-") as where,
    ):
        executor = RayExecutor(ExecutorSettings(kind="ray"))
        local_fan = timed_run(fanout_dot(args.branches, true), where, "fan-local", where)
        with use_executor(executor):
            ray_fan = timed_run(fanout_dot(args.branches, true), where, "fan-ray", where)
        local_chain = timed_run(chain_dot(args.chain, true), where, "chain-local", where)
        with use_executor(executor):
            ray_chain = timed_run(chain_dot(args.chain, true), where, "chain-ray", where)
    rows = [
        (f"{args.branches:,}-branch fan-out (`true`)", local_fan, ray_fan),
        (f"{args.chain}-stage chain (`true`)", local_chain, ray_chain),
    ]
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
