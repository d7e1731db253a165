"""The offsets a sink applied, kept in the target (`public.headwater_offsets`) and written in
the same transaction as the rows: the target, not Kafka, says where a sink resumes, so a
crash between applying and committing to Kafka neither loses nor repeats a change."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from consumers.batch import PartitionPosition
from consumers.ddl import qualified
from consumers.stopped_tables import forget_stopped
from consumers.target import driver_connection, target_engine
from consumers.truncates import forget_truncates
from headwater.config import TaskConfig
from schemas.tables import TableId

OFFSETS_TABLE = TableId("public", "headwater_offsets")

Partition = tuple[str, int]
"""A topic partition: (topic, partition)."""

_TABLE = qualified(OFFSETS_TABLE)

_CREATE = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {} ("
    " task text NOT NULL,"
    " topic text NOT NULL,"
    " partition int NOT NULL,"
    " next_offset bigint NOT NULL,"
    " source_ts_ms bigint,"
    " applied_at timestamptz NOT NULL,"
    " PRIMARY KEY (task, topic, partition))"
).format(_TABLE)

_UPSERT = sql.SQL(
    "INSERT INTO {} (task, topic, partition, next_offset, source_ts_ms, applied_at)"
    " VALUES (%s, %s, %s, %s, %s, clock_timestamp())"
    " ON CONFLICT (task, topic, partition) DO UPDATE SET"
    " next_offset = EXCLUDED.next_offset,"
    " source_ts_ms = coalesce(EXCLUDED.source_ts_ms, {}.source_ts_ms),"
    " applied_at = EXCLUDED.applied_at"
).format(_TABLE, sql.Identifier(OFFSETS_TABLE.name))


@dataclass(frozen=True, slots=True)
class StoredOffset:
    """What the target holds for one partition."""

    next_offset: int
    source_ts_ms: int | None
    applied_at: datetime


def ensure_offsets_table(conn: psycopg.Connection[Any]) -> None:
    """Create the offsets table if missing (in the caller's transaction)."""
    conn.execute(_CREATE)


def _exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (str(OFFSETS_TABLE),)).fetchone()
    return bool(row and row[0])


def read_offsets(
    conn: psycopg.Connection[Any],
    task: str,
    partitions: Collection[Partition] | None = None,
    lock: bool = False,
) -> dict[Partition, StoredOffset]:
    """The stored offsets of `task` (only of `partitions` if given); with `lock`, the rows
    stay locked until the transaction ends, so two sinks cannot apply the same partition.
    Locking is the sink's apply, which created the table when it connected: one round trip
    fewer per batch."""
    if not lock and not _exists(conn):
        return {}
    query = sql.SQL(
        "SELECT topic, partition, next_offset, source_ts_ms, applied_at FROM {} WHERE task = %s"
    ).format(_TABLE)
    params: list[Any] = [task]
    if partitions is not None:
        query += sql.SQL(" AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))")
        params += [[t for t, _ in partitions], [p for _, p in partitions]]
    if lock:
        query += sql.SQL(" ORDER BY topic, partition FOR UPDATE")
    rows = conn.execute(query, params).fetchall()
    return {(r[0], r[1]): StoredOffset(r[2], r[3], r[4]) for r in rows}


def write_offsets(
    conn: psycopg.Connection[Any], task: str, positions: Mapping[Partition, PartitionPosition]
) -> None:
    """Store the next offset (and latest source time) of each partition of a batch."""
    rows = [
        (task, topic, partition, pos.next_offset, pos.source_ts_ms)
        for (topic, partition), pos in sorted(positions.items())
    ]
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)


def load_offsets(task: TaskConfig) -> dict[Partition, StoredOffset]:
    """Every stored offset of `task`, on a connection of its own."""
    if task.target.engine != "postgres":
        from consumers.sql_offsets import load_sql_offsets

        return load_sql_offsets(task)
    engine = target_engine(task)
    try:
        with engine.connect() as conn:
            found = read_offsets(driver_connection(conn), task.name)
            conn.rollback()
            return found
    finally:
        engine.dispose()


def forget_offsets(task: TaskConfig) -> int:
    """Delete the stored offsets of `task` (the next sink starts from the topics' start);
    the number of partitions forgotten."""
    if task.target.engine != "postgres":
        from consumers.sql_offsets import forget_sql_offsets

        return forget_sql_offsets(task)
    engine = target_engine(task)
    try:
        with engine.begin() as conn:
            raw = driver_connection(conn)
            forget_truncates(conn, task.name)
            forget_stopped(conn, task.name)
            if not _exists(raw):
                return 0
            cur = raw.execute(
                sql.SQL("DELETE FROM {} WHERE task = %s").format(_TABLE), (task.name,)
            )
            return cur.rowcount
    finally:
        engine.dispose()
