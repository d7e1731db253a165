"""How far the transform stage is behind, per raw partition: the log-end offset against the
offset its consumer group committed (in the same transactions as its output). Read without
joining the group, so it works whether or not the stage runs."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from headwater.config import TaskConfig
from transforms.outputs import transform_group
from transforms.records import is_raw_topic


@dataclass(frozen=True, slots=True)
class TransformLag:
    topic: str
    partition: int
    end_offset: int
    committed_offset: int
    lag: int


def transform_lag(task: TaskConfig, timeout: float = 10.0) -> list[TransformLag]:
    """The lag of every raw partition of the task; empty when it has no table mappings.
    Committed offsets are read before the watermarks, so a zero lag is never too early."""
    if not task.has_table_mappings:
        return []
    consumer = Consumer(
        {
            **task.kafka.consumer,
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": transform_group(task),  # only read, never joined
            "enable.auto.commit": False,
        }
    )
    try:
        topics = consumer.list_topics(timeout=timeout).topics
        wanted = [
            TopicPartition(t, p)
            for t in sorted(topics)
            if is_raw_topic(task.topic_prefix, t)
            for p in sorted(topics[t].partitions)
        ]
        if not wanted:
            return []
        committed = consumer.committed(wanted, timeout=timeout)
        lags = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout, cached=False
            )
            done = tp.offset if tp.offset >= 0 else 0
            lags.append(
                TransformLag(tp.topic, tp.partition, high, done, max(0, high - max(done, low)))
            )
        return lags
    finally:
        consumer.close()
