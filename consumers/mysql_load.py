"""Applies the rows the native path wrote for a MySQL/MariaDB table (consumers/native_mysql.py)
inside the batch's transaction: a temporary staging table typed like the target's columns,
`LOAD DATA LOCAL INFILE` into it, then `DELETE ... JOIN` of the deleted keys and one
`INSERT ... SELECT ... ON DUPLICATE KEY UPDATE` of the upserted rows in their batch order.
Rows of inserts only are first tried straight into the target, in a savepoint.

`LOAD DATA LOCAL` turns the errors strict mode raises for a bad value into warnings (the
server cannot stop the client's file midway), so a load with any warning or note counts as
refused: the sink then applies the batch through the Python path, which finds the record.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from consumers.batch import CopyRows
from consumers.sql_dialect import base_type
from schemas.tables import TableSchema

DELETED_GROUP = 0
UPSERT_GROUP = 1

STAGE = "headwater_load_stage"
"""The temporary staging table (per session; created and dropped around each load)."""

_SEQ, _GROUP = "__headwater_seq", "__headwater_group"

_INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "bigint"})
_TEXTS = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "json"})
_BINARIES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})

# Target column types (information_schema DATA_TYPE) that read a loaded value as they read the
# literal the Python path binds, by the source column's base type; anything else (BIT, YEAR,
# ENUM, a date into DATETIME...) leaves the table to the Python path.
_LOADS: dict[str, frozenset[str]] = {
    "int2": _INTEGERS | {"decimal"},
    "int4": _INTEGERS | {"decimal"},
    "int8": _INTEGERS | {"decimal"},
    "bool": _INTEGERS,
    "float4": frozenset({"float", "double"}),
    "float8": frozenset({"float", "double"}),
    "numeric": _TEXTS | {"decimal"},
    "bytea": _BINARIES,
    "date": frozenset({"date"}),
    "time": frozenset({"time"}),
    "timestamp": frozenset({"datetime", "timestamp"}),
    "timestamptz": frozenset({"datetime", "timestamp"}),
}


class LoadRefused(Exception):
    """The server warned about loaded values (a value the target column cannot hold)."""


def target_types(conn: Connection, where: tuple[str | None, str]) -> dict[str, str]:
    """The DATA_TYPE of each column of the target table."""
    found = conn.execute(
        sa.text(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
        ),
        {"schema": where[0], "name": where[1]},
    )
    return {str(name): str(kind).lower() for name, kind in found}


def loads_into(schema: TableSchema, types: Mapping[str, str]) -> bool:
    """Whether every column of `schema` lands in a target column that reads loaded text as
    it reads the Python path's literals."""
    for col in schema.columns:
        allowed = _LOADS.get(base_type(col, schema.engine), _TEXTS)
        if types.get(col.name) not in allowed:
            return False
    return True


def load_copied(
    conn: Connection, target: sa.Table, schema: TableSchema, copied: list[CopyRows]
) -> None:
    """Apply the native rows of one table (see module doc); raises LoadRefused or the
    driver's error for a record the target refuses."""
    columns = copied[0].columns
    if any(rows.columns != columns for rows in copied):
        # Two column sets in one group would write nulls over columns one of them lacks.
        raise LoadRefused(f"{target.name}: native rows of two column sets in one batch")
    stage = _stage_table(target, columns)
    # A failed attempt leaves the table behind; the next one drops it first.
    _create_stage(conn, target, stage, columns)
    warned = _load(conn, stage, columns, b"".join(rows.copy for rows in copied))
    if warned is not None:
        raise LoadRefused(f"{stage.name}: {warned}")
    if any(rows.deletes for rows in copied):
        keys = [target.c[k] == stage.c[k] for k in schema.primary_key]
        conn.execute(sa.delete(target).where(*keys, stage.c[_GROUP] == DELETED_GROUP))
    if any(rows.upserts for rows in copied):
        conn.execute(_upsert(target, stage, schema, columns))
    conn.exec_driver_sql(f"DROP TEMPORARY TABLE {_name(conn, stage)}")


def loaded_directly(conn: Connection, target: sa.Table, copied: list[CopyRows]) -> bool:
    """Rows that only inserts made (a full load, an append-only stream) loaded straight
    into the target, skipping the stage and ON DUPLICATE KEY UPDATE; False, with nothing
    written, when the rows are not all inserts or the load warned (a key already there:
    LOAD DATA LOCAL skips a duplicate with a warning; or a value the column cannot hold),
    and the caller goes through the stage, which tells the cases apart."""
    if not copied or not all(rows.inserts_only and rows.deletes == 0 for rows in copied):
        return False
    columns = copied[0].columns
    if any(rows.columns != columns for rows in copied):
        return False
    text = b"".join(rows.copy for rows in copied)
    savepoint = conn.begin_nested()
    try:
        # Each line starts with its group; a user variable takes it and drops it.
        warned = _load(conn, target, columns, text, group="@headwater_group")
    except BaseException:
        savepoint.rollback()
        raise
    if warned is not None:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def _stage_table(target: sa.Table, columns: tuple[str, ...]) -> sa.Table:
    return sa.Table(
        STAGE,
        sa.MetaData(),
        sa.Column(_SEQ),
        sa.Column(_GROUP),
        *(sa.Column(c) for c in columns),
        schema=target.schema,
    )


def _name(conn: Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def _create_stage(
    conn: Connection, target: sa.Table, stage: sa.Table, columns: tuple[str, ...]
) -> None:
    # CREATE ... SELECT copies each column's type, charset and collation; the outer join
    # makes them nullable (deleted keys carry only the key). Temporary tables neither commit
    # the transaction nor show to other sessions.
    quote = conn.dialect.identifier_preparer.quote
    picked = ", ".join("t." + quote(c) for c in columns)
    conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {_name(conn, stage)}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {_name(conn, stage)} "
        f"({quote(_SEQ)} BIGINT AUTO_INCREMENT PRIMARY KEY, {quote(_GROUP)} TINYINT) "
        f"SELECT {picked} FROM (SELECT 1) AS one LEFT JOIN {_name(conn, target)} AS t ON 0 "
        "LIMIT 0"
    )


def _load(
    conn: Connection, table: sa.Table, columns: tuple[str, ...], text: bytes, group: str = ""
) -> str | None:
    """LOAD DATA `text` into `table`; the first warning or note it raised, if any."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join([group or quote(_GROUP), *(quote(c) for c in columns)])
    into = f"{_name(conn, table)} CHARACTER SET utf8mb4 ({names})".replace("%", "%%")
    statement = "LOAD DATA LOCAL INFILE %s INTO TABLE " + into  # the path is bound
    fd, path = tempfile.mkstemp(prefix="headwater-load-", suffix=".tsv")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text)
        conn.exec_driver_sql(statement, (path,))
        # Right after the load, so these are its warnings and notes (SHOW WARNINGS lists
        # notes too while sql_notes is on, the default).
        first = conn.exec_driver_sql("SHOW WARNINGS LIMIT 1").first()
        return None if first is None else str(first[2])
    finally:
        os.unlink(path)


def _upsert(
    target: sa.Table, stage: sa.Table, schema: TableSchema, columns: tuple[str, ...]
) -> sa.Executable:
    picked = sa.select(*(stage.c[c] for c in columns)).where(stage.c[_GROUP] == UPSERT_GROUP)
    insert = mysql.insert(target).from_select(list(columns), picked.order_by(stage.c[_SEQ]))
    updated = [c for c in columns if c not in schema.primary_key]
    key = schema.primary_key[0]
    # With nothing to update, a no-op assignment keeps the row (as mysql_target.upsert).
    assign = {c: insert.inserted[c] for c in updated} or {key: target.c[key]}
    return insert.on_duplicate_key_update(assign)
