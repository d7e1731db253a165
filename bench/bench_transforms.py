"""Benchmark: events/s through the transform stage for a typical rule set (a column rename,
a removed column, a keyed mask, a row filter), both engines (the faust-streaming app, the
default, and the confluent-kafka loop, the fallback), against a plain transactional
consume-and-produce loop copying the same records with no rules, on the local stack; then
where the time goes, from timing the stage's steps on the same records without Kafka.
Prints numbers; asserts nothing.

    .venv/bin/python bench/bench_transforms.py --events 50000
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, Producer

from headwater.config import TaskConfig
from producers.event_writer import EventWriter
from schemas.envelope import ChangeEvent, SourceInfo, event_from_record
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.tables import Column, TableId, TableSchema
from schemas.topics import table_topic
from transforms.faust_app import FaustTransform
from transforms.processor import TransformLoop, producer_config
from transforms.records import RecordTransformer, raw_topic_pattern

SCHEMA = TableSchema(
    TableId("public", "accounts"),
    (
        Column("id", "int8", "bigint", nullable=False),
        Column("owner", "text", "text"),
        Column("email", "varchar", "character varying(120)"),
        Column("balance", "numeric", "numeric(12,2)", precision=12, scale=2),
        Column("status", "text", "text"),
        Column("notes", "text", "text"),
        Column("updated", "timestamptz", "timestamp with time zone"),
    ),
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
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "accounts",
                "column-name": "notes",
            },
            "rule-action": "remove-column",
        },
        {
            "rule-type": "transformation",
            "rule-id": "4",
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "accounts",
                "column-name": "owner",
            },
            "rule-action": "mask-hash",
        },
        {
            "rule-type": "transformation",
            "rule-id": "5",
            "rule-target": "table",
            "object-locator": {"schema-name": "public", "table-name": "accounts"},
            "rule-action": "filter-row",
            "expression": "$status <> 'closed'",
        },
    ]
}


def write_raw(task: TaskConfig, events: int) -> None:
    registry = SchemaRegistry(task.registry.url)
    writer = EventWriter(task, registry)
    writer.register_table(SCHEMA)
    now = datetime.now(UTC)
    for i in range(events):
        row = {
            "id": i,
            "owner": f"owner {i}",
            "email": f"user{i}@example.com",
            "balance": Decimal(i % 10000).scaleb(-2).quantize(Decimal("0.01")),
            "status": "closed" if i % 10 == 0 else "open",
            "notes": "some notes about this account" if i % 3 else None,
            "updated": now,
        }
        source = SourceInfo("postgresql", task.name, "bench", SCHEMA.table, 1, lsn=i)
        writer.write(ChangeEvent("c", source, None, row, 1))
    writer.flush()
    writer.close()
    registry.close()


def run_transform(task: TaskConfig, events: int) -> float:
    stop = threading.Event()
    loop = TransformLoop(task, stop, worker_id=uuid.uuid4().hex[:6])
    thread = threading.Thread(target=loop.run)
    started = time.perf_counter()
    thread.start()
    while loop.consumed < events:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    loop.close()
    return elapsed


def run_faust(task: TaskConfig, events: int) -> tuple[float, float]:
    """Seconds from start to the last event, and from the first event to the last (faust
    waits for the raw topics to settle, then joins the group, before its first event)."""
    stop = threading.Event()
    transform = FaustTransform(task)

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(transform.serve(stop))
        loop.close()

    thread = threading.Thread(target=serve)
    started = time.perf_counter()
    thread.start()
    while transform.consumed == 0:
        time.sleep(0.01)
    first = time.perf_counter()
    while transform.consumed < events:
        if not thread.is_alive():
            raise RuntimeError("the faust transform stopped early; see its log")
        time.sleep(0.05)
    done = time.perf_counter()
    stop.set()
    thread.join()
    transform.close()
    return done - started, done - first


def run_plain_copy(task: TaskConfig, events: int) -> float:
    """Consume the raw topic and produce each record unchanged, in transactions of the same
    size, with the same settings: the floor any transform stage stands on."""
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.name}-plain",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(producer_config(task, f"plain-{uuid.uuid4().hex[:6]}"))
    producer.init_transactions(30)
    consumer.subscribe([raw_topic_pattern(task.topic_prefix)])
    out = f"{task.topic_prefix}.copy"
    done = 0
    started = time.perf_counter()
    while done < events:
        messages = [m for m in consumer.consume(2000, 0.5) if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        for m in messages:
            producer.produce(out, value=m.value(), key=m.key())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(60)
        done += len(messages)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def profile_steps(task: TaskConfig, events: int) -> dict[str, float]:
    """Seconds per step over the raw records, without Kafka."""
    from transforms.load import task_engine

    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.name}-profile",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([table_topic(task.topic_prefix, SCHEMA.table)])
    values: list[bytes] = []
    while len(values) < events:
        values += [v for m in consumer.consume(5000, 1.0) if m.error() is None and (v := m.value())]
    consumer.close()
    registry = SchemaRegistry(task.registry.url)
    serde = AvroSerde(registry)
    engine = task_engine(task)
    assert engine is not None
    transformer = RecordTransformer(engine, serde, task.topic_prefix, task.sink_topic_prefix)
    topic = table_topic(task.topic_prefix, SCHEMA.table)
    t0 = time.perf_counter()
    decoded = [serde.decode(v) for v in values]
    t1 = time.perf_counter()
    source = transformer.source_schema(topic, decoded[0][0])
    events_in = [event_from_record(r, source) for _, r in decoded]
    t2 = time.perf_counter()
    plan = engine.plan(source)
    assert plan is not None
    out = [plan.apply(e) for e in events_in]
    t3 = time.perf_counter()
    transformer.transform(topic, 0, values[0])  # registers the output schemas
    codec = transformer._codecs[source]
    assert codec is not None
    for e in out:
        if e is not None:
            transformer._encode(e, codec, 0)
    t4 = time.perf_counter()
    registry.close()
    return {
        "Avro decode": t1 - t0,
        "envelope -> ChangeEvent": t2 - t1,
        "rules (engine)": t3 - t2,
        "Avro encode key + value": t4 - t3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    name = f"bench{uuid.uuid4().hex[:8]}"
    task = TaskConfig.model_validate(
        {"name": name, "table_mappings": RULES, "kafka": {"topic_prefix": name}}
    )
    # The faust run reads the same raw topic in a consumer group of its own.
    faust_task = task.model_copy(update={"name": f"{name}f"})
    print(f"writing {args.events} raw events to {task.topic_prefix}.public.accounts ...")
    write_raw(task, args.events)
    n = args.events
    plain = run_plain_copy(task, n)
    transformed = run_transform(task, n)
    faust_total, faust_steady = run_faust(faust_task, n)
    print(f"plain transactional copy    : {n / plain:10.0f} events/s ({plain:.2f} s)")
    print(f"confluent loop (rules)      : {n / transformed:10.0f} events/s ({transformed:.2f} s)")
    print(
        f"faust app (rules), steady   : {n / faust_steady:10.0f} events/s "
        f"({faust_steady:.2f} s; {faust_total:.2f} s with its start)"
    )
    print(f"ratio confluent / plain     : {plain / transformed:10.2f}")
    print(f"ratio faust steady / plain  : {plain / faust_steady:10.2f}")
    steps = profile_steps(task, args.events)
    total = sum(steps.values())
    print("where the time goes (same records, no Kafka, one core):")
    for step, seconds in steps.items():
        print(
            f"  {step:26s} {seconds:6.2f} s  {100 * seconds / total:5.1f} %  "
            f"{args.events / seconds:10.0f} /s"
        )
    print(f"  {'Kafka + the rest':26s} {max(0.0, transformed - total):6.2f} s")
    drop_topics(task)


def drop_topics(task: TaskConfig) -> None:
    """Delete the benchmark's topics (they only hold generated records)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": task.kafka.bootstrap_servers})
    mine = [
        t for t in admin.list_topics(timeout=10).topics if t.startswith(task.topic_prefix + ".")
    ]
    for future in admin.delete_topics(mine, operation_timeout=30).values():
        future.result()


if __name__ == "__main__":
    main()
