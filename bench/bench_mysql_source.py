"""Benchmark: a MariaDB full load through headwater into PostgreSQL against
`mariadb-dump | mariadb` of the same table, and binlog streaming against a sustained write
load on the source, on the local stack. Also decodes the same binlog with pymysqlreplication
alone, and splits the full load's per-row CPU time into its steps (PyMySQL reading, our value
conversion and event building, Avro encoding), to show where the time goes. CPU times, unlike
wall-clock rates, hold up on a machine shared with other work. Prints numbers and ratios;
asserts nothing.

    .venv/bin/python bench/bench_mysql_source.py --rows 1000000 --stream-rows 200000
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from headwater.cleanup import delete_topics
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.mysql import catalog
from producers.mysql.changes import tuple_converter
from producers.mysql.connection import Connection, connect, reader_settings
from producers.mysql.flavor import current_position, detect
from producers.mysql.position import BinlogPosition
from producers.task_state import TaskStateStore
from schemas.avro_schemas import value_schema
from schemas.envelope import ChangeEvent, SourceInfo, envelope_record
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import TableId
from schemas.topics import table_topic, value_subject

MARIADB = "mysql://root@127.0.0.1:3306"
REGISTRY = "http://127.0.0.1:8081/apis/ccompat/v7"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

# About 200 bytes a row, like the PostgreSQL benchmark.
TABLE_SQL = """
CREATE TABLE bench_rows (
    id bigint PRIMARY KEY, account int NOT NULL, amount decimal(12,2) NOT NULL,
    status varchar(16) NOT NULL, created_at datetime(6) NOT NULL, note text NOT NULL,
    ref char(32) NOT NULL
)"""
FILL_SQL = """
INSERT INTO bench_rows
SELECT seq, seq % 10000, (seq % 100000) / 100.0, CONCAT('status-', seq % 7),
       NOW(6) - INTERVAL seq SECOND, REPEAT(MD5(seq), 3), MD5(seq)
FROM seq_1_to_{rows}"""


def _mysql(db: str, *statements: str) -> None:
    with connect(f"{MARIADB}/{db}") as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _pg(statement: sql.Composed) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(statement)


def _task(name: str, db: str, target_db: str, mode: str) -> TaskConfig:
    return TaskConfig.model_validate(
        {
            "name": name,
            "mode": mode,
            "source": {"engine": "mysql", "url": f"{MARIADB}/{db}", "snapshot_fetch_rows": 20000},
            "target": {"url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{target_db}"},
            "tables": {"include": [f"{db}.*"]},
        }
    )


def _producer_load_seconds(task: TaskConfig) -> float:
    """The producer's own full-load time (first table started to last finished)."""
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    if state is None or not state.tables:
        return float("nan")
    started = min(p.started_ms for p in state.tables.values())
    finished = max(p.finished_ms for p in state.tables.values())
    return (finished - started) / 1000


def _wait_saved(task: TaskConfig, end: BinlogPosition, timeout: float) -> None:
    """Wait until the producer saved a binlog position at or past `end`."""
    store = TaskStateStore(task.kafka.bootstrap_servers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = store.load(task.name, timeout=2)
        saved = BinlogPosition.from_dict(state.binlog) if state else None
        if saved is not None and saved.ordinal >= end.ordinal:
            return
        time.sleep(0.2)


def _run_until_caught_up(task: TaskConfig, timeout: float) -> float:
    runner = TaskRunner(task, log_level=logging.WARNING)
    started = time.monotonic()
    runner.start()
    try:
        runner.wait_caught_up(timeout, poll_s=0.5)
        return time.monotonic() - started
    finally:
        runner.stop()
        for _line in delete_topics(task):
            pass


def bench_full_load(db: str, rows: int, target_db: str) -> None:
    copy_db = f"{db}_copy"
    _mysql("", f"CREATE DATABASE {copy_db}")
    try:
        started = time.monotonic()
        dump = subprocess.Popen(
            ["mariadb-dump", "-h127.0.0.1", "-uroot", "--single-transaction", db, "bench_rows"],
            stdout=subprocess.PIPE,
        )
        subprocess.run(["mariadb", "-h127.0.0.1", "-uroot", copy_db], stdin=dump.stdout, check=True)
        dump.wait()
        baseline = time.monotonic() - started
    finally:
        _mysql("", f"DROP DATABASE IF EXISTS {copy_db}")
    task = _task(f"bm{uuid.uuid4().hex[:8]}", db, target_db, "full-load")
    ours = _run_until_caught_up(task, 3600)
    producer = _producer_load_seconds(task)
    print(f"full load of {rows:,} rows:")
    print(f"  mariadb-dump | mariadb : {baseline:8.1f} s  {rows / baseline:10,.0f} rows/s")
    print(f"  headwater -> PostgreSQL: {ours:8.1f} s  {rows / ours:10,.0f} rows/s")
    print(f"  producer alone (Kafka) : {producer:8.1f} s  {rows / producer:10,.0f} rows/s")
    print(f"  ratio headwater / dump : {baseline / ours:8.2f} (rate)")


T = TypeVar("T")


def _cpu(step: Callable[[], T]) -> tuple[float, T]:
    """The CPU seconds `step` took in this process, and its result."""
    started = time.process_time()
    result = step()
    return time.process_time() - started, result


def _fetch_all(conn: Connection, query: str, args: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, args)
        return list(cur.fetchall())


def bench_breakdown(db: str, rows: int) -> None:
    """CPU microseconds per row of each step of the full load, in this process (on at most
    200k rows, which it holds in memory)."""
    rows = min(rows, 200_000)
    with connect(f"{MARIADB}/{db}") as conn:
        schema = catalog.describe_table(conn, TableId(db, "bench_rows"))
        query = "SELECT * FROM bench_rows LIMIT %s"
        read_s, values = _cpu(lambda: _fetch_all(conn, query, (rows,)))
    source = SourceInfo("mysql", "bench", db, schema.table, 0, "true", file="f", pos=4)
    convert = tuple_converter(schema)
    convert_s, events = _cpu(
        lambda: [ChangeEvent("r", source, None, convert(r), 0) for r in values]
    )
    serde = AvroSerde(SchemaRegistry(REGISTRY))
    topic = table_topic(f"bench{uuid.uuid4().hex[:8]}", schema.table)
    value_id = serde.schema_id(value_subject(topic), value_schema("bench", schema))
    encode_s, _ = _cpu(lambda: [serde.encode(value_id, envelope_record(e, schema)) for e in events])
    print(f"full load CPU per row ({rows:,} rows, one process):")
    for name, seconds in [
        ("PyMySQL read and decode", read_s),
        ("convert + build events (ours)", convert_s),
        ("envelope + Avro encode", encode_s),
    ]:
        print(f"  {name:30}: {seconds / rows * 1e6:7.1f} us  ({rows / seconds:10,.0f} rows/s)")


def _decode_only(start: BinlogPosition, rows: int) -> float:
    reader = BinLogStreamReader(
        connection_settings=reader_settings(MARIADB),
        server_id=4_000_001,
        log_file=start.file,
        log_pos=start.pos,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent],
    )
    seen = 0
    started = time.monotonic()
    for event in reader:
        seen += len(event.rows)
        if seen >= rows:
            break
    reader.close()
    return seen / (time.monotonic() - started)


def bench_stream(db: str, rows: int, target_db: str) -> None:
    _mysql(db, "CREATE TABLE stream_rows LIKE bench_rows")
    task = _task(f"bs{uuid.uuid4().hex[:8]}", db, target_db, "cdc")
    runner = TaskRunner(task, log_level=logging.WARNING)
    runner.start()
    try:
        runner.wait_caught_up(120, poll_s=0.5)
        with connect(f"{MARIADB}/{db}") as conn:
            start = current_position(conn, detect(conn))
        started = time.monotonic()
        batch = 200  # one transaction per batch, like an application's commits
        with connect(f"{MARIADB}/{db}") as conn, conn.cursor() as cur:
            for first in range(1, rows + 1, batch):
                n = min(batch, rows + 1 - first)
                cur.execute(
                    "INSERT INTO stream_rows SELECT * FROM bench_rows WHERE id BETWEEN %s AND %s",
                    (first, first + n - 1),
                )
        write_s = time.monotonic() - started
        with connect(f"{MARIADB}/{db}") as conn:
            end = current_position(conn, detect(conn))
        _wait_saved(task, end, 1800)
        producer_s = time.monotonic() - started
        runner.wait_caught_up(1800, poll_s=0.5)
        total_s = time.monotonic() - started
    finally:
        runner.stop()
    decode_rate = _decode_only(start, rows)
    print(f"streaming {rows:,} inserted rows (transactions of 200 rows):")
    print(f"  source write rate      : {rows / write_s:10,.0f} rows/s")
    print(f"  headwater end to end   : {rows / total_s:10,.0f} rows/s (write start to target)")
    print(f"  producer alone (Kafka) : {rows / producer_s:10,.0f} rows/s (position saved)")
    print(f"  ratio headwater / write: {write_s / total_s:8.2f}")
    print(f"  decode only (pymysqlreplication, no Kafka): {decode_rate:10,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stream-rows", type=int, default=200_000)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    db, target_db = f"bench_my_{suffix}", f"bench_dst_{suffix}"
    _mysql("", f"CREATE DATABASE {db}")
    _pg(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))
    try:
        started = time.monotonic()
        _mysql(db, TABLE_SQL, FILL_SQL.format(rows=args.rows))
        print(f"filled {args.rows:,} rows in {time.monotonic() - started:.1f} s")
        bench_breakdown(db, args.rows)
        bench_full_load(db, args.rows, target_db)
        bench_stream(db, min(args.stream_rows, args.rows), target_db)
    finally:
        _mysql("", f"DROP DATABASE IF EXISTS {db}")
        _pg(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target_db)))


if __name__ == "__main__":
    main()
