"""Exact truncates on topics with several partitions, the target side. The producer writes a
truncate to every partition of its table's topic; a sink applies a partition's changes up to
that copy, then records "partition p reached truncate T" in `headwater_truncates` in the same
transaction as its offsets, and holds the partition at its copy (the stored offset stays on
the copy). The transaction that records the last partition executes the truncate and moves
every partition's stored offset past its copy, all at once: rows written before the
truncate are gone, rows written after it are kept, whichever sink owns which partition.

A truncate is named by its source position (PostgreSQL lsn, MySQL binlog file:pos), which
each copy carries. A row per (task, topic, truncate) with partition -1 is the lock every sink
settling that truncate takes first, and says when it was executed, so a copy met again (a
sink restarted mid-way, a producer resend) neither truncates twice nor waits forever.
docs/sink-operations.md has the design and its limits."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable

from consumers.batch import CollapsedBatch, HeldTruncate, PartitionPosition, TableChanges
from schemas.envelope import ChangeEvent

log = logging.getLogger(__name__)

HEADER = -1
"""The `partition` of the row that locks one truncate and says whether it was executed."""

TruncateKey = tuple[str, str]
"""(topic, source position) of one truncate."""


def truncates_table(dialect: str) -> sa.Table:
    """The control table, in `public` on PostgreSQL (beside headwater_offsets)."""
    return sa.Table(
        "headwater_truncates",
        sa.MetaData(),
        sa.Column("task", sa.String(63), primary_key=True),
        sa.Column("topic", sa.String(249), primary_key=True),
        sa.Column("truncate_at", sa.String(120), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("copy_offset", sa.BigInteger, nullable=False),
        sa.Column("source_ts_ms", sa.BigInteger),
        sa.Column("partitions", sa.Integer, nullable=False),
        sa.Column("executed", sa.Boolean, nullable=False),
        schema="public" if dialect == "postgresql" else None,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def create_truncates_table(conn: Connection) -> None:
    """Create the table if missing; outside a batch (DDL commits on MySQL)."""
    conn.execute(CreateTable(truncates_table(conn.dialect.name), if_not_exists=True))


def attempt_of(batch: CollapsedBatch) -> CollapsedBatch:
    """The batch to hand to one apply attempt: settling a truncate replaces a table's
    changes, which must not outlive an attempt that rolled back."""
    return replace(batch, tables=dict(batch.tables)) if batch.truncates else batch


def truncate_position(event: ChangeEvent) -> str:
    """The source position naming a truncate: the same in each of its copies."""
    s = event.source
    if s.lsn is not None:
        return f"lsn {s.lsn}"
    if s.file is not None:
        return f"binlog {s.file}:{s.pos}"
    if s.gtid:
        return f"gtid {s.gtid}"[:120]
    return f"ts {s.ts_ms}"


def _key(held: HeldTruncate) -> TruncateKey:
    assert held.record.event is not None
    return held.record.topic, truncate_position(held.record.event)


def _insert_missing(conn: Connection, table: sa.Table, row: dict[str, object]) -> None:
    """Insert `row` unless its key exists (then leave the row as it is)."""
    name = conn.dialect.name
    statement: sa.Executable
    if name == "postgresql":
        statement = postgresql.insert(table).values(row).on_conflict_do_nothing()
    elif name == "sqlite":
        statement = sqlite.insert(table).values(row).on_conflict_do_nothing()
    else:
        insert = mysql.insert(table).values(row)
        statement = insert.on_duplicate_key_update({"partitions": table.c.partitions})
    conn.execute(statement)


def lock_truncates(conn: Connection, task: str, batch: CollapsedBatch) -> dict[TruncateKey, bool]:
    """Lock each truncate held in `batch` (first in the batch's transaction, so sinks settling
    one truncate take turns); whether each was executed already."""
    if not batch.truncates:
        return {}
    table = truncates_table(conn.dialect.name)
    partitions = {_key(h): h.partitions for h in batch.truncates}
    executed: dict[TruncateKey, bool] = {}
    for topic, position in sorted(partitions):
        where = (
            (table.c.task == task)
            & (table.c.topic == topic)
            & (table.c.truncate_at == position)
            & (table.c.partition == HEADER)
        )
        _insert_missing(
            conn,
            table,
            {
                "task": task,
                "topic": topic,
                "truncate_at": position,
                "partition": HEADER,
                "copy_offset": -1,
                "partitions": partitions[(topic, position)],
                "executed": False,
            },
        )
        found = conn.execute(sa.select(table.c.executed).where(where).with_for_update()).one()
        executed[(topic, position)] = bool(found.executed)
    return executed


def settle_truncates(
    conn: Connection,
    task: str,
    batch: CollapsedBatch,
    stored: dict[tuple[str, int], PartitionPosition],
    executed: Mapping[TruncateKey, bool],
) -> None:
    """Record each held copy as reached; execute each truncate every partition has reached
    (its table's changes in this batch, all from before it, become the truncate; `batch`
    must be an `attempt_of` the consumed batch) and move the partitions past their copies
    in `stored`. Copies of stopped tables (not in `stored`)
    are left for later; a copy of an executed truncate is passed over."""
    if not batch.truncates:
        return
    table = truncates_table(conn.dialect.name)
    reached: dict[TruncateKey, HeldTruncate] = {}
    for held in batch.truncates:
        record, key = held.record, _key(held)
        where = (record.topic, record.partition)
        if where not in stored:
            continue
        ts = record.event.source.ts_ms if record.event is not None else None
        if executed.get(key):
            stored[where] = PartitionPosition(record.offset + 1, ts)
            continue
        _insert_missing(
            conn,
            table,
            {
                "task": task,
                "topic": key[0],
                "truncate_at": key[1],
                "partition": record.partition,
                "copy_offset": record.offset,
                "source_ts_ms": ts,
                "partitions": held.partitions,
                "executed": False,
            },
        )
        reached[key] = held
    for key, held in sorted(reached.items()):
        _execute_if_complete(conn, table, task, key, held, batch, stored)


def _execute_if_complete(
    conn: Connection,
    table: sa.Table,
    task: str,
    key: TruncateKey,
    held: HeldTruncate,
    batch: CollapsedBatch,
    stored: dict[tuple[str, int], PartitionPosition],
) -> None:
    topic, position = key
    of_truncate = (
        (table.c.task == task) & (table.c.topic == topic) & (table.c.truncate_at == position)
    )
    rows = conn.execute(
        sa.select(table.c.partition, table.c.copy_offset, table.c.source_ts_ms)
        .where(of_truncate & (table.c.partition != HEADER))
        .with_for_update()
    ).all()
    if not set(range(held.partitions)) <= {r.partition for r in rows}:
        log.info(
            "truncate of %s at %s: %d of %d partitions reached it; waiting for the others",
            topic,
            position,
            len(rows),
            held.partitions,
        )
        return
    assert held.record.schema is not None
    name = held.record.schema.table
    before = batch.tables[name]
    # Every change of this table in the batch comes from before the truncate (the partitions
    # are cut at their copies, and those that reached it earlier are held): the truncate
    # replaces them. A new object, so a retried batch starts from its own changes again.
    batch.tables[name] = TableChanges(before.schema, truncated=True, topics=set(before.topics))
    for r in rows:
        stored[(topic, r.partition)] = PartitionPosition(r.copy_offset + 1, r.source_ts_ms)
    conn.execute(
        sa.update(table).where(of_truncate & (table.c.partition == HEADER)).values(executed=True)
    )
    conn.execute(sa.delete(table).where(of_truncate & (table.c.partition != HEADER)))
    log.info("truncate of %s at %s: every partition reached it; executed", topic, position)


def forget_truncates(conn: Connection, task: str) -> None:
    """Forget `task`'s truncates, with its offsets: a sink starting over from the topics'
    start must execute them again, not pass their copies over."""
    table = truncates_table(conn.dialect.name)
    if sa.inspect(conn).has_table(table.name, schema=table.schema):
        conn.execute(sa.delete(table).where(table.c.task == task))
