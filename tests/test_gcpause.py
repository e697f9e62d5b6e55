"""The front end pauses the cyclic collector while it builds a graph (issue #22, performance).

Collections are counted through ``gc.callbacks``: without the pause, parsing a 2,000-node
pipeline allocates enough containers to start dozens of them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from attractor_trio.dot import DotSyntaxError, parse_dot
from attractor_trio.dot.gcpause import gc_paused
from attractor_trio.dot.transforms import apply_transforms
from attractor_trio.dot.validate import validate

STAGES = " -> ".join(f"s{i}" for i in range(2_000))
BIG = (
    "digraph G {\n"
    "  start [shape=Mdiamond]\n  exit [shape=Msquare]\n"
    '  graph [goal="g", model_stylesheet="* { llm_model: m; }"]\n'
    '  node [prompt="do $goal", timeout="5m", max_retries=2]\n'
    f'  start -> {STAGES} -> exit [condition="outcome=success"]\n'
    "}\n"
)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection started while the test runs."""
    started: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.enable()
    gc.callbacks.append(record)
    yield started
    gc.callbacks.remove(record)
    gc.enable()


def test_building_that_many_objects_does_collect_without_the_pause(
    collections: list[int],
) -> None:
    """The control: the workload below is big enough for the collector to run."""
    kept = [{"id": str(i), "attrs": {"prompt": "p"}} for i in range(20_000)]
    assert kept and collections


def test_parse_transforms_and_validate_do_not_collect_and_leave_the_collector_on(
    collections: list[int],
) -> None:
    """At most one collection per call: the one that catches up once the pause ends."""
    graph = parse_dot(BIG)
    assert len(graph.nodes) == 2_002 and len(collections) <= 1
    collections.clear()
    graph = apply_transforms(graph)
    assert len(collections) <= 1
    collections.clear()
    assert validate(graph) == []
    assert len(collections) <= 1
    assert gc.isenabled()


def test_a_syntax_error_still_re_enables_the_collector(collections: list[int]) -> None:
    with pytest.raises(DotSyntaxError):
        parse_dot(BIG.replace("exit [", "exit ;["))
    assert gc.isenabled()


def test_a_collector_disabled_by_the_caller_stays_disabled() -> None:
    gc.disable()
    try:
        parse_dot(BIG)
        with gc_paused(), gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nested_pauses_re_enable_only_at_the_outermost() -> None:
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
