"""The compiled Avro codec writes fastavro's bytes and reads back fastavro's values, for every
type our schemas use (property-based), and declines schemas it does not compile."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import avro_schemas
from schemas.avro_codec import compile_codec
from schemas.envelope import ChangeEvent, SourceInfo, envelope_record, event_from_record
from schemas.pg_types import DATE_INFINITY, TIMESTAMP_INFINITY
from schemas.tables import Column, TableId, TableSchema

_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.integers(-(2**63), 2**63 - 1)
_AWARE = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min]),
)


@st.composite
def _decimal_type(draw: st.DrawFn) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    precision = draw(st.integers(1, 38))
    scale = draw(st.integers(0, precision))
    # Unscaled integers of at most `precision` digits, written with up to `scale` places.
    places = draw(st.integers(0, scale))
    exact = Context(prec=precision)
    values = st.integers(
        -(10 ** (precision - scale + places) - 1), 10 ** (precision - scale + places) - 1
    ).map(lambda n: Decimal(n).scaleb(-places, exact))
    schema = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    return schema, values


_TYPES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    ("boolean", st.booleans()),
    ("int", _INT32),
    ("long", _INT64),
    ("float", st.floats(width=32)),
    ("double", st.floats()),
    ("string", st.text()),
    ("bytes", st.binary()),
    (
        {"type": "int", "logicalType": "date"},
        st.dates() | st.sampled_from(list(DATE_INFINITY.values())),
    ),
    ({"type": "long", "logicalType": "time-micros"}, st.times()),
    (
        {"type": "long", "logicalType": "timestamp-micros"},
        _AWARE | st.sampled_from(list(TIMESTAMP_INFINITY.values())),
    ),
    (
        {"type": "long", "logicalType": "local-timestamp-micros"},
        st.datetimes(min_value=datetime(1, 1, 2)),
    ),
    ({"type": "string", "logicalType": "uuid"}, st.uuids()),
    ({"type": "string", "connect.name": "io.debezium.data.Json"}, st.text()),
    ({"type": "array", "items": "string"}, st.lists(st.text(), max_size=5)),
    ({"type": "array", "items": "long"}, st.lists(_INT64, max_size=5)),
]


@st.composite
def record_and_value(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record schema of random fields (optional or not) and a value for it."""
    count = draw(st.integers(1, 8))
    fields, value = [], {}
    for n in range(count):
        if draw(st.booleans()):
            avro_type, values = draw(_decimal_type())
        else:
            avro_type, values = draw(st.sampled_from(_TYPES))
        name = f"f{n}"
        if draw(st.booleans()):
            fields.append({"name": name, "type": ["null", avro_type], "default": None})
            value[name] = draw(st.none() | values)
        else:
            fields.append({"name": name, "type": avro_type})
            value[name] = draw(values)
    return {"type": "record", "name": "R", "namespace": "t", "fields": fields}, value


def _fastavro_bytes(parsed: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value)
    return buf.getvalue()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_and_value())
def test_codec_writes_and_reads_what_fastavro_does(case: tuple[dict[str, Any], Any]) -> None:
    schema, value = case
    parsed = fastavro.parse_schema(schema, _write_hint=True)
    codec = compile_codec(parsed)
    assert codec is not None
    expected = _fastavro_bytes(parsed, value)
    out = bytearray()
    codec.write(out, value)
    assert bytes(out) == expected
    assert _same(
        codec.read(expected), fastavro.schemaless_reader(io.BytesIO(expected), parsed, None)
    )


def _table(columns: tuple[Column, ...]) -> TableSchema:
    return TableSchema(TableId("public", "orders"), columns, (columns[0].name,))


def test_envelope_of_a_real_table_round_trips_through_the_codec() -> None:
    table = _table(
        (
            Column("id", "int8", "bigint", False),
            Column("amount", "numeric", "numeric(12,2)", False, 12, 2),
            Column("note text", "text", "text"),  # not a valid Avro name: renamed in Avro
            Column("at", "timestamptz", "timestamp with time zone"),
        )
    )
    parsed = fastavro.parse_schema(avro_schemas.value_schema("p", table), _write_hint=True)
    codec = compile_codec(parsed)
    assert codec is not None
    row = {
        "id": 7,
        "amount": Decimal("-12.50"),
        "note text": "é",
        "at": TIMESTAMP_INFINITY["infinity"],
    }
    source = SourceInfo("postgresql", "p", "db", table.table, 1, "false", tx_id=3, lsn=99)
    event = ChangeEvent("u", source, {"id": 7}, row, 5, unavailable=("note text",))
    record = envelope_record(event, table)
    out = bytearray()
    codec.write(out, record)
    assert bytes(out) == _fastavro_bytes(parsed, record)
    assert event_from_record(codec.read(bytes(out)), table) == ChangeEvent(
        "u", source, dict.fromkeys(row, None) | {"id": 7}, row, 5, ("note text",)
    )


@pytest.mark.parametrize(
    "field_type",
    [
        ["null", "string", "long"],
        {"type": "map", "values": "string"},
        {"type": "enum", "name": "E", "symbols": ["a", "b"]},
        {"type": "fixed", "name": "F", "size": 4},
    ],
)
def test_schemas_outside_the_compiled_set_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert compile_codec(fastavro.parse_schema(schema, _write_hint=True)) is None


def test_truncated_input_raises_instead_of_reading_past_the_end() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "s", "type": "string"}]}
    codec = compile_codec(fastavro.parse_schema(schema, _write_hint=True))
    assert codec is not None
    out = bytearray()
    codec.write(out, {"s": "hello"})
    with pytest.raises((ValueError, IndexError)):
        codec.read(bytes(out[:-2]))


def test_values_fastavro_refuses_are_refused() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "n", "type": "long"},
            {
                "name": "d",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 1},
            },
        ],
    }
    codec = compile_codec(fastavro.parse_schema(schema, _write_hint=True))
    assert codec is not None
    for bad in ({"n": 2**63, "d": Decimal(1)}, {"n": 1, "d": Decimal("1.25")}, {"n": 1, "d": 5}):
        with pytest.raises((OverflowError, ValueError, TypeError)):
            codec.write(bytearray(), bad)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_and_value(), st.data())
def test_a_repeating_nested_record_is_written_and_read_as_fastavro_does(
    case: tuple[dict[str, Any], Any], data: st.DataObject
) -> None:
    # The codec reuses the last bytes/value of a nested record (the envelope's `source`):
    # a stream of values where it repeats, changes and comes back must stay exact.
    inner, first = case
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "t",
        "fields": [{"name": "inner", "type": inner}, {"name": "n", "type": "long"}],
    }
    parsed = fastavro.parse_schema(schema, _write_hint=True)
    codec = compile_codec(parsed)
    assert codec is not None
    others = data.draw(st.lists(st.sampled_from([first, {**first}]), max_size=3))
    for n, value in enumerate([first, *others, first]):
        record = {"inner": value, "n": n}
        expected = _fastavro_bytes(parsed, record)
        out = bytearray()
        codec.write(out, record)
        assert bytes(out) == expected
        assert _same(
            codec.read(expected), fastavro.schemaless_reader(io.BytesIO(expected), parsed, None)
        )


def test_equal_but_differently_encoded_values_are_not_taken_from_the_memo() -> None:
    inner = {"type": "record", "name": "I", "fields": [{"name": "x", "type": "double"}]}
    schema = {"type": "record", "name": "O", "fields": [{"name": "i", "type": inner}]}
    parsed = fastavro.parse_schema(schema, _write_hint=True)
    codec = compile_codec(parsed)
    assert codec is not None
    for value in (0.0, -0.0, 0.0):  # equal as floats, different bytes
        out = bytearray()
        codec.write(out, {"i": {"x": value}})
        assert bytes(out) == _fastavro_bytes(parsed, {"i": {"x": value}})
