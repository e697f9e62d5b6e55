"""Registries per run (issue 20): a run's custom handlers and lint rules are part of its
options, so two runs in one process cannot see each other's extensions; the process-wide
``register_*`` functions only seed the default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attractor_trio import Registries
from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.graph import Diagnostic, Graph, Node, Severity
from attractor_trio.dot.validate import registered_rules, validate
from attractor_trio.errors import ConfigError, ValidationFailed
from attractor_trio.scopes import engine

from .helpers import graph_of, read_json, run_dot

DOT = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
    stamp [type="stamp"]; start -> stamp -> done }"""


class _Stamp:
    """A custom handler that says which run's registry it came from."""

    def __init__(self, who: str) -> None:
        self.who = who

    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        return Outcome(StageStatus.SUCCESS, context_updates={"stamped_by": self.who})


class _NoStampRule:
    name = "no_stamp"

    def apply(self, graph: Graph) -> list[Diagnostic]:
        return [
            Diagnostic(self.name, Severity.ERROR, "stamp nodes are banned here", node_id=n.id)
            for n in graph
            if n.type == "stamp"
        ]


@pytest.fixture(autouse=True)
def _no_process_wide_handlers() -> Iterator[None]:
    engine.clear_handlers()
    yield
    engine.clear_handlers()


async def test_two_runs_in_one_process_keep_their_own_handlers(tmp_path: Path) -> None:
    first = await run_dot(
        DOT, tmp_path / "a", registries=Registries(handlers={"stamp": _Stamp("a")})
    )
    second = await run_dot(
        DOT, tmp_path / "b", registries=Registries(handlers={"stamp": _Stamp("b")})
    )
    assert (first.status, second.status) == ("success", "success")
    assert read_json(tmp_path / "a" / "checkpoint.json")["context"]["stamped_by"] == "a"
    assert read_json(tmp_path / "b" / "checkpoint.json")["context"]["stamped_by"] == "b"
    # Neither run registered anything for the process: a third run has no such handler.
    with pytest.raises(ConfigError, match="no handler is registered"):
        await run_dot(DOT, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert Registries.default().handlers == {}


async def test_a_run_s_lint_rules_apply_to_that_run_only(tmp_path: Path) -> None:
    stamp = Registries(handlers={"stamp": _Stamp("x")})
    banned = Registries(handlers={"stamp": _Stamp("x")}, rules=[_NoStampRule()])
    with pytest.raises(ValidationFailed, match="stamp nodes are banned"):
        await run_dot(DOT, tmp_path / "banned", registries=banned)
    assert (await run_dot(DOT, tmp_path / "ok", registries=stamp)).status == "success"
    assert registered_rules() == ()


async def test_process_wide_registration_only_seeds_the_default(tmp_path: Path) -> None:
    engine.register_handler("stamp", _Stamp("global"))
    assert set(Registries.default().handlers) == {"stamp"}
    assert (await run_dot(DOT, tmp_path / "seeded")).status == "success"
    # A run that names its own registries does not see the process-wide handler.
    with pytest.raises(ConfigError, match="no handler is registered"):
        await run_dot(DOT, tmp_path / "own", registries=Registries())


def test_validation_knows_the_types_a_run_brings() -> None:
    graph = graph_of(DOT)

    def type_warnings(**kwargs: Any) -> list[str]:
        return [d.message for d in validate(graph, **kwargs) if d.rule == "type_known"]

    assert type_warnings()  # nothing registered: "stamp" is unknown
    assert type_warnings(handler_types={"stamp"}) == []
    assert type_warnings()  # the call's types did not stick
