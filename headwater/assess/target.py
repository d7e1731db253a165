"""The target: reachable (by opening it), writable (a probe table created and removed), and
each target table that already exists compatible with what the sink expects: the same
primary key, every column present with the mapped type."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from headwater.assess.findings import Finding, failed, one_line, passed, warned
from headwater.config import TaskConfig
from headwater.databases import Endpoint, target_where
from headwater.type_map import target_type
from schemas.tables import TableSchema

AREA = "target"

_PG_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped
"""

_MY_COLUMNS = """
SELECT COLUMN_NAME, COLUMN_TYPE, COLUMN_KEY FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :n
"""

_MY_SYNONYMS = {"integer": "int", "bool": "tinyint(1)", "boolean": "tinyint(1)", "json": "longtext"}


def _normal(type_text: str, engine: str) -> str:
    text = type_text.lower().replace(" ", "")
    if engine == "mysql":
        if text.startswith("tinyint(1)"):
            return "tinyint(1)"  # BOOL's storage
        text = re.sub(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", text)
        return _MY_SYNONYMS.get(text, text)
    return text


def writable_finding(target: Endpoint, schema: str | None) -> Finding:
    """Create, fill and drop a probe table where the task's tables go."""
    probe = (schema, f"hw_assess_probe_{uuid.uuid4().hex[:8]}")
    table = target.table(probe)
    try:
        with target.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (id integer PRIMARY KEY)"))
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (1)"))
            conn.execute(sa.text(f"DROP TABLE {table}"))
    except DBAPIError as exc:
        where = schema or "the URL's database"
        return failed(
            AREA,
            "writable",
            f"cannot create a table in {where}: {one_line(exc.orig or exc)}",
            "grant the target user CREATE, INSERT (and DROP) there, or fix target.schema",
        )
    return passed(AREA, "writable", f"created and dropped a probe table in {target.url}")


def _existing(target: Endpoint, where: tuple[str | None, str]) -> dict[str, str] | None:
    with target.engine.connect() as conn:
        if target.kind == "postgres":
            rows = conn.execute(sa.text(_PG_COLUMNS), {"t": target.table(where)}).all()
        else:
            rows = conn.execute(sa.text(_MY_COLUMNS), {"s": where[0], "n": where[1]}).all()
    return {str(r[0]): str(r[1]) for r in rows} or None


def _primary_key(target: Endpoint, where: tuple[str | None, str]) -> list[str]:
    inspector = sa.inspect(target.engine)
    return list(inspector.get_pk_constraint(where[1], schema=where[0])["constrained_columns"])


def table_findings(target: Endpoint, task: TaskConfig, schema: TableSchema) -> list[Finding]:
    where = target_where(task, schema.table)
    subject = f"{'.'.join(p for p in where if p)} in the target"
    existing = _existing(target, where)
    if existing is None:
        if task.target.create_tables:
            return [passed(AREA, subject, "absent: the sink will create it")]
        return [
            failed(AREA, subject, "absent and target.create_tables is false", "create it first")
        ]
    found = []
    if _primary_key(target, where) != list(schema.primary_key):
        found.append(
            failed(
                AREA,
                subject,
                f"primary key differs from the source's ({', '.join(schema.primary_key)})",
                "recreate the target table with the source's key",
            )
        )
    missing = [c.name for c in schema.columns if c.name not in existing]
    if missing:
        found.append(
            warned(AREA, subject, f"lacks {', '.join(missing)}: the sink adds them, nullable")
        )
    differing = []
    for col in schema.columns:
        if col.name not in existing:
            continue
        wanted = target_type(col, schema.engine, target.kind, col.name in schema.primary_key)
        if _normal(wanted, target.kind) != _normal(existing[col.name], target.kind):
            differing.append(f"{col.name} is {existing[col.name]}, mapped type {wanted}")
    if differing:
        found.append(warned(AREA, subject, "; ".join(differing), "check that values fit"))
    return found or [passed(AREA, subject, "exists and matches the mapped schema")]


def assess_target(
    target: Endpoint, task: TaskConfig, schemas: Sequence[TableSchema]
) -> list[Finding]:
    schema = target_where(task, schemas[0].table)[0] if schemas else None
    if target.kind == "postgres" and schema is not None:
        with target.engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
            ).first()
        schema = schema if exists else None  # the sink creates it; probe in the default
    found = [passed(AREA, "reachable", target.url), writable_finding(target, schema)]
    for table_schema in schemas:
        found.extend(table_findings(target, task, table_schema))
    return found
