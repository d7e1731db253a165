"""The MySQL/MariaDB sink: the SQLAlchemy sink (consumers/sql_sink.py) plus the apply of the
rows the native path wrote (consumers/native_mysql.py, mysql_load.py). A table with native
rows is applied in one go; a record the target refuses there raises NativeRefused, and the
sink loop applies the batch again through the Python path, which isolates the record for
the dead-letter topic or stops with its key.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from consumers import native_mysql
from consumers.batch import TableChanges
from consumers.errors import is_record_error, mysql_code
from consumers.mysql_load import (
    LoadRefused,
    load_copied,
    loaded_directly,
    loads_into,
    replaced_directly,
    replaces_as_upsert,
    target_types,
)
from consumers.mysql_target import MySqlTarget
from consumers.outcome import NativeRefused, Rejected
from consumers.sql_sink import SqlSink
from headwater.config import TaskConfig
from schemas.tables import TableId, TableSchema

_LOAD_DISABLED = frozenset({1044, 1142, 1148, 1227, 2068, 3948, 4166})
"""LOAD DATA LOCAL switched off on the server (local_infile=0) or refused by the client, or
a privilege the staging table needs (CREATE TEMPORARY TABLES) missing: the Python path,
which needs neither, takes over (and reports its own error, if it has one)."""


class MySqlSink(SqlSink):
    """A MySQL/MariaDB target of one task, with the native path's LOAD DATA apply."""

    def __init__(self, task: TaskConfig) -> None:
        super().__init__(task, MySqlTarget(local_infile=native_mysql.available()))
        self._loadable: dict[tuple[tuple[str | None, str], TableSchema], bool] = {}
        self._replaceable: dict[tuple[tuple[str | None, str], TableSchema], bool] = {}
        self._python_only: set[TableId] = set()
        self._load_disabled = False

    def takes_native(self, table: TableId) -> bool:
        """Whether the native path may collapse `table`'s messages (asked by the batcher)."""
        return not self._load_disabled and table not in self._python_only

    def _forget(self) -> None:
        super()._forget()
        self._loadable.clear()  # a reconnect may follow DDL by someone else
        self._replaceable.clear()

    def _apply_table(self, conn: Connection, changes: TableChanges) -> list[Rejected]:
        if not changes.copied:
            return super()._apply_table(conn, changes)
        schema = changes.schema
        where = self.dialect.target_table(self.task, schema.table)
        try:
            if not self._loads_into(conn, where, schema):
                self._python_only.add(schema.table)
                raise NativeRefused(f"{where[1]}: target column types the native path leaves")
            target = self._dml_table(where, schema)
            direct = not (changes.truncated or changes.rows or changes.changes)
            if direct and self._replaces(conn, where, schema):
                if replaced_directly(conn, target, schema, changes.copied):
                    return []
            elif direct and loaded_directly(conn, target, changes.copied):
                return []
            self._write(conn, where, changes)  # truncate, keyless rows, Python-decoded keys
            load_copied(conn, target, schema, changes.copied)
        except LoadRefused as exc:
            raise NativeRefused(str(exc)) from exc
        except sa.exc.DBAPIError as exc:
            if mysql_code(exc) in _LOAD_DISABLED:
                self._load_disabled = True  # the Python path from now on
                raise NativeRefused(f"{where[1]}: {self._one_line(exc)}") from exc
            if is_record_error(exc):
                raise NativeRefused(f"{where[1]}: {self._one_line(exc)}") from exc
            self._apply_failed(exc, where[1], refused=False)
        return []

    def _replaces(
        self, conn: Connection, where: tuple[str | None, str], schema: TableSchema
    ) -> bool:
        known = self._replaceable.get((where, schema))
        if known is None:
            known = self._replaceable[(where, schema)] = replaces_as_upsert(conn, where, schema)
        return known

    def _loads_into(
        self, conn: Connection, where: tuple[str | None, str], schema: TableSchema
    ) -> bool:
        known = self._loadable.get((where, schema))
        if known is None:
            known = self._loadable[(where, schema)] = loads_into(schema, target_types(conn, where))
        return known
