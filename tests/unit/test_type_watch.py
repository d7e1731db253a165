"""Which target type changes the sink applies (widenings) and which stop a table."""

from __future__ import annotations

import pytest

from consumers.errors import TargetError
from consumers.type_watch import TypeWatch, Widened, widens
from schemas.tables import Column, TableId, TableSchema


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("integer", "bigint", True),
        ("smallint", "integer", True),
        ("bigint", "integer", False),
        ("INTEGER", "BIGINT", True),  # MariaDB, as SQLAlchemy compiles it
        ("real", "double precision", True),
        ("double precision", "real", False),
        ("character varying(10)", "character varying(40)", True),
        ("character varying(40)", "character varying(10)", False),
        ("character varying(10)", "text", True),
        ("VARCHAR(10)", "LONGTEXT", True),
        ("TEXT", "LONGTEXT", True),
        ("LONGTEXT", "TEXT", False),
        ("character(4)", "character(8)", True),
        ("character(4)", "character varying(8)", False),  # padding semantics differ
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(12,4)", True),
        ("numeric(10,2)", "numeric(10,4)", False),  # fewer digits before the point
        ("numeric(10,2)", "numeric(12,1)", False),  # fewer after it
        ("numeric(10,2)", "numeric", True),
        ("DECIMAL(10, 2)", "DECIMAL(20, 2)", True),
        ("integer", "text", False),
        ("timestamp without time zone", "timestamp with time zone", False),
        ("text", "text", True),
    ],
)
def test_widening_rules(old: str, new: str, expected: bool) -> None:
    assert widens(old, new) is expected


def _schema(type_name: str) -> TableSchema:
    columns = (Column("id", "int4", "integer", False), Column("n", type_name, type_name))
    return TableSchema(TableId("public", "t"), columns, ("id",))


def test_a_widening_is_reported_once_and_a_narrowing_stops_the_table() -> None:
    watch = TypeWatch("task")
    target = TableId("public", "t")
    assert (
        watch.check(target, _schema("integer"), lambda n: _schema("integer").column(n).sql_type)
        == []
    )
    widened = watch.check(target, _schema("bigint"), lambda n: _schema("bigint").column(n).sql_type)
    assert widened == [Widened("n", "integer", "bigint")]
    watch.accept(target, widened)
    assert (
        watch.check(target, _schema("bigint"), lambda n: _schema("bigint").column(n).sql_type) == []
    )
    with pytest.raises(TargetError, match="changed type at the source"):
        watch.check(target, _schema("smallint"), lambda n: _schema("smallint").column(n).sql_type)
