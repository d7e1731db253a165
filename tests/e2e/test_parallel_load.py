"""The chunked, parallel PostgreSQL full load end to end: several tables (integer, text,
composite and no keys to chunk by) loaded by two workers end equal row by row, chunks of one
table are read by two connections, and a load killed half way reads again only the chunks
it had not finished."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import TaskRunner
from producers.postgres.chunks import chunks_finished
from producers.postgres.connection import application_name, connect
from producers.task_state import TaskStateStore
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from tests.helpers import started_runners

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TABLES_SQL = [
    "CREATE TABLE big (id bigint PRIMARY KEY, val int NOT NULL, note text NOT NULL)",
    "INSERT INTO big SELECT g * 3, g, repeat(md5(g::text), 4) FROM generate_series(1, 24000) g",
    "CREATE TABLE words (word text PRIMARY KEY, n int)",
    "INSERT INTO words SELECT md5(g::text), g FROM generate_series(1, 7000) g",
    "CREATE TABLE pairs (region text, seq int, amount numeric(10,2), PRIMARY KEY (region, seq))",
    "INSERT INTO pairs SELECT 'r' || (g % 7), g, g / 100.0 FROM generate_series(1, 6000) g",
    "CREATE TABLE tiny (id int PRIMARY KEY, label varchar(10))",
    "INSERT INTO tiny VALUES (1, 'one'), (2, 'two')",
    "CREATE TABLE nothing (id uuid PRIMARY KEY)",
]

EXPECTED_ROWS = {
    "public.big": 24000,
    "public.words": 7000,
    "public.pairs": 6000,
    "public.tiny": 2,
    "public.nothing": 0,
}


@pytest.fixture
def start() -> Iterator[Callable[[TaskConfig], TaskRunner]]:
    yield from started_runners()


def load_workers(task: TaskConfig) -> set[int]:
    """Backends of the task's load workers still connected."""
    with connect(task.source.url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (application_name(f"{task.name} load"),),
        ).fetchall()
    return {int(str(r[0])) for r in rows}


def _chunk_readers(log: str, table: str) -> set[int]:
    """The worker pids the producer's debug log names as readers of chunks of `table`."""
    pattern = rf"chunk \d+ of {re.escape(table)}: \d+ rows by worker (\d+)"
    return {int(pid) for pid in re.findall(pattern, log)}


def assert_equal(task: TaskConfig) -> None:
    comparisons = compare_task(task)
    assert comparisons
    for c in comparisons:
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])


def test_parallel_load_of_several_tables_ends_equal(
    make_task: Callable[..., TaskConfig], capfd: pytest.CaptureFixture[str]
) -> None:
    task = make_task(source={"snapshot_workers": 2, "snapshot_chunk_rows": 1500})
    with connect(task.source.url) as conn:
        for statement in TABLES_SQL:
            conn.execute(statement)
        conn.execute("ANALYZE")
    # The producer logs, at debug level, which worker process read each chunk. (Sampling
    # pg_stat_activity for the COPYs missed them on a busy machine: a chunk takes ms.)
    runner = TaskRunner(task, log_level=logging.DEBUG)
    runner.start()
    try:
        runner.wait_caught_up(180, poll_s=0.5)
        readers = _chunk_readers(capfd.readouterr().err, "public.big")
        with connect(task.source.url) as conn:  # the stream goes on after the parallel load
            conn.execute("UPDATE big SET val = -val WHERE id % 1000 = 0")
            conn.execute("DELETE FROM words WHERE n % 100 = 0")
            conn.execute("INSERT INTO pairs VALUES ('new', 1, 1.5)")
            # The sink creates a table with its first event: an empty one has none yet.
            conn.execute("INSERT INTO nothing VALUES (gen_random_uuid())")
        runner.wait_caught_up(60, poll_s=0.5)
        assert_equal(task)
        state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
        assert state is not None and state.snapshot_status == "done"
        progress = state.tables
        assert progress["public.big"].chunks_total >= 15  # 24,000 rows / 1,500
        assert progress["public.words"].chunks_total >= 4  # text key: boundaries in key order
        assert progress["public.pairs"].chunks_total >= 3  # composite key
        assert progress["public.tiny"].chunks_total == progress["public.nothing"].chunks_total == 1
        for name, table in progress.items():
            assert table.done and chunks_finished(table.chunks_done) == table.chunks_total, name
            assert table.rows == EXPECTED_ROWS[name], name  # each row read once
    finally:
        runner.stop(timeout=20)
    # Two worker processes (each its own connection) read chunks of the same table.
    assert len(readers) >= 2, readers


def test_full_load_only_task_shares_one_exported_snapshot(
    make_task: Callable[..., TaskConfig], start: Callable[[TaskConfig], TaskRunner]
) -> None:
    task = make_task(mode="full-load", source={"snapshot_workers": 3, "snapshot_chunk_rows": 500})
    with connect(task.source.url) as conn:
        for statement in TABLES_SQL[2:6]:
            conn.execute(statement)
    runner = start(task)
    runner.wait_caught_up(120, poll_s=0.5)
    assert_equal(task)
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert state is not None and state.tables["public.words"].chunks_total >= 10
    assert state.tables["public.words"].rows == 7000


def snapshot_reads(task: TaskConfig, topic: str) -> list[tuple[int, str]]:
    """(id, source.snapshot) of every `r` event in the topic."""
    serde = AvroSerde(SchemaRegistry(task.registry.url))
    consumer = Consumer(
        {"bootstrap.servers": task.kafka.bootstrap_servers, "group.id": f"count-{task.name}"}
    )
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, 0)])
    reads: list[tuple[int, str]] = []
    position = 0
    deadline = time.monotonic() + 60
    try:
        while position < high and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                assert msg.error() is None
                position = (msg.offset() or 0) + 1
                value = msg.value()
                if value is None:
                    continue
                record: dict[str, Any] = serde.decode(value)[1]
                if record["op"] == "r":
                    reads.append((int(record["after"]["id"]), record["source"]["snapshot"]))
    finally:
        consumer.close()
    assert position >= high, "topic not read to its end"
    return reads


def wait_for_finished_chunks(store: TaskStateStore, task: TaskConfig, count: int) -> None:
    """Until the task state says `count` chunks of public.big are finished (or 120 s)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = store.load(task.name)
        table = state.tables.get("public.big") if state else None
        if table is not None and chunks_finished(table.chunks_done) >= count:
            return
        time.sleep(0.1)


def in_runs(key: int, runs: list[list[Any]]) -> bool:
    return any(
        (lower is None or key > int(lower[0])) and (upper is None or key <= int(upper[0]))
        for _first, _last, lower, upper in runs
    )


def test_killed_parallel_load_reads_only_unfinished_chunks_again(
    make_task: Callable[..., TaskConfig],
) -> None:
    rows = 100_000
    # Small chunks: the native encoder reads a 4,000-row chunk in milliseconds, and the kill
    # must land while most of the 500 chunks are still to come.
    chunk_rows = 200
    task = make_task(source={"snapshot_workers": 2, "snapshot_chunk_rows": chunk_rows})
    with connect(task.source.url) as conn:
        conn.execute(TABLES_SQL[0])
        conn.execute(TABLES_SQL[1].replace("24000", str(rows)))
        conn.execute("ANALYZE big")
    store = TaskStateStore(task.kafka.bootstrap_servers)
    first = TaskRunner(task)
    first.start()
    try:
        wait_for_finished_chunks(store, task, 4)
        assert len(load_workers(task)) == 2  # named in pg_stat_activity while they read
        producer = first.procs["producer"]
        assert producer.pid is not None
        os.kill(producer.pid, signal.SIGKILL)
        producer.join(10)
    finally:
        first.stop(timeout=20)
    # The workers die with their producer: their connections close, none reads on.
    deadline = time.monotonic() + 15
    while load_workers(task) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not load_workers(task)
    killed = store.load(task.name)
    assert killed is not None and killed.snapshot_status == "running"
    done_runs = killed.tables["public.big"].chunks_done
    finished = chunks_finished(done_runs)
    assert 4 <= finished < killed.tables["public.big"].chunks_total
    with connect(task.source.url) as conn:  # changes while the task is down
        conn.execute("UPDATE big SET val = -1 WHERE id IN (3, 6, %s)", (rows * 3,))
        conn.execute("DELETE FROM big WHERE id = 9")
    second = TaskRunner(task)
    second.start()
    try:
        second.wait_caught_up(240, poll_s=0.5)
    finally:
        second.stop(timeout=20)
    assert_equal(task)
    reads = snapshot_reads(task, f"{task.topic_prefix}.public.big")
    first_run = Counter(key for key, kind in reads if kind == "true")
    resumed = [key for key, kind in reads if kind == "incremental"]
    # Rows of finished chunks: read once, by the first run, never again.
    finished_keys = [k for k in range(3, rows * 3 + 1, 3) if in_runs(k, done_runs)]
    assert len(finished_keys) >= 4 * chunk_rows * 0.9
    assert all(first_run[k] == 1 for k in finished_keys)
    assert not [k for k in resumed if in_runs(k, done_runs)]
    # Every other row came again from the resumed (incremental) load.
    assert len(set(resumed)) == rows - len(finished_keys) - (0 if in_runs(9, done_runs) else 1)


@pytest.mark.slow
def test_load_stopped_half_way_stops_its_workers_and_resumes(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(source={"snapshot_workers": 2, "snapshot_chunk_rows": 4000})
    with connect(task.source.url) as conn:
        conn.execute(TABLES_SQL[0])
        conn.execute(TABLES_SQL[1].replace("24000", "100000"))
    store = TaskStateStore(task.kafka.bootstrap_servers)
    first = TaskRunner(task)
    first.start()
    wait_for_finished_chunks(store, task, 2)
    started = time.monotonic()
    first.stop(timeout=30)
    assert time.monotonic() - started < 25  # stopped, not killed after the timeout
    assert first.procs["producer"].exitcode == 0
    assert not load_workers(task)
    second = TaskRunner(task)
    second.start()
    try:
        second.wait_caught_up(240, poll_s=0.5)
    finally:
        second.stop(timeout=20)
    assert_equal(task)
