"""End to end, against the real stack: the producer process killed (SIGKILL, by its test
hook) right after Kafka acknowledged streamed changes and before the source position was
acknowledged (PostgreSQL: the slot; MariaDB: the saved binlog position), then restarted:
the source sends those transactions again, and the raw topics must still hold each change
exactly once, a keyless table's target must equal the source as a multiset, and keyed
tables row by row. PostgreSQL once at a flush between transactions, once inside a large
transaction (part of it in Kafka); MariaDB resuming by position and by GTID."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.crash_hook import CRASH_ENV
from producers.mysql import flavor
from producers.mysql.connection import connect as mysql_connect
from producers.mysql.position import BinlogPosition
from producers.postgres.connection import connect
from producers.resume_dedupe import key_partition
from producers.task_state import TaskStateStore
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import TableId
from schemas.topics import table_topic
from tests.mysql_support import execute, mysql_db, mysql_task

__all__ = ["mysql_db", "mysql_task"]

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SOURCE_TABLES = """
CREATE TABLE loose (kind text, n int, note text);
ALTER TABLE loose REPLICA IDENTITY FULL;
INSERT INTO loose SELECT 'dup', 1, NULL FROM generate_series(1, 3);
CREATE TABLE keyed (id int PRIMARY KEY, v text);
INSERT INTO keyed SELECT i, 'v' || i FROM generate_series(1, 40) i;
"""

# Transactions streamed while the producer runs with its crash hook: identical rows added,
# one of several identical rows updated and deleted, keyed rows updated, deleted and moved
# to another key (a delete and an insert, possibly in two partitions).
SMALL_TRANSACTIONS = [
    "INSERT INTO loose SELECT 'dup', 1, NULL FROM generate_series(1, 4)",
    "UPDATE loose SET note = 'changed' "
    "WHERE ctid = (SELECT ctid FROM loose WHERE kind = 'dup' AND note IS NULL LIMIT 1)",
    "DELETE FROM loose WHERE ctid = (SELECT ctid FROM loose WHERE kind = 'dup' LIMIT 1)",
    "UPDATE keyed SET v = 'x' || id WHERE id <= 20",
    "DELETE FROM keyed WHERE id BETWEEN 21 AND 25",
    "UPDATE keyed SET id = id + 1000 WHERE id BETWEEN 26 AND 35",
    "INSERT INTO loose SELECT 'row', i, 'n' || i FROM generate_series(1, 30) i",
]

BIG_TRANSACTION = [
    "INSERT INTO loose SELECT 'big', i % 7, NULL FROM generate_series(1, 40000) i",
    "UPDATE keyed SET v = 'big' || id",
    "DELETE FROM loose WHERE kind = 'big' AND n = 3",
]

AFTER_RESTART = [
    "INSERT INTO loose SELECT 'after', 2, NULL FROM generate_series(1, 3)",
    "UPDATE keyed SET v = 'after' WHERE id = 1",
]


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> Iterator[TaskConfig]:
    # A short acknowledgement interval: the hook fires at the first flush with streamed
    # changes, which inside the big transaction comes long before its commit.
    built = make_task(
        kafka={"partitions": 3},
        source={"ack_interval_s": 0.2},
        target={"batch_size": 2000, "batch_wait_s": 0.2},
    )
    with psycopg.connect(built.source.url, autocommit=True) as conn:
        conn.execute(SOURCE_TABLES)
    yield built


def _restart_producer(runner: TaskRunner, crash: str | None) -> None:
    old = runner.procs.get("producer")
    if old is not None and old.is_alive():
        old.terminate()
        old.join(30)
    if crash is not None:
        os.environ[CRASH_ENV] = crash  # a spawned child copies the environment at start
    try:
        runner.start_stage("producer")
    finally:
        os.environ.pop(CRASH_ENV, None)


def _wait_killed(runner: TaskRunner, timeout: float = 120) -> None:
    proc = runner.procs["producer"]
    proc.join(timeout)
    assert proc.exitcode == -signal.SIGKILL, "the producer's crash hook did not fire"


def _run(task: TaskConfig, statements: list[str], one_transaction: bool) -> None:
    with psycopg.connect(task.source.url, autocommit=not one_transaction) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def _raw_records(
    task: TaskConfig, table: TableId
) -> list[tuple[int, bytes, dict[str, Any] | None]]:
    """(partition, key, decoded value or None) of every record of the table's raw topic."""
    topic = table_topic(task.topic_prefix, table)
    serde = AvroSerde(SchemaRegistry(task.registry.url))
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": "probe",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[int, bytes, dict[str, Any] | None]] = []
    try:
        for p in range(task.kafka.partitions):
            tp = TopicPartition(topic, p)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            got = 0
            deadline = time.monotonic() + 60
            while got < high - low and time.monotonic() < deadline:
                for msg in consumer.consume(5000, timeout=0.5):
                    assert msg.error() is None
                    value = msg.value()
                    out.append(
                        (p, msg.key() or b"", None if value is None else serde.decode(value)[1])
                    )
                    got += 1
            assert got == high - low
    finally:
        consumer.close()
    return out


def _assert_each_change_once(task: TaskConfig, table: str, schema: str = "public") -> int:
    """No streamed change twice in the raw topic, a tombstone after every delete, each
    keyed record in the partition murmur2 gives its key; the number of streamed changes."""
    records = _raw_records(task, TableId(schema, table))
    positions = Counter(
        tuple(v["source"][f] for f in ("commit_lsn", "lsn", "file", "pos", "seq"))
        for _p, _k, v in records
        if v is not None and v["source"]["snapshot"] == "false"
    )
    doubled = [pos for pos, n in positions.items() if n > 1]
    assert not doubled, (table, doubled[:5])
    deletes = sum(1 for _p, _k, v in records if v is not None and v["op"] == "d")
    tombstones = sum(1 for _p, _k, v in records if v is None)
    assert tombstones == deletes
    for p, key, _v in records:
        assert p == key_partition(key, task.kafka.partitions)
    return sum(positions.values())


@pytest.mark.parametrize("where", ["between-transactions", "mid-transaction"])
def test_producer_killed_before_the_slot_ack_writes_nothing_twice(
    task: TaskConfig, runner: TaskRunner, where: str
) -> None:
    runner.wait_caught_up(240)
    _restart_producer(runner, "1" if where == "between-transactions" else "mid-transaction")
    before = _wal_lsn(task)
    if where == "between-transactions":
        for statement in SMALL_TRANSACTIONS:
            _run(task, [statement], one_transaction=False)
    else:
        _run(task, BIG_TRANSACTION, one_transaction=True)
    _wait_killed(runner)
    # The hook fired after Kafka had changes and before the slot heard of them: the
    # restarted producer is sent them again.
    assert _confirmed_at_or_before(task, before)
    _restart_producer(runner, None)
    _run(task, AFTER_RESTART, one_transaction=False)
    runner.wait_caught_up(240)
    comparisons = compare_task(task)
    assert {str(c.table) for c in comparisons} == {"public.loose", "public.keyed"}
    for c in comparisons:
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])
        assert c.source_rows == c.target_rows > 0
    streamed = _assert_each_change_once(task, "loose")
    _assert_each_change_once(task, "keyed")
    if where == "mid-transaction":
        # 40000 inserts and the deletes of every 7th, plus the rows after the restart.
        assert streamed == 40000 + len(range(3, 40001, 7)) + 3


def _wal_lsn(task: TaskConfig) -> str:
    with connect(task.source.url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _confirmed_at_or_before(task: TaskConfig, lsn: str) -> bool:
    with connect(task.source.url) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn <= %s::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (lsn, task.slot_name),
        ).fetchone()
    return row == (True,)


# --- MySQL/MariaDB: the saved binlog position plays the slot's part ----------------------

MYSQL_TABLES = [
    "CREATE TABLE items (id int PRIMARY KEY, v varchar(20))",
    "INSERT INTO items SELECT seq, CONCAT('v', seq) FROM seq_1_to_40",
]
MYSQL_CHANGES = [
    "UPDATE items SET v = CONCAT('x', id) WHERE id <= 20",  # one rows event, many rows
    "DELETE FROM items WHERE id BETWEEN 21 AND 25",
    "UPDATE items SET id = id + 1000 WHERE id BETWEEN 26 AND 35",  # key changes
    "INSERT INTO items SELECT seq, 'new' FROM seq_100_to_130",
]


def _mysql_rows(url: str) -> set[tuple[int, str]]:
    with mysql_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, v FROM items")
        return {(int(i), str(v)) for i, v in cur.fetchall()}


def _target_rows(task: TaskConfig, db: str) -> set[tuple[int, str]]:
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT id, v FROM {}").format(sql.Identifier(db, "items"))
        return {(int(i), str(v)) for i, v in conn.execute(query).fetchall()}


@pytest.mark.parametrize(
    "resume_by",
    # Both resume modes share the skip; the default run keeps GTID (keeps CI in budget).
    [pytest.param("position", marks=pytest.mark.slow), "gtid"],
)
def test_mysql_producer_killed_before_saving_writes_nothing_twice(
    mysql_task: Callable[..., TaskConfig], mysql_db: str, resume_by: str
) -> None:
    execute(mysql_db, *MYSQL_TABLES)
    db = mysql_db.rsplit("/", 1)[1]
    task = mysql_task(
        source={"resume_by": resume_by, "ack_interval_s": 0.2}, kafka={"partitions": 3}
    )
    runner = TaskRunner(task)
    runner.start()
    try:
        runner.wait_caught_up(120)
        _restart_producer(runner, "1")
        with mysql_connect(mysql_db) as conn:
            before = flavor.current_position(conn, flavor.detect(conn))
        execute(mysql_db, *MYSQL_CHANGES)
        _wait_killed(runner)
        saved = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
        assert saved is not None
        position = BinlogPosition.from_dict(saved.binlog)
        assert position is not None and position.ordinal <= before.ordinal  # sent again
        _restart_producer(runner, None)
        execute(mysql_db, "UPDATE items SET v = 'after' WHERE id = 1")
        runner.wait_caught_up(120)
        assert _target_rows(task, db) == _mysql_rows(mysql_db)
        streamed = _assert_each_change_once(task, "items", schema=db)
        # 20 updates, 5 deletes, 10 key changes (a delete and an insert each), 31 inserts,
        # and the update after the restart.
        assert streamed == 20 + 5 + 2 * 10 + 31 + 1
    finally:
        runner.stop(timeout=20)
