"""Foreign keys as a source catalog declares them (PostgreSQL pg_constraint, MySQL
information_schema), for the orphan check of validation and the DDL of convert."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.tables import TableId

_PG_SQL = """
SELECT c.conname, array_agg(a.attname ORDER BY k.ord), rn.nspname, r.relname,
       array_agg(ra.attname ORDER BY k.ord), c.confdeltype, c.confupdtype
FROM pg_constraint c
JOIN pg_class r ON r.oid = c.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(col, refcol, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.col
JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.refcol
WHERE c.contype = 'f' AND c.conrelid = to_regclass(:qualified)
GROUP BY c.conname, rn.nspname, r.relname, c.confdeltype, c.confupdtype
ORDER BY c.conname
"""

_MY_SQL = """
SELECT k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, k.REFERENCED_TABLE_NAME,
       k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE
FROM information_schema.KEY_COLUMN_USAGE k
JOIN information_schema.REFERENTIAL_CONSTRAINTS r
  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
 AND r.TABLE_NAME = k.TABLE_NAME
WHERE k.TABLE_SCHEMA = :schema AND k.TABLE_NAME = :name AND k.REFERENCED_TABLE_NAME IS NOT NULL
ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION
"""

# pg_constraint.confdeltype letters to the SQL action.
_PG_ACTIONS = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: TableId
    columns: tuple[str, ...]
    parent: TableId
    parent_columns: tuple[str, ...]
    on_delete: str = "NO ACTION"
    on_update: str = "NO ACTION"


def pg_regclass(conn: Connection, table: TableId) -> str:
    """`"schema"."name"`, quoted for to_regclass."""
    quote = conn.dialect.identifier_preparer.quote_identifier
    return f"{quote(table.schema)}.{quote(table.name)}"


def foreign_keys(conn: Connection, engine: str, table: TableId) -> list[ForeignKey]:
    """The foreign keys declared on `table` in a database of `engine`."""
    if engine == "postgres":
        rows = conn.execute(sa.text(_PG_SQL), {"qualified": pg_regclass(conn, table)}).all()
        return [
            ForeignKey(
                name,
                table,
                tuple(cols),
                TableId(pschema, pname),
                tuple(pcols),
                _PG_ACTIONS.get(dele, "NO ACTION"),
                _PG_ACTIONS.get(upd, "NO ACTION"),
            )
            for name, cols, pschema, pname, pcols, dele, upd in rows
        ]
    grouped: dict[str, ForeignKey] = {}
    for name, col, pschema, pname, pcol, dele, upd in conn.execute(
        sa.text(_MY_SQL), {"schema": table.schema, "name": table.name}
    ).all():
        fk = grouped.get(name)
        if fk is None:
            grouped[name] = ForeignKey(
                name, table, (col,), TableId(pschema, pname), (pcol,), dele, upd
            )
        else:
            grouped[name] = ForeignKey(
                name,
                table,
                (*fk.columns, col),
                fk.parent,
                (*fk.parent_columns, pcol),
                dele,
                upd,
            )
    return list(grouped.values())
