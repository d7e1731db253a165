"""`headwater convert` against real databases: DDL from the sample PostgreSQL schema creates
working tables on MariaDB (rows load, validate clean, the post-load foreign keys hold), DDL
from a MariaDB schema creates working tables on PostgreSQL, and each lists exactly what it
could not convert."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pymysql
import pytest
import yaml

from headwater.config import TaskConfig
from headwater.convert.run import apply_plan, plan_task
from headwater.sample_db import create_sample
from headwater.validate.run import ValidateOptions, validate_task
from producers.mysql.connection import connect as my_connect
from tests.integration.test_validate import _copy_to_mariadb
from tests.mysql_support import execute, mysql_db, mysql_task

pytestmark = pytest.mark.integration
__all__ = ["mysql_db", "mysql_task"]

PG_EXTRAS = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE extras (
    id serial PRIMARY KEY, code varchar(40) NOT NULL UNIQUE, m mood DEFAULT 'happy',
    qty int CHECK (qty > 0), status varchar(10) CHECK (status IN ('a', 'b')),
    g uuid DEFAULT gen_random_uuid(), note text DEFAULT 'it''s',
    doubled int GENERATED ALWAYS AS (qty * 2) STORED
);
CREATE INDEX extras_partial ON extras (qty) WHERE qty > 10;
CREATE INDEX extras_lower ON extras (lower(code));
CREATE INDEX orders_customer ON orders (customer_id);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER extras_touch BEFORE UPDATE ON extras FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100
"""


def _manual(plan: object) -> set[tuple[str, str]]:
    return {(m.table, m.item) for m in plan.all_manual}  # type: ignore[attr-defined]


def test_sample_postgres_schema_onto_mariadb(
    make_task: Callable[..., TaskConfig], mysql_db: str, tmp_path: Path
) -> None:
    task = make_task(mode="full-load", target={"engine": "mysql", "url": mysql_db})
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        create_sample(conn, 60)
        for statement in PG_EXTRAS.split(";\n"):
            conn.execute(statement)

    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(task.model_dump(by_alias=True, exclude_none=True)))
    done = subprocess.run(
        [sys.executable, "-m", "headwater.cli", "convert", str(task_file), "--apply",
         "--sql", str(tmp_path / "ddl.sql"), "--json", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CREATE TABLE IF NOT EXISTS `customers`" in (tmp_path / "ddl.sql").read_text()

    plan = plan_task(task)
    assert _manual(plan) == {
        ("public.extras", "column g default"),
        ("public.extras", "generated column doubled"),
        ("public.extras", "trigger extras_touch"),
        ("public.extras", "index extras_partial"),
        ("public.extras", "index extras_lower"),
        ("public.big_orders", "view"),
        ("public.touch() function", "routine"),
    }
    # The rows load into the converted tables and compare equal.
    _copy_to_mariadb(task.source.url, mysql_db)
    tables = ValidateOptions(tables=["customers", "orders", "order_lines"])
    assert validate_task(task, tables).matches
    apply_plan(task, plan, post_load=True)
    assert not plan.apply_failed, [a for a in plan.applied if a.error]
    with my_connect(mysql_db) as my, my.cursor() as cur:
        cur.execute("INSERT INTO extras (code, qty, status) VALUES ('x', 3, 'b')")
        cur.execute("SELECT id, m, note FROM extras")
        assert cur.fetchall() == ((1, "happy", "it's"),)
        for bad in (
            "INSERT INTO extras (code, qty) VALUES ('y', 0)",  # CHECK qty > 0
            "INSERT INTO extras (code, status) VALUES ('z', 'c')",  # CHECK status IN
            "INSERT INTO extras (code) VALUES ('x')",  # UNIQUE code
            "INSERT INTO orders VALUES (99999, 424242, 'new', 1, NOW(), NULL)",  # FK
        ):
            with pytest.raises(pymysql.err.MySQLError):
                cur.execute(bad)


MARIADB_SCHEMA = (
    """CREATE TABLE authors (
        id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(80) NOT NULL UNIQUE,
        kind ENUM('x', 'y') NOT NULL DEFAULT 'x',
        updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
        bio TEXT, FULLTEXT KEY bio_ft (bio))""",
    """CREATE TABLE books (
        id BIGINT UNSIGNED PRIMARY KEY, author_id INT NOT NULL, title VARCHAR(200) NOT NULL,
        price DECIMAL(8,2) DEFAULT 9.99, KEY title_prefix (title(20)), KEY by_author (author_id),
        CONSTRAINT price_ok CHECK (price >= 0),
        CONSTRAINT books_author FOREIGN KEY (author_id) REFERENCES authors (id)
            ON DELETE CASCADE)""",
    "CREATE VIEW cheap AS SELECT * FROM books WHERE price < 5",
    "CREATE PROCEDURE ping() BEGIN SELECT 1; END",
    "CREATE TRIGGER trim_title BEFORE INSERT ON books FOR EACH ROW SET NEW.title = TRIM(NEW.title)",
)


def test_mariadb_schema_onto_postgres(mysql_task: Callable[..., TaskConfig], mysql_db: str) -> None:
    execute(mysql_db, *MARIADB_SCHEMA)
    db = mysql_db.rsplit("/", 1)[1]
    task = mysql_task(mode="full-load")
    plan = plan_task(task)
    assert _manual(plan) == {
        (f"{db}.authors", "column updated"),
        (f"{db}.authors", "index bio_ft"),
        (f"{db}.books", "index title_prefix"),
        (f"{db}.books", "trigger trim_title"),
        (f"{db}.cheap", "view"),
        (f"{db}.ping procedure", "routine"),
    }
    apply_plan(task, plan, post_load=False)
    apply_plan(task, plan, post_load=True)
    assert not plan.apply_failed, [a for a in plan.applied if a.error]
    target = task.target.url.replace("+psycopg", "")
    with psycopg.connect(target, autocommit=True) as pg:
        pg.execute(f'SET search_path TO "{db}"')
        pg.execute("INSERT INTO authors (name) VALUES ('ann')")
        pg.execute("INSERT INTO books (id, author_id, title) VALUES (18446744073709551615, 1, 't')")
        row = pg.execute(
            "SELECT a.id, a.kind, b.price FROM authors a JOIN books b ON b.author_id = a.id"
        ).fetchone()
        assert row is not None and (row[0], row[1], str(row[2])) == (1, "x", "9.99")
        for bad in (
            "INSERT INTO authors (name, kind) VALUES ('bob', 'z')",  # enum labels
            "INSERT INTO authors (name) VALUES ('ann')",  # UNIQUE name
            "INSERT INTO books (id, author_id, title) VALUES (2, 77, 'orphan')",  # FK
            "INSERT INTO books (id, author_id, title, price) VALUES (3, 1, 'x', -1)",  # CHECK
        ):
            with pytest.raises(psycopg.Error):
                pg.execute(bad)
        pg.execute("DELETE FROM authors")
        assert pg.execute("SELECT count(*) FROM books").fetchone() == (0,)  # ON DELETE CASCADE


def test_postgres_to_postgres_keeps_what_it_can(make_task: Callable[..., TaskConfig]) -> None:
    task = make_task(mode="full-load")
    with psycopg.connect(task.source.url, autocommit=True) as conn:
        create_sample(conn, 10)
        for statement in PG_EXTRAS.split(";\n"):
            conn.execute(statement)
    plan = plan_task(task)
    assert {item for _, item in _manual(plan)} == {
        "generated column doubled",
        "trigger extras_touch",
        "view",
        "routine",
    }
    apply_plan(task, plan, post_load=False)
    apply_plan(task, plan, post_load=True)
    assert not plan.apply_failed, [a for a in plan.applied if a.error]
    with psycopg.connect(task.target.url.replace("+psycopg", ""), autocommit=True) as pg:
        pg.execute("INSERT INTO extras (code, qty) VALUES ('a', 20)")
        assert pg.execute("SELECT m, note FROM extras").fetchone() == ("happy", "it's")
        indexes = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes").fetchall()}
        assert {"extras_partial", "extras_lower", "orders_customer"} <= indexes
