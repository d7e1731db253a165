"""The PostgreSQL full load, chunked and parallel: every selected table is split into
key-range chunks inside the consistent snapshot, the chunks of all tables go through one
queue to the snapshot worker processes, and each finished chunk (already flushed to Kafka)
is recorded in the task state, so a killed load resumes from the chunks not done.

Progress per table (rows, chunks, start and end times, the row estimate) lives in the same
state record `headwater status` and the live display read; it is logged as well.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import psycopg

from headwater.config import TaskConfig
from producers.postgres import chunks, snapshot
from producers.postgres.connection import connect
from producers.postgres.snapshot_workers import WorkerPool, WorkerSetup
from producers.task_state import TableProgress, TaskState
from schemas.tables import TableSchema

log = logging.getLogger(__name__)

_LOG_INTERVAL_S = 10.0


def export_snapshot(conn: psycopg.Connection[Any]) -> str:
    """Export the snapshot of `conn`'s open transaction for the workers to import (a
    full-load-only task has no slot to export one); valid while that transaction lasts."""
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def start_workers(task: TaskConfig, stop: threading.Event) -> WorkerPool:
    """The snapshot worker processes of a full load, started now to wait for its setup."""
    level = logging.getLogger().getEffectiveLevel()
    return WorkerPool(task.source.snapshot_workers, stop, level)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ChunkedLoad:
    """One full load of `schemas` into the task's topics, recorded in `state`."""

    def __init__(
        self,
        task: TaskConfig,
        db: str,
        schemas: Sequence[TableSchema],
        state: TaskState,
        save: Callable[[], None],
        stop: threading.Event,
        oids: Mapping[str, int] | None = None,
    ) -> None:
        self.task = task
        self.db = db
        self.schemas = list(schemas)
        self.state = state
        self.save = save
        self.stop = stop
        # By str(table): a table renamed after the snapshot is read under its new name.
        self.oids = dict(oids or {})
        self._last_log = time.monotonic()

    def run(
        self, snapshot_name: str | None, lsn: int | None, pool: WorkerPool | None = None
    ) -> None:
        """Read every table at the snapshot `snapshot_name` (None: a fresh one), with the
        workers of `pool` if started ahead (see `start_workers`); the pool is closed."""
        pool = pool or start_workers(self.task, self.stop)
        try:
            self._run(snapshot_name, lsn, pool)
        finally:
            pool.close()

    def _run(self, snapshot_name: str | None, lsn: int | None, pool: WorkerPool) -> None:
        # `conn` keeps the snapshot importable (exporting it when no slot gave one) and
        # touches no table: a lock held for the whole load would make a DDL on the table
        # wait for the load, and the load's next read of it wait behind the DDL for ever.
        with connect(self.task.source.url, purpose=f"{self.task.name} snapshot") as conn:
            snapshot.begin_snapshot(conn, snapshot_name)
            name = snapshot_name or export_snapshot(conn)
            with connect(self.task.source.url, purpose=f"{self.task.name} plan") as planner:
                snapshot.begin_snapshot(planner, name)
                plan = self._plan(planner)
                snapshot.end_snapshot(planner)
            setup = WorkerSetup(
                task_data=self.task.model_dump(by_alias=True),
                snapshot_name=name,
                lsn=lsn,
                db=self.db,
                schemas={str(s.table): s for s in self.schemas},
                log_level=logging.getLogger().getEffectiveLevel(),
                parent_pid=os.getpid(),
                oids=self.oids,
            )
            # More workers than chunks: the ones without a chunk end after the snapshot.
            pool.start(setup)  # returns once every worker imported the snapshot
            pool.run(plan, self._on_start, self._on_done)
            snapshot.end_snapshot(conn)

    def _plan(self, conn: psycopg.Connection[Any]) -> list[chunks.SnapshotChunk]:
        plans: list[list[chunks.SnapshotChunk]] = []
        chunk_rows = self.task.source.snapshot_chunk_rows
        for schema in self.schemas:
            now = chunks.reading_name(conn, schema, self.oids)
            estimate = chunks.estimate_rows(conn, now.table)
            plan = chunks.plan_chunks(conn, now, estimate, chunk_rows)
            if now is not schema:  # the chunks keep the name the rows are loaded under
                plan = [replace(c, table=schema.table) for c in plan]
            self.state.tables[str(schema.table)] = TableProgress(
                estimate=estimate, chunks_total=len(plan)
            )
            plans.append(plan)
            log.info(
                "task %s: %s: about %d rows in %d chunks",
                self.task.name,
                schema.table,
                estimate,
                len(plan),
            )
        self.save()
        return chunks.order_for_load(plans)

    def _on_start(self, chunk: chunks.SnapshotChunk) -> None:
        progress = self.state.tables[str(chunk.table)]
        if not progress.started_ms:
            progress.started_ms = _now_ms()

    def _on_done(self, chunk: chunks.SnapshotChunk, rows: int, pid: int) -> None:
        progress = self.state.tables[str(chunk.table)]
        progress.rows += rows
        progress.chunks_done = chunks.add_done(progress.chunks_done, chunk)
        log.debug(
            "task %s: chunk %d of %s: %d rows by worker %d",
            self.task.name,
            chunk.index,
            chunk.table,
            rows,
            pid,
        )
        if chunks.chunks_finished(progress.chunks_done) >= progress.chunks_total:
            progress.done = True
            progress.finished_ms = _now_ms()
            log.info("task %s: snapshot of %s: %s", self.task.name, chunk.table, describe(progress))
        elif time.monotonic() - self._last_log >= _LOG_INTERVAL_S:
            self._last_log = time.monotonic()
            for name, table in sorted(self.state.tables.items()):
                if table.started_ms and not table.done:
                    log.info("task %s: snapshot of %s: %s", self.task.name, name, describe(table))
        self.save()  # the chunk is in Kafka (the worker flushed): record it


def rate_and_eta(progress: TableProgress, now_ms: int | None = None) -> tuple[float, float | None]:
    """Rows per second so far and the seconds left at that rate (None when unknown)."""
    if not progress.started_ms:
        return 0.0, None
    end_ms = progress.finished_ms or now_ms or _now_ms()
    rate = progress.rows / max(0.001, (end_ms - progress.started_ms) / 1000)
    if progress.done:
        return rate, 0.0
    if not rate:
        return rate, None
    return rate, max(0, progress.estimate - progress.rows) / rate


def describe(progress: TableProgress) -> str:
    """One log line of a table's load progress."""
    rate, eta = rate_and_eta(progress)
    done = chunks.chunks_finished(progress.chunks_done)
    text = (
        f"{progress.rows:,} of about {progress.estimate:,} rows, "
        f"{done}/{progress.chunks_total} chunks, {rate:,.0f} rows/s"
    )
    if progress.done:
        return text + ", done"
    return text + (f", about {eta:,.0f}s left" if eta is not None else "")
