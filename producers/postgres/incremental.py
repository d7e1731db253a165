"""Incremental snapshots while the log streams: the DBLog watermark algorithm (as Debezium's
incremental snapshots do it), so a table is (re)loaded chunk by chunk without stopping the
stream, without a long-held snapshot, and without a stale row overwriting a newer change.

Per chunk: write a low watermark into the WAL, read the next primary-key range, write a high
watermark. In the stream, every change of the table between the two watermarks removes its
key from the chunk; at the high watermark what is left is emitted as `r` events. Those rows
were not changed inside the window, so what the read returned is still their latest value,
and every later change follows them in the stream. Watermarks and snapshot requests are
logical decoding messages (`pg_logical_emit_message`): no table in the source is needed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from producers.errors import SourceError
from producers.postgres.chunks import KeyRange, range_condition
from schemas.envelope import ChangeEvent, Row, SourceInfo
from schemas.pg_types import parse_pg_text
from schemas.tables import TableId, TableSchema

WATERMARK_PREFIX = "headwater.wm."
SIGNAL_PREFIX = "headwater.signal."

Key = tuple[Any, ...]


def signal_snapshot(conn: psycopg.Connection[Any], task: str, tables: Sequence[TableId]) -> None:
    """Ask the task's producer (now, or when it next runs) to snapshot `tables` again."""
    payload = json.dumps({"snapshot": [str(t) for t in tables]})
    conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SIGNAL_PREFIX + task, payload))


def parse_signal(content: bytes) -> list[TableId]:
    """The tables a snapshot signal asks for."""
    data = json.loads(content)
    return [TableId.parse(name) for name in data.get("snapshot", [])]


def _key_sql(schema: TableSchema) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(k) for k in schema.primary_key)


def chunk_query(
    schema: TableSchema, after: Sequence[str] | None, size: int, until: Sequence[str] | None = None
) -> sql.Composed:
    """COPY of the next `size` rows in primary-key order after key `after` and up to key
    `until` (text values; None: unbounded)."""
    where = range_condition(schema, after, until)
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in schema.columns)
    return sql.SQL("COPY (SELECT {} FROM {}{} ORDER BY {} LIMIT {}) TO STDOUT").format(
        columns,
        sql.Identifier(schema.table.schema, schema.table.name),
        where,
        _key_sql(schema),
        sql.Literal(size),
    )


@dataclass
class Chunk:
    """One primary-key range of one table between its two watermarks."""

    schema: TableSchema
    chunk_id: str
    rows: dict[Key, Row]
    last_key_text: list[str]
    window_open: bool = False


@dataclass
class IncrementalSnapshot:
    """The queue of tables to snapshot incrementally and the chunk in flight."""

    task: str
    source_name: str
    db: str
    chunk_size: int = 2000
    queue: list[TableId] = field(default_factory=list)
    resume_after: dict[TableId, list[str] | None] = field(default_factory=dict)
    chunk: Chunk | None = None
    # A resumed chunked full load reads only the key ranges its finished chunks left:
    # the current range's end (inclusive), and the ranges after it.
    until: dict[TableId, list[str] | None] = field(default_factory=dict)
    more_ranges: dict[TableId, list[KeyRange]] = field(default_factory=dict)

    def request(
        self,
        table: TableId,
        after: list[str] | None = None,
        until: list[str] | None = None,
        more: Sequence[KeyRange] = (),
    ) -> None:
        """Queue `table` (again), starting after key `after` (None: from the start), up to
        key `until` (None: to the end), then the key ranges (after, until] of `more`."""
        if self.chunk is not None and self.chunk.schema.table == table:
            self.chunk = None  # a fresh request restarts the table
        if table not in self.queue:
            self.queue.append(table)
        self.resume_after[table] = after
        self.until[table] = until
        self.more_ranges[table] = list(more)

    def forget(self, table: TableId) -> None:
        """Stop loading `table` (renamed away, or gone): its queue entry and its chunk in
        flight, whose rows would otherwise land under a name the table left."""
        if self.chunk is not None and self.chunk.schema.table == table:
            self.chunk = None
        if table in self.queue:
            self.queue.remove(table)
        self.resume_after.pop(table, None)
        self.until.pop(table, None)
        self.more_ranges.pop(table, None)

    @property
    def busy(self) -> bool:
        return bool(self.queue) or self.chunk is not None

    def read_chunk(self, conn: psycopg.Connection[Any], schema: TableSchema) -> bool:
        """Low watermark, read the next range of the head table, high watermark. False
        when the table is exhausted (it leaves the queue)."""
        table = schema.table
        if not schema.primary_key:
            raise SourceError(
                f"table {table} has no primary key, so it cannot be loaded while the stream "
                "runs (an interrupted full load or a newly included table): add a primary key, "
                "or run `headwater cleanup` on the task file and start it again for a full load"
            )
        after = self.resume_after.get(table)
        chunk_id = uuid.uuid4().hex
        self._watermark(conn, f"low:{chunk_id}")
        rows: dict[Key, Row] = {}
        last: list[str] = []
        key_index = [schema.column_names.index(k) for k in schema.primary_key]
        query = chunk_query(schema, after, self.chunk_size, self.until.get(table))
        with conn.cursor() as cur, cur.copy(query) as copy:
            for values in copy.rows():
                row = {
                    c.name: parse_pg_text(c, v) for c, v in zip(schema.columns, values, strict=True)
                }
                last = [str(values[i]) for i in key_index]
                rows[_key(schema, row)] = row
        if not rows and self.more_ranges.get(table):
            self.resume_after[table], self.until[table] = self.more_ranges[table].pop(0)
            return self.read_chunk(conn, schema)
        if not rows:
            self.queue.remove(table)
            self.resume_after.pop(table, None)
            return False
        self._watermark(conn, f"high:{chunk_id}")
        self.chunk = Chunk(schema, chunk_id, rows, last)
        return True

    def _watermark(self, conn: psycopg.Connection[Any], content: str) -> None:
        conn.execute(
            "SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX + self.task, content)
        )

    def on_change(self, event: ChangeEvent) -> None:
        """A streamed change: inside the window it drops its keys from the chunk."""
        chunk = self.chunk
        if chunk is None or not chunk.window_open or event.table != chunk.schema.table:
            return
        if event.op == "t":
            chunk.rows.clear()
            return
        for row in (event.before, event.after):
            if row is not None:
                chunk.rows.pop(_key(chunk.schema, row), None)

    def on_watermark(self, content: bytes, lsn: int) -> list[ChangeEvent]:
        """A watermark of this task: open the window, or close it and emit the chunk."""
        chunk = self.chunk
        kind, _, chunk_id = content.decode().partition(":")
        if chunk is None or chunk_id != chunk.chunk_id:
            return []  # a watermark of a chunk abandoned by a restart
        if kind == "low":
            chunk.window_open = True
            return []
        self.chunk = None
        self.resume_after[chunk.schema.table] = chunk.last_key_text
        source = SourceInfo(
            connector="postgresql",
            name=self.source_name,
            db=self.db,
            table=chunk.schema.table,
            ts_ms=int(time.time() * 1000),
            snapshot="incremental",
            lsn=lsn,
        )
        return [ChangeEvent("r", source, None, row, source.ts_ms) for row in chunk.rows.values()]


def _key(schema: TableSchema, row: Row) -> Key:
    return tuple(row.get(k) for k in schema.primary_key)
