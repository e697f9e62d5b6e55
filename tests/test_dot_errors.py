"""Every rejection of the DOT front end: position, message and ``FILE:LINE:COL: error:`` form.

Each ``tests/data/bad/*.dot`` starts with ``// expect: LINE:COL: <message substring>``; the
parser must raise :class:`DotSyntaxError` exactly there (spec S2.3-01..07, S2.1-01, contract.md §9
"Positions"). Adding a failure mode = adding a file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attractor_trio.dot import load_dot, parse_dot
from attractor_trio.errors import AttractorError, DotSyntaxError

BAD = Path(__file__).parent / "data" / "bad"
_EXPECT = re.compile(r"// expect: (\d+):(\d+): (.+)")
BAD_FILES = sorted(BAD.glob("*.dot"))


def _expectation(path: Path) -> tuple[int, int, str]:
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    match = _EXPECT.fullmatch(first_line)
    assert match, f"{path.name}: first line must be '// expect: LINE:COL: message'"
    return int(match[1]), int(match[2]), match[3]


def test_enough_distinct_failure_modes() -> None:
    messages = {_expectation(path)[2] for path in BAD_FILES}
    assert len(BAD_FILES) >= 25
    assert len(messages) >= 25


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_file_is_rejected_at_its_position(path: Path) -> None:
    line, col, fragment = _expectation(path)
    with pytest.raises(DotSyntaxError) as caught:
        load_dot(path)
    err = caught.value
    assert (err.line, err.col) == (line, col), str(err)
    assert fragment in err.message
    assert str(err).startswith(f"{path}:{line}:{col}: error:")
    assert err.file == str(path)


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_messages_say_how_to_fix(path: Path) -> None:
    """Every message names what is wrong and then, after a colon, what to do."""
    with pytest.raises(DotSyntaxError) as caught:
        load_dot(path)
    assert ": " in caught.value.message


def test_parse_dot_labels_errors_with_the_given_path() -> None:
    with pytest.raises(DotSyntaxError) as caught:
        parse_dot("digraph G {\n  a -- b\n}\n", path="pipe.dot")
    assert str(caught.value).startswith("pipe.dot:2:5: error: ")


def test_parse_dot_default_path_is_string_marker() -> None:
    with pytest.raises(DotSyntaxError) as caught:
        parse_dot("graph G {}")
    assert str(caught.value).startswith("<string>:1:1: error: ")


def test_syntax_error_is_an_attractor_error() -> None:
    with pytest.raises(AttractorError):
        parse_dot("")


def test_columns_count_characters_not_bytes() -> None:
    source = 'digraph G {\n  a [label="ééé", x=1 y=2]\n}\n'
    with pytest.raises(DotSyntaxError) as caught:
        parse_dot(source)
    assert (caught.value.line, caught.value.col) == (2, 23)


def test_tabs_count_as_one_column() -> None:
    with pytest.raises(DotSyntaxError) as caught:
        parse_dot("digraph G {\n\ta -- b\n}")
    assert (caught.value.line, caught.value.col) == (2, 4)


def test_crlf_line_endings_give_the_same_positions() -> None:
    with pytest.raises(DotSyntaxError) as caught:
        parse_dot("digraph G {\r\n  a -- b\r\n}\r\n")
    assert (caught.value.line, caught.value.col) == (2, 5)


def test_missing_file_is_a_clear_attractor_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.dot"
    with pytest.raises(AttractorError, match="no such file") as caught:
        load_dot(missing)
    assert str(missing) in str(caught.value)
    assert not isinstance(caught.value, DotSyntaxError)


def test_directory_is_a_clear_attractor_error(tmp_path: Path) -> None:
    with pytest.raises(AttractorError, match="cannot read"):
        load_dot(tmp_path)


def test_non_utf8_file_is_a_clear_attractor_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.dot"
    path.write_bytes('digraph G { a [label="café"] }'.encode("latin-1"))
    with pytest.raises(AttractorError, match="UTF-8"):
        load_dot(path)


def test_long_offending_token_is_shortened_in_the_message() -> None:
    long_value = "x" * 500
    with pytest.raises(DotSyntaxError) as caught:
        parse_dot(f'digraph G {{ a [k="v" "{long_value}"] }}')
    assert len(caught.value.message) < 200


def test_deep_subgraph_nesting_is_refused_not_a_crash() -> None:
    depth = 150
    source = "digraph G {\n" + "subgraph {\n" * depth + "a\n" + "}\n" * depth + "}\n"
    with pytest.raises(DotSyntaxError, match="nested more than 100 levels") as caught:
        parse_dot(source)
    assert (caught.value.line, caught.value.col) == (102, 1)


def test_nesting_up_to_the_limit_is_fine() -> None:
    source = "digraph G {\n" + 'subgraph { label="L"\n' * 100 + "a\n" + "}\n" * 100 + "}\n"
    assert parse_dot(source).node("a").subgraph_classes == ("l",)
