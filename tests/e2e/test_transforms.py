"""End to end with table mappings: a task with a rename (of a plain and of a key column), a
removed column, a keyed mask and a row filter runs through producer, transform stage and
sink; the target holds exactly the transformed rows. Then the transform stage is killed
(SIGKILL) while changes flow and restarted: the transformed topics hold exactly what the
rules make of the raw topics, with no record doubled or missing."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from headwater.config import TaskConfig
from headwater.preflight import check_table_mappings
from headwater.runner import TaskRunner
from headwater.sample_db import Workload, create_sample
from producers.postgres.connection import connect
from schemas.avro_schemas import table_schema_from_value
from schemas.envelope import event_from_record
from schemas.registry import SchemaRegistry
from schemas.serde import AvroSerde
from schemas.topics import table_from_topic
from transforms.errors import TableMappingError
from transforms.load import masking_salt, task_engine
from transforms.records import is_raw_topic

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RULES: dict[str, Any] = {
    "rules": [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "object-locator": {"schema-name": "public", "table-name": "%"},
            "rule-action": "include",
        },
        {
            "rule-type": "selection",
            "rule-id": "2",
            "object-locator": {"schema-name": "public", "table-name": "orders"},
            "rule-action": "include",
            "filters": [
                {
                    "column-name": "status",
                    "filter-conditions": [{"filter-operator": "noteq", "value": "done"}],
                }
            ],
        },
        {
            "rule-type": "transformation",
            "rule-id": "3",
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "customers",
                "column-name": "email",
            },
            "rule-action": "rename",
            "value": "contact_email",
        },
        {
            "rule-type": "transformation",
            "rule-id": "4",
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "order_lines",
                "column-name": "line_no",
            },
            "rule-action": "rename",
            "value": "line_number",
        },
        {
            "rule-type": "transformation",
            "rule-id": "5",
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "orders",
                "column-name": "notes",
            },
            "rule-action": "remove-column",
        },
        {
            "rule-type": "transformation",
            "rule-id": "6",
            "rule-target": "column",
            "object-locator": {
                "schema-name": "public",
                "table-name": "customers",
                "column-name": "name",
            },
            "rule-action": "mask-hash",
        },
    ]
}


@pytest.fixture
def task(make_task: Callable[..., TaskConfig]) -> Iterator[TaskConfig]:
    built = make_task(table_mappings=RULES, kafka={"partitions": 2})
    with connect(built.source.url) as conn:
        create_sample(conn, 120)
    check_table_mappings(built)
    yield built


def rows(url: str, query: str, role: str = "source") -> list[tuple[Any, ...]]:
    with connect(url, role=role) as conn:
        return conn.execute(query).fetchall()


def assert_target_is_transformed_source(task: TaskConfig) -> None:
    salt = masking_salt(task)
    src, dst = task.source.url, task.target.url
    customers = rows(src, "SELECT id, name, email, balance FROM customers ORDER BY id")
    expected = [
        (i, hmac.new(salt, n.encode(), hashlib.sha256).hexdigest(), e, b)
        for i, n, e, b in customers
    ]
    got = rows(dst, "SELECT id, name, contact_email, balance FROM customers ORDER BY id", "target")
    assert got == expected
    assert rows(src, "SELECT id, total FROM orders WHERE status <> 'done' ORDER BY id") == rows(
        dst, "SELECT id, total FROM orders ORDER BY id", "target"
    )
    columns = rows(
        dst,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'",
        "target",
    )
    assert ("notes",) not in columns
    lines = "SELECT order_id, {}, qty FROM order_lines ORDER BY 1, 2"
    assert rows(src, lines.format("line_no")) == rows(dst, lines.format("line_number"), "target")


def test_task_with_rules_moves_exactly_the_transformed_rows(
    task: TaskConfig, runner: TaskRunner
) -> None:
    runner.wait_caught_up(240)
    with connect(task.source.url) as conn:
        Workload(conn, seed=5).run(120)
    runner.wait_caught_up(240)
    assert_target_is_transformed_source(task)


def test_confluent_engine_with_two_workers_moves_exactly_the_transformed_rows(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(
        table_mappings=RULES,
        kafka={"partitions": 2},
        transform={"engine": "confluent", "workers": 2},
    )
    with connect(task.source.url) as conn:
        create_sample(conn, 120)
    runner = TaskRunner(task)
    assert runner.stage_names == ("producer", "transform", "transform-2", "sink")
    runner.start()
    try:
        runner.wait_caught_up(240)
        with connect(task.source.url) as conn:
            Workload(conn, seed=9).run(120)
        runner.wait_caught_up(240)
        assert_target_is_transformed_source(task)
    finally:
        runner.stop(timeout=20)


def _read_all(
    task: TaskConfig, topics: list[str]
) -> dict[str, list[tuple[int, bytes | None, bytes | None]]]:
    """(partition, key, value) of every committed record of `topics`, in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.name}-check",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(timeout=10).topics
    parts = [TopicPartition(t, p, 0) for t in topics for p in meta[t].partitions]
    consumer.assign(parts)
    out: dict[str, list[tuple[int, bytes | None, bytes | None]]] = {t: [] for t in topics}
    pending = {(tp.topic, tp.partition) for tp in parts}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error() is not None:
            pending.discard((str(msg.topic()), msg.partition() or 0))
            continue
        out[str(msg.topic())].append((msg.partition() or 0, msg.key(), msg.value()))
    consumer.close()
    assert not pending
    return out


def test_transform_killed_mid_stream_leaves_no_duplicate_or_gap(
    task: TaskConfig, runner: TaskRunner
) -> None:
    runner.wait_caught_up(240)
    stop = threading.Event()

    def write() -> None:
        with connect(task.source.url) as conn:
            w = Workload(conn, seed=31)
            while not stop.is_set() and w.counts.total < 600:
                w.step()
                time.sleep(0.004)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(1.5)
    proc = runner.procs["transform"]
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    time.sleep(1.0)  # changes keep arriving in the raw topics meanwhile
    runner.start_stage("transform")
    writer.join(120)
    runner.wait_caught_up(240)
    assert_target_is_transformed_source(task)

    # The output topics against the rules applied to the raw topics, record by record.
    serde = AvroSerde(SchemaRegistry(task.registry.url))
    engine = task_engine(task)
    assert engine is not None
    admin = Consumer({"bootstrap.servers": task.kafka.bootstrap_servers, "group.id": "x"})
    names = list(admin.list_topics(timeout=10).topics)
    admin.close()
    raw = sorted(t for t in names if is_raw_topic(task.topic_prefix, t))
    out = sorted(t for t in names if t.startswith(task.sink_topic_prefix + "."))
    assert len(raw) == len(out) == 3
    records = _read_all(task, raw + out)
    expected: dict[str, list[tuple[Any, ...]]] = {}
    for topic in raw:
        for _partition, _key, value in records[topic]:
            if value is None:
                continue
            schema_id, record = serde.decode(value)
            source = table_schema_from_value(
                serde.registry.schema(schema_id), table_from_topic(task.topic_prefix, topic)
            )
            plan = engine.plan(source)
            assert plan is not None
            event = plan.apply(event_from_record(record, source))
            if event is None or event.op == "t":
                continue
            target_topic = (
                f"{task.sink_topic_prefix}.{plan.schema.table.schema}.{plan.schema.table.name}"
            )
            row_key = str(event.key(plan.schema))
            expected.setdefault(target_topic, []).append((row_key, event.op, event.source.lsn))
            if event.op == "d":
                expected[target_topic].append((row_key, None, None))
    for topic in out:
        actual: list[tuple[Any, ...]] = []
        last_key: dict[bytes | None, str] = {}
        for _partition, key, value in records[topic]:
            assert key is not None
            if value is None:
                actual.append((last_key[key], None, None))
                continue
            schema_id, record = serde.decode(value)
            schema = table_schema_from_value(
                serde.registry.schema(schema_id), table_from_topic(task.sink_topic_prefix, topic)
            )
            event = event_from_record(record, schema)
            last_key[key] = str(event.key(schema))
            actual.append((last_key[key], event.op, event.source.lsn))
        want = expected.get(topic, [])
        assert want, topic
        # One row's events (keys renamed or not) stay in one partition.
        partitions: dict[bytes | None, set[int]] = {}
        for partition, key, _value in records[topic]:
            partitions.setdefault(key, set()).add(partition)
        assert all(len(p) == 1 for p in partitions.values())
        # Per key the order is the log's order; across keys, partitions interleave.
        assert sorted(actual, key=lambda r: r[0]) == sorted(want, key=lambda r: r[0]), topic
        assert len(actual) == len(want)


def test_bad_rule_fails_before_anything_starts(make_task: Callable[..., TaskConfig]) -> None:
    bad = {
        "rules": [
            RULES["rules"][0],
            {
                **RULES["rules"][2],
                "object-locator": {
                    "schema-name": "public",
                    "table-name": "customers",
                    "column-name": "emial",
                },
            },
        ]
    }
    task = make_task(table_mappings=bad)
    with connect(task.source.url) as conn:
        create_sample(conn, 5)
    with pytest.raises(TableMappingError, match=r"rule 2 \(rule-id 3\): rename names column"):
        check_table_mappings(task)
