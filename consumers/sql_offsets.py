"""The offsets control table (`headwater_offsets`) of a MySQL/MariaDB or SQLite target,
through SQLAlchemy Core: created in the target's default schema, read with the rows locked
(FOR UPDATE where the dialect has it; SQLite holds its write lock for the whole batch) and
written in the batch's transaction."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection

from consumers.batch import PartitionPosition
from consumers.offsets import Partition, StoredOffset
from consumers.sql_dialect import SqlDialect
from consumers.stopped_tables import forget_stopped
from consumers.truncates import forget_truncates
from headwater.config import TaskConfig

_APPLIED_AT = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def offsets_table() -> sa.Table:
    return sa.Table(
        "headwater_offsets",
        sa.MetaData(),
        sa.Column("task", sa.String(63), primary_key=True),
        sa.Column("topic", sa.String(249), primary_key=True),  # Kafka's longest topic name
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("source_ts_ms", sa.BigInteger),
        sa.Column("applied_at", _APPLIED_AT, nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


OFFSETS = offsets_table()


def read_sql_offsets(
    conn: Connection,
    task: str,
    partitions: Collection[Partition] | None = None,
    lock: bool = False,
) -> dict[Partition, StoredOffset]:
    """The stored offsets of `task` (only of `partitions` if given)."""
    if not sa.inspect(conn).has_table(OFFSETS.name):
        return {}
    query = sa.select(
        OFFSETS.c.topic,
        OFFSETS.c.partition,
        OFFSETS.c.next_offset,
        OFFSETS.c.source_ts_ms,
        OFFSETS.c.applied_at,
    ).where(OFFSETS.c.task == task)
    if partitions is not None:
        if not partitions:
            return {}
        query = query.where(
            sa.tuple_(OFFSETS.c.topic, OFFSETS.c.partition).in_([tuple(p) for p in partitions])
        )
    if lock:
        query = query.order_by(OFFSETS.c.topic, OFFSETS.c.partition).with_for_update()
    return {
        (r.topic, r.partition): StoredOffset(
            r.next_offset, r.source_ts_ms, r.applied_at.replace(tzinfo=UTC)
        )
        for r in conn.execute(query)
    }


def write_sql_offsets(
    conn: Connection,
    dialect: SqlDialect,
    task: str,
    positions: Mapping[Partition, PartitionPosition],
    stored: Mapping[Partition, StoredOffset],
) -> None:
    """Store each partition's next offset; a batch of only tombstones keeps the latest
    source time already stored."""
    if not positions:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    rows: list[dict[str, Any]] = []
    for (topic, partition), pos in sorted(positions.items()):
        old = stored.get((topic, partition))
        ts = pos.source_ts_ms if pos.source_ts_ms is not None else (old and old.source_ts_ms)
        rows.append(
            {
                "task": task,
                "topic": topic,
                "partition": partition,
                "next_offset": pos.next_offset,
                "source_ts_ms": ts,
                "applied_at": now,
            }
        )
    keys = ["task", "topic", "partition"]
    conn.execute(dialect.upsert(OFFSETS, keys, ["next_offset", "source_ts_ms", "applied_at"]), rows)


def delete_sql_offsets(conn: Connection, task: str) -> int:
    """Forget every stored offset of `task`; the number of partitions forgotten."""
    if not sa.inspect(conn).has_table(OFFSETS.name):
        return 0
    return int(conn.execute(sa.delete(OFFSETS).where(OFFSETS.c.task == task)).rowcount)


def sql_dialect(task: TaskConfig) -> SqlDialect:
    """The dialect of a MySQL/MariaDB or SQLite target."""
    if task.target.engine == "mysql":
        from consumers.mysql_target import MySqlTarget

        return MySqlTarget()
    from consumers.sqlite_target import SqliteTarget

    return SqliteTarget()


def load_sql_offsets(task: TaskConfig) -> dict[Partition, StoredOffset]:
    """Every stored offset of `task`, on a connection of its own."""
    engine = sql_dialect(task).engine(task)
    try:
        with engine.connect() as conn, conn.begin():
            return read_sql_offsets(conn, task.name)
    finally:
        engine.dispose()


def forget_sql_offsets(task: TaskConfig) -> int:
    """Delete the stored offsets of `task`; the number of partitions forgotten."""
    engine = sql_dialect(task).engine(task)
    try:
        with engine.connect() as conn, conn.begin():
            forget_truncates(conn, task.name)
            forget_stopped(conn, task.name)
            return delete_sql_offsets(conn, task.name)
    finally:
        engine.dispose()
