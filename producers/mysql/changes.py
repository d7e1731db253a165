"""Turns binlog rows events into ChangeEvents: inserts `c`, updates `u` (before and after
images), deletes `d`, and a primary-key change as a delete of the old key and an insert of
the new one. Pure: the caller gives each event the TableSchema its TableMapEvent described."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.envelope import ChangeEvent, Op, Row, SourceInfo
from schemas.mysql_types import Converter, value_converter
from schemas.tables import TableId, TableSchema

CONNECTOR = "mysql"


@dataclass(frozen=True, slots=True)
class RowsContext:
    """Where a rows event sits in the binlog, for the events' `source` block."""

    source_name: str
    file: str
    pos: int
    gtid: str | None
    server_id: int | None
    ts_ms: int
    thread: int | None = None


def _converters(schema: TableSchema) -> list[tuple[str, Converter]]:
    return [(c.name, value_converter(c)) for c in schema.columns]


def convert_row(schema: TableSchema, values: dict[str, Any]) -> Row:
    """A decoded binlog (or snapshot) row as Avro-ready values, by column name."""
    return dict_converter(schema)(values)


def dict_converter(schema: TableSchema) -> Callable[[dict[str, Any]], Row]:
    """`convert_row` for many rows of one shape (the per-column choices made once)."""
    converters = _converters(schema)

    def convert(values: dict[str, Any]) -> Row:
        row: Row = {}
        for name, to_avro in converters:
            value = values.get(name)
            row[name] = None if value is None else to_avro(value)
        return row

    return convert


def tuple_converter(schema: TableSchema) -> Callable[[Sequence[Any]], Row]:
    """Like `dict_converter`, for rows read as tuples in the schema's column order."""
    converters = _converters(schema)

    def convert(values: Sequence[Any]) -> Row:
        return {
            name: None if value is None else to_avro(value)
            for (name, to_avro), value in zip(converters, values, strict=True)
        }

    return convert


def _source(schema: TableSchema, ctx: RowsContext, seq: int = 0) -> SourceInfo:
    # `seq` orders the events of one binlog event (its rows, and the two halves of a key
    # change); with the event's file and end position it places a change in the binlog
    # (producers/mysql/position.py, `stream_position`).
    return SourceInfo(
        connector=CONNECTOR,
        name=ctx.source_name,
        db=schema.table.schema,
        table=schema.table,
        ts_ms=ctx.ts_ms,
        snapshot="false",
        file=ctx.file,
        pos=ctx.pos,
        gtid=ctx.gtid,
        server_id=ctx.server_id,
        thread=ctx.thread,
        seq=seq,
    )


def _key(schema: TableSchema, row: Row) -> tuple[object, ...]:
    return tuple(row.get(k) for k in schema.primary_key)


def row_events(
    op: Op, schema: TableSchema, rows: list[dict[str, Any]], ctx: RowsContext
) -> list[ChangeEvent]:
    """The events of one Write/Update/DeleteRows event (`op` c, u or d)."""
    convert_row = dict_converter(schema)
    events: list[ChangeEvent] = []
    for i, row in enumerate(rows):
        source = _source(schema, ctx, 2 * i)
        if op == "c":
            events.append(ChangeEvent("c", source, None, convert_row(row["values"]), ctx.ts_ms))
        elif op == "d":
            events.append(ChangeEvent("d", source, convert_row(row["values"]), None, ctx.ts_ms))
        else:
            before = convert_row(row["before_values"])
            after = convert_row(row["after_values"])
            if _key(schema, before) != _key(schema, after):
                # As Debezium does: each key's events stay in that key's partition.
                events.append(ChangeEvent("d", source, before, None, ctx.ts_ms))
                insert = _source(schema, ctx, 2 * i + 1)
                events.append(ChangeEvent("c", insert, None, after, ctx.ts_ms))
            else:
                events.append(ChangeEvent("u", source, before, after, ctx.ts_ms))
    return events


_NAME = r"(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))"
_TRUNCATE = re.compile(rf"^\s*TRUNCATE\s+(?:TABLE\s+)?{_NAME}(?:\s*\.\s*{_NAME})?\s*;?\s*$", re.I)


def truncated_table(query: str, default_db: str) -> TableId | None:
    """The table a `TRUNCATE [TABLE] [db.]name` statement empties, else None."""
    found = _TRUNCATE.match(query)
    if found is None:
        return None
    first = (found.group(1) or "").replace("``", "`") or found.group(2)
    second = (found.group(3) or "").replace("``", "`") or found.group(4)
    return TableId(first, second) if second else TableId(default_db, first)


def truncate_event(schema: TableSchema, ctx: RowsContext) -> ChangeEvent:
    return ChangeEvent("t", _source(schema, ctx), None, None, ctx.ts_ms)
