"""DMS data types (`data-type` of add-column and change-data-type) as target columns, and the
conversion of a value to the Python value the column's Avro type expects."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.tables import Column
from transforms.errors import TransformError
from transforms.rules import DataType

# DMS type name -> (PostgreSQL base type, declared type)
_DMS_TYPES: dict[str, tuple[str, str]] = {
    "int1": ("int2", "smallint"),
    "int2": ("int2", "smallint"),
    "int4": ("int4", "integer"),
    "int8": ("int8", "bigint"),
    "uint1": ("int2", "smallint"),
    "uint2": ("int4", "integer"),
    "uint4": ("int8", "bigint"),
    "uint8": ("numeric", "numeric(20,0)"),
    "real4": ("float4", "real"),
    "real8": ("float8", "double precision"),
    "boolean": ("bool", "boolean"),
    "date": ("date", "date"),
    "time": ("time", "time without time zone"),
    "datetime": ("timestamp", "timestamp without time zone"),
    "bytes": ("bytea", "bytea"),
    "blob": ("bytea", "bytea"),
    "clob": ("text", "text"),
    "nclob": ("text", "text"),
}
DMS_TYPE_NAMES = frozenset({*_DMS_TYPES, "string", "wstring", "numeric"})


def dms_column(name: str, spec: DataType, nullable: bool = True) -> Column:
    """The column a DMS `data-type` describes."""
    kind = spec.type.lower()
    if kind in ("string", "wstring"):
        if spec.length:
            return Column(name, "varchar", f"character varying({spec.length})", nullable)
        return Column(name, "text", "text", nullable)
    if kind == "numeric":
        precision, scale = spec.precision or 38, spec.scale or 0
        return Column(name, "numeric", f"numeric({precision},{scale})", nullable, precision, scale)
    if kind not in _DMS_TYPES:
        raise ValueError(f"unknown data-type {spec.type!r}; use one of {sorted(DMS_TYPE_NAMES)}")
    base, declared = _DMS_TYPES[kind]
    if base == "numeric":
        return Column(name, base, declared, nullable, 20, 0)
    return Column(name, base, declared, nullable)


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("t", "true", "1", "y", "yes")
    return bool(value)


def _to_datetime(value: Any, aware: bool) -> datetime:
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, date):
        result = datetime(value.year, value.month, value.day)
    else:
        result = datetime.fromisoformat(str(value))
    if aware and result.tzinfo is None:
        return result.replace(tzinfo=UTC)
    if not aware and result.tzinfo is not None:
        return result.astimezone(UTC).replace(tzinfo=None)
    return result


def _to_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _to_text(value: Any) -> str:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _to_numeric(value: Any, col: Column) -> Any:
    number = Decimal(str(value))
    if col.precision is None:
        return str(number)
    return number.quantize(Decimal(1).scaleb(-(col.scale or 0)))


def convert_value(value: Any, col: Column) -> Any:
    """`value` as the Python value the Avro type of `col` carries; None stays None."""
    if value is None:
        return None
    kind = col.type_name
    try:
        if kind in ("int2", "int4", "int8"):
            return int(value)
        if kind in ("float4", "float8"):
            return float(value)
        if kind == "numeric":
            return _to_numeric(value, col)
        if kind == "bool":
            return _to_bool(value)
        if kind == "date":
            return _to_date(value)
        if kind in ("timestamp", "timestamptz"):
            return _to_datetime(value, aware=kind == "timestamptz")
        if kind == "time":
            return value if isinstance(value, time) else time.fromisoformat(str(value))
        if kind == "bytea":
            return value if isinstance(value, bytes) else _to_text(value).encode()
        return _to_text(value)
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise TransformError(
            f"cannot convert {value!r} to {col.sql_type} for {col.name}: {exc}"
        ) from None
