"""The embedding API (contract.md §8): open_run, typed events, observers, cancel, wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import attractor_trio
from attractor_trio.observe.typed_events import EVENT_TYPES, Event

from .helpers import graph_of, sim

DOT = """digraph p { start [shape=Mdiamond]; done [shape=Msquare]
    a [prompt="a"]; b [prompt="b"]; start -> a -> b -> done }"""


async def test_events_stream_to_the_terminal_event(tmp_path: Path, autojump_clock: Any) -> None:
    seen: list[str] = []
    async with attractor_trio.open_run(
        graph_of(DOT),
        logs_root=tmp_path / "run",
        backend=sim(),
        heartbeat_interval=None,
        on_event=lambda e: seen.append(e.name),
    ) as run:
        names = [event.name async for event in run.events()]
        result = await run.wait()
    assert result.status == "success"
    assert names[0] == "pipeline_started" and names[-1] == "pipeline_completed"
    assert names == seen
    assert isinstance(run._log[0], EVENT_TYPES["pipeline_started"])
    assert type(run._log[0]).__name__ == "PipelineStarted"


async def test_two_subscribers_see_the_same_events(tmp_path: Path, autojump_clock: Any) -> None:
    got: dict[int, list[int]] = {1: [], 2: []}
    async with attractor_trio.open_run(
        graph_of(DOT), logs_root=tmp_path / "run", backend=sim(), heartbeat_interval=None
    ) as run:

        async def consume(key: int) -> None:
            async for event in run.events():
                got[key].append(event.seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, 1)
            nursery.start_soon(consume, 2)
    assert got[1] == got[2] and got[1] == list(range(1, len(got[1]) + 1))


async def test_cancel_finalizes_and_returns_the_result(tmp_path: Path, autojump_clock: Any) -> None:
    async with attractor_trio.open_run(
        graph_of(DOT),
        logs_root=tmp_path / "run",
        heartbeat_interval=None,
        backend=sim({"b": [{"stall": "forever"}]}),
    ) as run:
        async for event in run.events():
            if event.name == "stage_attempt_started" and event.node_id == "b":
                break
        result = await run.cancel()
    assert result.status == "canceled"
    assert (tmp_path / "run" / "final.json").exists()


async def test_invalid_graph_raises_before_starting(tmp_path: Path) -> None:
    with pytest.raises(attractor_trio.ValidationFailed):
        async with attractor_trio.open_run(
            graph_of("digraph g { a -> b }"), logs_root=tmp_path / "run", backend=sim()
        ):
            pass  # pragma: no cover
    assert not (tmp_path / "run").exists()


async def test_an_error_in_the_block_cancels_the_run(tmp_path: Path, autojump_clock: Any) -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with attractor_trio.open_run(
            graph_of(DOT),
            logs_root=tmp_path / "run",
            heartbeat_interval=None,
            backend=sim({"b": [{"stall": "forever"}]}),
        ):
            await trio.sleep(1)
            raise KeyError("app bug")
    assert info.group_contains(KeyError)
    final = (tmp_path / "run" / "final.json").read_text()
    assert '"canceled"' in final


def test_typed_event_fields_and_unknown_names() -> None:
    from attractor_trio.observe.typed_events import event_from_envelope

    event = event_from_envelope(
        {
            "seq": 3,
            "ts": "t",
            "run_id": "r",
            "event": "edge_selected",
            "branch": "",
            "from_node": "a",
            "to_node": "b",
            "method": "weight",
        }
    )
    assert (event.from_node, event.to_node) == ("a", "b")
    odd = event_from_envelope({"seq": 1, "ts": "t", "run_id": "r", "event": "custom_thing"})
    assert type(odd) is Event
    with pytest.raises(AttributeError):
        _ = odd.nope


def test_example_embedding_application_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "embed_app.py"),
            str(root / "examples" / "parallel_review.dot"),
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "pipeline_completed" in out.stdout and "success:" in out.stdout
