"""The target's tables for the SQLAlchemy sink: created from the Avro-carried description
when missing (`target.create_tables`), widened with ADD COLUMN when a later schema version
brings a column, and checked against `create_tables: false` (a missing table or column is
one line naming the fix). Runs before the batch's transaction: MySQL commits around DDL."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn, CreateTable

from consumers.errors import TargetError
from consumers.sql_dialect import SqlDialect
from consumers.type_watch import TypeWatch, Widened
from headwater.config import TaskConfig
from schemas.tables import TableId, TableSchema

log = logging.getLogger(__name__)


def target_id(schema: str | None, name: str) -> TableId:
    return TableId(schema or "", name)


class SqlTables:
    """Makes sure target tables have the columns a batch writes; caches what exists."""

    def __init__(self, task: TaskConfig, dialect: SqlDialect) -> None:
        self.task = task
        self.dialect = dialect
        self._columns: dict[tuple[str | None, str], set[str]] = {}
        self._watch = TypeWatch(task.name)

    def forget(self) -> None:
        self._columns.clear()

    def ddl_table(self, where: tuple[str | None, str], schema: TableSchema) -> sa.Table:
        """`schema` as a SQLAlchemy table of the target dialect's types."""
        keys = set(schema.primary_key)
        columns = [
            sa.Column(
                c.name,
                self.dialect.column_type(c, schema.engine, c.name in keys),
                nullable=c.nullable,
                primary_key=c.name in keys,
                autoincrement=False,
            )
            for c in schema.columns
        ]
        return sa.Table(
            where[1], sa.MetaData(), *columns, schema=where[0], **self.dialect.table_options()
        )

    def ensure(self, conn: Connection, where: tuple[str | None, str], schema: TableSchema) -> None:
        """Create the table if missing, add the columns it lacks, or raise TargetError."""
        table = self.ddl_table(where, schema)
        compiled = {c.name: str(c.type.compile(conn.dialect)) for c in table.columns}
        widened = self._watch.check(target_id(*where), schema, compiled.__getitem__)
        known = self._columns.get(where)
        if known is not None and set(schema.column_names) <= known and not widened:
            return
        existing = self._existing(conn, where)
        if existing is None:
            self._create(conn, where, table)
            existing = set(schema.column_names)
        else:
            self._widen(conn, table, [w for w in widened if w.column in existing])
        self._watch.accept(target_id(*where), widened)
        missing = [c for c in table.columns if c.name not in existing]
        if missing and not self.task.target.create_tables:
            raise TargetError(
                f"task {self.task.name}: target table {_show(where)} lacks column(s) "
                f"{', '.join(c.name for c in missing)} of the source; add them or set "
                "`target.create_tables: true`",
                task=self.task.name,
                table=_show(where),
            )
        for col in missing:
            self._add_column(conn, table, col)
            existing.add(col.name)
        self._columns[where] = existing

    def _widen(self, conn: Connection, table: sa.Table, widened: list[Widened]) -> None:
        if not widened or conn.dialect.name == "sqlite":
            return  # SQLite keeps any value whatever the declared type: nothing to alter
        if not self.task.target.create_tables:
            change = widened[0]
            raise TargetError(
                f"task {self.task.name}: column {change.column} of {table.fullname} widened at "
                f"the source ({change.old} -> {change.new}); alter it in the target or set "
                "`target.create_tables: true`",
                task=self.task.name,
                table=table.fullname,
            )
        preparer = conn.dialect.identifier_preparer
        for change in widened:
            # MODIFY restates the whole column: its definition keeps the source's nullability.
            definition = CreateColumn(table.columns[change.column]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(
                f"ALTER TABLE {preparer.format_table(table)} MODIFY COLUMN {definition}"
            )
            log.info(
                "task %s: widened %s.%s from %s to %s",
                self.task.name,
                table.fullname,
                change.column,
                change.old,
                change.new,
            )

    def _existing(self, conn: Connection, where: tuple[str | None, str]) -> set[str] | None:
        inspector = sa.inspect(conn)
        if not inspector.has_table(where[1], schema=where[0]):
            return None
        return {str(c["name"]) for c in inspector.get_columns(where[1], schema=where[0])}

    def _create(self, conn: Connection, where: tuple[str | None, str], table: sa.Table) -> None:
        if not self.task.target.create_tables:
            raise TargetError(
                f"task {self.task.name}: target table {_show(where)} does not exist; create "
                "it or set `target.create_tables: true`",
                task=self.task.name,
                table=_show(where),
            )
        # IF NOT EXISTS: two sinks of a task may meet a new table at the same time.
        conn.execute(CreateTable(table, if_not_exists=True))
        log.info("task %s: created table %s", self.task.name, _show(where))

    def _add_column(self, conn: Connection, table: sa.Table, col: sa.Column[Any]) -> None:
        preparer = conn.dialect.identifier_preparer
        # The new column is nullable: rows already in the target have no value for it.
        added = sa.Column(col.name, col.type, nullable=True)
        definition = CreateColumn(added).compile(dialect=conn.dialect)
        statement = f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {definition}"
        conn.exec_driver_sql(statement)
        log.info("task %s: added column %s to %s", self.task.name, col.name, table.fullname)


def _show(where: tuple[str | None, str]) -> str:
    return f"{where[0]}.{where[1]}" if where[0] else where[1]
