"""The native sink path (native/, consumers/native_collapse.py) against the Python path it
stands in for: random batches of inserts, updates (some moving the key) and deletes over a
table of every column type the library writes, edge values included, collapsed both ways and
COPY'd into two staging tables of a real PostgreSQL; the tables must hold the same rows.
Also: what the library leaves to Python (truncates, unchanged TOAST columns, another schema
id, malformed bytes) and a sink run that goes through it end to end."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal
from typing import Any

import fastavro
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from consumers import native_collapse
from consumers.batch import CopyRows, SinkRecord, collapse
from consumers.ddl import column_definition
from consumers.pg_values import pg_value
from headwater.config import TaskConfig
from schemas.avro_codec import compile_codec
from schemas.avro_schemas import value_schema
from schemas.envelope import ChangeEvent, Row, SourceInfo, envelope_record, event_from_record
from schemas.pg_types import DATE_INFINITY, TIMESTAMP_INFINITY
from schemas.tables import Column, TableId, TableSchema
from tests.sink_support import (
    ChangeFeed,
    as_stored,
    feed,
    run_until_caught_up,
    table_schema,
    target_rows,
)
from tests.sink_support import row as sink_row

pytestmark = pytest.mark.integration
__all__ = ["feed"]

if not native_collapse.available():
    if os.environ.get("CI"):
        raise RuntimeError("the native library is not built: `make install` builds it")
    pytest.skip("the native library is not built (cargo missing)", allow_module_level=True)

SCHEMA_ID = 4242
TABLE = TableSchema(
    TableId("public", "every_type"),
    (
        Column("id", "int4", "integer", nullable=False),
        Column("code", "text", "text", nullable=False),
        Column("small", "int2", "smallint"),
        Column("big", "int8", "bigint"),
        Column("real4", "float4", "real"),
        Column("real8", "float8", "double precision"),
        Column("flag", "bool", "boolean"),
        Column("label", "varchar", "character varying(200)"),
        Column("price", "numeric", "numeric(12,2)", precision=12, scale=2),
        Column("wide", "numeric", "numeric(38,10)", precision=38, scale=10),
        Column("whole", "numeric", "numeric(5,0)", precision=5, scale=0),
        Column("free", "numeric", "numeric"),
        Column("day", "date", "date"),
        Column("at", "time", "time without time zone"),
        Column("local", "timestamp", "timestamp without time zone"),
        Column("stamp", "timestamptz", "timestamp with time zone"),
        Column("uid", "uuid", "uuid"),
        Column("doc", "jsonb", "jsonb"),
        Column("blob", "bytea", "bytea"),
    ),
    ("id", "code"),
)
VALUE_SCHEMA = value_schema("native", TABLE)
CODEC = compile_codec(fastavro.parse_schema(VALUE_SCHEMA, _write_hint=True))
HEADER = struct.pack(">bI", 0, SCHEMA_ID)
# The same table keyed by one column: the library's index then holds the key's own bytes.
BY_CODE = TableSchema(TABLE.table, TABLE.columns, ("code",))
# Without the one column binary COPY does not write (numeric without precision travels as
# a string): the library writes these tables' rows in binary for the stage's column types.
BINARY = TableSchema(
    TABLE.table, tuple(c for c in TABLE.columns if c.name != "free"), TABLE.primary_key
)
BINARY_BY_CODE = TableSchema(BINARY.table, BINARY.columns, ("code",))
# Keyed by the integer alone: the library orders these rows by key.
BY_ID = TableSchema(TABLE.table, TABLE.columns, ("id",))
BINARY_BY_ID = TableSchema(BINARY.table, BINARY.columns, ("id",))

WIDE = Context(prec=40)
texts = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)
# Finite decimals of a column's precision and scale: an Avro decimal cannot carry NaN.
price = st.integers(-(10**10) + 1, 10**10 - 1).map(lambda n: Decimal(n).scaleb(-2))
wide = st.integers(-(10**38) + 1, 10**38 - 1).map(lambda n: Decimal(n).scaleb(-10, WIDE))
whole = st.integers(-99999, 99999).map(Decimal)
dates = st.one_of(st.dates(), st.sampled_from(list(DATE_INFINITY.values())))
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
stamps = st.one_of(
    naive.map(lambda d: d.replace(tzinfo=UTC)), st.sampled_from(list(TIMESTAMP_INFINITY.values()))
)
locals_ = st.one_of(naive, st.sampled_from(list(TIMESTAMP_INFINITY.values())))
docs = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
).map(json.dumps)


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def rows(key: st.SearchStrategy[tuple[int, str]]) -> st.SearchStrategy[Row]:
    return st.fixed_dictionaries(
        {
            "small": nullable(st.integers(-(2**15), 2**15 - 1)),
            "big": nullable(st.integers(-(2**63), 2**63 - 1)),
            "real4": nullable(st.floats(width=32)),
            "real8": nullable(floats),
            "flag": nullable(st.booleans()),
            "label": nullable(texts),
            "price": nullable(price),
            "wide": nullable(wide),
            "whole": nullable(whole),
            "free": nullable(st.decimals(allow_nan=False, places=4).map(str)),
            "day": nullable(dates),
            "at": nullable(st.times()),
            "local": nullable(locals_),
            "stamp": nullable(stamps),
            "uid": nullable(st.uuids().map(str)),
            "doc": nullable(docs),
            "blob": nullable(st.binary(max_size=8)),
        }
    ).flatmap(lambda values: key.map(lambda k: {"id": k[0], "code": k[1], **values}))


keys = st.tuples(st.integers(0, 4), st.sampled_from(["a", "b\tc", "ü\\n"]))
Event = tuple[str, Row | None, Row | None]
events = st.lists(
    st.one_of(
        rows(keys).map(lambda r: ("c", None, r)),
        rows(keys).map(lambda r: ("r", None, r)),
        st.tuples(rows(keys), rows(keys)).map(lambda p: ("u", p[0], p[1])),
        rows(keys).map(lambda r: ("u", None, r)),
        keys.map(lambda k: ("d", {"id": k[0], "code": k[1]}, None)),
    ),
    min_size=1,
    max_size=25,
)


_CODECS: dict[tuple[Column, ...], Any] = {TABLE.columns: CODEC}


def codec(table: TableSchema) -> Any:
    """The Avro codec of `table`'s envelope (TABLE's is CODEC)."""
    found = _CODECS.get(table.columns)
    if found is None:
        parsed = fastavro.parse_schema(value_schema("native", table), _write_hint=True)
        found = _CODECS[table.columns] = compile_codec(parsed)
    assert found is not None
    return found


def encode(
    op: str, before: Row | None, after: Row | None, n: int, table: TableSchema = TABLE
) -> bytes:
    source = SourceInfo("postgresql", "t", "db", TABLE.table, 1_700_000_000_000 + n, lsn=n)
    record = envelope_record(ChangeEvent(op, source, before, after, n), table)  # type: ignore[arg-type]
    out = bytearray(HEADER)
    codec(table).write(out, record)
    return bytes(out)


def python_rows(values: list[bytes], table: TableSchema = TABLE) -> list[tuple[Any, ...]]:
    """The staging rows the Python path writes for the same messages (postgres_sink._copy)."""
    read = codec(table).read
    records = [
        SinkRecord("t", 0, i, table, event_from_record(read(v, 5), table))
        for i, v in enumerate(values)
    ]
    changes = collapse(records).tables[table.table]
    names = table.column_names
    out: list[tuple[Any, ...]] = []
    for key in changes.deletes:
        by_name = dict(zip(table.primary_key, key, strict=True))
        out.append((0, *(by_name.get(c) for c in names)))
    for upsert in changes.upserts.values():
        assert upsert.columns == frozenset(names)
        out.append((-1, *(pg_value(upsert.row.get(c)) for c in names)))
    return out


@pytest.fixture(scope="module")
def stage_db(services: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(services.postgres, autocommit=True) as conn:
        columns = sql.SQL(", ").join(
            [sql.SQL("g smallint DEFAULT -1")]  # as consumers/postgres_sink.py's stage
            + [column_definition(c, c.sql_type, False) for c in TABLE.columns]
        )
        for name in ("stage_native", "stage_python"):
            conn.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(sql.Identifier(name), columns))
        yield conn


def copy_native(conn: psycopg.Connection[Any], copied: CopyRows) -> None:
    """The native rows into stage_native; rows of inserts only come without their group."""
    columns = copied.columns if copied.inserts_only else ("g", *copied.columns)
    names = sql.SQL(", ").join(sql.Identifier(n) for n in columns)
    binary = sql.SQL(" (FORMAT binary)" if copied.binary is not None else "")
    statement = sql.SQL("COPY stage_native ({}) FROM STDIN{}").format(names, binary)
    with conn.cursor().copy(statement) as cp:
        cp.write(copied.copy)


def stage_types(conn: psycopg.Connection[Any], columns: tuple[str, ...]) -> tuple[str, ...]:
    """The type names of stage_native's columns, as the sink reads its target's."""
    found = dict(
        conn.execute(
            "SELECT attname, typname FROM pg_attribute JOIN pg_type ON pg_type.oid = atttypid"
            " WHERE attrelid = 'stage_native'::regclass AND attnum > 0"
        ).fetchall()
    )
    return tuple(found[c] for c in columns)


def differences(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "(SELECT 'native only', * FROM stage_native EXCEPT ALL SELECT 'native only', * "
        "FROM stage_python) UNION ALL (SELECT 'python only', * FROM stage_python EXCEPT ALL "
        "SELECT 'python only', * FROM stage_native)"
    ).fetchall()


@settings(
    max_examples=int(os.environ.get("HEADWATER_NATIVE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=events,
    table=st.sampled_from([TABLE, BY_CODE, BY_ID, BINARY, BINARY_BY_CODE, BINARY_BY_ID]),
)
def test_native_rows_equal_the_python_path(
    stage_db: psycopg.Connection[Any], batch: list[Event], table: TableSchema
) -> None:
    """Text COPY rows (TABLE, BY_CODE) and binary ones (BINARY, BINARY_BY_CODE: the stage's
    column types given) against the Python path's."""
    conn = stage_db
    values = [encode(op, before, after, n, table) for n, (op, before, after) in enumerate(batch)]
    spec = native_collapse.plan_spec(SCHEMA_ID, value_schema("native", table))
    assert spec is not None
    binary = table.columns == BINARY.columns
    types = stage_types(conn, table.column_names) if binary else None
    plan = native_collapse.Plan(spec)
    result = native_collapse.collapse(plan, table.column_names, values, 0, -1, types)
    assert not isinstance(result, native_collapse.Fallback), result
    copied, max_ts = result
    assert (copied.binary is not None) == binary
    assert max_ts == 1_700_000_000_000 + len(batch) - 1
    expected = python_rows(values, table)
    assert copied.upserts + copied.deletes == len(expected)
    if table is BY_ID:  # text rows: the id follows the group unless inserts only
        at = 0 if copied.inserts_only else 1
        ids = [int(line.split(b"\t")[at]) for line in copied.copy.splitlines()]
        assert ids == sorted(ids)
    conn.execute("TRUNCATE stage_native, stage_python")
    copy_native(conn, copied)
    names = sql.SQL(", ").join(sql.Identifier(n) for n in ("g", *table.column_names))
    with conn.cursor().copy(sql.SQL("COPY stage_python ({}) FROM STDIN").format(names)) as cp:
        for staged in expected:
            cp.write_row(staged)
    assert differences(conn) == []


def _plan() -> native_collapse.Plan:
    spec = native_collapse.plan_spec(SCHEMA_ID, VALUE_SCHEMA)
    assert spec is not None
    return native_collapse.Plan(spec)


def test_what_the_library_leaves_to_python() -> None:
    plan, names = _plan(), TABLE.column_names
    full: Row = {"id": 1, "code": "a", "label": "x"}
    ok = encode("c", None, full, 0)
    assert not isinstance(
        native_collapse.collapse(plan, names, [ok], 0, -1), native_collapse.Fallback
    )
    source = SourceInfo("postgresql", "t", "db", TABLE.table, 1)
    toast = envelope_record(ChangeEvent("u", source, None, full, 1, ("doc",)), TABLE)
    truncate = envelope_record(ChangeEvent("t", source, None, None, 1), TABLE)
    assert CODEC is not None
    cases = {}
    for label, record in (("unchanged TOAST", toast), ("truncate", truncate)):
        out = bytearray(HEADER)
        CODEC.write(out, record)
        cases[label] = bytes(out)
    cases["another schema id"] = struct.pack(">bI", 0, SCHEMA_ID + 1) + ok[5:]
    for label, message in cases.items():
        found = native_collapse.collapse(plan, names, [ok, message], 0, -1)
        assert found == native_collapse.Fallback(False, 1), label
    broken = native_collapse.collapse(plan, names, [ok, ok[:-3]], 0, -1)
    assert broken == native_collapse.Fallback(True, 1)
    # Key columns of floating type are left to Python (0.0 == -0.0, NaN != NaN).
    floaty = TableSchema(
        TableId("public", "f"), (Column("x", "float8", "double precision"),), ("x",)
    )
    assert native_collapse.plan_spec(1, value_schema("p", floaty)) is None


def test_edge_values_as_postgresql_stores_them(stage_db: psycopg.Connection[Any]) -> None:
    """A few values spelled out, so a wrong formatter shows here by name."""
    row: Row = {
        "id": 7,
        "code": "tab\there\\back\nline",
        "real4": math.inf,
        "real8": -0.0,
        "price": Decimal("-0.05"),
        "wide": Decimal("-9999999999999999999999999999.9999999999"),
        "day": date(1, 1, 1),
        "at": time(23, 59, 59, 999999),
        "local": datetime(9999, 12, 31, 23, 59, 59, 999999),
        "stamp": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - timedelta(hours=0),
        "uid": str(uuid.UUID(int=1)),
        "blob": b"\x00\\\xff",
    }
    result = native_collapse.collapse(
        _plan(), TABLE.column_names, [encode("c", None, row, 0)], 0, -1
    )
    assert not isinstance(result, native_collapse.Fallback)
    conn = stage_db
    conn.execute("TRUNCATE stage_native")
    copy_native(conn, result[0])
    got = conn.execute(
        "SELECT code, real4::text, real8::text, price, wide, day, at, local, stamp, blob "
        "FROM stage_native"
    ).fetchone()
    assert got == (
        row["code"],
        "Infinity",
        "-0",
        row["price"],
        row["wide"],
        row["day"],
        row["at"],
        row["local"],
        row["stamp"],
        row["blob"],
    )


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> TaskConfig:
    return make_task(target={"batch_size": 500, "batch_wait_s": 0.2})


def test_a_sink_applies_through_the_native_path(task: TaskConfig, feed: ChangeFeed) -> None:
    """A sink run: the native path takes the batches and the target ends as the Python rules
    say (the dead-letter case, which goes back to Python, is in test_postgres_sink)."""
    items = table_schema("items_native")
    feed.register(items)
    expected: dict[int, Row] = {}
    for key in range(300):
        expected[key] = sink_row(key)
        feed.send(items, "c", after=expected[key])
    for key in range(0, 300, 3):
        expected[key] = sink_row(key, 1)
        feed.send(items, "u", after=expected[key])
    for key in range(1, 300, 7):
        feed.send(items, "d", before={"id": key})
        expected.pop(key)
    feed.flush()
    events = 300 + 100 + len(range(1, 300, 7))
    loop = run_until_caught_up(task).loop
    assert loop.native is not None and loop.native.taken_events == events
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        got = conn.execute("SELECT id, name, price FROM public.items_native ORDER BY id").fetchall()
    assert got == [(k, expected[k]["name"], expected[k]["price"]) for k in sorted(expected)]


def test_the_sink_copies_in_binary(task: TaskConfig, feed: ChangeFeed) -> None:
    """The sink makes a topic's table ready when it is assigned the topic, so its batches go
    as binary COPY from the first; the target holds every column as the Python rules say."""
    task = task.model_copy(update={"target": task.target.model_copy(update={"batch_size": 100})})
    items = table_schema("items_binary")
    feed.register(items)
    expected: dict[int, Row] = {}
    for key in range(400):
        expected[key] = sink_row(key, note=None if key % 5 == 0 else f"n{key}")
        feed.send(items, "c", after=expected[key])
    for key in range(0, 400, 3):
        expected[key] = sink_row(key, 1, price=Decimal("-0.01") * key)
        feed.send(items, "u", after=expected[key])
    for key in range(1, 400, 7):
        feed.send(items, "d", before={"id": key})
        expected.pop(key)
    feed.flush()
    loop = run_until_caught_up(task).loop
    assert loop.native is not None
    assert loop.native.binary_events == loop.native.taken_events == 400 + 134 + 57
    stored = [as_stored(expected[k], items) for k in sorted(expected)]
    assert target_rows(task, items.table) == stored


OTHER_TYPES = ("varchar", "numeric", "text", "timestamptz", "jsonb", "uuid", "bytea", "date")
OTHER_TYPES += ("time",)


def test_binary_rows_for_other_column_types_are_refused(
    make_task: Callable[..., TaskConfig],
) -> None:
    """Rows collapsed for column types the target no longer has (a widening between the
    batcher's read and the apply) go back to the Python path, never into the table."""
    from consumers.batch import CollapsedBatch, PartitionPosition, TableChanges
    from consumers.outcome import NativeRefused
    from consumers.postgres_sink import PostgresSink

    task = make_task()
    items = table_schema("items_stale")
    plan = native_collapse.Plan(
        native_collapse.plan_spec(SCHEMA_ID, value_schema("native", items)) or ""
    )
    target = PostgresSink(task)
    try:
        values = [encode("c", None, sink_row(1), 0, items)]
        topic = "x.public.items_stale"
        for offset, id_type in enumerate(("int4", "int8")):
            types = (id_type, *OTHER_TYPES)
            result = native_collapse.collapse(plan, items.column_names, values, 0, -1, types)
            assert not isinstance(result, native_collapse.Fallback)
            changes = TableChanges(items, copied=[result[0]], topics={topic})
            batch = CollapsedBatch(
                {items.table: changes}, {(topic, 0): PartitionPosition(offset + 1, None)}, 1
            )
            if id_type == "int4":  # the table as the sink made it: binary rows go in
                target.apply(batch, {(topic, 0): None})
            else:
                with pytest.raises(NativeRefused, match="column types changed"):
                    target.apply(batch, {(topic, 0): 1})
    finally:
        target.close()
    assert target_rows(task, items.table) == [as_stored(sink_row(1), items)]


def test_binary_rows_never_go_into_a_column_altered_by_hand(
    make_task: Callable[..., TaskConfig],
) -> None:
    """A target column altered by hand mid-stream (int4 to real: same size, so binary int4
    rows would go in as tiny floats, no error): the sink checks the table's types, under
    lock, before each binary COPY; the batch goes back to Python, and the next ones are
    written for the types the table has now."""
    from consumers.batch import CollapsedBatch, PartitionPosition, TableChanges
    from consumers.outcome import NativeRefused
    from consumers.postgres_sink import PostgresSink

    task = make_task()
    items = table_schema("items_altered")
    plan = native_collapse.Plan(
        native_collapse.plan_spec(SCHEMA_ID, value_schema("native", items)) or ""
    )
    topic = "x.public.items_altered"
    target = PostgresSink(task)

    def batch(key: int, types: tuple[str, ...] | None) -> CollapsedBatch:
        values = [encode("c", None, sink_row(key), 0, items)]
        result = native_collapse.collapse(plan, items.column_names, values, 0, -1, types)
        assert not isinstance(result, native_collapse.Fallback)
        changes = TableChanges(items, copied=[result[0]], topics={topic})
        return CollapsedBatch({items.table: changes}, {(topic, 0): PartitionPosition(key, None)}, 1)

    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    try:
        target.prepare_tables([items])
        cached = target.column_types(items.table, items.column_names)
        assert cached == ("int4", *OTHER_TYPES)
        target.apply(batch(1, cached), {(topic, 0): None})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE public.items_altered ALTER COLUMN id TYPE real")
        stale = batch(2, cached)
        assert stale.tables[items.table].copied[0].binary == cached
        with pytest.raises(NativeRefused, match="column types changed"):
            target.apply(stale, {(topic, 0): 1})
        target.prepare_tables([items])  # as the Python path's apply of the batch does
        fresh = target.column_types(items.table, items.column_names)
        assert fresh == ("float4", *OTHER_TYPES)
        target.apply(batch(2, fresh), {(topic, 0): 1})  # int -> real is not a binary pair
    finally:
        target.close()
    with psycopg.connect(url) as conn:
        ids = conn.execute("SELECT id FROM public.items_altered ORDER BY id").fetchall()
    assert ids == [(1.0,), (2.0,)]


def test_a_value_binary_cannot_carry_goes_as_text() -> None:
    """A long out of an int2 column's range: binary has no way to say it, the text rows do
    (and the target refuses them as it refuses the Python path's)."""
    table = TableSchema(
        TableId("public", "narrow"),
        (Column("id", "int4", "integer", nullable=False), Column("n", "int2", "smallint")),
        ("id",),
    )
    spec = native_collapse.plan_spec(SCHEMA_ID, value_schema("native", table))
    assert spec is not None
    plan = native_collapse.Plan(spec)
    types = ("int4", "int2")
    fits = native_collapse.collapse(
        plan, table.column_names, [encode("c", None, {"id": 1, "n": 7}, 0, table)], 0, -1, types
    )
    too_big = native_collapse.collapse(
        plan, table.column_names, [encode("c", None, {"id": 1, "n": 40000}, 0, table)], 0, -1, types
    )
    assert not isinstance(fits, native_collapse.Fallback)
    assert not isinstance(too_big, native_collapse.Fallback)
    assert fits[0].binary == types and too_big[0].binary is None
    assert too_big[0].copy == b"1\t40000\n"
    assert not plan.binary_ok(("int4", "numeric"))  # no exact pair: the table goes as text


def test_inserts_of_keys_already_there_go_through_the_stage(
    task: TaskConfig, feed: ChangeFeed, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows of inserts only are COPY'd straight into the table unless a key is already there
    (snapshot rows read again after a restart): then the stage upserts them all, with no
    detour through the Python path."""
    caplog.set_level(logging.INFO, logger="consumers.sink")
    items = table_schema("items_again")
    feed.register(items)
    for key in range(1, 21):
        feed.send(items, "r", after=sink_row(key))
    feed.flush()
    run_until_caught_up(task)
    for key in range(15, 31):
        feed.send(items, "r", after=sink_row(key, 1))
    feed.flush()
    loop = run_until_caught_up(task).loop
    assert loop.native is not None and loop.native.taken_events == 16
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        got = conn.execute("SELECT id, name FROM public.items_again ORDER BY id").fetchall()
    assert got == [(k, sink_row(k, 1 if k >= 15 else 0)["name"]) for k in range(1, 31)]
    assert "applying the batch again in Python" not in caplog.text
