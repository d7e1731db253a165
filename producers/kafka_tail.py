"""Reads the tail of a producer's raw topics before it streams: per partition, the last
streamed change already in Kafka (its position), so a restarted producer can skip what the
source sends again (`producers/resume_dedupe.py`).

Each partition is read backwards in growing windows (256 records, then four times more
each round) until a record decides it; what decides, and what is passed over (tombstones,
incremental snapshot rows, changes without a position), is `tail_verdict`. Records are
decoded with their writer's schema, so one written before positions existed is told
apart from one deliberately without a position.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from headwater.config import TaskConfig
from producers.errors import DeliveryError
from producers.event_writer import producer_config
from producers.resume_dedupe import (
    HighWater,
    PositionOf,
    ResumeFilter,
    TailRecord,
    tail_verdict,
    unsafe_for_resume,
)
from schemas.envelope import SourceInfo
from schemas.serde import AvroSerde, SerdeError
from schemas.watermarks import watermarks

log = logging.getLogger(__name__)

_FIRST_WINDOW = 256
_MAX_WINDOW = 65_536
_TIMEOUT_S = 30.0

TP = tuple[str, int]


@dataclass
class _Tail:
    """The search in one partition: offsets [low, end) are still unread."""

    low: int
    end: int
    window: int = _FIRST_WINDOW
    later_is_tombstone: bool = False  # the record after the window's first one
    records: dict[int, Message] = field(default_factory=dict)


@dataclass
class TailScan:
    """What the scan read, for the log line."""

    partitions: int = 0
    records: int = 0
    unpositioned: list[TP] = field(default_factory=list)


def read_resume_filter(
    bootstrap: str,
    serde: AvroSerde,
    topics: Iterable[str],
    position_of: PositionOf,
    scan: TailScan | None = None,
) -> ResumeFilter:
    """The high-water of every partition of `topics` (missing topics have none)."""
    scan = scan if scan is not None else TailScan()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"headwater-tail-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,  # each window ends at a known offset: no waiting for more
        }
    )
    try:
        counts, tails = _partitions(consumer, topics)
        scan.partitions = len(tails)
        high_waters: dict[TP, HighWater] = {}
        while tails:
            _read_windows(consumer, tails, scan)
            for tp in list(tails):
                decided, hw = _decide(serde, tails[tp], position_of, scan, tp)
                if hw is not None:
                    high_waters[tp] = hw
                if decided or tails[tp].end <= tails[tp].low:
                    del tails[tp]
        return ResumeFilter(high_waters, counts, position_of)
    finally:
        consumer.close()


def _partitions(
    consumer: Consumer, topics: Iterable[str]
) -> tuple[dict[str, int], dict[TP, _Tail]]:
    counts: dict[str, int] = {}
    tails: dict[TP, _Tail] = {}
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            continue  # not created yet: nothing was written to it
        counts[topic] = len(meta.partitions)
        for p in meta.partitions:
            deadline = time.monotonic() + _TIMEOUT_S
            low, high = watermarks(consumer, TopicPartition(topic, p), deadline)
            if high > low:
                tails[(topic, p)] = _Tail(low, high)
    return counts, tails


def _read_windows(consumer: Consumer, tails: dict[TP, _Tail], scan: TailScan) -> None:
    """Read each partition's next window back: offsets [max(low, end - window), end)."""
    starts = {tp: max(t.low, t.end - t.window) for tp, t in tails.items()}
    for t in tails.values():
        t.records = {}
    consumer.assign([TopicPartition(topic, p, starts[(topic, p)]) for topic, p in tails])
    pending = set(tails)
    deadline = time.monotonic() + _TIMEOUT_S
    while pending:
        # A short wait per call: consume() returns early only when the batch is full.
        messages = consumer.consume(num_messages=10_000, timeout=0.2)
        if messages:
            deadline = time.monotonic() + _TIMEOUT_S
        elif time.monotonic() > deadline:
            raise DeliveryError(
                f"no records from Kafka within {_TIMEOUT_S:.0f}s while reading the end of "
                f"{sorted(pending)[0][0]}; is Kafka up?"
            )
        for msg in messages:
            tp = (str(msg.topic()), int(msg.partition() or 0))
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise DeliveryError(f"cannot read {tp[0]} [{tp[1]}]: {err}")
                pending.discard(tp)
                continue
            tail = tails.get(tp)
            offset = msg.offset()
            if tail is None or offset is None or offset >= tail.end:
                pending.discard(tp)
                continue
            tail.records[offset] = msg
            scan.records += 1
            if offset >= tail.end - 1:
                pending.discard(tp)
    for tp, t in tails.items():
        t.end, t.window = starts[tp], min(t.window * 4, _MAX_WINDOW)
    consumer.unassign()


def _decide(
    serde: AvroSerde, tail: _Tail, position_of: PositionOf, scan: TailScan, tp: TP
) -> tuple[bool, HighWater | None]:
    """Search the window just read from its newest record back: (decided, high-water)."""
    newest_first = (
        _tail_record(serde, tail.records[o].value()) for o in sorted(tail.records, reverse=True)
    )
    verdict = tail_verdict(newest_first, position_of, tail.later_is_tombstone)
    if verdict.unpositioned:
        scan.unpositioned.append(tp)
    tail.later_is_tombstone = verdict.later_is_tombstone
    tail.records = {}
    return verdict.decided, verdict.high_water


def _tail_record(serde: AvroSerde, value: bytes | None) -> TailRecord:
    if value is None:
        return TailRecord(None)
    try:
        _, record = serde.decode(value)
        source = record["source"]
        # Decoded with its writer's schema: a record from before positions lacks the field.
        return TailRecord(
            str(record["op"]), SourceInfo.from_avro(source), "commit_lsn" not in source
        )
    except (SerdeError, KeyError, TypeError, ValueError):
        return TailRecord("?")


def load_resume_filter(
    task: TaskConfig,
    serde: AvroSerde,
    topics: Iterable[str],
    position_of: PositionOf,
    source_end: int,
) -> ResumeFilter | None:
    """What a restarted producer skips: the tails of `topics` read, high-waters whose first
    element lies beyond `source_end` (where the source's log is now) dropped. None when
    nothing is to be skipped, or the task's Kafka settings make skipping unsafe."""
    unsafe = unsafe_for_resume(producer_config(task))
    if unsafe is not None:
        log.warning(
            "task %s: kafka.producer: %s, so changes the source sends again after a crash "
            "are not skipped and may repeat",
            task.name,
            unsafe,
        )
        return None
    started = time.monotonic()
    scan = TailScan()
    resume = read_resume_filter(task.kafka.bootstrap_servers, serde, topics, position_of, scan)
    foreign = resume.forget_beyond(source_end)
    if foreign:
        log.warning(
            "task %s: %d partitions end with changes from beyond the source's log (another "
            "source, its topics kept?); nothing is skipped in them: %s",
            task.name,
            len(foreign),
            foreign[:3],
        )
    log.info(
        "task %s: read the tails of %d partitions (%d records) in %.2fs: %d hold streamed "
        "changes (up to %s), %d end in changes without a position (nothing skipped there)",
        task.name,
        scan.partitions,
        scan.records,
        time.monotonic() - started,
        len(resume.high_waters),
        resume.ceiling,
        len(scan.unpositioned),
    )
    return resume if resume.ceiling is not None else None
