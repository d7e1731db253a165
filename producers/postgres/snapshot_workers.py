"""The worker processes of the parallel full load. Each opens its own connection, imports
the exported snapshot, reads the chunks it takes from one shared queue with COPY, and
produces their `r` events through its own idempotent producer, flushed before it reports a
chunk done: a chunk reported done is in Kafka.

`WorkerPool` is the parent's side: it starts the workers (spawned, so no connection or
Kafka client is inherited), waits until each has imported the snapshot (the exporter must
stay idle until then), hands out chunks and turns the workers' reports into callbacks.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import psycopg
from psycopg import sql

from headwater.config import TaskConfig
from headwater.gc_tuning import tune_gc
from producers.errors import SourceError
from producers.event_writer import EventWriter
from producers.postgres import catalog, native_rows, snapshot
from producers.postgres.chunks import SnapshotChunk, copy_query, reading_name
from producers.postgres.connection import connect
from schemas.envelope import ChangeEvent, SourceInfo
from schemas.pg_types import UnrepresentableValue, parse_pg_text
from schemas.registry import SchemaRegistry
from schemas.tables import TableSchema

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 120.0
_NATIVE_BLOCK_BYTES = 1 << 20  # COPY text handed to the native encoder at once
_PR_SET_PDEATHSIG = 1

# Reports from a worker: ("ready", pid), ("start", chunk, pid), ("done", chunk, rows, pid),
# ("error", pid, message).
Report = tuple[Any, ...]


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, picklable."""

    task_data: dict[str, Any]
    snapshot_name: str
    lsn: int | None
    db: str
    schemas: dict[str, TableSchema]  # by str(table)
    log_level: int
    parent_pid: int
    # The tables' OIDs (by str(table)): a table renamed since the snapshot is read under
    # its new name, its rows still named as at the snapshot.
    oids: dict[str, int] = field(default_factory=dict)


# --- worker side -------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a killed producer: its snapshot rows, produced after a
    restarted producer streamed newer changes, would overwrite them."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check between batches still applies
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_main(
    parent_pid: int,
    log_level: int,
    setups: Queue[WorkerSetup | None],
    chunks: Queue[Any],
    reports: Queue[Report],
    stop: Event,
) -> None:
    """Entry point of a worker process: started ahead of the load (importing the project
    takes a second), it waits for the setup (the snapshot to import) before reading."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    logging.basicConfig(
        level=log_level, format="%(asctime)s snapshot-worker %(levelname)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry call
    tune_gc()
    setup = setups.get()
    if setup is None:
        return  # no load after all
    try:
        _ChunkReader(setup, reports, stop).run(chunks)
    except Exception as exc:
        if not isinstance(exc, SourceError):
            log.error("snapshot worker failed:\n%s", traceback.format_exc())
        message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
        reports.put(("error", os.getpid(), message))


class _ChunkReader:
    """One worker's connection, snapshot and producer."""

    def __init__(self, setup: WorkerSetup, reports: Queue[Report], stop: Event) -> None:
        self.setup = setup
        self.reports = reports
        self.stop = stop
        self.task = TaskConfig.model_validate(setup.task_data)
        self.pid = os.getpid()
        self._encoders: dict[str, native_rows.RowEncoder | None] = {}
        self._schemas: dict[str, TableSchema] = {}  # tables re-described during the load

    def run(self, chunks: Queue[Any]) -> None:
        registry = SchemaRegistry(self.task.registry.url)
        writer = EventWriter(self.task, registry)
        try:
            with connect(self.task.source.url, purpose=f"{self.task.name} load") as conn:
                snapshot.begin_snapshot(conn, self.setup.snapshot_name)  # it imports
                snapshot.end_snapshot(conn)
                self.reports.put(("ready", self.pid))
                while not self.stop.is_set():
                    item = chunks.get()
                    if item is None:
                        break
                    number, chunk = item
                    self.reports.put(("start", number, self.pid))
                    # One transaction per chunk, at the same snapshot: the chunk's lock on
                    # its table ends with it, so a DDL waits one chunk, not the whole load.
                    snapshot.begin_snapshot(conn, self.setup.snapshot_name)
                    rows = self._read(conn, writer, chunk)
                    snapshot.end_snapshot(conn)
                    if rows is None:
                        break  # stopped half way: the chunk stays unfinished
                    writer.flush()
                    self.reports.put(("done", number, rows, self.pid))
        finally:
            writer.close()
            registry.close()

    def _read(
        self, conn: psycopg.Connection[Any], writer: EventWriter, chunk: SnapshotChunk
    ) -> int | None:
        key = str(chunk.table)
        schema = self._schemas.get(key) or self.setup.schemas[key]
        writer.register_table(schema)
        try:
            return self._copy(conn, writer, schema, chunk)
        except UnrepresentableValue as exc:
            raise SourceError(f"task {self.task.name}: table {chunk.table}: {exc}") from None
        except psycopg.errors.UndefinedColumn:
            # A column dropped or renamed since the snapshot: the query's names resolve in
            # the catalog as it is now, not as at the snapshot (nothing was read yet).
            conn.rollback()
        schema = self._schemas[key] = self._shape_now(conn, schema)
        self._encoders.pop(key, None)
        writer.register_table(schema)
        snapshot.begin_snapshot(conn, self.setup.snapshot_name)
        try:
            return self._copy(conn, writer, schema, chunk)
        except UnrepresentableValue as exc:
            raise SourceError(f"task {self.task.name}: table {chunk.table}: {exc}") from None

    def _shape_now(self, conn: psycopg.Connection[Any], schema: TableSchema) -> TableSchema:
        """The table's columns as the catalog has them now, under its snapshot name and key
        (its rows are still chunked by that key)."""
        conn.autocommit = True  # read the catalog now, outside the snapshot
        current = reading_name(conn, schema, self.setup.oids)
        now = catalog.describe_table(conn, current.table, catalog.TypeResolver(conn))
        names = {c.name for c in now.columns}
        missing = [k for k in schema.primary_key if k not in names]
        if missing:
            raise SourceError(
                f"task {self.task.name}: table {schema.table}: key column(s) "
                f"{', '.join(missing)} dropped during the full load; start the task again"
            )
        log.warning(
            "task %s: table %s changed during the full load (columns now: %s); its remaining "
            "chunks are read with them, the stream carries the change itself",
            self.task.name,
            schema.table,
            ", ".join(sorted(names)),
        )
        return replace(now, table=schema.table, primary_key=schema.primary_key)

    def _copy(
        self,
        conn: psycopg.Connection[Any],
        writer: EventWriter,
        schema: TableSchema,
        chunk: SnapshotChunk,
    ) -> int | None:
        query = copy_query(reading_name(conn, schema, self.setup.oids), chunk.lower, chunk.upper)
        encoder = self._encoder(schema)
        if encoder is not None:
            return self._copy_native(conn, writer, schema, query, encoder)
        columns = schema.columns
        source = self._source(schema)
        rows = 0
        check_every = self.task.source.snapshot_fetch_rows
        with conn.cursor() as cur, cur.copy(query) as copy:
            for values in copy.rows():
                after = {c.name: parse_pg_text(c, v) for c, v in zip(columns, values, strict=True)}
                writer.write(ChangeEvent("r", source, None, after, source.ts_ms))
                rows += 1
                if rows % check_every == 0:
                    if self.stop.is_set() or os.getppid() != self.setup.parent_pid:
                        return None
                    source = self._source(schema)
        return rows

    def _encoder(self, schema: TableSchema) -> native_rows.RowEncoder | None:
        if not native_rows.available() or not schema.primary_key:
            return None
        key = str(schema.table)
        if key not in self._encoders:
            spec = native_rows.encoder_spec(schema)
            self._encoders[key] = native_rows.RowEncoder(spec) if spec is not None else None
        return self._encoders[key]

    def _copy_native(
        self,
        conn: psycopg.Connection[Any],
        writer: EventWriter,
        schema: TableSchema,
        query: sql.Composed,
        encoder: native_rows.RowEncoder,
    ) -> int | None:
        """The chunk's COPY text encoded natively, block by block (a block the library
        leaves goes through the Python path)."""
        topic, key_id, _ = writer.table_ids(schema.table)
        pending = bytearray()
        rows = 0
        with conn.cursor() as cur, cur.copy(query) as copy:
            for data in copy:
                pending += data
                if len(pending) < _NATIVE_BLOCK_BYTES:
                    continue
                rows += self._emit(writer, schema, topic, key_id, encoder, pending)
                if self.stop.is_set() or os.getppid() != self.setup.parent_pid:
                    return None
        rows += self._emit(writer, schema, topic, key_id, encoder, pending)
        if pending:
            raise SourceError(f"table {schema.table}: COPY output ended inside a row")
        return rows

    def _emit(
        self,
        writer: EventWriter,
        schema: TableSchema,
        topic: str,
        key_id: int,
        encoder: native_rows.RowEncoder,
        pending: bytearray,
    ) -> int:
        """Produce the complete lines of `pending` and remove them from it."""
        source = self._source(schema)
        frame = native_rows.EnvelopeFrame.cut(
            key_id, writer.envelope(ChangeEvent("r", source, None, None, source.ts_ms))
        )
        encoded = encoder.encode(bytes(pending), frame) if frame is not None else None
        if encoded is not None:
            writer.write_encoded(topic, encoded.messages())
            del pending[: encoded.consumed]
            return encoded.rows
        end = pending.rfind(b"\n") + 1
        lines = bytes(pending[: end - 1]).split(b"\n") if end else []
        for line in lines:
            values = native_rows.parse_copy_line(line)
            after = {
                c.name: parse_pg_text(c, v) for c, v in zip(schema.columns, values, strict=True)
            }
            writer.write(ChangeEvent("r", source, None, after, source.ts_ms))
        del pending[:end]
        return len(lines)

    def _source(self, schema: TableSchema) -> SourceInfo:
        return SourceInfo(
            connector="postgresql",
            name=self.task.topic_prefix,
            db=self.setup.db,
            table=schema.table,
            ts_ms=int(time.time() * 1000),
            snapshot="true",
            lsn=self.setup.lsn,
        )


# --- parent side -------------------------------------------------------------------------


ChunkCallback = Callable[[SnapshotChunk, int, int], None]  # chunk, rows, worker pid


class WorkerPool:
    """Runs `workers` worker processes over a list of chunks, in the parent. The processes
    start at once, so their start-up overlaps whatever the parent does before `start`."""

    def __init__(self, workers: int, stop: threading.Event, log_level: int) -> None:
        self.workers = workers
        self.stop = stop
        self._ctx = mp.get_context("spawn")
        self._setups: Queue[WorkerSetup | None] = self._ctx.Queue()
        self._chunks: Queue[Any] = self._ctx.Queue()
        self._reports: Queue[Report] = self._ctx.Queue()
        self._stop_workers = self._ctx.Event()
        self._procs: list[BaseProcess] = []
        self._closed = False
        for n in range(workers):
            proc = self._ctx.Process(
                target=worker_main,
                args=(
                    os.getpid(),
                    log_level,
                    self._setups,
                    self._chunks,
                    self._reports,
                    self._stop_workers,
                ),
                name=f"headwater-snapshot-worker-{n}",
                daemon=True,
            )
            proc.start()
            self._procs.append(proc)

    def start(self, setup: WorkerSetup) -> None:
        """Hand the workers `setup` and wait until every one has imported the snapshot."""
        for _ in self._procs:
            self._setups.put(setup)
        ready = 0
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while ready < self.workers:
            report = self._next_report(deadline)
            if report is not None and report[0] == "ready":
                ready += 1

    def run(
        self,
        chunks: Sequence[SnapshotChunk],
        on_start: Callable[[SnapshotChunk], None],
        on_done: ChunkCallback,
    ) -> None:
        """Hand out every chunk; return when all are done (raise if a worker fails)."""
        for number, chunk in enumerate(chunks):
            self._chunks.put((number, chunk))
        for _ in self._procs:
            self._chunks.put(None)
        pending = set(range(len(chunks)))
        while pending:
            report = self._next_report(None)
            if report is None:
                continue
            if report[0] == "start":
                on_start(chunks[report[1]])
            elif report[0] == "done":
                pending.discard(report[1])
                on_done(chunks[report[1]], report[2], report[3])

    def _next_report(self, deadline: float | None) -> Report | None:
        """The next report, None after a quiet half second; raises on a failure, a dead
        worker, a stop request or the deadline."""
        if self.stop.is_set():
            raise InterruptedError("stopped during the full load")
        try:
            report = self._reports.get(timeout=0.5)
        except queue.Empty:
            self._check_alive()
            if deadline is not None and time.monotonic() > deadline:
                raise SourceError(
                    f"snapshot workers did not open their snapshot in {_READY_TIMEOUT_S:.0f}s; "
                    "check that the source accepts more connections (max_connections)"
                ) from None
            return None
        if report[0] == "error":
            raise SourceError(str(report[2]))
        return report

    def _check_alive(self) -> None:
        if all(proc.exitcode is not None for proc in self._procs) and self._reports.empty():
            # (A worker's last reports reach the queue before its exit code is set.)
            raise SourceError("every snapshot worker ended before the full load was done")
        for proc in self._procs:
            if proc.exitcode is not None and proc.exitcode != 0:
                raise SourceError(
                    f"snapshot worker {proc.pid} died (exit code {proc.exitcode}) during the "
                    "full load; see its log; the load resumes from its finished chunks"
                )

    def close(self) -> None:
        """Stop the workers (what they were reading stays unfinished) and reap them."""
        if self._closed:
            return
        self._closed = True
        self._stop_workers.set()
        for _ in self._procs:
            self._setups.put(None)  # wakes a worker still waiting for its setup
            self._chunks.put(None)  # wakes a worker waiting for a chunk
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self._setups.cancel_join_thread()
        self._chunks.cancel_join_thread()
        self._reports.cancel_join_thread()
