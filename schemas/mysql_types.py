"""MySQL and MariaDB types: which Avro type carries each, and how a value read by PyMySQL in
the snapshot or decoded from the binlog by pymysqlreplication becomes the Python value
fastavro writes.

The two readers disagree on several types (BIT is bytes in one and a string of 0/1 in the
other, SET a comma-joined string or a Python set, a zero date a string or None), so both go
through `to_avro_value` and a row read in the full load equals the same row seen in the log.
Zero dates (`0000-00-00`, `2024-00-10`) become null, as Debezium does: no target accepts them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from schemas.tables import Column

AvroType = str | dict[str, Any]

JSON_TYPE: dict[str, Any] = {"type": "string", "connect.name": "io.debezium.data.Json"}

_UNSIGNED_BIGINT: dict[str, Any] = {
    "type": "bytes",
    "logicalType": "decimal",
    "precision": 20,
    "scale": 0,
}

_SIMPLE: dict[str, AvroType] = {
    "tinyint": "int",
    "smallint": "int",
    "mediumint": "int",
    "int": "int",
    "integer": "int",
    "bigint": "long",
    "year": "int",
    "float": "float",
    "double": "double",
    "bit": "bytes",
    "char": "string",
    "varchar": "string",
    "tinytext": "string",
    "text": "string",
    "mediumtext": "string",
    "longtext": "string",
    "enum": "string",
    "set": "string",
    "json": JSON_TYPE,
    "binary": "bytes",
    "varbinary": "bytes",
    "tinyblob": "bytes",
    "blob": "bytes",
    "mediumblob": "bytes",
    "longblob": "bytes",
    "date": {"type": "int", "logicalType": "date"},
    "datetime": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamp": {"type": "long", "logicalType": "timestamp-micros"},
    "time": {"type": "long", "logicalType": "time-micros"},
}

# Types without a mapping of their own (geometry...) travel as text; bytes as hex.
TEXT_FALLBACK: AvroType = "string"

_MEMBERS = re.compile(r"'((?:[^']|'')*)'")


def is_unsigned(col: Column) -> bool:
    return "unsigned" in col.sql_type.lower()


def mysql_avro_type(col: Column) -> AvroType:
    """The Avro type (without the null branch) that carries values of `col`."""
    name = col.type_name.lower()
    if name == "decimal":
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": col.precision or 10,
            "scale": col.scale or 0,
        }
    if name == "bigint" and is_unsigned(col):
        return _UNSIGNED_BIGINT  # up to 2**64-1, beyond Avro's signed long
    if name in ("int", "integer") and is_unsigned(col):
        return "long"
    return _SIMPLE.get(name, TEXT_FALLBACK)


def is_mapped(type_name: str) -> bool:
    """Whether `type_name` has a mapping of its own (else it travels as text)."""
    return type_name.lower() in _SIMPLE or type_name.lower() == "decimal"


def set_members(sql_type: str) -> list[str]:
    """The members of `set('a','b')` / `enum(...)` in declaration order."""
    return [m.replace("''", "'") for m in _MEMBERS.findall(sql_type)]


def _bit(value: Any, col: Column) -> bytes:
    # The snapshot gives big-endian bytes; the binlog a string of '0'/'1'.
    if isinstance(value, str):
        width = max(1, (len(value) + 7) // 8)
        return int(value or "0", 2).to_bytes(width, "big")
    return bytes(value)


def _set(value: Any, col: Column) -> str:
    if isinstance(value, str):
        return value
    order = {m: i for i, m in enumerate(set_members(col.sql_type))}
    return ",".join(sorted(value, key=lambda m: (order.get(m, len(order)), m)))


def _json(value: Any, col: Column) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    # MySQL 8 binlog JSON arrives decoded, with bytes for keys and strings.
    return json.dumps(_plain(value), separators=(", ", ": "))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _zero_date_is_null(value: Any) -> bool:
    # PyMySQL returns dates it cannot build (zero dates, zero month/day) as strings;
    # pymysqlreplication returns None for them.
    return isinstance(value, str | bytes)


def _date(value: Any, col: Column) -> date | None:
    if _zero_date_is_null(value):
        return None
    return value.date() if isinstance(value, datetime) else value


def _datetime(value: Any, col: Column) -> datetime | None:
    if type(value) is datetime and value.tzinfo is None:
        return value  # the common case, without building a new datetime
    if _zero_date_is_null(value):
        return None
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def _timestamp(value: Any, col: Column) -> datetime | None:
    # Both readers run with UTC (session time_zone and TZ of the binlog decoder).
    if _zero_date_is_null(value) or value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _time(value: Any, col: Column) -> time | None:
    if isinstance(value, time):
        return value
    if isinstance(value, timedelta):
        if timedelta(0) <= value < timedelta(days=1):
            return (datetime.min + value).time()
        # TIME spans -838:59:59..838:59:59; a time of day cannot: documented as null.
        return None
    return None if _zero_date_is_null(value) else value


def _unsigned_bigint(value: Any, col: Column) -> Decimal:
    return Decimal(int(value))


def _text(value: Any, col: Column) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _binary(value: Any, col: Column) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


_CONVERT = {
    "bit": _bit,
    "set": _set,
    "enum": _text,
    "json": _json,
    "date": _date,
    "datetime": _datetime,
    "timestamp": _timestamp,
    "time": _time,
    "float": lambda v, c: float(v),
    "double": lambda v, c: float(v),
    "char": _text,
    "varchar": _text,
    "tinytext": _text,
    "text": _text,
    "mediumtext": _text,
    "longtext": _text,
    "binary": _binary,
    "varbinary": _binary,
    "tinyblob": _binary,
    "blob": _binary,
    "mediumblob": _binary,
    "longblob": _binary,
}

_INTEGERS = ("tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year")


Converter = Callable[[Any], Any]


def _fallback(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


_NO_COLUMN = Column("", "", "")


def _text_value(value: Any) -> str:
    # PyMySQL and pymysqlreplication give str for every character set we read in utf8mb4.
    return value if type(value) is str else _text(value, _NO_COLUMN)


def _decimal_converter(col: Column) -> Converter:
    quantum = Decimal(1).scaleb(-(col.scale or 0))
    return lambda value: Decimal(value).quantize(quantum)


@lru_cache(maxsize=4096)
def value_converter(col: Column) -> Converter:
    """The function that turns a non-null value of `col` into its Avro value, chosen once
    per column (a full load calls it for every value, so the choice is not made per value)."""
    name = col.type_name.lower()
    if name in _INTEGERS:
        if name == "bigint" and is_unsigned(col):
            return lambda value: _unsigned_bigint(value, col)
        return int
    if name == "decimal":
        return _decimal_converter(col)
    if _CONVERT.get(name) is _text:
        return _text_value
    convert = _CONVERT.get(name)
    if convert is not None:
        return lambda value: convert(value, col)
    return _fallback


def to_avro_value(col: Column, value: Any) -> Any:
    """Turn a snapshot or binlog value of `col` into the value its Avro type expects."""
    return None if value is None else value_converter(col)(value)
