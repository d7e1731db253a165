"""The tail of real topics read back for a restarted producer (producers/kafka_tail.py):
per partition the last streamed change, found behind more incremental snapshot rows than
one window holds; librdkafka's partitioner and our murmur2 agree; and an EventWriter
given the result writes again only what is past each partition's high-water."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from headwater.config import TaskConfig
from producers.event_writer import EventWriter
from producers.kafka_tail import TailScan, read_resume_filter
from producers.resume_dedupe import HighWater, Position, key_partition, postgres_position
from schemas.avro_schemas import key_schema
from schemas.envelope import ChangeEvent, SourceInfo, key_record
from schemas.registry import SchemaRegistry
from schemas.tables import Column, TableId, TableSchema
from schemas.topics import key_subject, table_topic

pytestmark = pytest.mark.integration

TABLE = TableId("public", "tail")
SCHEMA = TableSchema(
    TABLE, (Column("id", "int4", "integer", False), Column("v", "text", "text")), ("id",)
)


def _streamed(i: int, position: Position, op: str = "c") -> ChangeEvent:
    commit_lsn, lsn, seq = position
    source = SourceInfo(
        "postgresql", "p", "db", TABLE, 0, "false", lsn=lsn, commit_lsn=commit_lsn, seq=seq
    )
    row = {"id": i, "v": f"v{i}"}
    if op == "d":
        return ChangeEvent("d", source, row, None)
    return ChangeEvent("c", source, None, row)


def _incremental(i: int) -> ChangeEvent:
    source = SourceInfo("postgresql", "p", "db", TABLE, 0, "incremental", lsn=5)
    return ChangeEvent("r", source, None, {"id": i, "v": "snap"})


def _partition_counts(task: TaskConfig, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": task.kafka.bootstrap_servers, "group.id": "probe"})
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(task.kafka.partitions)
        ]
    finally:
        consumer.close()
    return [high - low for low, high in ends]


def _keys_in_place(task: TaskConfig, topic: str) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": "probe",
            "enable.auto.commit": False,
        }
    )
    counts = _partition_counts(task, topic)
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(task.kafka.partitions)])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < sum(counts) and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=0.5):
                assert msg.error() is None
                assert msg.partition() == key_partition(msg.key() or b"", task.kafka.partitions)
                seen += 1
        assert seen == sum(counts)
    finally:
        consumer.close()


def test_tail_found_behind_snapshot_rows_and_resume_writes_only_the_rest(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(kafka={"partitions": 3})
    topic = table_topic(task.topic_prefix, TABLE)
    registry = SchemaRegistry(task.registry.url)
    writer = EventWriter(task, registry)
    try:
        writer.register_table(SCHEMA)
        key_id = writer.serde.schema_id(key_subject(topic), key_schema(task.topic_prefix, SCHEMA))
        stream = [(i, (1000 + i // 3, 500 + i, 0)) for i in range(60)]
        stream.append((7, (2000, 1, 0)))  # a delete (and its tombstone) last of all
        for i, position in stream:
            writer.write(_streamed(i, position, "d" if position[0] == 2000 else "c"))
        for i in range(900):  # ~300 per partition, more than the first window of 256
            writer.write(_incremental(i))
        writer.flush()
        _keys_in_place(task, topic)  # librdkafka's murmur2_random is our murmur2

        scan = TailScan()
        resume = read_resume_filter(
            task.kafka.bootstrap_servers, writer.serde, [topic], postgres_position, scan
        )
        expected: dict[tuple[str, int], HighWater] = {}
        for i, position in stream:
            key = writer.serde.encode(key_id, key_record({"id": i}, SCHEMA))
            expected[(topic, key_partition(key, 3))] = HighWater(position)
        assert resume.high_waters == expected
        assert scan.records > 900 and not scan.unpositioned

        # The source sends the stream again, then more: only the new changes are written.
        before = sum(_partition_counts(task, topic))
        writer.resume = resume
        for i, position in stream:
            writer.write(_streamed(i, position, "d" if position[0] == 2000 else "c"))
        assert writer.resume is resume and resume.skipped == len(stream)
        writer.write(_streamed(100, (3000, 1, 0)))
        writer.write(_streamed(101, (3000, 2, 0)))
        assert writer.resume is None
        writer.flush()
        assert sum(_partition_counts(task, topic)) == before + 2
    finally:
        writer.close()
        registry.close()
