"""The source's catalog by OID, which a table keeps across renames: the OIDs of the
selected tables, the names they have now, a Relation message as the catalog describes a
table now, and the selected tables a publication does not stream yet."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from headwater.config import TableSelection
from producers.postgres.catalog import Conn, published_tables
from producers.postgres.pgoutput import Relation, RelationColumn
from schemas.tables import TableId

_TABLE_OIDS_SQL = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 2, 3
"""

# Every column with whether it belongs to the replica identity (what pgoutput flags as key):
# all under FULL, none under NOTHING, else the replica index's or the primary key's.
_RELATION_SQL = """
SELECT c.relreplident, a.attname, a.atttypid, a.atttypmod,
       CASE c.relreplident WHEN 'f' THEN true WHEN 'n' THEN false
       ELSE EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey)
                      AND CASE c.relreplident WHEN 'i' THEN i.indisreplident
                          ELSE i.indisprimary END)
       END
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.oid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _qualified(table: TableId) -> str:
    return sql.Identifier(table.schema, table.name).as_string(None)


def table_oids(conn: Conn, tables: Sequence[TableId]) -> dict[int, TableId]:
    """The OIDs of `tables` (those that exist), the key a stream follows a table by."""
    found: dict[int, TableId] = {}
    for table in tables:
        row = conn.execute("SELECT to_regclass(%s)::oid", (_qualified(table),)).fetchone()
        if row is not None and row[0] is not None:
            found[int(row[0])] = table
    return found


def table_names(conn: Conn, oids: Sequence[int]) -> dict[int, TableId]:
    """The names the tables with `oids` have now (those that still exist)."""
    rows = conn.execute(
        """SELECT c.oid, n.nspname, c.relname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s)""",
        (list(oids),),
    ).fetchall()
    return {int(oid): TableId(s, n) for oid, s, n in rows}


def current_name(conn: Conn, oid: int) -> TableId | None:
    """The name the table with `oid` has in the latest catalog, even inside a transaction
    on an older snapshot (where pg_class itself still shows the snapshot's names, but a
    query must name the table as it is now); None when it no longer exists."""
    row = conn.execute(
        "SELECT schema, name FROM pg_identify_object('pg_class'::regclass, %s, 0)", (oid,)
    ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        return None
    return TableId(str(row[0]), str(row[1]))


def table_name(conn: Conn, oid: int) -> TableId | None:
    """The name the table with `oid` has now; None when it no longer exists."""
    return table_names(conn, [oid]).get(oid)


def relation_now(conn: Conn, oid: int, table: TableId) -> Relation | None:
    """A Relation message for the table with `oid` as the catalog has it now, under the
    name `table`: what pgoutput would send before the table's next change. None when the
    table no longer exists."""
    rows = conn.execute(_RELATION_SQL, (oid,)).fetchall()
    if not rows:
        return None
    columns = tuple(RelationColumn(name, t, mod, bool(key)) for _i, name, t, mod, key in rows)
    return Relation(oid, table.schema, table.name, str(rows[0][0]), columns)


def is_partition(conn: Conn, table: TableId) -> bool:
    """Whether `table` is a partition of a partitioned table (false when it is gone)."""
    row = conn.execute(
        "SELECT relispartition FROM pg_class WHERE oid = to_regclass(%s)", (_qualified(table),)
    ).fetchone()
    return bool(row and row[0])


def current_lsn(conn: Conn) -> int:
    """The source's WAL insert position now."""
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def unpublished_tables(
    conn: Conn, publication: str, selection: TableSelection
) -> list[tuple[int, TableId]]:
    """Selected tables the publication does not stream: renamed into the selection, or
    created, since the task started; with their OIDs. Always none under FOR ALL TABLES;
    a table list holds tables by OID, so a table renamed within it stays in it."""
    row = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (publication,)
    ).fetchone()
    if row is None or row[0]:
        return []
    published = published_tables(conn, publication)
    found = [(int(oid), TableId(s, n)) for oid, s, n in conn.execute(_TABLE_OIDS_SQL)]
    return [(oid, t) for oid, t in found if t not in published and selection.selects(t)]
