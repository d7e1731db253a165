"""The native sink path for a MySQL/MariaDB target (native/src/mysql.rs,
consumers/native_mysql.py, consumers/mysql_load.py) against the Python path it stands in for:
random batches of inserts, updates (some moving the key) and deletes over a table of every
column type the library writes, applied both ways to two tables of a real MariaDB on top of
the same earlier rows; the tables must end equal. Also: what the library leaves to Python, a
sink run through the native path, and a record the target refuses reaching the dead-letter
topic through the Python path."""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Context, Decimal
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import mysql_sink, native_mysql
from consumers.batch import SinkRecord, collapse
from consumers.local_infile import allowed
from consumers.mysql_load import (
    DELETED_GROUP,
    UPSERT_GROUP,
    LoadRefused,
    load_copied,
    loaded_directly,
    loads_into,
    replaced_directly,
    replaces_as_upsert,
    target_types,
)
from consumers.mysql_sink import MySqlSink
from consumers.mysql_target import MySqlTarget
from consumers.native_collapse import Fallback
from headwater.config import TaskConfig
from schemas.avro_codec import compile_codec
from schemas.avro_schemas import value_schema
from schemas.envelope import ChangeEvent, Row, SourceInfo, envelope_record, event_from_record
from schemas.pg_types import DATE_INFINITY, TIMESTAMP_INFINITY
from schemas.tables import Column, TableId, TableSchema
from tests.sink_support import (
    ChangeFeed,
    feed,
    mariadb_database,
    read_dead_letters,
    run_until_caught_up,
    table_schema,
)
from tests.sink_support import row as sink_row

pytestmark = pytest.mark.integration
__all__ = ["feed"]

if not native_mysql.available():
    if os.environ.get("CI"):
        raise RuntimeError("the native library is not built: `make install` builds it")
    pytest.skip("the native library is not built (cargo missing)", allow_module_level=True)


@dataclass(frozen=True)
class Shape:
    """A source table, its envelope codec and the two target tables it is applied to."""

    table: TableSchema
    schema_id: int
    # "_bin": tables whose text key compares byte by byte (REPLACE allowed); "_id": keyed by
    # the integer id alone (the library then orders the rows by key).
    tag: str = ""

    @cached_property
    def value_schema(self) -> dict[str, Any]:
        return value_schema("native", self.table)

    @cached_property
    def codec(self) -> Any:
        codec = compile_codec(fastavro.parse_schema(self.value_schema, _write_hint=True))
        assert codec is not None
        return codec

    @property
    def native(self) -> tuple[None, str]:
        return None, f"{self.table.table.name}{self.tag}_native"

    @property
    def python(self) -> tuple[None, str]:
        return None, f"{self.table.table.name}{self.tag}_python"


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
PG = Shape(TABLE, 4343)

# A MySQL/MariaDB source's types, as its catalog describes them (consumers see its Avro).
MY_TABLE = TableSchema(
    TableId("shop", "every_mysql_type"),
    (
        Column("id", "int", "int(11)", nullable=False),
        Column("code", "varchar", "varchar(20)", nullable=False),
        Column("tiny", "tinyint", "tinyint(4)"),
        Column("yr", "year", "year(4)"),
        Column("uint", "int", "int(10) unsigned"),
        Column("ubig", "bigint", "bigint(20) unsigned"),
        Column("f", "float", "float"),
        Column("d", "double", "double"),
        Column("dec", "decimal", "decimal(10,3)", precision=10, scale=3),
        Column("bits", "bit", "bit(8)"),
        Column("pick", "enum", "enum('x','y')"),
        Column("tags", "set", "set('a','b')"),
        Column("doc", "json", "longtext"),
        Column("day", "date", "date"),
        Column("local", "datetime", "datetime(6)"),
        Column("stamp", "timestamp", "timestamp(6)"),
        Column("at", "time", "time(6)"),
        Column("label", "varchar", "varchar(50)"),
        Column("blob", "blob", "blob"),
        Column("body", "text", "text"),
    ),
    ("id", "code"),
    engine="mysql",
)
MY = Shape(MY_TABLE, 4344)
PG_BIN, MY_BIN = Shape(TABLE, 4343, "_bin"), Shape(MY_TABLE, 4344, "_bin")
PG_ID = Shape(TableSchema(TABLE.table, TABLE.columns, ("id",)), 4345, "_id")

WIDE = Context(prec=40)
# NUL, tabs, newlines and backslashes included: MariaDB text holds them all.
texts = st.text(st.characters(codec="utf-8"), max_size=12)
price = st.integers(-(10**10) + 1, 10**10 - 1).map(lambda n: Decimal(n).scaleb(-2))
wide = st.integers(-(10**38) + 1, 10**38 - 1).map(lambda n: Decimal(n).scaleb(-10, WIDE))
whole = st.integers(-99999, 99999).map(Decimal)
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
uids = st.uuids().flatmap(lambda u: st.sampled_from([str(u), str(u).upper()]))
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
            "real4": nullable(st.floats(width=32, allow_nan=False, allow_infinity=False)),
            "real8": nullable(st.floats(allow_nan=False, allow_infinity=False)),
            "flag": nullable(st.booleans()),
            "label": nullable(texts),
            "price": nullable(price),
            "wide": nullable(wide),
            "whole": nullable(whole),
            "free": nullable(st.decimals(allow_nan=False, places=4).map(str)),
            "day": nullable(st.dates()),
            "at": nullable(st.times()),
            "local": nullable(naive),
            "stamp": nullable(naive.map(lambda d: d.replace(tzinfo=UTC))),
            "uid": nullable(uids),
            "doc": nullable(docs),
            "blob": nullable(st.binary(max_size=8)),
        }
    ).flatmap(lambda values: key.map(lambda k: {"id": k[0], "code": k[1], **values}))


# "a", "A" and "a " are one key to the target's case- and pad-insensitive collation.
keys = st.tuples(st.integers(0, 3), st.sampled_from(["a", "A", "a ", "b\tc", "ü\\n"]))
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


def encode(op: str, before: Row | None, after: Row | None, n: int, shape: Shape = PG) -> bytes:
    table = shape.table
    source = SourceInfo("postgresql", "t", "db", table.table, 1_700_000_000_000 + n, lsn=n)
    record = envelope_record(ChangeEvent(op, source, before, after, n), table)  # type: ignore[arg-type]
    out = bytearray(struct.pack(">bI", 0, shape.schema_id))
    shape.codec.write(out, record)
    return bytes(out)


def native_collapse(values: list[bytes], shape: Shape = PG) -> Any:
    plan = native_mysql.plan(shape.schema_id, shape.value_schema)
    assert plan is not None
    columns = shape.table.column_names
    return native_mysql.collapse(plan, columns, values, DELETED_GROUP, UPSERT_GROUP)


@pytest.fixture
def mysql_task(make_task: Callable[..., TaskConfig], mariadb_root: str) -> Iterator[TaskConfig]:
    for url in mariadb_database(mariadb_root):
        yield make_task(
            target={"engine": "mysql", "url": url, "batch_size": 500, "batch_wait_s": 0.2}
        )


@pytest.fixture
def target(mysql_task: TaskConfig) -> Iterator[tuple[MySqlSink, sa.Connection]]:
    """A MySQL sink (for its Python path) and its connection, with the tables created."""
    sink = MySqlSink(mysql_task)
    engine = MySqlTarget(local_infile=True).engine(mysql_task)
    with engine.connect() as conn:
        with conn.begin():
            for shape in (PG, MY, PG_BIN, MY_BIN, PG_ID):
                for where in (shape.native, shape.python):
                    sink._tables.ensure(conn, where, shape.table)
                    if shape.tag == "_bin":
                        collate_bytewise(conn, where[1], "code")
        yield sink, conn
    engine.dispose()
    sink.close()


def collate_bytewise(conn: sa.Connection, table: str, column: str) -> None:
    kind = conn.exec_driver_sql(
        "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = %s AND COLUMN_NAME = %s",
        (table, column),
    ).scalar()
    conn.exec_driver_sql(
        f"ALTER TABLE {table} MODIFY {column} {kind} COLLATE utf8mb4_nopad_bin NOT NULL"
    )


def apply_python(
    sink: MySqlSink, conn: sa.Connection, where: Any, values: list[bytes], shape: Shape = PG
) -> None:
    """The Python path: decode, collapse, SqlSink._write (multi-row upserts, DELETE IN)."""
    table = shape.table
    records = [
        SinkRecord("t", 0, i, table, event_from_record(shape.codec.read(v, 5), table))
        for i, v in enumerate(values)
    ]
    sink._write(conn, where, collapse(records).tables[table.table])


def apply_native(
    sink: MySqlSink,
    conn: sa.Connection,
    values: list[bytes],
    shape: Shape = PG,
    replace: bool = False,
) -> None:
    result = native_collapse(values, shape)
    assert not isinstance(result, Fallback), result
    copied, max_ts = result
    assert max_ts == max(1_700_000_000_000 + n for n in range(len(values)))
    target = sink._dml_table(shape.native, shape.table)
    # As MySqlSink does: straight into the target first (REPLACE where the table allows
    # it, else rows of inserts only), the stage for what that leaves.
    if replace:
        assert replaces_as_upsert(conn, shape.native, shape.table)
        direct = replaced_directly(conn, target, shape.table, [copied])
    else:
        direct = loaded_directly(conn, target, [copied])
    if not direct:
        load_copied(conn, target, shape.table, [copied])


def table_rows(conn: sa.Connection, name: str, shape: Shape = PG) -> list[tuple[Any, ...]]:
    columns = shape.table.column_names
    table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in columns))
    query = sa.select(table).order_by(table.c.id, sa.text("code COLLATE utf8mb4_bin"))
    with conn.begin():
        return [tuple(r) for r in conn.execute(query)]


@settings(
    max_examples=int(os.environ.get("HEADWATER_NATIVE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(earlier=events, batch=events, replace=st.booleans(), by_id=st.booleans())
def test_native_rows_equal_the_python_path(
    target: tuple[MySqlSink, sa.Connection],
    earlier: list[Event],
    batch: list[Event],
    replace: bool,
    by_id: bool,
) -> None:
    shape = PG_ID if by_id else PG_BIN if replace else PG
    both_ways(*target, shape, earlier, batch, replace)


def both_ways(
    sink: MySqlSink,
    conn: sa.Connection,
    shape: Shape,
    earlier: list[Event],
    batch: list[Event],
    replace: bool = False,
) -> None:
    """Apply `earlier` through Python to both tables, then `batch` natively to one and
    through Python to the other; the tables must end equal, both ways."""
    before = [encode(op, b, a, n, shape) for n, (op, b, a) in enumerate(earlier)]
    values = [encode(op, b, a, n, shape) for n, (op, b, a) in enumerate(batch)]
    with conn.begin():
        for where in (shape.native, shape.python):
            conn.execute(sa.delete(sa.table(where[1])))
            apply_python(sink, conn, where, before, shape)  # the same rows to start from
        apply_native(sink, conn, values, shape, replace)
        apply_python(sink, conn, shape.python, values, shape)
    native = table_rows(conn, shape.native[1], shape)
    python = table_rows(conn, shape.python[1], shape)
    assert [r for r in native if r not in python] == []
    assert [r for r in python if r not in native] == []
    assert native == python


# Values as the MySQL producer hands them to Avro (schemas/mysql_types.py).
my_texts = st.text(st.characters(codec="utf-8"), max_size=10)
my_rows = st.fixed_dictionaries(
    {
        "tiny": nullable(st.integers(-128, 127)),
        "yr": nullable(st.integers(1901, 2155)),
        "uint": nullable(st.integers(0, 2**32 - 1)),
        # Up to what the target's BIGINT holds (beyond it both paths refuse the row).
        "ubig": nullable(st.one_of(st.integers(0, 2**63 - 1), st.just(2**63 - 1)).map(Decimal)),
        "f": nullable(st.floats(width=32, allow_nan=False, allow_infinity=False)),
        "d": nullable(st.floats(allow_nan=False, allow_infinity=False)),
        "dec": nullable(
            st.integers(-(10**10) + 1, 10**10 - 1).map(lambda n: Decimal(n).scaleb(-3))
        ),
        "bits": nullable(st.binary(min_size=1, max_size=1)),
        "pick": nullable(st.sampled_from(["x", "y"])),
        "tags": nullable(st.sampled_from(["", "a", "b", "a,b"])),
        "doc": nullable(docs),
        "day": nullable(st.dates(min_value=date(1000, 1, 1))),
        "local": nullable(st.datetimes(min_value=datetime(1000, 1, 1))),
        "stamp": nullable(
            st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2038, 1, 18)).map(
                lambda d: d.replace(tzinfo=UTC)
            )
        ),
        "at": nullable(st.times()),
        "label": nullable(my_texts),
        "blob": nullable(st.binary(max_size=8)),
        "body": nullable(my_texts),
    }
)
my_keys = st.tuples(st.integers(0, 3), st.sampled_from(["a", "A", "b\tc", "ü"]))


def my_row(key: st.SearchStrategy[tuple[int, str]]) -> st.SearchStrategy[Row]:
    return my_rows.flatmap(lambda values: key.map(lambda k: {"id": k[0], "code": k[1], **values}))


my_events = st.lists(
    st.one_of(
        my_row(my_keys).map(lambda r: ("c", None, r)),
        st.tuples(my_row(my_keys), my_row(my_keys)).map(lambda p: ("u", p[0], p[1])),
        my_keys.map(lambda k: ("d", {"id": k[0], "code": k[1]}, None)),
    ),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=int(os.environ.get("HEADWATER_NATIVE_EXAMPLES", "60")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(earlier=my_events, batch=my_events, replace=st.booleans())
def test_native_rows_equal_the_python_path_from_a_mysql_source(
    target: tuple[MySqlSink, sa.Connection], earlier: list[Event], batch: list[Event], replace: bool
) -> None:
    both_ways(*target, MY_BIN if replace else MY, earlier, batch, replace)


def items_table(name: str, name_width: int = 200, extra: str = "") -> str:
    """CREATE TABLE for the columns of tests.sink_support.table_schema, made by hand."""
    return (
        f"CREATE TABLE {name} (id INT PRIMARY KEY, name VARCHAR({name_width}) NOT NULL, "
        "price DECIMAL(12,2), note LONGTEXT, created DATETIME(6), payload JSON, "
        f"uid CHAR(36), data LONGBLOB, day DATE, at TIME(6){extra})"
    )


def test_replace_only_where_it_is_an_upsert(target: tuple[MySqlSink, sa.Connection]) -> None:
    """REPLACE deletes the row it meets: not where that deletes another row (a second
    unique key), fires ON DELETE actions (a foreign key naming the table) or triggers, or
    resets a column the rows do not carry."""
    _sink, conn = target
    schema = table_schema("replace_probe")
    extras = {
        "plain": [],
        "unique": ["ALTER TABLE {t} ADD UNIQUE KEY (uid)"],
        "referred": [
            "CREATE TABLE {t}_child (id INT PRIMARY KEY, parent INT, "
            "FOREIGN KEY (parent) REFERENCES {t} (id) ON DELETE CASCADE)"
        ],
        "trigger": ["CREATE TRIGGER {t}_audit AFTER DELETE ON {t} FOR EACH ROW SET @gone = 1"],
        "wider": ["ALTER TABLE {t} ADD COLUMN kept VARCHAR(10) DEFAULT 'x'"],
        "text_key": ["ALTER TABLE {t} DROP PRIMARY KEY, ADD PRIMARY KEY (id, uid)"],
        "bytewise_key": [
            "ALTER TABLE {t} MODIFY uid CHAR(36) COLLATE utf8mb4_nopad_bin NOT NULL",
            "ALTER TABLE {t} DROP PRIMARY KEY, ADD PRIMARY KEY (id, uid)",
        ],
    }
    found = {}
    with conn.begin():
        for case, statements in extras.items():
            name = f"replace_{case}"
            conn.exec_driver_sql(items_table(name))
            for statement in statements:
                conn.exec_driver_sql(statement.format(t=name))
            found[case] = replaces_as_upsert(conn, (None, name), schema)
    assert found == {
        "plain": True,
        "unique": False,
        "referred": False,
        "trigger": False,
        "wider": False,
        "text_key": False,
        "bytewise_key": True,
    }


def test_the_sink_created_table_is_loaded_natively(
    target: tuple[MySqlSink, sa.Connection],
) -> None:
    _sink, conn = target
    with conn.begin():
        for shape in (PG, MY):
            assert loads_into(shape.table, target_types(conn, shape.native)), shape.table
        conn.exec_driver_sql("ALTER TABLE every_type_python MODIFY small YEAR")
        assert not loads_into(TABLE, target_types(conn, PG.python))


def test_what_the_library_leaves_to_python() -> None:
    ok = encode("c", None, {"id": 1, "code": "a"}, 0)
    assert not isinstance(native_collapse([ok]), Fallback)
    cases: dict[str, Row] = {
        "date infinity": {"day": DATE_INFINITY["infinity"]},
        "timestamp -infinity": {"stamp": TIMESTAMP_INFINITY["-infinity"]},
        "local infinity": {"local": TIMESTAMP_INFINITY["infinity"]},
        "NaN": {"real8": float("nan")},
        "infinite float": {"real4": float("-inf")},
        "uuid in braces": {"uid": "{" + str(uuid.UUID(int=5)) + "}"},
    }
    for label, values in cases.items():
        message = encode("c", None, {"id": 2, "code": "b", **values}, 1)
        assert native_collapse([ok, message]) == Fallback(False, 0), label


def test_edge_values_as_mariadb_stores_them(target: tuple[MySqlSink, sa.Connection]) -> None:
    """A few values spelled out, so a wrong formatter shows here by name."""
    sink, conn = target
    row: Row = {
        "id": 7,
        "code": "tab\there\\back\nline\x00nul\\N",
        "real4": 3.4028234663852886e38,
        "real8": -0.0,
        "price": Decimal("-0.05"),
        "wide": Decimal("-9999999999999999999999999999.9999999999"),
        "whole": Decimal(0),
        "free": "\\N",
        "day": date(1, 1, 1),
        "at": time(23, 59, 59, 999999),
        "local": datetime(9999, 12, 31, 23, 59, 59, 999999),
        "stamp": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "uid": str(uuid.UUID(int=0xABC)).upper(),
        "blob": bytes(range(256)),
        "flag": False,
        "label": "",
    }
    values = [encode("c", None, row, 0)]
    with conn.begin():
        apply_native(sink, conn, values)
        apply_python(sink, conn, PG.python, values)
    [native] = table_rows(conn, PG.native[1])
    assert native == table_rows(conn, PG.python[1])[0]
    got = dict(zip(TABLE.column_names, native, strict=True))
    assert got["code"] == row["code"] and got["free"] == "\\N" and got["label"] == ""
    assert got["uid"] == str(uuid.UUID(int=0xABC)) and got["blob"] == row["blob"]
    assert got["stamp"] == datetime(1969, 12, 31, 23, 59, 59, 999999)
    assert got["wide"] == row["wide"] and got["day"] == row["day"] and got["flag"] == 0


def test_load_data_local_sends_only_the_sinks_own_files(
    target: tuple[MySqlSink, sa.Connection], tmp_path: Path
) -> None:
    """A LOAD DATA LOCAL naming any other file (as a hostile server's reply could) is
    refused by the client: nothing of it reaches the server."""
    _sink, conn = target
    secret = tmp_path / "secret.tsv"
    secret.write_text("1\tnot for the server\n")
    conn.exec_driver_sql("CREATE TEMPORARY TABLE probe (id INT, body TEXT)")
    with pytest.raises(sa.exc.OperationalError, match="refused"):
        conn.exec_driver_sql("LOAD DATA LOCAL INFILE %s INTO TABLE probe", (str(secret),))
    conn.rollback()
    with allowed(str(secret)):
        conn.exec_driver_sql("LOAD DATA LOCAL INFILE %s INTO TABLE probe", (str(secret),))
    assert conn.exec_driver_sql("SELECT id, body FROM probe").all() == [(1, "not for the server")]
    conn.rollback()


def test_a_value_the_target_cannot_hold_is_refused(
    target: tuple[MySqlSink, sa.Connection],
) -> None:
    """LOAD DATA LOCAL only warns where strict mode errs: the warning refuses the load."""
    sink, conn = target
    with conn.begin():
        conn.exec_driver_sql("ALTER TABLE every_type_native MODIFY label VARCHAR(3)")
    values = [encode("c", None, {"id": 1, "code": "a", "label": "too long"}, 0)]
    with pytest.raises(LoadRefused, match="label"), conn.begin():
        apply_native(sink, conn, values)


def test_inserts_of_keys_already_there_go_through_the_stage(
    target: tuple[MySqlSink, sa.Connection],
) -> None:
    """An insert-only batch is loaded straight into the target unless a key is already
    there (LOAD DATA LOCAL would skip it with a warning): then nothing of the direct load
    stays and the stage upserts every row."""
    sink, conn = target
    table = sink._dml_table(PG.native, PG.table)
    with conn.begin():
        conn.execute(sa.delete(table))
        first = native_collapse(
            [encode("c", None, {"id": k, "code": "k", "label": "a"}, k) for k in (1, 2)]
        )
        assert loaded_directly(conn, table, [first[0]])
    again = [encode("c", None, {"id": k, "code": "k", "label": "b"}, k) for k in (2, 3)]
    with conn.begin():
        copied = native_collapse(again)[0]
        assert copied.inserts_only
        assert not loaded_directly(conn, table, [copied])
        assert [label(r) for r in table_rows_in(conn, PG.native[1])] == [(1, "a"), (2, "a")]
        load_copied(conn, table, PG.table, [copied])
    assert [label(r) for r in table_rows(conn, PG.native[1])] == [(1, "a"), (2, "b"), (3, "b")]


def label(row: tuple[Any, ...]) -> tuple[Any, Any]:
    return row[0], row[TABLE.column_names.index("label")]


def table_rows_in(conn: sa.Connection, name: str) -> list[tuple[Any, ...]]:
    """The rows of `name` inside the transaction `conn` is in."""
    table = sa.Table(name, sa.MetaData(), *(sa.Column(c) for c in TABLE.column_names))
    return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


@pytest.fixture
def task(mysql_task: TaskConfig) -> TaskConfig:
    """The task `feed` sends for."""
    return mysql_task


def test_a_sink_applies_through_the_native_path(task: TaskConfig, feed: ChangeFeed) -> None:
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
    sink = run_until_caught_up(task)
    assert sink.loop.native is not None and sink.loop.native.taken_events == events
    engine = MySqlTarget().engine(task)
    with engine.connect() as conn:
        got = conn.exec_driver_sql(
            "SELECT id, name, price, created, uid, data FROM items_native ORDER BY id"
        ).fetchall()
    engine.dispose()
    assert [tuple(r) for r in got] == [
        (
            k,
            expected[k]["name"],
            expected[k]["price"],
            expected[k]["created"].replace(tzinfo=None),
            expected[k]["uid"],
            expected[k]["data"],
        )
        for k in sorted(expected)
    ]


def test_updates_keep_what_a_replace_would_lose(task: TaskConfig, feed: ChangeFeed) -> None:
    """A target table with a column of its own and child rows that an ON DELETE CASCADE
    foreign key ties to it: the sink's native updates keep both (no REPLACE there)."""
    engine = MySqlTarget().engine(task)
    with engine.begin() as conn:
        conn.exec_driver_sql(items_table("items_kept", extra=", kept VARCHAR(20)"))
        conn.exec_driver_sql(
            "CREATE TABLE items_kept_child (id INT PRIMARY KEY, parent INT NOT NULL, "
            "FOREIGN KEY (parent) REFERENCES items_kept (id) ON DELETE CASCADE)"
        )
    items = table_schema("items_kept")
    feed.register(items)
    for key in range(1, 21):
        feed.send(items, "c", after=sink_row(key))
    feed.flush()
    sink = run_until_caught_up(task)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE items_kept SET kept = CONCAT('mine ', id)")
        conn.exec_driver_sql("INSERT INTO items_kept_child SELECT id, id FROM items_kept")
    for key in range(1, 21):
        feed.send(items, "u", after=sink_row(key, 1))
    feed.flush()
    sink = run_until_caught_up(task)
    assert sink.loop.native is not None and sink.loop.native.taken_events == 20
    with engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT id, name, kept FROM items_kept ORDER BY id").fetchall()
        children = conn.exec_driver_sql("SELECT COUNT(*) FROM items_kept_child").scalar()
    engine.dispose()
    assert [tuple(r) for r in got] == [(k, f"item {k} v1", f"mine {k}") for k in range(1, 21)]
    assert children == 20


def test_a_refused_record_reaches_the_dead_letter_topic(task: TaskConfig, feed: ChangeFeed) -> None:
    """The native load of the batch is refused (a name too long), the batch is applied again
    through the Python path, which sends that one record to the dead-letter topic."""
    engine = MySqlTarget().engine(task)
    with engine.begin() as conn:
        conn.exec_driver_sql(items_table("items_poison", name_width=12))
    items = table_schema("items_poison")
    feed.register(items)
    for key in range(1, 41):
        name: dict[str, Any] = {"name": "a name far too long for the target"} if key == 23 else {}
        feed.send(items, "c", after=sink_row(key, **name))
    feed.flush()
    sink = run_until_caught_up(task)
    assert sink.loop.native is not None and sink.loop.native.taken_events == 40
    with engine.connect() as conn:
        got = [r[0] for r in conn.exec_driver_sql("SELECT id FROM items_poison ORDER BY id")]
    engine.dispose()
    assert got == [k for k in range(1, 41) if k != 23]
    [letter] = read_dead_letters(task, 1)
    headers = dict(letter.headers())
    assert headers["headwater.offset"] == b"22"
    assert sink.loop.dead_letters is not None and sink.loop.dead_letters.written == 1


def test_without_load_data_local_the_python_path_goes_on(
    task: TaskConfig, feed: ChangeFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection without the local infile capability (as with a server's local_infile=0):
    the first native load fails, the batch goes through Python, and the native path stays
    off for the sink."""
    monkeypatch.setattr(mysql_sink, "native_mysql", SimpleNamespace(available=lambda: False))
    items = table_schema("items_no_load")
    feed.register(items)
    for key in range(1, 31):
        feed.send(items, "c", after=sink_row(key))
    feed.flush()
    sink = run_until_caught_up(task)
    assert sink.loop.native is not None and sink.loop.native.taken_events == 30
    assert isinstance(sink.loop.target, MySqlSink)
    assert not sink.loop.target.takes_native(items.table)
    engine = MySqlTarget().engine(task)
    with engine.connect() as conn:
        got = [r[0] for r in conn.exec_driver_sql("SELECT id FROM items_no_load ORDER BY id")]
    engine.dispose()
    assert got == list(range(1, 31))
