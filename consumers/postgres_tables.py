"""The target's tables as a sink needs them: created from the Avro-carried description when
missing (`target.create_tables`), widened with ADD COLUMN when a later schema version brings a
column. What exists is cached per connection, so a batch asks the catalog only when a table
or column is new to this sink."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from consumers.ddl import (
    FALLBACK_TYPE,
    add_column,
    create_schema,
    create_table,
    postgres_column_type,
    widen_column,
)
from consumers.errors import TargetError
from consumers.type_watch import TypeWatch, Widened
from headwater.config import TaskConfig
from schemas.tables import Column, TableId, TableSchema

log = logging.getLogger(__name__)

PgConnection = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class StageTable:
    """A temporary staging table mirroring some columns of one target table."""

    name: str
    columns: tuple[str, ...]

    @property
    def ref(self) -> sql.Identifier:
        return sql.Identifier("pg_temp", self.name)


class PostgresTables:
    """Makes sure target tables have the columns a batch writes (in the batch's transaction)."""

    def __init__(self, task: TaskConfig) -> None:
        self.task = task
        self._columns: dict[TableId, tuple[str, ...]] = {}
        # The schema each target was last made ready for: the same schema again needs
        # nothing (no savepoint, no type checks), which is every batch of a steady stream.
        self._ready: dict[TableId, TableSchema] = {}
        # Each target column's pg_type.typname, read whenever the sink looked at or changed
        # the table (the batcher's thread reads it to choose binary COPY).
        self._types: dict[TableId, dict[str, str]] = {}
        self._watch = TypeWatch(task.name)

    def forget(self) -> None:
        """Drop what is cached (after a rollback or a new connection)."""
        self._columns.clear()
        self._ready.clear()
        self._types.clear()

    def locked_types(self, raw: PgConnection, target: TableId) -> tuple[dict[str, str], bool]:
        """`target`'s column types as they are, and as they stay until the transaction ends
        (ROW EXCLUSIVE, what COPY takes anyway, makes an ALTER TABLE wait for it), and
        whether they differ from the ones read before. Binary COPY rows carry no type: int4
        rows in a column altered to real by hand would go in as other numbers, no error."""
        lock = sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE")
        raw.execute(lock.format(sql.Identifier(target.schema, target.name)))
        types = self._target_types(raw, target)
        before = self._types.get(target)
        self._types[target] = types
        return types, before is not None and before != types

    def column_types(self, target: TableId, columns: Collection[str]) -> tuple[str, ...] | None:
        """The type names of `columns` of `target` as last read, or None when not known."""
        types = self._types.get(target)
        if types is None or any(c not in types for c in columns):
            return None
        return tuple(types[c] for c in columns)

    def ready(self, target: TableId, schema: TableSchema) -> bool:
        """Whether `target` was made ready for `schema` on this connection already."""
        return self._ready.get(target) == schema

    def ensure(self, raw: PgConnection, target: TableId, schema: TableSchema) -> bool:
        """Create `target` from `schema` if missing, add the columns it lacks, widen the
        columns whose source type widened. True when a column type changed (staging tables
        copied from the target's columns are stale then)."""
        widened = self._watch.check(
            target, schema, lambda name: postgres_column_type(schema.column(name), schema.engine)
        )
        known = self._columns.get(target)
        if known is not None and set(schema.column_names) <= set(known) and not widened:
            self._ready[target] = schema
            return False
        # One sink at a time changes a target's tables; the lock ends with the transaction.
        raw.execute("SELECT pg_advisory_xact_lock(hashtext('headwater.ddl'))")
        self._types.pop(target, None)
        existing = list(self._target_types(raw, target))
        if not existing:
            self._create_table(raw, target, schema)
            existing = list(schema.column_names)
            widened = []
        else:
            widened = [w for w in widened if w.column in existing]
            self._widen(raw, target, widened)
        self._watch.accept(target, widened)
        missing = [c for c in schema.columns if c.name not in existing]
        if missing:
            types = self._column_types(raw, target, missing, schema.engine)
            for col in missing:
                raw.execute(add_column(target, col, types[col.name]))
                log.info(
                    "task %s: added column %s %s to %s",
                    self.task.name,
                    col.name,
                    types[col.name],
                    target,
                )
            existing += [c.name for c in missing]
        self._columns[target] = tuple(existing)
        self._types[target] = self._target_types(raw, target)
        self._ready[target] = schema
        return bool(widened)

    def _widen(self, raw: PgConnection, target: TableId, widened: list[Widened]) -> None:
        for change in widened:
            if not self.task.target.create_tables:
                raise TargetError(
                    f"task {self.task.name}: column {change.column} of {target} widened at the "
                    f"source ({change.old} -> {change.new}); alter it in the target or set "
                    "`target.create_tables: true`",
                    task=self.task.name,
                    table=str(target),
                )
            raw.execute(widen_column(target, change.column, change.new))
            log.info(
                "task %s: widened %s.%s from %s to %s",
                self.task.name,
                target,
                change.column,
                change.old,
                change.new,
            )

    def _target_types(self, raw: PgConnection, target: TableId) -> dict[str, str]:
        """The target's columns in order, each with its type's name (schema-qualified
        outside pg_catalog, so no user type passes for a built-in); empty when no table."""
        rows = raw.execute(
            "SELECT a.attname, CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace"
            " THEN t.typname ELSE t.typnamespace::regnamespace || '.' || t.typname END"
            " FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (target.schema, target.name),
        ).fetchall()
        return {str(name): str(typname) for name, typname in rows}

    def _create_table(self, raw: PgConnection, target: TableId, schema: TableSchema) -> None:
        if not self.task.target.create_tables:
            raise TargetError(
                f"task {self.task.name}: target table {target} does not exist; create it or "
                "set `target.create_tables: true`",
                task=self.task.name,
                table=str(target),
            )
        types = self._column_types(raw, target, schema.columns, schema.engine)
        raw.execute(create_schema(target.schema))
        raw.execute(create_table(target, schema, types))
        log.info("task %s: created table %s", self.task.name, target)

    def _column_types(
        self, raw: PgConnection, target: TableId, columns: Collection[Column], engine: str
    ) -> dict[str, str]:
        """Each column's target type; a type the target does not know (an enum or domain
        of the source) becomes text, which is how its values travel."""
        types: dict[str, str] = {}
        for col in columns:
            wanted = postgres_column_type(col, engine)
            if not self._type_exists(raw, wanted):
                log.warning(
                    "task %s: type %s of %s.%s is unknown in the target; using %s",
                    self.task.name,
                    wanted,
                    target,
                    col.name,
                    FALLBACK_TYPE,
                )
                wanted = FALLBACK_TYPE
            types[col.name] = wanted
        return types

    def _type_exists(self, raw: PgConnection, type_text: str) -> bool:
        try:
            with raw.transaction():  # a savepoint: a malformed name must not end the batch
                row = raw.execute("SELECT to_regtype(%s) IS NOT NULL", (type_text,)).fetchone()
        except psycopg.errors.SyntaxError:
            return False
        return bool(row and row[0])
