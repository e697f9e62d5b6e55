"""Where a fan-out's branches stop (AMBIG-5, contract.md §5): the nearest common fan-in.

Pure graph questions, answered once per parallel node visit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from ..dot.graph import Graph

__all__ = ["branch_keys", "find_fan_in"]


def _fan_in_distances(graph: Graph, start: str) -> dict[str, int]:
    """BFS from ``start``: distance to every reachable fan-in, not walking through fan-ins
    or terminals (a branch stops at the first one it meets)."""
    distances: dict[str, int] = {}
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        node_id, depth = queue.popleft()
        node = graph.nodes.get(node_id)
        if node is None:
            continue
        if node.handler_type == "parallel.fan_in":
            distances.setdefault(node_id, depth)
            continue
        if graph.is_terminal(node_id):
            continue
        for edge in graph.outgoing(node_id):
            if edge.to_node not in seen:
                seen.add(edge.to_node)
                queue.append((edge.to_node, depth + 1))
    return distances


def find_fan_in(graph: Graph, starts: Sequence[str]) -> str | None:
    """The fan-in every branch can reach, nearest by total distance (ties: smallest id).

    ``None`` when the branches share no fan-in (they run to terminals; validation warns).
    """
    if not starts:
        return None
    per_branch = [_fan_in_distances(graph, start) for start in starts]
    common = set(per_branch[0]).intersection(*per_branch[1:])
    if not common:
        return None
    return min(common, key=lambda node_id: (sum(d[node_id] for d in per_branch), node_id))


def branch_keys(targets: Sequence[str]) -> list[str]:
    """Branch keys are the branch's first node id (contract.md §9); repeats get ``#2``, ``#3``."""
    seen: dict[str, int] = {}
    keys = []
    for target in targets:
        seen[target] = seen.get(target, 0) + 1
        keys.append(target if seen[target] == 1 else f"{target}#{seen[target]}")
    return keys
