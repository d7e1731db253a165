"""Full load: reads each selected table at one consistent point (the snapshot a replication
slot exported when it was created, or a fresh repeatable-read one for a full-load-only
task) and turns its rows into `r` events.

Rows are read with COPY in text format, which renders every value with its type's output
function: exactly the text pgoutput streams (a `::text` cast would not be: booleans become
`true`, char(n) loses its padding). Both paths share one parser, so a row looks the same
whether it came from the snapshot or the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from schemas.envelope import ChangeEvent, SourceInfo
from schemas.pg_types import parse_pg_text
from schemas.tables import TableSchema


def begin_snapshot(conn: psycopg.Connection[Any], snapshot_name: str | None) -> None:
    """Open the read-only repeatable-read transaction all tables are read in."""
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    if snapshot_name:
        # Must be the transaction's first statement; psycopg has just sent BEGIN.
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
    else:
        conn.execute("SELECT 1")


def end_snapshot(conn: psycopg.Connection[Any]) -> None:
    conn.rollback()
    conn.autocommit = True


def _copy_query(schema: TableSchema) -> sql.Composed:
    # In key order, so an interrupted load knows where it stopped (see `incremental`).
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in schema.columns)
    return sql.SQL("COPY (SELECT {} FROM {} ORDER BY {}) TO STDOUT").format(
        columns,
        sql.Identifier(schema.table.schema, schema.table.name),
        sql.SQL(", ").join(sql.Identifier(k) for k in schema.primary_key),
    )


def read_table(
    conn: psycopg.Connection[Any],
    schema: TableSchema,
    source_name: str,
    db: str,
    lsn: int | None,
    fetch_rows: int,
) -> Iterator[tuple[list[ChangeEvent], list[str]]]:
    """Yield the table's rows as `r` events in key order, in batches of up to `fetch_rows`,
    each with the text form of its last primary key."""
    columns = schema.columns
    key_index = [schema.column_names.index(k) for k in schema.primary_key]
    batch: list[ChangeEvent] = []
    last: list[str] = []
    source = _source(schema, source_name, db, lsn)
    with conn.cursor() as cur, cur.copy(_copy_query(schema)) as copy:
        for row in copy.rows():
            after = {c.name: parse_pg_text(c, v) for c, v in zip(columns, row, strict=True)}
            batch.append(ChangeEvent(op="r", source=source, after=after, ts_ms=source.ts_ms))
            last = [str(row[i]) for i in key_index]
            if len(batch) >= fetch_rows:
                yield batch, last
                batch = []
                source = _source(schema, source_name, db, lsn)
    if batch:
        yield batch, last


def _source(schema: TableSchema, source_name: str, db: str, lsn: int | None) -> SourceInfo:
    return SourceInfo(
        connector="postgresql",
        name=source_name,
        db=db,
        table=schema.table,
        ts_ms=int(time.time() * 1000),
        snapshot="true",
        lsn=lsn,
    )
