"""Applies a keyless table's changes to a MySQL/MariaDB or SQLite target (the rules are in
consumers/keyless.py): each net delete removes ONE row equal, NULL-safely (`<=>` in MariaDB,
`IS` in SQLite), to the old row in every column (`LIMIT 1` in MariaDB, the first matching
`rowid` in SQLite: the dialect's `delete_one`), once per deleted copy; then the net inserts
are one multi-row INSERT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from consumers.keyless import RowChange, net
from consumers.sql_dialect import Converter, SqlDialect
from schemas.envelope import Row
from schemas.tables import TableSchema


def _param(number: int) -> str:
    return f"hw_old_{number}"  # not a column name, so it cannot clash with one


def delete_statement(dialect: SqlDialect, table: sa.Table, schema: TableSchema) -> sa.Executable:
    """DELETE of one row equal to the bound old row (parameters named by `_param`)."""
    match = sa.and_(
        *(
            table.c[name].is_not_distinct_from(sa.bindparam(_param(i)))
            for i, name in enumerate(schema.column_names)
        )
    )
    return dialect.delete_one(table, match)


def write_keyless(
    conn: Connection,
    dialect: SqlDialect,
    table: sa.Table,
    schema: TableSchema,
    convert: Mapping[str, Converter],
    rows: list[RowChange],
) -> None:
    """Apply the net effect of `rows` to `table`: the deletes (one statement per deleted
    row), then one multi-row INSERT."""
    change = net(rows)
    if change.deletes:
        equal = {
            c.name: fn
            for c in schema.columns
            if (fn := dialect.equality_converter(c, schema.engine))
        }
        params = []
        for row, count in change.deletes:
            old = _converted(row, schema.column_names, convert)
            bound = {
                _param(i): equal[c](old[c]) if c in equal else old[c]
                for i, c in enumerate(schema.column_names)
            }
            params.extend([bound] * count)
        conn.execute(delete_statement(dialect, table, schema), params)
    if change.inserts:
        values = [_converted(r, schema.column_names, convert) for r in change.inserts]
        conn.execute(sa.insert(table), values)


def _converted(
    row: Row, columns: tuple[str, ...], convert: Mapping[str, Converter]
) -> dict[str, Any]:
    return {c: convert[c](row.get(c)) if c in convert else row.get(c) for c in columns}
