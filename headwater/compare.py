"""Row-by-row comparison of source and target tables (PostgreSQL on both sides): every row
of every selected table, by primary key, values compared in their text form; a keyless table
(REPLICA IDENTITY FULL, no key) is compared as a multiset of rows, so two identical rows must
be two in the target too. The check the demo and the end-to-end tests end with; `headwater
validate` grows from here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from headwater.config import TaskConfig
from producers.postgres import catalog
from producers.postgres.connection import connect
from schemas.tables import TableId

Row = tuple[Any, ...]


@dataclass
class TableComparison:
    table: TableId
    source_rows: int = 0
    target_rows: int = 0
    missing: list[Row] = field(default_factory=list)  # keys in source, not in target
    extra: list[Row] = field(default_factory=list)  # keys in target, not in source
    different: list[Row] = field(default_factory=list)  # keys whose values differ

    @property
    def matches(self) -> bool:
        return not (self.missing or self.extra or self.different)


def text_rows(
    conn: psycopg.Connection[Any], table: TableId, columns: list[str], key: list[str]
) -> Iterator[Row]:
    """Every row of a PostgreSQL table in key order (without a key: ordered by every
    column's text), each value in its text form."""
    order = (
        sql.SQL(", ").join(sql.Identifier(k) for k in key)
        if key
        else sql.SQL(", ").join(sql.Literal(i) for i in range(1, len(columns) + 1))
    )
    query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(table.schema, table.name),
        order,
    )
    with conn.cursor(name=f"hw_cmp_{table.name}"[:60]) as cur:
        cur.itersize = 5000
        cur.execute(query)
        yield from cur


def compare_rows(
    table: TableId, source_rows: Iterable[Row], target_rows: Iterable[Row], nkey: int
) -> TableComparison:
    """Compare two sides' rows by their first `nkey` values (the key); the source side is
    read whole first, the target side streamed against it. Without a key (`nkey` 0) the
    rows are compared as multisets: a row is missing or extra as often as its counts
    differ."""
    if nkey == 0:
        return compare_multisets(table, source_rows, target_rows)
    result = TableComparison(table)
    source = {r[:nkey]: r for r in source_rows}
    result.source_rows = len(source)
    for row in target_rows:
        result.target_rows += 1
        expected = source.pop(row[:nkey], None)
        if expected is None:
            result.extra.append(row[:nkey])
        elif expected != row:
            result.different.append(row[:nkey])
    result.missing = list(source)
    return result


def compare_multisets(
    table: TableId, source_rows: Iterable[Row], target_rows: Iterable[Row]
) -> TableComparison:
    """Compare two sides' rows as multisets (a keyless table)."""
    result = TableComparison(table)
    source: Counter[Row] = Counter()
    for row in source_rows:
        source[row] += 1
        result.source_rows += 1
    for row in target_rows:
        result.target_rows += 1
        if source[row] > 0:
            source[row] -= 1
        else:
            result.extra.append(row)
    result.missing = list(source.elements())
    return result


def compare_table(
    src: psycopg.Connection[Any], dst: psycopg.Connection[Any], table: TableId, target: TableId
) -> TableComparison:
    """Compare one table; the target's columns are those of the source."""
    schema = catalog.describe_table(src, table, catalog.TypeResolver(src))
    columns, key = list(schema.column_names), list(schema.primary_key)
    return compare_rows(
        table, text_rows(src, table, columns, key), text_rows(dst, target, columns, key), len(key)
    )


def compare_task(task: TaskConfig) -> list[TableComparison]:
    """Compare every table the task selects."""
    if task.target.engine != "postgres":
        from headwater.compare_sql import compare_sql_task

        return compare_sql_task(task)
    with connect(task.source.url) as src, connect(task.target.url, role="target") as dst:
        src.autocommit = dst.autocommit = False
        tables = catalog.selected_tables(src, task.tables)
        return [
            compare_table(src, dst, t, TableId(task.target.schema_ or t.schema, t.name))
            for t in tables
        ]
