"""After a producer restart, which streamed changes Kafka already holds: the source resends
everything after its acknowledged position, and a change whose position is at or below the
last one in the partition it goes to was written before the crash. Pure logic; reading the
partitions' tails is `producers/kafka_tail.py`.

Per partition, because an idempotent producer keeps each partition's records a prefix of
what it sent, but not the partitions in step: a crash can leave partition A with a later
change while partition B lost an earlier one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from schemas.envelope import SourceInfo

Position = tuple[int, ...]
"""A streamed change's place in the source's commit order; tuples compare in that order."""

PositionOf = Callable[[SourceInfo], Position | None]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def postgres_position(source: SourceInfo) -> Position | None:
    """(commit LSN, LSN, seq) of a streamed PostgreSQL change, as Debezium's `sequence`; None
    for snapshot rows and for records written before positions were recorded."""
    if source.commit_lsn is None or source.lsn is None:
        return None
    return (source.commit_lsn, source.lsn, source.seq or 0)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (Java's `Utils.murmur2`, librdkafka's `murmur2` partitioners)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length - tail
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the murmur2 partitioners choose for a non-empty key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class HighWater:
    """The last streamed change in one partition; `tombstone_missing` when it is a delete
    whose tombstone never reached Kafka (the crash fell between the two)."""

    position: Position
    tombstone_missing: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """Where one keyed event goes while resuming, and which of its records to write."""

    partition: int
    write_event: bool
    write_tombstone: bool


class ResumeFilter:
    """High-waters per (topic, partition) and partition counts per topic, read at start.
    Once a change is past every high-water (`ceiling`) nothing later can be in Kafka, and
    the writer drops the filter."""

    def __init__(
        self,
        high_waters: Mapping[tuple[str, int], HighWater],
        partitions: Mapping[str, int],
        position_of: PositionOf,
    ) -> None:
        self.high_waters = dict(high_waters)
        self.partitions = dict(partitions)
        self.position_of = position_of
        self.topics = {topic for topic, _ in self.high_waters}
        self.ceiling = max((hw.position for hw in self.high_waters.values()), default=None)
        self.skipped = 0

    def forget_beyond(self, limit: int) -> list[tuple[str, int]]:
        """Drop high-waters whose first element (a commit LSN) is beyond `limit`, the
        source's current end: written from another server's log (a task reused without
        deleting its topics), they cannot be compared. The partitions dropped."""
        dropped = [tp for tp, hw in self.high_waters.items() if hw.position[0] > limit]
        for tp in dropped:
            del self.high_waters[tp]
        self.topics = {topic for topic, _ in self.high_waters}
        self.ceiling = max((hw.position for hw in self.high_waters.values()), default=None)
        return dropped

    def __repr__(self) -> str:
        return f"ResumeFilter({len(self.high_waters)} partitions, ceiling {self.ceiling})"

    def passed(self, position: Position) -> bool:
        """True when `position` is beyond every high-water: no later change needs a look."""
        return self.ceiling is None or position > self.ceiling

    def written(self, topic: str, partition: int, position: Position) -> bool:
        """Whether the change at `position` is already in `partition` of `topic`."""
        hw = self.high_waters.get((topic, partition))
        return hw is not None and position <= hw.position

    def route(self, topic: str, key: bytes, op: str, position: Position) -> Route:
        """Where a keyed event goes (the partition librdkafka's murmur2 would choose) and
        whether it, and a delete's tombstone, still need writing."""
        partition = key_partition(key, self.partitions[topic])
        hw = self.high_waters.get((topic, partition))
        if hw is None or position > hw.position:
            return Route(partition, True, op == "d")
        self.skipped += 1
        owed = op == "d" and hw.tombstone_missing and position == hw.position
        return Route(partition, False, owed)

    def truncate_partitions(self, topic: str, position: Position, count: int) -> list[int]:
        """The partitions still missing a truncate (it goes to every partition)."""
        todo = [p for p in range(count) if not self.written(topic, p, position)]
        if len(todo) < count:
            self.skipped += 1
        return todo


@dataclass(frozen=True, slots=True)
class TailRecord:
    """One record of a partition's tail as the search sees it: `op` None for a tombstone,
    `source` None for a value that is not a change event of ours, `old_format` when its
    writer's schema predates positions."""

    op: str | None
    source: SourceInfo | None = None
    old_format: bool = False


@dataclass(frozen=True, slots=True)
class TailVerdict:
    """What a window of a partition's tail says: `decided` (stop searching) with the
    high-water (None: nothing to skip), `unpositioned` when a change without a position
    decided it, and `later_is_tombstone` to carry into the window before this one."""

    decided: bool
    high_water: HighWater | None = None
    unpositioned: bool = False
    later_is_tombstone: bool = False


def tail_verdict(
    newest_first: Iterable[TailRecord], position_of: PositionOf, later_is_tombstone: bool = False
) -> TailVerdict:
    """Search a window of a partition back from its newest record: the first streamed
    change decides. Tombstones and incremental snapshot rows carry no position and are
    passed over; full-load rows end the search with nothing (they precede every streamed
    change of their partition); so does a change without a position in an old-format record
    or a value that is not ours (comparing nothing may repeat a change, never lose one)."""
    for record in newest_first:
        if record.op is None:
            later_is_tombstone = True
            continue
        source = record.source
        if source is None:
            return TailVerdict(True, unpositioned=True)
        position = position_of(source)
        if position is not None:
            missing = record.op == "d" and not later_is_tombstone
            return TailVerdict(True, HighWater(position, missing))
        if source.snapshot in ("true", "last"):
            return TailVerdict(True)
        if record.old_format and source.snapshot != "incremental":
            return TailVerdict(True, unpositioned=True)
        later_is_tombstone = False
    return TailVerdict(False, later_is_tombstone=later_is_tombstone)


def unsafe_for_resume(config: Mapping[str, object]) -> str | None:
    """Why a Kafka producer configuration (after the task's overrides) breaks what skipping
    relies on: murmur2 partitions and gap-free partitions; None when it is safe."""
    if config.get("partitioner") not in ("murmur2_random", "murmur2"):
        return f"partitioner {config.get('partitioner')} is not murmur2"
    if str(config.get("enable.idempotence")).lower() != "true":
        return "enable.idempotence is off"
    if str(config.get("enable.gapless.guarantee")).lower() != "true":
        return "enable.gapless.guarantee is off"
    if str(config.get("message.timeout.ms")) != "0":
        return "message.timeout.ms is not 0 (a timed-out batch can leave a gap)"
    return None
