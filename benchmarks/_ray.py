"""What the Ray benchmarks share: the settings a loopback test cluster needs (applied on import,
before anything imports ``ray``), the local 2-worker cluster, the two pipeline shapes and a
timed run through :func:`attractor_trio.run`."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

for _name, _value in (
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("RAY_AUTH_MODE", "disabled"),
    ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
):
    os.environ.setdefault(_name, _value)

import trio  # noqa: E402
from _common import REPO  # noqa: E402

sys.path.insert(0, str(REPO))

from attractor_trio import load, run  # noqa: E402

#: A stage's tool command, by its index.
Command = Callable[[int], str]


def chain_dot(count: int, command: Command) -> str:
    nodes = [f'  s{i} [shape=parallelogram, tool_command="{command(i)}"]' for i in range(count)]
    chain = " -> ".join(f"s{i}" for i in range(count))
    return (
        "digraph C {\n  start [shape=Mdiamond]; done [shape=Msquare]\n"
        + "\n".join(nodes)
        + f"\n  start -> {chain} -> done\n}}\n"
    )


def fanout_dot(count: int, command: Command) -> str:
    lines = [
        "digraph F {",
        "  start [shape=Mdiamond]; done [shape=Msquare]",
        f"  par [shape=component, max_parallel={count}]; join [shape=tripleoctagon]",
        "  start -> par; join -> done",
    ]
    for index in range(count):
        lines.append(
            f'  b{index} [shape=parallelogram, tool_command="{command(index)}"]; '
            f"par -> b{index} -> join"
        )
    return "\n".join([*lines, "}"]) + "\n"


def timed_run(dot: str, where: Path, name: str, work: Path) -> float:
    """Wall time of one run of ``dot`` (logs in ``where/name``); exits unless it succeeds."""
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


@contextlib.contextmanager
def local_cluster(cpus_per_node: int) -> Iterator[float]:
    """A head with 0 CPUs and two workers on 127.0.0.1, connected; yields its start time (s)."""
    import ray
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"}
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=cpus_per_node, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        yield time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
