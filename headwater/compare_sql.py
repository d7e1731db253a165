"""Row-by-row comparison of a PostgreSQL source with a MySQL/MariaDB or SQLite target: each
source value goes through the conversion the sink applies (the producer's parsing, then the
target dialect's, as docs/type-mapping.md documents), the target is read through
SQLAlchemy, and both sides are compared as Python values by primary key (a keyless table as
a multiset of rows)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from consumers.sql_dialect import base_type
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


def _float4_text(value: Any) -> Any:
    """A 4-byte float as both sides can be compared: rounded to 4 bytes (Avro carries a
    `real` as a float, so SQLite's 8-byte REAL holds that), then to the 6 significant digits
    MariaDB sends for a FLOAT column."""
    if not isinstance(value, float):
        return value
    return float(f"{struct.unpack('f', struct.pack('f', value))[0]:.6g}")


def _float4_columns(schema: TableSchema) -> set[int]:
    return {i for i, c in enumerate(schema.columns) if base_type(c, schema.engine) == "float4"}


def _source_values(task: TaskConfig, schema: TableSchema) -> Callable[[Row], Row]:
    dialect = sql_dialect(task)
    steps = []
    floats = _float4_columns(schema)
    for i, col in enumerate(schema.columns):
        convert = dialect.converter(col, schema.engine)
        steps.append((col, convert, i in floats))

    def as_target(text_row: Row) -> Row:
        out = []
        for (col, convert, float4), text in zip(steps, text_row, strict=True):
            value = parse_pg_text(col, text)
            value = _normal(convert(value) if convert and value is not None else value)
            out.append(_float4_text(value) if float4 else value)
        return tuple(out)

    return as_target


def _target_rows(
    conn: sa.Connection, where: tuple[str | None, str], schema: TableSchema, floats: set[int]
) -> Iterator[Row]:
    table = sa.Table(where[1], sa.MetaData(), autoload_with=conn, schema=where[0])
    # A keyless table is compared as a multiset (headwater.compare): no order needed.
    query = sa.select(*(table.c[c] for c in schema.column_names)).order_by(
        *(table.c[k] for k in schema.primary_key)
    )
    for row in conn.execution_options(yield_per=5000).execute(query):
        yield tuple(
            _float4_text(_normal(v)) if i in floats else _normal(v) for i, v in enumerate(row)
        )


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
                floats = _float4_columns(schema)
                results.append(
                    _compare(src, dst, schema, where, _source_values(task, schema), floats)
                )
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
    floats: set[int],
) -> TableComparison:
    columns, key = list(schema.column_names), list(schema.primary_key)
    source = (as_target(r) for r in text_rows(src, schema.table, columns, key))
    return compare_rows(schema.table, source, _target_rows(dst, where, schema, floats), len(key))
