"""The inventory of a MySQL/MariaDB source table from information_schema: column defaults
(MariaDB quotes literal defaults, MySQL does not), AUTO_INCREMENT, generated columns, ENUM
labels, ON UPDATE clauses, indexes (prefix, FULLTEXT and SPATIAL ones marked), check
constraints (MariaDB's json_valid checks of JSON columns left out), foreign keys and
triggers; and the views and routines of its databases."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from headwater.inventory.foreign_keys import foreign_keys
from headwater.inventory.model import Check, ColumnExtras, Index, SchemaObjects, TableInventory
from schemas import mysql_types
from schemas.tables import TableSchema

_COLUMNS_SQL = """
SELECT COLUMN_NAME, COLUMN_DEFAULT, EXTRA, GENERATION_EXPRESSION, COLUMN_TYPE, DATA_TYPE,
       IS_NULLABLE
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :n
"""

_INDEXES_SQL = """
SELECT INDEX_NAME, NON_UNIQUE, INDEX_TYPE, COLUMN_NAME, SUB_PART
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :n AND INDEX_NAME <> 'PRIMARY'
ORDER BY INDEX_NAME, SEQ_IN_INDEX
"""

_CHECKS_SQL = """
SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = :s AND TABLE_NAME = :n ORDER BY CONSTRAINT_NAME
"""

_FK_INDEX_SQL = """
SELECT CONSTRAINT_NAME FROM information_schema.TABLE_CONSTRAINTS
WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :n AND CONSTRAINT_TYPE = 'UNIQUE'
"""


def _default(raw: str | None, data_type: str, nullable: str) -> str | None:
    if raw is None or (raw == "NULL" and nullable == "YES"):
        return None
    return raw


def _extras(conn: Connection, schema: TableSchema) -> dict[str, ColumnExtras]:
    extras = {}
    args = {"s": schema.table.schema, "n": schema.table.name}
    for name, default, extra, generated, column_type, data_type, nullable in conn.execute(
        sa.text(_COLUMNS_SQL), args
    ).all():
        extra_text = str(extra or "").lower()
        on_update = "on update" in extra_text
        extras[str(name)] = ColumnExtras(
            default=None if generated else _default(default, str(data_type), str(nullable)),
            auto_increment="auto_increment" in extra_text,
            generated=str(generated) if generated else None,
            enum_labels=tuple(mysql_types.set_members(str(column_type)))
            if str(data_type).lower() == "enum"
            else (),
            on_update=extra_text[extra_text.index("on update") :] if on_update else None,
        )
    return extras


def _indexes(conn: Connection, schema: TableSchema) -> list[Index]:
    args = {"s": schema.table.schema, "n": schema.table.name}
    constraints = {str(r[0]) for r in conn.execute(sa.text(_FK_INDEX_SQL), args).all()}
    grouped: dict[str, list[tuple[int, str, str | None, int | None]]] = {}
    for name, non_unique, kind, column, sub_part in conn.execute(sa.text(_INDEXES_SQL), args).all():
        grouped.setdefault(str(name), []).append((int(non_unique), str(kind), column, sub_part))
    found = []
    for name, parts in grouped.items():
        columns = tuple(str(c) for _, _, c, _ in parts if c is not None)
        expression = any(c is None for _, _, c, _ in parts)  # MySQL 8 functional index
        found.append(
            Index(
                name,
                () if expression else columns,
                parts[0][0] == 0,
                name in constraints,
                parts[0][1].lower(),
                None,
                f"{parts[0][1]} INDEX {name} ({', '.join(columns)})",
                any(p is not None for *_, p in parts),
            )
        )
    return found


def _checks(conn: Connection, schema: TableSchema) -> list[Check]:
    args = {"s": schema.table.schema, "n": schema.table.name}
    try:
        rows = conn.execute(sa.text(_CHECKS_SQL), args).all()
    except sa.exc.DBAPIError:  # MySQL before 8.0.16 has no CHECK_CONSTRAINTS
        conn.rollback()
        return []
    json_columns = {c.name for c in schema.columns if c.type_name == "json"}
    return [
        Check(str(name), str(clause))
        for name, clause in rows
        if not (str(name) in json_columns and "json_valid" in str(clause).lower())
    ]


def table_inventory(conn: Connection, schema: TableSchema) -> TableInventory:
    args = {"s": schema.table.schema, "n": schema.table.name}
    triggers = conn.execute(
        sa.text(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = :s AND EVENT_OBJECT_TABLE = :n ORDER BY 1"
        ),
        args,
    ).all()
    return TableInventory(
        schema,
        _extras(conn, schema),
        _indexes(conn, schema),
        _checks(conn, schema),
        foreign_keys(conn, "mysql", schema.table),
        [str(r[0]) for r in triggers],
    )


def schema_objects(conn: Connection, schemas: Sequence[str]) -> SchemaObjects:
    names = {"schemas": list(schemas)}
    views = conn.execute(
        sa.text(
            "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.VIEWS "
            "WHERE TABLE_SCHEMA IN :schemas ORDER BY 1"
        ).bindparams(sa.bindparam("schemas", expanding=True)),
        names,
    ).all()
    routines = conn.execute(
        sa.text(
            "SELECT CONCAT(ROUTINE_SCHEMA, '.', ROUTINE_NAME, ' ', LOWER(ROUTINE_TYPE)) "
            "FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN :schemas ORDER BY 1"
        ).bindparams(sa.bindparam("schemas", expanding=True)),
        names,
    ).all()
    return SchemaObjects([str(r[0]) for r in views], [str(r[0]) for r in routines])
