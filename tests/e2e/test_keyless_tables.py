"""End to end, against the real stack: tables without a primary key under REPLICA IDENTITY
FULL (with identical rows), a table keyed by REPLICA IDENTITY USING INDEX and a keyed table
under FULL, moved by the real producer and sink processes into PostgreSQL, MariaDB and
SQLite: full load, then inserts, updates and deletes of one of several identical rows, and
an update leaving a TOASTed value unchanged; and the replication connection killed twice while
a burst of identical rows is not yet acknowledged (the server sends it again: it must not
land twice). The target ends equal as a multiset, every
event of a keyless table sits in one partition, and `validate` says in one line that it
cannot compare a keyless table by key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from headwater.validate.run import validate_task
from producers.postgres.connection import connect
from schemas.tables import TableId
from schemas.topics import table_topic
from tests.sink_support import mariadb_database

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SOURCE_TABLES = """
CREATE TABLE loose (kind text, amount numeric(10,2), note text, payload jsonb, f real,
                    at timestamptz, big text);
ALTER TABLE loose REPLICA IDENTITY FULL;
INSERT INTO loose SELECT 'dup', 1.50, NULL, '{"a": 1}', 1.1, '2024-01-01 00:00:00+00', NULL
  FROM generate_series(1, 3);
INSERT INTO loose VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                         (NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO loose SELECT 'row', i, 'n' || i, jsonb_build_object('i', i), i / 3.0,
                         '2024-02-01 00:00:00+00'::timestamptz + i * interval '1 hour', NULL
  FROM generate_series(1, 50) i;
CREATE TABLE coded (code text NOT NULL, v int);
CREATE UNIQUE INDEX coded_code ON coded (code);
ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code;
INSERT INTO coded SELECT 'c' || i, i FROM generate_series(1, 20) i;
CREATE TABLE keyed_full (id int PRIMARY KEY, v text);
ALTER TABLE keyed_full REPLICA IDENTITY FULL;
INSERT INTO keyed_full SELECT i, 'v' || i FROM generate_series(1, 10) i;
"""

ONE_DUP = "(SELECT ctid FROM loose WHERE kind = 'dup' AND note IS NULL LIMIT 1)"
ONE_BURST = "(SELECT ctid FROM loose WHERE kind = 'burst' LIMIT 1)"

STREAMED_CHANGES = [
    "INSERT INTO loose VALUES ('dup', 1.50, NULL, '{\"a\": 1}', 1.1, "
    "'2024-01-01 00:00:00+00', NULL)",
    f"UPDATE loose SET note = 'changed' WHERE ctid = {ONE_DUP}",
    f"DELETE FROM loose WHERE ctid = {ONE_DUP}",
    "DELETE FROM loose WHERE ctid = (SELECT ctid FROM loose WHERE kind IS NULL LIMIT 1)",
    "UPDATE loose SET amount = amount + 1, f = f * 2 WHERE kind = 'row' AND amount < 10",
    "DELETE FROM loose WHERE kind = 'row' AND amount > 45",
    # About 10 kB of random hex: stored out of line (TOAST), so the next update leaves it
    # out of the new row, and the producer takes it from the full old row.
    "INSERT INTO loose (kind, big) SELECT 'toast', string_agg(md5(random()::text), '') "
    "FROM generate_series(1, 300)",
    "UPDATE loose SET note = 'toast kept' WHERE kind = 'toast'",
    "UPDATE coded SET v = v * 10 WHERE code IN ('c1', 'c2')",
    "UPDATE coded SET code = 'c100' WHERE code = 'c3'",
    "DELETE FROM coded WHERE code = 'c4'",
    "UPDATE keyed_full SET v = 'x' WHERE id <= 3",
    "DELETE FROM keyed_full WHERE id = 4",
]


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def task(
    request: pytest.FixtureRequest, make_task: Callable[..., TaskConfig], tmp_path: Path
) -> Iterator[TaskConfig]:
    settings = {"batch_size": 500, "batch_wait_s": 0.2}
    if request.param == "postgres":
        urls: Iterator[str | None] = iter([None])
    elif request.param == "sqlite":
        urls = iter([f"sqlite:///{tmp_path / 'target.db'}"])
    else:
        urls = mariadb_database(request.getfixturevalue("mariadb_root"))
    for url in urls:
        target = settings if url is None else {"engine": request.param, "url": url, **settings}
        # Acknowledged rarely, so a dropped connection resends what the sink already has.
        built = make_task(target=target, kafka={"partitions": 3}, source={"ack_interval_s": 5})
        with psycopg.connect(built.source.url, autocommit=True) as conn:
            conn.execute(SOURCE_TABLES)
        yield built


def _partitions_used(task: TaskConfig, table: str) -> list[int]:
    topic = table_topic(task.topic_prefix, TableId("public", table))
    consumer = Consumer({"bootstrap.servers": task.kafka.bootstrap_servers, "group.id": "probe"})
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(task.kafka.partitions)
        ]
    finally:
        consumer.close()
    return [p for p, (low, high) in enumerate(ends) if high > low]


def test_keyless_tables_full_load_then_stream(task: TaskConfig, runner: TaskRunner) -> None:
    runner.wait_caught_up(240)
    with connect(task.source.url) as conn:
        for statement in STREAMED_CHANGES:
            conn.execute(statement)
        dups = conn.execute("SELECT count(*) FROM loose WHERE kind = 'dup'").fetchone()
    assert dups == (3,)
    for _ in range(2):
        with connect(task.source.url) as conn:
            conn.execute(
                "INSERT INTO loose (kind, note) SELECT 'burst', 'b' FROM generate_series(1, 5)"
            )
            time.sleep(0.5)  # streamed, not yet acknowledged: the server sends it again
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (task.slot_name,),
            )
            conn.execute(f"DELETE FROM loose WHERE ctid = {ONE_BURST}")
    runner.wait_caught_up(240)
    runner.check()  # the producer reconnected instead of failing
    comparisons = compare_task(task)
    assert {str(c.table) for c in comparisons} == {
        "public.loose",
        "public.coded",
        "public.keyed_full",
    }
    for c in comparisons:
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])
        assert c.source_rows == c.target_rows > 0
    assert len(_partitions_used(task, "loose")) == 1
    if task.target.engine == "postgres":
        with connect(task.target.url, role="target") as dst:
            keys = dst.execute(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.loose'::regclass "
                "AND contype = 'p'"
            ).fetchone()
        assert keys == (0,)
        # validate compares by key ranges: the USING INDEX table by its index, the keyless
        # one not at all, said in one line.
        validated = {t.table: t for t in validate_task(task).tables}
        assert validated["public.coded"].matches and validated["public.keyed_full"].matches
        assert "no primary key" in (validated["public.loose"].error or "")
