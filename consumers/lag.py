"""How far a task's sink is behind, per partition: the Kafka log-end offset against the
next offset stored in the target, and the latency of the last applied change (applied time
minus source commit time). Read without consuming or joining the sink's group, so
`headwater status` works whether or not the sink runs."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from consumers.decode import is_change_topic
from consumers.offsets import StoredOffset, load_offsets
from headwater.config import TaskConfig


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """The sink's position in one partition of one change topic."""

    topic: str
    partition: int
    end_offset: int  # Kafka's high watermark: the offset the next event will get
    applied_offset: int  # the next offset the target will apply (0 before the first batch)
    lag: int  # events in Kafka not yet applied
    last_source_ts_ms: int | None
    latency_ms: int | None  # applied_at minus the source commit time of the last event


def partition_lag(
    topic: str, partition: int, low: int, high: int, stored: StoredOffset | None
) -> PartitionLag:
    applied = stored.next_offset if stored is not None else 0
    # Offsets below the log start were deleted by retention: nothing left to apply there.
    lag = max(0, high - max(applied, low))
    latency = None
    source_ts = stored.source_ts_ms if stored is not None else None
    if stored is not None and source_ts is not None:
        latency = max(0, int(stored.applied_at.timestamp() * 1000) - source_ts)
    return PartitionLag(topic, partition, high, applied, lag, source_ts, latency)


def sink_lag(task: TaskConfig, timeout: float = 10.0) -> list[PartitionLag]:
    """The lag of every partition of the task's change topics, sorted by topic/partition.
    The stored offsets are read before the watermarks, so a zero lag is never too early."""
    stored = load_offsets(task)
    consumer = Consumer(
        {
            **task.kafka.consumer,
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.sink_group}-lag",  # required by the client; never joined
            "enable.auto.commit": False,
        }
    )
    try:
        topics = consumer.list_topics(timeout=timeout).topics
        lags = []
        for topic in sorted(t for t in topics if is_change_topic(task.topic_prefix, t)):
            for partition in sorted(topics[topic].partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout, cached=False
                )
                lags.append(
                    partition_lag(topic, partition, low, high, stored.get((topic, partition)))
                )
        return lags
    finally:
        consumer.close()
