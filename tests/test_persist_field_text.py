"""``persist/field_text.py``: the functions made per event name write exactly the text the
JSON encoder writes, and decline whatever they were not made for (issue #22)."""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attractor_trio.persist import field_text
from attractor_trio.persist.field_text import generic_tail, text_function
from attractor_trio.persist.progress import ProgressWriter

ENVELOPE = ("seq", "ts", "run_id", "event", "branch")


class Word(enum.StrEnum):
    A = "a\u00e9\n"


class Level(enum.IntEnum):
    HIGH = 7


class Ratio(float):
    pass


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(Ratio, st.floats(allow_nan=False, allow_infinity=False)),
    st.text(max_size=6),
    st.sampled_from([Word.A, Level.HIGH]),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
names = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True),
    st.text(max_size=5),
    st.sampled_from(["node_id", "class", "déjà", "a b", 'q"', "{x}", "%s"]),
).filter(lambda name: name not in ENVELOPE)
field_dicts = st.dictionaries(names, values, max_size=5)


def _expected(envelope: dict[str, Any]) -> bytes:
    return (json.dumps(envelope, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=field_dicts, data=st.data())
def test_lines_are_json_dumps_of_the_envelope_whatever_the_fields_after_the_first(
    tmp_path: Path, first: dict[str, Any], data: st.DataObject
) -> None:
    """The first fields of an event make its function; later fields with the same names
    (any values) or any others must still give ``json.dumps``'s text, byte for byte."""
    field_text._functions.clear()
    same_names = data.draw(st.fixed_dictionaries({name: values for name in first}))
    other = data.draw(field_dicts)
    path = tmp_path / f"p-{os.urandom(4).hex()}.ndjson"
    with ProgressWriter(path, "run-1") as writer:
        lines = []
        for fields in (first, same_names, other, first):
            envelope = writer.emit("ev", "", **fields)
            assert writer.last_line == _expected(envelope)
            lines.append(writer.last_line)
    assert path.read_bytes() == b"".join(lines)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), Ratio("nan")])
def test_a_float_that_is_not_finite_still_raises_and_consumes_no_seq(
    tmp_path: Path, bad: float
) -> None:
    field_text._functions.clear()
    path = tmp_path / "p.ndjson"
    with ProgressWriter(path, "r") as writer:
        writer.emit("timed", duration_s=0.5)  # makes the event's function for a float
        with pytest.raises(ValueError, match="Out of range float"):
            writer.emit("timed", duration_s=bad)
        assert writer.emit("timed", duration_s=1.0)["seq"] == 2
    assert path.read_text().count("\n") == 2


def test_an_unserializable_value_or_an_envelope_key_still_raises(tmp_path: Path) -> None:
    field_text._functions.clear()
    with ProgressWriter(tmp_path / "p.ndjson", "r") as writer:
        writer.emit("e", payload=[1])
        with pytest.raises(TypeError, match="not JSON serializable"):
            writer.emit("e", payload=object())
        with pytest.raises(TypeError, match="not JSON serializable"):
            writer.emit("e", payload="x", other=object())
        with pytest.raises(ValueError, match="envelope keys: seq"):
            writer.emit("e", seq=[1])  # as many fields as the made function's, another name
        assert writer.next_seq == 2


def test_a_function_is_made_for_identifier_names_and_kept_per_event() -> None:
    field_text._functions.clear()
    fields = {"node_id": "n", "index": 2, "ok": True, "took": 0.5, "nothing": None}
    made = text_function("e", fields)
    assert made is not generic_tail
    assert text_function("e", {"other": 1}) is made  # kept: the first fields made it
    assert made(fields) == generic_tail(fields)
    assert made({"index": 2, "node_id": "n", "ok": True, "took": 0.5, "nothing": None}) is None
    assert made({**fields, "index": True}) is None  # a bool is not an int here
    assert made({**fields, "node_id": 5}) is None  # not a string: the encoder writes it
    assert made({"node_id": "n"}) is None and made({**fields, "more": 1}) is None
    assert made({**fields, "index": Level.HIGH}) is None  # formats as its name: the encoder
    assert made({**fields, "node_id": Word.A}) == generic_tail({**fields, "node_id": Word.A})
    assert text_function("odd", {"a b": 1}) is generic_tail
    assert text_function("envelope", {"run_id": 1}) is generic_tail  # which refuses it
    with pytest.raises(ValueError, match="envelope keys: run_id"):
        generic_tail({"run_id": 1})
    assert text_function("none", {})({}) == "}"


def test_at_most_max_functions_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    field_text._functions.clear()
    monkeypatch.setattr(field_text, "MAX_FUNCTIONS", 2)
    assert text_function("a", {"x": 1}) is not generic_tail
    assert text_function("b", {"x": 1}) is not generic_tail
    assert text_function("c", {"x": 1}) is generic_tail
    assert sorted(field_text.functions) == ["a", "b"]
    field_text._functions.clear()
