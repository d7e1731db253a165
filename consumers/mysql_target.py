"""MySQL/MariaDB as a target: PyMySQL under SQLAlchemy, sessions in UTC and in strict SQL
mode (a value the column cannot hold is an error for that record, never truncated), column
types from docs/type-mapping.md, and the upsert as a multi-row
`INSERT ... ON DUPLICATE KEY UPDATE` (PyMySQL folds an executemany into multi-row
statements of up to about 1 MB each)."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine, make_url

from consumers.local_infile import install_guard
from consumers.sql_dialect import Converter, base_type, declared_length
from headwater.config import TaskConfig
from schemas.tables import Column, TableId

SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)

KEY_TEXT_LENGTH = 255
"""VARCHAR length of a text column in a primary key: InnoDB cannot index TEXT fully, and
255 utf8mb4 characters keep a few such columns within the 3072-byte key limit."""

_VARCHAR_MAX = 255
"""Longer varchar(n) columns become LONGTEXT: many wide VARCHARs overflow the 65535-byte row."""

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "int2": mysql.SMALLINT(),
    "int4": mysql.INTEGER(),
    "int8": mysql.BIGINT(),
    "float4": mysql.FLOAT(),
    "float8": mysql.DOUBLE(),
    "bool": mysql.BOOLEAN(),
    "date": mysql.DATE(),
    "time": mysql.TIME(fsp=6),
    "timestamp": mysql.DATETIME(fsp=6),
    "timestamptz": mysql.DATETIME(fsp=6),
    "uuid": mysql.CHAR(36),
    "json": mysql.JSON(),
    "jsonb": mysql.JSON(),
}


def mysql_url(url: str) -> str:
    """The URL with the PyMySQL driver (`mysql://` means MySQLdb otherwise)."""
    parsed = make_url(url)
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    return parsed.render_as_string(hide_password=False)


def _utc_naive(value: Any) -> Any:
    # DATETIME has no zone: an aware timestamp is stored as its UTC wall time.
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


class MySqlTarget:
    """The MySQL/MariaDB dialect of the SQLAlchemy sink."""

    name = "mysql"

    def __init__(self, local_infile: bool = False) -> None:
        # LOAD DATA LOCAL for the native path (consumers/mysql_load.py) only, and only for the
        # files the sink wrote for it (consumers/local_infile.py).
        self.local_infile = local_infile and install_guard()

    def engine(self, task: TaskConfig) -> Engine:
        return sa.create_engine(
            mysql_url(task.target.url),
            pool_size=1,
            pool_pre_ping=True,
            connect_args={
                "charset": "utf8mb4",
                "init_command": f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}'",
                "connect_timeout": 10,
                "local_infile": self.local_infile,
            },
        )

    @contextmanager
    def transaction(self, conn: Connection) -> Iterator[Any]:
        with conn.begin() as tx:
            yield tx

    def target_table(self, task: TaskConfig, table: TableId) -> tuple[str | None, str]:
        # A MySQL schema is a database: the URL's unless `target.schema` names another.
        return task.target.schema_, table.name

    def column_type(
        self, col: Column, source_engine: str, in_key: bool
    ) -> sa.types.TypeEngine[Any]:
        base = base_type(col, source_engine)
        if base == "numeric":
            if col.precision is not None and col.precision <= 65 and (col.scale or 0) <= 38:
                return mysql.DECIMAL(col.precision, col.scale or 0)
            return _key_or(in_key, mysql.LONGTEXT())  # unbounded: kept exact as text
        if base in _SIMPLE:
            return _SIMPLE[base]
        if base == "bytea":
            return mysql.VARBINARY(KEY_TEXT_LENGTH) if in_key else mysql.LONGBLOB()
        length = declared_length(col) if base in ("varchar", "bpchar") else None
        if base == "bpchar" and length is not None and length <= _VARCHAR_MAX:
            return mysql.CHAR(length)
        if length is not None and (length <= _VARCHAR_MAX or in_key):
            return mysql.VARCHAR(min(length, 768))
        return _key_or(in_key, mysql.LONGTEXT())

    def converter(self, col: Column, source_engine: str) -> Converter | None:
        base = base_type(col, source_engine)
        if base in ("timestamp", "timestamptz"):
            return _utc_naive
        if base == "uuid":
            return _text
        return None

    def upsert(self, table: sa.Table, keys: Sequence[str], updated: Sequence[str]) -> sa.Executable:
        insert = mysql.insert(table)
        # With nothing to update, a no-op assignment keeps the row (INSERT IGNORE would
        # also silence real errors).
        assign = {c: insert.inserted[c] for c in updated} or {keys[0]: table.c[keys[0]]}
        return insert.on_duplicate_key_update(assign)

    def table_options(self) -> dict[str, Any]:
        return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

    def delete_one(self, table: sa.Table, where: sa.ColumnElement[bool]) -> sa.Executable:
        return sa.delete(table).where(where).with_dialect_options(mysql_limit=1)

    def equality_converter(self, col: Column, source_engine: str) -> Converter | None:
        # A FLOAT column holds a 4-byte float; compared with the 8-byte value it came from
        # it is unequal (1.1 is stored as 1.100000023841858), so bind the stored value.
        return _as_float4 if base_type(col, source_engine) == "float4" else None


def _as_float4(value: Any) -> Any:
    if isinstance(value, float):
        return struct.unpack("f", struct.pack("f", value))[0]
    return value


def _key_or(in_key: bool, unbounded: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    return mysql.VARCHAR(KEY_TEXT_LENGTH) if in_key else unbounded
