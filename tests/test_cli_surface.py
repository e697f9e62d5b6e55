"""The command line's surface (issue #20): every option and argument is explained by
``--help``; ``--quiet`` prints nothing but errors and the final line; the human display leaves
out bookkeeping records such as ``status_ingestion_decision``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from attractor_trio.cli.main import main

TOOL_PIPELINE = """digraph p {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  t [shape=parallelogram, tool_command="echo hello"]
  start -> t -> exit
}
"""
FAILING_PIPELINE = TOOL_PIPELINE.replace("echo hello", "echo oops >&2; exit 3")


def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = runner.invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def _commands(group: click.Group) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield name, command
        if isinstance(command, click.Group):
            yield from ((f"{name} {sub}", c) for sub, c in _commands(command))


# --------------------------------------------------------------------------------- help text


@pytest.mark.parametrize("name,command", list(_commands(main)), ids=lambda v: str(v))
def test_every_option_and_argument_is_explained_by_help(name: str, command: click.Command) -> None:
    """Options carry help text; arguments (click gives them none) are named in the command's
    own help, which is where ``--help`` shows them."""
    assert command.help, f"{name}: no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help or param.hidden, f"{name} {param.opts[0]}: no help text"
        elif isinstance(param, click.Argument):
            shown = param.make_metavar(click.Context(command)).strip("[].")
            assert shown.split(".")[0] in command.help, f"{name}: {shown} is not explained"


def test_the_help_of_every_command_renders(tmp_path: Path) -> None:
    for name, _ in _commands(main):
        code, out, _ = cli(*name.split(), "--help")
        assert code == 0 and "Usage:" in out


# -------------------------------------------------------------------------------------- quiet


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_run_quiet_prints_only_the_final_line(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(TOOL_PIPELINE)
    root = tmp_path / "run"
    code, out, err = cli("run", str(dot), "--logs-root", str(root), "--quiet")
    assert code == 0
    assert out == ""
    assert _lines(err) == [f"attractor-trio: success (completed) in {root}"]


def test_run_quiet_failure_is_still_one_line_with_the_reason(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(FAILING_PIPELINE)
    root = tmp_path / "run"
    code, out, err = cli("run", str(dot), "--logs-root", str(root), "--quiet")
    assert code == 1 and out == ""
    [line] = _lines(err)
    assert line.startswith(f"attractor-trio: fail (stage_failed) in {root} — ")
    assert "oops" in line


def test_run_quiet_still_prints_errors(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text("digraph g { a -> b }")
    code, _, err = cli("run", str(dot), "--simulate", "--quiet", "--logs-root", str(tmp_path / "r"))
    assert code == 2 and "start_node" in err


def test_run_without_quiet_still_shows_progress(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(TOOL_PIPELINE)
    root = tmp_path / "run"
    code, _, err = cli("run", str(dot), "--logs-root", str(root))
    assert code == 0
    assert f"logs root: {root}" in err and "▶ t attempt 1/1" in err


def test_resume_quiet_prints_only_the_final_line(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(FAILING_PIPELINE)
    root = tmp_path / "run"
    assert cli("run", str(dot), "--logs-root", str(root), "--quiet")[0] == 1
    code, out, err = cli("resume", str(root), "--from", "t", "--quiet")
    assert code == 1 and out == ""
    [line] = _lines(err)
    assert line.startswith(f"attractor-trio: fail (stage_failed) in {root} — ")


def test_status_follow_quiet_prints_only_the_final_line(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(TOOL_PIPELINE)
    root = tmp_path / "run"
    assert cli("run", str(dot), "--logs-root", str(root), "--quiet")[0] == 0
    code, out, err = cli("status", str(root), "--follow", "--quiet")
    assert code == 0
    assert _lines(out) == [] and _lines(err) == [f"attractor-trio: success (completed) in {root}"]
    code, out, err = cli("status", str(root), "--follow")
    assert code == 0 and "▶ t attempt 1/1" in out and "following" in err


def test_status_quiet_without_follow_prints_the_state_line(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(FAILING_PIPELINE)
    root = tmp_path / "run"
    assert cli("run", str(dot), "--logs-root", str(root), "--quiet")[0] == 1
    code, out, err = cli("status", str(root), "--quiet")
    assert code == 0 and err == ""
    [line] = _lines(out)
    assert line.startswith(f"attractor-trio: fail (stage_failed) in {root} — ")


# ------------------------------------------------------------------------------ the display


def test_status_ingestion_records_stay_out_of_the_human_display(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(TOOL_PIPELINE)
    root = tmp_path / "run"
    code, _, err = cli("run", str(dot), "--logs-root", str(root))
    assert code == 0
    recorded = [json.loads(line) for line in (root / "progress.ndjson").read_text().splitlines()]
    assert any(e["event"] == "status_ingestion_decision" for e in recorded)  # still recorded
    assert "status_ingestion_decision" not in err
    code, out, _ = cli("status", str(root), "--follow")
    assert code == 0 and "status_ingestion_decision" not in out
    code, out, _ = cli("status", str(root), "--follow", "--json")
    assert "status_ingestion_decision" in out  # machine output keeps every event
