"""End to end, MariaDB into PostgreSQL while the source is written to: the snapshot under
concurrent writes ends equal to the source; a SIGKILL of the stages resumes by binlog
position and by GTID with nothing lost; ALTER TABLE while streaming gives the right columns
and a new schema version; the heartbeat advances the saved position on an idle task."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.status import source_wal_lsn
from producers.mysql import catalog
from producers.mysql.changes import convert_row
from producers.mysql.connection import connect
from producers.mysql.position import BinlogPosition
from producers.task_state import TaskStateStore
from schemas.tables import TableId
from schemas.topics import table_topic, value_subject
from tests.mysql_support import execute, mysql_db, mysql_task, runner

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
__all__ = ["mysql_db", "mysql_task", "runner"]

SCHEMA = [
    "CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, customer int NOT NULL,"
    " amount decimal(10,2), note varchar(40), updated datetime(6))",
    "CREATE TABLE order_lines (order_id int, line_no int, qty int,"
    " PRIMARY KEY (order_id, line_no))",
]


def seed(url: str, orders: int) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        for statement in SCHEMA:
            cur.execute(statement)
        for start in range(0, orders, 1000):
            n = min(1000, orders - start)
            cur.executemany(
                "INSERT INTO orders (customer, amount, note, updated) VALUES (%s, %s, %s, NOW(6))",
                [(i % 97, f"{i}.25", f"order {i}") for i in range(start, start + n)],
            )
            cur.executemany(
                "INSERT INTO order_lines VALUES (%s, %s, %s)",
                [(i + 1, 1, i % 7) for i in range(start, start + n)],
            )


class Writer:
    """Random inserts, updates, deletes and primary-key changes from a background thread."""

    def __init__(self, url: str, seed_value: int) -> None:
        self.url = url
        self.rng = random.Random(seed_value)
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self, cur: Any) -> None:
        pick = self.rng.random()
        oid = self.rng.randint(1, 2000)
        if pick < 0.35:
            cur.execute(
                "INSERT INTO orders (customer, amount, note, updated)"
                " VALUES (%s, %s, 'new', NOW(6))",
                (self.rng.randint(1, 50), self.rng.randint(1, 9999)),
            )
            cur.execute("INSERT INTO order_lines VALUES (LAST_INSERT_ID(), 1, 1)")
        elif pick < 0.7:
            cur.execute("UPDATE orders SET amount = amount + 1, note = 'upd' WHERE id = %s", (oid,))
        elif pick < 0.8:
            cur.execute("DELETE FROM orders WHERE id = %s", (oid,))
        elif pick < 0.9:
            cur.execute(
                "UPDATE order_lines SET line_no = line_no + 100"
                " WHERE order_id = %s AND line_no < 100",
                (oid,),
            )
        else:
            cur.execute("UPDATE order_lines SET qty = qty + 1 WHERE order_id = %s", (oid,))
        self.done += 1

    def _run(self) -> None:
        with connect(self.url) as conn, conn.cursor() as cur:
            while not self._stop.is_set():
                self.step(cur)
                time.sleep(0.002)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        return self.done


def assert_source_equals_target(task: TaskConfig) -> None:
    """Every row of every selected table, by key, values as the producer maps them."""
    db = task.source.url.rsplit("/", 1)[1]
    target_url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with connect(task.source.url) as src, psycopg.connect(target_url) as dst:
        for table in catalog.selected_tables(src, task.tables):
            schema = catalog.describe_table(src, table)
            names = list(schema.column_names)
            with src.cursor() as cur:
                cur.execute(
                    f"SELECT {', '.join(f'`{n}`' for n in names)} FROM `{db}`.`{table.name}`"
                )
                source = {
                    tuple(r[names.index(k)] for k in schema.primary_key): convert_row(
                        schema, dict(zip(names, r, strict=True))
                    )
                    for r in cur.fetchall()
                }
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(n) for n in names),
                sql.Identifier(db, table.name),
            )
            rows = dst.execute(query).fetchall()
            target = {
                tuple(r[names.index(k)] for k in schema.primary_key): dict(
                    zip(names, r, strict=True)
                )
                for r in rows
            }
            assert len(rows) == len(target)
            missing = source.keys() - target.keys()
            extra = target.keys() - source.keys()
            different = [k for k in source.keys() & target.keys() if source[k] != target[k]]
            assert not (missing or extra or different), (
                table,
                list(missing)[:5],
                list(extra)[:5],
                different[:5],
            )
            assert source, table


def test_snapshot_under_concurrent_writes_ends_equal(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    seed(mysql_db, 20_000)
    task = mysql_task(source={"snapshot_fetch_rows": 500})
    writer = Writer(mysql_db, 7).start()
    r = runner(task)
    time.sleep(4)  # the writes overlap the full load
    writes = writer.stop()
    r.wait_caught_up(180)
    assert writes > 100
    assert_source_equals_target(task)
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert state is not None and state.snapshot_status == "done"
    assert state.tables[f"{task.tables.include[0][:-2]}.orders"].rows >= 20_000


@pytest.mark.parametrize("resume_by", ["position", "gtid"])
def test_sigkill_mid_stream_resumes_and_loses_nothing(
    mysql_task: Callable[..., TaskConfig],
    mysql_db: str,
    runner: Callable[[TaskConfig], TaskRunner],
    resume_by: str,
) -> None:
    seed(mysql_db, 2000)
    task = mysql_task(source={"resume_by": resume_by})
    first = runner(task)
    first.wait_caught_up(120)
    writer = Writer(mysql_db, 11).start()
    time.sleep(2)  # kill while changes flow
    for proc in first.procs.values():
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
    first.stop(timeout=20)
    time.sleep(0.5)
    writer.stop()
    with connect(mysql_db) as conn, conn.cursor() as cur:
        Writer(mysql_db, 12).step(cur)  # and one while the task is down
    saved = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert saved is not None and saved.binlog.get("gtid")
    second = runner(task)
    second.wait_caught_up(120)
    assert_source_equals_target(task)
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert state is not None and state.snapshot_status == "done"  # resumed, no new snapshot


def _value_versions(task: TaskConfig, table: TableId) -> int:
    subject = value_subject(table_topic(task.topic_prefix, table))
    response = httpx.get(f"{task.registry.url}/subjects/{subject}/versions", timeout=10)
    response.raise_for_status()
    return len(response.json())


def test_alter_table_mid_stream_keeps_columns_right(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    db = mysql_db.rsplit("/", 1)[1]
    execute(mysql_db, "CREATE TABLE t (id int PRIMARY KEY, a varchar(10), b int)")
    execute(mysql_db, "INSERT INTO t VALUES (1, 'one', 1)")
    task = mysql_task()
    first = runner(task)
    first.wait_caught_up(120)
    versions = _value_versions(task, TableId(db, "t"))
    first.stop()
    # While the task is down, so the rows before each ALTER are read after all of them, when
    # INFORMATION_SCHEMA already shows the final shape.
    execute(
        mysql_db,
        "INSERT INTO t VALUES (2, 'two', 2)",
        "ALTER TABLE t ADD COLUMN c varchar(10) AFTER a",
        "INSERT INTO t VALUES (3, 'three', 'c3', 3)",
        "ALTER TABLE t DROP COLUMN a",
        "INSERT INTO t VALUES (4, 'c4', 4)",
        "ALTER TABLE t MODIFY COLUMN c varchar(30)",
        "INSERT INTO t VALUES (5, 'c5 is longer than ten', 5)",
        "UPDATE t SET b = 20 WHERE id = 2",
    )
    second = runner(task)
    second.wait_caught_up(120)
    target_url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(target_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, a, c, b FROM {} ORDER BY id").format(sql.Identifier(db, "t"))
        ).fetchall()
    # A dropped column stays in the target (the sink never drops one), null in later rows.
    assert rows == [
        (1, "one", None, 1),
        (2, "two", None, 20),
        (3, "three", "c3", 3),
        (4, None, "c4", 4),
        (5, None, "c5 is longer than ten", 5),
    ]
    assert _value_versions(task, TableId(db, "t")) >= versions + 3
    latest = httpx.get(
        f"{task.registry.url}/subjects/"
        f"{value_subject(table_topic(task.topic_prefix, TableId(db, 't')))}/versions/latest",
        timeout=10,
    ).json()
    assert "varchar(30)" in latest["schema"] and '"a"' not in latest["schema"]


def test_heartbeat_advances_the_saved_position_of_an_idle_task(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    execute(mysql_db, "CREATE TABLE quiet (id int PRIMARY KEY)", "INSERT INTO quiet VALUES (1)")
    other = mysql_db + "_other"
    base = mysql_db.rsplit("/", 1)[0]
    execute(base + "/", f"CREATE DATABASE `{other.rsplit('/', 1)[1]}`")
    try:
        task = mysql_task(mode="cdc", source={"heartbeat_s": 0.5})
        r = runner(task)
        r.wait_caught_up(60)
        store = TaskStateStore(task.kafka.bootstrap_servers)
        before = store.load(task.name)
        assert before is not None
        # Busy elsewhere, idle in the task's tables: the saved position still moves on.
        execute(other, "CREATE TABLE busy (id int PRIMARY KEY)")
        for i in range(20):
            execute(other, "INSERT INTO busy VALUES (%s)", args=(i,))
        end = source_wal_lsn(task)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = store.load(task.name)
            saved = BinlogPosition.from_dict(state.binlog) if state else None
            if (
                saved is not None
                and saved.ordinal >= end
                and state is not None
                and state.updated_ms > before.updated_ms
            ):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"saved position did not reach the binlog end: {state}")
        # Nothing written at all: the heartbeat still refreshes the record.
        time.sleep(1.5)
        later = store.load(task.name)
        assert later is not None and state is not None and later.updated_ms > state.updated_ms
        assert later.events_streamed == 0
    finally:
        execute(base + "/", f"DROP DATABASE IF EXISTS `{other.rsplit('/', 1)[1]}`")


@pytest.mark.slow
def test_full_load_killed_midway_resumes_after_the_last_acknowledged_key(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    seed(mysql_db, 30_000)
    task = mysql_task(source={"snapshot_fetch_rows": 200})
    store = TaskStateStore(task.kafka.bootstrap_servers)
    first = runner(task)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = store.load(task.name, timeout=2)
        if state is not None and any(p.last_key for p in state.tables.values()):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the full load saved no progress")
    producer = first.procs["producer"]
    assert producer.pid is not None
    os.kill(producer.pid, signal.SIGKILL)
    first.stop(timeout=20)
    killed = store.load(task.name)
    assert killed is not None and killed.snapshot_status == "running"
    writer = Writer(mysql_db, 5).start()  # changes between the two snapshots
    time.sleep(1)
    writer.stop()
    second = runner(task)
    second.wait_caught_up(180)
    assert_source_equals_target(task)
    done = store.load(task.name)
    assert done is not None and done.snapshot_status == "done"
    first_rows = sum(p.rows for p in killed.tables.values())
    # Resumed after the saved keys: a reload from scratch would have counted every row again.
    assert first_rows > 0 and sum(p.rows for p in done.tables.values()) < first_rows + 60_000
    start = BinlogPosition.from_dict(killed.binlog)
    assert start is not None  # streaming began at the first snapshot's position


def test_truncate_while_streaming_empties_the_target_table(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, runner: Callable[[TaskConfig], TaskRunner]
) -> None:
    db = mysql_db.rsplit("/", 1)[1]
    execute(mysql_db, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    task = mysql_task()
    r = runner(task)
    r.wait_caught_up(120)
    execute(mysql_db, "INSERT INTO t VALUES (3)", "TRUNCATE TABLE t", "INSERT INTO t VALUES (4)")
    r.wait_caught_up(120)
    target_url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(target_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(db, "t"))
        ).fetchall()
    assert rows == [(4,)]
