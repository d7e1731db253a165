"""A task's progress and lag, read from where each stage keeps it durably: the producer's
record in the state topic, the replication slot in the source, the Kafka log-end offsets and
the offsets the sink committed in the target. Nothing here asks a running process."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from consumers.lag import PartitionLag, dead_letter_count, sink_lag
from consumers.sink_group import SinkMember, sink_members
from consumers.stopped_tables import StoppedTable, load_stopped
from headwater.config import TaskConfig
from producers.mysql.position import BinlogPosition
from producers.postgres.connection import connect
from producers.postgres.pgoutput import parse_lsn
from producers.postgres.replication import slot_info
from producers.task_state import TaskState, TaskStateStore
from transforms.progress import transform_lag


@dataclass
class TaskStatus:
    """Everything `headwater status` shows for one task."""

    task: str
    mode: str
    state: TaskState | None
    slot: dict[str, Any] | None
    partitions: list[PartitionLag] = field(default_factory=list)
    collected_ms: int = 0
    engine: str = "postgres"
    dead_letters: int = 0  # records the sink sent to `<prefix>.dlq`
    sinks: list[SinkMember] = field(default_factory=list)  # the sink group's members
    stopped_tables: list[StoppedTable] = field(default_factory=list)  # not applied, and why

    @property
    def load_finished(self) -> bool:
        if self.state is None:
            return False
        if self.mode == "cdc":
            return self.state.snapshot_status in ("skipped", "done")
        return self.state.snapshot_status == "done"

    @property
    def total_lag(self) -> int:
        return sum(max(0, p.lag) for p in self.partitions)

    @property
    def max_latency_ms(self) -> int | None:
        values = [p.latency_ms for p in self.partitions if p.latency_ms is not None]
        return max(values) if values else None

    @property
    def confirmed_lsn(self) -> int | None:
        if self.engine == "mysql":
            # The saved binlog position, as a number that grows along the binlog.
            saved = BinlogPosition.from_dict(self.state.binlog) if self.state else None
            return saved.ordinal if saved else None
        if not self.slot or not self.slot.get("confirmed_flush_lsn"):
            return None
        return parse_lsn(self.slot["confirmed_flush_lsn"])

    def caught_up_to(self, source_lsn: int | None) -> bool:
        """True when the source's changes up to `source_lsn` are all in the target."""
        if source_lsn is not None:
            confirmed = self.confirmed_lsn
            if confirmed is None or confirmed < source_lsn:
                return False
        return bool(self.partitions) and self.total_lag == 0

    def summary(self) -> str:
        snap = self.state.snapshot_status if self.state else "not started"
        latency = self.max_latency_ms
        return (
            f"full load {snap}, lag {self.total_lag} events"
            + (f", latency {latency} ms" if latency is not None else "")
            + (f", {len(self.stopped_tables)} table(s) stopped" if self.stopped_tables else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "mode": self.mode,
            "collected_ms": self.collected_ms,
            "producer": asdict(self.state) if self.state else None,
            "slot": self.slot,
            # MySQL has no slot: the binlog position the producer saved stands in for it.
            "binlog": (self.state.binlog or None)
            if self.state and self.engine == "mysql"
            else None,
            "partitions": [asdict(p) for p in self.partitions],
            "total_lag": self.total_lag,
            "max_latency_ms": self.max_latency_ms,
            "dead_letters": self.dead_letters,
            "sinks": [asdict(m) for m in self.sinks],
            "stopped_tables": [
                {"table": t.table, "reason": t.reason, "stopped_at": t.stopped_at.isoformat()}
                for t in self.stopped_tables
            ],
        }


def _slot(task: TaskConfig) -> dict[str, Any] | None:
    if task.mode == "full-load" or task.source.engine == "mysql":
        return None  # MySQL has no slot; the saved binlog position is in the state
    with connect(task.source.url) as conn:
        return slot_info(conn, task.slot_name)


def source_wal_lsn(task: TaskConfig) -> int:
    """The source's current WAL position: what 'caught up' is measured against (for MySQL,
    the binlog end as `BinlogPosition.ordinal`)."""
    if task.source.engine == "mysql":
        from producers.mysql import connection, flavor

        with connection.connect(task.source.url) as my:
            return flavor.current_position(my, flavor.detect(my)).ordinal
    with connect(task.source.url) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def collect_status(task: TaskConfig) -> TaskStatus:
    """Read the task's status; the slot before the offsets, so a zero lag read after a
    slot position means everything up to that position is applied."""
    state = TaskStateStore(task.kafka.bootstrap_servers).load(task.name)
    slot = _slot(task)
    # The transform stage's raw partitions first (read before the sink's), so a zero lag on
    # both means every event up to the slot position went through both.
    partitions = [
        PartitionLag(t.topic, t.partition, t.end_offset, t.committed_offset, t.lag, None, None)
        for t in transform_lag(task)
    ]
    partitions += sink_lag(task)
    return TaskStatus(
        task.name,
        task.mode,
        state,
        slot,
        partitions,
        int(time.time() * 1000),
        task.source.engine,
        dead_letter_count(task),
        sink_members(task),
        load_stopped(task),
    )
