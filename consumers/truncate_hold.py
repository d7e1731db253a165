"""Exact truncates on topics with several partitions, the consume-loop side: a batch is cut at
the first truncate copy of each partition (what follows is read again later), the copies
are handed to the target with the batch (consumers/truncates.py decides there, in the
batch's transaction, whether the truncate runs now), and a partition whose copy is waiting
for the other partitions is paused at it until the target shows it moved past."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, TopicPartition

from consumers.batch import (
    CollapsedBatch,
    HeldTruncate,
    PartitionPosition,
    SinkRecord,
    TableChanges,
)
from consumers.offsets import Partition, StoredOffset

log = logging.getLogger(__name__)

POLL_EVERY_S = 0.2
"""How often a sink holding partitions at a truncate asks the target whether it ran."""


def hold_truncates(
    records: Iterable[SinkRecord], partitions_of: Callable[[str], int]
) -> tuple[list[SinkRecord], list[HeldTruncate]]:
    """The records before the first truncate copy of each partition of a topic with several
    partitions, and those copies; the records after a copy are left out."""
    kept: list[SinkRecord] = []
    held: list[HeldTruncate] = []
    cut: set[Partition] = set()
    for record in records:
        where = (record.topic, record.partition)
        if where in cut:
            continue
        if record.event is not None and record.event.op == "t":
            count = partitions_of(record.topic)
            if count > 1:
                held.append(HeldTruncate(record, count))
                cut.add(where)
                continue
        kept.append(record)
    return kept, held


def add_held(batch: CollapsedBatch, held: list[HeldTruncate]) -> None:
    """Put the copies in `batch`: each partition stands at its copy, and the copy's table is
    part of the batch (prepared, created if missing) even with no other change."""
    for h in held:
        record = h.record
        assert record.schema is not None
        batch.truncates.append(h)
        changes = batch.tables.get(record.schema.table)
        if changes is None:
            changes = batch.tables[record.schema.table] = TableChanges(record.schema)
        changes.topics.add(record.topic)
        where = (record.topic, record.partition)
        before = batch.positions.get(where)
        ts = before.source_ts_ms if before is not None else None
        batch.positions[where] = PartitionPosition(record.offset, ts)


class HeldPartitions:
    """The partitions this sink holds at a truncate copy, paused until it ran."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.waiting: dict[Partition, int] = {}  # partition -> offset of its copy
        self._polled_at = 0.0

    def __contains__(self, where: Partition) -> bool:
        return where in self.waiting

    def hold(self, where: Partition, copy_offset: int) -> None:
        """Pause `where` at its copy. No seek: `release` seeks past the copy, and a new
        owner starts at the stored offset (the copy); what was fetched meanwhile is
        dropped by the loop."""
        if where not in self.waiting:
            log.info("%s[%d]: at a truncate; held until every partition reaches it", *where)
        self.waiting[where] = copy_offset
        self.consumer.pause([TopicPartition(where[0], where[1])])

    def release(self, where: Partition, next_offset: int) -> None:
        """Go on from `next_offset` (past the copy)."""
        self.waiting.pop(where, None)
        tp = TopicPartition(where[0], where[1], next_offset)
        self.consumer.seek(tp)
        self.consumer.resume([tp])
        log.info("%s[%d]: truncate applied; going on at %d", where[0], where[1], next_offset)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked: their next owner starts again at the stored copy."""
        for where in partitions:
            self.waiting.pop(where, None)

    def due(self) -> bool:
        """Whether to ask the target now (there is something held, and not too often)."""
        now = time.monotonic()
        if not self.waiting or now - self._polled_at < POLL_EVERY_S:
            return False
        self._polled_at = now
        return True

    def moved(self, stored: dict[Partition, StoredOffset]) -> dict[Partition, int]:
        """The held partitions whose stored offset moved past their copy, and where to."""
        return {
            where: found.next_offset
            for where, offset in self.waiting.items()
            if (found := stored.get(where)) is not None and found.next_offset > offset
        }
