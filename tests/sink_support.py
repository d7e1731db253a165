"""What the sink tests share: a feed producing change events as a headwater producer
writes them, the test tables and rows, a sink run in a thread, the dead-letter reader and a
fresh MariaDB target database."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from consumers.lag import PartitionLag, sink_lag
from consumers.offsets import load_offsets
from consumers.sink import SinkLoop, run_sink
from headwater.config import TaskConfig
from schemas.avro_schemas import key_schema, value_schema
from schemas.envelope import ChangeEvent, Op, Row, SourceInfo, envelope_record, key_record
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import Column, TableId, TableSchema
from schemas.topics import dead_letter_topic, key_subject, table_topic, value_subject

CATCH_UP_TIMEOUT_S = 120.0


def _columns(*extra: Column) -> tuple[Column, ...]:
    return (
        Column("id", "int4", "integer", nullable=False),
        Column("name", "varchar", "character varying(40)", nullable=False),
        Column("price", "numeric", "numeric(12,2)", precision=12, scale=2),
        Column("note", "text", "text"),
        Column("created", "timestamptz", "timestamp with time zone"),
        Column("payload", "jsonb", "jsonb"),
        Column("uid", "uuid", "uuid"),
        Column("data", "bytea", "bytea"),
        Column("day", "date", "date"),
        Column("at", "time", "time without time zone"),
        *extra,
    )


def table_schema(name: str, *extra: Column) -> TableSchema:
    return TableSchema(TableId("public", name), _columns(*extra), ("id",))


def row(key: int, version: int = 0, **values: Any) -> Row:
    base: Row = {
        "id": key,
        "name": f"item {key} v{version}",
        "price": Decimal(key * 100 + version).scaleb(-2),
        "note": f"note {key} " + "x" * 3000,
        "created": datetime(2024, 1, 1, 12, 0, key % 60, tzinfo=UTC),
        "payload": f'{{"k": {key}, "v": {version}}}',
        "uid": str(uuid.UUID(int=key)),
        "data": bytes([key % 256, 0, 92, 9, 10]),
        "day": date(2024, 1, 1 + key % 28),
        "at": dtime(12, key % 60, 0, 123456),
    }
    base.update(values)
    return base


@dataclass
class ChangeFeed:
    """Produces change events for a task's tables as the headwater producer does."""

    task: TaskConfig
    partitions: int = 1
    serde: AvroSerde = field(init=False)
    producer: Producer = field(init=False)
    ids: dict[TableId, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.serde = AvroSerde(SchemaRegistry(self.task.registry.url))
        self.producer = Producer(
            {
                "bootstrap.servers": self.task.kafka.bootstrap_servers,
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )

    def topic(self, schema: TableSchema) -> str:
        return table_topic(self.task.topic_prefix, schema.table)

    def register(self, schema: TableSchema) -> None:
        topic = self.topic(schema)
        admin = AdminClient({"bootstrap.servers": self.task.kafka.bootstrap_servers})
        for future in admin.create_topics([NewTopic(topic, self.partitions, 1)]).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        prefix = self.task.topic_prefix
        self.ids[schema.table] = (
            self.serde.schema_id(key_subject(topic), key_schema(prefix, schema)),
            self.serde.schema_id(value_subject(topic), value_schema(prefix, schema)),
        )

    def send(
        self,
        schema: TableSchema,
        op: Op,
        before: Row | None = None,
        after: Row | None = None,
        unavailable: tuple[str, ...] = (),
        lsn: int = 1,
    ) -> None:
        key_id, value_id = self.ids[schema.table]
        now = int(time.time() * 1000)
        # A truncate is named by its lsn: give each one its own.
        source = SourceInfo("postgresql", "test", "db", schema.table, now, lsn=lsn)
        event = ChangeEvent(op, source, before, after, now, unavailable)
        value = self.serde.encode(value_id, envelope_record(event, schema))
        topic = self.topic(schema)
        if op == "t":
            for partition in range(self.partitions):
                self.producer.produce(topic, value=value, partition=partition)
            return
        key_values = event.key(schema)
        assert key_values is not None
        key = self.serde.encode(key_id, key_record(key_values, schema))
        self.producer.produce(topic, key=key, value=value)
        if op == "d":
            self.producer.produce(topic, key=key, value=None)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def wait_caught_up(
    task: TaskConfig, topics: int, timeout: float = CATCH_UP_TIMEOUT_S
) -> list[PartitionLag]:
    deadline = time.monotonic() + timeout
    while True:
        lags = sink_lag(task)
        if len({p.topic for p in lags}) >= topics and all(p.lag == 0 for p in lags):
            return lags
        if time.monotonic() > deadline:
            raise AssertionError(f"sink not caught up after {timeout}s: {lags}")
        time.sleep(0.2)


@dataclass
class RunningSink:
    loop: SinkLoop
    stop: threading.Event
    thread: threading.Thread
    failure: list[BaseException]

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        # Stopped while retrying (run_sink takes that as a clean stop too).
        assert not [f for f in self.failure if not isinstance(f, InterruptedError)], self.failure


def start_sink(task: TaskConfig) -> RunningSink:
    stop = threading.Event()
    loop = SinkLoop(task, stop)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            loop.run()
        except BaseException as exc:
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=target, name=f"sink-{task.name}", daemon=True)
    thread.start()
    return RunningSink(loop, stop, thread, failure)


def run_until_caught_up(task: TaskConfig, topics: int = 1) -> RunningSink:
    """A sink started, run until it applied everything in `topics` topics, and halted."""
    sink = start_sink(task)
    try:
        wait_caught_up(task, topics)
    finally:
        sink.halt()
    return sink


@pytest.fixture
def feed(task: TaskConfig) -> Iterator[ChangeFeed]:
    feed = ChangeFeed(task)
    yield feed
    feed.producer.flush(10)
    feed.serde.registry.close()


def sink_thread(task: TaskConfig) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    failure: list[BaseException] = []
    stop = threading.Event()

    def target() -> None:
        try:
            run_sink(task, stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, stop, failure


def read_dead_letters(task: TaskConfig, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"dlq-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(dead_letter_topic(task.topic_prefix), 0, 0)])
        found: list[Any] = []
        for _ in range(60):
            found += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
            if len(found) >= count:
                break
        return found
    finally:
        consumer.close()


def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = datetime.now() + timedelta(seconds=timeout)
    while not check():
        assert datetime.now() < deadline, "condition not met in time"
        threading.Event().wait(0.2)


def mariadb_database(root: str) -> Iterator[str]:
    """A fresh MariaDB database; dropped afterwards."""
    name = f"t_dst_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(root)
    conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username or "root")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")  # a generated name, no user input
        yield url.set(database=name).render_as_string(hide_password=False)
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def send_first_rows(feed: ChangeFeed, items: TableSchema, lines: TableSchema) -> None:
    """Register both tables: six snapshot rows of `items`, one created row of `lines`."""
    feed.register(items)
    feed.register(lines)
    for key in range(1, 7):
        feed.send(items, "r", after=row(key))
    feed.send(lines, "c", after=row(1))
    feed.flush()


def send_every_kind_of_change(feed: ChangeFeed, items: TableSchema, lines: TableSchema) -> None:
    """After send_first_rows: updates, deletes, a key change, unchanged TOAST, a truncate."""
    feed.send(items, "u", before=row(2), after=row(2, 1))
    feed.send(items, "d", before={"id": 3})  # key-only before, then a tombstone
    feed.send(items, "d", before={"id": 99})  # a row the target never had
    feed.send(items, "d", before=row(4))  # a key change: 4 becomes 40
    feed.send(items, "c", after=row(40, 1))
    # Unchanged TOAST: `note` not sent, so the target keeps it.
    feed.send(items, "u", before=None, after=row(5, 1, note=None), unavailable=("note",))
    # Unchanged TOAST merged with an earlier event of the same key in the batch.
    feed.send(items, "c", after=row(7))
    feed.send(items, "u", after=row(7, 1, note=None), unavailable=("note",))
    feed.send(items, "u", after=row(6, 1, price=None, payload=None))
    feed.send(lines, "c", after=row(2))
    feed.send(lines, "t")
    feed.send(lines, "c", after=row(3))


def items_after_every_kind_of_change() -> list[Row]:
    """What `items` holds after send_first_rows and send_every_kind_of_change."""
    return [
        row(1),
        row(2, 1),
        row(5, 1, note=row(5)["note"]),
        row(6, 1, price=None, payload=None),
        row(7, 1, note=row(7)["note"]),
        row(40, 1),
    ]


def assert_offsets_stored_at_log_end(task: TaskConfig, lags: list[PartitionLag]) -> None:
    """The target stores each partition's end offset, and each lag has its latency."""
    stored = load_offsets(task)
    assert {(p.topic, p.partition): p.end_offset for p in lags} == {
        k: v.next_offset for k, v in stored.items()
    }
    assert all(p.latency_ms is not None and p.latency_ms >= 0 for p in lags)


def target_rows(task: TaskConfig, table: TableId) -> list[tuple[Any, ...]]:
    """Every row of a PostgreSQL target's `table`, by its first column."""
    url = task.target.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(
            sql.Identifier(table.schema, table.name)
        )
        return conn.execute(query).fetchall()


def as_stored(values: Row, schema: TableSchema) -> tuple[Any, ...]:
    """A row as psycopg reads it back from a PostgreSQL target."""
    out = []
    for col in schema.columns:
        value = values.get(col.name)
        if value is not None and col.type_name == "jsonb":
            value = json.loads(value)
        elif value is not None and col.type_name == "uuid":
            value = uuid.UUID(value)
        out.append(value)
    return tuple(out)
