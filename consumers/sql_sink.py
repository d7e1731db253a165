"""Applies a collapsed batch to a MySQL/MariaDB or SQLite target through SQLAlchemy Core:
tables made ready first (sql_tables), then in one transaction per batch: per table the
truncate (as DELETE: MySQL's TRUNCATE would commit), one `DELETE ... WHERE (pk) IN (...)`
per chunk of deleted keys, one multi-row upsert per set of carried columns; then the offsets
into `headwater_offsets`; then commit. A record the target refuses is isolated by bisecting
its table's changes in savepoints and handed to the dead-letter handler before the commit.
The dialect (consumers/mysql_target.py, sqlite_target.py) says what differs; the flow
around the statements is shared with postgres_sink.py in consumers/sink_base.py."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable

from consumers.batch import CollapsedBatch, TableChanges, Upsert
from consumers.errors import is_record_error
from consumers.offsets import Partition, StoredOffset
from consumers.outcome import ApplyOutcome, Rejected, RejectHandler, isolate_refused
from consumers.sink_base import SinkBase, check_positions
from consumers.sql_dialect import Converter, SqlDialect
from consumers.sql_keyless import write_keyless
from consumers.sql_offsets import OFFSETS, read_sql_offsets, write_sql_offsets
from consumers.sql_tables import SqlTables
from consumers.truncates import lock_truncates, settle_truncates
from headwater.config import TaskConfig
from schemas.tables import TableId, TableSchema

DELETE_CHUNK = 1000
"""Keys per `DELETE ... IN (...)`: large enough to be one round trip for most batches."""


def _one_line(exc: BaseException) -> str:
    root = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    return " ".join(str(root).split())[:500]


class SqlSink(SinkBase[Connection]):
    """A MySQL/MariaDB or SQLite target of one task, on one connection held across batches."""

    db_error = sa.exc.DBAPIError

    def __init__(self, task: TaskConfig, dialect: SqlDialect) -> None:
        super().__init__(task, dialect.engine(task))
        self.dialect = dialect
        self._tables = SqlTables(task, dialect)
        self._dml: dict[tuple[str | None, str, tuple[str, ...]], sa.Table] = {}
        self._converters: dict[TableSchema, dict[str, Converter]] = {}

    def _set_up(self, conn: Connection) -> None:
        conn.execute(CreateTable(OFFSETS, if_not_exists=True))  # sinks may start together

    def _forget(self) -> None:
        self._tables.forget()

    def _read_offsets(
        self, conn: Connection, partitions: Collection[Partition]
    ) -> dict[Partition, StoredOffset]:
        return read_sql_offsets(conn, self.task.name, partitions)

    def _target_name(self, table: TableId) -> str:
        return self.dialect.target_table(self.task, table)[1]

    def _one_line(self, exc: Exception) -> str:
        return _one_line(exc)

    def _apply_batch(
        self,
        batch: CollapsedBatch,
        expected: Mapping[Partition, int | None],
        outcome: ApplyOutcome,
        on_rejected: RejectHandler | None,
    ) -> None:
        """Tables are made ready before the batch's transaction (see module doc)."""
        conn = self._connection()
        self._prepare_tables(conn, batch, outcome)
        with self.dialect.transaction(conn):
            executed = lock_truncates(conn, self.task.name, batch)  # before the offsets
            stored = read_sql_offsets(conn, self.task.name, list(outcome.stored), lock=True)
            check_positions(stored, outcome.stored, expected)
            settle_truncates(conn, self.task.name, batch, outcome.stored, executed)
            self._apply_tables(conn, batch, outcome, on_rejected)
            write_sql_offsets(conn, self.dialect, self.task.name, outcome.stored, stored)

    def _ensure_table(self, conn: Connection, schema: TableSchema) -> None:
        with conn.begin():
            self._tables.ensure(conn, self.dialect.target_table(self.task, schema.table), schema)

    def _apply_table(self, conn: Connection, changes: TableChanges) -> list[Rejected]:
        where = self.dialect.target_table(self.task, changes.schema.table)
        if self.task.target.on_error == "stop":
            try:
                self._write(conn, where, changes)
            except sa.exc.DBAPIError as exc:
                self._apply_failed(exc, where[1], refused=is_record_error(exc))
            return []

        def attempt(part: TableChanges) -> None:
            with conn.begin_nested():
                self._write(conn, where, part)

        try:
            return isolate_refused(changes, attempt, is_record_error, _one_line)
        except sa.exc.DBAPIError as exc:
            self._apply_failed(exc, where[1], refused=False)

    # --- statements -------------------------------------------------------------------------

    def _write(
        self, conn: Connection, where: tuple[str | None, str], changes: TableChanges
    ) -> None:
        schema = changes.schema
        table = self._dml_table(where, schema)
        if changes.truncated:
            conn.execute(sa.delete(table))
        if changes.rows:  # a keyless table: its changes in order (consumers/keyless.py)
            ordered = list(changes.rows.values())
            write_keyless(conn, self.dialect, table, schema, self._converters_of(schema), ordered)
        deletes = changes.deletes
        for start in range(0, len(deletes), DELETE_CHUNK):
            chunk = deletes[start : start + DELETE_CHUNK]
            conn.execute(sa.delete(table).where(self._key_in(table, schema, chunk)))
        groups: dict[frozenset[str], list[Upsert]] = {}
        for upsert in changes.upserts.values():
            groups.setdefault(upsert.columns, []).append(upsert)
        convert = self._converters_of(schema)
        for columns, upserts in groups.items():
            carried = [c for c in schema.column_names if c in columns]
            updated = [c for c in carried if c not in schema.primary_key]
            rows = [_converted(u.row, carried, convert) for u in upserts]
            statement = self.dialect.upsert(table, schema.primary_key, updated)
            conn.execute(statement, rows)

    def _key_in(self, table: sa.Table, schema: TableSchema, keys: list[Any]) -> Any:
        convert = self._converters_of(schema)
        converted = [
            tuple(
                convert[k](v) if k in convert else v
                for k, v in zip(schema.primary_key, key, strict=True)
            )
            for key in keys
        ]
        if len(schema.primary_key) == 1:
            return table.c[schema.primary_key[0]].in_([k[0] for k in converted])
        return sa.tuple_(*(table.c[k] for k in schema.primary_key)).in_(converted)

    def _dml_table(self, where: tuple[str | None, str], schema: TableSchema) -> sa.Table:
        """The table for statements: untyped columns, values converted by the dialect."""
        cache_key = (where[0], where[1], schema.column_names)
        table = self._dml.get(cache_key)
        if table is None:
            keys = set(schema.primary_key)
            table = sa.Table(
                where[1],
                sa.MetaData(),
                *(sa.Column(c, primary_key=c in keys) for c in schema.column_names),
                schema=where[0],
            )
            self._dml[cache_key] = table
        return table

    def _converters_of(self, schema: TableSchema) -> dict[str, Converter]:
        found = self._converters.get(schema)
        if found is None:
            found = {}
            for col in schema.columns:
                fn = self.dialect.converter(col, schema.engine)
                if fn is not None:
                    found[col.name] = fn
            self._converters[schema] = found
        return found


def _converted(
    row: dict[str, Any], carried: list[str], convert: dict[str, Converter]
) -> dict[str, Any]:
    return {c: convert[c](row.get(c)) if c in convert else row.get(c) for c in carried}
