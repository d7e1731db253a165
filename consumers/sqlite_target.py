"""SQLite as a target: column types by storage class (docs/type-mapping.md), values the
driver cannot store natively (Decimal, timestamps) written as exact text, the batch's
transaction begun IMMEDIATE so two sinks on one file take turns instead of failing, and the
upsert as `INSERT ... ON CONFLICT DO UPDATE`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine

from consumers.sql_dialect import Converter, base_type
from headwater.config import TaskConfig
from schemas.tables import Column, TableId

_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "int2": sa.INTEGER(),
    "int4": sa.INTEGER(),
    "int8": sa.INTEGER(),
    "bool": sa.INTEGER(),
    "float4": sa.REAL(),
    "float8": sa.REAL(),
    "bytea": sa.BLOB(),
}


def sqlite_text(value: Any) -> Any:
    """A value in the text form SQLite stores it in: exact decimals, ISO-8601 times in UTC
    (`YYYY-MM-DD HH:MM:SS.ffffff`, which sorts and compares as text)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


def _bool(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


class SqliteTarget:
    """The SQLite dialect of the SQLAlchemy sink."""

    name = "sqlite"

    def engine(self, task: TaskConfig) -> Engine:
        engine = sa.create_engine(task.target.url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # The driver's own transaction handling breaks savepoints; SQLAlchemy's recipe
            # is to switch it off and emit BEGIN ourselves.
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def transaction(self, conn: Connection) -> Iterator[Any]:
        with conn.begin() as tx:
            yield tx

    def target_table(self, task: TaskConfig, table: TableId) -> tuple[str | None, str]:
        return None, table.name  # one file, one namespace

    def column_type(
        self, col: Column, source_engine: str, in_key: bool
    ) -> sa.types.TypeEngine[Any]:
        return _TYPES.get(base_type(col, source_engine), sa.TEXT())

    def converter(self, col: Column, source_engine: str) -> Converter | None:
        base = base_type(col, source_engine)
        if base == "bool":
            return _bool
        if base in _TYPES:
            return None
        return sqlite_text

    def upsert(self, table: sa.Table, keys: Sequence[str], updated: Sequence[str]) -> sa.Executable:
        insert = sqlite.insert(table)
        if not updated:
            return insert.on_conflict_do_nothing(index_elements=list(keys))
        return insert.on_conflict_do_update(
            index_elements=list(keys), set_={c: insert.excluded[c] for c in updated}
        )

    def table_options(self) -> dict[str, Any]:
        return {}

    def delete_one(self, table: sa.Table, where: sa.ColumnElement[bool]) -> sa.Executable:
        rowid: sa.ColumnClause[Any] = sa.literal_column("rowid")
        first = sa.select(rowid).select_from(table).where(where).limit(1).scalar_subquery()
        return sa.delete(table).where(rowid == first)

    def equality_converter(self, col: Column, source_engine: str) -> Converter | None:
        return None  # REAL is 8 bytes and text is stored as given: values compare as bound
