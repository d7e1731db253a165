"""The column type a target gets for a source column, as the sinks create it
(consumers.ddl for PostgreSQL, consumers.mysql_target for MySQL/MariaDB), and what, if
anything, a value loses on the way: what assess lists per column and convert writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import mysql

from consumers.ddl import postgres_column_type
from consumers.mysql_target import MySqlTarget
from consumers.sql_dialect import base_type, declared_length
from schemas import mysql_types, pg_types
from schemas.tables import Column

_MYSQL = MySqlTarget()
_MYSQL_DIALECT: Any = mysql.dialect()


def target_type(col: Column, source_engine: str, target_engine: str, in_key: bool) -> str:
    """The target column type the sink creates for `col`."""
    if target_engine == "postgres":
        return postgres_column_type(col, source_engine)
    compiled = _MYSQL.column_type(col, source_engine, in_key).compile(dialect=_MYSQL_DIALECT)
    return str(compiled)


def supported(col: Column, source_engine: str) -> bool:
    """Whether the source type has a mapping of its own (else its values travel as text)."""
    if source_engine == "postgres":
        return pg_types.is_mapped(col.type_name)
    return mysql_types.is_mapped(col.type_name)


def _to_mysql(col: Column, source_engine: str, in_key: bool) -> str | None:
    base = base_type(col, source_engine)
    if base == "timestamptz":
        return "the time zone is dropped: DATETIME(6) holds the UTC wall time"
    if base == "numeric" and (col.precision is None or col.precision > 65 or (col.scale or 0) > 38):
        return "numeric beyond DECIMAL(65,38) or without precision is stored as text (exact)"
    if base in ("varchar", "bpchar") and (declared_length(col) or 0) > 255 and not in_key:
        return "varchar over 255 becomes LONGTEXT: the length limit is not enforced"
    if base == "jsonb":
        return "stored as JSON text in jsonb's normal form"
    if base == "uuid":
        return "stored as CHAR(36) text"
    if base == "text" and in_key:
        return "text in a key becomes VARCHAR(255): longer values are refused"
    return None


def _to_postgres(col: Column, source_engine: str) -> str | None:
    name = col.type_name.lower()
    unsigned = mysql_types.is_unsigned(col)
    if name == "bigint" and unsigned:
        return "unsigned bigint beyond 2^63-1 becomes numeric(20,0)"
    if name in ("enum", "set"):
        return f"{name} becomes text: the allowed values are not enforced"
    if name in ("date", "datetime", "timestamp"):
        return "zero dates (0000-00-00) become NULL"
    if name == "bit":
        return "BIT becomes bytea"
    if name in ("longblob", "longtext"):
        return "a large object: values over 1 GB do not fit PostgreSQL"
    if name == "tinyint" and "(1)" in col.sql_type:
        return "TINYINT(1) becomes smallint, not boolean"
    return None


def loss(col: Column, source_engine: str, target_engine: str, in_key: bool) -> str | None:
    """What a value of `col` loses in the target, or None."""
    if source_engine == "postgres" and col.type_name == "oid":
        return "a large-object reference: the object's data is not copied"
    if source_engine == target_engine == "postgres":
        return None  # the declared type is used verbatim
    if not supported(col, source_engine):
        return f"{col.sql_type} has no mapping: values travel and land as text"
    if target_engine == "mysql":
        if source_engine == "mysql" and col.type_name.lower() in ("enum", "set", "bit"):
            return _to_postgres(col, source_engine)
        return _to_mysql(col, source_engine, in_key)
    return _to_postgres(col, source_engine)
