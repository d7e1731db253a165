"""The expression language of `add-column` and `filter-row` rules: a tokenizer and a
recursive-descent parser producing a small syntax tree. Nothing is ever handed to Python's
`eval`; `transforms.evaluate` turns the tree into closures.

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := concat [("="|"=="|"!="|"<>"|"<"|"<="|">"|">=") concat
                      | "is" ["not"] "null" | ["not"] "in" "(" expr ("," expr)* ")"
                      | ["not"] "like" concat]
    concat  := sum ("||" sum)*
    sum     := product (("+"|"-") product)*
    product := unary (("*"|"/"|"%") unary)*
    unary   := "-" unary | atom
    atom    := number | 'string' | null | true | false | $column | ${column name}
             | name "(" [expr ("," expr)*] ")" | "(" expr ")"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class ExpressionError(ValueError):
    """An expression that does not parse; the message points at the offending position."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # num, str, col, name, op, end
    text: str
    pos: int
    value: Any = None


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<num>\d+\.\d*|\.\d+|\d+)
      | (?P<str>'(?:[^']|'')*')
      | (?P<col>\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>\|\||==|!=|<>|<=|>=|[-+*/%=<>(),])
    """,
    re.VERBOSE,
)

KEYWORDS = frozenset({"and", "or", "not", "is", "null", "true", "false", "in", "like"})


def tokenize(text: str) -> list[Token]:
    """The tokens of `text`, ending with an `end` token."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "num":
            tokens.append(Token(kind, raw, pos, Decimal(raw) if "." in raw else int(raw)))
        elif kind == "str":
            tokens.append(Token(kind, raw, pos, raw[1:-1].replace("''", "'")))
        elif kind == "col":
            name = raw[2:-1] if raw.startswith("${") else raw[1:]
            tokens.append(Token(kind, raw, pos, name))
        elif kind == "name" and raw.lower() in KEYWORDS:
            tokens.append(Token("kw", raw, pos, raw.lower()))
        elif kind != "ws":
            tokens.append(Token(kind, raw, pos, raw))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --- syntax tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class ColumnRef:
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # arithmetic, comparison, "||", "and", "or", "like"
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Node
    negated: bool


@dataclass(frozen=True, slots=True)
class InList:
    operand: Node
    options: tuple[Node, ...]
    negated: bool


Node = Literal | ColumnRef | Call | Unary | Binary | IsNull | InList

_COMPARE = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, what: str) -> ExpressionError:
        found = self.tok.text or "the end"
        return ExpressionError(f"{what} at position {self.tok.pos + 1}, found {found!r}")

    def accept(self, kind: str, value: str | None = None) -> Token | None:
        tok = self.tok
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def expect(self, kind: str, value: str, what: str) -> None:
        if self.accept(kind, value) is None:
            raise self.fail(f"expected {what}")

    def parse(self) -> Node:
        node = self.or_()
        if self.tok.kind != "end":
            raise self.fail("expected an operator or the end")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.accept("kw", "or"):
            node = Binary("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.accept("kw", "and"):
            node = Binary("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.accept("kw", "not"):
            return Unary("not", self.not_())
        return self.compare()

    def compare(self) -> Node:
        node = self.concat()
        tok = self.tok
        if tok.kind == "op" and tok.value in _COMPARE:
            self.i += 1
            return Binary(_COMPARE[tok.value], node, self.concat())
        if self.accept("kw", "is"):
            negated = self.accept("kw", "not") is not None
            self.expect("kw", "null", "'null' after 'is'")
            return IsNull(node, negated)
        negated = self.accept("kw", "not") is not None
        if self.accept("kw", "in"):
            self.expect("op", "(", "'(' after 'in'")
            options = [self.or_()]
            while self.accept("op", ","):
                options.append(self.or_())
            self.expect("op", ")", "')' closing the 'in' list")
            return InList(node, tuple(options), negated)
        if self.accept("kw", "like"):
            like = Binary("like", node, self.concat())
            return Unary("not", like) if negated else like
        if negated:
            raise self.fail("expected 'in' or 'like' after 'not'")
        return node

    def concat(self) -> Node:
        node = self.sum_()
        while self.accept("op", "||"):
            node = Binary("||", node, self.sum_())
        return node

    def sum_(self) -> Node:
        node = self.product()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            op = self.tok.value
            self.i += 1
            node = Binary(op, node, self.product())
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.value in ("*", "/", "%"):
            op = self.tok.value
            self.i += 1
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.accept("op", "-"):
            return Unary("-", self.unary())
        return self.atom()

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind in ("num", "str"):
            self.i += 1
            return Literal(tok.value)
        if tok.kind == "col":
            self.i += 1
            return ColumnRef(tok.value)
        if tok.kind == "kw" and tok.value in ("null", "true", "false"):
            self.i += 1
            return Literal({"null": None, "true": True, "false": False}[tok.value])
        if tok.kind == "name":
            self.i += 1
            self.expect("op", "(", f"'(' after function name {tok.text!r}")
            args: list[Node] = []
            if not self.accept("op", ")"):
                args.append(self.or_())
                while self.accept("op", ","):
                    args.append(self.or_())
                self.expect("op", ")", "')' closing the arguments")
            return Call(tok.text.lower(), tuple(args))
        if self.accept("op", "("):
            node = self.or_()
            self.expect("op", ")", "')'")
            return node
        raise self.fail("expected a value, a $column or a function call")


def parse(text: str) -> Node:
    """The syntax tree of `text`; raises ExpressionError if it does not parse."""
    if not text.strip():
        raise ExpressionError("the expression is empty")
    return _Parser(text).parse()


def column_refs(node: Node) -> set[str]:
    """Every `$column` the expression reads."""
    if isinstance(node, ColumnRef):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(column_refs(a) for a in node.args)) if node.args else set()
    if isinstance(node, Unary | IsNull):
        return column_refs(node.operand)
    if isinstance(node, Binary):
        return column_refs(node.left) | column_refs(node.right)
    if isinstance(node, InList):
        return column_refs(node.operand).union(*(column_refs(o) for o in node.options))
    return set()
