"""The run context (spec S5.1): API, snapshot/clone isolation, resume."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from attractor_trio.context import Context, StageSummary
from attractor_trio.dot.conditions import evaluate_condition
from attractor_trio.handlers.codergen import _completed_stages


def test_set_get_contains_keys() -> None:
    context = Context()
    context.set("a", 1)
    context.set("b.c", "x")
    assert context.get("a") == 1
    assert context.get("missing") is None
    assert context.get("missing", "d") == "d"
    assert "b.c" in context and "zz" not in context
    assert list(context.keys()) == ["a", "b.c"]
    assert len(context) == 2
    assert context["a"] == 1
    with pytest.raises(KeyError):
        context["missing"]


def test_keys_must_be_strings() -> None:
    with pytest.raises(TypeError, match="context keys are strings"):
        Context().set(1, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "dflt"), ("text", "text"), (True, "true"), (False, "false"), (3, "3"), (0.5, "0.5")],
)
def test_get_string(value: object, expected: str) -> None:
    context = Context({"k": value})
    assert context.get_string("k", "dflt") == expected
    assert context.get_string("missing") == ""


def test_apply_updates_in_order_and_overwrites() -> None:
    context = Context({"a": 1})
    context.apply_updates({"a": 2, "b": 3})
    assert dict(context) == {"a": 2, "b": 3}


def test_logs_append_only() -> None:
    context = Context()
    context.append_log("one")
    context.append_log("two")
    assert context.logs == ("one", "two")


def test_snapshot_is_a_deep_copy() -> None:
    context = Context({"list": [1, {"x": 2}]})
    snap = context.snapshot()
    snap["list"][1]["x"] = 99
    assert context["list"] == [1, {"x": 2}]


class Color(enum.Enum):
    RED = "red"


@attrs.frozen
class Point:
    x: int


def test_snapshot_is_json_serializable_even_for_odd_values() -> None:
    context = Context(
        {"t": (1, 2), "s": {3, 1}, "e": Color.RED, "p": Point(1), "o": object(), "n": None}
    )
    snap = context.snapshot()
    json.dumps(snap)
    assert snap["t"] == [1, 2]
    assert snap["s"] == [1, 3]
    assert snap["e"] == "red"
    assert snap["p"] == {"x": 1}
    assert snap["o"].startswith("<object object")
    assert snap["n"] is None


def test_clone_isolates_values_and_logs() -> None:  # S3.8-03
    parent = Context({"nested": {"a": [1]}}, logs=["p"])
    child = parent.clone()
    child["nested"]["a"].append(2)
    child.set("new", 1)
    child.append_log("c")
    assert parent["nested"] == {"a": [1]}
    assert "new" not in parent
    assert parent.logs == ("p",)
    assert child.logs == ("p", "c")


def test_from_snapshot_round_trip_and_isolation() -> None:
    original = Context({"a": {"b": 1}, "flag": True}, logs=["x"])
    values = original.snapshot()
    restored = Context.from_snapshot(values, original.logs)
    assert dict(restored) == dict(original)
    assert restored.logs == ("x",)
    values["a"]["b"] = 2
    assert restored["a"] == {"b": 1}


def test_context_works_with_conditions() -> None:
    context = Context({"tests_passed": True, "context.loop_state": "running"})
    assert isinstance(context, Mapping)
    assert evaluate_condition("context.tests_passed=true", "success", "", context)
    assert evaluate_condition("context.loop_state!=exhausted", "success", "", context)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_snapshot_of_json_values_is_exact(values: dict[str, Any]) -> None:
    context = Context(values)
    assert context.snapshot() == values
    assert Context.from_snapshot(context.snapshot()).snapshot() == values


# --- StageSummary: the completed-stage summary with its encodings cached --------------------

_TEXT = st.text(max_size=12)
_ENTRY = st.lists(_TEXT, min_size=0, max_size=4)


def _plain_json(values: Any) -> str:
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@given(
    start=st.lists(st.one_of(_ENTRY, st.integers(), st.none()), max_size=6),
    added=st.lists(st.tuples(_TEXT, _TEXT, _TEXT), max_size=12),
    limit=st.integers(min_value=1, max_value=5),
    before=st.dictionaries(_TEXT, st.one_of(_TEXT, st.integers()), max_size=3),
    after=st.dictionaries(_TEXT, st.one_of(_TEXT, st.integers()), max_size=3),
)
def test_a_summary_encodes_and_reads_exactly_as_the_plain_list_would(
    start: list[Any],
    added: list[tuple[str, str, str]],
    limit: int,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    """What the checkpoint and the prompt see is the same text and entries as before the
    cache: the plain list, appended to and cut to the newest ``limit``."""
    plain = list(start)
    summary = StageSummary.of(start)
    for entry in added:
        summary = summary.appended(list(entry), limit)
        plain = [*plain, list(entry)][-limit:]
    assert summary == plain
    values = {**before, "internal.completed_summary": summary}
    values.update({k: v for k, v in after.items() if k not in values})
    context = Context(values)
    expected = {**values, "internal.completed_summary": plain}
    assert context.snapshot_json() == _plain_json(expected)
    assert summary.stages == _completed_stages(plain)


_SCALAR = st.one_of(
    _TEXT, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none()
)


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "internal.completed_summary"]),
            st.one_of(_SCALAR, st.lists(_SCALAR, max_size=3), st.just("append")),
        ),
        max_size=14,
    )
)
@example(steps=[("a", [1]), ("a", "append"), ("b", 1.5), ("b", 1.5)])
def test_the_snapshot_follows_every_change_between_snapshots(
    steps: list[tuple[str, Any]],
) -> None:
    """The checkpoint encodes the context after every stage and remembers the entries' texts
    from one snapshot to the next: a changed value — a new object, or a list changed in place
    — is encoded anew, and the text stays that of one ``json.dumps`` of the values."""
    context = Context({"goal": "g", "n": 1})
    for key, value in steps:
        current = context.get(key)
        if value == "append" and isinstance(current, list):
            current.append(len(current))  # in place: the same object, another text
        elif key == "internal.completed_summary" and isinstance(value, list):
            base = StageSummary.of(current if isinstance(current, list) else [])
            context.set(key, base.appended(["x", "success", "n"], 3))
        else:
            context.set(key, value)
        plain = {k: list(v) if type(v) is StageSummary else v for k, v in context.items()}
        assert context.snapshot_json() == _plain_json(plain)
        assert b"".join(context.snapshot_pieces()).decode() == _plain_json(plain)


@given(
    start=st.lists(st.one_of(_ENTRY, st.integers(), st.none()), max_size=6),
    added=st.lists(st.one_of(_ENTRY, st.tuples(_TEXT, _TEXT, _TEXT).map(list)), max_size=12),
    limit=st.integers(min_value=1, max_value=5),
    asked=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_a_summary_asked_for_its_text_after_every_stage_stays_exact(
    start: list[Any], added: list[list[str]], limit: int, asked: list[bool]
) -> None:
    """As the engine uses it: the checkpoint asks for the JSON after (most) appends, the next
    prompt for the entries. The text each summary carries over from the one before (cut, not
    joined again) and the count of malformed entries it keeps (instead of looking at every
    entry) give exactly what the plain list gives, whatever was dropped or added."""
    plain = list(start)
    summary = StageSummary.of(start)
    for entry, ask in zip(added, asked, strict=False):
        summary = summary.appended(list(entry), limit)
        plain = [*plain, list(entry)][-limit:]
        if ask:
            assert summary.json_text() == _plain_json(plain)
        assert summary.stages == _completed_stages(plain)
    assert summary.json_text() == _plain_json(plain)


def test_a_summary_mutated_in_place_is_encoded_from_what_it_holds() -> None:
    summary = StageSummary([["a", "success", "n"]]).appended(["b", "fail", "why"], 200)
    summary.append(["c", "success", ""])
    summary[0] = ["z", "success", "edited"]
    context = Context({"internal.completed_summary": summary})
    assert json.loads(context.snapshot_json())["internal.completed_summary"] == [
        ["z", "success", "edited"],
        ["b", "fail", "why"],
        ["c", "success", ""],
    ]
    assert [stage[0] for stage in summary.stages] == ["z", "b", "c"]


def test_a_cloned_context_keeps_a_working_summary() -> None:
    summary = StageSummary().appended(["a", "success", ""], 200)
    clone = Context({"internal.completed_summary": summary}).clone()
    copied = clone["internal.completed_summary"]
    assert copied == summary and copied is not summary
    assert copied.appended(["b", "success", ""], 200).stages == [
        ("a", "success", ""),
        ("b", "success", ""),
    ]


def test_a_cloned_summary_is_independent_and_encodes_as_the_original() -> None:
    summary = StageSummary([["a", "success", ""]]).appended(["b", "fail", "why ü"], 200)
    parent = Context({"internal.completed_summary": summary, "text": "t", "n": 1.5})
    child = parent.clone()
    copied = child["internal.completed_summary"]
    assert type(copied) is StageSummary
    assert (
        copied.json_text()
        == summary.json_text()
        == json.dumps(summary, separators=(",", ":"), ensure_ascii=False)
    )
    assert copied.stages == summary.stages
    copied[0].append("changed")  # a handler mutating its branch's copy
    copied.append(["c", "success", ""])
    assert summary == [["a", "success", ""], ["b", "fail", "why ü"]]
    assert summary.json_text() == '[["a","success",""],["b","fail","why ü"]]'
    assert child.snapshot_json() != parent.snapshot_json()
    assert dict(parent.clone()) == dict(parent)


def test_clone_copies_every_value_that_could_be_mutated() -> None:
    mutable: dict[str, Any] = {"list": [1, [2]], "dict": {"k": {"v": 1}}, "set": {1}}
    parent = Context({**mutable, "s": "x", "i": 1, "f": 1.0, "b": True, "none": None})
    child = parent.clone()
    for key in mutable:
        assert child[key] == parent[key] and child[key] is not parent[key]
    child["list"][1].append(3)
    child["dict"]["k"]["v"] = 2
    assert parent["list"] == [1, [2]] and parent["dict"] == {"k": {"v": 1}}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.append(["c", "success", ""]),
        lambda s: s.extend([["c", "success", ""]]),
        lambda s: s.insert(0, ["c", "success", ""]),
        lambda s: s.pop(),
        lambda s: s.remove(s[0]),
        lambda s: s.clear(),
        lambda s: s.sort(key=lambda entry: entry[0], reverse=True),
        lambda s: s.reverse(),
        lambda s: s.__setitem__(0, ["z", "fail", "edited"]),
        lambda s: s.__setitem__(slice(0, 1), [["z", "fail", "edited"]]),
        lambda s: s.__delitem__(0),
        lambda s: s.__iadd__([["c", "success", ""]]),
        lambda s: s.__imul__(2),
    ],
)
def test_every_mutating_list_method_makes_a_summary_read_what_it_holds(
    mutate: Any,
) -> None:
    """The cached encodings are trusted until a mutating method runs: after any of them, the
    checkpoint text, the entries and the next append all follow the list itself."""
    summary = StageSummary([["a", "success", "n"]]).appended(["b", "fail", "why"], 200)
    mutate(summary)
    plain = list(summary)
    assert json.loads(Context({"k": summary}).snapshot_json())["k"] == plain
    assert summary.stages == _completed_stages(plain)
    assert list(summary.appended(["d", "success", ""], 200)) == [*plain, ["d", "success", ""]]


def test_record_stage_appends_to_the_summary_and_counts_it() -> None:
    """The traversal's completed-stage summary after every stage: a plain list (an older
    checkpoint's) becomes a summary, a missing count is counted from its length, the newest
    ``limit`` are kept, and new keys come in this order (the checkpoint's text follows it)."""
    fresh = Context({"goal": "g"})
    fresh.record_stage(["a", "success", ""], 2, "summary", "count")
    assert list(fresh.items()) == [("goal", "g"), ("summary", [["a", "success", ""]]), ("count", 1)]
    assert type(fresh["summary"]) is StageSummary
    old = Context({"summary": [["a", "success", ""], ["b", "fail", "why"]]})
    old.record_stage(["c", "success", "n"], 2, "summary", "count")
    assert old["summary"] == [["b", "fail", "why"], ["c", "success", "n"]]
    assert old["count"] == 3  # counted from the plain list's length
    old.record_stage(["d", "success", ""], 2, "summary", "count")
    assert old["count"] == 4
    assert json.loads(old.snapshot_json())["summary"] == [
        ["c", "success", "n"],
        ["d", "success", ""],
    ]
