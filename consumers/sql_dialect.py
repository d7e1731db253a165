"""What the SQLAlchemy-based sink (consumers/sql_sink.py) asks of a target dialect: its
engine, the column type of each source column, how a value is converted for its driver, and
its idempotent upsert. MySQL/MariaDB (consumers/mysql_target.py) and SQLite
(consumers/sqlite_target.py) implement it; the mapping tables are in docs/type-mapping.md.

Source columns are described by their PostgreSQL base type name (`int4`, `numeric`,
`timestamptz`); a MySQL source's names are brought to the same vocabulary first, so each
dialect has one mapping."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from headwater.config import TaskConfig
from schemas.tables import Column, TableId

Converter = Callable[[Any], Any]

_LENGTH = re.compile(r"\((\d+)")

# MySQL/MariaDB base type names to the PostgreSQL names the dialects map from.
_FROM_MYSQL: dict[str, str] = {
    "tinyint": "int2",
    "smallint": "int2",
    "year": "int2",
    "mediumint": "int4",
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "float": "float4",
    "double": "float8",
    "decimal": "numeric",
    "char": "bpchar",
    "varchar": "varchar",
    "tinytext": "text",
    "text": "text",
    "mediumtext": "text",
    "longtext": "text",
    "binary": "bytea",
    "varbinary": "bytea",
    "tinyblob": "bytea",
    "blob": "bytea",
    "mediumblob": "bytea",
    "longblob": "bytea",
    "bit": "bytea",
    "json": "json",
    "date": "date",
    "time": "time",
    "datetime": "timestamp",
    "timestamp": "timestamptz",
}


# Unsigned MySQL integers need the next wider type.
_UNSIGNED = {"smallint": "int4", "mediumint": "int4", "int": "int8", "integer": "int8"}


def base_type(col: Column, source_engine: str) -> str:
    """The PostgreSQL base type name of `col`, whatever the source engine."""
    if source_engine == "postgres":
        return col.type_name
    if col.precision is not None:  # decimal, and bigint unsigned carried as decimal(20,0)
        return "numeric"
    return mysql_base_type(col)


def mysql_base_type(col: Column) -> str:
    """The PostgreSQL base type name of a MySQL/MariaDB column by its type name alone."""
    name = col.type_name.lower()
    if "unsigned" in col.sql_type.lower() and name in _UNSIGNED:
        return _UNSIGNED[name]
    return _FROM_MYSQL.get(name, "text")


def declared_length(col: Column) -> int | None:
    """The n of `character varying(n)` / `varchar(n)` / `character(n)`, if declared."""
    found = _LENGTH.search(col.sql_type)
    return int(found.group(1)) if found else None


class SqlDialect(Protocol):
    """One target dialect for the SQLAlchemy sink."""

    name: str

    def engine(self, task: TaskConfig) -> Engine: ...

    def transaction(self, conn: Connection) -> AbstractContextManager[Any]:
        """The batch's transaction (SQLite takes its write lock at BEGIN)."""
        ...

    def target_table(self, task: TaskConfig, table: TableId) -> tuple[str | None, str]:
        """(schema or None for the connection's default, name) a source table lands in."""
        ...

    def column_type(
        self, col: Column, source_engine: str, in_key: bool
    ) -> sa.types.TypeEngine[Any]: ...

    def converter(self, col: Column, source_engine: str) -> Converter | None:
        """How a decoded value becomes what the driver writes (None: as it is)."""
        ...

    def upsert(self, table: sa.Table, keys: Sequence[str], updated: Sequence[str]) -> sa.Executable:
        """An INSERT of `table`'s columns that updates `updated` on a key conflict (or
        does nothing if `updated` is empty); executed with many rows at once."""
        ...

    def table_options(self) -> dict[str, Any]:
        """Keyword arguments of sa.Table for CREATE TABLE (engine, charset)."""
        ...

    def delete_one(self, table: sa.Table, where: sa.ColumnElement[bool]) -> sa.Executable:
        """A DELETE of at most one row of `table` matching `where` (keyless tables)."""
        ...

    def equality_converter(self, col: Column, source_engine: str) -> Converter | None:
        """How a converted value is bound so that it compares equal to what the column
        stored for it (None: as it is)."""
        ...
