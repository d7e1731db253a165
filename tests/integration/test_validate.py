"""`headwater validate` against real databases: one changed cell, one missing row and one
extra row found in a large table and reported exactly; equal pairs reported clean, same
engine and across engines (PostgreSQL -> MariaDB built directly with SQL, and back)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from headwater.config import TaskConfig
from headwater.sample_db import create_sample
from headwater.validate.run import ValidateOptions, validate_task
from headwater.validate.table_check import ChunkPlan
from producers.errors import SourceError
from tests.mysql_support import execute, mysql_db

pytestmark = pytest.mark.integration
__all__ = ["mysql_db"]

ITEMS_SQL = """
CREATE TABLE groups_ (id integer PRIMARY KEY, label text NOT NULL);
INSERT INTO groups_ SELECT g, 'group ' || g FROM generate_series(1, 50) g;
CREATE TABLE items (
    id bigint PRIMARY KEY, group_id integer REFERENCES groups_(id), name text,
    amount numeric(12,2), ratio float8, happened timestamptz, flag boolean, payload bytea
);
INSERT INTO items
SELECT g, 1 + g %% 50, 'item ' || g, (g %% 10000) * 1.25, g / 7.0,
       timestamptz '2021-01-01 00:00:00+00' + g * interval '1 second 250 microseconds',
       g %% 3 = 0, CASE WHEN g %% 5 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END
FROM generate_series(1, %(rows)s) g;
CREATE TABLE pairs (a integer, b text, v integer, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT g / 10, 'k' || (g %% 10), g FROM generate_series(1, 5000) g;
"""


def _fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ITEMS_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"rows": rows})


def _run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _differences(result: Any) -> dict[str, list[tuple[str, dict[str, str], list[str]]]]:
    return {
        t.table: sorted(
            ((d.kind, d.key, d.columns) for d in t.rows), key=lambda d: (d[0], list(d[1].values()))
        )
        for t in result.tables
        if t.rows
    }


@pytest.fixture
def pg_pair(
    pg_databases: tuple[str, str], make_task: Callable[..., TaskConfig], request: Any
) -> Iterator[tuple[str, str, TaskConfig]]:
    rows = getattr(request, "param", 100_000)
    source, target = pg_databases
    _fill(source, rows)
    _fill(target, rows)
    yield source, target, make_task(mode="full-load")


@pytest.mark.parametrize(
    "pg_pair", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)], indirect=True
)
def test_finds_exactly_the_changed_missing_and_extra_rows(
    pg_pair: tuple[str, str, TaskConfig],
) -> None:
    _source, target, task = pg_pair
    _run(
        target,
        "UPDATE items SET amount = amount + 0.01 WHERE id = 4242",
        "DELETE FROM items WHERE id = 77777",
        "INSERT INTO items VALUES (99999999, 1, 'stray', 1, 1, now(), true, NULL)",
        "UPDATE pairs SET v = -1 WHERE a = 7 AND b = 'k3'",
    )
    result = validate_task(task)
    assert _differences(result) == {
        "public.items": [
            ("changed", {"id": "4242"}, ["amount"]),
            ("extra", {"id": "99999999"}, []),
            ("missing", {"id": "77777"}, []),
        ],
        "public.pairs": [("changed", {"a": "7", "b": "k3"}, ["v"])],
    }
    items = next(t for t in result.tables if t.table == "public.items")
    assert items.differences == 3 and items.chunks_differing >= 1
    assert {t.column: t.matches for t in items.totals} == {"group_id": False, "amount": False}
    assert [o.orphans for o in items.orphans] == [0]
    assert not result.matches


def test_equal_pair_is_clean_and_cli_writes_reports(
    pg_pair: tuple[str, str, TaskConfig], tmp_path: Path
) -> None:
    _source, target, task = pg_pair
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task.model_dump(by_alias=True, exclude_none=True)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater.cli",
            "validate",
            str(task_file),
            "--json",
            str(tmp_path / "v.json"),
            "--html",
            str(tmp_path / "v.html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["verdict"] == "pass"
    assert {t["table"]: t["source_rows"] for t in report["tables"]} == {
        "public.groups_": 50,
        "public.items": 100_000,
        "public.pairs": 5000,
    }
    assert "<table>" in (tmp_path / "v.html").read_text()

    # An orphan and a limited run: --tables, exit 1.
    _run(
        target,
        "ALTER TABLE items DROP CONSTRAINT items_group_id_fkey",
        "UPDATE items SET group_id = 999 WHERE id = 10",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater.cli",
            "validate",
            str(task_file),
            "--tables",
            "items",
            "--sum",
            "amount",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "id=10" in done.stdout and "public.groups_" in done.stdout
    assert "public.pairs" not in done.stdout


def test_unknown_table_is_one_line(make_task: Callable[..., TaskConfig]) -> None:
    with pytest.raises(SourceError, match="not among the task's selected source tables"):
        validate_task(make_task(), ValidateOptions(tables=["nope"]))


# --- across engines --------------------------------------------------------------------

MARIADB_SAMPLE = (
    """CREATE TABLE customers (id INT PRIMARY KEY, external_id BIGINT NOT NULL,
    name LONGTEXT NOT NULL, email VARCHAR(120), balance DECIMAL(12,2) NOT NULL,
    active BOOLEAN NOT NULL, signup_date DATE, created_at DATETIME(6) NOT NULL, profile JSON,
    token CHAR(36), avatar LONGBLOB)""",
    """CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL,
    status VARCHAR(20) NOT NULL, total DECIMAL(12,2), ordered_at DATETIME(6) NOT NULL,
    notes LONGTEXT)""",
    """CREATE TABLE order_lines (order_id BIGINT NOT NULL, line_no INT NOT NULL,
    sku LONGTEXT NOT NULL, qty INT NOT NULL, price DECIMAL(12,2) NOT NULL,
    PRIMARY KEY (order_id, line_no))""",
)

_COPY = {
    "customers": "SELECT id, external_id, name, email, balance, active, signup_date, created_at,"
    " profile::text, token::text, avatar FROM customers",
    "orders": "SELECT * FROM orders",
    "order_lines": "SELECT * FROM order_lines",
}


def _utc_naive(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _copy_to_mariadb(pg_url: str, my_url: str) -> None:
    with psycopg.connect(pg_url) as pg:
        for table, query in _COPY.items():
            rows = [tuple(_utc_naive(v) for v in r) for r in pg.execute(query).fetchall()]
            marks = ", ".join(["%s"] * len(rows[0]))
            from producers.mysql.connection import connect

            with connect(my_url) as my, my.cursor() as cur:
                cur.executemany(f"INSERT INTO `{table}` VALUES ({marks})", rows)


def test_heterogeneous_postgres_to_mariadb(
    pg_databases: tuple[str, str], mysql_db: str, make_task: Callable[..., TaskConfig]
) -> None:
    source, _ = pg_databases
    with psycopg.connect(source, autocommit=True) as conn:
        create_sample(conn, 400)
    execute(mysql_db, *MARIADB_SAMPLE)
    _copy_to_mariadb(source, mysql_db)
    task = make_task(mode="full-load", target={"engine": "mysql", "url": mysql_db})
    plan = ChunkPlan(chunk_rows=300)  # several chunks even for small tables
    result = validate_task(task, ValidateOptions(plan=plan))
    assert result.matches, _differences(result)
    assert {t.table: t.target_rows for t in result.tables} == {
        "public.customers": 400,
        "public.order_lines": 1601,
        "public.orders": 800,
    }
    assert sum(len(t.orphans) for t in result.tables) == 2

    execute(
        mysql_db,
        "UPDATE customers SET created_at = created_at + INTERVAL 1 SECOND WHERE id = 12",
        "UPDATE customers SET active = NOT active, profile = NULL WHERE id = 5",
        "DELETE FROM order_lines WHERE order_id = 3 AND line_no = 1",
        "DELETE FROM customers WHERE id = 400",
    )
    result = validate_task(task, ValidateOptions(plan=plan))
    assert _differences(result) == {
        "public.customers": [
            ("changed", {"id": "12"}, ["created_at"]),
            ("changed", {"id": "5"}, ["active", "profile"]),
            ("missing", {"id": "400"}, []),
        ],
        "public.order_lines": [("missing", {"order_id": "3", "line_no": "1"}, [])],
    }
    orphans = {o.constraint: o.orphans for t in result.tables for o in t.orphans}
    assert orphans["orders_customer_id_fkey"] == 2  # orders of customer 400


def test_heterogeneous_mariadb_to_postgres(
    pg_databases: tuple[str, str], mysql_db: str, make_task: Callable[..., TaskConfig]
) -> None:
    _, target = pg_databases
    execute(
        mysql_db,
        """CREATE TABLE readings (id INT UNSIGNED PRIMARY KEY, sensor VARCHAR(40) NOT NULL,
        value DECIMAL(10,3), taken DATETIME(6), flag TINYINT(1), raw VARBINARY(16),
        big BIGINT UNSIGNED)""",
        "INSERT INTO readings SELECT seq, CONCAT('s', seq % 7), seq / 8, "
        "TIMESTAMP'2022-03-04 05:06:07.123456' + INTERVAL seq MINUTE, seq % 2, "
        "UNHEX(MD5(seq)), 18446744073709551615 - seq FROM seq_1_to_3000",
    )
    _run(
        target,
        "CREATE TABLE readings (id bigint PRIMARY KEY, sensor text NOT NULL, value numeric(10,3),"
        " taken timestamp, flag smallint, raw bytea, big numeric(20,0))",
    )
    db = mysql_db.rsplit("/", 1)[1]
    with psycopg.connect(target, autocommit=True) as pg, pg.cursor() as cur:
        from producers.mysql.connection import connect

        with connect(mysql_db) as my, my.cursor() as mcur:
            mcur.execute("SELECT * FROM readings")
            cur.executemany(
                "INSERT INTO readings VALUES (%s, %s, %s, %s, %s, %s, %s)", list(mcur.fetchall())
            )
    task = make_task(
        mode="full-load",
        source={"engine": "mysql", "url": mysql_db},
        target={"schema": "public"},
        tables={"include": [f"{db}.*"]},
    )
    result = validate_task(task, ValidateOptions(plan=ChunkPlan(chunk_rows=700)))
    assert result.matches, _differences(result)
    _run(target, "UPDATE readings SET raw = '\\x00' WHERE id = 2999")
    result = validate_task(task, ValidateOptions(plan=ChunkPlan(chunk_rows=700)))
    assert _differences(result) == {f"{db}.readings": [("changed", {"id": "2999"}, ["raw"])]}
