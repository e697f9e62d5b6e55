"""``runs [DIR]`` and ``graph PIPELINE.dot [--run LOGS_ROOT] -o FILE`` (contract.md §1)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from attractor_trio.cli.observe import format_duration_human, register
from attractor_trio.dot import load_dot, parse_dot, to_dot
from attractor_trio.dot.graph import Graph
from attractor_trio.observe.render import color_graph
from attractor_trio.persist.atomic import utc_timestamp
from attractor_trio.persist.manifest import write_manifest

from .helpers import run_dot

LINEAR = """digraph linear {
  start [shape=Mdiamond]; exit [shape=Msquare]
  a [prompt="a"]; b [prompt="b", style="dashed"]; c [prompt="c"]
  start -> a -> b
  b -> c [condition="outcome=success"]
  c -> exit
}"""


def invoke(*args: str) -> tuple[int, str, str]:
    group = click.Group("t")
    register(group)
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- runs -----------------------------------------------------------------------------------


async def _three_runs(runs: Path) -> dict[str, Any]:
    """``b`` runs first and succeeds, ``a`` second and fails; ``zz`` is corrupt, ``notes``
    is not a run, ``dead`` was killed."""
    first = await run_dot(LINEAR, runs / "b")
    second = await run_dot(
        LINEAR, runs / "a", steps={"b": [{"outcome": "fail", "failure_reason": "x" * 200}]}
    )
    (runs / "zz").mkdir()
    (runs / "zz" / "manifest.json").write_text("{not json")
    (runs / "notes").mkdir()
    dead = runs / "dead"
    dead.mkdir()
    write_manifest(
        dead, run_id="dead-run", name="linear", label="", goal="", dot_path=None,
        dot_source=LINEAR, argv=[], start_time="2000-01-01T00:00:00.000Z",
    )  # fmt: skip
    lock = {"pid": dead_pid(), "run_id": "dead-run", "acquired_at": utc_timestamp()}
    (dead / "run.lock.json").write_text(json.dumps(lock))
    live: dict[str, Any] = {"run_id": "dead-run", "state": "running", "current_node": "a",
            "active_attempts": [], "last_event": None,
            "updated_at": "2000-01-01T00:00:05.000Z"}  # fmt: skip
    (dead / "live.json").write_text(json.dumps(live))
    return {"first": first, "second": second}


async def test_runs_lists_runs_by_start_time_with_corrupt_ones_marked_unknown(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    made = await _three_runs(runs)
    code, out, err = invoke("runs", str(runs), "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert [entry["run_id"] for entry in listing] == [
        "dead-run",
        made["first"].run_id,
        made["second"].run_id,
        "zz",
    ]
    dead, ok, failed, corrupt = listing
    assert (dead["state"], dead["duration_s"]) == ("interrupted", 5.0)
    assert ok["state"] == "success" and ok["name"] == "linear" and ok["failure_reason"] == ""
    assert failed["state"] == "fail" and failed["failure_reason"] == "x" * 200
    assert failed["exit_path"] == "stage_failed" and failed["duration_s"] >= 0
    assert corrupt["state"] == "unknown" and "manifest.json" in corrupt["error"]
    assert corrupt["logs_root"] == str(runs / "zz")


async def test_runs_table_is_one_line_per_run_with_truncated_reasons(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    made = await _three_runs(runs)
    code, out, _ = invoke("runs", str(runs))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["RUN", "ID", "PIPELINE", "STATE", "STARTED", "DURATION", "REASON"]
    assert [row.split()[0] for row in rows] == [
        "dead-run",
        made["first"].run_id,
        made["second"].run_id,
        "zz",
    ]
    assert rows[0].split()[2] == "interrupted"
    assert rows[1].split()[1:3] == ["linear", "success"]
    assert "x" * 59 + "…" in rows[2] and "x" * 61 not in rows[2]
    assert "unknown" in rows[3] and "manifest.json" in rows[3]
    assert all(row == row.rstrip() for row in [header, *rows])


def test_runs_defaults_to_dot_slash_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("runs")
    assert code == 2 and "runs: no such directory" in err
    (tmp_path / "runs").mkdir()
    code, out, err = invoke("runs")
    assert code == 0 and out == "" and "no runs in runs" in err
    code, out, _ = invoke("runs", "--json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.0123, "0.01s"), (12.34, "12.3s"), (245, "4m 05s"), (7380, "2h 03m")],
)
def test_durations_read_well(seconds: float | None, text: str) -> None:
    assert format_duration_human(seconds) == text


# --- graph ----------------------------------------------------------------------------------


def fills(graph: Graph) -> dict[str, tuple[str, str]]:
    return {
        node_id: (node.attrs.get("fillcolor", ""), node.attrs.get("style", ""))
        for node_id, node in graph.nodes.items()
    }


async def test_graph_dot_is_colored_by_a_failed_run(tmp_path: Path) -> None:
    pipeline = tmp_path / "linear.dot"
    pipeline.write_text(LINEAR)
    root = tmp_path / "run"
    result = await run_dot(LINEAR, root, steps={"b": [{"outcome": "fail", "failure_reason": "no"}]})
    assert result.status == "fail"
    out = tmp_path / "colored.dot"
    code, _, err = invoke("graph", str(pipeline), "--run", str(root), "-o", str(out))
    assert code == 0 and f"wrote {out}" in err
    assert "different version" not in err
    assert fills(load_dot(out)) == {
        "start": ("green", "filled"),
        "exit": ("white", "filled"),
        "a": ("green", "filled"),
        "b": ("red", "filled,dashed"),
        "c": ("white", "filled"),
    }


async def test_graph_without_a_run_is_the_pipeline_as_dot(tmp_path: Path) -> None:
    pipeline = tmp_path / "linear.dot"
    pipeline.write_text(LINEAR)
    out = tmp_path / "plain.dot"
    code, _, _ = invoke("graph", str(pipeline), "-o", str(out))
    assert code == 0 and out.read_text() == to_dot(load_dot(pipeline))


async def test_graph_warns_when_the_run_used_another_version(tmp_path: Path) -> None:
    root = tmp_path / "run"
    await run_dot(LINEAR, root)
    pipeline = tmp_path / "linear.dot"
    pipeline.write_text(LINEAR.replace('prompt="a"', 'prompt="A"'))
    code, _, err = invoke("graph", str(pipeline), "--run", str(root), "-o", str(tmp_path / "g.dot"))
    assert code == 0 and "different version" in err and str(root / "graph.dot") in err


def test_color_graph_maps_every_status() -> None:
    graph = parse_dot("digraph g { a; b; c; d; e; f; g; h }")
    statuses = {
        "a": "success",
        "b": "fail",
        "c": "running",
        "d": "canceled",
        "e": "partial_success",
        "f": "skipped",
        "g": "retry",
        "zz": "success",  # not in the graph: ignored
    }
    assert {k: v[0] for k, v in fills(color_graph(graph, statuses)).items()} == {
        "a": "green",
        "b": "red",
        "c": "yellow",
        "d": "grey",
        "e": "orange",
        "f": "lightblue",
        "g": "yellow",
        "h": "white",
    }


def test_graph_image_without_graphviz_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(LINEAR)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "p.svg"
    code, _, err = invoke("graph", str(pipeline), "-o", str(out))
    assert code == 2 and not out.exists()
    assert "Graphviz `dot` is not installed: apt-get install graphviz (or use -o file.dot)" in err


def test_graph_image_goes_through_graphviz_dot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in ``dot`` records how it was called: format from the suffix, DOT on stdin."""
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > "$0.args"\ncat > "$3"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake) if name == "dot" else None)
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(LINEAR)
    out = tmp_path / "p.png"
    code, _, err = invoke("graph", str(pipeline), "-o", str(out))
    assert code == 0, err
    assert (tmp_path / "bin" / "dot.args").read_text().split() == ["-Tpng", "-o", str(out)]
    assert out.read_text() == to_dot(load_dot(pipeline))


def test_graphviz_failure_is_reported_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake))
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(LINEAR)
    code, _, err = invoke("graph", str(pipeline), "-o", str(tmp_path / "p.svg"))
    assert code == 1 and "exit 3" in err and "syntax error in line 1" in err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
async def test_graph_svg_with_real_graphviz(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(LINEAR)
    root = tmp_path / "run"
    await run_dot(LINEAR, root)
    out = tmp_path / "p.svg"
    code, _, err = invoke("graph", str(pipeline), "--run", str(root), "-o", str(out))
    assert code == 0, err
    assert "<svg" in out.read_text() and "green" in out.read_text()


@pytest.mark.parametrize(
    ("dot_text", "output", "message"),
    [
        (LINEAR, "g.txt", "cannot tell the output format from the suffix '.txt'"),
        ("digraph g { a -> }", "g.dot", "p.dot:1:"),
    ],
)
def test_graph_bad_input_is_a_clear_error(
    tmp_path: Path, dot_text: str, output: str, message: str
) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(dot_text)
    code, _, err = invoke("graph", str(pipeline), "-o", str(tmp_path / output))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / output).exists()


def test_graph_run_that_is_not_a_run_directory(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.dot"
    pipeline.write_text(LINEAR)
    code, _, err = invoke(
        "graph", str(pipeline), "--run", str(tmp_path), "-o", str(tmp_path / "g.dot")
    )
    assert code == 2 and "not a run directory" in err


def test_runs_ignores_files_next_to_run_directories(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("x")
    assert os.path.exists(tmp_path / "README")
    code, out, _ = invoke("runs", str(tmp_path), "--json")
    assert code == 0 and json.loads(out) == []
