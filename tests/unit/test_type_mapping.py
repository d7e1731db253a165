"""PostgreSQL text values parse to the Python values their Avro types carry, and every
mapped type survives an Avro round trip inside the envelope unchanged."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro_schemas import key_schema, table_schema_from_value, value_schema
from schemas.envelope import ChangeEvent, SourceInfo, envelope_record, event_from_record
from schemas.pg_types import avro_type_for, is_mapped, parse_pg_text
from schemas.tables import Column, TableId, TableSchema

COLUMNS = (
    Column("id", "int4", "integer", False),
    Column("big", "int8", "bigint"),
    Column("small", "int2", "smallint"),
    Column("amount", "numeric", "numeric(12,2)", True, 12, 2),
    Column("free_numeric", "numeric", "numeric"),
    Column("ratio", "float8", "double precision"),
    Column("label", "text", "text"),
    Column("code", "varchar", "character varying(20)"),
    Column("flag", "bool", "boolean"),
    Column("day", "date", "date"),
    Column("at", "timestamptz", "timestamp with time zone"),
    Column("local_at", "timestamp", "timestamp without time zone"),
    Column("clock", "time", "time without time zone"),
    Column("doc", "jsonb", "jsonb"),
    Column("token", "uuid", "uuid"),
    Column("blob", "bytea", "bytea"),
    Column("addr", "inet", "inet"),
    Column("odd name!", "text", "text"),
)
TABLE = TableSchema(TableId("public", "everything"), COLUMNS, ("id",))


def test_text_forms_parse() -> None:
    cases: dict[str, tuple[str, Any]] = {
        "amount": ("1234.5", Decimal("1234.50")),
        "free_numeric": ("3.14159265358979", "3.14159265358979"),
        "ratio": ("-Infinity", float("-inf")),
        "flag": ("f", False),
        "day": ("2024-02-29", date(2024, 2, 29)),
        "at": ("2024-01-01 10:00:00.123456+00", datetime(2024, 1, 1, 10, 0, 0, 123456, UTC)),
        "local_at": ("2024-01-01 10:00:00", datetime(2024, 1, 1, 10)),
        "clock": ("23:59:59.5", time(23, 59, 59, 500000)),
        "blob": ("\\x00ff10", b"\x00\xff\x10"),
        "addr": ("10.0.0.1/32", "10.0.0.1/32"),
        "big": ("-9223372036854775808", -(2**63)),
    }
    for name, (text, expected) in cases.items():
        assert parse_pg_text(TABLE.column(name), text) == expected, name
    assert parse_pg_text(TABLE.column("label"), None) is None
    # Both forms of a boolean: pgoutput's and the snapshot's ::text cast.
    flag = TABLE.column("flag")
    assert [parse_pg_text(flag, t) for t in ("t", "true", "f", "false")] == [1, 1, 0, 0]


def test_unmapped_types_travel_as_text() -> None:
    assert not is_mapped("inet") and avro_type_for(TABLE.column("addr")) == "string"
    assert is_mapped("numeric") and is_mapped("timestamptz")


def _round_trip(schema: dict[str, Any], record: dict[str, Any]) -> Any:
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parsed, None)


rows = st.fixed_dictionaries(
    {
        "id": st.integers(-(2**31), 2**31 - 1),
        "big": st.none() | st.integers(-(2**63), 2**63 - 1),
        "small": st.none() | st.integers(-(2**15), 2**15 - 1),
        "amount": st.none()
        | st.decimals(
            min_value=-(10**10) + 1,
            max_value=10**10 - 1,
            places=2,
            allow_nan=False,
            allow_infinity=False,
        ),
        "free_numeric": st.none() | st.decimals(allow_nan=False, allow_infinity=False).map(str),
        "ratio": st.none() | st.floats(allow_nan=False),
        "label": st.none() | st.text(),
        "code": st.none() | st.text(max_size=20),
        "flag": st.none() | st.booleans(),
        "day": st.none() | st.dates(min_value=date(1, 1, 1)),
        "at": st.none() | st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)),
        "local_at": st.none() | st.datetimes(min_value=datetime(1970, 1, 1)),
        "clock": st.none() | st.times(),
        "doc": st.none() | st.just('{"a": [1, 2]}'),
        "token": st.none() | st.uuids(),
        "blob": st.none() | st.binary(),
        "addr": st.none() | st.just("::1/128"),
        "odd name!": st.none() | st.text(),
    }
)


@settings(max_examples=200, deadline=None)
@given(rows)
def test_envelope_round_trips_every_mapped_type(row: dict[str, Any]) -> None:
    source = SourceInfo("postgresql", "demo", "src", TABLE.table, 1, "false", 9, 100)
    event = ChangeEvent("u", source, before=None, after=row, ts_ms=1)
    schema = value_schema("demo", TABLE)
    decoded = _round_trip(schema, envelope_record(event, TABLE))
    back = event_from_record(decoded, TABLE)
    assert back.after == row
    assert back.op == "u" and back.source == source


def test_schema_carries_what_a_sink_needs() -> None:
    schema = value_schema("demo", TABLE)
    recovered = table_schema_from_value(schema, TABLE.table)
    assert recovered == TABLE
    key = key_schema("demo", TABLE)
    assert [f["name"] for f in key["fields"]] == ["id"]
    assert fastavro.parse_schema(key)


def test_uuid_text_parses_to_uuid() -> None:
    token = uuid.uuid4()
    assert parse_pg_text(TABLE.column("token"), str(token)) == token


def test_infinities_round_trip_without_taking_a_real_value() -> None:
    from schemas import avro_logical  # noqa: F401  (what the serde installs)
    from schemas.pg_types import PgInfinity

    table = TableSchema(
        TableId("public", "edges"),
        (
            Column("id", "int4", "integer", False),
            Column("day", "date", "date"),
            Column("at", "timestamptz", "timestamp with time zone"),
            Column("local_at", "timestamp", "timestamp without time zone"),
        ),
        ("id",),
    )
    schema = value_schema("demo", table)
    source = SourceInfo("postgresql", "demo", "src", table.table, 1, "false")
    for texts in (
        ("infinity",) * 3,
        ("-infinity",) * 3,
        ("9999-12-31", "9999-12-31 23:59:59.999999+00", "0001-01-01 00:00:00"),
    ):
        row = {
            "id": 1,
            **{c.name: parse_pg_text(c, t) for c, t in zip(table.columns[1:], texts, strict=True)},
        }
        decoded = _round_trip(schema, envelope_record(ChangeEvent("c", source, after=row), table))
        after = event_from_record(decoded, table).after
        assert after == row
        assert all(isinstance(after[c], PgInfinity) for c in ("day", "at", "local_at")) == (
            "infinity" in texts[0]
        )
