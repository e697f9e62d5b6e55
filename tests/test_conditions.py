"""Condition language (spec §10): every S10 item, aliases, and rejections with columns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.dot.conditions import (
    STATUSES,
    ConditionSyntaxError,
    canonical_status,
    evaluate_condition,
    parse_condition,
    resolve_key,
    stringify,
)


@pytest.mark.parametrize(
    ("condition", "outcome", "label", "context", "expected"),
    [
        # S10.6-01 examples
        ("outcome=success", "success", "", {}, True),
        ("outcome=success", "fail", "", {}, False),
        ("outcome=fail", "fail", "", {}, True),
        (
            "outcome=success && context.tests_passed=true",
            "success",
            "",
            {"tests_passed": True},
            True,
        ),
        (
            "outcome=success && context.tests_passed=true",
            "success",
            "",
            {"tests_passed": False},
            False,
        ),
        ("context.loop_state!=exhausted", "success", "", {"loop_state": "running"}, True),
        ("context.loop_state!=exhausted", "success", "", {"loop_state": "exhausted"}, False),
        ("preferred_label=Fix", "success", "Fix", {}, True),
        ("preferred_label=Fix", "success", "fix", {}, False),  # S10.3-05 case-sensitive
        # S10.5-01 empty condition is true
        ("", "fail", "", {}, True),
        ("   ", "fail", "", {}, True),
        # S10.3-04 missing keys compare as ""
        ("context.missing=", "success", "", {}, True),
        ("context.missing=x", "success", "", {}, False),
        ("context.missing!=x", "success", "", {}, True),
        # S10.4-01 context.X falls back to X; a literal "context.X" key wins
        ("context.a.b=1", "success", "", {"a.b": 1}, True),
        ("context.a=1", "success", "", {"context.a": "1", "a": "2"}, True),
        ("plain=1", "success", "", {"plain": 1}, True),
        # S10.5-02 empty clauses skipped
        ("outcome=success && ", "success", "", {}, True),
        # S10.5-04 bare key truthiness
        ("context.flag", "success", "", {"flag": "yes please"}, True),
        ("context.flag", "success", "", {"flag": ""}, False),
        ("context.flag", "success", "", {"flag": False}, False),
        ("context.flag", "success", "", {}, False),
        # S10.5-05 quoted literal
        ('preferred_label="Fix it"', "success", "Fix it", {}, True),
        ('context.msg="say \\"hi\\""', "success", "", {"msg": 'say "hi"'}, True),
        # aliases canonicalize both sides
        ("outcome=ok", "success", "", {}, True),
        ("outcome=failure", "fail", "", {}, True),
        ("outcome=error", "fail", "", {}, True),
        ("outcome=skip", "skipped", "", {}, True),
        ("outcome=success", "SUCCESS", "", {}, True),
        ("outcome=partial-success", "partial_success", "", {}, True),
        # != checked before = (S10.5-03)
        ("outcome!=success", "fail", "", {}, True),
        ("outcome!=success", "success", "", {}, False),
    ],
)
def test_evaluation(
    condition: str, outcome: str, label: str, context: dict[str, object], expected: bool
) -> None:
    assert evaluate_condition(condition, outcome, label, context) is expected


@pytest.mark.parametrize(
    ("condition", "fragment", "col"),
    [
        ("outcome==success", "single '='", 8),
        ("outcome=success || outcome=fail", "OR", 17),
        ("context.n>3", "'>'", 10),
        ("context.n<=3", "'<='", 10),
        ("=success", "missing key", 1),
        ("outcome=no good", "invalid outcome 'no good'", 1),
        ("outcome=bogus!", "or a custom value", 1),
        ("!context.x", "NOT", 1),
        ("context.x contains foo", "'contains'", 1),
        ("outcome=success && bad key=1", "invalid key", 20),
        ('preferred_label="open', "unterminated", 17),
    ],
)
def test_syntax_errors_carry_a_column(condition: str, fragment: str, col: int) -> None:
    with pytest.raises(ConditionSyntaxError) as info:
        parse_condition(condition)
    assert fragment in str(info.value)
    assert info.value.col == col


def test_operators_inside_quotes_are_literal_text() -> None:
    assert evaluate_condition('context.op="a||b"', "success", "", {"op": "a||b"})
    assert evaluate_condition('context.op="x>y"', "success", "", {"op": "x>y"})


def test_unquoted_literal_with_words_is_allowed() -> None:
    assert evaluate_condition("preferred_label=Fix and retry", "fail", "Fix and retry", {})


def test_parse_is_cached_and_clauses_keep_positions() -> None:
    parsed = parse_condition("outcome=success && context.x=1")
    assert parse_condition("outcome=success && context.x=1") is parsed
    assert [c.col for c in parsed.clauses] == [1, 20]
    assert [c.op for c in parsed.clauses] == ["=", "="]


def test_stringify_uses_json_spellings() -> None:
    assert [stringify(v) for v in (True, False, None, 3, 1.5, "s")] == [
        "true",
        "false",
        "",
        "3",
        "1.5",
        "s",
    ]
    assert stringify({"b": 1, "a": [1]}) == '{"a": [1], "b": 1}'


def test_canonical_status() -> None:
    for status in STATUSES:
        assert canonical_status(status.upper()) == status
    assert canonical_status("nonsense") is None


def test_resolve_key_outcome_is_lowercase() -> None:
    assert resolve_key("outcome", "PARTIAL_SUCCESS", "", {}) == "partial_success"


_values = st.text(alphabet=st.characters(blacklist_characters='"\\&!=<>|'), max_size=12)


@given(key=st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), value=_values)
def test_equality_and_inequality_are_complementary(key: str, value: str) -> None:
    context = {key: value}
    literal = value.strip()
    eq = evaluate_condition(f"context.{key}={literal}", "success", "", context)
    ne = evaluate_condition(f"context.{key}!={literal}", "success", "", context)
    assert eq != ne
    assert eq is (value == literal)


@given(outcome=st.sampled_from(STATUSES), other=st.sampled_from(STATUSES))
def test_outcome_clause_matches_only_its_status(outcome: str, other: str) -> None:
    assert evaluate_condition(f"outcome={other}", outcome) is (outcome == other)


@given(
    clauses=st.lists(
        st.sampled_from(["outcome=success", "context.a=1", "context.b!=2"]), max_size=4
    )
)
def test_conjunction_is_all_of_its_clauses(clauses: list[str]) -> None:
    context = {"a": "1", "b": "3"}
    expected = all(evaluate_condition(c, "fail", "", context) for c in clauses)
    assert evaluate_condition(" && ".join(clauses), "fail", "", context) is expected


@pytest.mark.parametrize("value", ["0", "no", "false", "FALSE", ""])
def test_bare_key_falsy_spellings(value: str) -> None:
    """Kilroy's truthiness (a documented divergence from spec S10.5-04)."""
    assert evaluate_condition("context.flag", "success", "", {"flag": value}) is False
