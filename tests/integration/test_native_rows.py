"""The full load's native row encoder (native/src/encode.rs, producers/postgres/native_rows.py)
against the Python path it stands in for: random rows of every mapped PostgreSQL type (and
some carried as text), written into a real table, read back with the full load's COPY, and
encoded both ways; the Avro keys and envelopes must be byte for byte the same. Also what
the encoder leaves to Python, and a full load that goes through it."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import fastavro
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from producers.postgres import native_rows
from producers.postgres.chunks import copy_query
from producers.postgres.connection import connect
from schemas.avro_codec import CompiledCodec, compile_codec
from schemas.avro_schemas import key_schema, value_schema
from schemas.envelope import ChangeEvent, SourceInfo, envelope_record, key_record
from schemas.pg_types import parse_pg_text
from schemas.tables import Column, TableId, TableSchema

pytestmark = pytest.mark.integration

if not native_rows.available():
    if os.environ.get("CI"):
        raise RuntimeError("the native library is not built: `make install` builds it")
    pytest.skip("the native library is not built (cargo missing)", allow_module_level=True)

SCHEMA_NAME = f"native_{uuid.uuid4().hex[:8]}"
TABLE = TableSchema(
    TableId(SCHEMA_NAME, "native_rows"),
    (
        Column("id", "int4", "integer", nullable=False),
        Column("k", "text", "text", nullable=False),
        Column("small", "int2", "smallint"),
        Column("big", "int8", "bigint"),
        Column("r4", "float4", "real"),
        Column("r8", "float8", "double precision"),
        Column("flag", "bool", "boolean"),
        Column("label", "varchar", "character varying(50)"),
        Column("ch", "bpchar", "character(5)"),
        Column("price", "numeric", "numeric(12,2)", precision=12, scale=2),
        Column("wide", "numeric", "numeric(38,10)", precision=38, scale=10),
        Column("free", "numeric", "numeric"),
        Column("day", "date", "date"),
        Column("at", "time", "time without time zone"),
        Column("local", "timestamp", "timestamp without time zone"),
        Column("stamp", "timestamptz", "timestamp with time zone"),
        Column("uid", "uuid", "uuid"),
        Column("doc", "jsonb", "jsonb"),
        Column("js", "json", "json"),
        Column("blob", "bytea", "bytea"),
        Column("span", "interval", "interval"),
        Column("nums", "_int4", "integer[]"),
    ),
    ("id", "k"),
)
KEY_ID, VALUE_ID = 11, 12


def _codec(schema: dict[str, Any]) -> CompiledCodec:
    codec = compile_codec(fastavro.parse_schema(schema, _write_hint=True))
    assert codec is not None
    return codec


KEY_CODEC = _codec(key_schema("p", TABLE))
VALUE_CODEC = _codec(value_schema("p", TABLE))
SOURCE = SourceInfo("postgresql", "p", "db", TABLE.table, 1_700_000_000_123, "true", lsn=99)


def framed(schema_id: int, codec: CompiledCodec, record: dict[str, Any]) -> bytes:
    out = bytearray(struct.pack(">bI", 0, schema_id))
    codec.write(out, record)
    return bytes(out)


def python_messages(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """What the worker's Python path writes for these COPY lines."""
    out = []
    for line in lines:
        values = native_rows.parse_copy_line(line)
        after = {c.name: parse_pg_text(c, v) for c, v in zip(TABLE.columns, values, strict=True)}
        event = ChangeEvent("r", SOURCE, None, after, SOURCE.ts_ms)
        key = framed(KEY_ID, KEY_CODEC, key_record(event.key(TABLE) or {}, TABLE))
        out.append((key, framed(VALUE_ID, VALUE_CODEC, envelope_record(event, TABLE))))
    return out


def frame() -> native_rows.EnvelopeFrame:
    empty = framed(
        VALUE_ID,
        VALUE_CODEC,
        envelope_record(ChangeEvent("r", SOURCE, None, None, SOURCE.ts_ms), TABLE),
    )
    found = native_rows.EnvelopeFrame.cut(KEY_ID, empty)
    assert found is not None
    return found


def encoder() -> native_rows.RowEncoder:
    spec = native_rows.encoder_spec(TABLE)
    assert spec is not None
    return native_rows.RowEncoder(spec)


@pytest.fixture(scope="module")
def source_conn(services: Any) -> Iterator[psycopg.Connection[Any]]:
    with connect(services.postgres) as conn:
        conn.autocommit = True
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type))
            for c in TABLE.columns
        )
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA_NAME)))
        conn.execute(
            sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id, k))").format(
                sql.Identifier(SCHEMA_NAME, "native_rows"), columns
            )
        )
        conn.execute(f"SET search_path = {SCHEMA_NAME}")  # a generated name
        try:
            yield conn
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA_NAME)))


def copy_lines(conn: psycopg.Connection[Any]) -> bytes:
    data = bytearray()
    with conn.cursor() as cur, cur.copy(copy_query(TABLE, None, None)) as copy:
        for block in copy:
            data += block
    return bytes(data)


texts = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=10)
zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


row_values = st.fixed_dictionaries(
    {
        "small": nullable(st.integers(-(2**15), 2**15 - 1)),
        "big": nullable(st.integers(-(2**63), 2**63 - 1)),
        "r4": nullable(st.one_of(st.floats(width=32), st.sampled_from(["NaN", "-Infinity"]))),
        "r8": nullable(st.one_of(st.floats(), st.sampled_from(["NaN", "Infinity"]))),
        "flag": nullable(st.booleans()),
        "label": nullable(texts),
        "ch": nullable(st.text("ab c\\\t", max_size=5)),
        "price": nullable(
            st.integers(-(10**10) + 1, 10**10 - 1).map(lambda n: Decimal(n).scaleb(-2))
        ),
        "wide": nullable(st.integers(-(10**20), 10**20).map(lambda n: str(Decimal(n).scaleb(-7)))),
        "free": nullable(
            st.one_of(st.decimals(allow_nan=False, allow_infinity=False, places=3), st.just("NaN"))
        ),
        "day": nullable(st.one_of(st.dates(), st.sampled_from(["infinity", "-infinity"]))),
        "at": nullable(st.times()),
        "local": nullable(st.one_of(naive, st.just("infinity"))),
        "stamp": nullable(
            st.one_of(
                st.tuples(naive, zones).map(lambda p: p[0].replace(tzinfo=p[1])),
                st.just("-infinity"),
            )
        ),
        "uid": nullable(st.uuids()),
        "doc": nullable(st.sampled_from(['{"a": [1, 2.5, "x\\ty"]}', "[]", '"\\u00e9"'])),
        "js": nullable(st.sampled_from(['{ "spaced" :  1 }', "null"])),
        "blob": nullable(st.binary(max_size=6)),
        "span": nullable(st.sampled_from(["1 day 02:00:00", "-3 mons", "00:00:00.5"])),
        "nums": nullable(st.lists(st.integers(-5, 5), max_size=3)),
    }
)


@settings(
    max_examples=int(os.environ.get("HEADWATER_NATIVE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=st.lists(row_values, min_size=1, max_size=12), keys=st.lists(texts, min_size=12))
def test_native_rows_equal_the_python_path(
    source_conn: psycopg.Connection[Any], rows: list[dict[str, Any]], keys: list[str]
) -> None:
    conn = source_conn
    conn.execute("TRUNCATE native_rows")
    names = sql.SQL(", ").join(sql.Identifier(c) for c in TABLE.column_names)
    with conn.cursor().copy(sql.SQL("COPY native_rows ({}) FROM STDIN").format(names)) as cp:
        for n, values in enumerate(rows):
            cp.write_row([n, keys[n], *(values[c] for c in TABLE.column_names[2:])])
    data = copy_lines(conn)
    encoded = encoder().encode(data, frame())
    expected = python_messages(data.split(b"\n")[:-1])
    assert encoded is not None, data  # every value drawn here is one the encoder writes
    assert encoded.consumed == len(data)
    assert encoded.messages() == expected


def test_the_encoder_takes_only_complete_lines_and_leaves_what_it_cannot_write(
    source_conn: psycopg.Connection[Any],
) -> None:
    conn = source_conn
    conn.execute("TRUNCATE native_rows")
    conn.execute(
        "INSERT INTO native_rows (id, k, price, stamp) VALUES (1, 'a', 1.5, '2024-02-29 10:00+02'),"
        " (2, 'b', NULL, 'infinity')"
    )
    data = copy_lines(conn)
    half = data[: data.index(b"\n") + 5]
    partial = encoder().encode(half, frame())
    assert partial is not None and partial.rows == 1 and partial.consumed == data.index(b"\n") + 1
    whole = encoder().encode(data, frame())
    assert whole is not None and whole.messages() == python_messages(data.split(b"\n")[:-1])
    # A date before year 1: the Python path refuses it with a message naming the column.
    conn.execute("INSERT INTO native_rows (id, k, day) VALUES (3, 'c', '0044-03-15 BC')")
    assert encoder().encode(copy_lines(conn), frame()) is None
    # Types without a code (none today but those without a mapping, which travel as text).
    assert native_rows.encoder_spec(TABLE) is not None
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    assert moment.isoformat()  # (keeps the UTC import honest for readers of the strategies)
    assert uuid.UUID(int=0)
