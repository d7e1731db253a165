"""Applies a collapsed batch to a PostgreSQL target in one transaction: per table, the
truncate if any, one COPY of every changed row into a temporary staging table, one DELETE of
the deleted keys and one INSERT .. ON CONFLICT DO UPDATE per set of carried columns (one set
unless unchanged TOAST columns were left out); then the partitions' next offsets into
`headwater_offsets`; then commit. Tables are created or widened first (postgres_tables), each
in a savepoint so a table the sink cannot take stops alone; a record the target refuses is
isolated by bisecting its table's changes in savepoints (consumers/outcome.py). The flow
around these statements is shared with sql_sink.py in consumers/sink_base.py."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import psycopg
from psycopg import sql
from sqlalchemy import Connection

from consumers.batch import CollapsedBatch, CopyRows, RowKey, TableChanges, Upsert
from consumers.ddl import qualified
from consumers.errors import is_record_error
from consumers.offsets import (
    Partition,
    StoredOffset,
    ensure_offsets_table,
    read_offsets,
    write_offsets,
)
from consumers.outcome import (
    ApplyOutcome,
    NativeRefused,
    Rejected,
    RejectHandler,
    isolate_refused,
)
from consumers.pg_values import pg_value
from consumers.postgres_keyless import KeylessWriter
from consumers.postgres_tables import PgConnection, PostgresTables, StageTable
from consumers.sink_base import SinkBase, check_positions
from consumers.target import driver_connection, target_engine
from consumers.truncates import lock_truncates, settle_truncates
from headwater.config import TaskConfig
from schemas.tables import TableId, TableSchema

_GROUP = "__headwater_group"
"""The staging column telling deleted keys (group 0) from each set of upserted columns."""

DELETED_GROUP = 0

NATIVE_GROUP = -1
"""The staging group of whole rows the native path wrote (consumers/native_collapse.py);
the Python path numbers its column sets from 1."""

_CONTEXT_COLUMN = re.compile(r"column (\S+?):")


def _one_line(exc: Exception) -> str:
    """The server's message, with the column it concerns when the server names one."""
    if not isinstance(exc, psycopg.Error):
        return str(exc)
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    column = exc.diag.column_name
    if column is None:
        found = _CONTEXT_COLUMN.search(exc.diag.context or "")
        column = found.group(1) if found else None
    return f"{message} (column {column})" if column else message


def _upsert_groups(changes: TableChanges) -> list[tuple[frozenset[str], list[Upsert]]]:
    """Upserts grouped by the columns they carry, the full rows first."""
    groups: dict[frozenset[str], list[Upsert]] = {}
    for upsert in changes.upserts.values():
        groups.setdefault(upsert.columns, []).append(upsert)
    return sorted(groups.items(), key=lambda g: -len(g[0]))


def _key_match(left: str, right: str, keys: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(k), sql.Identifier(right), sql.Identifier(k)
        )
        for k in keys
    )


def _format(rows: CopyRows) -> sql.SQL:
    return sql.SQL(" (FORMAT binary)" if rows.binary is not None else "")


def _names(columns: Collection[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class PostgresSink(SinkBase[PgConnection]):
    """A PostgreSQL target of one task, on one connection held across batches."""

    db_error = psycopg.Error

    def __init__(self, task: TaskConfig) -> None:
        super().__init__(task, target_engine(task))
        self._tables = PostgresTables(task)
        self._keyless = KeylessWriter()
        self._stages: dict[TableId, StageTable] = {}
        self._stage_count = 0
        self._staged: set[TableId] = set()  # stages holding rows in this transaction

    def target_table(self, table: TableId) -> TableId:
        """Where a source table lands: the target schema if set, else the source's."""
        return TableId(self.task.target.schema_ or table.schema, table.name)

    def column_types(self, table: TableId, columns: tuple[str, ...]) -> tuple[str, ...] | None:
        """The target's type names for these columns of source `table`, once this sink has
        made the target ready (asked by the batcher, to write binary COPY rows)."""
        return self._tables.column_types(self.target_table(table), columns)

    def _set_up(self, conn: Connection) -> None:
        raw = driver_connection(conn)
        raw.execute("SELECT pg_advisory_xact_lock(hashtext('headwater.ddl'))")
        ensure_offsets_table(raw)

    def _forget(self) -> None:
        """Temp tables die with the connection."""
        self._tables.forget()
        self._keyless.forget()
        self._stages.clear()

    def _read_offsets(
        self, conn: Connection, partitions: Collection[Partition]
    ) -> dict[Partition, StoredOffset]:
        return read_offsets(driver_connection(conn), self.task.name, partitions)

    def _target_name(self, table: TableId) -> str:
        return str(self.target_table(table))

    def _one_line(self, exc: Exception) -> str:
        return _one_line(exc)

    def _apply_batch(
        self,
        batch: CollapsedBatch,
        expected: Mapping[Partition, int | None],
        outcome: ApplyOutcome,
        on_rejected: RejectHandler | None,
    ) -> None:
        self._staged.clear()
        conn = self._connection()
        with conn.begin():
            raw = driver_connection(conn)
            executed = lock_truncates(conn, self.task.name, batch)  # before the offsets
            stored = read_offsets(raw, self.task.name, list(batch.positions), lock=True)
            check_positions(stored, batch.positions, expected)
            self._prepare_tables(raw, batch, outcome)
            settle_truncates(conn, self.task.name, batch, outcome.stored, executed)
            self._apply_tables(raw, batch, outcome, on_rejected)
            write_offsets(raw, self.task.name, outcome.stored)

    def _ensure_table(self, conn: PgConnection, schema: TableSchema) -> None:
        target = self.target_table(schema.table)
        if self._tables.ready(target, schema):
            return
        with conn.transaction():
            widened = self._tables.ensure(conn, target, schema)
        if widened:  # staging tables copy the target's column types: make them anew
            self._stages.pop(target, None)
            self._keyless.forget()

    def _apply_table(self, raw: PgConnection, changes: TableChanges) -> list[Rejected]:
        target = self.target_table(changes.schema.table)
        if changes.copied:
            return self._apply_copied(raw, target, changes)
        try:
            if self.task.target.on_error == "stop":
                self._write_table(raw, target, changes)
                return []

            if changes.changes:  # the stage must outlive the savepoints rolled back
                self._ensure_stage(raw, target, changes.schema.column_names)
            if changes.rows:
                self._keyless.ensure_stage(raw, target, changes.schema)

            def attempt(part: TableChanges) -> None:
                known = self._stages.get(target)
                try:
                    with raw.transaction():  # a savepoint
                        self._write_table(raw, target, part)
                except Exception:
                    # A stage created or replaced inside the savepoint died with it.
                    if self._stages.get(target) is not known:
                        self._stages.pop(target, None)
                    raise

            return isolate_refused(changes, attempt, is_record_error, _one_line)
        except psycopg.Error as exc:
            self._apply_failed(exc, str(target), refused=is_record_error(exc))

    def _apply_copied(
        self, raw: PgConnection, target: TableId, changes: TableChanges
    ) -> list[Rejected]:
        """A table with rows the native path wrote: no keys to bisect, so a refused record
        sends the whole batch back to the Python path (NativeRefused), which finds it."""
        binary = [rows for rows in changes.copied if rows.binary is not None]
        if binary:
            # Checked against the table itself, locked: written for column types it no
            # longer has (widened since, or altered by hand), the rows would be misread.
            types, changed = self._tables.locked_types(raw, target)
            if changed:  # the staging table copied the old types
                self._drop_stage(raw, target)
            for rows in binary:
                if rows.binary != tuple(types.get(c, "") for c in rows.columns):
                    raise NativeRefused(f"{target}: column types changed since the batch was read")
        try:
            if not self._inserted_directly(raw, target, changes):
                self._write_table(raw, target, changes)
        except psycopg.Error as exc:
            if is_record_error(exc):
                raise NativeRefused(f"{target}: {_one_line(exc)}") from exc
            self._apply_failed(exc, str(target), refused=False)
        return []

    def _inserted_directly(self, raw: PgConnection, target: TableId, changes: TableChanges) -> bool:
        """Rows that only inserts made (a full load, an append-only stream) COPY'd straight
        into the target, skipping the stage and ON CONFLICT; False, with nothing written,
        when the batch has anything else or a row is already there (a resent batch)."""
        if changes.truncated or changes.changes or changes.rows:
            return False
        copied = [c for c in changes.copied if c.copy]
        if not copied or not all(c.inserts_only and c.deletes == 0 for c in copied):
            return False
        try:
            with raw.transaction():  # a savepoint
                for rows in copied:
                    statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
                        qualified(target), _names(rows.columns), _format(rows)
                    )
                    with raw.cursor() as cur, cur.copy(statement) as copy:
                        copy.write(rows.copy)  # rows of inserts only come without a group
        except psycopg.errors.UniqueViolation:
            return False
        return True

    def _write_table(self, raw: PgConnection, target: TableId, changes: TableChanges) -> None:
        schema = changes.schema
        if changes.truncated:
            raw.execute(sql.SQL("TRUNCATE {}").format(qualified(target)))
        if changes.rows:  # a keyless table: its changes in order (consumers/keyless.py)
            self._keyless.write(raw, target, schema, list(changes.rows.values()))
        if not changes.changes and not changes.copied:
            return
        stage = self._ensure_stage(raw, target, schema.column_names)
        if target in self._staged:  # an earlier attempt of this transaction left rows
            raw.execute(sql.SQL("DELETE FROM {}").format(stage.ref))
        self._staged.add(target)
        groups = _upsert_groups(changes)
        self._copy(raw, stage, schema, changes.deletes, groups)
        for rows in changes.copied:
            self._copy_native(raw, stage, rows)
        deleted = changes.deletes or any(rows.deletes for rows in changes.copied)
        if deleted:
            raw.execute(
                sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE s.{} = %s AND {}").format(
                    qualified(target),
                    stage.ref,
                    sql.Identifier(_GROUP),
                    _key_match("t", "s", schema.primary_key),
                ),
                (DELETED_GROUP,),
            )
        for number, (columns, _rows) in enumerate(groups, start=1):
            self._upsert(raw, target, stage, schema, columns, number)
        # One set of columns: a topic goes native only with one schema version per batch.
        native_columns = {frozenset(rows.columns) for rows in changes.copied if rows.upserts}
        for carried in native_columns:
            self._upsert(raw, target, stage, schema, carried, NATIVE_GROUP)

    def _copy_native(self, raw: PgConnection, stage: StageTable, rows: CopyRows) -> None:
        # Rows of inserts only come without their group: the stage's default gives it.
        columns = _names(rows.columns)
        if not rows.inserts_only:
            columns = sql.SQL("{}, {}").format(sql.Identifier(_GROUP), columns)
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(stage.ref, columns, _format(rows))
        with raw.cursor() as cur, cur.copy(statement) as copy:
            copy.write(rows.copy)

    def _copy(
        self,
        raw: PgConnection,
        stage: StageTable,
        schema: TableSchema,
        deletes: list[RowKey],
        groups: list[tuple[frozenset[str], list[Upsert]]],
    ) -> None:
        if not deletes and not groups:
            return
        key_at = {k: i for i, k in enumerate(schema.primary_key)}
        statement = sql.SQL("COPY {} ({}, {}) FROM STDIN").format(
            stage.ref, sql.Identifier(_GROUP), _names(stage.columns)
        )
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for key in deletes:
                copy.write_row(
                    (
                        DELETED_GROUP,
                        *(key[key_at[c]] if c in key_at else None for c in stage.columns),
                    )
                )
            for number, (_columns, upserts) in enumerate(groups, start=1):
                for upsert in upserts:
                    copy.write_row((number, *(pg_value(upsert.row.get(c)) for c in stage.columns)))

    def _upsert(
        self,
        raw: PgConnection,
        target: TableId,
        stage: StageTable,
        schema: TableSchema,
        columns: frozenset[str],
        number: int,
    ) -> None:
        carried = [c for c in stage.columns if c in columns]
        updated = [c for c in carried if c not in schema.primary_key]
        action: sql.Composable
        if updated:
            action = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in updated
                )
            )
        else:
            action = sql.SQL("DO NOTHING")
        raw.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} = %s ON CONFLICT ({}) {}"
            ).format(
                qualified(target),
                _names(carried),
                _names(carried),
                stage.ref,
                sql.Identifier(_GROUP),
                _names(schema.primary_key),
                action,
            ),
            (number,),
        )

    # --- staging ----------------------------------------------------------------------------

    def _drop_stage(self, raw: PgConnection, target: TableId) -> None:
        stage = self._stages.pop(target, None)
        if stage is not None:
            raw.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage.ref))

    def _ensure_stage(
        self, raw: PgConnection, target: TableId, columns: tuple[str, ...]
    ) -> StageTable:
        stage = self._stages.get(target)
        if stage is not None and stage.columns == columns:
            return stage
        if stage is not None:
            raw.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage.ref))
        self._stage_count += 1
        stage = StageTable(f"hw_stage_{self._stage_count}", columns)
        raw.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS"
                " SELECT NULL::smallint AS {}, {} FROM {} WITH NO DATA"
            ).format(
                sql.Identifier(stage.name),
                sql.Identifier(_GROUP),
                _names(columns),
                qualified(target),
            )
        )
        raw.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                stage.ref, sql.Identifier(_GROUP), sql.Literal(NATIVE_GROUP)
            )
        )
        self._stages[target] = stage
        return stage
