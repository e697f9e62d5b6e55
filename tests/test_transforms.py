"""Transforms (spec §9.1-9.3): $goal expansion, stylesheet application, custom transforms."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator

import attrs
import pytest

from attractor_trio.dot.graph import Edge, Graph, Node
from attractor_trio.dot.transforms import (
    StylesheetTransform,
    Transform,
    VariableExpansionTransform,
    apply_transforms,
    builtin_transforms,
    clear_transforms,
    expand_variables,
    register_transform,
    registered_transforms,
)
from attractor_trio.errors import AttractorError

WORKED_STYLESHEET = (
    "* { llm_model: claude-sonnet-4-5; llm_provider: anthropic; } "
    ".code { llm_model: claude-opus-4-6; llm_provider: anthropic; } "
    "#critical_review { llm_model: gpt-5.2; llm_provider: openai; reasoning_effort: high; }"
)


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    clear_transforms()
    yield
    clear_transforms()


def make_graph(nodes: list[Node], **graph_attrs: str) -> Graph:
    return Graph("g", graph_attrs).evolve(
        nodes={n.id: n for n in nodes},
        edges=tuple(Edge(a.id, b.id) for a, b in itertools.pairwise(nodes)),
    )


def worked_example_graph() -> Graph:
    return make_graph(
        [
            Node("start", {"shape": "Mdiamond"}),
            Node("plan", {"prompt": "Plan: $goal"}),
            Node("implement", {"class": "code", "prompt": "Do $goal, then check $goal."}),
            Node("critical_review", {"class": "code"}),
            Node("exit", {"shape": "Msquare"}),
        ],
        goal="ship it",
        model_stylesheet=WORKED_STYLESHEET,
    )


@attrs.frozen
class Recorder:
    """A custom transform that appends its tag to the graph label, so order is observable."""

    tag: str

    @property
    def name(self) -> str:
        return f"recorder-{self.tag}"

    def apply(self, graph: Graph) -> Graph:
        return graph.evolve(attrs={**graph.attrs, "label": graph.label + self.tag})


# --- $goal expansion -------------------------------------------------------------------------


def test_expand_variables_replaces_every_goal_and_nothing_else() -> None:
    graph = make_graph([], goal="Create a hello world Python script")
    assert (
        expand_variables("Build $goal; $goal! Keep $other and $$ as is.", graph)
        == "Build Create a hello world Python script; Create a hello world Python script! "
        "Keep $other and $$ as is."
    )


def test_expand_variables_absent_goal_becomes_empty_string() -> None:
    assert expand_variables("goal=[$goal]", make_graph([])) == "goal=[]"


def test_variable_expansion_rewrites_prompts_p19() -> None:
    result = VariableExpansionTransform().apply(worked_example_graph())
    assert result.nodes["plan"].prompt == "Plan: ship it"
    assert result.nodes["implement"].prompt == "Do ship it, then check ship it."
    assert "prompt" not in result.nodes["critical_review"].attrs


def test_variable_expansion_leaves_labels_and_other_attributes() -> None:
    graph = make_graph([Node("n", {"label": "About $goal", "prompt": "$goal", "x": "$goal"})])
    result = VariableExpansionTransform().apply(graph.evolve(attrs={"goal": "G"}))
    assert result.nodes["n"].attrs == {"label": "About $goal", "prompt": "G", "x": "$goal"}


def test_variable_expansion_keeps_node_positions() -> None:
    graph = make_graph([Node("n", {"prompt": "$goal"}, line=7, col=3)], goal="G")
    expanded = VariableExpansionTransform().apply(graph).nodes["n"]
    assert (expanded.line, expanded.col) == (7, 3)


# --- stylesheet application ------------------------------------------------------------------


def test_stylesheet_transform_worked_example_s8_6_01() -> None:
    result = StylesheetTransform().apply(worked_example_graph())
    plan, implement, review = (result.nodes[k] for k in ("plan", "implement", "critical_review"))
    assert (plan.llm_model, plan.llm_provider) == ("claude-sonnet-4-5", "anthropic")
    assert "reasoning_effort" not in plan.attrs
    assert (implement.llm_model, implement.llm_provider) == ("claude-opus-4-6", "anthropic")
    assert (review.llm_model, review.llm_provider, review.reasoning_effort) == (
        "gpt-5.2",
        "openai",
        "high",
    )


def test_stylesheet_by_shape_p18() -> None:
    graph = make_graph(
        [Node("a", {}), Node("b", {"shape": "box"}), Node("gate", {"shape": "diamond"})],
        model_stylesheet='box { llm_model: "claude-opus-4-6" }',
    )
    result = StylesheetTransform().apply(graph)
    assert result.nodes["a"].llm_model == "claude-opus-4-6"
    assert result.nodes["b"].llm_model == "claude-opus-4-6"
    assert "llm_model" not in result.nodes["gate"].attrs


def test_explicit_node_attributes_win_over_stylesheet() -> None:
    graph = make_graph(
        [Node("critical_review", {"llm_model": "mine", "reasoning_effort": "low"})],
        model_stylesheet=WORKED_STYLESHEET,
    )
    styled = StylesheetTransform().apply(graph).nodes["critical_review"]
    assert styled.attrs == {
        "llm_model": "mine",
        "reasoning_effort": "low",
        "llm_provider": "openai",
    }


def test_explicit_empty_attribute_still_counts_as_explicit() -> None:
    graph = make_graph([Node("n", {"llm_model": ""})], model_stylesheet="* { llm_model: m }")
    assert StylesheetTransform().apply(graph).nodes["n"].attrs["llm_model"] == ""


def test_stylesheet_matches_subgraph_derived_class() -> None:
    graph = make_graph(
        [Node("inside", {}, subgraph_classes=("loop-a",)), Node("outside", {})],
        model_stylesheet=".loop-a { llm_provider: gemini }",
    )
    result = StylesheetTransform().apply(graph)
    assert result.nodes["inside"].llm_provider == "gemini"
    assert "llm_provider" not in result.nodes["outside"].attrs


@pytest.mark.parametrize("sheet", ["", "  \n ", "* { llm_model a }", "* { effort: high }"])
def test_empty_or_broken_stylesheet_leaves_graph_unchanged(sheet: str) -> None:
    graph = make_graph([Node("n", {})], model_stylesheet=sheet)
    assert StylesheetTransform().apply(graph) == graph


def test_stylesheet_does_not_expand_or_touch_prompt() -> None:
    graph = make_graph(
        [Node("n", {"prompt": "$goal"})], goal="G", model_stylesheet="* { llm_model: m }"
    )
    styled = StylesheetTransform().apply(graph).nodes["n"]
    assert (styled.prompt, styled.llm_model) == ("$goal", "m")


# --- immutability --------------------------------------------------------------------------


def test_builtins_never_mutate_their_input() -> None:
    graph = worked_example_graph()
    snapshot = copy.deepcopy(graph)
    node_attrs = {k: dict(n.attrs) for k, n in graph.nodes.items()}
    result = apply_transforms(graph)
    assert graph == snapshot
    assert {k: dict(n.attrs) for k, n in graph.nodes.items()} == node_attrs
    assert graph.nodes["plan"].prompt == "Plan: $goal"
    assert "llm_model" not in graph.nodes["plan"].attrs
    assert result != graph


def test_unchanged_nodes_are_shared_and_no_op_returns_same_graph() -> None:
    graph = make_graph([Node("a", {"prompt": "$goal"}), Node("b", {"prompt": "plain"})])
    result = VariableExpansionTransform().apply(graph)
    assert result.nodes["b"] is graph.nodes["b"]
    assert result.nodes["a"] is not graph.nodes["a"]
    plain = make_graph([Node("b", {"prompt": "plain"})])
    assert VariableExpansionTransform().apply(plain) is plain


def test_edges_graph_attrs_and_path_survive_transforms() -> None:
    graph = attrs.evolve(worked_example_graph(), path="pipe.dot", source="digraph {}")
    result = apply_transforms(graph)
    assert result.edges == graph.edges
    assert result.attrs == graph.attrs
    assert (result.path, result.source) == ("pipe.dot", "digraph {}")
    assert list(result.nodes) == list(graph.nodes)


# --- apply_transforms and the registry -------------------------------------------------------


def test_apply_transforms_runs_both_builtins() -> None:
    result = apply_transforms(worked_example_graph())
    assert result.nodes["plan"].prompt == "Plan: ship it"
    assert result.nodes["plan"].llm_model == "claude-sonnet-4-5"
    assert result.nodes["critical_review"].reasoning_effort == "high"


def test_builtin_order_is_expansion_then_stylesheet() -> None:
    assert [t.name for t in builtin_transforms()] == [
        "attribute_aliases",
        "variable_expansion",
        "stylesheet",
    ]


def test_registered_transforms_run_after_builtins_in_registration_order() -> None:
    seen: list[tuple[str, str]] = []

    @attrs.frozen
    class Spy:
        name: str

        def apply(self, graph: Graph) -> Graph:
            seen.append(
                (self.name, graph.nodes["plan"].prompt + "|" + graph.nodes["plan"].llm_model)
            )
            return graph

    register_transform(Spy("first"))
    register_transform(Recorder("A"))
    register_transform(Recorder("B"))
    register_transform(Spy("last"))
    result = apply_transforms(worked_example_graph())
    assert seen == [
        ("first", "Plan: ship it|claude-sonnet-4-5"),
        ("last", "Plan: ship it|claude-sonnet-4-5"),
    ]
    assert result.label == "AB"
    assert [t.name for t in registered_transforms()] == [
        "first",
        "recorder-A",
        "recorder-B",
        "last",
    ]


def test_explicit_transform_list_replaces_registry_for_that_call() -> None:
    register_transform(Recorder("global"))
    result = apply_transforms(make_graph([]), [Recorder("x"), Recorder("y")])
    assert result.label == "xy"
    assert apply_transforms(make_graph([]), []).label == ""
    assert apply_transforms(make_graph([])).label == "global"


def test_clear_transforms_empties_registry() -> None:
    register_transform(Recorder("A"))
    clear_transforms()
    assert registered_transforms() == ()
    assert apply_transforms(make_graph([])).label == ""


def test_register_rejects_non_transform() -> None:
    with pytest.raises(TypeError, match="not a Transform"):
        register_transform(object())  # type: ignore[arg-type]


def test_custom_transform_can_change_graph_between_parse_and_validate() -> None:
    @attrs.frozen
    class AddTimeout:
        name: str = "add_timeout"

        def apply(self, graph: Graph) -> Graph:
            nodes = {
                k: attrs.evolve(n, attrs={**n.attrs, "timeout": "5m"})
                for k, n in graph.nodes.items()
            }
            return graph.evolve(nodes=nodes)

    assert isinstance(AddTimeout(), Transform)
    graph = worked_example_graph()
    result = apply_transforms(graph, [AddTimeout()])
    assert all(n.timeout == 300.0 for n in result)
    assert all(n.timeout is None for n in graph)


def test_raising_custom_transform_is_wrapped_naming_it() -> None:
    @attrs.frozen
    class Broken:
        name: str = "merge_subpipelines"

        def apply(self, graph: Graph) -> Graph:
            raise KeyError("missing.dot")

    register_transform(Broken())
    with pytest.raises(
        AttractorError, match="transform 'merge_subpipelines' failed: KeyError"
    ) as info:
        apply_transforms(worked_example_graph())
    assert isinstance(info.value.__cause__, KeyError)


def test_custom_transform_returning_non_graph_is_an_error() -> None:
    @attrs.frozen
    class ReturnsNone:
        name: str = "forgetful"

        def apply(self, graph: Graph) -> Graph:
            return None  # type: ignore[return-value]

    with pytest.raises(AttractorError, match="'forgetful' returned NoneType, expected a Graph"):
        apply_transforms(make_graph([]), [ReturnsNone()])


# --- end to end with the DOT parser ----------------------------------------------------------

PIPELINE_DOT = """
digraph p {
  graph [goal="Ship it", model_stylesheet="
    * { llm_model: claude-sonnet-4-5; llm_provider: anthropic; }
    .code-work { llm_model: \\"claude-opus-4-6\\"; }
    #review { reasoning_effort: low }
  "]
  start [shape=Mdiamond]
  subgraph cluster_a { label="Code Work"; implement [prompt="Do $goal"] }
  review [llm_model="mine"]
  exit [shape=Msquare]
  start -> implement -> review -> exit
}
"""


def test_parse_then_transform_end_to_end() -> None:
    from attractor_trio.dot import parse_dot

    parsed = parse_dot(PIPELINE_DOT)
    snapshot = copy.deepcopy(parsed)
    result = apply_transforms(parsed)
    implement, review = result.nodes["implement"], result.nodes["review"]
    assert implement.prompt == "Do Ship it"
    assert (implement.llm_model, implement.llm_provider) == ("claude-opus-4-6", "anthropic")
    assert (review.llm_model, review.llm_provider, review.reasoning_effort) == (
        "mine",
        "anthropic",
        "low",
    )
    assert parsed == snapshot


def test_with_attrs_is_evolve_of_attrs_keeping_every_other_field() -> None:
    """Transforms rebuild nodes with ``Node.with_attrs`` (fast); it must keep every field
    ``attrs.evolve`` keeps, including the ones equality ignores (position, role)."""
    graph = Graph(
        "G",
        nodes={
            "start": Node("start", {"prompt": "p"}, ("loop-a",), line=3, col=5),
            "exit": Node("exit"),
        },
    )
    node = graph.nodes["start"]
    assert node.role == "start"  # set by Graph: this node is the start by its id
    rebuilt = node.with_attrs({"prompt": "q"})
    expected = attrs.evolve(node, attrs={"prompt": "q"})
    for field in attrs.fields(Node):
        assert getattr(rebuilt, field.name) == getattr(expected, field.name), field.name
    assert node.attrs == {"prompt": "p"}
