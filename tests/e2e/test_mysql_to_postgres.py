"""End to end, MariaDB source into the PostgreSQL target: every type of
docs/type-mapping-mysql.md through the snapshot and through the binlog, arriving as
documented; the source checks' one-line errors. Also unsigned bigint into a MariaDB target."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from tests.mysql_support import execute, mysql_db, mysql_task, runner
from tests.sink_support import mariadb_database

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["mysql_db", "mysql_task", "runner"]

TYPES_DDL = """
CREATE TABLE all_types (
  id bigint unsigned PRIMARY KEY,
  ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned,
  mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint,
  de decimal(12,3), fl float, db double, b bit(10), bo bool,
  ch char(5), vc varchar(20), l1 varchar(20) CHARACTER SET latin1,
  gk varchar(20) CHARACTER SET greek, tt tinytext, tx text, mt mediumtext, lt longtext,
  bn binary(4), vb varbinary(10), tb tinyblob, bl blob, mb mediumblob, lb longblob,
  d date, dt datetime, dt6 datetime(6), ts timestamp(3) NULL, tm time, tm2 time(2),
  y year, e enum('a','b c'), s set('x','y','z'), j json,
  zd date, zdt datetime
)
"""

INSERT = """
INSERT INTO all_types VALUES (%s,
  -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 123456789.123, 1.5, 2.25, b'1010101010', true,
  'ab', 'héllo ✓', 'café', 'αβγ', 'tiny', 'text ✓', 'medium', 'long',
  x'00010203', x'ff00', x'01', x'deadbeef', x'02', x'03',
  '2024-02-29', '2024-02-29 12:34:56', '2024-02-29 12:34:56.123456',
  '2024-02-29 12:34:56.789', '23:59:59', '12:00:00.25',
  2024, 'b c', 'x,z', '{"a": [1, 2]}', '0000-00-00', '0000-00-00 00:00:00')
"""

NULLS = "INSERT INTO all_types (id) VALUES (%s)"

EXPECTED: dict[str, Any] = {
    "ti": -128,
    "tiu": 255,
    "si": -32768,
    "siu": 65535,
    "mi": -8388608,
    "miu": 16777215,
    "i": -2147483648,
    "iu": 4294967295,
    "bi": -9223372036854775808,
    "de": Decimal("123456789.123"),
    "fl": 1.5,
    "db": 2.25,
    "b": b"\x02\xaa",
    "bo": 1,
    "ch": "ab",
    "vc": "héllo ✓",
    "l1": "café",
    "gk": "αβγ",
    "tt": "tiny",
    "tx": "text ✓",
    "mt": "medium",
    "lt": "long",
    "bn": b"\x00\x01\x02\x03",
    "vb": b"\xff\x00",
    "tb": b"\x01",
    "bl": b"\xde\xad\xbe\xef",
    "mb": b"\x02",
    "lb": b"\x03",
    "d": dt.date(2024, 2, 29),
    "dt": dt.datetime(2024, 2, 29, 12, 34, 56),
    "dt6": dt.datetime(2024, 2, 29, 12, 34, 56, 123456),
    "ts": dt.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=dt.UTC),
    "tm": dt.time(23, 59, 59),
    "tm2": dt.time(12, 0, 0, 250000),
    "y": 2024,
    "e": "b c",
    "s": "x,z",
    "j": {"a": [1, 2]},
    "zd": None,
    "zdt": None,
}

# id 18446744073709551615 (unsigned bigint max) comes through the snapshot, 2**63 the log.
SNAPSHOT_ID = 2**64 - 1
STREAM_ID = 2**63


def target_rows(task: TaskConfig, table: str) -> dict[Any, dict[str, Any]]:
    schema = task.tables.include[0].split(".")[0]
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(schema, table))
        )
        return {row["id"]: row for row in cur.fetchall()}


def test_every_type_round_trips_into_postgres(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    runner: Callable[[TaskConfig], TaskRunner],
) -> None:
    execute(mysql_db, TYPES_DDL)
    _insert(mysql_db, SNAPSHOT_ID)
    _insert(mysql_db, 1, nulls=True)
    task = mysql_task()
    r = runner(task)
    r.wait_caught_up(120)
    _insert(mysql_db, STREAM_ID)
    _insert(mysql_db, 2, nulls=True)
    execute(mysql_db, "UPDATE all_types SET vc = 'changed' WHERE id = 1")
    r.wait_caught_up(120)
    rows = target_rows(task, "all_types")
    assert set(rows) == {Decimal(SNAPSHOT_ID), Decimal(STREAM_ID), 1, 2}
    for key in (SNAPSHOT_ID, STREAM_ID):
        got = {k: v for k, v in rows[Decimal(key)].items() if k != "id"}
        assert got == EXPECTED, key
    assert rows[1]["vc"] == "changed"
    assert all(v is None for k, v in rows[2].items() if k != "id")


def _insert(url: str, key: int, nulls: bool = False) -> None:
    from producers.mysql.connection import connect

    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # zero dates, as old applications write them
        cur.execute(NULLS if nulls else INSERT, (key,))


def test_unsigned_bigint_extremes_into_a_mariadb_target(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    mariadb_root: str,
    runner: Callable[[TaskConfig], TaskRunner],
) -> None:
    """MariaDB to MariaDB: `bigint unsigned` (a decimal on the wire) lands in DECIMAL(20,0),
    so 2**64-1 (snapshot) and 2**63 (binlog) arrive as keys and values, not in the DLQ."""
    execute(
        mysql_db, "CREATE TABLE big (id bigint unsigned PRIMARY KEY, v bigint unsigned, s bigint)"
    )
    execute(mysql_db, "INSERT INTO big VALUES (%s, %s, -1)", args=(SNAPSHOT_ID, SNAPSHOT_ID))
    for target_url in mariadb_database(mariadb_root):
        task = mysql_task(target={"engine": "mysql", "url": target_url, "batch_wait_s": 0.2})
        r = runner(task)
        r.wait_caught_up(120)
        execute(mysql_db, "INSERT INTO big VALUES (%s, %s, 0)", args=(STREAM_ID, STREAM_ID))
        execute(mysql_db, "UPDATE big SET s = 7 WHERE id = %s", args=(SNAPSHOT_ID,))
        r.wait_caught_up(120)
        engine = sa.create_engine(target_url)
        try:
            with engine.connect() as conn:
                column = conn.exec_driver_sql(
                    "SELECT COLUMN_TYPE FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'big' AND COLUMN_NAME = 'v'"
                ).scalar()
                rows = conn.exec_driver_sql("SELECT id, v, s FROM big ORDER BY id").all()
        finally:
            engine.dispose()
        assert str(column).lower() == "decimal(20,0)"
        assert [tuple(row) for row in rows] == [
            (STREAM_ID, STREAM_ID, 0),
            (SNAPSHOT_ID, SNAPSHOT_ID, 7),
        ]
