"""Turns a parsed expression into a Python closure over one row and its change event.

SQL semantics for NULL: arithmetic, `||` and comparisons with a NULL give NULL, `and`/`or`
are three-valued, and a filter keeps a row only when its expression is true. The functions
are listed in `FUNCTIONS` (docs/table-mappings.md describes each)."""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schemas.envelope import ChangeEvent, Row
from transforms.expression import (
    Binary,
    Call,
    ColumnRef,
    ExpressionError,
    InList,
    IsNull,
    Literal,
    Node,
    Unary,
    parse,
)

Compiled = Callable[[Row, ChangeEvent | None], Any]


class EvaluationError(ValueError):
    """An expression failed on a value (e.g. a number added to text)."""


_DMS_OPERATION = {"r": "INSERT", "c": "INSERT", "u": "UPDATE", "d": "DELETE", "t": "TRUNCATE"}


def stream_position(event: ChangeEvent | None) -> str | None:
    """The source log position of `event` as text: `lsn` for PostgreSQL, `file:pos` else."""
    if event is None:
        return None
    src = event.source
    if src.lsn is not None:
        return f"{src.lsn >> 32:X}/{src.lsn & 0xFFFFFFFF:X}"
    if src.file is not None:
        return f"{src.file}:{src.pos}"
    return None


def _commit_ts(event: ChangeEvent | None) -> datetime | None:
    if event is None:
        return None
    return datetime.fromtimestamp(event.source.ts_ms / 1000, tz=UTC)


def _operation_indicator(
    event: ChangeEvent | None, deleted: Any, updated: Any, inserted: Any
) -> Any:
    # As in DMS: a full-load row (op r) carries no flag.
    op = event.op if event is not None else "r"
    return {"d": deleted, "u": updated, "c": inserted}.get(op)


_HEADERS: dict[str, Callable[[ChangeEvent | None], Any]] = {
    "AR_H_OPERATION": lambda e: _DMS_OPERATION.get(e.op) if e else None,
    "AR_H_STREAM_POSITION": stream_position,
    "AR_H_TIMESTAMP": _commit_ts,
    "AR_H_COMMIT_TIMESTAMP": _commit_ts,
}


def _nullsafe(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return None if any(a is None for a in args) else fn(*args)

    return call


def _substr(text: str, start: int, length: int | None = None) -> str:
    # 1-based, as in SQL.
    begin = max(int(start) - 1, 0)
    return text[begin:] if length is None else text[begin : begin + int(length)]


def _round(value: Any, digits: int = 0) -> Any:
    if isinstance(value, Decimal):
        return value.quantize(Decimal(1).scaleb(-int(digits)))
    return round(value, int(digits))


# name -> (function of plain values, min args, max args); None-handling is per function.
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "upper": (_nullsafe(lambda s: str(s).upper()), 1, 1),
    "lower": (_nullsafe(lambda s: str(s).lower()), 1, 1),
    "length": (_nullsafe(lambda s: len(str(s))), 1, 1),
    "trim": (_nullsafe(lambda s: str(s).strip()), 1, 1),
    "ltrim": (_nullsafe(lambda s: str(s).lstrip()), 1, 1),
    "rtrim": (_nullsafe(lambda s: str(s).rstrip()), 1, 1),
    "substr": (_nullsafe(_substr), 2, 3),
    "left": (_nullsafe(lambda s, n: str(s)[: int(n)]), 2, 2),
    "right": (_nullsafe(lambda s, n: str(s)[-int(n) :] if int(n) else ""), 2, 2),
    "replace": (_nullsafe(lambda s, a, b: str(s).replace(str(a), str(b))), 3, 3),
    "starts_with": (_nullsafe(lambda s, p: str(s).startswith(str(p))), 2, 2),
    "ends_with": (_nullsafe(lambda s, p: str(s).endswith(str(p))), 2, 2),
    "contains": (_nullsafe(lambda s, p: str(p) in str(s)), 2, 2),
    "concat": (lambda *a: "".join(str(x) for x in a if x is not None), 1, 64),
    "coalesce": (lambda *a: next((x for x in a if x is not None), None), 1, 64),
    "if": (lambda c, a, b: a if c is True else b, 3, 3),
    "abs": (_nullsafe(abs), 1, 1),
    "round": (_nullsafe(_round), 1, 2),
    "str": (_nullsafe(str), 1, 1),
    "int": (_nullsafe(lambda v: int(v)), 1, 1),
    "decimal": (_nullsafe(lambda v: Decimal(str(v))), 1, 1),
    "sha256": (_nullsafe(lambda v: hashlib.sha256(str(v).encode()).hexdigest()), 1, 1),
}
# Functions of the event rather than of values: name -> (min args, max args).
EVENT_FUNCTIONS: dict[str, tuple[int, int]] = {
    "operation_indicator": (3, 3),
    "op": (0, 0),
    "stream_position": (0, 0),
    "commit_ts": (0, 0),
}

_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _like(value: Any, pattern: Any) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(pattern))
    return re.fullmatch(regex, str(value), re.DOTALL) is not None


def _numeric(a: Any, b: Any) -> tuple[Any, Any]:
    # Decimal and float do not mix in Python; SQL would widen to numeric.
    if isinstance(a, Decimal) and isinstance(b, float):
        return a, Decimal(str(b))
    if isinstance(a, float) and isinstance(b, Decimal):
        return Decimal(str(a)), b
    return a, b


def _binary(op: str, left: Compiled, right: Compiled) -> Compiled:
    if op == "and":

        def and_(row: Row, ev: ChangeEvent | None) -> Any:
            a = left(row, ev)
            if a is False:
                return False
            b = right(row, ev)
            if b is False:
                return False
            return None if a is None or b is None else True

        return and_
    if op == "or":

        def or_(row: Row, ev: ChangeEvent | None) -> Any:
            a = left(row, ev)
            if a is True:
                return True
            b = right(row, ev)
            if b is True:
                return True
            return None if a is None or b is None else False

        return or_
    if op == "||":

        def concat(row: Row, ev: ChangeEvent | None) -> Any:
            a, b = left(row, ev), right(row, ev)
            return None if a is None or b is None else f"{a}{b}"

        return concat
    fn = _ARITH.get(op) or _CMP.get(op) or _like

    def apply(row: Row, ev: ChangeEvent | None) -> Any:
        a, b = left(row, ev), right(row, ev)
        if a is None or b is None:
            return None
        try:
            return fn(*_numeric(a, b))
        except (TypeError, ArithmeticError) as exc:
            raise EvaluationError(f"{a!r} {op} {b!r}: {exc}") from None

    return apply


def _call(node: Call, args: list[Compiled]) -> Compiled:
    if node.name in EVENT_FUNCTIONS:
        if node.name == "operation_indicator":
            d, u, i = args
            return lambda row, ev: _operation_indicator(ev, d(row, ev), u(row, ev), i(row, ev))
        if node.name == "op":
            return lambda row, ev: ev.op if ev else None
        if node.name == "stream_position":
            return lambda row, ev: stream_position(ev)
        return lambda row, ev: _commit_ts(ev)
    fn = FUNCTIONS[node.name][0]

    def call(row: Row, ev: ChangeEvent | None) -> Any:
        values = [a(row, ev) for a in args]
        try:
            return fn(*values)
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise EvaluationError(f"{node.name}({', '.join(map(repr, values))}): {exc}") from None

    return call


def _check_call(node: Call) -> None:
    bounds = EVENT_FUNCTIONS.get(node.name) or (
        FUNCTIONS[node.name][1:] if node.name in FUNCTIONS else None
    )
    if bounds is None:
        known = ", ".join(sorted([*FUNCTIONS, *EVENT_FUNCTIONS]))
        raise ExpressionError(f"unknown function {node.name}(); use one of {known}")
    low, high = bounds
    if not low <= len(node.args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise ExpressionError(f"{node.name}() takes {want} arguments, got {len(node.args)}")


def compile_node(node: Node) -> Compiled:
    """A closure computing `node` for (row, event)."""
    if isinstance(node, Literal):
        value = node.value
        return lambda row, ev: value
    if isinstance(node, ColumnRef):
        name = node.name
        if name.startswith("AR_H_"):
            header = _HEADERS.get(name)
            if header is None:
                raise ExpressionError(f"unknown header ${name}; use one of {', '.join(_HEADERS)}")
            return lambda row, ev: header(ev)
        return lambda row, ev: row.get(name)
    if isinstance(node, Unary):
        inner = compile_node(node.operand)
        if node.op == "not":
            return lambda row, ev: None if (v := inner(row, ev)) is None else not v
        return _negate(inner)
    if isinstance(node, Binary):
        return _binary(node.op, compile_node(node.left), compile_node(node.right))
    if isinstance(node, IsNull):
        inner, negated = compile_node(node.operand), node.negated
        return lambda row, ev: (inner(row, ev) is None) != negated
    if isinstance(node, InList):
        return _in_list(node)
    _check_call(node)
    return _call(node, [compile_node(a) for a in node.args])


def _negate(inner: Compiled) -> Compiled:
    def negate(row: Row, ev: ChangeEvent | None) -> Any:
        value = inner(row, ev)
        if value is None:
            return None
        try:
            return -value
        except TypeError as exc:
            raise EvaluationError(f"-{value!r}: {exc}") from None

    return negate


def _in_list(node: InList) -> Compiled:
    inner = compile_node(node.operand)
    options = [compile_node(o) for o in node.options]
    negated = node.negated

    def in_list(row: Row, ev: ChangeEvent | None) -> Any:
        value = inner(row, ev)
        if value is None:
            return None
        found = any(value == o(row, ev) for o in options)
        return found != negated

    return in_list


def compile_expression(text: str) -> Compiled:
    """Parse and compile `text`; raises ExpressionError if it does not parse."""
    return compile_node(parse(text))
