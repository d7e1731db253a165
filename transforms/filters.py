"""DMS source filters as row predicates: the conditions of one filter are ORed, separate
filters are ANDed. Filter values are text in DMS documents; each is read as the column's
type before comparing, so `"10"` compares as a number against an integer column."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from schemas.envelope import Row
from schemas.tables import Column
from transforms.rules import Filter, FilterCondition
from transforms.types import convert_value

RowPredicate = Callable[[Row], bool]


def _value(raw: Any, col: Column) -> Any:
    return convert_value(raw, col)


def condition_predicate(cond: FilterCondition, col: Column) -> Callable[[Any], bool]:
    """Whether one value satisfies one condition (NULL satisfies only `null`)."""
    op = cond.filter_operator
    if op == "null":
        return lambda v: v is None
    if op == "notnull":
        return lambda v: v is not None
    if op in ("between", "notbetween"):
        low, high = _value(cond.start_value, col), _value(cond.end_value, col)
        inside = op == "between"
        return lambda v: v is not None and (low <= v <= high) == inside
    target = _value(cond.value, col)
    compare: dict[str, Callable[[Any], bool]] = {
        "eq": lambda v: v == target,
        "noteq": lambda v: v != target,
        "lte": lambda v: v <= target,
        "ste": lambda v: v <= target,  # DMS's "smaller than or equal"
        "gte": lambda v: v >= target,
    }
    check = compare[op]
    return lambda v: v is not None and check(v)


def filter_predicate(flt: Filter, col: Column) -> RowPredicate:
    """One filter: true when any of its conditions holds for the column's value."""
    checks = [condition_predicate(c, col) for c in flt.filter_conditions]
    name = flt.column_name
    return lambda row: any(check(row.get(name)) for check in checks)


def all_filters(filters: Sequence[Filter], columns: dict[str, Column]) -> RowPredicate | None:
    """The AND of `filters` (None when there are none)."""
    preds = [filter_predicate(f, columns[f.column_name]) for f in filters]
    if not preds:
        return None
    return lambda row: all(p(row) for p in preds)
