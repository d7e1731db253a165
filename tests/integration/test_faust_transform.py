"""The faust transform stage against Kafka itself: two workers of one task share the raw
partitions; one is SIGKILLed mid-stream and restarted; a table's topic appears while they run;
a read_committed reader then finds every transformed record exactly once, the output
partitions carry transaction markers, the group's committed offsets reach the end of the raw
topics, and its offset commits in `__consumer_offsets` end in transaction markers too
(TxnOffsetCommit: offsets and output in one transaction)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from headwater.config import TaskConfig
from headwater.stages import run_stage
from producers.event_writer import EventWriter
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import Column, TableId, TableSchema
from schemas.topics import table_topic
from tests.services import Endpoints
from transforms.outputs import transform_group
from transforms.progress import transform_lag

pytestmark = [pytest.mark.integration]

TABLE = TableSchema(
    TableId("public", "accounts"),
    (
        Column("id", "int8", "bigint", nullable=False),
        Column("email", "text", "text"),
        Column("status", "text", "text"),
    ),
    ("id",),
)
LATER = TableSchema(
    TableId("public", "notes"),
    (Column("id", "int8", "bigint", nullable=False), Column("status", "text", "text")),
    ("id",),
)

RULES: dict[str, Any] = {
    "rules": [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "object-locator": {"schema-name": "public", "table-name": "%"},
            "rule-action": "include",
        },
        {
            "rule-type": "transformation",
            "rule-id": "2",
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "accounts",
                "column-name": "email",
            },
            "rule-action": "rename",
            "value": "contact",
        },
        {
            "rule-type": "transformation",
            "rule-id": "3",
            "rule-target": "table",
            "object-locator": {"schema-name": "public", "table-name": "accounts"},
            "rule-action": "filter-row",
            "expression": "$status <> 'closed'",
        },
    ]
}


@pytest.fixture
def task(services: Endpoints) -> Iterator[TaskConfig]:
    built = TaskConfig.model_validate(
        {
            "name": f"f{uuid.uuid4().hex[:10]}",
            "table_mappings": RULES,
            "kafka": {"bootstrap_servers": services.kafka, "partitions": 2},
            "registry": {"url": services.registry},
        }
    )
    yield built
    admin = AdminClient({"bootstrap.servers": built.kafka.bootstrap_servers})
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(built.topic_prefix)]
    for future in admin.delete_topics(mine, operation_timeout=30).values():
        future.result()


def write_raw(task: TaskConfig, ids: range, table: TableSchema = TABLE) -> None:
    """Insert events for `ids`; every tenth account is 'closed' and dropped by the rules."""
    registry = SchemaRegistry(task.registry.url)
    writer = EventWriter(task, registry)
    writer.register_table(table)
    for i in ids:
        row: dict[str, Any] = {"id": i, "status": "closed" if i % 10 == 0 else "open"}
        if table is TABLE:
            row["email"] = f"u{i}@example.com"
        source = SourceInfo("postgresql", task.name, "t", table.table, 1, lsn=i)
        writer.write(ChangeEvent("c", source, None, row, 1))
    writer.flush()
    writer.close()
    registry.close()


class Workers:
    """Transform worker processes of one task, as `headwater run` starts the stage."""

    def __init__(self, task: TaskConfig) -> None:
        self.task = task
        self.ctx = mp.get_context("spawn")
        self.errors: mp.Queue[tuple[str, str]] = self.ctx.Queue()
        self.procs: dict[str, BaseProcess] = {}

    def start(self, name: str) -> None:
        proc = self.ctx.Process(
            target=run_stage,
            args=("transform", self.task.model_dump(by_alias=True), self.errors, logging.INFO),
            name=f"transform-{name}",
        )
        proc.start()
        self.procs[name] = proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def check(self) -> None:
        assert self.errors.empty(), self.errors.get_nowait()
        assert all(p.is_alive() for p in self.procs.values())


def wait_for(what: str, done: Callable[[], bool], workers: Workers, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        workers.check()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def transformed(task: TaskConfig) -> int:
    return sum(lag.committed_offset for lag in transform_lag(task))


def caught_up(task: TaskConfig, expected: int) -> bool:
    lags = transform_lag(task)
    return sum(lag.end_offset for lag in lags) == expected and all(lag.lag == 0 for lag in lags)


def assignments(task: TaskConfig) -> list[set[tuple[str, int]]]:
    admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})
    future = admin.describe_consumer_groups([transform_group(task)])[transform_group(task)]
    group = future.result(timeout=10)
    return [
        {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in group.members
    ]


def shared(task: TaskConfig, raw_topics: int = 1) -> bool:
    members = assignments(task)
    return (
        len(members) == 2
        and all(len(m) == raw_topics for m in members)
        and not members[0] & members[1]
    )


def read_committed(task: TaskConfig, topic: str) -> tuple[list[tuple[int, bytes]], dict[int, int]]:
    """(partition, key) of the committed records of `topic`, and each partition's high
    watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.name}-check",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    watermarks = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    keys: list[tuple[int, bytes]] = []
    pending = set(partitions)
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            pending.discard(msg.partition() or 0)
            continue
        key = msg.key()
        assert key is not None
        keys.append((msg.partition() or 0, key))
    consumer.close()
    assert not pending
    return keys, watermarks


def _java_hash(text: str) -> int:
    h = 0
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offset_commits(task: TaskConfig) -> tuple[int, int, int]:
    """The transform group's offset commits in `__consumer_offsets`, as runs of its records:
    how many runs, how many are directly followed by a transaction marker (an offset with no
    record: written by TxnOffsetCommit, in a producer transaction), and how many by a record
    of another group (other tests commit too; those runs tell nothing)."""
    group = transform_group(task)
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.name}-offsets",
            "enable.partition.eof": True,
        }
    )
    internal = "__consumer_offsets"
    count = len(consumer.list_topics(internal, timeout=10).topics[internal].partitions)
    partition = abs(_java_hash(group)) % count  # how Kafka places a group's commits
    high = consumer.get_watermark_offsets(TopicPartition(internal, partition), timeout=10)[1]
    consumer.assign([TopicPartition(internal, partition, 0)])
    seen: set[int] = set()
    mine: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            break
        offset = msg.offset() or 0
        seen.add(offset)
        key = msg.key() or b""
        if key[:2] in (b"\x00\x00", b"\x00\x01") and group.encode() in key:
            mine.add(offset)
    consumer.close()
    # One transaction may commit several partitions' offsets: a run of records, one marker.
    ends = [o for o in mine if o + 1 not in mine]
    marked = sum(1 for o in ends if o + 1 not in seen and o + 1 < high)
    return len(ends), marked, sum(1 for o in ends if o + 1 in seen)


def test_two_workers_share_partitions_and_neither_a_kill_nor_a_new_table_loses_or_doubles(
    task: TaskConfig,
) -> None:
    write_raw(task, range(1, 1501))
    workers = Workers(task)
    try:
        workers.start("a")
        workers.start("b")
        wait_for("both workers to own a raw partition", lambda: shared(task), workers)
        write_raw(task, range(1501, 3001))
        wait_for("progress", lambda: transformed(task) > 1000, workers)
        workers.kill("a")
        write_raw(task, range(3001, 4501))
        workers.start("a")
        wait_for("all raw events", lambda: caught_up(task, 4500), workers, timeout=180)
        wait_for("the partitions shared again", lambda: shared(task), workers)
        write_raw(task, range(1, 201), LATER)  # a new table: its topic appears
        wait_for("the new table", lambda: caught_up(task, 4700), workers)
        wait_for("both topics shared", lambda: shared(task, raw_topics=2), workers)
    finally:
        workers.stop()

    serde = AvroSerde(SchemaRegistry(task.registry.url))
    for table, expected in (
        (TABLE, [i for i in range(1, 4501) if i % 10 != 0]),
        (LATER, list(range(1, 201))),
    ):
        keys, watermarks = read_committed(task, table_topic(task.sink_topic_prefix, table.table))
        assert sorted(serde.decode(k)[1]["id"] for _p, k in keys) == expected
        # Transaction markers take offsets: each partition's log is longer than its records.
        for partition, high in watermarks.items():
            assert high > sum(1 for p, _k in keys if p == partition) > 0
    runs, in_transactions, interleaved = offset_commits(task)
    assert in_transactions == runs - interleaved
    assert in_transactions >= runs // 2 > 0
