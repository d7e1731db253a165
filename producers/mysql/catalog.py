"""What a MySQL/MariaDB source's catalog and settings say: the binlog settings CDC needs,
the privileges of the task's user, the tables a task selects, their columns and keys."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

from headwater.config import TableSelection
from producers.errors import SourceError
from producers.mysql.connection import Connection
from producers.mysql.flavor import Flavor
from schemas.tables import Column, TableId, TableSchema

_SYSTEM_DBS = ("mysql", "information_schema", "performance_schema", "sys")

_TABLES_SQL = """
SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN %s
ORDER BY 1, 2
"""

_COLUMNS_SQL = """
SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE,
       COLUMN_KEY
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s
ORDER BY ORDINAL_POSITION
"""

_PK_SQL = """
SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY'
ORDER BY ORDINAL_POSITION
"""

# MariaDB's JSON is LONGTEXT with a CHECK (json_valid(`col`)) constraint.
_JSON_CHECKS_SQL = """
SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s
"""
_JSON_VALID = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)

_REQUIRED_SETTINGS = (
    ("binlog_format", "ROW", "binlog_format = ROW"),
    ("binlog_row_image", "FULL", "binlog_row_image = FULL"),
    ("binlog_row_metadata", "FULL", "binlog_row_metadata = FULL"),
)


def _rows(conn: Connection, query: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, args)
        return list(cur.fetchall())


def cdc_settings_problem(variables: dict[str, str]) -> str | None:
    """What is wrong with these server variables for binlog CDC, as one line naming the fix;
    None when nothing is."""
    if variables.get("log_bin", "OFF").upper() != "ON":
        return (
            "source binary log is off: start the server with log_bin (log-bin = mysql-bin "
            "in my.cnf) and restart it"
        )
    if "binlog_row_metadata" not in variables:
        return (
            "source has no binlog_row_metadata (MariaDB before 10.5, MySQL before 8.0.1), so "
            "its binlog does not name columns: upgrade the server to MariaDB 10.5+ or MySQL 8"
        )
    for name, wanted, fix in _REQUIRED_SETTINGS:
        value = variables.get(name, "(missing)")
        if value.upper() != wanted:
            return (
                f"source {name} is {value!r}, binlog CDC needs {wanted!r}: "
                f"SET GLOBAL {name} = '{wanted}' and put `{fix}` in my.cnf"
            )
    return None


def check_cdc_settings(conn: Connection) -> None:
    """Raise SourceError unless the server writes a binlog a row-based reader can use."""
    rows = _rows(
        conn,
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
        "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')",
    )
    problem = cdc_settings_problem({str(k).lower(): str(v) for k, v in rows})
    if problem:
        raise SourceError(problem)


def _grants(conn: Connection) -> str:
    return " ".join(str(r[0]) for r in _rows(conn, "SHOW GRANTS")).upper()


def check_privileges(conn: Connection, flavor: Flavor, cdc: bool) -> None:
    """Raise SourceError naming the GRANT the task's user lacks."""
    grants = _grants(conn)
    if "ALL PRIVILEGES ON *.*" in grants:
        return
    needed = ["SELECT", *flavor.cdc_privileges()] if cdc else ["SELECT"]
    global_grants = " ".join(line for line in grants.split("GRANT ") if " ON *.* TO " in line)
    missing = [
        p
        for p in needed
        if not flavor.has_privilege(p, global_grants) and not _select_elsewhere(p, grants)
    ]
    if missing:
        user = _rows(conn, "SELECT CURRENT_USER()")[0][0]
        raise SourceError(
            f"source user {user} lacks {', '.join(missing)}: "
            f"GRANT {', '.join(missing)} ON *.* TO {_quoted_user(str(user))}"
        )


def _select_elsewhere(privilege: str, grants: str) -> bool:
    # SELECT granted on the task's databases is enough; the others need *.*.
    return privilege == "SELECT" and "SELECT" in grants


def _quoted_user(user: str) -> str:
    name, _, host = user.partition("@")
    return f"'{name}'@'{host or '%'}'"


def default_server_id(task_name: str) -> int:
    """A replica server id derived from the task name, stable across restarts."""
    return 1_000_000 + zlib.crc32(task_name.encode()) % 3_000_000_000


def check_server_id(conn: Connection, server_id: int) -> None:
    """Raise SourceError when `server_id` is the source's own (the server would refuse it)."""
    own = int(_rows(conn, "SELECT @@server_id")[0][0])
    if own == server_id:
        raise SourceError(
            f"source.server_id {server_id} is the source server's own server_id: "
            "set source.server_id to a number no other server or replica uses"
        )


def selected_tables(conn: Connection, selection: TableSelection) -> list[TableId]:
    """The source tables (`database.table`) the task's include/exclude patterns select."""
    tables = [TableId(str(s), str(n)) for s, n in _rows(conn, _TABLES_SQL, (_SYSTEM_DBS,))]
    return [t for t in tables if selection.selects(t)]


def selected_databases(selection: TableSelection) -> list[str] | None:
    """The databases the include patterns can match (the binlog reader skips the rows of
    the others before decoding them); None when a pattern's database part is a wildcard."""
    databases = {p.split(".", 1)[0] for p in selection.include}
    if any(any(c in d for c in "*?[") for d in databases):
        return None
    return sorted(databases)


def primary_key(conn: Connection, table: TableId) -> tuple[str, ...]:
    return tuple(str(r[0]) for r in _rows(conn, _PK_SQL, (table.schema, table.name)))


def require_primary_keys(conn: Connection, tables: Sequence[TableId]) -> None:
    """Raise SourceError naming every selected table that has no primary key."""
    missing = [str(t) for t in tables if not primary_key(conn, t)]
    if missing:
        raise SourceError(
            f"table(s) without a primary key: {', '.join(missing)}; add a primary key "
            "or exclude them in `tables.exclude`"
        )


def _json_columns(conn: Connection, table: TableId) -> set[str]:
    try:
        checks = _rows(conn, _JSON_CHECKS_SQL, (table.schema, table.name))
    except Exception:  # MySQL before 8.0.16 has no CHECK_CONSTRAINTS; its JSON is typed
        return set()
    return {m.replace("``", "`") for (clause,) in checks for m in _JSON_VALID.findall(clause)}


def describe_table(conn: Connection, table: TableId) -> TableSchema:
    """The table's columns and primary key as the catalog has them now."""
    json_columns = _json_columns(conn, table)
    columns = []
    for name, data_type, column_type, nullable, precision, scale, _key in _rows(
        conn, _COLUMNS_SQL, (table.schema, table.name)
    ):
        type_name = "json" if name in json_columns else str(data_type).lower()
        is_decimal = type_name == "decimal"
        columns.append(
            Column(
                name=str(name),
                type_name=type_name,
                sql_type=str(column_type),
                nullable=nullable == "YES",
                precision=int(precision) if is_decimal and precision is not None else None,
                scale=int(scale) if is_decimal and scale is not None else None,
            )
        )
    return TableSchema(table, tuple(columns), primary_key(conn, table), engine="mysql")


def estimated_rows(conn: Connection, table: TableId) -> int:
    rows = _rows(
        conn,
        "SELECT TABLE_ROWS FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (table.schema, table.name),
    )
    return int(rows[0][0] or 0) if rows else 0
