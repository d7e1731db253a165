"""Benchmark: `headwater validate` of a matching table (PostgreSQL to PostgreSQL, and
PostgreSQL to MariaDB) against the baseline of the same run: `SELECT count(*)` plus a full
`COPY ... TO STDOUT` of both sides (the least a client-side comparison must read). Prints
numbers and ratios; asserts nothing.

    .venv/bin/python bench/bench_validate.py --rows 1000000 [--mariadb]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC
from typing import Any

import psycopg
from psycopg import sql

from headwater.config import TaskConfig
from headwater.validate.run import ValidateOptions, validate_task
from headwater.validate.table_check import ChunkPlan

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIADB = "mysql://root@127.0.0.1:3306"

TABLE_SQL = """
CREATE TABLE bench_rows (
    id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2) NOT NULL,
    status varchar(16) NOT NULL, created_at timestamptz NOT NULL, note text NOT NULL
)"""
FILL_SQL = """
INSERT INTO bench_rows
SELECT g, g %% 10000, (g %% 100000) / 100.0, 'status-' || (g %% 7),
       timestamptz '2024-01-01 00:00:00+00' - g * interval '1.5 s', repeat(md5(g::text), 3)
FROM generate_series(1, %(rows)s) g"""


def _pg_db(admin: psycopg.Connection[Any], name: str, rows: int) -> str:
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLE_SQL)
        conn.execute(FILL_SQL, {"rows": rows})
        conn.execute("VACUUM ANALYZE bench_rows")
    return url


def _baseline_pg(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("SELECT count(*) FROM bench_rows").fetchone()
        with conn.cursor().copy("COPY bench_rows TO STDOUT") as copy:
            for _ in copy:
                pass
    return time.perf_counter() - started


def _mariadb_copy(source: str, db: str) -> None:
    """The same rows into MariaDB, as the sink would store them."""
    import pymysql

    my = pymysql.connect(host="127.0.0.1", user="root", autocommit=True, database=db)
    with my.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, account INT NOT NULL, "
            "amount DECIMAL(12,2) NOT NULL, status VARCHAR(16) NOT NULL, "
            "created_at DATETIME(6) NOT NULL, note LONGTEXT NOT NULL)"
        )
        with psycopg.connect(source) as pg, pg.cursor(name="bench") as rows:
            rows.itersize = 20_000
            rows.execute("SELECT * FROM bench_rows ORDER BY id")
            while batch := rows.fetchmany(20_000):
                cur.executemany(
                    "INSERT INTO bench_rows VALUES (%s, %s, %s, %s, %s, %s)",
                    [(*r[:4], r[4].astimezone(UTC).replace(tzinfo=None), r[5]) for r in batch],
                )
    my.close()


def _baseline_mariadb(db: str) -> float:
    import pymysql
    import pymysql.cursors

    started = time.perf_counter()
    my = pymysql.connect(
        host="127.0.0.1", user="root", database=db, cursorclass=pymysql.cursors.SSCursor
    )
    with my.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_rows")
        cur.fetchall()
        cur.execute("SELECT * FROM bench_rows")
        while cur.fetchmany(20_000):
            pass
    my.close()
    return time.perf_counter() - started


def _validate(task: TaskConfig, chunk_rows: int) -> float:
    started = time.perf_counter()
    result = validate_task(task, ValidateOptions(plan=ChunkPlan(chunk_rows=chunk_rows)))
    elapsed = time.perf_counter() - started
    assert result.matches  # a setup error, not a speed assertion
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--mariadb", action="store_true", help="also PostgreSQL -> MariaDB")
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    names = [f"bench_val_src_{suffix}", f"bench_val_dst_{suffix}"]
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        try:
            started = time.perf_counter()
            source, target = (_pg_db(admin, n, args.rows) for n in names)
            print(f"setup: 2 x {args.rows:,} rows in {time.perf_counter() - started:.1f}s")
            task = TaskConfig.model_validate(
                {"name": "benchval", "mode": "full-load", "source": {"url": source},
                 "target": {"url": target}}
            )  # fmt: skip
            baseline = _baseline_pg(source) + _baseline_pg(target)
            took = _validate(task, args.chunk_rows)
            print(
                f"postgres->postgres: validate {took:.2f}s ({args.rows / took:,.0f} rows/s); "
                f"count(*) + COPY TO STDOUT of both sides {baseline:.2f}s; "
                f"ratio validate/baseline {took / baseline:.2f}"
            )
            if args.mariadb:
                _bench_mariadb(source, args, suffix)
        finally:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def _bench_mariadb(source: str, args: argparse.Namespace, suffix: str) -> None:
    import pymysql

    db = f"bench_val_{suffix}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE `{db}`")
    try:
        started = time.perf_counter()
        _mariadb_copy(source, db)
        print(f"mariadb copy: {time.perf_counter() - started:.1f}s")
        task = TaskConfig.model_validate(
            {"name": "benchval", "mode": "full-load", "source": {"url": source},
             "target": {"engine": "mysql", "url": f"{MARIADB}/{db}"}}
        )  # fmt: skip
        baseline = _baseline_pg(source) + _baseline_mariadb(db)
        took = _validate(task, args.chunk_rows)
        print(
            f"postgres->mariadb: validate {took:.2f}s ({args.rows / took:,.0f} rows/s); "
            f"count(*) + full read of both sides {baseline:.2f}s; "
            f"ratio validate/baseline {took / baseline:.2f}"
        )
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()


if __name__ == "__main__":
    main()
