"""Tokenizer for the Attractor DOT subset: one compiled master regex, no per-character loop.

Each match of the master pattern skips whitespace and comments, then captures exactly one
token in a named group, so the whole file is tokenized by a single C-level ``finditer``.
Token kinds: ``STRING`` (still quoted and escaped), ``WORD`` (identifier, qualified key or
bare value), ``NUMBER`` (possibly with a duration unit), ``PUNCT`` (``{ } [ ] = , ; -> --`` and
the always-rejected ``: < +``), ``EOF``, and ``BAD`` for a malformed lexeme (unterminated
string or comment, stray character), which the parser reports when it reaches it.
"""

from __future__ import annotations

import re
from bisect import bisect_right

__all__ = [
    "BAD",
    "EOF",
    "IDENTIFIER",
    "KEY",
    "KEYWORDS",
    "KEYWORD_SPELLINGS",
    "NUMBER",
    "PUNCT",
    "STRING",
    "WORD",
    "Positions",
    "Tokens",
    "bad_lexeme_message",
    "decode_string",
    "derive_class",
    "is_attr_key",
    "is_node_id",
    "raw_offset",
    "tokenize",
]

# Lexical rules for names (spec S2.2-07, S2.2-09, S2.3-03) ----------------------------------

KEYWORDS = frozenset({"digraph", "graph", "node", "edge", "subgraph", "strict"})


def _spellings(word: str) -> list[str]:
    """Every upper/lower-case spelling of ``word`` (Graphviz keywords ignore case)."""
    variants = [""]
    for char in word:
        variants = [v + c for v in variants for c in {char.lower(), char.upper()}]
    return variants


# A dict lookup per word instead of lower() + set test: this runs for every statement.
KEYWORD_SPELLINGS = {spelling: word for word in KEYWORDS for spelling in _spellings(word)}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_NOT_CLASS_CHAR = re.compile(r"[^a-z0-9-]")
_WHITESPACE = re.compile(r"\s")


def is_node_id(text: str) -> bool:
    """Whether ``text`` can be written as a node id (spec S2.3-03; keywords excluded)."""
    return bool(IDENTIFIER.match(text)) and text not in KEYWORD_SPELLINGS


def is_attr_key(text: str) -> bool:
    """Whether ``text`` can be written as an attribute key (spec S2.2-07)."""
    return bool(KEY.match(text))


def derive_class(label: str) -> str:
    """Subgraph label → stylesheet class (spec S2.10-03): ``"Loop A"`` → ``loop-a``."""
    return _NOT_CLASS_CHAR.sub("", _WHITESPACE.sub("-", label.lower()))


# Token kinds = the numbers of the master pattern's groups, in order.
STRING, WORD, NUMBER, PUNCT, EOF, BAD = range(1, 7)

# Whitespace, `// line` and `/* block */` comments, and `#` lines (Graphviz discards lines that
# start with `#`; elsewhere `#` is an error, so `color=#fff` is reported, not half-commented).
# Strings are whole tokens, matched before a comment could start inside them.
_SKIP = r"(?:[^\S\n]+|\n(?:[ \t]*\#[^\n]*)?|//[^\n]*|/\*(?s:.*?)\*/|\A[ \t]*\#[^\n]*)*"

_MASTER = re.compile(
    _SKIP
    + r"""(?:
    (?P<S>"[^"\\]*(?:\\(?s:.)[^"\\]*)*")
  | (?P<W>[A-Za-z_][A-Za-z0-9_.:]*(?:-(?![->])[A-Za-z0-9_.:]*)*)
  | (?P<N>-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[A-Za-z0-9_.]*)
  | (?P<P>->|--|[{}\[\]=,;:<+])
  | (?P<EOF>\Z)
  | (?P<X>/\*|"|(?s:.))
)""",
    re.VERBOSE,
)

assert list(_MASTER.groupindex.values()) == [STRING, WORD, NUMBER, PUNCT, EOF, BAD]


class Positions:
    """Maps a character offset to a 1-based ``(line, col)``; built once, O(log n) per lookup."""

    __slots__ = ("_line_starts",)

    def __init__(self, source: str) -> None:
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", source))]

    def line_col(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1


class Tokens:
    """Parallel lists (kind, text, start offset): cheaper to index than a list of objects.

    ``kinds`` holds the int constants above; punctuation is recognised by its text, which no
    other token can have (strings keep their quotes, words start with a letter, EOF is "").
    """

    __slots__ = ("kinds", "starts", "texts")

    def __init__(self, kinds: list[int], texts: list[str], starts: list[int]) -> None:
        self.kinds = kinds
        self.texts = texts
        self.starts = starts


def tokenize(source: str) -> Tokens:
    """Split ``source`` into tokens; the last one is always ``EOF`` (it may repeat).

    Malformed lexemes become ``BAD`` tokens instead of raising here, so that the parser reports
    whichever problem comes first in the file (an HTML label's ``<`` before its inner ``>``).
    """
    kinds: list[int] = []
    texts: list[str] = []
    starts: list[int] = []
    add_kind, add_text, add_start = kinds.append, texts.append, starts.append
    for match in _MASTER.finditer(source):
        # lastindex is the number of the one named group that matched (no other groups exist).
        kind = match.lastindex or BAD
        add_kind(kind)
        add_text(match[kind])
        add_start(match.start(kind))
    return Tokens(kinds, texts, starts)


def bad_lexeme_message(text: str) -> str:
    """Why a ``BAD`` token is wrong and how to fix it."""
    if text == "/*":
        return "unterminated comment: '/*' is never closed; add '*/'"
    if text == '"':
        return "unterminated string: add the closing '\"'"
    return (
        f"unexpected character {text!r}: identifiers use [A-Za-z_][A-Za-z0-9_]*; "
        "put other text inside a quoted string"
    )


def raw_offset(raw: str, decoded: int) -> int:
    """The offset in ``raw`` (a value token as written, quoted or not, and anything after it)
    of character ``decoded`` of its decoded value: the inverse of :func:`decode_string`'s
    escapes, so a position inside an attribute value maps back to the file."""
    if not raw.startswith('"'):
        return decoded
    index = 1
    for _ in range(decoded):
        if raw[index : index + 1] == "\\" and raw[index + 1 : index + 2] in ('"', "n", "t", "\\"):
            index += 2
        else:
            index += 1
    return index


def decode_string(quoted: str) -> str:
    """Strip the quotes and decode ``\\" \\n \\t \\\\``; other backslash sequences stay literal.

    Splitting on ``\\\\`` first pairs backslashes left to right exactly as a scanner would, so
    the remaining escapes in each piece cannot overlap; all of it runs at C speed.
    """
    body = quoted[1:-1]
    if "\\" not in body:
        return body
    pieces = body.split("\\\\")
    for index, piece in enumerate(pieces):
        if "\\" in piece:
            pieces[index] = piece.replace('\\"', '"').replace("\\n", "\n").replace("\\t", "\t")
    return "\\".join(pieces)
