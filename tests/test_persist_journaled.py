"""Journaled containers and incremental encoders (``persist/journaled.py``), and the checkpoint
encoder built on them: whatever the mutations, the text equals a from-scratch ``json.dumps``,
and a one-entry change costs one entry's encoding."""

from __future__ import annotations

import copy
import enum
import json
import pickle
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.context import Context, StageSummary
from attractor_trio.persist.atomic import dumps_json
from attractor_trio.persist.checkpoint import Checkpoint, CheckpointEncoder
from attractor_trio.persist.journaled import (
    CHUNK,
    ArrayEncoder,
    JournaledDict,
    JournaledList,
    ObjectEncoder,
    dumps_compact,
)

from .helpers import run_dot

keys = st.sampled_from(["a", "b", "c", "d", "é", "k\n", "plan", "review"])
values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none(), st.booleans())

dict_ops = st.one_of(
    st.tuples(st.just("set"), keys, values),
    st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=3)),
    st.tuples(st.just("setdefault"), keys, values),
    st.tuples(st.just("ior"), st.dictionaries(keys, values, max_size=3)),
    st.tuples(st.just("del"), keys),
    st.tuples(st.just("pop"), keys),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("clear")),
)


def _apply_dict_op(target: dict[str, Any], op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "set":
        target[op[1]] = op[2]
    elif name == "update":
        target.update(op[1])
    elif name == "setdefault":
        target.setdefault(op[1], op[2])
    elif name == "ior":
        target |= op[1]
    elif name == "del" and op[1] in target:
        del target[op[1]]
    elif name == "pop":
        target.pop(op[1], None)
    elif name == "popitem" and target:
        target.popitem()
    elif name == "clear":
        target.clear()


# Each op comes with "encode afterwards?", so both single changes and batches are checked.
# ``chunk``: the encoders keep their text in sealed chunks of that many entries (CHUNK in the
# engine); tiny chunks put chunk boundaries, sealing and re-sealing under every op sequence,
# and 5 a tail that grows over several ops before it is sealed.
chunks = st.sampled_from([1, 2, 3, 5, CHUNK])


@given(
    st.dictionaries(keys, values, max_size=4),
    st.lists(st.tuples(dict_ops, st.booleans()), max_size=40),
    chunks,
)
def test_object_encoder_always_matches_a_full_encode(
    initial: dict[str, Any], ops: list[tuple[tuple[Any, ...], bool]], chunk: int
) -> None:
    journaled: JournaledDict[str, Any] = JournaledDict(initial)
    _replay(journaled, dict(initial), ObjectEncoder(chunk=chunk), ops, _apply_dict_op)


def _replay(
    journaled: Any,
    reference: Any,
    encoder: Any,
    ops: list[tuple[tuple[Any, ...], bool]],
    apply: Any,
) -> None:
    """Apply each op to the journaled collection and to a plain one; the encoder's text must
    equal a full encode of the plain one whenever it is asked (and at the end)."""
    assert encoder.encode(journaled) == dumps_compact(reference)
    for op, encode in ops:
        apply(journaled, op)
        apply(reference, op)
        assert journaled == reference
        assert list(journaled) == list(reference)  # same order, so the same text
        if encode:
            assert encoder.encode(journaled) == dumps_compact(reference)
    assert encoder.encode(journaled) == dumps_compact(reference)


list_ops = st.one_of(
    st.tuples(st.just("append"), values),
    st.tuples(st.just("extend"), st.lists(values, max_size=3)),
    st.tuples(st.just("iadd"), st.lists(values, max_size=3)),
    st.tuples(st.just("set"), st.integers(-3, 3), values),
    st.tuples(st.just("del"), st.integers(-3, 3)),
    st.tuples(st.just("delslice"), st.integers(0, 3)),
    st.tuples(st.just("insert"), st.integers(-3, 3), values),
    st.tuples(st.just("pop")),
    st.tuples(st.just("remove"), st.integers(-3, 3)),  # removes the value at that index
    st.tuples(st.just("clear")),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("sort")),
    st.tuples(st.just("imul"), st.integers(0, 2)),
)


def _apply_list_op(target: list[Any], op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "append":
        target.append(op[1])
    elif name == "extend":
        target.extend(op[1])
    elif name == "iadd":
        target += op[1]
    elif name == "set" and -len(target) <= op[1] < len(target):
        target[op[1]] = op[2]
    elif name == "del" and -len(target) <= op[1] < len(target):
        del target[op[1]]
    elif name == "delslice":
        del target[op[1] :]
    elif name == "insert":
        target.insert(op[1], op[2])
    elif name == "pop" and target:
        target.pop()
    elif name == "remove" and -len(target) <= op[1] < len(target):
        target.remove(target[op[1]])
    elif name == "clear":
        target.clear()
    elif name == "reverse":
        target.reverse()
    elif name == "sort":
        target.sort(key=repr)
    elif name == "imul":
        target *= op[1]


@given(
    st.lists(values, max_size=4),
    st.lists(st.tuples(list_ops, st.booleans()), max_size=40),
    chunks,
)
def test_array_encoder_always_matches_a_full_encode(
    initial: list[Any], ops: list[tuple[tuple[Any, ...], bool]], chunk: int
) -> None:
    journaled: JournaledList[Any] = JournaledList(initial)
    _replay(journaled, list(initial), ArrayEncoder(chunk=chunk), ops, _apply_list_op)


LIST_OPS = [
    ("set", 0, "z"),
    ("del", 0),
    ("delslice", 1),
    ("insert", 0, "z"),
    ("pop",),
    ("remove", 1),
    ("clear",),
    ("reverse",),
    ("sort",),
    ("imul", 0),
]
DICT_OPS = [("del", "a"), ("pop", "b"), ("popitem",), ("clear",), ("set", "a", 9)]


@pytest.mark.parametrize("op", LIST_OPS, ids=lambda op: op[0])
def test_each_list_mutation_is_seen_by_the_encoder(op: tuple[Any, ...]) -> None:
    journaled, reference = JournaledList(["c", "a", "b"]), ["c", "a", "b"]
    encoder = ArrayEncoder()
    encoder.encode(journaled)
    _apply_list_op(journaled, op)
    _apply_list_op(reference, op)
    journaled.append("y")
    reference.append("y")
    assert encoder.encode(journaled) == dumps_compact(reference)


@pytest.mark.parametrize("op", DICT_OPS, ids=lambda op: op[0])
def test_each_dict_mutation_is_seen_by_the_encoder(op: tuple[Any, ...]) -> None:
    journaled: JournaledDict[str, Any] = JournaledDict({"a": 1, "b": 2})
    reference = {"a": 1, "b": 2}
    encoder = ObjectEncoder()
    encoder.encode(journaled)
    _apply_dict_op(journaled, op)
    _apply_dict_op(reference, op)
    journaled["a"] = 5  # re-added after a deletion: it moves to the end
    reference["a"] = 5
    assert encoder.encode(journaled) == dumps_compact(reference)


def test_one_changed_entry_costs_one_entry_encoding() -> None:
    calls: list[Any] = []

    def convert(value: Any) -> Any:
        calls.append(value)
        return value

    mapping: JournaledDict[str, int] = JournaledDict({f"n{i}": i for i in range(1000)})
    encoder = ObjectEncoder(convert)
    encoder.encode(mapping)
    assert len(calls) == 1000
    calls.clear()
    mapping["n5"] = -1
    mapping["new"] = 7
    text = encoder.encode(mapping)
    assert calls == [-1, 7]
    assert json.loads(text) == mapping

    items: JournaledList[str] = JournaledList(f"s{i}" for i in range(1000))
    array = ArrayEncoder()
    array.encode(items)
    items.append("last")
    assert array.encode(items).endswith(',"s999","last"]')
    assert items.take_stable() == 1001  # the encoder consumed the journal up to here


def test_plain_containers_and_a_new_source_are_encoded_from_scratch() -> None:
    encoder = ObjectEncoder()
    plain = {"a": 1}
    assert encoder.encode(plain) == '{"a":1}'
    plain["b"] = 2  # a plain dict keeps no journal: the next encode must not trust one
    assert encoder.encode(plain) == '{"a":1,"b":2}'
    other: JournaledDict[str, int] = JournaledDict({"z": 0})
    assert encoder.encode(other) == '{"z":0}'
    array = ArrayEncoder()
    items = ["x"]
    assert array.encode(items) == '["x"]'
    items[0] = "y"
    assert array.encode(items) == '["y"]'


def test_non_string_keys_are_converted_as_json_converts_them() -> None:
    mapping: JournaledDict[Any, int] = JournaledDict()
    encoder = ObjectEncoder()
    encoder.encode(mapping)
    mapping[1] = 1
    mapping[True] = 2  # equal to 1: json and dict both keep one entry
    mapping[None] = 3
    assert encoder.encode(mapping) == json.dumps(mapping, separators=(",", ":"))


def test_nan_is_refused_like_every_persisted_document() -> None:
    mapping: JournaledDict[str, float] = JournaledDict()
    encoder = ObjectEncoder()
    encoder.encode(mapping)
    mapping["x"] = float("nan")
    with pytest.raises(ValueError):
        encoder.encode(mapping)


def test_an_entry_whose_encoding_failed_is_encoded_by_the_next_call() -> None:
    """A failed encode leaves nothing stale behind: the entry it could not encode (and the
    entries after it) are in the next call's text, not lost with the journal."""
    failing = {"x"}

    def convert(value: Any) -> Any:
        if value in failing:
            raise ValueError(value)
        return value

    mapping: JournaledDict[str, str] = JournaledDict()
    encoder = ObjectEncoder(convert)
    encoder.encode(mapping)
    mapping["a"] = "x"
    mapping["b"] = "y"
    with pytest.raises(ValueError):
        encoder.encode(mapping)
    failing.clear()
    assert encoder.encode(mapping) == '{"a":"x","b":"y"}'


@pytest.mark.parametrize(
    "copier", [copy.copy, copy.deepcopy, lambda v: pickle.loads(pickle.dumps(v))]
)
def test_copies_stay_journaled(copier: Any) -> None:
    mapping: JournaledDict[str, int] = JournaledDict({"a": 1})
    items: JournaledList[int] = JournaledList([1, 2])
    mapping_copy, items_copy = copier(mapping), copier(items)
    assert type(mapping_copy) is JournaledDict and mapping_copy == {"a": 1}
    assert type(items_copy) is JournaledList and items_copy == [1, 2]
    mapping_copy["b"] = 2
    assert mapping_copy.take_changes() == (True, ["b"])


# --- the checkpoint encoder -------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


@attrs.frozen
class Point:
    x: int
    y: tuple[int, ...]


def test_context_snapshot_json_matches_snapshot() -> None:
    context = Context(
        {
            "text": "héllo\n",
            "tuple": (1, 2),
            "set": {3, 1},
            "enum": Color.RED,
            "attrs": Point(1, (2, 3)),
            "nested": {"deep": [None, True, 2.5]},
            "other": object,
        }
    )
    assert context.snapshot_json() == dumps_compact(context.snapshot())
    context.set("bad", float("inf"))
    with pytest.raises(ValueError):
        context.snapshot_json()


node_ids = st.sampled_from(["start", "plan", "review", "ship", "exit"])
outcome_docs = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "fail", "retry"])},
    optional={"preferred_label": st.text(max_size=4), "failure_reason": st.text(max_size=4)},
)
checkpoint_steps = st.lists(
    st.tuples(node_ids, outcome_docs, st.integers(0, 3), st.booleans()), max_size=12
)


def _run_collections() -> tuple[
    JournaledList[str],
    JournaledDict[str, dict[str, Any]],
    JournaledDict[str, int],
    JournaledDict[str, int],
    JournaledDict[str, int],
]:
    """A run's journaled collections: completed, outcomes, retries, visits, attempts."""
    return JournaledList(), JournaledDict(), JournaledDict(), JournaledDict(), JournaledDict()


def _assert_encodes_as_the_full_checkpoint(
    encoder: CheckpointEncoder,
    fields: dict[str, Any],
    context: Context,
    *,
    restart_count: int,
    signatures: dict[str, Any],
    attempts: JournaledDict[str, int],
    pieces: bool = False,
) -> None:
    """The incremental encoder's bytes are the plain ``Checkpoint``'s compact JSON, whether the
    context arrives as text or as the engine's UTF-8 pieces (``pieces``)."""
    fast = encoder.encode(
        **fields,
        context_json=context.snapshot_pieces() if pieces else context.snapshot_json(),
        restart_count=restart_count,
        restart_failure_signatures=signatures,
        node_attempts=attempts,
    )
    extra = {
        "restart_count": restart_count,
        "restart_failure_signatures": signatures,
        "node_attempts": attempts,
    }
    slow = dumps_json(
        Checkpoint(**fields, context=context.snapshot(), extra=extra).to_json(), compact=True
    )
    assert fast.decode("utf-8") == slow


@given(checkpoint_steps)
def test_checkpoint_encoder_writes_what_the_full_checkpoint_writes(
    steps: list[tuple[str, dict[str, Any], int, bool]],
) -> None:
    encoder = CheckpointEncoder(dict)
    completed, outcomes, retries, visits, attempts = _run_collections()
    context = Context({"graph.goal": "ship it"})
    for index, (node_id, outcome, retry, restart) in enumerate(steps):
        if restart:  # what a loop restart does to the collections
            retries.clear()
            outcomes.clear()
            visits.clear()
        completed.append(node_id)
        outcomes[node_id] = outcome
        retries[node_id] = retry
        visits[node_id] = visits.get(node_id, 0) + 1
        attempts[node_id] = retry + 1
        context.set("last_stage", node_id)
        # A summary between plain values: the pieces carry its cached bytes (non-ASCII too).
        summary = StageSummary.of(context.get("summary")).appended([node_id, "success", "é"], 3)
        context.set("summary", summary)
        context.set("after", index)
        fields: dict[str, Any] = {
            "run_id": "run-1",
            "current_node": node_id,
            "completed_nodes": completed,
            "node_retries": retries,
            "logs": [f"step {index}"],
            "node_outcomes": outcomes,
            "visits": visits,
            "failure_signatures": {"sig": index},
            "timestamp": "2025-01-31T12:00:00.123Z",
        }
        _assert_encodes_as_the_full_checkpoint(
            encoder,
            fields,
            context,
            restart_count=index,
            signatures={"r": 1},
            attempts=attempts,
            pieces=index % 2 == 1,
        )


def test_a_long_run_checkpoint_matches_the_full_encode_across_sealed_chunks() -> None:
    """Hundreds of stages (several sealed chunks per collection), with entries inside sealed
    chunks changed again (a loop revisits early nodes), a retry count reset and a restart
    clearing everything: every checkpoint is byte-identical to the full encode."""
    encoder = CheckpointEncoder(dict)
    completed, outcomes, retries, visits, attempts = _run_collections()
    for index in range(5 * CHUNK + 3):
        node = f"s{index % (3 * CHUNK)}"  # from stage 3*CHUNK on, early nodes come back
        if index == 4 * CHUNK:
            retries.clear()
            outcomes.clear()
            visits.clear()
        completed.append(node)
        outcomes[node] = {"status": "success", "notes": f"stage {index}"}
        retries[node] = index % 3
        visits[node] = visits.get(node, 0) + 1
        attempts[node] = index % 3 + 1
        if index % 5 == 0:
            completed[index // 2] = f"rewritten {index}"  # a change inside a sealed chunk
        fields: dict[str, Any] = {
            "run_id": "run-1",
            "current_node": node,
            "completed_nodes": completed,
            "node_retries": retries,
            "logs": [],
            "node_outcomes": outcomes,
            "visits": visits,
            "failure_signatures": {},
            "timestamp": "2025-01-31T12:00:00.123Z",
        }
        _assert_encodes_as_the_full_checkpoint(
            encoder, fields, Context(), restart_count=0, signatures={}, attempts=attempts
        )


async def test_an_engine_run_encodes_each_checkpoint_entry_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine keeps its per-node collections journaled, so checkpointing after each of N
    stages encodes O(N) entries in all — not the O(N²) of re-encoding every node each time."""
    stages = 120
    chain = " -> ".join(f"s{i}" for i in range(stages))
    source = f"digraph G {{ start [shape=Mdiamond] exit [shape=Msquare] start -> {chain} -> exit }}"
    encoded: list[int] = []
    real_fragment = ObjectEncoder._fragment

    def counting(self: ObjectEncoder, key: Any, value: Any) -> str:
        encoded.append(1)
        return real_fragment(self, key, value)

    monkeypatch.setattr(ObjectEncoder, "_fragment", counting)
    result = await run_dot(source, tmp_path / "run")
    assert result.status == "success"
    checkpoint = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert len(checkpoint["node_outcomes"]) == stages + 2
    # 4 journaled objects (retries, outcomes, visits, attempts), a few entries per stage each;
    # re-encoding everything would be ~4 * N² / 2 = 28,800 here.
    assert len(encoded) < 12 * (stages + 2)
