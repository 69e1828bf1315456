"""The catalog's SQL conditions as data, for back ends that cannot run Polars SQL.

The Polars engine hands a condition to ``pl.sql_expr``; a pattern-matching engine needs it
as a disjunction of conjunctions of atoms instead. This module parses the small SQL subset
the catalog uses (``AND``, ``OR``, ``NOT``, comparisons, ``IS [NOT] NULL``, ``[NOT] IN``,
bare boolean columns, ``TRUE``/``FALSE``, string and number literals) and rewrites it in
disjunctive normal form with negations pushed onto the atoms. SQL's three-valued logic is
kept: an atom is true only when its operands are not null, and pushing ``NOT`` inwards
(``NOT a < b`` is ``a >= b``) holds under that logic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

from rules.errors import RuleError

Literal = str | int | float | bool


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Compare:
    """``left op right``; ``op`` is one of ``= != < <= > >=``."""

    op: str
    left: Column | Literal
    right: Column | Literal


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False


Atom = Compare | IsNull
Conjunction = tuple[Atom, ...]

_NEGATED = {"=": "!=", "!=": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_MIRRORED = {"=": "=", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>[0-9]+(?:\.[0-9]+)?)|(?P<op><>|!=|<=|>=|=|<|>)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_KEYWORDS = {"AND", "OR", "NOT", "IS", "NULL", "IN", "TRUE", "FALSE"}


def mirrored(atom: Compare) -> Compare:
    """The same comparison with its operands swapped (``a < b`` is ``b > a``)."""
    return Compare(_MIRRORED[atom.op], atom.right, atom.left)


def columns_of(atom: Atom) -> set[str]:
    if isinstance(atom, IsNull):
        return {atom.column}
    return {side.name for side in (atom.left, atom.right) if isinstance(side, Column)}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            msg = f"Cannot read the condition {text!r} at {text[position:]!r}"
            raise RuleError(msg)
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        tokens.append((kind, value))
        position = match.end()
    return tokens


# A node is ("and", [nodes]) | ("or", [nodes]) | ("not", node) | ("atom", Atom) | ("const", bool).
Node = tuple[str, object]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self, value: str | None = None) -> bool:
        if self.position >= len(self.tokens):
            return False
        return value is None or self.tokens[self.position][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if not self.peek(value):
            found = self.tokens[self.position][1] if self.position < len(self.tokens) else "the end"
            msg = f"In the condition {self.text!r}: expected {value or 'a value'}, found {found!r}"
            raise RuleError(msg)
        self.position += 1
        return self.tokens[self.position - 1]

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek():
            self.take("the end")
        return node

    def disjunction(self) -> Node:
        parts = [self.conjunction()]
        while self.peek("OR"):
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def conjunction(self) -> Node:
        parts = [self.negation()]
        while self.peek("AND"):
            self.take()
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def negation(self) -> Node:
        if self.peek("NOT"):
            self.take()
            return ("not", self.negation())
        return self.predicate()

    def predicate(self) -> Node:
        if self.peek("("):
            self.take()
            node = self.disjunction()
            self.take(")")
            return node
        left = self.operand()
        if self.peek("IS"):
            self.take()
            negated = self.peek("NOT")
            if negated:
                self.take()
            self.take("NULL")
            return ("atom", IsNull(self._column(left), negated))
        negated_in = self.peek("NOT")
        if negated_in or self.peek("IN"):
            if negated_in:
                self.take()
            self.take("IN")
            self.take("(")
            values = [self.operand()]
            while self.peek(","):
                self.take()
                values.append(self.operand())
            self.take(")")
            members: Node = ("or", [("atom", Compare("=", left, value)) for value in values])
            return ("not", members) if negated_in else members
        if self.position < len(self.tokens) and self.tokens[self.position][0] == "op":
            op = self.take()[1].replace("<>", "!=")
            return ("atom", Compare(op, left, self.operand()))
        if isinstance(left, bool):
            return ("const", left)
        return ("atom", Compare("=", Column(self._column(left)), True))

    def operand(self) -> Column | Literal:
        kind, value = self.take()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value) if "." in value else int(value)
        if value in ("TRUE", "FALSE"):
            return value == "TRUE"
        if kind == "word":
            return Column(value)
        msg = f"In the condition {self.text!r}: unexpected {value!r}"
        raise RuleError(msg)

    def _column(self, operand: Column | Literal) -> str:
        if not isinstance(operand, Column):
            msg = f"In the condition {self.text!r}: {operand!r} is not a column"
            raise RuleError(msg)
        return operand.name


def _negate(atom: Atom) -> Atom:
    if isinstance(atom, IsNull):
        return IsNull(atom.column, not atom.negated)
    return Compare(_NEGATED[atom.op], atom.left, atom.right)


# What a node must evaluate to: TRUE, FALSE, or (for CASE WHEN fall-through) anything but
# TRUE, or anything but FALSE. An atom is unknown exactly when one of its columns is null.
_NOT = {"true": "false", "false": "true", "not_true": "not_false", "not_false": "not_true"}


def _atom_forms(atom: Atom, target: str) -> list[Conjunction]:
    holds = target in ("true", "not_false")
    forms: list[Conjunction] = [(atom if holds else _negate(atom),)]
    if target.startswith("not_") and isinstance(atom, Compare):
        forms += [(IsNull(column),) for column in sorted(columns_of(atom))]
    return forms


def _dnf(node: Node, target: str) -> list[Conjunction]:
    kind, body = node
    if kind == "const":
        return [()] if bool(body) == (target in ("true", "not_false")) else []
    if kind == "atom":
        return _atom_forms(body, target)  # type: ignore[arg-type]
    if kind == "not":
        return _dnf(body, _NOT[target])  # type: ignore[arg-type]
    parts = [_dnf(child, target) for child in body]  # type: ignore[attr-defined]
    # AND is true (or not false) when every part is; OR when any part is.
    every = (kind == "and") == (target in ("true", "not_false"))
    if not every:
        return [conjunction for part in parts for conjunction in part]
    return [tuple(atom for c in combination for atom in c) for combination in product(*parts)]


def disjunctive_form(text: str) -> list[Conjunction]:
    """The alternatives under which ``text`` is TRUE, each a tuple of atoms that must all hold.

    An empty list is a condition that never holds; ``[()]`` one that always does.

    Examples
    --------
    >>> disjunctive_form("a = 'x' AND NOT (b < c OR d IS NULL)")  # doctest: +NORMALIZE_WHITESPACE
    [(Compare(op='=', left=Column(name='a'), right='x'),
      Compare(op='>=', left=Column(name='b'), right=Column(name='c')),
      IsNull(column='d', negated=True))]
    """
    return _dnf(_Parser(text).parse(), "true")


def not_true_form(text: str) -> list[Conjunction]:
    """The alternatives under which ``text`` is not TRUE (FALSE or unknown), as ``CASE WHEN`` falls through."""
    return _dnf(_Parser(text).parse(), "not_true")
