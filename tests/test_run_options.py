"""One ``RunOptions`` value (issue 20): the CLI, the server and the Python API each build one
and the engine consumes only that, so the three front ends cannot ask for different runs."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from click.testing import CliRunner

import attractor_trio
from attractor_trio import api
from attractor_trio.backends.simulate import SimulationBackend
from attractor_trio.cli.main import main
from attractor_trio.dot.graph import Graph
from attractor_trio.interviewers import NonInteractiveInterviewer
from attractor_trio.scopes import engine
from attractor_trio.scopes.options import RunOptions
from attractor_trio.scopes.run import RunResult
from attractor_trio.server.manager import parse_options

from .helpers import graph_of

DOT = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
    work [prompt="x"]; start -> work -> done }"""


class _Recorder:
    """Stands in for ``engine.start_run``: records the options and finishes at once."""

    def __init__(self) -> None:
        self.calls: list[RunOptions] = []

    async def __call__(self, graph: Graph, options: RunOptions) -> RunResult:
        self.calls.append(options)
        return RunResult("success", (), "", "", "completed", options.logs_root, "r")


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    seen = _Recorder()
    monkeypatch.setattr(engine, "start_run", seen)
    monkeypatch.setattr(api, "start_run", seen)
    return seen


def _comparable(options: RunOptions) -> dict[str, Any]:
    """What must agree: every setting, the backend by kind (each front end makes its own)."""
    settings = options.settings()
    settings["backend"] = type(settings["backend"])
    return settings


def _from_cli(tmp_path: Path, recorder: _Recorder) -> RunOptions:
    (tmp_path / "p.dot").write_text(DOT)
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(tmp_path / "p.dot"),
            "--simulate",
            "--stall-timeout",
            "90",
            "--set",
            "who=tester",
            "--logs-root",
            str(tmp_path / "cli"),
            "--workdir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    [options] = recorder.calls
    return options


def _from_server(tmp_path: Path) -> RunOptions:
    submission = parse_options(
        {"simulate": True, "stall_timeout": 90, "context": {"who": "tester"}}
    )
    return submission.run_options(logs_root=tmp_path / "srv", run_id="r").evolve(workdir=tmp_path)


async def _from_api(tmp_path: Path, recorder: _Recorder) -> RunOptions:
    async with api.open_run(
        graph_of(DOT),
        logs_root=tmp_path / "api",
        backend=SimulationBackend(),
        stall_timeout=90.0,
        heartbeat_interval=30.0,
        context={"who": "tester"},
        workdir=tmp_path,
    ) as run:
        await run.wait()
    return recorder.calls[-1]


def test_cli_server_and_api_ask_the_engine_for_the_same_run(
    tmp_path: Path, recorder: _Recorder
) -> None:
    cli = _comparable(_from_cli(tmp_path, recorder))  # the CLI runs trio in the main thread
    server = _comparable(_from_server(tmp_path))
    embedded = _comparable(trio.run(_from_api, tmp_path, recorder))
    # What legitimately differs: how a human answers (the CLI without a TTY refuses, the
    # server asks over HTTP, the API leaves it to the engine's default) and what the CLI
    # records for `resume` to reuse.
    assert cli.pop("interviewer").__class__ is NonInteractiveInterviewer
    assert cli.pop("manifest_options")["stall_timeout"] == "90"
    for other in (server, embedded):
        assert other.pop("interviewer") is None
        assert other.pop("manifest_options") is None
    assert cli == server == embedded
    assert cli["stall_timeout"] == 90.0 and cli["context"] == {"who": "tester"}


def test_every_run_keyword_is_a_run_options_field() -> None:
    """Guard against drift: ``run``'s and ``open_run``'s keywords are ``RunOptions`` fields
    (``options`` is ``manifest_options``), and nothing in ``RunOptions`` is unreachable."""
    fields = {a.name for a in attrs.fields(RunOptions)}
    renamed = {"options": "manifest_options"}

    def keywords(function: Any, *, skip: set[str]) -> set[str]:
        parameters = inspect.signature(function).parameters.values()
        names = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY} - skip
        return {renamed.get(name, name) for name in names}

    assert keywords(engine.run, skip=set()) == fields
    assert keywords(api.open_run.__wrapped__, skip={"on_event"}) == fields - {"handle"}  # type: ignore[attr-defined]


async def test_open_run_takes_a_run_options_or_keywords_not_both(tmp_path: Path) -> None:
    options = RunOptions(logs_root=tmp_path / "r", backend=SimulationBackend())
    with pytest.raises(TypeError, match="not both"):
        async with api.open_run(graph_of(DOT), options, stall_timeout=5.0):
            pass
    with pytest.raises(TypeError, match="needs logs_root"):
        async with api.open_run(graph_of(DOT)):
            pass
    async with api.open_run(graph_of(DOT), options) as run:
        result = await run.wait()
    assert result.status == "success" and (tmp_path / "r" / "final.json").exists()


def test_run_options_is_public_and_frozen(tmp_path: Path) -> None:
    options = attractor_trio.RunOptions(logs_root=str(tmp_path))
    assert options.logs_root == tmp_path
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.seed = 3  # type: ignore[misc]
    assert options.evolve(seed=3).seed == 3 and options.seed is None
