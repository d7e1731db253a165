"""The PostgreSQL producer against real PostgreSQL, Kafka and registry, read back with
Confluent's own Avro deserializer (any Kafka client must be able to read our topics)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from headwater.config import TaskConfig
from producers.postgres.connection import connect
from producers.postgres.producer import PostgresProducer
from producers.postgres.replication import ReplicationLost, ReplicationStream, slot_info
from producers.task_state import TaskStateStore

pytestmark = pytest.mark.integration


def read_topic(task: TaskConfig, topic: str, expect: int, timeout: float = 30) -> list[Any]:
    """(key, value) pairs of the topic decoded by Confluent's deserializer."""
    # A timeout, and the classic topic-name strategy: newer clients otherwise ask the
    # registry for "associations" first, which Apicurio answers with 404 (and once, under
    # load, not at all: an unbounded wait).
    client = SchemaRegistryClient({"url": task.registry.url, "timeout": 10})
    values = AvroDeserializer(client, conf={"subject.name.strategy": topic_subject_name_strategy})
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"check-{task.name}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is None
                ctx = SerializationContext(topic, MessageField.KEY)
                key = values(msg.key(), ctx)
                value = values(msg.value(), SerializationContext(topic, MessageField.VALUE))
                out.append((key, value))
    finally:
        consumer.close()
    return out


@pytest.fixture
def running(make_task: Callable[..., TaskConfig]) -> Iterator[tuple[TaskConfig, Any]]:
    task = make_task()
    with connect(task.source.url) as conn:
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, price numeric(8,2), name text, "
            "at timestamptz, tags jsonb)"
        )
        conn.execute(
            "INSERT INTO items SELECT g, g * 1.5, 'item ' || g, "
            "'2024-05-01 00:00:00+00', '{\"k\": 1}' FROM generate_series(1, 20) g"
        )
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            PostgresProducer(task, stop).run()
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    yield task, errors
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_snapshot_then_stream_in_order_without_double(running: tuple[TaskConfig, Any]) -> None:
    task, errors = running
    topic = f"{task.topic_prefix}.public.items"
    assert len(read_topic(task, topic, expect=20)) == 20  # the full load is in Kafka
    with connect(task.source.url) as conn:
        conn.execute("INSERT INTO items VALUES (21, 9.99, 'new', now(), NULL)")
        conn.execute("UPDATE items SET price = 0.01 WHERE id = 1")
        conn.execute("UPDATE items SET id = 100 WHERE id = 2")
        conn.execute("DELETE FROM items WHERE id = 3")
    # 20 snapshot reads + insert + update + (delete, tombstone, create) + delete + tombstone
    records = read_topic(task, topic, expect=27)
    assert not errors
    ops = [(v["op"] if v else None, k["id"]) for k, v in records]
    reads = [key for op, key in ops if op == "r"]
    assert sorted(reads) == list(range(1, 21))
    assert ops[20:] == [("c", 21), ("u", 1), ("d", 2), (None, 2), ("c", 100), ("d", 3), (None, 3)]
    first = records[0][1]
    assert first["source"]["snapshot"] == "true" and first["source"]["connector"] == "postgresql"
    update = records[21][1]
    assert update["after"]["price"] == Decimal("0.01")
    assert update["source"]["lsn"] > 0 and update["source"]["txId"] > 0


def test_idle_slot_keeps_advancing_and_state_is_recorded(
    running: tuple[TaskConfig, Any],
) -> None:
    task, errors = running
    read_topic(task, f"{task.topic_prefix}.public.items", expect=20)
    with connect(task.target.url, role="target") as busy:
        # Writes in another database only: the slot's database stays idle.
        busy.execute("CREATE TABLE elsewhere (id int PRIMARY KEY)")
        busy.execute("INSERT INTO elsewhere SELECT generate_series(1, 1000)")
    with connect(task.source.url) as conn:
        # Writes to a table outside the task: WAL grows, no event is produced.
        conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
        conn.execute("INSERT INTO other SELECT generate_series(1, 1000)")
        wanted = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 20
        confirmed = None
        while time.monotonic() < deadline:
            info = slot_info(conn, task.slot_name)
            assert info is not None
            confirmed = conn.execute(
                "SELECT %s::pg_lsn - '0/0'", (info["confirmed_flush_lsn"],)
            ).fetchone()[0]  # type: ignore[index]
            if confirmed >= wanted:
                break
            time.sleep(0.5)
    assert confirmed is not None and confirmed >= wanted
    assert not errors
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    assert state is not None and state.snapshot_status == "done"
    assert state.tables["public.items"].rows == 20 and state.tables["public.items"].done


ALL_TYPES_DDL = """
CREATE TABLE every_type (
    id int PRIMARY KEY, s smallint, b bigint, n numeric(12,2), nf numeric, r real,
    d double precision, t text, vc varchar(10), c char(3), flag boolean, day date,
    tm time, ts timestamp, tstz timestamptz, iv interval, u uuid, js json, jb jsonb,
    raw bytea, ip inet, ints int[], mood_label text
)
"""
ALL_TYPES_ROW = """
INSERT INTO every_type VALUES (%s, -32768, 9223372036854775807, 1234567890.12, 3.14159265358979,
    1.5, -1e300, 'tëxt', 'varchar', 'ab', true, '2024-02-29', '23:59:59.999999',
    '2024-01-01 00:00:00.000001', '1999-12-31 23:59:59+05:30', '1 day 2 hours',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, "x"]}', '{"b": null}', '\\x00ff',
    '192.168.0.1/24', '{1,2,NULL}', NULL)
"""


def test_snapshot_and_stream_carry_identical_values_for_every_type(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task()
    with connect(task.source.url) as conn:
        conn.execute(ALL_TYPES_DDL)
        conn.execute(ALL_TYPES_ROW, (1,))
    stop = threading.Event()
    thread = threading.Thread(target=lambda: PostgresProducer(task, stop).run())
    thread.start()
    try:
        topic = f"{task.topic_prefix}.public.every_type"
        assert len(read_topic(task, topic, expect=1)) == 1
        with connect(task.source.url) as conn:
            conn.execute(ALL_TYPES_ROW, (2,))
        (snap, streamed) = [v for _k, v in read_topic(task, topic, expect=2)]
    finally:
        stop.set()
        thread.join(30)
    assert (snap["op"], streamed["op"]) == ("r", "c")
    from_snapshot = {k: v for k, v in snap["after"].items() if k != "id"}
    from_stream = {k: v for k, v in streamed["after"].items() if k != "id"}
    assert from_snapshot == from_stream
    assert from_stream["flag"] is True and from_stream["n"] == Decimal("1234567890.12")
    assert from_stream["raw"] == b"\x00\xff" and from_stream["mood_label"] is None


def test_a_replication_connection_ended_before_start_is_retried_not_fatal(
    make_task: Callable[..., TaskConfig],
) -> None:
    """An administrator (or a test) ending the replication connection while the producer
    reconnects must look like a dropped stream (ReplicationLost: retried with backoff), not a
    fatal error; CI once saw START_REPLICATION fail with 57P01 and the producer stop."""
    task = make_task()
    with connect(task.source.url) as conn:
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY)")
        conn.execute(f"CREATE PUBLICATION {task.publication} FOR TABLE probe")
        conn.commit()
        stream = ReplicationStream(connect(task.source.url, replication=True))
        try:
            stream.create_slot(task.slot_name, export_snapshot=False)
            pid = stream.pgconn.backend_pid
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(ReplicationLost, match="START_REPLICATION"):
                stream.start(task.slot_name, task.publication)
        finally:
            stream.conn.close()
            conn.execute("SELECT pg_drop_replication_slot(%s)", (task.slot_name,))
