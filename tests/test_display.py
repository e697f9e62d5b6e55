"""Human displays: they render exactly the recorded events."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from attractor_trio.observe.display import JsonLines, PlainDisplay, RichDisplay, describe

from .helpers import events, run_dot

DOT = (
    'digraph d { start [shape=Mdiamond]; a [prompt="x", max_retries=1]; done [shape=Msquare];'
    " start -> a -> done }"
)


async def _recorded(tmp_path: Path) -> list[dict[str, Any]]:
    steps = {"a": [{"outcome": "fail", "failure_reason": "flake"}, {"outcome": "success"}]}
    await run_dot(DOT, tmp_path / "run", steps=steps)
    return events(tmp_path / "run")


async def test_plain_display_lines(tmp_path: Path, autojump_clock: Any) -> None:
    stream = io.StringIO()
    display = PlainDisplay(stream)
    for event in await _recorded(tmp_path):
        display(event)
    text = stream.getvalue()
    assert "▶ a attempt 1/2" in text and "a → fail — flake" in text
    assert "a: retrying in" in text and "pipeline success" in text
    assert "stage_heartbeat" not in text


async def test_quiet_display_prints_only_the_end(tmp_path: Path, autojump_clock: Any) -> None:
    stream = io.StringIO()
    display = PlainDisplay(stream, quiet=True)
    for event in await _recorded(tmp_path):
        display(event)
    assert stream.getvalue().count("\n") == 1 and "pipeline success" in stream.getvalue()


async def test_rich_display_renders_and_closes(tmp_path: Path, autojump_clock: Any) -> None:
    display = RichDisplay()
    display.console = Console(file=io.StringIO(), force_terminal=True, width=100)
    display.live.console = display.console
    for event in await _recorded(tmp_path):
        display(event)
    assert not display.started and display.active == {}
    assert "pipeline success" in display.console.file.getvalue()  # type: ignore[attr-defined]


async def test_json_lines_round_trip(tmp_path: Path, autojump_clock: Any) -> None:
    recorded = await _recorded(tmp_path)
    stream = io.StringIO()
    sink = JsonLines(stream)
    for event in recorded:
        sink(event)
    assert len(stream.getvalue().splitlines()) == len(recorded)


def test_unknown_events_are_still_described() -> None:
    line = describe(
        {"seq": 1, "ts": "", "run_id": "r", "event": "something_new", "branch": "x/y", "k": 1}
    )
    assert line == '[x/y] something_new {"k": 1}'
