"""The EventWriter asks librdkafka for delivery reports of failures only
(`delivery.report.only.error`): a record the broker refuses must still fail the next
flush, and records the broker takes must not."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from headwater.config import TaskConfig
from producers.errors import DeliveryError
from producers.event_writer import EventWriter, producer_config
from schemas.registry import SchemaRegistry

pytestmark = pytest.mark.integration


def _end_offset(task: TaskConfig, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": task.kafka.bootstrap_servers, "group.id": "probe"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def test_a_record_the_broker_refuses_fails_the_flush_without_a_report_per_record(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(kafka={"partitions": 1})
    assert producer_config(task)["delivery.report.only.error"] is True
    registry = SchemaRegistry(task.registry.url)
    writer = EventWriter(task, registry)
    ok_topic, small_topic = f"{task.topic_prefix}.ok", f"{task.topic_prefix}.small"
    try:
        writer.ensure_topics([ok_topic])
        writer.ensure_topics([small_topic], config={"max.message.bytes": "1024"})
        for n in range(500):
            writer.produce_raw(ok_topic, b"k%d" % n, b"v" * 100)
        writer.flush(30)
        assert _end_offset(task, ok_topic) == 500

        # Under the client's limit (1 MB), over the topic's even compressed: only the
        # broker says no.
        writer.produce_raw(small_topic, b"k", os.urandom(4096))
        with pytest.raises(DeliveryError, match="did not acknowledge"):
            writer.flush(30)
        assert _end_offset(task, small_topic) == 0
    finally:
        writer.close()
        registry.close()
