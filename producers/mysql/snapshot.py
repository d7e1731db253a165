"""Full load: reads each selected table inside one consistent-snapshot transaction, in
primary-key order and chunks of `fetch_rows`, as `r` events. Each chunk starts after the
last key of the one before, so a load cut short resumes after the last key Kafka
acknowledged (`TableProgress.last_key`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from producers.mysql.changes import CONNECTOR, tuple_converter
from producers.mysql.connection import Connection
from producers.mysql.position import BinlogPosition
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.tables import TableSchema


def quote(name: str) -> str:
    """A MySQL identifier in backticks (a backtick inside doubled)."""
    return "`" + name.replace("`", "``") + "`"


def begin_read(conn: Connection) -> None:
    """Begin a read-only transaction that reads every table at one instant (no lock, no
    binlog position: for loads whose position the caller already knows)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")


def _after_key(key: Sequence[str]) -> str:
    """`(a > %s) OR (a = %s AND b > %s) ...`: index-friendly on every server, unlike a row
    constructor comparison."""
    terms = []
    for i in range(len(key)):
        equal = [f"{quote(k)} = %s" for k in key[:i]]
        terms.append("(" + " AND ".join([*equal, f"{quote(key[i])} > %s"]) + ")")
    return " OR ".join(terms)


def _key_args(last_key: Sequence[Any]) -> list[Any]:
    args: list[Any] = []
    for i in range(len(last_key)):
        args += [*last_key[:i], last_key[i]]
    return args


def chunk_query(schema: TableSchema, resume: bool) -> str:
    """SELECT of one chunk; identifiers quoted, values left to the driver's parameters."""
    columns = ", ".join(quote(c.name) for c in schema.columns)
    table = f"{quote(schema.table.schema)}.{quote(schema.table.name)}"
    order = ", ".join(quote(k) for k in schema.primary_key)
    where = f" WHERE {_after_key(schema.primary_key)}" if resume else ""
    return f"SELECT {columns} FROM {table}{where} ORDER BY {order} LIMIT %s"


def read_table(
    conn: Connection,
    schema: TableSchema,
    source_name: str,
    position: BinlogPosition,
    fetch_rows: int,
    last_key: Sequence[Any] | None,
) -> Iterator[tuple[list[ChangeEvent], list[Any]]]:
    """Yield (events, last key of the chunk) for the rows after `last_key`."""
    names = schema.column_names
    convert = tuple_converter(schema)
    key_index = [names.index(k) for k in schema.primary_key]
    key = list(last_key) if last_key else None
    while True:
        with conn.cursor() as cur:
            args = [*_key_args(key), fetch_rows] if key else [fetch_rows]
            cur.execute(chunk_query(schema, key is not None), args)
            rows = cur.fetchall()
        if not rows:
            return
        source = _source(schema, source_name, position)
        ts_ms = source.ts_ms
        events = [ChangeEvent("r", source, None, convert(row), ts_ms) for row in rows]
        key = [rows[-1][i] for i in key_index]
        yield events, key
        if len(rows) < fetch_rows:
            return


def _source(schema: TableSchema, source_name: str, position: BinlogPosition) -> SourceInfo:
    return SourceInfo(
        connector=CONNECTOR,
        name=source_name,
        db=schema.table.schema,
        table=schema.table,
        ts_ms=int(time.time() * 1000),
        snapshot="true",
        file=position.file or None,
        pos=position.pos or None,
        gtid=position.gtid or None,
    )


def encode_key(key: Sequence[Any]) -> list[Any]:
    """A primary key as JSON for the progress record (bytes, dates and decimals tagged)."""
    out: list[Any] = []
    for value in key:
        if isinstance(value, bytes):
            out.append({"hex": value.hex()})
        elif isinstance(value, int | str | float) or value is None:
            out.append(value)
        else:
            out.append({"text": str(value)})
    return out


def decode_key(key: Sequence[Any]) -> list[Any]:
    """Undo `encode_key`; tagged text goes back as a string the server compares as the type."""
    out: list[Any] = []
    for value in key:
        if isinstance(value, dict):
            out.append(bytes.fromhex(value["hex"]) if "hex" in value else value["text"])
        else:
            out.append(value)
    return out
