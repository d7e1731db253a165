"""Exact truncates on topics with several partitions (consumers/truncates.py), against real
PostgreSQL, MariaDB and SQLite targets: the truncate runs once, when every partition reached
its copy, whichever sink and whichever restart brought them there; rows written before it
on any partition are gone, rows written after it on any partition are kept. Then live, with
Kafka: two sinks in one group over three partitions, inserts, updates and deletes mixed with
truncates, the target compared with the expected rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from consumers.batch import SinkRecord, collapse
from consumers.offsets import Partition, forget_offsets
from consumers.sink import target_sink
from consumers.sql_offsets import sql_dialect
from consumers.truncate_hold import add_held, hold_truncates
from headwater.config import TaskConfig
from schemas.envelope import ChangeEvent, Op, SourceInfo
from schemas.tables import TableSchema
from tests.sink_support import (
    ChangeFeed,
    mariadb_database,
    row,
    start_sink,
    table_schema,
    wait_caught_up,
    wait_for,
)

pytestmark = pytest.mark.integration

TOPIC = "x.public.wiped"


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def task(
    request: pytest.FixtureRequest, make_task: Callable[..., TaskConfig], tmp_path: Path
) -> Iterator[TaskConfig]:
    settings: dict[str, Any] = {"batch_size": 300, "batch_wait_s": 0.1}
    if request.param == "postgres":
        yield make_task(target=settings, kafka={"partitions": 3})
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'target.db'}"
        yield make_task(
            target={"engine": "sqlite", "url": url, **settings}, kafka={"partitions": 3}
        )
    else:
        for url in mariadb_database(request.getfixturevalue("mariadb_root")):
            yield make_task(
                target={"engine": "mysql", "url": url, **settings}, kafka={"partitions": 3}
            )


def target_ids(task: TaskConfig, name: str) -> list[int]:
    if task.target.engine == "postgres":
        engine = sa.create_engine(task.target.url)
    else:
        engine = sql_dialect(task).engine(task)
    try:
        with engine.connect() as conn:
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            return [r[0] for r in conn.execute(sa.select(table.c.id).order_by(table.c.id))]
    finally:
        engine.dispose()


def event(schema: TableSchema, op: Op, key: int | None = None, lsn: int = 1) -> ChangeEvent:
    source = SourceInfo("postgresql", "test", "db", schema.table, 1000 + lsn, lsn=lsn)
    after = row(key) if key is not None else None
    return ChangeEvent(op, source, None, after, 1000 + lsn)


class Partitions:
    """Feeds hand-made batches to a target sink as three partitions, tracking offsets."""

    def __init__(self, task: TaskConfig, schema: TableSchema) -> None:
        self.task, self.schema = task, schema
        self.next: dict[Partition, int] = {}
        self.expected: dict[Partition, int | None] = {}

    def records(self, partition: int, *events: ChangeEvent) -> list[SinkRecord]:
        start = self.next.get((TOPIC, partition), 0)
        self.next[(TOPIC, partition)] = start + len(events)
        return [
            SinkRecord(TOPIC, partition, start + i, self.schema, e) for i, e in enumerate(events)
        ]

    def apply(self, *records: SinkRecord) -> dict[Partition, int]:
        """Apply as a sink does (cut at the copies), on a new sink: as after a restart."""
        kept, held = hold_truncates(records, lambda _topic: 3)
        batch = collapse(kept)
        add_held(batch, held)
        sink = target_sink(self.task)
        try:
            outcome = sink.apply(batch, self.expected)
        finally:
            sink.close()
        stored = {p: pos.next_offset for p, pos in outcome.stored.items()}
        self.expected.update(stored)
        return stored

    def rewind(self, partition: int, offset: int) -> None:
        """Read `partition` again from `offset` (what a sink does after a restart)."""
        self.next[(TOPIC, partition)] = offset


def test_truncate_runs_once_when_every_partition_reached_it(task: TaskConfig) -> None:
    schema = table_schema("wiped")
    feed = Partitions(task, schema)
    t1 = event(schema, "t", lsn=100)
    # Partition 0 applies two rows, reaches the truncate and waits at its copy (offset 2).
    stored = feed.apply(
        *feed.records(0, event(schema, "c", 0), event(schema, "c", 3), t1, event(schema, "c", 6))
    )
    assert stored[(TOPIC, 0)] == 2
    assert target_ids(task, "wiped") == [0, 3]
    # A sink restarted mid-barrier reads the copy again: still waiting, nothing truncated.
    feed.rewind(0, 2)
    assert feed.apply(*feed.records(0, t1, event(schema, "c", 6)))[(TOPIC, 0)] == 2
    assert target_ids(task, "wiped") == [0, 3]
    # Partition 1 writes before the truncate, then reaches it; partition 2 reaches it last:
    # the truncate runs in that batch and every partition moves past its copy.
    assert feed.apply(*feed.records(1, event(schema, "c", 1), t1))[(TOPIC, 1)] == 1
    assert target_ids(task, "wiped") == [0, 1, 3]
    stored = feed.apply(*feed.records(2, t1))
    assert stored == {(TOPIC, 0): 3, (TOPIC, 1): 2, (TOPIC, 2): 1}
    assert target_ids(task, "wiped") == []
    # What came after the truncate is kept.
    feed.rewind(0, 3)
    feed.apply(*feed.records(0, event(schema, "c", 6)), *feed.records(2, event(schema, "c", 2)))
    assert target_ids(task, "wiped") == [2, 6]
    # A copy met again (a producer resend) is passed over: no second truncate.
    assert feed.apply(*feed.records(1, t1, event(schema, "c", 4)))[(TOPIC, 1)] == 3
    feed.rewind(1, 3)
    feed.apply(*feed.records(1, event(schema, "c", 4)))
    assert target_ids(task, "wiped") == [2, 4, 6]
    # Offsets forgotten (`headwater cleanup`): a sink starting over runs the truncate again.
    assert forget_offsets(task) == 3
    again = Partitions(task, schema)
    again.apply(*again.records(0, event(schema, "c", 0), t1))
    again.apply(*again.records(1, t1))
    assert target_ids(task, "wiped") == [0, 2, 4, 6]
    again.apply(*again.records(2, t1))
    assert target_ids(task, "wiped") == []


def test_two_sinks_apply_truncates_exactly(task: TaskConfig) -> None:
    """Rows inserted, updated and deleted across three partitions with truncates between
    them; two sinks in one group share the partitions from the start, one of them leaves
    mid-stream (its partitions move, possibly held at a truncate) and a third joins."""
    feed = ChangeFeed(task, partitions=3)
    table = table_schema("mixed")
    feed.register(table)
    expected: set[int] = set()
    sinks = [start_sink(task), start_sink(task)]
    # Both hold partitions before anything is sent (`expected` lists a sink's partitions).
    wait_for(lambda: all(s.loop.expected for s in sinks), timeout=60)
    try:
        key = 0
        for round_ in range(6):
            if round_:
                feed.send(table, "t", lsn=100 * round_)
                expected.clear()
            for _ in range(300):
                feed.send(table, "c", after=row(key))
                expected.add(key)
                key += 1
            for k in range(key - 300, key, 7):
                feed.send(table, "u", after=row(k, 1))
            for k in range(key - 300, key, 5):
                feed.send(table, "d", before={"id": k})
                expected.discard(k)
            feed.flush()
            if round_ == 2:
                sinks[1].halt()
            if round_ == 3:
                sinks.append(start_sink(task))
        lags = wait_caught_up(task, topics=1)
    finally:
        for sink in sinks:
            if sink.thread.is_alive():
                sink.halt()
        feed.serde.registry.close()
    assert len(lags) == 3
    assert target_ids(task, "mixed") == sorted(expected)
