"""Pipelines written for kilroy and the spec's reference pipelines (contract.md §10), end to end
through the CLI: custom outcomes and their aliases, start/exit by id, unknown shapes,
attribute aliases and misspellings, the ``KILROY_*`` variables, and ``examples/compat``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from attractor_trio.backends.provider import ApiBackend
from attractor_trio.dot import load_dot
from attractor_trio.dot.pipeline import load
from attractor_trio.runconfig import ProviderConfig, RunConfig
from attractor_trio.testing import Schedule, Step, check_invariants, run_schedule
from attractor_trio.testing.fuzz import targeted_schedules
from attractor_trio.testing.strategies import custom_outcomes

from .helpers import attempt_info, events, graph_of, named, read_json, run_dot
from .test_cli import EXAMPLES, cli
from .test_provider_backend import Scripted

COMPAT = EXAMPLES / "compat"
STATIC = Path(__file__).resolve().parent.parent / "attractor_trio" / "server" / "static"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(tmp_path: Path, dot: str, script: dict[str, Any] | None = None) -> tuple[int, Path, str]:
    """``run --simulate`` of ``dot`` (with a sim script when given); the logs root."""
    pipeline = _write(tmp_path, "p.dot", dot)
    root = tmp_path / "run"
    args = ["run", str(pipeline), "--simulate", "--logs-root", str(root), "--quiet"]
    if script is not None:
        args += ["--sim-script", str(_write(tmp_path, "s.json", json.dumps({"nodes": script})))]
    code, _, err = cli(*args, cwd=tmp_path)
    return code, root, err


def _validate(tmp_path: Path, dot: str, *flags: str) -> tuple[int, dict[str, Any]]:
    pipeline = _write(tmp_path, "v.dot", dot)
    code, out, _ = cli("validate", str(pipeline), "--json", *flags)
    return code, json.loads(out)


def _by_rule(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [d for d in report["diagnostics"] if d["rule"] == rule]


def _completed(root: Path, node_id: str) -> list[str]:
    return [e["status"] for e in named(root, "stage_completed") if e["node_id"] == node_id]


def _path(root: Path) -> list[str]:
    return [e["node_id"] for e in named(root, "stage_started")]


STEER = """digraph g {
  start [shape=Mdiamond]; exit [shape=Msquare]
  steer [prompt="decide"]; a [prompt="a"]; b [prompt="b"]
  start -> steer
  steer -> a [condition="outcome=Needs-Review"]
  steer -> b [condition="outcome=success"]
  steer -> exit
  a -> exit
  b -> exit
}"""


# --- custom outcome values -----------------------------------------------------------------


def test_custom_outcome_from_a_sim_script_routes_and_is_recorded_everywhere(
    tmp_path: Path,
) -> None:
    code, root, err = _run(tmp_path, STEER, {"steer": [{"outcome": "needs_review"}]})
    assert code == 0, err
    assert _path(root) == ["start", "steer", "a", "exit"]
    assert _completed(root, "steer") == ["needs_review"]
    attempts = [e for e in named(root, "stage_attempt_finished") if e["node_id"] == "steer"]
    assert [e["status"] for e in attempts] == ["needs_review"]
    status = read_json(root / "steer" / "status.json")
    assert status["outcome"] == status["status"] == "needs_review"
    checkpoint = read_json(root / "checkpoint.json")
    assert checkpoint["node_outcomes"]["steer"]["status"] == "needs_review"
    assert read_json(root / "final.json")["status"] == "success"


def test_outcome_success_does_not_match_a_custom_outcome(tmp_path: Path) -> None:
    """``process`` routes like success: matching conditions first, then unconditional edges."""
    code, root, err = _run(tmp_path, STEER, {"steer": [{"outcome": "process"}]})
    assert code == 0, err
    assert _path(root) == ["start", "steer", "exit"]


def test_an_unrouted_custom_outcome_fails_the_run_naming_it(tmp_path: Path) -> None:
    dot = STEER.replace("  steer -> exit\n", "")
    code, root, _ = _run(tmp_path, dot, {"steer": [{"outcome": "maybe"}]})
    assert code == 1
    final = read_json(root / "final.json")
    assert final["exit_path"] == "no_route"
    assert "matches outcome 'maybe'" in final["failure_reason"]


def test_custom_outcome_in_a_status_file_routes_and_fills_the_context(tmp_path: Path) -> None:
    dot = """digraph g {
      start [shape=Mdiamond]; exit [shape=Msquare]
      t [shape=parallelogram, tool_command="echo '{\\"outcome\\": \\"NEEDS-FIX\\"}' > status.json"]
      fix [prompt="fix"]
      gate [shape=diamond]
      start -> t -> gate
      gate -> fix [condition="outcome=needs_fix && context.outcome=needs_fix"]
      gate -> exit [condition="outcome!=needs_fix"]
      fix -> exit
    }"""
    code, root, err = _run(tmp_path, dot)
    assert code == 0, err
    assert _path(root) == ["start", "t", "gate", "fix", "exit"]
    assert _completed(root, "gate") == ["needs_fix"]  # a diamond passes the custom value on


def test_custom_outcome_is_success_for_retries_and_goal_gates(tmp_path: Path) -> None:
    dot = """digraph g {
      start [shape=Mdiamond]; exit [shape=Msquare]
      gate [prompt="check", goal_gate=true, max_retries=3, retry_target=gate]
      start -> gate -> exit
    }"""
    code, root, err = _run(tmp_path, dot, {"gate": [{"outcome": "done"}]})
    assert code == 0, err
    assert [e["node_id"] for e in named(root, "stage_attempt_started")].count("gate") == 1
    assert not named(root, "stage_retrying")
    assert read_json(root / "final.json")["status"] == "success"


@pytest.mark.parametrize(
    ("reported", "status"),
    [
        ("ok", "success"),
        ("degraded_success", "partial_success"),
        ("Degraded-Success", "partial_success"),
        ("failure", "fail"),
        ("ERROR", "fail"),
        ("skip", "skipped"),
    ],
)
def test_status_aliases_read_as_their_status(tmp_path: Path, reported: str, status: str) -> None:
    dot = f"""digraph g {{
      start [shape=Mdiamond]; exit [shape=Msquare]
      t [shape=parallelogram, tool_command="echo '{{\\"status\\": \\"{reported}\\", \\"failure_reason\\": \\"r\\"}}' > status.json"]
      start -> t
      t -> exit [condition="outcome={status}"]
      t -> exit
    }}"""
    _code, root, err = _run(tmp_path, dot)
    assert _completed(root, "t") == [status], err
    assert read_json(root / "t" / "status.json")["outcome"] == status
    edge = next(e for e in named(root, "edge_selected") if e["from_node"] == "t")
    assert edge["method"] == "condition"


def test_invalid_outcome_value_in_a_sim_script_is_refused(tmp_path: Path) -> None:
    code, _root, err = _run(tmp_path, STEER, {"steer": [{"outcome": "all done"}]})
    assert code == 2
    assert "'outcome' 'all done' is not a stage status" in err and "custom value" in err


def test_conditions_on_custom_outcomes_validate_with_an_info(tmp_path: Path) -> None:
    code, report = _validate(tmp_path, STEER.replace("Needs-Review", "sucess"), "--strict")
    assert code == 0 and report["valid"] and report["warnings"] == 0
    [info] = _by_rule(report, "custom_outcome")
    assert info["severity"] == "info"
    assert "'sucess'" in info["message"] and "did you mean success?" in info["message"]
    assert info["edge"] == {"from": "steer", "to": "a"}


# --- start and exit by id ------------------------------------------------------------------


def test_start_and_exit_found_by_id_in_any_case_run_as_start_and_exit(tmp_path: Path) -> None:
    dot = """digraph g {
      START [shape=circle, prompt="never sent to a model"]
      End [shape=doublecircle]
      work [prompt="w"]
      START -> work -> End
    }"""
    code, report = _validate(tmp_path, dot, "--strict")
    assert code == 0 and report["warnings"] == 0, report
    code, root, err = _run(tmp_path, dot)
    assert code == 0, err
    handlers = {e["node_id"]: e["handler"] for e in named(root, "stage_started")}
    assert handlers == {"START": "start", "work": "codergen", "End": "exit"}
    assert not (root / "START" / "prompt.md").exists()
    assert not (root / "End" / "prompt.md").exists()
    assert read_json(root / "final.json")["completed_nodes"] == ["START", "work", "End"]


def test_the_spec_shape_wins_over_the_id(tmp_path: Path) -> None:
    """With an Msquare node, a node called ``end`` is an ordinary stage."""
    dot = """digraph g {
      start [shape=Mdiamond]; done [shape=Msquare]
      end [prompt="e"]
      start -> end -> done
    }"""
    code, root, err = _run(tmp_path, dot)
    assert code == 0, err
    assert _path(root) == ["start", "end", "done"]
    assert {e["node_id"]: e["handler"] for e in named(root, "stage_started")}["end"] == "codergen"


def test_two_start_candidates_are_an_error_naming_both(tmp_path: Path) -> None:
    dot = """digraph g {
      start [shape=circle]; Start [shape=circle]; exit [shape=circle]
      start -> exit
      Start -> exit
    }"""
    code, report = _validate(tmp_path, dot)
    assert code == 1
    [error] = _by_rule(report, "start_node")
    assert "start" in error["message"] and "Start" in error["message"]
    assert "2 start nodes" in error["message"]


# --- unknown shapes ------------------------------------------------------------------------


def test_a_shape_without_handler_warns_and_strict_refuses(tmp_path: Path) -> None:
    dot = """digraph g {
      start [shape=Mdiamond]; exit [shape=Msquare]
      loop_begin [shape=trapezium, prompt="p"]
      start -> loop_begin -> exit
    }"""
    code, report = _validate(tmp_path, dot)
    assert code == 0
    [warning] = _by_rule(report, "unknown_shape")
    assert warning["severity"] == "warning" and warning["node_id"] == "loop_begin"
    assert "'trapezium'" in warning["message"] and "will run as an LLM stage" in warning["message"]
    assert _validate(tmp_path, dot, "--strict")[0] == 1


# --- attribute aliases and misspellings ----------------------------------------------------


ALIASED = """digraph g {
  graph [goal="ship it", default_max_retry="2"]
  start [shape=Mdiamond]; exit [shape=Msquare]
  work [llm_prompt="Do $goal now", max_agent_turns="7", max_tokens="9000"]
  start -> work -> exit
}"""


def test_kilroy_attribute_aliases_are_read_with_an_info_each(tmp_path: Path) -> None:
    code, report = _validate(tmp_path, ALIASED, "--strict")
    assert code == 0 and report["warnings"] == 0, report
    messages = [d["message"] for d in _by_rule(report, "attribute_alias")]
    assert all(d["severity"] == "info" for d in _by_rule(report, "attribute_alias"))
    for alias, name in [
        ("llm_prompt", "prompt"),
        ("max_agent_turns", "agent.max_turns"),
        ("max_tokens", "llm.max_tokens"),
        ("default_max_retry", "default_max_retries"),
    ]:
        assert any(f"'{alias}'" in m and f"read as '{name}'" in m for m in messages), alias
    graph = load(tmp_path / "v.dot")
    work = graph.node("work")
    assert work.prompt == "Do ship it now"
    assert work.attrs["agent.max_turns"] == "7" and work.llm_max_tokens == 9000
    assert graph.default_max_retries == 2


def test_llm_prompt_is_the_prompt_the_stage_sends(tmp_path: Path) -> None:
    _code, root, err = _run(
        tmp_path, ALIASED, {"work": [{"outcome": "retry", "failure_reason": "x"}]}
    )
    assert "Do ship it now" in (root / "work" / "prompt.md").read_text()
    attempts = [e for e in named(root, "stage_attempt_started") if e["node_id"] == "work"]
    assert len(attempts) == 3, err  # default_max_retry=2: three attempts


def test_an_explicit_spec_name_wins_over_its_alias(tmp_path: Path) -> None:
    dot = ALIASED.replace('llm_prompt="Do $goal now"', 'prompt="mine", llm_prompt="theirs"')
    _code, report = _validate(tmp_path, dot)
    assert any("'llm_prompt' is ignored" in d["message"] for d in report["diagnostics"])
    assert load(tmp_path / "v.dot").node("work").prompt == "mine"


def test_a_misspelled_prompt_is_a_warning_naming_prompt_and_strict_refuses(
    tmp_path: Path,
) -> None:
    dot = """digraph g {
      start [shape=Mdiamond]; exit [shape=Msquare]
      work [label="Work", promt="do the work"]
      start -> work -> exit
    }"""
    code, report = _validate(tmp_path, dot)
    assert code == 0
    [warning] = _by_rule(report, "unknown_attribute")
    assert warning["severity"] == "warning"
    assert "'promt'" in warning["message"] and "did you mean 'prompt'?" in warning["message"]
    assert _validate(tmp_path, dot, "--strict")[0] == 1


# --- KILROY_* environment ------------------------------------------------------------------


KILROY_NAMES = (
    ("KILROY_RUN_ID", "ATTRACTOR_RUN_ID"),
    ("KILROY_NODE_ID", "ATTRACTOR_NODE_ID"),
    ("KILROY_LOGS_ROOT", "ATTRACTOR_LOGS_ROOT"),
    ("KILROY_STAGE_LOGS_DIR", "ATTRACTOR_STAGE_DIR"),
    ("KILROY_STAGE_STATUS_PATH", "ATTRACTOR_STATUS_PATH"),
    ("KILROY_WORKTREE_DIR", "ATTRACTOR_WORKDIR"),
    ("KILROY_PREDECESSOR_NODE", "ATTRACTOR_PREDECESSOR_NODE"),
    ("KILROY_PREDECESSOR_OUTCOME", "ATTRACTOR_PREDECESSOR_OUTCOME"),
)


def test_stages_get_the_kilroy_variables(tmp_path: Path) -> None:
    dot = """digraph g {
      start [shape=Mdiamond]; exit [shape=Msquare]
      first [shape=parallelogram, tool_command="env > $ATTRACTOR_STAGE_DIR/env.txt"]
      steer [prompt="s"]
      second [shape=parallelogram, tool_command="env > $ATTRACTOR_STAGE_DIR/env.txt"]
      start -> first -> steer -> second -> exit
    }"""
    code, root, err = _run(tmp_path, dot, {"steer": [{"outcome": "process"}]})
    assert code == 0, err
    for node, predecessor, outcome in [
        ("first", "start", "success"),
        ("second", "steer", "process"),
    ]:
        lines = (root / node / "env.txt").read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if line.startswith(("KILROY_", "ATTR")))
        for kilroy, attractor in KILROY_NAMES:
            assert env[kilroy] == env[attractor], (node, kilroy)
        assert env["KILROY_NODE_ID"] == node and env["KILROY_STAGE_LOGS_DIR"] == str(root / node)
        assert env["KILROY_PREDECESSOR_NODE"] == predecessor
        assert env["KILROY_PREDECESSOR_OUTCOME"] == outcome
        assert env["KILROY_STAGE_STATUS_FALLBACK_PATH"] == str(tmp_path / "status.json")


def test_kilroy_predecessor_variables_are_present_and_empty_without_predecessor(
    tmp_path: Path,
) -> None:
    """The start node has no predecessor; kilroy's stages expect the keys set, maybe empty."""
    info = attempt_info(tmp_path, "start", workdir=tmp_path / "work")
    env = info.process_env()
    assert env["KILROY_PREDECESSOR_NODE"] == env["KILROY_PREDECESSOR_OUTCOME"] == ""
    assert env["KILROY_STAGE_STATUS_FALLBACK_PATH"] == str(tmp_path / "work" / "status.json")


# --- examples/compat -----------------------------------------------------------------------


COMPAT_RUNS: dict[str, list[str]] = {
    "consensus.dot": ["--sim-script", str(COMPAT / "consensus.yaml")],
    "steering.dot": ["--sim-script", str(COMPAT / "steering.yaml")],
    "tool_status.dot": [],
}


def test_every_compat_example_is_covered() -> None:
    assert {p.name for p in COMPAT.glob("*.dot")} == set(COMPAT_RUNS)


@pytest.mark.parametrize("name", sorted(COMPAT_RUNS))
def test_compat_examples_validate_without_warnings_and_run(tmp_path: Path, name: str) -> None:
    code, out, _ = cli("validate", str(COMPAT / name), "--json", "--strict")
    report = json.loads(out)
    assert code == 0 and report["errors"] == report["warnings"] == 0, report
    root = tmp_path / "run"
    args = ["run", str(COMPAT / name), "--simulate", "--logs-root", str(root), "--quiet"]
    code, _, err = cli(*args, *COMPAT_RUNS[name], cwd=tmp_path)
    assert code == 0, err
    assert read_json(root / "final.json")["status"] == "success"
    assert events(root)[-1]["event"] == "pipeline_completed"


def test_the_steering_example_takes_all_three_custom_outcomes(tmp_path: Path) -> None:
    root = tmp_path / "run"
    args = ["run", str(COMPAT / "steering.dot"), "--simulate", "--logs-root", str(root)]
    code, _, err = cli(*args, *COMPAT_RUNS["steering.dot"], "--quiet", cwd=tmp_path)
    assert code == 0, err
    assert _completed(root, "triage") == ["process", "needs_review", "done"]
    assert _path(root) == ["start", "triage", "port", "triage", "review", "triage", "exit"]


def test_the_consensus_example_gates_on_a_custom_yes(tmp_path: Path) -> None:
    root = tmp_path / "run"
    args = ["run", str(COMPAT / "consensus.dot"), "--simulate", "--logs-root", str(root)]
    code, _, err = cli(*args, *COMPAT_RUNS["consensus.dot"], "--quiet", cwd=tmp_path)
    assert code == 0, err
    assert _completed(root, "CheckDoD") == ["needs_dod"]
    assert _completed(root, "Consensus") == ["no", "yes"]
    assert _path(root)[-2:] == ["Consensus", "Exit"]


@pytest.mark.parametrize("mode", ["one_shot", "agent_loop"])
async def test_kilroy_max_tokens_caps_every_model_call(
    tmp_path: Path, autojump_clock: Any, mode: str
) -> None:
    adapter = Scripted("done")
    providers = {"a": ProviderConfig(name="a", kind="openai", model="m", mode=mode)}
    backend = ApiBackend(RunConfig(backend="a", providers=providers), "a", adapters={"a": adapter})
    result = await run_dot(ALIASED, tmp_path / "run", backend=backend)
    assert result.status == "success"
    assert adapter.requests and {r.max_tokens for r in adapter.requests} == {9000}


# --- fuzz explores custom outcomes ---------------------------------------------------------


UNBOUNDED_STEER = """digraph g {
  start [shape=Mdiamond]; exit [shape=Msquare]
  triage [prompt="t"]; port [prompt="p"]
  check [shape=diamond]
  start -> triage -> check
  check -> port [condition="outcome=process"]
  check -> exit [condition="outcome=done"]
  port -> triage
}"""


def test_custom_outcomes_a_steering_stage_is_routed_on_are_found_through_diamonds() -> None:
    graph = graph_of(UNBOUNDED_STEER)
    assert custom_outcomes(graph, "triage") == ("process", "done")
    assert custom_outcomes(graph, "port") == ()
    steering = {
        s.steps["triage"][0].outcome for s in targeted_schedules(graph) if "triage" in s.steps
    }
    assert {"process", "done"} <= steering


def test_fuzz_explores_a_steering_stages_custom_outcomes(tmp_path: Path) -> None:
    """Plain success routes nowhere after ``check``; only the custom outcomes reach the loop,
    and reporting ``process`` forever is a loop nothing stops."""
    path = _write(tmp_path, "steer.dot", UNBOUNDED_STEER)
    code, out, _ = cli("fuzz", str(path), "--examples", "3", "--seed", "1", "--json")
    assert code == 1
    findings = json.loads(out)["findings"]
    loop = next(f for f in findings if f["kind"] == "non_termination")
    assert loop["schedule"]["steps"]["triage"] == [{"kind": "success", "outcome": "process"}]


def test_a_custom_outcome_step_round_trips_and_keeps_the_invariants(tmp_path: Path) -> None:
    step = Step(outcome="process", delay=1.0)
    assert Step.from_json(json.loads(json.dumps(step.to_json()))) == step
    assert step.describe() == "outcome process after 1s" and not step.is_default
    with pytest.raises(ValueError, match="needs kind 'success'"):
        Step("fail", outcome="process")
    with pytest.raises(ValueError, match="not a custom outcome"):
        Step(outcome="success")
    schedule = Schedule({"triage": (Step(outcome="process"), Step(outcome="done"))})
    obs = run_schedule(graph_of(UNBOUNDED_STEER), schedule, tmp_path / "run")
    assert obs.result is not None and obs.result.status == "success"
    assert _completed(obs.logs_root, "triage") == ["process", "done"]
    assert check_invariants(obs) == []


# --- the live page and `graph --run` ------------------------------------------------------


def test_graph_colors_a_stage_with_a_custom_outcome_as_success(tmp_path: Path) -> None:
    code, root, err = _run(tmp_path, STEER, {"steer": [{"outcome": "needs_review"}]})
    assert code == 0, err
    out = tmp_path / "colored.dot"
    assert cli("graph", str(tmp_path / "p.dot"), "--run", str(root), "-o", str(out))[0] == 0
    fills = {node.id: node.attrs["fillcolor"] for node in load_dot(out)}
    assert fills["steer"] == fills["a"] == "green" and fills["b"] == "white"


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="needs Node.js to load the viewer's pure half")
def test_the_live_page_shows_a_custom_outcome_as_success() -> None:
    """viewer-core.js has no DOM access, so Node.js can load it (the Chromium test covers the
    page itself): a stage completed with a custom outcome is a success, garbage is a failure."""
    script = (
        "global.window = {};"
        f"require({json.dumps(str(STATIC / 'viewer-core.js'))});"
        "const v = window.attractorViewer;"
        "const done = (status) => v.nodeStatusFromEvent("
        "{event: 'stage_completed', node_id: 'n', status: status});"
        "console.log(JSON.stringify(['needs_review', 'process', 'fail', 'no good'].map(done)));"
    )
    assert NODE is not None
    out = subprocess.run([NODE, "-e", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [
        ["n", "success"],
        ["n", "success"],
        ["n", "fail"],
        ["n", "fail"],
    ]
