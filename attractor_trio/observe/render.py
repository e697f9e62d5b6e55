"""``graph``: a pipeline as DOT (optionally colored by a run), or as SVG/PNG through Graphviz.

DOT output never needs Graphviz: the graph is written by :func:`~attractor_trio.dot.to_dot`,
so it parses back to the same pipeline plus ``style``/``fillcolor``. Image formats shell out
to Graphviz's ``dot``, the reference renderer; bundling a layout engine is not worth it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from attrs import evolve

from ..dot import to_dot
from ..dot.conditions import is_custom_outcome, normalize_outcome
from ..dot.graph import Graph, Node
from ..errors import AttractorError

__all__ = [
    "IMAGE_FORMATS",
    "STATUS_COLORS",
    "UNVISITED_COLOR",
    "GraphvizError",
    "GraphvizMissing",
    "color_graph",
    "output_format",
    "render_dot",
    "write_rendering",
]

#: Node status (see :attr:`~attractor_trio.observe.status.RunView.node_status`) → fill color.
STATUS_COLORS: Final[Mapping[str, str]] = {
    "success": "green",
    "fail": "red",
    "running": "yellow",
    "retry": "yellow",  # between attempts: still being worked on
    "canceled": "grey",
    "partial_success": "orange",
    "skipped": "lightblue",
}
UNVISITED_COLOR: Final = "white"
IMAGE_FORMATS: Final = frozenset({"svg", "png", "pdf"})
_DOT_TIMEOUT_S: Final = 120.0


class GraphvizMissing(AttractorError):
    """An image format was asked for and Graphviz ``dot`` is not on ``PATH``."""

    def __init__(self) -> None:
        super().__init__(
            "Graphviz `dot` is not installed: apt-get install graphviz (or use -o file.dot)"
        )


class GraphvizError(AttractorError):
    """Graphviz ran and failed (its stderr is in the message)."""


def output_format(path: Path) -> str:
    """``dot``, ``svg``, ``png`` or ``pdf`` from the output file's suffix."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "gv":
        return "dot"
    if suffix == "dot" or suffix in IMAGE_FORMATS:
        return suffix
    formats = ", ".join(f".{name}" for name in ("dot", *sorted(IMAGE_FORMATS)))
    raise AttractorError(
        f"{path}: cannot tell the output format from the suffix "
        f"{path.suffix or '(none)'!r}; use one of {formats}"
    )


def _status_color(status: str | None) -> str:
    """A custom outcome (contract.md §10, e.g. ``needs_dod``) counts as success."""
    if not status:
        return UNVISITED_COLOR
    if status in STATUS_COLORS:
        return STATUS_COLORS[status]
    custom = normalize_outcome(status) == status and is_custom_outcome(status)
    return STATUS_COLORS["success"] if custom else UNVISITED_COLOR


def _colored(node: Node, status: str | None) -> Node:
    color = _status_color(status)
    styles = [part.strip() for part in node.attrs.get("style", "").split(",") if part.strip()]
    if "filled" not in styles:
        styles.insert(0, "filled")
    return evolve(node, attrs={**node.attrs, "style": ",".join(styles), "fillcolor": color})


def color_graph(graph: Graph, node_status: Mapping[str, str]) -> Graph:
    """``graph`` with every node filled by its status color; nodes the run never reached
    are white. Statuses of nodes the graph does not have are ignored."""
    nodes = {
        node_id: _colored(node, node_status.get(node_id)) for node_id, node in graph.nodes.items()
    }
    return evolve(graph, nodes=nodes)


def render_dot(graph: Graph, node_status: Mapping[str, str] | None = None) -> str:
    """DOT text for ``graph``, colored when ``node_status`` is given (even if empty)."""
    return to_dot(graph if node_status is None else color_graph(graph, node_status))


def write_rendering(
    dot_text: str,
    output: Path,
    fmt: str,
    *,
    which: Callable[[str], str | None] | None = None,
) -> None:
    """Write ``dot_text`` to ``output`` as ``fmt``: directly for ``dot``, else through
    Graphviz (:class:`GraphvizMissing` when it is not installed)."""
    if fmt == "dot":
        output.write_text(dot_text, encoding="utf-8")
        return
    executable = (which or shutil.which)("dot")
    if executable is None:
        raise GraphvizMissing()
    try:
        result = subprocess.run(
            [executable, f"-T{fmt}", "-o", str(output)],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=_DOT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizError(f"{executable}: could not render {output}: {exc}") from None
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip() or "no message"
        raise GraphvizError(
            f"{executable} -T{fmt} failed (exit {result.returncode}) writing {output}: {detail}"
        )
