"""Contract gaps found by black-box testing (issue 16), each through the command line.

Every test here runs ``attractor-trio`` as a user would and checks only what the user sees:
the exit code, stderr, ``validate --json``, ``final.json`` and ``progress.ndjson``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from attractor_trio.cli.main import main


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def simulate(tmp_path: Path, dot: str, script: dict[str, Any]) -> tuple[int, Path, str]:
    """``run --simulate --sim-script`` on ``dot``; the exit code, logs root and stderr."""
    pipeline = write(tmp_path / "pipeline.dot", dot)
    sim_script = write(tmp_path / "script.json", json.dumps({"nodes": script}))
    root = tmp_path / "run"
    code, _, err = cli(
        "run", str(pipeline), "--simulate", "--sim-script", str(sim_script),
        "--logs-root", str(root), "--quiet", "--workdir", str(tmp_path),
    )  # fmt: skip
    return code, root, err


def final_of(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "final.json").read_text())
    return doc


def events_of(root: Path, name: str) -> list[dict[str, Any]]:
    lines = (root / "progress.ndjson").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


# ------------------------------------------------------------- fan-in after failed branches

FAN_OUT = """digraph fan {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  par [shape=component]
  join [shape=tripleoctagon]
  a [prompt="a"]
  b [prompt="b"]
  after [prompt="after"]
  repair [prompt="repair"]
  start -> par
  par -> a -> join
  par -> b -> join
  join -> after [condition="outcome=success"]
  join -> repair [condition="outcome=fail"]
  after -> exit
  repair -> exit
}
"""


def test_when_every_branch_fails_the_fan_in_routes_its_failure(tmp_path: Path) -> None:
    failing = [
        {"outcome": "fail", "failure_reason": "branch broke", "failure_class": "deterministic"}
    ]
    code, root, err = simulate(tmp_path, FAN_OUT, {"a": failing, "b": failing})
    assert code == 0, err
    completed = final_of(root)["completed_nodes"]
    assert completed[-3:] == ["join", "repair", "exit"]
    assert "after" not in completed
    [selected] = [e for e in events_of(root, "edge_selected") if e["from_node"] == "join"]
    assert (selected["to_node"], selected["method"]) == ("repair", "condition")


RANKING_FAN_IN = FAN_OUT.replace(
    "join [shape=tripleoctagon]", 'join [shape=tripleoctagon, prompt="pick the best"]'
)


@pytest.mark.slow
def test_a_run_resumed_after_its_fan_out_continues_at_the_fan_in(tmp_path: Path) -> None:
    """The fan-in's ranking call stalls and the run dies with its checkpoint at the fan-out
    (the watchdog stops it; ``final.json`` is removed as if it had never been written). Resume
    must go to the fan-in, not walk into a branch as a main-line stage."""
    script = {"join": [{"stall": "forever"}]}
    pipeline = write(tmp_path / "pipeline.dot", RANKING_FAN_IN)
    sim_script = write(tmp_path / "script.json", json.dumps({"nodes": script}))
    root = tmp_path / "run"
    code, _, err = cli(
        "run", str(pipeline), "--simulate", "--sim-script", str(sim_script), "--quiet",
        "--logs-root", str(root), "--workdir", str(tmp_path), "--stall-timeout", "1s",
    )  # fmt: skip
    assert code == 1 and final_of(root)["exit_path"] == "watchdog", err
    assert json.loads((root / "checkpoint.json").read_text())["current_node"] == "par"
    (root / "final.json").unlink()
    before = len((root / "progress.ndjson").read_text().splitlines())
    code, _, err = cli("resume", str(root), "--simulate", "--quiet")
    assert code == 0, err
    lines = (root / "progress.ndjson").read_text().splitlines()[before:]
    started = [e["node_id"] for e in map(json.loads, lines) if e["event"] == "stage_started"]
    assert started == ["join", "after", "exit"]


# ------------------------------------------------- causal failure signature through diamonds

THROUGH_DIAMONDS = """digraph diamonds {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  build [prompt="build"]
  first [shape=diamond]
  second [shape=diamond]
  start -> build -> first -> second
  first -> exit [condition="outcome=success"]
  second -> exit [condition="outcome=success"]
}
"""


def test_a_failure_through_diamonds_is_signed_by_the_stage_that_failed(tmp_path: Path) -> None:
    step = {"outcome": "fail", "failure_reason": "Tests failed: 3 of 12 in a1b2c3d4e5"}
    code, root, err = simulate(tmp_path, THROUGH_DIAMONDS, {"build": [step]})
    assert code == 1, err
    final = final_of(root)
    assert final["completed_nodes"][-3:] == ["build", "first", "second"]
    assert final["failure_reason"] == step["failure_reason"]
    assert final["failure_signature"] == "build|deterministic|tests failed: <n> of <n> in <hex>"


# ------------------------------------- failure_class on stage_attempt_finished, one classifier

ONE_STAGE = """digraph one {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  build [prompt="build", max_retries=1]
  start -> build -> exit
}
"""


def test_attempt_events_carry_the_class_the_run_reports(tmp_path: Path) -> None:
    unhinted = {"outcome": "fail", "failure_reason": "3 tests failed"}
    code, root, err = simulate(tmp_path, ONE_STAGE, {"build": [unhinted]})
    assert code == 1, err
    assert final_of(root)["failure_class"] == "deterministic"
    finished = events_of(root, "stage_attempt_finished")
    assert [e["failure_class"] for e in finished if e["node_id"] == "build"] == [
        "deterministic",
        "deterministic",
    ]
    [failed] = events_of(root, "pipeline_failed")
    assert failed["failure_class"] == "deterministic"


def test_a_class_alias_is_reported_by_its_canonical_name_everywhere(tmp_path: Path) -> None:
    aliased = {"outcome": "fail", "failure_reason": "bad input", "failure_class": "permanent"}
    code, root, err = simulate(tmp_path, ONE_STAGE, {"build": [aliased]})
    assert code == 1, err
    [blocked] = events_of(root, "stage_retry_blocked")
    [finished] = [e for e in events_of(root, "stage_attempt_finished") if e["node_id"] == "build"]
    assert blocked["failure_class"] == finished["failure_class"] == "deterministic"
    assert final_of(root)["failure_class"] == "deterministic"


# ------------------------------------------------- sim-script steps combine outcome + response

REVIEW = """digraph review {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  review [prompt="review"]
  fix [prompt="fix"]
  start -> review
  review -> fix [condition="outcome=fail"]
  review -> exit [condition="outcome=success"]
  fix -> exit
}
"""


def test_a_step_may_set_outcome_and_response_together(tmp_path: Path) -> None:
    step = {"outcome": "fail", "failure_reason": "two bugs", "response": "Found two bugs."}
    code, root, err = simulate(tmp_path, REVIEW, {"review": [step]})
    assert code == 0, err
    assert (root / "review" / "response.md").read_text() == "Found two bugs."
    assert json.loads((root / "review" / "status.json").read_text())["outcome"] == "fail"
    assert final_of(root)["completed_nodes"][-2:] == ["fix", "exit"]
    [selected] = [e for e in events_of(root, "edge_selected") if e["from_node"] == "review"]
    assert (selected["to_node"], selected["method"]) == ("fix", "condition")


# ------------------------------------------------------ whole-graph diagnostics carry positions

NO_START_NO_EXIT = """
  digraph G {
  a [prompt="a"]
}
"""

# The stylesheet string opens at line 3, column 20; each escaped quote before the error puts
# it one column further right in the file than inside the decoded stylesheet.
BAD_STYLESHEET = """digraph G {
  start [shape=Mdiamond]
  model_stylesheet="* { llm_model: \\"m\\"; } #a { llm_model b }"
  exit [shape=Msquare]
  a [prompt="a"]
  start -> a -> exit
}
"""


def test_whole_graph_diagnostics_point_at_the_digraph_keyword(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.dot", NO_START_NO_EXIT)
    code, out, _ = cli("validate", "--json", str(pipeline))
    assert code == 1
    found = {d["rule"]: (d["line"], d["col"]) for d in json.loads(out)["diagnostics"]}
    assert found["start_node"] == found["terminal_node"] == (2, 3)
    code, _, err = cli("validate", str(pipeline))
    assert f"{pipeline}:2:3: error: pipeline has no start node [start_node]" in err.splitlines()
    code, _, run_err = cli("run", str(pipeline), "--simulate", "--logs-root", str(tmp_path / "r"))
    assert code == 2 and not (tmp_path / "r").exists()
    assert f"{pipeline}:2:3: error: pipeline has no exit node [terminal_node]" in run_err


def test_a_stylesheet_error_points_into_the_stylesheet_string(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.dot", BAD_STYLESHEET)
    code, out, _ = cli("validate", "--json", str(pipeline))
    assert code == 1
    [diag] = [d for d in json.loads(out)["diagnostics"] if d["rule"] == "stylesheet_syntax"]
    assert (diag["line"], diag["col"]) == (3, 60)  # the "b" after "llm_model"
    code, _, err = cli("run", str(pipeline), "--simulate", "--logs-root", str(tmp_path / "r"))
    assert code == 2
    assert any(line.startswith(f"{pipeline}:3:60: error: ") for line in err.splitlines())


# ------------------------------------------------------ fuzz works after the README's install

ROOT = Path(__file__).resolve().parent.parent
WITHOUT_HYPOTHESIS = (
    "import sys; sys.modules['hypothesis'] = None; from attractor_trio.cli.main import main; main()"
)


def test_the_readme_install_includes_the_extra_that_fuzz_needs() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    fuzz_extra = extras["optional-dependencies"]["fuzz"]
    assert any(req.startswith("hypothesis") for req in fuzz_extra)
    install = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].splitlines()[0]
    assert "pip install -e '.[fuzz]'" in install


def test_fuzz_without_hypothesis_says_how_to_install_it(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.dot", ONE_STAGE)
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_HYPOTHESIS, "fuzz", str(pipeline)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("attractor-trio: error: ") and "Traceback" not in done.stderr
    assert "pip install 'attractor-trio[fuzz]'" in line


# ----------------------------------- fuzz reports failures routed to success by explicit edges

OPTIONAL_BUILD = """digraph optional {
  start [shape=Mdiamond]
  exit [shape=Msquare]
  build [prompt="build"]
  ship [prompt="ship"]
  start -> build
  build -> ship [condition="outcome=success"]
  build -> exit [condition="outcome=fail"]
  ship -> exit
}
"""


def test_fuzz_reports_a_failure_a_condition_routes_to_success(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.dot", OPTIONAL_BUILD)
    code, out, err = cli("fuzz", str(pipeline), "--examples", "20", "--seed", "1", "--json")
    assert code == 1, err
    findings = json.loads(out)["findings"]
    [routed] = [f for f in findings if f["kind"] == "failure_routed_to_success"]
    assert routed["node_id"] == "build"
    assert routed["detail"].endswith("by condition on build -> exit")
    assert routed["schedule"]["steps"]["build"][0]["kind"] == "fail"
