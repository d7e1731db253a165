"""MySQL/MariaDB type mapping and the producer's pure parts: snapshot and binlog values of the
same row become the same Avro value; positions, GTID states and chunk queries."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from producers.mysql.changes import truncated_table
from producers.mysql.flavor import Flavor, GtidTracker, reader_resume_args
from producers.mysql.position import BinlogPosition
from producers.mysql.snapshot import _key_args, chunk_query, decode_key, encode_key
from schemas.avro_schemas import value_schema
from schemas.envelope import ChangeEvent, SourceInfo, envelope_record
from schemas.mysql_types import mysql_avro_type, set_members, to_avro_value
from schemas.tables import Column, TableId, TableSchema


def col(
    type_name: str, sql_type: str | None = None, p: int | None = None, s: int | None = None
) -> Column:
    return Column(type_name, type_name, sql_type or type_name, True, p, s)


@pytest.mark.parametrize(
    ("column", "snapshot", "binlog", "expected"),
    [
        (col("bit", "bit(10)"), b"\x02\xaa", "1010101010", b"\x02\xaa"),
        (col("set", "set('x','y','z')"), "x,z", {"z", "x"}, "x,z"),
        (col("date"), "0000-00-00", None, None),
        (col("datetime"), "0000-00-00 00:00:00", None, None),
        (
            col("time", "time(2)"),
            timedelta(hours=12, microseconds=250000),
            timedelta(hours=12, microseconds=250000),
            time(12, 0, 0, 250000),
        ),
        (col("time"), timedelta(hours=-1), timedelta(hours=-1), None),
        (col("time"), timedelta(hours=30), timedelta(hours=30), None),
        (col("bigint", "bigint(20) unsigned"), 2**64 - 1, 2**64 - 1, Decimal(2**64 - 1)),
        (col("json"), '{"a": [1, 2]}', {b"a": [1, 2]}, '{"a": [1, 2]}'),
        (col("decimal", "decimal(5,2)", 5, 2), Decimal("1.50"), Decimal("1.5"), Decimal("1.50")),
        (
            col("timestamp", "timestamp(3)"),
            datetime(2024, 1, 1, 12, 0, 0, 5000),
            datetime(2024, 1, 1, 12, 0, 0, 5000),
            datetime(2024, 1, 1, 12, 0, 0, 5000, tzinfo=UTC),
        ),
        (col("year"), 2024, 2024, 2024),
        (col("date"), date(2024, 2, 29), date(2024, 2, 29), date(2024, 2, 29)),
    ],
)
def test_snapshot_and_binlog_values_agree(
    column: Column, snapshot: Any, binlog: Any, expected: Any
) -> None:
    assert to_avro_value(column, snapshot) == expected
    assert to_avro_value(column, binlog) == expected


def test_unsigned_and_decimal_avro_types() -> None:
    assert mysql_avro_type(col("bigint", "bigint unsigned"))["precision"] == 20  # type: ignore[index]
    assert mysql_avro_type(col("int", "int(10) unsigned")) == "long"
    assert mysql_avro_type(col("int")) == "int"
    assert mysql_avro_type(col("geometry")) == "string"
    assert set_members("set('a','it''s')") == ["a", "it's"]


def test_a_row_of_every_type_encodes_with_its_schema() -> None:
    columns = (
        Column("id", "bigint", "bigint(20) unsigned", False),
        Column("b", "bit", "bit(3)"),
        Column("t", "time", "time"),
        Column("ts", "timestamp", "timestamp"),
        Column("dt", "datetime", "datetime"),
        Column("de", "decimal", "decimal(4,1)", True, 4, 1),
        Column("j", "json", "json"),
        Column("bl", "blob", "blob"),
    )
    schema = TableSchema(TableId("db", "t"), columns, ("id",), engine="mysql")
    values = {
        "id": 2**64 - 1,
        "b": "101",
        "t": timedelta(seconds=1),
        "ts": datetime(2024, 1, 1),
        "dt": datetime(2024, 1, 1),
        "de": Decimal("1.5"),
        "j": "[]",
        "bl": b"\x00",
    }
    row = {c.name: to_avro_value(c, values[c.name]) for c in columns}
    source = SourceInfo("mysql", "p", "db", schema.table, 0, file="f.000001", pos=4)
    record = envelope_record(ChangeEvent("c", source, None, row, 0), schema)
    parsed = fastavro.parse_schema(value_schema("p", schema))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    buffer.seek(0)
    back: Any = fastavro.schemaless_reader(buffer, parsed)
    assert back["after"]["id"] == Decimal(2**64 - 1) and back["after"]["b"] == b"\x05"


def test_positions_order_along_the_binlog() -> None:
    early = BinlogPosition("mariadb-bin.000004", 999_999)
    late = BinlogPosition("mariadb-bin.000005", 4)
    assert early.ordinal < late.ordinal
    assert BinlogPosition.from_dict(late.to_dict()) == late
    assert BinlogPosition.from_dict({}) is None


def test_mariadb_gtid_state_keeps_the_last_per_domain() -> None:
    tracker = GtidTracker(Flavor(True, "10.11.19-MariaDB"), "0-1-30,1-2-7")
    tracker.add("0-1-31")
    tracker.add("2-1-1")
    assert tracker.state() == "0-1-31,1-2-7,2-1-1"


def test_mysql_gtid_set_grows_by_each_transaction() -> None:
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    tracker = GtidTracker(Flavor(False, "8.0.36"), f"{uuid}:1-5")
    tracker.add(f"{uuid}:6")
    assert tracker.state() == f"{uuid}:1-6"


def test_resume_arguments() -> None:
    pos = BinlogPosition("mariadb-bin.000004", 963, "0-1-30")
    mariadb = Flavor(True, "10.11")
    assert reader_resume_args(mariadb, pos, True) == {"is_mariadb": True, "auto_position": "0-1-30"}
    # file/offset must run with is_mariadb=False, or pymysqlreplication ignores them
    assert reader_resume_args(mariadb, pos, False)["is_mariadb"] is False


def test_chunk_query_for_a_composite_key() -> None:
    schema = TableSchema(TableId("db", "t"), (col("a"), col("b"), col("v")), ("a", "b"), "mysql")
    query = chunk_query(schema, resume=True)
    assert "WHERE (`a` > %s) OR (`a` = %s AND `b` > %s) ORDER BY `a`, `b` LIMIT %s" in query
    assert _key_args([1, 2]) == [1, 1, 2]
    key = [b"\x00\xff", "x", 3, Decimal("1.5")]
    assert decode_key(encode_key(key)) == [b"\x00\xff", "x", 3, "1.5"]


def test_truncate_statements_name_their_table() -> None:
    assert truncated_table("TRUNCATE TABLE `a`.`b`", "x") == TableId("a", "b")
    assert truncated_table("truncate b", "x") == TableId("x", "b")
    assert truncated_table("TRUNCATE TABLE `we``ird`;", "d") == TableId("d", "we`ird")
    assert truncated_table("ALTER TABLE b ADD c int", "x") is None
