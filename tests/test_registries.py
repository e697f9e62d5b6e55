"""Registries per run (issue 20): a run's custom handlers, lint rules, transforms, custom
attributes and known types are part of its options, so two runs in one process cannot see
each other's extensions, and a manager's child runs with its parent's; the process-wide
``register_*`` functions only seed the default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attractor_trio import Registries
from attractor_trio.context import Context
from attractor_trio.core.outcome import Outcome, StageStatus
from attractor_trio.dot.attributes import (
    AttributeSpec,
    Kind,
    register_attribute,
    unregister_attribute,
)
from attractor_trio.dot.graph import Diagnostic, Graph, Node, Severity
from attractor_trio.dot.validate import (
    register_known_type,
    registered_rules,
    unregister_known_type,
    validate,
    validate_or_raise,
)
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


# ------------------------------------------------------------------- custom attributes

BUDGETED = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
    stamp [type="stamp", budget="lots"]; start -> stamp -> done }"""
BUDGET: dict[Any, Any] = {"node": {"budget": AttributeSpec(Kind.INTEGER, "tokens to spend")}}


def _stamping(**kwargs: Any) -> Registries:
    return Registries(handlers={"stamp": _Stamp("x")}, **kwargs)


async def test_two_runs_in_one_process_keep_their_own_attributes(tmp_path: Path) -> None:
    # One run declares budget as an integer, so "lots" is refused at its declaration ...
    with pytest.raises(ValidationFailed, match="budget") as refused:
        await run_dot(BUDGETED, tmp_path / "typed", registries=_stamping(attributes=BUDGET))
    [error] = [d for d in refused.value.diagnostics if d.severity is Severity.ERROR]
    assert (error.rule, error.line) == ("attribute_value", 2)
    assert not (tmp_path / "typed").exists()
    # ... the other does not know it: a custom attribute, legal (S2.6-18), and the run runs.
    assert (await run_dot(BUDGETED, tmp_path / "free", registries=_stamping())).status == "success"
    # Neither declared anything for the process: validation without a run does not know it.
    unknown = [d.message for d in validate(graph_of(BUDGETED)) if d.rule == "unknown_attribute"]
    assert unknown == ["node 'stamp': unknown attribute 'budget'"]


async def test_process_wide_attributes_seed_the_default_only(tmp_path: Path) -> None:
    register_attribute("node", "budget", BUDGET["node"]["budget"])
    try:
        assert Registries.default().attributes["node"] == BUDGET["node"]
        default = Registries.default()
        with pytest.raises(ValidationFailed, match="budget"):
            await run_dot(BUDGETED, tmp_path / "seeded", handlers={"stamp": _Stamp("x")})
        own = await run_dot(BUDGETED, tmp_path / "own", registries=_stamping())
        assert own.status == "success"
        assert [d.rule for d in validate(graph_of(BUDGETED)) if d.severity is Severity.ERROR] == [
            "attribute_value"
        ]
    finally:
        unregister_attribute("node", "budget")
    assert default.attributes["node"] == BUDGET["node"], "the default is a snapshot"
    assert Registries.default().attributes["node"] == {}


def test_a_run_cannot_redefine_a_built_in_attribute() -> None:
    with pytest.raises(ValueError, match="'timeout' is built in"):
        Registries(attributes={"node": {"timeout": AttributeSpec(Kind.STRING, "mine")}})
    with pytest.raises(ValueError, match="unknown attribute scope 'nodes'"):
        Registries(attributes={"nodes": BUDGET["node"]})  # type: ignore[dict-item]


# ------------------------------------------------------------------------- known types

LEGACY = """digraph g { start [shape=Mdiamond]; done [shape=Msquare]
    old [type="legacy"]; start -> old -> done }"""


async def test_two_runs_in_one_process_keep_their_own_known_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real = validate_or_raise

    def spy(graph: Graph, *args: Any, **kwargs: Any) -> list[Diagnostic]:
        found = real(graph, *args, **kwargs)
        seen.append([d.rule for d in found if d.rule == "type_known"])
        return found

    monkeypatch.setattr(engine, "validate_or_raise", spy)
    # Validation is the run's own; either run is then refused for want of a handler.
    for name, registries in [("known", Registries(known_types={"legacy"})), ("bare", None)]:
        with pytest.raises(ConfigError, match="no handler is registered"):
            await run_dot(LEGACY, tmp_path / name, registries=registries)
    assert seen == [[], ["type_known"]]


def test_process_wide_known_types_seed_the_default_only() -> None:
    register_known_type("legacy")
    try:
        default = Registries.default()
        assert "legacy" in default.known_types
        assert "legacy" in default.handler_types()
        assert [d for d in validate(graph_of(LEGACY)) if d.rule == "type_known"] == []
    finally:
        unregister_known_type("legacy")
    assert "legacy" not in Registries.default().known_types
    assert Registries().handler_types() == frozenset()


# ------------------------------------------------------------------ a manager's child

CHILD = """digraph child { start [shape=Mdiamond]; done [shape=Msquare]
    stamp [type="stamp"]; start -> stamp -> done }"""
PARENT = """digraph parent { graph [stack.child_dotfile="child.dot"]
    start [shape=Mdiamond]; done [shape=Msquare]
    supervise [shape=house, manager.poll_interval="1s"]; start -> supervise -> done }"""


class _MarkTransform:
    """Marks every node it sees, so a test can tell which pipelines it loaded."""

    name = "mark"

    def apply(self, graph: Graph) -> Graph:
        nodes = {k: n.with_attrs({**n.attrs, "mark": graph.name}) for k, n in graph.nodes.items()}
        return graph.evolve(nodes=nodes)


class _MarkReader:
    async def execute(self, node: Node, context: Context, graph: Graph, logs_root: Path) -> Outcome:
        return Outcome(StageStatus.SUCCESS, context_updates={"mark": node.attrs.get("mark", "")})


async def test_a_manager_child_gets_the_parent_run_s_registries(
    tmp_path: Path, autojump_clock: Any
) -> None:
    (tmp_path / "child.dot").write_text(CHILD)
    own = Registries(handlers={"stamp": _MarkReader()}, transforms=[_MarkTransform()])

    result = await run_dot(PARENT, tmp_path / "logs", registries=own)

    assert result.status == "success", result.failure_reason
    child = read_json(tmp_path / "logs" / "supervise" / "child" / "checkpoint.json")
    assert child["context"]["mark"] == "child", "the child was loaded with the run's transforms"


async def test_a_manager_child_is_validated_with_the_parent_run_s_rules(
    tmp_path: Path, autojump_clock: Any
) -> None:
    (tmp_path / "child.dot").write_text(CHILD)
    lenient = Registries(handlers={"stamp": _Stamp("x")})
    strict = Registries(handlers={"stamp": _Stamp("x")}, rules=[_NoStampRule()])

    assert (await run_dot(PARENT, tmp_path / "ok", registries=lenient)).status == "success"
    result = await run_dot(PARENT, tmp_path / "logs", registries=strict)

    assert result.status == "fail"
    assert "child pipeline is invalid" in result.failure_reason
    assert "stamp nodes are banned here" in result.failure_reason
