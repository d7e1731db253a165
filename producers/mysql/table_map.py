"""A table's shape as a binlog TableMapEvent describes it (column names, types, keys and
nullability from the optional metadata that `binlog_row_metadata=FULL` writes).

That event is authoritative for the rows events after it, even when the table has been
altered again since; INFORMATION_SCHEMA only describes the table as it is now, so it is used
for a column's declared type only where it agrees with the event on name and base type.
"""

from __future__ import annotations

from typing import Any

from schemas.tables import Column, TableId, TableSchema

_FIXED: dict[int, str] = {
    1: "tinyint",
    2: "smallint",
    3: "int",
    4: "float",
    5: "double",
    7: "timestamp",
    8: "bigint",
    9: "mediumint",
    10: "date",
    11: "time",
    12: "datetime",
    13: "year",
    14: "date",
    16: "bit",
    17: "timestamp",
    18: "datetime",
    19: "time",
    245: "json",
    246: "decimal",
    247: "enum",
    248: "set",
    255: "geometry",
}

_BLOBS = {1: "tinyblob", 2: "blob", 3: "mediumblob", 4: "longblob"}
_TEXTS = {1: "tinytext", 2: "text", 3: "mediumtext", 4: "longtext"}

Signature = tuple[Any, ...]


def _quoted(members: list[str]) -> str:
    return ",".join("'" + m.replace("'", "''") + "'" for m in members)


def _binary(col: Any) -> bool:
    return getattr(col, "character_set_name", None) == "binary"


def _base_and_declared(col: Any) -> tuple[str, str]:
    code = int(col.type)
    unsigned = " unsigned" if getattr(col, "unsigned", False) else ""
    if code in (15, 253):
        base = "varbinary" if _binary(col) else "varchar"
        return base, f"{base}({col.max_length})"
    if code == 254:
        base = "binary" if _binary(col) else "char"
        return base, f"{base}({col.max_length})"
    if code == 252:
        base = (_BLOBS if _binary(col) else _TEXTS)[int(col.length_size)]
        return base, base
    base = _FIXED.get(code, "text")
    if base == "decimal":
        return base, f"decimal({col.precision},{col.decimals}){unsigned}"
    if base == "bit":
        return base, f"bit({col.bits})"
    if base in ("datetime", "timestamp", "time") and getattr(col, "fsp", None):
        return base, f"{base}({col.fsp})"
    if base == "enum":
        return base, f"enum({_quoted(col.enum_values[1:] if col.enum_values else [])})"
    if base == "set":
        return base, f"set({_quoted(col.set_values or [])})"
    return base, base + unsigned


def signature(event: Any) -> Signature:
    """What identifies one shape of a table in TableMapEvents (cheap, hashable): the table
    id (a new one after an ALTER) and the columns' names, types and nullability."""
    return (
        event.table_id,
        event.schema,
        event.table,
        bytes(event.null_bitmask),
        tuple((c.name, c.type) for c in event.columns),
    )


def _nullable(event: Any, index: int) -> bool:
    bitmap = bytes(event.null_bitmask)
    return bool(bitmap[index // 8] & (1 << (index % 8)))


def schema_from_table_map(event: Any, current: TableSchema | None) -> TableSchema:
    """The TableSchema of the rows after `event`; `current` (the catalog now) lends declared
    types of columns that still agree with the event."""
    table = TableId(event.schema, event.table)
    known = {c.name: c for c in current.columns} if current else {}
    columns = []
    for index, col in enumerate(event.columns):
        base, declared = _base_and_declared(col)
        nullable = _nullable(event, index)
        same = known.get(col.name)
        if same is not None and _agrees(same, base, declared):
            columns.append(same)
            continue
        precision = int(col.precision) if base == "decimal" else None
        scale = int(col.decimals) if base == "decimal" else None
        columns.append(Column(col.name, base, declared, nullable, precision, scale))
    pk_indexes = list(event.optional_metadata.simple_primary_key_list or [])
    key = tuple(event.columns[i].name for i in pk_indexes)
    if not key and current is not None:
        key = current.primary_key
    return TableSchema(table, tuple(columns), key, engine="mysql")


def _agrees(known: Column, base: str, declared: str) -> bool:
    if known.type_name == "json" and base in ("longtext", "json"):
        return True  # MariaDB JSON is LONGTEXT in the binlog
    if known.type_name != base:
        return False
    if base in ("decimal", "bit", "enum", "set", "datetime", "timestamp", "time"):
        return _normal(known.sql_type) == _normal(declared)
    return ("unsigned" in known.sql_type.lower()) == ("unsigned" in declared)


def _normal(sql_type: str) -> str:
    text = sql_type.lower().replace(" ", "")
    for suffix in ("(0)",):
        text = text.replace(suffix, "")
    return text
