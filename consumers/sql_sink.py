"""Applies a collapsed batch to a MySQL/MariaDB or SQLite target through SQLAlchemy Core:
tables made ready first (sql_tables), then in one transaction per batch: per table the
truncate (as DELETE: MySQL's TRUNCATE would commit), one `DELETE ... WHERE (pk) IN (...)`
per chunk of deleted keys, one multi-row upsert per set of carried columns; then the offsets
into `headwater_offsets`; then commit. A record the target refuses is isolated by bisecting
its table's changes in savepoints and handed to the dead-letter handler before the commit.
The dialect (consumers/mysql_target.py, sqlite_target.py) says what differs."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from consumers.batch import CollapsedBatch, TableChanges, Upsert
from consumers.errors import PositionConflict, TargetError, is_record_error, is_transient
from consumers.offsets import Partition, StoredOffset
from consumers.outcome import (
    ApplyOutcome,
    RecordRefused,
    Rejected,
    RejectHandler,
    isolate_refused,
    without_stopped,
)
from consumers.sql_dialect import Converter, SqlDialect
from consumers.sql_offsets import OFFSETS, read_sql_offsets, write_sql_offsets
from consumers.sql_tables import SqlTables
from consumers.target import safe_target_url
from headwater.config import TaskConfig
from schemas.tables import TableSchema

log = logging.getLogger(__name__)

DELETE_CHUNK = 1000
"""Keys per `DELETE ... IN (...)`: large enough to be one round trip for most batches."""


def _one_line(exc: BaseException) -> str:
    root = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    return " ".join(str(root).split())[:500]


class SqlSink:
    """A MySQL/MariaDB or SQLite target of one task, on one connection held across batches."""

    def __init__(self, task: TaskConfig, dialect: SqlDialect) -> None:
        self.task = task
        self.dialect = dialect
        self._engine = dialect.engine(task)
        self._conn: Connection | None = None
        self._tables = SqlTables(task, dialect)
        self._dml: dict[tuple[str | None, str, tuple[str, ...]], sa.Table] = {}
        self._converters: dict[TableSchema, dict[str, Converter]] = {}
        self.rows_applied = 0

    def close(self) -> None:
        self._reset()
        self._engine.dispose()

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect()
            with conn.begin():
                OFFSETS.create(conn, checkfirst=True)
            self._conn = conn
        return self._conn

    def _reset(self) -> None:
        self._tables.forget()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()
                conn.close()
            except Exception as exc:  # the connection may already be gone
                log.debug("closing the target connection failed: %s", exc)

    def stored_offsets(self, partitions: Collection[Partition]) -> dict[Partition, StoredOffset]:
        try:
            conn = self._connection()
            with conn.begin():
                return read_sql_offsets(conn, self.task.name, partitions)
        except BaseException:
            self._reset()
            raise

    def apply(
        self,
        batch: CollapsedBatch,
        expected: Mapping[Partition, int | None],
        on_rejected: RejectHandler | None = None,
    ) -> ApplyOutcome:
        """Apply `batch` and store its positions in one transaction (see module doc)."""
        outcome = ApplyOutcome()
        try:
            conn = self._connection()
            for table in sorted(batch.tables):
                self._prepare(conn, batch.tables[table].schema, outcome)
            outcome.stored = without_stopped(batch, outcome.stopped)
            with self.dialect.transaction(conn):
                stored = self._check_positions(conn, outcome, expected)
                for table in sorted(batch.tables):
                    if table not in outcome.stopped:
                        outcome.rejected += self._apply_table(conn, batch.tables[table])
                if outcome.rejected and on_rejected is not None:
                    on_rejected(outcome.rejected)
                write_sql_offsets(conn, self.dialect, self.task.name, outcome.stored, stored)
        except BaseException:
            self._reset()
            raise
        self.rows_applied += sum(len(t.changes) for t in batch.tables.values())
        return outcome

    def _prepare(self, conn: Connection, schema: TableSchema, outcome: ApplyOutcome) -> None:
        """Make the table ready; a table the sink cannot apply is stopped, the rest go on."""
        where = self.dialect.target_table(self.task, schema.table)
        try:
            if not schema.primary_key:
                raise TargetError(
                    f"task {self.task.name}: table {schema.table} has no primary key; add one "
                    "in the source or exclude the table in `tables.exclude`",
                    task=self.task.name,
                    table=str(schema.table),
                )
            with conn.begin():
                self._tables.ensure(conn, where, schema)
        except TargetError as exc:
            log.error("%s; table stopped, the other tables go on", exc)
            outcome.stopped[schema.table] = str(exc)
        except sa.exc.DBAPIError as exc:
            if is_transient(exc):
                raise
            message = (
                f"task {self.task.name}: cannot prepare target table {where[1]} in "
                f"{safe_target_url(self.task)}: {_one_line(exc)}"
            )
            log.error("%s; table stopped, the other tables go on", message)
            outcome.stopped[schema.table] = message

    def _check_positions(
        self, conn: Connection, outcome: ApplyOutcome, expected: Mapping[Partition, int | None]
    ) -> dict[Partition, StoredOffset]:
        stored = read_sql_offsets(conn, self.task.name, list(outcome.stored), lock=True)
        moved = [
            p
            for p in sorted(outcome.stored)
            if (stored[p].next_offset if p in stored else None) != expected.get(p)
        ]
        if moved:
            raise PositionConflict(moved)
        return stored

    def _apply_table(self, conn: Connection, changes: TableChanges) -> list[Rejected]:
        where = self.dialect.target_table(self.task, changes.schema.table)
        if self.task.target.on_error == "stop":
            try:
                self._write(conn, where, changes)
            except sa.exc.DBAPIError as exc:
                self._raise_terminal(exc, where, refused=is_record_error(exc))
            return []

        def attempt(part: TableChanges) -> None:
            with conn.begin_nested():
                self._write(conn, where, part)

        try:
            return isolate_refused(changes, attempt, is_record_error, _one_line)
        except sa.exc.DBAPIError as exc:
            self._raise_terminal(exc, where, refused=False)
            raise  # unreachable: for mypy

    def _raise_terminal(
        self, exc: sa.exc.DBAPIError, where: tuple[str | None, str], refused: bool
    ) -> None:
        if is_transient(exc):
            raise exc
        kind = RecordRefused if refused else TargetError
        message = (
            f"task {self.task.name}: cannot apply changes to {where[1]} in "
            f"{safe_target_url(self.task)}: {_one_line(exc)}"
        )
        if kind is RecordRefused:
            raise RecordRefused(message) from exc
        raise TargetError(message, task=self.task.name, table=where[1]) from exc

    # --- statements -------------------------------------------------------------------------

    def _write(
        self, conn: Connection, where: tuple[str | None, str], changes: TableChanges
    ) -> None:
        schema = changes.schema
        table = self._dml_table(where, schema)
        if changes.truncated:
            conn.execute(sa.delete(table))
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
