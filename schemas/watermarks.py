"""A partition's low and high watermarks, read by the producers (the tail of what they
wrote before) and by the sink's lag (`headwater status`)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


def watermarks(consumer: Consumer, where: TopicPartition, deadline: float) -> tuple[int, int]:
    """A partition's low and high watermarks. A topic the producer has just created may
    have no leader for a moment (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE): asked
    again until `deadline`, so `headwater status` during a task's start does not fail."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                where, timeout=max(0.1, deadline - time.monotonic()), cached=False
            )
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() in _NO_LEADER_YET):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


_NO_LEADER_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
