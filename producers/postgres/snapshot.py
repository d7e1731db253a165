"""Full load: reads each selected table at one consistent point (the snapshot a replication
slot exported when it was created, or a fresh repeatable-read one for a full-load-only
task) and turns its rows into `r` events.

Every column is read as `::text`, the same form pgoutput streams, so both paths share one
parser and a row looks the same whether it came from the snapshot or the log.
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


def _select_text(schema: TableSchema) -> sql.Composed:
    columns = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in schema.columns
    )
    return sql.SQL("SELECT {} FROM {}").format(
        columns, sql.Identifier(schema.table.schema, schema.table.name)
    )


def read_table(
    conn: psycopg.Connection[Any],
    schema: TableSchema,
    source_name: str,
    db: str,
    lsn: int | None,
    fetch_rows: int,
) -> Iterator[list[ChangeEvent]]:
    """Yield the table's rows as `r` events, in batches of up to `fetch_rows`."""
    cursor_name = f"hw_snap_{schema.table.schema}_{schema.table.name}"[:60]
    with conn.cursor(name=cursor_name) as cur:
        cur.itersize = fetch_rows
        cur.execute(_select_text(schema))
        columns = schema.columns
        while rows := cur.fetchmany(fetch_rows):
            source = SourceInfo(
                connector="postgresql",
                name=source_name,
                db=db,
                table=schema.table,
                ts_ms=int(time.time() * 1000),
                snapshot="true",
                lsn=lsn,
            )
            yield [
                ChangeEvent(
                    op="r",
                    source=source,
                    after={c.name: parse_pg_text(c, v) for c, v in zip(columns, row, strict=True)},
                    ts_ms=source.ts_ms,
                )
                for row in rows
            ]
