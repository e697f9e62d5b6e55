"""The corpus of public pipelines (``tests/data/corpus``, see its SOURCES.md): every file
validates — or is listed in :data:`INVALID` with the reason it legitimately does not — and
runs to a terminal state under simulation with its tool stages stubbed (contract.md §10).

A run goes through the fuzz harness (:func:`attractor_trio.testing.run_schedule`) with an
empty schedule: codergen stages are answered by the simulation backend (with the corpus's
sim script for the file, if there is one), tool stages by the harness's scheduled handler
(success, no process), human gates like ``--auto-approve``, all in virtual time and bounded
the way ``fuzz`` bounds a run. A pipeline that would loop forever therefore ends, and the
fuzz detectors must name it (``visit_bound``/``non_termination``) — never a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from attractor_trio.backends.simulate import SimulationBackend, load_sim_script
from attractor_trio.dot.graph import Graph, Severity
from attractor_trio.dot.pipeline import prepare_pipeline
from attractor_trio.errors import AttractorError
from attractor_trio.testing import Observation, Schedule, run_schedule
from attractor_trio.testing.fuzz import _human_handlers
from attractor_trio.testing.fuzz_detectors import Bounds, Detection, detect

from .test_cli import cli

CORPUS: Final = Path(__file__).parent / "data" / "corpus"
FILES: Final = sorted(CORPUS.glob("*/*.dot"))
#: Files that are legitimately invalid, with a fragment of the error that says why.
INVALID: Final = {
    # Not a DOT file: a test script holding DOT text in a string ("-- Test pipeline ...").
    "kilroy/spec-simple_example_integration_smoke_test.dot": "expected 'digraph Name {'",
    # Two Msquare exits ("success_exit", "fail_exit"): the spec allows exactly one (S7.2-02).
    "kilroy/demo--tmux-agent-test--failure-routing.dot": "2 exit nodes",
    # Two Msquare exits ("done", "fail"), as above.
    "kilroy/demo--tmux-agent-test--multi-node.dot": "2 exit nodes",
}
TERMINAL: Final = ("pipeline_completed", "pipeline_failed")
RUNAWAY: Final = ("visit_bound", "non_termination")


def _name(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """RAM-backed when possible: the runs fsync every event, and the corpus must stay fast."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(dir=shm, prefix="attractor-corpus-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def simulate(graph: Graph, logs_root: Path, sim: Path | None) -> tuple[Observation, Bounds]:
    bounds = Bounds.for_graph(graph)
    backend = SimulationBackend(load_sim_script(sim) if sim is not None else None)
    obs = run_schedule(
        bounds.apply(graph), Schedule(), logs_root, backend=backend, handlers=_human_handlers()
    )
    return obs, bounds


def _runaway(graph: Graph, obs: Observation, bounds: Bounds) -> list[Detection]:
    found = detect(graph, bounds, obs.events, hung=obs.hung, error=obs.error)
    return [d for d in found if d.kind in RUNAWAY]


def test_the_corpus_is_there_with_its_sources() -> None:
    assert len(FILES) >= 25
    sources = (CORPUS / "SOURCES.md").read_text()
    for path in FILES:
        assert f"`{_name(path)}`" in sources, f"{_name(path)} has no origin in SOURCES.md"
    for directory in {path.parent for path in FILES}:
        assert (directory / "LICENSE").is_file(), directory
    assert set(INVALID) <= {_name(path) for path in FILES}


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_corpus_file_validates_and_runs_to_a_terminal_state(scratch: Path, path: Path) -> None:
    name = _name(path)
    try:
        graph, diagnostics = prepare_pipeline(path, strict=False)
    except AttractorError as exc:  # a parse error
        assert name in INVALID and INVALID[name] in str(exc), str(exc)
        return
    errors = [d.message for d in diagnostics if d.severity is Severity.ERROR]
    if name in INVALID:
        assert any(INVALID[name] in e for e in errors), errors
        return
    assert not errors, errors
    sim = CORPUS / "sims" / f"{path.stem}.yaml"
    obs, bounds = simulate(graph, scratch / "run", sim if sim.exists() else None)
    assert obs.error is None, obs.error
    terminal = [e for e in obs.events if e["event"] in TERMINAL]
    assert len(terminal) == 1, [e["event"] for e in obs.events[-5:]]
    # a run that loops under simulation is ended by the bound, and the detectors name it
    final = json.loads((scratch / "run" / "final.json").read_text())
    if obs.hung or final["exit_path"] == "visit_limit":
        assert _runaway(graph, obs, bounds), final


def test_the_spec_pipelines_that_route_on_custom_outcomes_reach_their_exit(
    scratch: Path,
) -> None:
    for stem, steering in [
        ("spec-semport", "FetchUpstreamSonnet"),
        ("spec-consensus_task", "CheckDoD"),
    ]:
        graph, _ = prepare_pipeline(CORPUS / "kilroy" / f"{stem}.dot")
        obs, _ = simulate(graph, scratch / stem, CORPUS / "sims" / f"{stem}.yaml")
        assert obs.events[-1]["event"] == "pipeline_completed", obs.events[-1]
        statuses = [
            e["status"]
            for e in obs.events
            if e["event"] == "stage_completed" and e["node_id"] == steering
        ]
        assert statuses[0] in ("process", "needs_dod")


LOOP: Final = """digraph loop {
  start [shape=Mdiamond]; exit [shape=Msquare]
  work  [prompt="work"]
  check [prompt="check", llm_prompt="kilroy-style"]
  start -> work -> check
  check -> exit [condition="outcome=done"]
  check -> work
}"""


def test_a_pipeline_looping_forever_under_simulation_is_reported_not_hung(
    tmp_path: Path, scratch: Path
) -> None:
    """``check`` only ever leaves on the custom outcome ``done``, which simulation never
    reports: the corpus runner ends the run at the bound and the detectors name the loop."""
    path = tmp_path / "loop.dot"
    path.write_text(LOOP)
    graph, _ = prepare_pipeline(path)
    obs, bounds = simulate(graph, scratch / "run", None)
    assert not obs.hung and obs.events[-1]["event"] == "pipeline_failed"
    assert json.loads((scratch / "run" / "final.json").read_text())["exit_path"] == "visit_limit"
    assert {d.kind for d in _runaway(graph, obs, bounds)} & set(RUNAWAY)


@pytest.mark.slow
def test_fuzz_reports_a_pipeline_that_loops_forever_under_simulation(tmp_path: Path) -> None:
    path = tmp_path / "loop.dot"
    path.write_text(LOOP)
    code, out, _ = cli("fuzz", str(path), "--examples", "3", "--seed", "1", "--json")
    assert code == 1
    kinds = {finding["kind"] for finding in json.loads(out)["findings"]}
    assert kinds & set(RUNAWAY), kinds
