"""Row-by-row comparison of a PostgreSQL source with a MySQL/MariaDB or SQLite target: each
source value goes through the conversion the sink applies (the producer's parsing, then the
target dialect's, as docs/type-mapping.md documents), the target is read through
SQLAlchemy, and both sides are compared as Python values by primary key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from consumers.sql_offsets import sql_dialect
from headwater.compare import Row, TableComparison, compare_rows, text_rows
from headwater.config import TaskConfig
from producers.postgres import catalog
from producers.postgres.connection import connect
from schemas.pg_types import parse_pg_text
from schemas.tables import TableSchema


def _normal(value: Any) -> Any:
    """One form for values a driver may return in two (bool as 0/1, memoryview)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _source_values(task: TaskConfig, schema: TableSchema) -> Callable[[Row], Row]:
    dialect = sql_dialect(task)
    steps = []
    for col in schema.columns:
        convert = dialect.converter(col, schema.engine)
        steps.append((col, convert))

    def as_target(text_row: Row) -> Row:
        out = []
        for (col, convert), text in zip(steps, text_row, strict=True):
            value = parse_pg_text(col, text)
            out.append(_normal(convert(value) if convert and value is not None else value))
        return tuple(out)

    return as_target


def _target_rows(
    conn: sa.Connection, where: tuple[str | None, str], schema: TableSchema
) -> Iterator[Row]:
    table = sa.Table(where[1], sa.MetaData(), autoload_with=conn, schema=where[0])
    query = sa.select(*(table.c[c] for c in schema.column_names)).order_by(
        *(table.c[k] for k in schema.primary_key)
    )
    for row in conn.execution_options(yield_per=5000).execute(query):
        yield tuple(_normal(v) for v in row)


def compare_sql_task(task: TaskConfig) -> list[TableComparison]:
    """Compare every table the task selects with its MySQL/MariaDB or SQLite target."""
    dialect = sql_dialect(task)
    engine = dialect.engine(task)
    results = []
    try:
        with connect(task.source.url) as src, engine.connect() as dst:
            src.autocommit = False
            resolver = catalog.TypeResolver(src)
            for table in catalog.selected_tables(src, task.tables):
                schema = catalog.describe_table(src, table, resolver)
                where = dialect.target_table(task, table)
                results.append(_compare(src, dst, schema, where, _source_values(task, schema)))
            dst.rollback()
    finally:
        engine.dispose()
    return results


def _compare(
    src: Any,
    dst: sa.Connection,
    schema: TableSchema,
    where: tuple[str | None, str],
    as_target: Callable[[Row], Row],
) -> TableComparison:
    columns, key = list(schema.column_names), list(schema.primary_key)
    source = (as_target(r) for r in text_rows(src, schema.table, columns, key))
    return compare_rows(schema.table, source, _target_rows(dst, where, schema), len(key))
