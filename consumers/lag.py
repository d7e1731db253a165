"""How far a task's sink is behind, per partition: the Kafka log-end offset against the
next offset stored in the target, and the latency of the last applied change (applied time
minus source commit time). Read without consuming or joining the sink's group, so
`headwater status` works whether or not the sink runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumers.decode import is_change_topic
from consumers.offsets import StoredOffset, load_offsets
from headwater.config import TaskConfig
from schemas.topics import dead_letter_topic
from schemas.watermarks import watermarks


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
        deadline = time.monotonic() + timeout
        for topic in sorted(t for t in topics if is_change_topic(task.sink_topic_prefix, t)):
            for partition in sorted(topics[topic].partitions):
                low, high = watermarks(consumer, TopicPartition(topic, partition), deadline)
                lags.append(
                    partition_lag(topic, partition, low, high, stored.get((topic, partition)))
                )
        if task.has_table_mappings:
            return _without_markers(task, lags, timeout)
        return lags
    finally:
        consumer.close()


def _without_markers(
    task: TaskConfig, lags: list[PartitionLag], timeout: float
) -> list[PartitionLag]:
    """The transform stage writes in transactions, and each commit marker takes an offset
    the sink never applies: a partition whose unapplied offsets hold no committed record
    has no lag."""
    lagging = {(p.topic, p.partition): p for p in lags if p.lag > 0}
    if not lagging:
        return lags
    probe = Consumer(
        {
            **task.kafka.consumer,
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.sink_group}-lag",  # never joined: assign() only
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        probe.assign([TopicPartition(t, p, lag.applied_offset) for (t, p), lag in lagging.items()])
        pending, with_records = set(lagging), set()
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = probe.poll(0.2)
            if msg is None:
                continue
            where = (str(msg.topic()), msg.partition() or 0)
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                continue
            if err is None:
                with_records.add(where)
            pending.discard(where)
        only_markers = set(lagging) - pending - with_records
        return [replace(p, lag=0) if (p.topic, p.partition) in only_markers else p for p in lags]
    finally:
        probe.close()


def dead_letter_count(task: TaskConfig, timeout: float = 10.0) -> int:
    """How many records the task's sinks sent to its dead-letter topic (0 without one)."""
    topic = dead_letter_topic(task.topic_prefix)
    consumer = Consumer(
        {
            **task.kafka.consumer,
            "bootstrap.servers": task.kafka.bootstrap_servers,
            "group.id": f"{task.sink_group}-lag",  # required by the client; never joined
            "enable.auto.commit": False,
        }
    )
    try:
        found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if found is None or found.error is not None:
            return 0
        total = 0
        for partition in found.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout, cached=False
            )
            total += high - low
        return total
    finally:
        consumer.close()
