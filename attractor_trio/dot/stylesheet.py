"""The model stylesheet (spec §8): CSS-like rules choosing LLM settings per node.

A stylesheet is a list of rules ``Selector { property: value; ... }``. Selectors are ``*``,
a shape name (``box``), ``#node_id`` or ``.class``; the properties are exactly
``llm_model``, ``llm_provider`` and ``reasoning_effort``. For each property the matching
declaration with the highest (specificity, position) wins, so a later rule of equal
specificity overrides an earlier one (S8.3-01, S8.3-02).

The scanner is hand-written rather than tokenised up front because the grammar is
context-sensitive: ``:`` separates a property from its value yet is also a legal character
*inside* a bare value (``ollama:llama3``). Walking the text directly also gives every error
an exact line and column, which authors need because the stylesheet lives inside a DOT
string where positions are otherwise hard to find.
"""

from __future__ import annotations

import bisect
import difflib
import re
from functools import cached_property
from typing import Final, Literal

from attrs import field, frozen

from ..errors import AttractorError
from .graph import Node

__all__ = [
    "ALLOWED_PROPERTIES",
    "REASONING_EFFORTS",
    "Declaration",
    "Rule",
    "Selector",
    "SelectorKind",
    "Stylesheet",
    "StylesheetSyntaxError",
    "parse_stylesheet",
]

ALLOWED_PROPERTIES: Final = ("llm_model", "llm_provider", "reasoning_effort")
REASONING_EFFORTS: Final = ("low", "medium", "high")

SelectorKind = Literal["universal", "shape", "class", "id"]
_SPECIFICITY: Final[dict[str, int]] = {"universal": 0, "shape": 1, "class": 2, "id": 3}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLASS_NAME = re.compile(r"[a-z0-9-]+")
_CLASS_LIKE = re.compile(r"[A-Za-z0-9_-]+")
_PROPERTY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_BARE_VALUE = re.compile(r"[A-Za-z0-9_.:/-]+")
_WORD = re.compile(r"[^\s{};:]+")


class StylesheetSyntaxError(AttractorError):
    """``model_stylesheet`` is not valid; ``line``/``col`` are 1-based within the stylesheet."""

    def __init__(self, message: str, *, line: int, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col

    def __str__(self) -> str:
        return f"model_stylesheet:{self.line}:{self.col}: {self.message}"


@frozen
class Selector:
    """One simple selector; ``value`` is the shape, class or node id (empty for ``*``)."""

    kind: SelectorKind
    value: str = ""

    @property
    def specificity(self) -> int:
        return _SPECIFICITY[self.kind]

    def matches(self, node: Node) -> bool:
        """Shapes compare with ``node.shape`` (default ``box``): ``box`` matches unshaped nodes."""
        if self.kind == "universal":
            return True
        if self.kind == "shape":
            return node.shape == self.value
        if self.kind == "class":
            return self.value in node.classes
        return node.id == self.value

    def __str__(self) -> str:
        prefix = {"universal": "*", "shape": "", "class": ".", "id": "#"}[self.kind]
        return prefix if self.kind == "universal" else prefix + self.value


@frozen
class Declaration:
    """``property: value`` with the value already unquoted."""

    property: str
    value: str
    line: int = field(default=0, eq=False)
    col: int = field(default=0, eq=False)


@frozen
class Rule:
    selector: Selector
    declarations: tuple[Declaration, ...]
    line: int = field(default=0, eq=False)
    col: int = field(default=0, eq=False)


@frozen
class Stylesheet:
    """Parsed rules in source order; source order breaks specificity ties."""

    rules: tuple[Rule, ...] = ()

    def resolve(self, node: Node) -> dict[str, str]:
        """The winning value per property for ``node`` (only properties some rule sets).

        Ignores the node's own attributes: deciding that explicit attributes win
        (S8.3-03) is the stylesheet transform's job.
        """
        won: dict[str, str] = {}
        for rule in self._by_specificity:
            if rule.selector.matches(node):
                won.update((d.property, d.value) for d in rule.declarations)
        return {prop: won[prop] for prop in ALLOWED_PROPERTIES if prop in won}

    @cached_property
    def _by_specificity(self) -> tuple[Rule, ...]:
        """The rules, least specific first; a stable sort, so equal specificity keeps source
        order. Sorted once: the stylesheet transform resolves every node of the graph."""
        return tuple(sorted(self.rules, key=lambda rule: rule.selector.specificity))

    def render(self) -> str:
        """Stylesheet text that parses back to an equal :class:`Stylesheet`."""
        return "\n".join(
            f"{rule.selector} {{ "
            + " ".join(f"{d.property}: {_quote(d.value)};" for d in rule.declarations)
            + " }"
            for rule in self.rules
        )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_stylesheet(text: str) -> Stylesheet:
    """Parse ``model_stylesheet`` text; empty or whitespace/comment-only text has no rules.

    Raises :class:`StylesheetSyntaxError` naming what is wrong, where, and how to fix it.
    """
    return _Parser(text).stylesheet()


class _Parser:
    """Recursive descent over the raw text; ``pos`` is the only mutable state."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    # --- positions and errors ---------------------------------------------------------------
    def where(self, pos: int) -> tuple[int, int]:
        line_index = bisect.bisect_right(self._line_starts, pos) - 1
        return line_index + 1, pos - self._line_starts[line_index] + 1

    def error(self, message: str, pos: int | None = None) -> StylesheetSyntaxError:
        line, col = self.where(self.pos if pos is None else pos)
        return StylesheetSyntaxError(message, line=line, col=col)

    def found(self) -> str:
        """What sits at ``pos``, for 'expected X but found Y' messages."""
        if self.at_end():
            return "the end of the stylesheet"
        word = _WORD.match(self.text, self.pos)
        return repr(word.group() if word else self.text[self.pos])

    # --- scanning ---------------------------------------------------------------------------
    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return "" if self.at_end() else self.text[self.pos]

    def skip_blank(self) -> None:
        """Skip whitespace and ``/* ... */`` comments."""
        while not self.at_end():
            if self.peek().isspace():
                self.pos += 1
            elif self.text.startswith("/*", self.pos):
                end = self.text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment: close it with '*/'")
                self.pos = end + 2
            else:
                return

    def take(self, pattern: re.Pattern[str]) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return ""
        self.pos = match.end()
        return match.group()

    # --- grammar ----------------------------------------------------------------------------
    def stylesheet(self) -> Stylesheet:
        rules: list[Rule] = []
        self.skip_blank()
        while not self.at_end():
            rules.append(self.rule())
            self.skip_blank()
        return Stylesheet(tuple(rules))

    def rule(self) -> Rule:
        start = self.pos
        selector = self.selector()
        self.skip_blank()
        if self.peek() != "{":
            raise self.error(
                f"expected '{{' after selector '{selector}' but found {self.found()}; "
                "a rule is one simple selector ('*', a shape, '#node_id' or '.class') "
                "followed by '{ property: value; }' (no selector lists or combinators)"
            )
        brace = self.pos
        self.pos += 1
        declarations = self.declarations(selector, brace)
        line, col = self.where(start)
        return Rule(selector, declarations, line=line, col=col)

    def selector(self) -> Selector:
        start = self.pos
        first = self.peek()
        if first == "*":
            self.pos += 1
            return Selector("universal")
        if first == "#":
            self.pos += 1
            node_id = self.take(_IDENTIFIER)
            if not node_id:
                raise self.error(
                    f"expected a node id after '#' but found {self.found()}; "
                    "write e.g. '#review' (letters, digits and '_', not starting with a digit)"
                )
            return Selector("id", node_id)
        if first == ".":
            self.pos += 1
            return Selector("class", self.class_name())
        shape = self.take(_IDENTIFIER)
        if shape:
            return Selector("shape", shape)
        raise self.error(
            f"expected a selector but found {self.found()}; use '*', a shape name like 'box', "
            "'#node_id' or '.class-name'",
            start,
        )

    def class_name(self) -> str:
        start = self.pos
        raw = self.take(_CLASS_LIKE)
        if not raw:
            raise self.error(
                f"expected a class name after '.' but found {self.found()}; write e.g. '.code'"
            )
        if not _CLASS_NAME.fullmatch(raw):
            fixed = raw.lower().replace("_", "-")
            raise self.error(
                f"invalid class name '{raw}': class names use lowercase letters, digits and "
                f"'-' only (did you mean '.{fixed}'?)",
                start,
            )
        return raw

    def declarations(self, selector: Selector, brace: int) -> tuple[Declaration, ...]:
        found: list[Declaration] = []
        while True:
            self.skip_blank()
            if self.at_end():
                raise self.error(
                    f"the rule for '{selector}' is never closed: add '}}' after its last "
                    "declaration",
                    brace,
                )
            if self.peek() == "}":
                if not found:
                    raise self.error(
                        f"the rule for '{selector}' has no declarations; add one such as "
                        "'llm_model: claude-opus-4-6;' or delete the rule"
                    )
                self.pos += 1
                return tuple(found)
            found.append(self.declaration(selector))
            self.skip_blank()
            if self.peek() == ";":
                self.pos += 1
            elif self.peek() != "}" and not self.at_end():
                raise self.error(
                    f"expected ';' or '}}' after the value of '{found[-1].property}' but found "
                    f"{self.found()}; separate declarations with ';' and quote values that "
                    "contain spaces"
                )

    def declaration(self, selector: Selector) -> Declaration:
        start = self.pos
        prop = self.take(_PROPERTY_LIKE)
        if not prop:
            raise self.error(
                f"expected a property name or '}}' in the rule for '{selector}' but found "
                f"{self.found()}; properties are {', '.join(ALLOWED_PROPERTIES)}"
            )
        if prop not in ALLOWED_PROPERTIES:
            raise self.error(_unknown_property_message(prop), start)
        self.skip_blank()
        if self.peek() != ":":
            raise self.error(
                f"expected ':' after property '{prop}' but found {self.found()}; "
                f"write '{prop}: value'"
            )
        self.pos += 1
        self.skip_blank()
        value_pos = self.pos
        value = self.value(prop)
        if prop == "reasoning_effort" and value not in REASONING_EFFORTS:
            raise self.error(_bad_effort_message(value), value_pos)
        line, col = self.where(start)
        return Declaration(prop, value, line=line, col=col)

    def value(self, prop: str) -> str:
        start = self.pos
        text = self.quoted() if self.peek() == '"' else self.take(_BARE_VALUE)
        if not text:
            raise self.error(
                f"expected a value for '{prop}' but found {self.found()}; write a bare value "
                "like claude-opus-4-6 or a non-empty quoted string",
                start,
            )
        return text

    def quoted(self) -> str:
        """A ``"..."`` string; ``\\"`` and ``\\\\`` are escapes, other backslashes are literal."""
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while not self.at_end():
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(chars)
            if ch == "\\" and self.text[self.pos + 1 : self.pos + 2] in ('"', "\\"):
                self.pos += 1
                ch = self.text[self.pos]
            chars.append(ch)
            self.pos += 1
        raise self.error("unterminated string: close it with '\"'", start)


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown_property_message(prop: str) -> str:
    return (
        f"unknown property '{prop}'; allowed properties are "
        f"{', '.join(ALLOWED_PROPERTIES)}{_did_you_mean(prop, ALLOWED_PROPERTIES)}"
    )


def _bad_effort_message(value: str) -> str:
    return (
        f"invalid reasoning_effort '{value}'; use one of "
        f"{', '.join(REASONING_EFFORTS)}{_did_you_mean(value, REASONING_EFFORTS)}"
    )
