"""PostgreSQL types: which Avro type carries each, and how its text form (what pgoutput
sends and what `::text` yields in a snapshot) becomes the Python value fastavro writes.

Snapshot and stream both go through `parse_pg_text`, so a row read in the full load and the
same row seen in the log become byte-identical Avro.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from schemas.tables import Column

AvroType = str | dict[str, Any]

JSON_TYPE: dict[str, Any] = {"type": "string", "connect.name": "io.debezium.data.Json"}

_SIMPLE: dict[str, AvroType] = {
    "int2": "int",
    "int4": "int",
    "int8": "long",
    "float4": "float",
    "float8": "double",
    "bool": "boolean",
    "text": "string",
    "varchar": "string",
    "bpchar": "string",
    "name": "string",
    "bytea": "bytes",
    "date": {"type": "int", "logicalType": "date"},
    "time": {"type": "long", "logicalType": "time-micros"},
    "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    "uuid": {"type": "string", "logicalType": "uuid"},
    "json": JSON_TYPE,
    "jsonb": JSON_TYPE,
}

# Types we carry as their text form until they get a mapping of their own; the assessment
# lists them so nothing is dropped in silence.
TEXT_FALLBACK: AvroType = "string"


def avro_type_for(col: Column) -> AvroType:
    """The Avro type (without the null branch) that carries values of `col`."""
    if col.type_name == "numeric":
        if col.precision is None:
            return {"type": "string", "connect.name": "headwater.VariableDecimal"}
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": col.precision,
            "scale": col.scale or 0,
        }
    return _SIMPLE.get(col.type_name, TEXT_FALLBACK)


def is_mapped(type_name: str) -> bool:
    """Whether `type_name` has a mapping of its own (else it travels as text)."""
    return type_name == "numeric" or type_name in _SIMPLE


def _parse_bool(text: str) -> bool:
    # pgoutput sends boolout's 't'/'f'; the snapshot's bool::text cast gives 'true'/'false'.
    return text in ("t", "true")


def _parse_bytea(text: str) -> bytes:
    # bytea_output=hex is the default since PostgreSQL 9.0; it is what both paths see.
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


class UnrepresentableValue(ValueError):
    """A source value its Avro type cannot carry; the message names the column and the fix."""


class PgInfinity(int):
    """PostgreSQL's `infinity` or `-infinity` in a date or timestamp column. It travels as
    the extreme Avro int/long that PostgreSQL itself uses for it internally, so no real value
    is taken for it (9999-12-31 stays a date); `schemas.avro_logical` reads it back as this
    type, and a PostgreSQL sink writes it as infinity again."""

    @property
    def text(self) -> str:
        return "infinity" if self > 0 else "-infinity"


DATE_INFINITY = {"infinity": PgInfinity(2**31 - 1), "-infinity": PgInfinity(-(2**31))}
TIMESTAMP_INFINITY = {"infinity": PgInfinity(2**63 - 1), "-infinity": PgInfinity(-(2**63))}


def _parse_timestamp(text: str) -> datetime | PgInfinity:
    return TIMESTAMP_INFINITY.get(text) or datetime.fromisoformat(text)


def _parse_date(text: str) -> date | PgInfinity:
    return DATE_INFINITY.get(text) or date.fromisoformat(text)


def _parse_decimal(col: Column, text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite():
        raise UnrepresentableValue(
            f"column {col.name} ({col.sql_type}) holds {text}, which an Avro decimal cannot "
            "carry; set `source.decimal_handling: string` in the task file"
        )
    return value.quantize(Decimal(1).scaleb(-(col.scale or 0)))


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int2": int,
    "int4": int,
    "int8": int,
    "float4": float,
    "float8": float,
    "bool": _parse_bool,
    "bytea": _parse_bytea,
    "date": _parse_date,
    "time": time.fromisoformat,
    "timestamp": _parse_timestamp,
    "timestamptz": _parse_timestamp,
    "uuid": UUID,
}


def parse_pg_text(col: Column, text: str | None) -> Any:
    """Turn PostgreSQL's text output for `col` into the value its Avro type expects.

    The connection must use `DateStyle=ISO` and `TimeZone=UTC` so timestamps parse as ISO.
    """
    if text is None:
        return None
    if col.type_name == "numeric":
        return text if col.precision is None else _parse_decimal(col, text)
    parser = _PARSERS.get(col.type_name)
    if parser is None:
        return text
    try:
        return parser(text)
    except ValueError as exc:
        # Dates before year 1 or after 9999 (PostgreSQL has them; Python and most Avro
        # readers do not), and time '24:00:00'.
        raise UnrepresentableValue(
            f"column {col.name} ({col.sql_type}) holds {text!r}, outside what its Avro type "
            f"can carry ({exc}); exclude the table or change the value"
        ) from None
