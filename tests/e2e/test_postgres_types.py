"""Every common PostgreSQL type travels PostgreSQL -> Kafka -> PostgreSQL exactly, through the
full load and through the stream, edge values included (NULLs, NaN, infinities, extremes,
padding, unicode, empty arrays)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.postgres.connection import connect

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TABLE every_type (
    id int PRIMARY KEY,
    s smallint, i integer, b bigint,
    n numeric(12,2), nf numeric, r real, d double precision,
    t text, vc varchar(10), c char(4), flag boolean,
    day date, tm time, tmtz timetz, ts timestamp, tstz timestamptz, iv interval,
    u uuid, js json, jb jsonb, raw bytea,
    ip inet, net cidr, mac macaddr, cash money,
    feeling mood, pos positive_int,
    ints int[], words text[]
)
"""

ROWS = [
    "(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(2, -32768, -2147483648, -9223372036854775808, -9999999999.99, 'NaN', 'NaN', '-Infinity',"
    " '', '', 'a', false, '0001-01-01', '00:00:00', '00:00:00+14', '0001-01-01 00:00:00',"
    " '-infinity', '-178000000 years', '00000000-0000-0000-0000-000000000000', '[]', '{}',"
    " '\\x', '0.0.0.0', '::/0', '00:00:00:00:00:00', '-92233720368547758.08', 'sad', 1,"
    " '{}', '{}')",
    "(3, 32767, 2147483647, 9223372036854775807, 9999999999.99, '1e-30', 'Infinity', 1e308,"
    " 'tëxt ☃ \\ \" '' tab\there', 'ten chars.', 'ab', true, '9999-12-31', '23:59:59.999999',"
    " '23:59:59.999999-12', '9999-12-31 23:59:59.999999', 'infinity', '1 day 02:03:04.5',"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2.5, null]}', '{\"z\": {\"y\": 1}}',"
    " '\\x00ff7f80', '2001:db8::1/128', '10.0.0.0/8', 'ff:ff:ff:ff:ff:ff', '92233720368547758.07',"
    " 'happy', 2147483647, '{1,NULL,3}', '{\"a b\",\"c,d\",NULL}')",
]


def test_every_type_round_trips_through_load_and_stream(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task()
    with connect(task.source.url) as conn:
        for statement in DDL.split(";\n"):
            conn.execute(statement)
        for row in ROWS:
            conn.execute(f"INSERT INTO every_type VALUES {row}")  # the full load
    runner = TaskRunner(task)
    runner.start()
    try:
        runner.wait_caught_up(180)
        with connect(task.source.url) as conn:  # the same rows again, through the log
            conn.execute(
                "INSERT INTO every_type SELECT id + 100, s, i, b, n, nf, r, d, t, vc, "
                "c, flag, day, tm, tmtz, ts, tstz, iv, u, js, jb, raw, ip, net, mac, "
                "cash, feeling, pos, ints, words FROM every_type"
            )
            conn.execute("UPDATE every_type SET t = t || '!' WHERE id IN (3, 103)")
        runner.wait_caught_up(120)
    finally:
        runner.stop(timeout=20)
    (comparison,) = compare_task(task)
    assert comparison.source_rows == comparison.target_rows == 6
    assert comparison.matches, (comparison.missing, comparison.extra, comparison.different)
