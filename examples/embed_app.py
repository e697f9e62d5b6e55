"""Embedding attractor-trio in a trio application.

    python examples/embed_app.py [PIPELINE.dot] [LOGS_ROOT]

Runs the pipeline with the simulation backend next to another task of the application (a
ticker), prints each event as it happens, and cancels the run if it takes longer than 30 s.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

import attractor_trio


async def ticker() -> None:
    """Stands for the rest of the application: it keeps running while the pipeline does."""
    while True:
        await trio.sleep(1)
        print("... application still responsive")


async def main(pipeline: str, logs_root: str) -> int:
    graph = attractor_trio.load(Path(pipeline))
    async with trio.open_nursery() as app:
        app.start_soon(ticker)
        async with attractor_trio.open_run(
            graph, logs_root=logs_root, backend=attractor_trio.SimulationBackend()
        ) as run:
            with trio.move_on_after(30) as deadline:
                async for event in run.events():
                    where = f"[{event.branch}] " if event.branch else ""
                    print(f"{event.seq:4d} {where}{event.name}")
            result = await (run.cancel() if deadline.cancelled_caught else run.wait())
        app.cancel_scope.cancel()
    print(f"{result.status}: {', '.join(result.completed_nodes)} (logs in {result.logs_root})")
    return 0 if result.status == "success" else 1


if __name__ == "__main__":
    here = Path(__file__).parent
    pipeline = sys.argv[1] if len(sys.argv) > 1 else str(here / "parallel_review.dot")
    logs_root = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="embed-")
    sys.exit(trio.run(main, pipeline, logs_root))
