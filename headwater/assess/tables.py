"""Per selected table: a primary key, its size and row estimate, and per column the source
type, the target type the sink will create and what a value loses on the way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from headwater.assess.findings import Finding, failed, passed, warned
from headwater.assess.source_pg import replica_identity
from headwater.inventory.foreign_keys import pg_regclass
from headwater.reports import Status
from headwater.type_map import loss, supported, target_type
from schemas.tables import TableSchema

AREA = "table"

_PG_SIZE = """
SELECT pg_total_relation_size(to_regclass(:t)),
       greatest((SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)), 0)::bigint
"""

_MY_SIZE = """
SELECT COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0), COALESCE(TABLE_ROWS, 0)
FROM information_schema.TABLES WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :n
"""


@dataclass(frozen=True)
class ColumnMapping:
    table: str
    column: str
    source_type: str
    target_type: str
    status: Status
    note: str


@dataclass(frozen=True)
class TableSize:
    table: str
    bytes: int
    rows_estimate: int


def table_size(conn: Connection, engine: str, schema: TableSchema) -> TableSize:
    if engine == "postgres":
        row = conn.execute(sa.text(_PG_SIZE), {"t": pg_regclass(conn, schema.table)}).one()
    else:
        row = conn.execute(
            sa.text(_MY_SIZE), {"s": schema.table.schema, "n": schema.table.name}
        ).one()
    return TableSize(str(schema.table), int(row[0] or 0), int(row[1] or 0))


def key_finding(schema: TableSchema, identity: str | None = None) -> Finding:
    """The table's key. `identity` is a PostgreSQL table's REPLICA IDENTITY (None for MySQL):
    under FULL a table without a key is migrated as a multiset, under INDEX the index keys it."""
    subject = f"{schema.table} primary key"
    if schema.primary_key:
        return passed(AREA, subject, ", ".join(schema.primary_key))
    if identity == "FULL":
        return warned(
            AREA,
            subject,
            "none, REPLICA IDENTITY FULL: migrated as a multiset of whole rows; updates and "
            "deletes match every column in the target, and a full load started over can "
            "repeat rows (docs/keyless-tables.md)",
            f"add a primary key to {schema.table} where you can",
        )
    if identity is not None:
        return failed(
            AREA,
            subject,
            "none: updates and deletes cannot be matched to target rows",
            f"add a primary key to {schema.table}, or ALTER TABLE {schema.table} "
            "REPLICA IDENTITY FULL, or add it to tables.exclude",
        )
    return failed(
        AREA,
        subject,
        "none: a MySQL/MariaDB source needs a primary key on every table",
        f"add a primary key to {schema.table} or add it to tables.exclude",
    )


def column_mappings(schema: TableSchema, target_engine: str) -> list[ColumnMapping]:
    mapped = []
    for col in schema.columns:
        in_key = col.name in schema.primary_key
        note = loss(col, schema.engine, target_engine, in_key)
        status: Status = "warn" if note else "pass"
        if not supported(col, schema.engine) and schema.engine != target_engine:
            status = "warn"
        mapped.append(
            ColumnMapping(
                str(schema.table),
                col.name,
                col.sql_type,
                target_type(col, schema.engine, target_engine, in_key),
                status,
                note or "",
            )
        )
    return mapped


def assess_tables(
    conn: Connection, engine: str, target_engine: str, schemas: Sequence[TableSchema]
) -> tuple[list[Finding], list[ColumnMapping], list[TableSize]]:
    findings, mappings, sizes = [], [], []
    if not schemas:
        findings.append(
            failed(AREA, "selection", "no source table matches tables.include", "fix the patterns")
        )
    for schema in schemas:
        identity = replica_identity(conn, schema) if engine == "postgres" else None
        findings.append(key_finding(schema, identity))
        cols = column_mappings(schema, target_engine)
        mappings.extend(cols)
        lossy = [c.column for c in cols if c.status == "warn"]
        if lossy:
            findings.append(
                warned(
                    AREA,
                    f"{schema.table} column types",
                    f"{len(lossy)} column(s) change on the way: {', '.join(lossy)}",
                    "see the type mapping section; convert the target by hand if that matters",
                )
            )
        sizes.append(table_size(conn, engine, schema))
    return findings, mappings, sizes


def to_json(mappings: Sequence[ColumnMapping], sizes: Sequence[TableSize]) -> dict[str, object]:
    return {
        "columns": [asdict(m) for m in mappings],
        "sizes": [asdict(s) for s in sizes],
    }
