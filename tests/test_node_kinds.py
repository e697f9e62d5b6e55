"""``Node.implied_type``, ``handler_type`` and ``is_exit`` are worked out once per node
(dot/graph.py ``Node._kinds``): the cached answers are exactly the rules' (spec S2.8 shape
mapping, explicit ``type`` first, the role by id), and a changed node never keeps the old ones."""

from __future__ import annotations

import pickle

from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.dot.graph import SHAPE_TO_TYPE, Graph, Node

SHAPES = st.sampled_from([*SHAPE_TO_TYPE, "ellipse", "", "Msquare", "Mdiamond"])
TYPES = st.sampled_from(["", "tool", "codergen", "custom.kind", "exit"])
ROLES = st.sampled_from(["", "start", "exit"])


def _attrs(shape: str, type_: str) -> dict[str, str]:
    attrs = {}
    if shape:
        attrs["shape"] = shape
    if type_:
        attrs["type"] = type_
    return attrs


@given(shape=SHAPES, type_=TYPES, role=ROLES)
def test_the_cached_kinds_are_the_rules(shape: str, type_: str, role: str) -> None:
    node = Node("n", _attrs(shape, type_), role=role)
    implied = role or SHAPE_TO_TYPE.get(shape or "box")
    for _ in range(2):  # the first answer works them out, the second reads the cache
        assert node.implied_type == implied
        assert node.handler_type == (type_ or implied or "codergen")
        assert node.is_exit == ((shape or "box") == "Msquare" or role == "exit")


def test_a_changed_node_is_worked_out_again() -> None:
    node = Node("n", {"shape": "box"})
    assert (node.handler_type, node.is_exit) == ("codergen", False)
    exit_node = node.with_attrs({"shape": "Msquare"})
    assert (exit_node.handler_type, exit_node.is_exit) == ("exit", True)
    by_role = evolve(node, role="exit")
    assert (by_role.handler_type, by_role.is_exit) == ("exit", True)
    assert (node.handler_type, node.is_exit) == ("codergen", False)


def test_the_cache_changes_neither_equality_nor_a_pickled_copy() -> None:
    asked, fresh = Node("n", {"shape": "hexagon"}), Node("n", {"shape": "hexagon"})
    assert asked.handler_type == "wait.human"
    assert asked == fresh
    copy = pickle.loads(pickle.dumps(asked))
    assert copy == asked and copy.handler_type == "wait.human"


def test_a_graph_finds_its_terminal_nodes_through_them() -> None:
    graph = Graph(
        "g",
        nodes={
            "start": Node("start", {"shape": "Mdiamond"}),
            "done": Node("done", {"shape": "Msquare"}),
            "work": Node("work"),
        },
    )
    assert graph.is_terminal("done") and not graph.is_terminal("work")
    assert not graph.is_terminal("missing")
    assert [node.id for node in graph.exit_nodes()] == ["done"]
