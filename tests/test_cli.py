"""The command line (contract.md §1, §9): exit codes, output formats, and the examples end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from attractor_trio.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CONTRACT_COMMANDS = (
    "run",
    "validate",
    "resume",
    "status",
    "stop",
    "serve",
    "fuzz",
    "runs",
    "graph",
)


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


def test_version_and_help_list_every_contract_command() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and "attractor-trio" in out
    code, out, _ = cli("--help")
    assert code == 0
    for command in CONTRACT_COMMANDS:
        assert f"  {command} " in out or f"  {command}\n" in out, command


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "attractor_trio", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "attractor-trio" in out.stdout


# --- validate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example", sorted(EXAMPLES.rglob("*.dot")), ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_every_example_validates(example: Path) -> None:
    """Shipped examples are what users copy: no errors and no warnings (``--strict``)."""
    code, out, err = cli("validate", str(example), "--strict", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert (report["errors"], report["warnings"]) == (0, 0), report["diagnostics"]


def test_validate_json_shape(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dot"
    bad.write_text('digraph g {\n start [shape=Mdiamond]\n a [promt="x"]\n start -> a\n}\n')
    code, out, _ = cli("validate", str(bad), "--json")
    report = json.loads(out)
    assert code == 1
    assert set(report) == {"file", "valid", "errors", "warnings", "diagnostics"}
    assert report["valid"] is False and report["errors"] >= 1 and report["warnings"] >= 1
    rules = {d["rule"] for d in report["diagnostics"]}
    assert {"terminal_node", "unknown_attribute"} <= rules
    unknown = next(d for d in report["diagnostics"] if d["rule"] == "unknown_attribute")
    assert set(unknown) >= {"rule", "severity", "message", "node_id", "edge", "line", "col"}
    assert unknown["line"] == 3 and unknown["node_id"] == "a"


def test_validate_human_output_has_positions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dot"
    bad.write_text(
        "digraph g {\n start [shape=Mdiamond]\n exit [shape=Msquare]\n"
        ' start -> exit [condition="outcome=sucess!"]\n}\n'
    )
    code, _, err = cli("validate", str(bad))
    assert code == 1
    assert f"{bad}:4:" in err and "error:" in err and "invalid outcome 'sucess!'" in err


def test_validate_strict_fails_on_warnings(tmp_path: Path) -> None:
    warn = tmp_path / "warn.dot"
    warn.write_text(
        "digraph g { start [shape=Mdiamond]; exit [shape=Msquare]; a; start -> a -> exit }"
    )
    assert cli("validate", str(warn))[0] == 0
    code, out, _ = cli("validate", str(warn), "--strict", "--json")
    assert code == 1 and json.loads(out)["valid"] is False


def test_validate_syntax_error_is_a_diagnostic(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dot"
    bad.write_text("graph g {\n a -- b\n}\n")
    code, out, _ = cli("validate", str(bad), "--json")
    assert code == 1
    [diag] = json.loads(out)["diagnostics"]
    assert diag["rule"] == "syntax" and diag["line"] == 1 and "digraph" in diag["message"]


def test_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = cli("validate", str(tmp_path / "nope.dot"))
    assert code == 2 and "does not exist" in err


# --- run --------------------------------------------------------------------------------------

RUNNABLE = {
    "simple.dot": [],
    "branch.dot": [],
    "review.dot": ["--auto-approve"],
    "smoke_test.dot": [],
    "plan_implement_review.dot": [],
    "parallel_review.dot": [],
    "human_approval.dot": ["--auto-approve"],
    "ci_tools.dot": [],
    "supervisor.dot": [],
    "provider_review.dot": [],
}


def test_every_example_is_covered() -> None:
    """A new example must be added to RUNNABLE (or to the provider-only list) on purpose."""
    # not runnable as-is: a child pipeline, a provider example, and fuzz's deliberately flawed one
    provider_only = {"supervisor_child.dot", "agent_feature.dot", "flawed_loop.dot"}
    names = {p.name for p in EXAMPLES.glob("*.dot")} - provider_only
    assert names <= set(RUNNABLE), names - set(RUNNABLE)


@pytest.mark.parametrize("name", [n for n, a in RUNNABLE.items() if a is not None])
def test_examples_run_with_simulation(tmp_path: Path, name: str) -> None:
    root = tmp_path / "run"
    args = ["run", str(EXAMPLES / name), "--simulate", "--logs-root", str(root), "--quiet"]
    code, _, err = cli(*[*args, *RUNNABLE[name]], cwd=tmp_path)
    assert code == 0, err
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "success"


def test_sim_script_example_takes_the_failure_path(tmp_path: Path) -> None:
    root = tmp_path / "run"
    code, _, err = cli(
        "run",
        str(EXAMPLES / "branch.dot"),
        "--simulate",
        "--sim-script",
        str(EXAMPLES / "sim" / "branch-validate-fails.yaml"),
        "--logs-root",
        str(root),
        "--quiet",
    )
    assert code == 0, err
    final = json.loads((root / "final.json").read_text())
    assert final["completed_nodes"].count("implement") == 2


def test_smoke_test_through_the_cli(tmp_path: Path) -> None:
    """Spec §11.13 SM-04…SM-07 through the command line."""
    root = tmp_path / "run"
    code, _, _ = cli(
        "run", str(EXAMPLES / "smoke_test.dot"), "--simulate", "--logs-root", str(root)
    )
    assert code == 0
    for stage in ("plan", "implement", "review"):
        for artifact in ("prompt.md", "response.md", "status.json"):
            assert (root / stage / artifact).exists(), (stage, artifact)
    checkpoint = json.loads((root / "checkpoint.json").read_text())
    assert checkpoint["current_node"] == "done"
    assert {"plan", "implement", "review"} <= set(checkpoint["completed_nodes"])
    assert json.loads((root / "implement" / "status.json").read_text())["outcome"] == "success"
    assert "Create a hello world Python script" in (root / "plan" / "prompt.md").read_text()


def test_failing_pipeline_exits_1_with_the_raw_reason(tmp_path: Path) -> None:
    dot = tmp_path / "p.dot"
    dot.write_text(
        "digraph p { start [shape=Mdiamond]; exit [shape=Msquare]\n"
        ' t [shape=parallelogram, tool_command="echo oops >&2; exit 3"]\n'
        " start -> t -> exit }"
    )
    root = tmp_path / "run"
    code, _, err = cli("run", str(dot), "--logs-root", str(root), "--quiet", cwd=tmp_path)
    assert code == 1
    final = json.loads((root / "final.json").read_text())
    assert final["exit_path"] == "stage_failed"
    assert "code 3" in final["failure_reason"] and "oops" in final["failure_reason"]
    assert "oops" in err


def test_run_refuses_codergen_without_backend(tmp_path: Path) -> None:
    root = tmp_path / "run"
    code, _, err = cli("run", str(EXAMPLES / "simple.dot"), "--logs-root", str(root))
    assert code == 2
    assert "--simulate" in err and "--config" in err
    assert not root.exists()


def test_run_with_parse_error_exits_2_without_a_run_directory(tmp_path: Path) -> None:
    dot = tmp_path / "bad.dot"
    dot.write_text('digraph g {\n a -> b [label="x" weight=2]\n}\n')
    root = tmp_path / "run"
    code, _, err = cli("run", str(dot), "--simulate", "--logs-root", str(root))
    assert code == 2
    assert f"{dot}:2:" in err and "comma" in err
    assert not root.exists()
    assert "Traceback" not in err


def test_run_with_validation_error_exits_2(tmp_path: Path) -> None:
    dot = tmp_path / "bad.dot"
    dot.write_text("digraph g { a -> b }")
    root = tmp_path / "run"
    code, _, err = cli("run", str(dot), "--simulate", "--logs-root", str(root))
    assert code == 2 and "start_node" in err and not root.exists()


def test_bad_config_and_sim_script_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("stall_timout: 5m\n")
    code, _, err = cli("run", str(EXAMPLES / "simple.dot"), "--config", str(config))
    assert code == 2 and "stall_timeout" in err
    script = tmp_path / "s.yaml"
    script.write_text("nodes:\n  run_tests:\n    - outcom: fail\n")
    code, _, err = cli(
        "run", str(EXAMPLES / "simple.dot"), "--simulate", "--sim-script", str(script)
    )
    assert code == 2 and "outcom" in err


def test_json_mode_prints_only_events_on_stdout(tmp_path: Path) -> None:
    root = tmp_path / "run"
    code, out, err = cli(
        "run", str(EXAMPLES / "simple.dot"), "--simulate", "--json", "--logs-root", str(root)
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["event"] == "pipeline_started" and lines[-1]["event"] == "pipeline_completed"
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert str(root) in err


def test_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "run"
    assert cli("run", str(EXAMPLES / "simple.dot"), "--simulate", "--logs-root", str(root))[0] == 0
    code, _, err = cli("run", str(EXAMPLES / "simple.dot"), "--simulate", "--logs-root", str(root))
    assert code == 2 and "resume" in err


def test_resume_and_status_of_a_finished_run(tmp_path: Path) -> None:
    root = tmp_path / "run"
    cli("run", str(EXAMPLES / "simple.dot"), "--simulate", "--logs-root", str(root))
    code, _, err = cli("resume", str(root), "--simulate")
    assert code == 0 and "nothing to resume" in err
    code, out, _ = cli("status", str(root), "--json")
    status = json.loads(out)
    assert code == 0 and status["state"] == "success"
    assert set(status) >= {
        "run_id",
        "state",
        "current_node",
        "active_attempts",
        "failure_reason",
        "failure_class",
        "logs_root",
    }


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    code, _, err = cli("resume", str(root), "--simulate")
    assert code == 2 and "Traceback" not in err


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_over(
    tmp_path: Path,
) -> None:
    """The state a SIGKILL between ``manifest.json`` and the first checkpoint leaves: ``run``
    refuses the directory, so ``resume`` must run it (from the start, with its ``--set``)."""
    from attractor_trio.persist.manifest import write_manifest

    root = tmp_path / "run"
    root.mkdir()
    source = (EXAMPLES / "simple.dot").read_text()
    write_manifest(
        root,
        run_id="killed-early",
        name="simple",
        label="",
        goal="",
        dot_path=EXAMPLES / "simple.dot",
        dot_source=source,
        argv=["attractor-trio", "run", "simple.dot", "--set", "ticket=T-9"],
        context={"ticket": "T-9"},
    )
    assert cli("run", str(EXAMPLES / "simple.dot"), "--simulate", "--logs-root", str(root))[0] == 2
    code, _, err = cli("resume", str(root), "--simulate")
    assert code == 0, err
    assert "resuming run killed-early" in err and "Traceback" not in err
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "success" and final["completed_nodes"][0] == "start"
    checkpoint = json.loads((root / "checkpoint.json").read_text())
    assert checkpoint["run_id"] == "killed-early" and checkpoint["context"]["ticket"] == "T-9"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "run"
    script = tmp_path / "s.yaml"
    script.write_text("nodes:\n  report: [{outcome: fail, failure_reason: x}]\n")
    cli(
        "run",
        str(EXAMPLES / "simple.dot"),
        "--simulate",
        "--sim-script",
        str(script),
        "--logs-root",
        str(root),
    )
    (root / "final.json").unlink()
    (root / "checkpoint.json").write_text('{"timestamp": ')
    code, _, err = cli("resume", str(root), "--simulate")
    assert code == 2 and "checkpoint.json" in err and "Traceback" not in err


# --- signals (real processes) -------------------------------------------------------------------


def _start_run(tmp_path: Path, dot_text: str) -> tuple[subprocess.Popen[str], Path]:
    dot = tmp_path / "p.dot"
    dot.write_text(dot_text)
    root = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attractor_trio",
            "run",
            str(dot),
            "--logs-root",
            str(root),
            "--quiet",
            "--kill-grace",
            "1s",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not (root / "t" / "stdout.log").exists():
        assert time.monotonic() < deadline, "stage never started"
        time.sleep(0.02)
    return proc, root


SLEEPER = (
    "digraph p { start [shape=Mdiamond]; exit [shape=Msquare]\n"
    ' t [shape=parallelogram, tool_command="echo $$ > pid.txt; sleep 30"]\n'
    " start -> t -> exit }"
)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_cancels_the_run(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    proc, root = _start_run(tmp_path, SLEEPER)
    time.sleep(0.3)
    proc.send_signal(sig)
    assert proc.wait(timeout=15) == code
    final = json.loads((root / "final.json").read_text())
    assert final["status"] == "canceled" and final["exit_path"] == "canceled"
    pid = int((tmp_path / "pid.txt").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    events = [json.loads(line) for line in (root / "progress.ndjson").read_text().splitlines()]
    assert events[-1]["event"] == "pipeline_failed" and events[-1]["status"] == "canceled"
    assert [e["node_id"] for e in events if e["event"] == "cancellation_exit"] == ["t"]


# --- the bad-input corpus through the command line ----------------------------------------------

BAD = sorted((ROOT / "tests" / "data" / "bad").glob("*.dot"))


def _expectation(path: Path) -> tuple[str, str]:
    header = path.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    position, _, fragment = header.removeprefix("// expect:").strip().partition(": ")
    return position, fragment


@pytest.mark.parametrize("bad", BAD, ids=lambda p: p.name)
def test_bad_input_gives_exit_2_with_position_and_no_traceback(tmp_path: Path, bad: Path) -> None:
    position, fragment = _expectation(bad)
    root = tmp_path / "run"
    code, _, err = cli("run", str(bad), "--simulate", "--logs-root", str(root))
    assert code == 2, err
    assert f"{bad}:{position}: error:" in err and fragment in err
    assert "Traceback" not in err and not root.exists()
    code, _, err = cli("validate", str(bad))
    assert code == 1 and f"{bad}:{position}: error:" in err
