"""Applies the rows the native path wrote for a MySQL/MariaDB table (consumers/native_mysql.py)
inside the batch's transaction: a temporary staging table typed like the target's columns,
`LOAD DATA LOCAL INFILE` into it, then `DELETE ... JOIN` of the deleted keys and one
`INSERT ... SELECT ... ON DUPLICATE KEY UPDATE` of the upserted rows in their batch order.
Rows of inserts only are first tried straight into the target, in a savepoint; so are the
upserted rows of a table where REPLACE is an upsert of whole rows (`replaces_as_upsert`),
with `LOAD DATA ... REPLACE` (2-3x faster than the stage and ON DUPLICATE KEY UPDATE,
measured on 50k updates of existing rows), the deleted keys then going through the stage.

`LOAD DATA LOCAL` turns the errors strict mode raises for a bad value into warnings (the
server cannot stop the client's file midway), so a load with any warning or note counts as
refused: the sink then applies the batch through the Python path, which finds the record.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from consumers.batch import CopyRows
from consumers.local_infile import allowed
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


_EXACT_KEYS = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "date", "datetime"}
    | {"timestamp", "time", "year"}
)
"""Key column types whose equal values are written the same (unlike text under most
collations)."""


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


def replaces_as_upsert(
    conn: Connection, where: tuple[str | None, str], schema: TableSchema
) -> bool:
    """Whether REPLACE of a whole row into the target table has the effect of an upsert:
    REPLACE deletes the row it collides with and inserts the new one, so it must not meet
    a unique key but the primary key (it would delete another row), a foreign key naming
    the table (ON DELETE actions), a trigger, a target column the rows do not carry (it
    would be reset to its default, where an upsert keeps it), or a key column where two
    spellings are one key ('a' and 'A', 'a' and 'a ' under most collations: the upsert keeps
    the stored spelling, REPLACE writes the new one)."""
    params = {"schema": where[0], "name": where[1]}
    this = "TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
    keys = conn.execute(
        sa.text(
            "SELECT DATA_TYPE, COLLATION_NAME FROM information_schema.COLUMNS "
            f"WHERE {this} AND COLUMN_KEY = 'PRI'"
        ),
        params,
    ).all()
    if not keys or not all(
        str(kind).lower() in _EXACT_KEYS or str(collation or "").endswith("_nopad_bin")
        for kind, collation in keys
    ):
        return False
    uniques = conn.execute(
        sa.text(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS "
            f"WHERE {this} AND NON_UNIQUE = 0"
        ),
        params,
    )
    if [str(name) for (name,) in uniques] != ["PRIMARY"]:
        return False
    referring = conn.execute(
        sa.text(
            "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE UNIQUE_CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) "
            "AND REFERENCED_TABLE_NAME = :name"
        ),
        params,
    ).scalar()
    triggers = conn.execute(
        sa.text(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = COALESCE(:schema, DATABASE()) "
            "AND EVENT_OBJECT_TABLE = :name"
        ),
        params,
    ).scalar()
    if referring or triggers:
        return False
    return set(target_types(conn, where)) <= set(schema.column_names)


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
    # Each line starts with its group; a user variable takes it and drops it.
    return _in_savepoint(conn, lambda: _load(conn, target, columns, text, group="@headwater_group"))


def _in_savepoint(conn: Connection, attempt: Callable[[], str | None]) -> bool:
    """Run `attempt` in a savepoint: kept when it returns no warning, rolled back (False)
    when it warns or raises LoadRefused, rolled back and raised on any other error."""
    savepoint = conn.begin_nested()
    try:
        warned = attempt()
    except LoadRefused:
        savepoint.rollback()
        return False
    except BaseException:
        savepoint.rollback()
        raise
    if warned is not None:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def replaced_directly(
    conn: Connection, target: sa.Table, schema: TableSchema, copied: list[CopyRows]
) -> bool:
    """The upserted rows loaded straight into the target with REPLACE and the deleted keys
    deleted through the stage, in a savepoint, for a table where that is an upsert (see
    `replaces_as_upsert`, the caller's check); False, with nothing written, when the rows do
    not carry every column or the load warned (a value the column cannot hold), and the
    caller goes through the stage, which finds the record."""
    columns = copied[0].columns if copied else ()
    if not copied or set(columns) != set(schema.column_names):
        return False
    if any(rows.columns != columns for rows in copied):
        return False
    text = b"".join(rows.copy for rows in copied)
    deleted = b"%d\t" % DELETED_GROUP
    deletes = b""
    if any(rows.deletes for rows in copied):
        # A raw newline only ends a row (one in a value is written escaped).
        lines = text.split(b"\n")
        deletes = b"".join(line + b"\n" for line in lines if line.startswith(deleted))
        text = b"".join(line + b"\n" for line in lines if line and not line.startswith(deleted))

    def attempt() -> str | None:
        if text:
            warned = _load(conn, target, columns, text, group="@headwater_group", replace=True)
            if warned is not None:
                return warned
        if deletes:  # load_copied raises LoadRefused on a warning
            count = deletes.count(b"\n")
            load_copied(conn, target, schema, [CopyRows(columns, deletes, 0, count, False)])
        return None

    return _in_savepoint(conn, attempt)


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
    conn: Connection,
    table: sa.Table,
    columns: tuple[str, ...],
    text: bytes,
    group: str = "",
    replace: bool = False,
) -> str | None:
    """LOAD DATA `text` into `table` (REPLACE-ing rows of the same key with `replace`); the
    first warning or note it raised, if any."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join([group or quote(_GROUP), *(quote(c) for c in columns)])
    into = f"{_name(conn, table)} CHARACTER SET utf8mb4 ({names})".replace("%", "%%")
    how = "REPLACE INTO TABLE " if replace else "INTO TABLE "
    statement = "LOAD DATA LOCAL INFILE %s " + how + into  # the path is bound
    fd, path = tempfile.mkstemp(prefix="headwater-load-", suffix=".tsv")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text)
        with allowed(path):  # the one file this statement may send (local_infile.py)
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
