"""Model stylesheet (spec §8): grammar, specificity, resolution and error positions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attractor_trio.dot.graph import Node
from attractor_trio.dot.stylesheet import (
    ALLOWED_PROPERTIES,
    Declaration,
    Rule,
    Selector,
    Stylesheet,
    StylesheetSyntaxError,
    parse_stylesheet,
)
from attractor_trio.errors import AttractorError

WORKED_EXAMPLE = (
    "* { llm_model: claude-sonnet-4-5; llm_provider: anthropic; } "
    ".code { llm_model: claude-opus-4-6; llm_provider: anthropic; } "
    "#critical_review { llm_model: gpt-5.2; llm_provider: openai; reasoning_effort: high; }"
)


def node(node_id: str, **attrs: str) -> Node:
    return Node(node_id, attrs)


# --- parsing -------------------------------------------------------------------------------


def test_parses_worked_example_into_rules() -> None:
    sheet = parse_stylesheet(WORKED_EXAMPLE)
    assert [r.selector for r in sheet.rules] == [
        Selector("universal"),
        Selector("class", "code"),
        Selector("id", "critical_review"),
    ]
    assert sheet.rules[2].declarations == (
        Declaration("llm_model", "gpt-5.2"),
        Declaration("llm_provider", "openai"),
        Declaration("reasoning_effort", "high"),
    )


@pytest.mark.parametrize("text", ["", "   \n\t  ", "/* nothing here */", "\n/* a */ /* b */\n"])
def test_empty_stylesheet_has_no_rules(text: str) -> None:
    assert parse_stylesheet(text) == Stylesheet(())


def test_shape_selector_with_quoted_value() -> None:
    sheet = parse_stylesheet('box { llm_model: "claude-opus-4-6" }')
    assert sheet.rules == (
        Rule(Selector("shape", "box"), (Declaration("llm_model", "claude-opus-4-6"),)),
    )


def test_quoted_value_escapes_and_spaces() -> None:
    sheet = parse_stylesheet(r'* { llm_model: "a \"b\" \\ c\d"; }')
    assert sheet.rules[0].declarations[0].value == 'a "b" \\ c\\d'


def test_bare_value_may_contain_colon_slash_and_dots() -> None:
    sheet = parse_stylesheet("*{llm_model:ollama:llama3.1/8b-q4_0}")
    assert sheet.rules[0].declarations[0].value == "ollama:llama3.1/8b-q4_0"


def test_last_semicolon_optional_and_whitespace_and_comments_anywhere() -> None:
    text = """
    /* defaults */
    *
    {
        llm_model :  claude-sonnet-4-5 ; /* inline */
        llm_provider:anthropic
    }
    .fast{llm_model:"gemini-3-flash-preview"}
    """
    sheet = parse_stylesheet(text)
    assert len(sheet.rules) == 2
    assert sheet.rules[0].declarations[1] == Declaration("llm_provider", "anthropic")
    assert sheet.rules[1].selector == Selector("class", "fast")


def test_rule_and_declaration_positions_are_recorded() -> None:
    sheet = parse_stylesheet("* { llm_model: a; }\n  .code {\n    llm_provider: b; }")
    rule = sheet.rules[1]
    assert (rule.line, rule.col) == (2, 3)
    assert (rule.declarations[0].line, rule.declarations[0].col) == (3, 5)


def test_selector_specificities() -> None:
    specificities = [
        r.selector.specificity
        for r in parse_stylesheet(
            "* { llm_model: a } box { llm_model: a } .c { llm_model: a } #n { llm_model: a }"
        ).rules
    ]
    assert specificities == [0, 1, 2, 3]


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_reasoning_effort_values_accepted(effort: str) -> None:
    sheet = parse_stylesheet(f"* {{ reasoning_effort: {effort} }}")
    assert sheet.rules[0].declarations[0].value == effort


# --- syntax errors -------------------------------------------------------------------------


def error_for(text: str) -> StylesheetSyntaxError:
    with pytest.raises(StylesheetSyntaxError) as info:
        parse_stylesheet(text)
    return info.value


def test_syntax_error_is_an_attractor_error_with_position_in_str() -> None:
    err = error_for("* { llm_model a }")
    assert isinstance(err, AttractorError)
    assert str(err).startswith("model_stylesheet:1:15: ")


def test_missing_closing_brace_points_at_the_open_brace() -> None:
    err = error_for("* { llm_model: a; }\n.code {\n  llm_model: b;\n")
    assert (err.line, err.col) == (2, 7)
    assert "never closed" in err.message and "'.code'" in err.message and "'}'" in err.message


def test_missing_closing_brace_before_next_rule() -> None:
    err = error_for("* { llm_model: a;\n.code { llm_model: b; }")
    assert (err.line, err.col) == (2, 1)
    assert "'}'" in err.message


def test_missing_open_brace() -> None:
    err = error_for("box llm_model: a; }")
    assert (err.line, err.col) == (1, 5)
    assert "expected '{' after selector 'box'" in err.message


def test_missing_colon() -> None:
    err = error_for("* {\n  llm_model claude-opus-4-6;\n}")
    assert (err.line, err.col) == (2, 13)
    assert "expected ':' after property 'llm_model'" in err.message
    assert "'claude-opus-4-6'" in err.message


def test_unknown_property_names_allowed_ones_and_suggests() -> None:
    err = error_for("* { llm_model: a; }\n#x { modle: b; }\n.c { llm_modle: c }")
    assert (err.line, err.col) == (2, 6)
    assert "unknown property 'modle'" in err.message
    for prop in ALLOWED_PROPERTIES:
        assert prop in err.message
    assert "did you mean 'llm_model'?" in error_for(".c { llm_modle: c }").message


def test_unknown_property_without_close_match_has_no_suggestion() -> None:
    err = error_for("* { temperature: 0.2 }")
    assert "unknown property 'temperature'" in err.message
    assert "did you mean" not in err.message


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ("> { llm_model: a }", 1, "expected a selector"),
        ("box, .code { llm_model: a }", 4, "expected '{' after selector 'box'"),
        ("box.code { llm_model: a }", 4, "expected '{' after selector 'box'"),
        ("# { llm_model: a }", 2, "expected a node id after '#'"),
        (". { llm_model: a }", 2, "expected a class name after '.'"),
        (".Code_Review { llm_model: a }", 2, "did you mean '.code-review'?"),
        ("#1st { llm_model: a }", 2, "expected a node id"),
    ],
)
def test_bad_selectors(text: str, col: int, fragment: str) -> None:
    err = error_for(text)
    assert (err.line, err.col) == (1, col)
    assert fragment in err.message


def test_bad_reasoning_effort_points_at_value_and_suggests() -> None:
    err = error_for("#x {\n  reasoning_effort:   extreme;\n}")
    assert (err.line, err.col) == (2, 23)
    assert "invalid reasoning_effort 'extreme'" in err.message
    assert "low, medium, high" in err.message
    assert "did you mean 'high'?" in error_for("* { reasoning_effort: HIGH }").message


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("* { }", 1, 5, "no declarations"),
        ("* { llm_model: ; }", 1, 16, "expected a value for 'llm_model'"),
        ('* { llm_model: "" }', 1, 16, "expected a value"),
        ("* { llm_model: claude opus }", 1, 23, "expected ';' or '}'"),
        ("* { llm_model: a llm_provider: b }", 1, 18, "separate declarations with ';'"),
        ('* { llm_model: "abc }', 1, 16, "unterminated string"),
        ("* { llm_model: a } /* trailing", 1, 20, "unterminated comment"),
        ("* { ; }", 1, 5, "expected a property name"),
        ("* { llm_model: a }\n}", 2, 1, "expected a selector"),
    ],
)
def test_other_syntax_errors(text: str, line: int, col: int, fragment: str) -> None:
    err = error_for(text)
    assert (err.line, err.col) == (line, col)
    assert fragment in err.message


@given(st.text(alphabet=st.sampled_from(list('*#.{}:;"\\/ \nabx_-1lmode')), max_size=40))
def test_arbitrary_text_parses_or_raises_positioned_error(text: str) -> None:
    try:
        parse_stylesheet(text)
    except StylesheetSyntaxError as err:
        lines = text.split("\n")
        assert 1 <= err.line <= len(lines)
        assert 1 <= err.col <= len(lines[err.line - 1]) + 1
        assert err.message


# --- resolution ------------------------------------------------------------------------------


def test_worked_example_s8_6_01() -> None:
    sheet = parse_stylesheet(WORKED_EXAMPLE)
    assert sheet.resolve(node("plan")) == {
        "llm_model": "claude-sonnet-4-5",
        "llm_provider": "anthropic",
    }
    assert sheet.resolve(node("implement", **{"class": "code"})) == {
        "llm_model": "claude-opus-4-6",
        "llm_provider": "anthropic",
    }
    assert sheet.resolve(node("critical_review", **{"class": "code"})) == {
        "llm_model": "gpt-5.2",
        "llm_provider": "openai",
        "reasoning_effort": "high",
    }


def test_shape_selector_matches_default_box_and_explicit_shape() -> None:
    sheet = parse_stylesheet('box { llm_model: "claude-opus-4-6" } hexagon { llm_model: h }')
    assert sheet.resolve(node("a")) == {"llm_model": "claude-opus-4-6"}
    assert sheet.resolve(node("b", shape="box")) == {"llm_model": "claude-opus-4-6"}
    assert sheet.resolve(node("c", shape="hexagon")) == {"llm_model": "h"}
    assert sheet.resolve(node("d", shape="Mdiamond")) == {}


def test_class_selector_matches_any_of_several_classes() -> None:
    sheet = parse_stylesheet(".fast { llm_model: gemini-3-flash-preview }")
    assert sheet.resolve(node("a", **{"class": "code, fast"})) == {
        "llm_model": "gemini-3-flash-preview"
    }
    assert sheet.resolve(node("b", **{"class": "code"})) == {}


def test_class_selector_matches_subgraph_derived_class() -> None:
    sheet = parse_stylesheet(".loop-a { llm_provider: openai }")
    inside = Node("plan", {}, subgraph_classes=("loop-a",))
    assert sheet.resolve(inside) == {"llm_provider": "openai"}


def test_id_selector_matches_only_that_node() -> None:
    sheet = parse_stylesheet('#review { reasoning_effort: "high" }')
    assert sheet.resolve(node("review")) == {"reasoning_effort": "high"}
    assert sheet.resolve(node("reviewer")) == {}


def test_specificity_beats_source_order() -> None:
    sheet = parse_stylesheet(
        "#n { llm_model: by-id } .c { llm_model: by-class } box { llm_model: by-shape } "
        "* { llm_model: universal }"
    )
    assert sheet.resolve(node("n", **{"class": "c"})) == {"llm_model": "by-id"}
    assert sheet.resolve(node("m", **{"class": "c"})) == {"llm_model": "by-class"}
    assert sheet.resolve(node("m")) == {"llm_model": "by-shape"}
    assert sheet.resolve(node("m", shape="diamond")) == {"llm_model": "universal"}


def test_equal_specificity_later_rule_wins() -> None:
    sheet = parse_stylesheet(".a { llm_model: first } .b { llm_model: second }")
    assert sheet.resolve(node("n", **{"class": "a,b"})) == {"llm_model": "second"}
    assert sheet.resolve(node("n", **{"class": "b,a"})) == {"llm_model": "second"}


def test_properties_resolve_independently() -> None:
    sheet = parse_stylesheet(
        "* { llm_model: m0; llm_provider: p0 } #n { llm_model: m3 } .c { reasoning_effort: low }"
    )
    assert sheet.resolve(node("n", **{"class": "c"})) == {
        "llm_model": "m3",
        "llm_provider": "p0",
        "reasoning_effort": "low",
    }


def test_repeated_property_in_one_rule_last_wins() -> None:
    sheet = parse_stylesheet("* { llm_model: a; llm_model: b }")
    assert sheet.resolve(node("n")) == {"llm_model": "b"}


# --- property: resolution equals a brute-force reference -------------------------------------

SELECTORS = st.one_of(
    st.just(Selector("universal")),
    st.builds(Selector, st.just("shape"), st.sampled_from(["box", "diamond", "hexagon"])),
    st.builds(Selector, st.just("class"), st.sampled_from(["a", "b-c", "x1"])),
    st.builds(Selector, st.just("id"), st.sampled_from(["n1", "n2", "n_3"])),
)
VALUES = st.text(alphabet=st.sampled_from(list('ab-:. "\\/{};')), min_size=1, max_size=6)
DECLARATIONS = st.one_of(
    st.builds(Declaration, st.sampled_from(["llm_model", "llm_provider"]), VALUES),
    st.builds(Declaration, st.just("reasoning_effort"), st.sampled_from(["low", "medium", "high"])),
)
RULES = st.lists(
    st.builds(Rule, SELECTORS, st.lists(DECLARATIONS, min_size=1, max_size=4).map(tuple)),
    max_size=8,
)
NODES = st.builds(
    Node,
    st.sampled_from(["n1", "n2", "n_3", "other"]),
    st.fixed_dictionaries(
        {},
        optional={
            "shape": st.sampled_from(["box", "diamond", "hexagon", "Msquare"]),
            "class": st.sampled_from(["a", "b-c", "a,x1", "zz"]),
        },
    ),
    subgraph_classes=st.sampled_from([(), ("x1",), ("b-c", "q")]),
)


def brute_force(rules: list[Rule], target: Node) -> dict[str, str]:
    """Max over matching declarations by (specificity, rule index, declaration index)."""
    best: dict[str, tuple[tuple[int, int, int], str]] = {}
    for rule_index, rule in enumerate(rules):
        if not rule.selector.matches(target):
            continue
        for decl_index, decl in enumerate(rule.declarations):
            key = (rule.selector.specificity, rule_index, decl_index)
            if decl.property not in best or key > best[decl.property][0]:
                best[decl.property] = (key, decl.value)
    return {prop: value for prop, (_, value) in best.items()}


@given(RULES, NODES)
def test_resolution_matches_brute_force_after_text_round_trip(
    rules: list[Rule], target: Node
) -> None:
    sheet = parse_stylesheet(Stylesheet(tuple(rules)).render())
    assert sheet == Stylesheet(tuple(rules))
    assert sheet.resolve(target) == brute_force(rules, target)


def test_selector_matching_by_kind() -> None:
    target = Node("n1", {"shape": "diamond", "class": "a"}, subgraph_classes=("x1",))
    assert Selector("universal").matches(target)
    assert Selector("shape", "diamond").matches(target)
    assert not Selector("shape", "box").matches(target)
    assert Selector("class", "x1").matches(target)
    assert not Selector("class", "b-c").matches(target)
    assert Selector("id", "n1").matches(target)
    assert not Selector("id", "n2").matches(target)
