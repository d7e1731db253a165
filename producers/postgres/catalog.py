"""What the source's catalog says: server settings CDC needs, the tables a task selects,
their columns and keys, and the publication that streams them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from headwater.config import TableSelection, TaskConfig
from producers.errors import SourceError
from producers.postgres.pgoutput import Relation
from schemas.tables import Column, TableId, TableSchema

Conn = psycopg.Connection[Any]

_TYPE_SQL = """
SELECT t.typname, t.typtype, bt.typname, format_type(%(oid)s, %(mod)s)
FROM pg_type t LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
WHERE t.oid = %(oid)s
"""

_COLUMNS_SQL = """
SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_PK_SQL = """
SELECT a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY k.ord
"""

_REPLICA_INDEX_SQL = """
SELECT c.relreplident,
       (SELECT array_agg(a.attname ORDER BY k.ord)
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c
WHERE c.oid = %s::regclass
"""

_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""


def check_cdc_settings(conn: Conn) -> None:
    """Raise SourceError unless the server can stream logical changes."""
    row = conn.execute("SHOW wal_level").fetchone()
    level = row[0] if row else "unknown"
    if level != "logical":
        raise SourceError(
            f"source wal_level is {level!r}, logical replication needs 'logical': "
            "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) "
            "and restart PostgreSQL"
        )


def check_replication_role(conn: Conn) -> None:
    """Raise SourceError unless the connected user may open replication connections."""
    row = conn.execute(
        "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is not None and not row[1]:
        raise SourceError(
            f"source user {row[0]} lacks the REPLICATION attribute: run "
            f"`ALTER ROLE {row[0]} WITH REPLICATION` as a superuser"
        )


def check_slot_capacity(conn: Conn, slot: str) -> None:
    """Raise SourceError when the task needs a new slot and none is free."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE slot_name = %s),
                  count(*),
                  current_setting('max_replication_slots')::int
           FROM pg_replication_slots""",
        (slot,),
    ).fetchone()
    assert row is not None
    mine, used, limit = row
    if not mine and used >= limit:
        raise SourceError(
            f"all {limit} replication slots of the source are in use: drop unused ones "
            "(SELECT pg_drop_replication_slot(name) FROM pg_replication_slots WHERE NOT active) "
            "or raise max_replication_slots and restart PostgreSQL"
        )


def check_publication_owner(conn: Conn, publication: str, tables: Sequence[TableId]) -> None:
    """Raise SourceError when an existing publication lacks tables and we cannot add them."""
    row = conn.execute(
        """SELECT pg_get_userbyid(p.pubowner), p.pubowner = r.oid OR r.rolsuper
           FROM pg_publication p, pg_roles r
           WHERE p.pubname = %s AND r.rolname = current_user""",
        (publication,),
    ).fetchone()
    if row is None or row[1]:
        return
    present = published_tables(conn, publication)
    missing = [str(t) for t in tables if t not in present]
    if missing:
        raise SourceError(
            f"publication {publication} is owned by {row[0]} and lacks {', '.join(missing)}: "
            f"ask {row[0]} to ALTER PUBLICATION {publication} ADD TABLE them, or set "
            "source.publication to a publication of your own"
        )


def check_source_ready(conn: Conn, task: TaskConfig) -> list[TableId]:
    """Every check a task's source must pass before anything is created; the selected
    tables."""
    streams = task.mode != "full-load"
    if streams:
        check_cdc_settings(conn)
        check_replication_role(conn)
        check_slot_capacity(conn, task.slot_name)
    tables = selected_tables(conn, task.tables)
    if not tables:
        raise SourceError(
            f"no source table matches tables.include {task.tables.include}; "
            "check the patterns (schema.table, with * wildcards)"
        )
    require_row_identity(conn, tables)
    if streams:
        check_publication_owner(conn, task.publication, tables)
    return tables


def selected_tables(conn: Conn, selection: TableSelection) -> list[TableId]:
    """The source tables the task's include/exclude patterns select."""
    tables = [TableId(s, n) for s, n in conn.execute(_TABLES_SQL).fetchall()]
    return [t for t in tables if selection.selects(t)]


def _qualified(table: TableId) -> str:
    return sql.Identifier(table.schema, table.name).as_string(None)


def primary_key(conn: Conn, table: TableId) -> tuple[str, ...]:
    return tuple(r[0] for r in conn.execute(_PK_SQL, (_qualified(table),)).fetchall())


def table_key(conn: Conn, table: TableId) -> tuple[str, ...] | None:
    """The columns that identify a row in the log: the primary key; else the unique index
    of REPLICA IDENTITY USING INDEX; else () for REPLICA IDENTITY FULL (a keyless table,
    see docs/keyless-tables.md); None when the log cannot identify rows at all."""
    row = conn.execute(_REPLICA_INDEX_SQL, (_qualified(table),)).fetchone()
    identity, index_columns = (row[0], row[1]) if row else ("d", None)
    if identity == "n":
        return None  # REPLICA IDENTITY NOTHING: updates and deletes carry no old row
    if identity == "i" and index_columns:
        # The old row of an update or delete carries these columns, whatever the primary key.
        return tuple(index_columns)
    key = primary_key(conn, table)
    if key:
        return key
    return () if identity == "f" else None


class TypeResolver:
    """Turns (type oid, typmod) into a Column's type name and declared type, cached."""

    def __init__(self, conn: Conn, decimals_as_text: bool = False) -> None:
        self._conn = conn
        self._cache: dict[tuple[int, int], tuple[str, str]] = {}
        self.decimals_as_text = decimals_as_text

    def resolve(self, oid: int, typmod: int) -> tuple[str, str]:
        key = (oid, typmod)
        if key not in self._cache:
            row = self._conn.execute(_TYPE_SQL, {"oid": oid, "mod": typmod}).fetchone()
            if row is None:
                raise SourceError(f"type oid {oid} is not in pg_type")
            typname, typtype, base, declared = row
            if typtype == "d" and base:  # a domain travels as its base type
                typname = base
            if typtype == "e":  # an enum's values are labels; the target gets text
                typname, declared = "text", "text"
            self._cache[key] = (typname, declared)
        return self._cache[key]

    def column(self, name: str, oid: int, typmod: int, nullable: bool) -> Column:
        type_name, declared = self.resolve(oid, typmod)
        precision = scale = None
        if type_name == "numeric" and typmod >= 4 and not self.decimals_as_text:
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        return Column(name, type_name, declared, nullable, precision, scale)


def describe_table(conn: Conn, table: TableId, types: TypeResolver) -> TableSchema:
    """The table's columns and key (see `table_key`) as the catalog has them now."""
    rows = conn.execute(_COLUMNS_SQL, (_qualified(table),)).fetchall()
    columns = tuple(types.column(name, oid, mod, not notnull) for name, oid, mod, notnull in rows)
    return TableSchema(table, columns, table_key(conn, table) or ())


def schema_from_relation(conn: Conn, rel: Relation, types: TypeResolver) -> TableSchema:
    """The table's shape as of a Relation message (which is authoritative for the events
    after it, even if the catalog has changed again since)."""
    table = TableId(rel.namespace, rel.name)
    # Looked up by OID, not by name: the table may have been renamed since the message's
    # point in the log. An OID dropped since matches nothing (keyless, all nullable).
    by_oid = str(rel.oid)
    notnull = _not_null_columns(conn, by_oid)
    columns = tuple(
        types.column(c.name, c.type_oid, c.type_modifier, c.name not in notnull)
        for c in rel.columns
    )
    key = tuple(c.name for c in rel.columns if c.is_key)
    if rel.replica_identity == "f":
        # Under FULL every column is flagged as part of the identity; the key is still the
        # primary key, or none (a keyless table).
        names = {c.name for c in rel.columns}
        key = tuple(r[0] for r in conn.execute(_PK_SQL, (by_oid,)).fetchall() if r[0] in names)
    return TableSchema(table, columns, key)


def _not_null_columns(conn: Conn, relation: str) -> set[str]:
    rows = conn.execute(_COLUMNS_SQL, (relation,)).fetchall()
    return {name for name, _oid, _mod, notnull in rows if notnull}


def published_tables(conn: Conn, publication: str) -> set[TableId]:
    """The tables a publication streams, and those it lists: pg_publication_tables shows
    the partitions of a partitioned table it lists, not the table itself."""
    rows = conn.execute(
        """SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %(p)s
           UNION
           SELECT n.nspname, c.relname FROM pg_publication_rel pr
           JOIN pg_publication p ON p.oid = pr.prpubid
           JOIN pg_class c ON c.oid = pr.prrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE p.pubname = %(p)s""",
        {"p": publication},
    ).fetchall()
    return {TableId(s, n) for s, n in rows}


def add_to_publication(conn: Conn, publication: str, table: TableId) -> None:
    """Have a table-list publication stream `table` (it holds it by OID from then on)."""
    conn.execute(
        sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(publication), sql.Identifier(table.schema, table.name)
        )
    )


def require_row_identity(conn: Conn, tables: Sequence[TableId]) -> None:
    """Raise SourceError naming every selected table whose rows cannot be identified in the
    log: no primary key and a replica identity that is neither FULL nor a unique index."""
    missing = [str(t) for t in tables if table_key(conn, t) is None]
    if missing:
        raise SourceError(
            f"table(s) without a primary key: {', '.join(missing)} (and without REPLICA "
            "IDENTITY FULL); add a primary key, or run `ALTER TABLE <table> REPLICA IDENTITY "
            "FULL` on each, or exclude them in `tables.exclude`"
        )


def ensure_publication(conn: Conn, name: str, tables: Sequence[TableId]) -> None:
    """Create the task's publication, or add tables it lacks; never drops anything."""
    row = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (name,)
    ).fetchone()
    if row is None:
        targets = sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables)
        # Via the root: a partitioned table's changes come under its own OID and name (the
        # name the task selects), not under its partitions'.
        conn.execute(
            sql.SQL(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)"
            ).format(sql.Identifier(name), targets)
        )
        return
    if row[0]:
        return  # FOR ALL TABLES: nothing to add (and ADD TABLE would fail)
    present = published_tables(conn, name)
    for table in tables:
        if table not in present:
            add_to_publication(conn, name, table)


def estimated_rows(conn: Conn, table: TableId) -> int:
    """The planner's row estimate (pg_class.reltuples), 0 when never analysed."""
    row = conn.execute(
        # to_regclass: a table renamed since (the stream is behind the catalog) has none.
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
        (_qualified(table),),
    ).fetchone()
    return int(row[0]) if row else 0
