"""The inventory of a PostgreSQL source table from pg_catalog: column defaults, identity,
generated columns, enum labels, indexes (with partial and expression ones marked), check
constraints, foreign keys and triggers; and the views and routines of its schemas."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from headwater.inventory.foreign_keys import foreign_keys, pg_regclass
from headwater.inventory.model import Check, ColumnExtras, Index, SchemaObjects, TableInventory
from schemas.tables import TableSchema

_COLUMNS_SQL = """
SELECT a.attname, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN t.typtype = 'e' THEN
         ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
       END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped
"""

_INDEXES_SQL = """
SELECT c.relname, i.indisunique, con.conname IS NOT NULL, am.amname,
       pg_get_expr(i.indpred, i.indrelid), i.indexprs IS NOT NULL,
       ARRAY(SELECT a.attname FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
       pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype = 'u'
WHERE i.indrelid = to_regclass(:t) AND NOT i.indisprimary
ORDER BY c.relname
"""

_CHECKS_SQL = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = to_regclass(:t) AND contype = 'c' ORDER BY conname
"""

_TRIGGERS_SQL = """
SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:t) AND NOT tgisinternal ORDER BY 1
"""

_VIEWS_SQL = """
SELECT n.nspname || '.' || c.relname || CASE c.relkind WHEN 'm' THEN ' (materialized)' ELSE '' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname = ANY(:schemas) ORDER BY 1
"""

_ROUTINES_SQL = """
SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
       || CASE p.prokind WHEN 'p' THEN ' procedure' ELSE ' function' END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(:schemas)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1
"""


def _extras(conn: Connection, table: str) -> dict[str, ColumnExtras]:
    extras = {}
    for name, default, identity, generated, labels in conn.execute(
        sa.text(_COLUMNS_SQL), {"t": table}
    ).all():
        serial = bool(default and str(default).startswith("nextval("))
        extras[str(name)] = ColumnExtras(
            default=None if serial or generated else default,
            auto_increment=serial or identity in ("a", "d"),
            generated=default if generated else None,
            enum_labels=tuple(labels or ()),
        )
    return extras


def _indexes(conn: Connection, table: str) -> list[Index]:
    found = []
    for name, unique, constraint, method, predicate, has_exprs, columns, definition in conn.execute(
        sa.text(_INDEXES_SQL), {"t": table}
    ).all():
        found.append(
            Index(
                str(name),
                () if has_exprs else tuple(columns),
                bool(unique),
                bool(constraint),
                str(method),
                predicate,
                str(definition),
            )
        )
    return found


def table_inventory(conn: Connection, schema: TableSchema) -> TableInventory:
    table = pg_regclass(conn, schema.table)
    return TableInventory(
        schema,
        _extras(conn, table),
        _indexes(conn, table),
        [
            Check(str(n), str(d).removeprefix("CHECK ").strip())
            for n, d in conn.execute(sa.text(_CHECKS_SQL), {"t": table}).all()
        ],
        foreign_keys(conn, "postgres", schema.table),
        [str(r[0]) for r in conn.execute(sa.text(_TRIGGERS_SQL), {"t": table}).all()],
    )


def schema_objects(conn: Connection, schemas: Sequence[str]) -> SchemaObjects:
    names = {"schemas": list(schemas)}
    return SchemaObjects(
        [str(r[0]) for r in conn.execute(sa.text(_VIEWS_SQL), names).all()],
        [str(r[0]) for r in conn.execute(sa.text(_ROUTINES_SQL), names).all()],
    )
