"""Context fidelity (spec §5.4, AMBIG-15/17): precedence, thread keys, preambles."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.context import Context
from attractor_trio.core import (
    DEFAULT_FIDELITY,
    FIDELITY_MODES,
    build_preamble,
    resolve_fidelity,
    resolve_thread_key,
)
from attractor_trio.core.fidelity import _DETAILS, _clip, _context_lines, _stage_lines
from attractor_trio.dot.conditions import stringify
from attractor_trio.dot.graph import Edge, Graph, Node


def test_modes() -> None:
    assert FIDELITY_MODES == (
        "full",
        "truncate",
        "compact",
        "summary:low",
        "summary:medium",
        "summary:high",
    )
    assert DEFAULT_FIDELITY == "compact"


@pytest.mark.parametrize(
    ("edge", "node", "graph", "expected"),
    [
        ("full", "truncate", "summary:low", "full"),  # edge wins (S5.4-06)
        ("", "truncate", "summary:low", "truncate"),
        ("", "", "summary:low", "summary:low"),
        ("", "", "", "compact"),
        (None, "summary:high", "", "summary:high"),
        ("bogus", "", "truncate", "truncate"),  # invalid values count as unset
        (" Summary:High ", "", "", "summary:high"),
        ("   ", " ", "truncate", "truncate"),  # blank is unset, like empty
    ],
)
def test_resolve_fidelity(edge: str | None, node: str, graph: str, expected: str) -> None:
    incoming = None if edge is None else Edge("p", "n", {"fidelity": edge})
    g = Graph("g", {"default_fidelity": graph})
    assert resolve_fidelity(incoming, Node("n", {"fidelity": node}), g) == expected


@pytest.mark.parametrize(
    ("node_thread", "edge_thread", "graph_thread", "classes", "previous", "expected"),
    [
        ("nt", "et", "gt", ("outer", "inner"), "prev", "nt"),  # node beats edge (AMBIG-15)
        ("", "et", "gt", ("outer", "inner"), "prev", "et"),
        ("", "", "gt", ("outer", "inner"), "prev", "gt"),
        ("", "", "", ("outer", "inner"), "prev", "inner"),  # innermost subgraph class
        ("", "", "", (), "prev", "prev"),
        ("", "", "", (), "", "n"),  # first stage: its own id
        ("  ", " ", "\t", (), " prev ", "prev"),  # blank is unset; the winner is stripped
    ],
)
def test_resolve_thread_key(
    node_thread: str,
    edge_thread: str,
    graph_thread: str,
    classes: tuple[str, ...],
    previous: str,
    expected: str,
) -> None:
    node = Node("n", {"thread_id": node_thread}, subgraph_classes=classes)
    edge = Edge("p", "n", {"thread_id": edge_thread})
    graph = Graph("g", {"thread_id": graph_thread})
    assert resolve_thread_key(node, edge, graph, previous) == expected


def test_resolve_thread_key_without_an_edge() -> None:
    assert resolve_thread_key(Node("n"), None, Graph("g"), "prev") == "prev"


COMPLETED = [
    ("start", "success", ""),
    ("plan", "success", "Stage completed: plan"),
    ("test", "fail", "3 tests failed\nin   module x"),
]
CONTEXT: dict[str, Any] = {
    "graph.goal": "ship it",
    "outcome": "fail",
    "tests_passed": False,
    "count": 3,
    "internal.retry_count.test": 2,
    "parallel.results": [{"id": "a"}],
    "nothing": None,
}


def preamble(mode: str, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "goal": "ship it",
        "run_id": "r-1",
        "completed": COMPLETED,
        "context": CONTEXT,
    }
    args.update(overrides)
    return build_preamble(mode, **args)


def test_full_has_no_preamble() -> None:
    assert preamble("full") == ""


def test_truncate_carries_only_goal_and_run_id() -> None:  # S5.4-03, AMBIG-17
    assert preamble("truncate") == "Goal: ship it\nRun: r-1\n"


def test_compact_lists_stages_and_scalar_context() -> None:
    assert preamble("compact") == (
        "Goal: ship it\n"
        "Run: r-1\n"
        "\n"
        "Completed stages (3):\n"
        "- start: success\n"
        "- plan: success\n"
        "- test: fail\n"
        "\n"
        "Context:\n"
        "- count = 3\n"
        "- outcome = fail\n"
        "- tests_passed = false\n"
    )


def test_summary_high_adds_counts_notes_and_structured_values() -> None:
    text = preamble("summary:high")
    assert "Outcomes: fail=1, success=2" in text
    assert "- test: fail — 3 tests failed in module x" in text
    assert '- parallel.results = [{"id": "a"}]' in text
    assert "internal." not in text
    assert "graph.goal" not in text


def test_summary_medium_has_notes_but_no_structured_values() -> None:
    text = preamble("summary:medium")
    assert "- plan: success — Stage completed: plan" in text
    assert "parallel.results" not in text


def test_empty_run() -> None:
    text = preamble("compact", goal="", completed=[], context={})
    assert text == "Goal: (none)\nRun: r-1\n\nCompleted stages: none yet\n"


def test_compact_keeps_the_most_recent_twenty_stages() -> None:
    stages = [(f"s{i:02}", "success", "") for i in range(25)]
    text = preamble("compact", completed=stages, context={})
    assert "- (5 earlier stages omitted)" in text
    assert "- s04:" not in text
    assert "- s05: success" in text and "- s24: success" in text


def test_long_values_are_clipped() -> None:
    text = preamble("compact", context={"last_response": "x" * 500})
    line = next(line for line in text.splitlines() if line.startswith("- last_response"))
    assert line == "- last_response = " + "x" * 79 + "…"


@pytest.mark.parametrize(
    ("mode", "budget"), [("summary:low", 2400), ("summary:medium", 6000), ("summary:high", 12000)]
)
def test_summary_budgets_truncate_with_a_marker(mode: str, budget: int) -> None:
    stages = [(f"node_{i}", "success", "n" * 400) for i in range(500)]
    context = {f"key_{i:04}": "v" * 400 for i in range(500)}
    assert len(preamble(mode, completed=stages, context=context)) <= budget
    text = preamble(mode, goal="g" * 20_000)
    assert len(text) == budget
    assert text.endswith(f"\n[... preamble truncated to {budget} characters]")


def test_summary_detail_increases() -> None:
    stages = [(f"node_{i}", "success", "did things " * 10) for i in range(40)]
    context = {f"key_{i:02}": "value " * 20 for i in range(60)}
    sizes = [
        len(preamble(m, completed=stages, context=context))
        for m in ("truncate", "summary:low", "summary:medium", "summary:high")
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fidelity 'verbose'"):
        preamble("verbose")


@given(
    st.sampled_from(FIDELITY_MODES),
    st.lists(
        st.tuples(st.text(max_size=8), st.sampled_from(["success", "fail"]), st.text(max_size=50))
    ),
    st.dictionaries(
        st.text(max_size=8),
        st.none() | st.integers() | st.text(max_size=50) | st.lists(st.integers()),
    ),
)
def test_preamble_is_deterministic_and_order_insensitive_to_context(
    mode: str, completed: list[tuple[str, str, str]], context: dict[str, Any]
) -> None:
    first = build_preamble(mode, goal="g", run_id="r", completed=completed, context=context)
    reordered = dict(reversed(list(context.items())))
    again = build_preamble(mode, goal="g", run_id="r", completed=completed, context=reordered)
    assert first == again


def test_the_stated_count_is_the_true_total_when_older_stages_were_dropped() -> None:
    # The engine keeps the last 200 stages and counts the rest (internal.completed_count).
    text = preamble("compact", total=250)
    assert "Completed stages (250):\n- (247 earlier stages omitted)\n- start: success" in text
    high = preamble("summary:high", total=250)
    assert "Completed stages (250):\nOutcomes (last 3): fail=1, success=2" in high
    assert "- (247 earlier stages omitted)" in high
    # Without a total (or a stale, smaller one) the list's own length is the count.
    assert "Completed stages (3):" in preamble("compact", total=None)
    assert "Completed stages (3):" in preamble("compact", total=1)


# --- the context part of a preamble, pinned against its first (plain) implementation ------

_KEYS = st.sampled_from(
    ["a", "b.c", "graph.goal", "internal.x", "internal", "last_response", "outcome", "Z", "é"]
) | st.text(max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=" \t\n\xa0\u2028ab—", max_size=30)
)
_VALUES = _SCALARS | st.lists(_SCALARS, max_size=3) | st.dictionaries(st.text(max_size=3), _SCALARS)


def _plain_context_lines(context: dict[str, Any], mode: str) -> list[str]:
    """The context lines as first written: every key sorted and filtered, each value rendered
    through ``stringify`` (the reference the cached key sets and the str fast path must match)."""
    detail = _DETAILS[mode]

    def render(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str | int | float | bool):
            text = stringify(value)
        elif detail.nonscalar:
            text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        else:
            return None
        return _clip(" ".join(text.split()), detail.value_chars)

    shown = [
        (key, render(context[key]))
        for key in sorted(context)
        if key != "graph.goal" and not key.startswith("internal.")
    ]
    values = [(key, text) for key, text in shown if text is not None]
    if not values:
        return []
    kept = values if detail.max_keys is None else values[: detail.max_keys]
    lines = ["", "Context:"] + [f"- {key} = {text}" for key, text in kept]
    if len(kept) < len(values):
        lines.append(f"- ({len(values) - len(kept)} more keys omitted)")
    return lines


@given(
    contexts=st.lists(st.dictionaries(_KEYS, _VALUES, max_size=40), min_size=1, max_size=3),
    mode=st.sampled_from(["compact", "summary:low", "summary:medium", "summary:high"]),
)
def test_context_lines_are_those_of_the_plain_implementation(
    contexts: list[dict[str, Any]], mode: str
) -> None:
    # The second round reads the remembered key sets and lines; the third the engine's
    # ``Context`` (a Mapping: the codergen handler hands the preamble its dict).
    for context in [*contexts, *contexts, *map(Context, contexts)]:
        assert _context_lines(context, _DETAILS[mode]) == _plain_context_lines(dict(context), mode)


@given(
    entries=st.lists(
        st.tuples(st.text(max_size=4), st.sampled_from(["success", "fail", "x\ny"]), st.just("")),
        max_size=30,
    ),
    steps=st.lists(st.integers(min_value=0, max_value=30), max_size=12),
)
def test_stage_lines_are_the_plain_ones_whichever_windows_follow_each_other(
    entries: list[tuple[str, str, str]], steps: list[int]
) -> None:
    """``_stage_block`` remembers the last window's text and moves it on by one stage when
    the next window is that one shifted; any sequence of windows (grown, shifted, repeated,
    shrunk, unrelated) still gives the lines formatted one by one."""
    detail = _DETAILS["compact"]
    run: list[tuple[str, str, str]] = []
    for count in [*range(len(entries) + 1), *steps]:  # a run growing, then arbitrary ones
        run = entries[:count] if count >= len(run) else [*entries[:count]]
        shown = run[-20:]
        plain = (
            ["", f"Completed stages ({len(run)}):"] if run else ["", "Completed stages: none yet"]
        )
        if len(shown) < len(run):
            plain.append(f"- ({len(run) - len(shown)} earlier stages omitted)")
        plain += [f"- {node_id}: {status}" for node_id, status, _ in shown]
        assert "\n".join(_stage_lines(run, len(run), detail)) == "\n".join(plain)
