"""Attempt-directory retention (contract.md §10): a looping node keeps its newest archives only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from attractor_trio.cli.main import main
from attractor_trio.persist.checkpoint import load_checkpoint
from attractor_trio.scopes.retention import (
    DEFAULT_ATTEMPT_RETENTION,
    last_attempt_on_disk,
    prune_archives,
)

from .helpers import run_dot

#: ``work`` runs once per visit; each partial success loops back to it.
LOOP = """digraph l { start [shape=Mdiamond]; exit [shape=Msquare]
  work [prompt="w"]
  start -> work
  work -> work [condition="outcome=partial_success"]
  work -> exit [condition="outcome=success"] }"""


def visits(count: int) -> dict[str, Any]:
    """Sim steps that make ``work`` run ``count`` times."""
    return {"work": [{"outcome": "partial_success"}] * (count - 1) + [{"outcome": "success"}]}


def archives(stage_dir: Path) -> list[str]:
    found = [p.name for p in stage_dir.iterdir() if p.name.startswith("attempt-")]
    return sorted(found, key=lambda name: int(name.removeprefix("attempt-")))


async def test_a_looping_node_keeps_the_newest_archives(tmp_path: Path) -> None:
    root = tmp_path / "run"
    result = await run_dot(LOOP, root, steps=visits(13), attempt_retention=3)
    assert result.status == "success"
    assert archives(root / "work") == ["attempt-10", "attempt-11", "attempt-12"]
    assert json.loads((root / "work" / "status.json").read_text())["outcome"] == "success"
    assert load_checkpoint(root).extra["node_attempts"]["work"] == 13


async def test_the_default_keeps_50(tmp_path: Path) -> None:
    root = tmp_path / "run"
    await run_dot(LOOP, root, steps=visits(DEFAULT_ATTEMPT_RETENTION + 10))
    kept = archives(root / "work")
    assert len(kept) == DEFAULT_ATTEMPT_RETENTION
    assert kept[0] == "attempt-10" and kept[-1] == "attempt-59"


async def test_numbering_continues_from_the_archives_on_disk(tmp_path: Path) -> None:
    """After a crash the checkpoint's attempt count can lag behind the archives (and old
    archives may be pruned): numbers continue after the newest, never restart or collide."""
    root = tmp_path / "run"
    stage = root / "work"
    for number in (8, 9):
        (stage / f"attempt-{number}").mkdir(parents=True)
    (stage / "status.json").write_text("{}")  # attempt 10's files, not archived yet
    assert last_attempt_on_disk(stage) == 10
    await run_dot(LOOP, root, steps=visits(2), attempt_retention=3)
    assert archives(stage) == ["attempt-9", "attempt-10", "attempt-11"]
    assert (stage / "attempt-10" / "status.json").read_text() == "{}"
    assert load_checkpoint(root).extra["node_attempts"]["work"] == 12


def test_prune_removes_oldest_first_and_never_the_newest(tmp_path: Path) -> None:
    for number in (1, 2, 3, 11):
        (tmp_path / f"attempt-{number}").mkdir()
        (tmp_path / f"attempt-{number}" / "stdout.log").write_text("x")
    (tmp_path / "attempt-2+").mkdir()  # an archive whose name was taken
    (tmp_path / "status.json").write_text("{}")
    assert prune_archives(tmp_path, 2) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt-11", "attempt-3", "status.json"]
    assert prune_archives(tmp_path, 0) == 1  # at least the newest is always kept
    assert last_attempt_on_disk(tmp_path) == 12


def test_a_partly_pruned_archive_is_finished_by_the_next_prune(tmp_path: Path) -> None:
    """A crash mid-prune leaves an old archive half deleted; it is simply pruned again."""
    (tmp_path / "attempt-1").mkdir()  # half deleted: its files are already gone
    for number in (2, 3):
        (tmp_path / f"attempt-{number}").mkdir()
        (tmp_path / f"attempt-{number}" / "status.json").write_text("{}")
    prune_archives(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt-2", "attempt-3"]


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args], catch_exceptions=False)
    return result.exit_code, result.stderr


def test_run_config_retention_through_the_cli(tmp_path: Path) -> None:
    pipeline = tmp_path / "loop.dot"
    pipeline.write_text(LOOP)
    script = tmp_path / "sim.json"
    script.write_text(json.dumps({"nodes": visits(6)}))
    config = tmp_path / "config.yaml"
    config.write_text("retention:\n  attempts: 2\n")
    root = tmp_path / "run"
    args = ["run", str(pipeline), "--simulate", "--sim-script", str(script), "--quiet"]
    code, err = cli(*args, "--config", str(config), "--logs-root", str(root), cwd=tmp_path)
    assert code == 0, err
    assert archives(root / "work") == ["attempt-4", "attempt-5"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("retention:\n  attempts: 0\n", "retention.attempts: must be at least 1"),
        ("retention:\n  attempts: lots\n", "retention.attempts"),
        ("retention:\n  atempts: 3\n", "atempts"),
    ],
)
def test_bad_retention_config_is_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    pipeline = tmp_path / "loop.dot"
    pipeline.write_text(LOOP)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    code, err = cli("run", str(pipeline), "--simulate", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert needle in err
