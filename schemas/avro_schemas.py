"""Per-table Avro schemas: the key record, the row record and the Debezium-style envelope
around it. Each field carries the source column's declared type and nullability as extra
attributes (`headwater.sql_type`, `headwater.nullable`), so a sink can create a faithful
target table from the schema alone, and ordinary Avro readers ignore them."""

from __future__ import annotations

import functools
import re
from typing import Any

from schemas.mysql_types import mysql_avro_type
from schemas.pg_types import avro_type_for
from schemas.tables import Column, TableId, TableSchema

_AVRO_NAME = re.compile(r"[^A-Za-z0-9_]")

SOURCE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Source",
    "namespace": "io.headwater.connector",
    "fields": [
        {"name": "version", "type": "string"},
        {"name": "connector", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {"name": "snapshot", "type": ["null", "string"], "default": None},
        {"name": "db", "type": "string"},
        {"name": "schema", "type": ["null", "string"], "default": None},
        {"name": "table", "type": ["null", "string"], "default": None},
        {"name": "txId", "type": ["null", "long"], "default": None},
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "file", "type": ["null", "string"], "default": None},
        {"name": "pos", "type": ["null", "long"], "default": None},
        {"name": "gtid", "type": ["null", "string"], "default": None},
        {"name": "server_id", "type": ["null", "long"], "default": None},
        {"name": "thread", "type": ["null", "long"], "default": None},
        # A streamed change's place in the log (Debezium's `sequence`). PostgreSQL: the
        # commit LSN of its transaction, then `lsn`, then `seq` among the events one change
        # yields (a key change is a delete and an insert at one LSN). MySQL: `file`, `pos`,
        # then `seq` among the events of one rows event. Null for snapshot rows. Optional
        # with defaults, so records written before them still decode and the new schema
        # version stays compatible.
        {"name": "commit_lsn", "type": ["null", "long"], "default": None},
        {"name": "seq", "type": ["null", "long"], "default": None},
    ],
}


@functools.lru_cache(maxsize=8192)  # called per column of every event a sink decodes
def avro_name(name: str) -> str:
    """A valid Avro name for an SQL identifier (the original stays in `headwater.column`)."""
    cleaned = _AVRO_NAME.sub("_", name)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else f"_{cleaned}"


def _namespace(prefix: str, table: TableId) -> str:
    return ".".join(avro_name(p) for p in (prefix, table.schema, table.name))


def _field(col: Column, optional: bool, engine: str = "postgres") -> dict[str, Any]:
    avro_type = mysql_avro_type(col) if engine == "mysql" else avro_type_for(col)
    field: dict[str, Any] = {
        "name": avro_name(col.name),
        "type": ["null", avro_type] if optional else avro_type,
        "headwater.column": col.name,
        "headwater.sql_type": col.sql_type,
        "headwater.type_name": col.type_name,
        "headwater.nullable": col.nullable,
    }
    if optional:
        field["default"] = None
    return field


def key_schema(prefix: str, table: TableSchema) -> dict[str, Any]:
    """The message key: the primary-key columns as a record."""
    return {
        "type": "record",
        "name": "Key",
        "namespace": _namespace(prefix, table.table),
        "fields": [_field(c, optional=False, engine=table.engine) for c in table.key_columns],
    }


def value_schema(prefix: str, table: TableSchema) -> dict[str, Any]:
    """The envelope: before, after, source, op, ts_ms, and the columns a TOAST-unchanged
    update did not carry (`unavailable`, so a sink keeps the target's value)."""
    # Every row field is optional: a delete under REPLICA IDENTITY DEFAULT carries only the
    # key, and NOT NULL is kept in `headwater.nullable` for the target's DDL.
    row = {
        "type": "record",
        "name": "Value",
        "fields": [_field(c, optional=True, engine=table.engine) for c in table.columns],
        "headwater.primary_key": list(table.primary_key),
        "headwater.engine": table.engine,
    }
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": _namespace(prefix, table.table),
        "connect.name": f"{_namespace(prefix, table.table)}.Envelope",
        "fields": [
            {"name": "before", "type": ["null", row], "default": None},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "source", "type": SOURCE_SCHEMA},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": ["null", "long"], "default": None},
            {
                "name": "unavailable",
                "type": ["null", {"type": "array", "items": "string"}],
                "default": None,
            },
        ],
    }


def table_schema_from_value(value: dict[str, Any], table: TableId) -> TableSchema:
    """Recover the TableSchema a producer wrote into an envelope schema (for a sink)."""
    row = next(f for f in value["fields"] if f["name"] == "before")["type"][1]
    columns = tuple(_column_from_field(f) for f in row["fields"])
    return TableSchema(
        table=table,
        columns=columns,
        primary_key=tuple(row.get("headwater.primary_key", [])),
        engine=row.get("headwater.engine", "postgres"),
    )


def _column_from_field(field: dict[str, Any]) -> Column:
    avro_type = field["type"][1] if isinstance(field["type"], list) else field["type"]
    precision = scale = None
    if isinstance(avro_type, dict) and avro_type.get("logicalType") == "decimal":
        precision, scale = avro_type["precision"], avro_type.get("scale", 0)
    return Column(
        name=field.get("headwater.column", field["name"]),
        type_name=field.get("headwater.type_name", "text"),
        sql_type=field.get("headwater.sql_type", "text"),
        nullable=bool(field.get("headwater.nullable", True)),
        precision=precision,
        scale=scale,
    )
