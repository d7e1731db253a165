"""The PostgreSQL producer of a task: checks the source, snapshots the selected tables at the
point a new replication slot exported, then streams the slot, acknowledging a position to
PostgreSQL only after Kafka acknowledged every event up to it."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from functools import partial

import psycopg

from headwater.config import TaskConfig
from producers.errors import SourceError, SourceUnreachable
from producers.event_writer import EventWriter
from producers.kafka_tail import load_resume_filter
from producers.postgres import catalog, chunks, native_loop, native_stream, oids
from producers.postgres.acks import AckTracker
from producers.postgres.changes import ChangeBuilder, HandedOut
from producers.postgres.connection import connect
from producers.postgres.follow import Selected, TableFollower
from producers.postgres.full_load import ChunkedLoad, start_workers
from producers.postgres.incremental import (
    SIGNAL_PREFIX,
    WATERMARK_PREFIX,
    IncrementalSnapshot,
    parse_signal,
)
from producers.postgres.pgoutput import (
    Keepalive,
    LogicalMessage,
    PgOutputMessage,
    Relation,
    XLogData,
    decode_message,
    format_lsn,
    parse_copy_frame,
    parse_lsn,
)
from producers.postgres.replication import (
    ReplicationLost,
    ReplicationStream,
    drop_slot,
    slot_info,
)
from producers.postgres.snapshot_workers import WorkerPool
from producers.resume_dedupe import ResumeFilter, postgres_position
from producers.task_state import TableProgress, TaskState, TaskStateStore
from schemas.envelope import ChangeEvent
from schemas.pg_types import UnrepresentableValue
from schemas.registry import SchemaRegistry
from schemas.tables import TableId, TableSchema
from schemas.topics import table_topic

log = logging.getLogger(__name__)

_STATE_SAVE_INTERVAL_S = 2.0
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0


class PostgresProducer:
    """Runs one task's PostgreSQL source until `stop` is set."""

    def __init__(self, task: TaskConfig, stop: threading.Event) -> None:
        self.task = task
        self.stop = stop
        self.conn = connect(task.source.url, purpose=f"{task.name} catalog")
        self.db = str(self.conn.info.dbname)
        self.types = self._type_resolver()
        self.tables = catalog.check_source_ready(self.conn, task)
        self.registry = SchemaRegistry(task.registry.url)
        self.registry.ping()
        self.writer = EventWriter(task, self.registry)
        self.store = TaskStateStore(task.kafka.bootstrap_servers)
        self.store.ensure_topic()
        self.state = self.store.load(task.name) or TaskState(task.name)
        self._last_save = 0.0
        self._handed_out: HandedOut = (0, 0)  # kept across reconnects (ChangeBuilder)
        self._lsn = 0  # the latest position streamed
        self.incremental = IncrementalSnapshot(task.name, task.topic_prefix, self.db)
        self.follower = TableFollower(
            task,
            self.db,
            self.writer,
            self.state,
            self.incremental,
            self.tables,
            self._request_snapshot,
        )

    def _type_resolver(self) -> catalog.TypeResolver:
        as_text = self.task.source.decimal_handling == "string"
        return catalog.TypeResolver(self.conn, decimals_as_text=as_text)

    # --- entry point --------------------------------------------------------------------

    def run(self) -> None:
        try:
            if self.task.mode == "full-load":
                if self.state.snapshot_status != "done":
                    self.follower.start(self.conn)  # a table renamed meanwhile is still read
                    self._full_load(snapshot_name=None, lsn=None)
                return
            self.follower.start(self.conn)  # the OIDs the stream follows tables by
            stream = self._prepare_slot()
            self.follower.note_oids()
            # Topics exist from the start, so an idle table still shows (zero) lag.
            for table in self.tables:
                try:
                    schema = catalog.describe_table(self.conn, table, self.types)
                except psycopg.errors.UndefinedTable:
                    continue  # renamed during the full load: the stream follows it
                self.writer.register_table(schema)
            self.writer.resume = self._resume_filter()
            self._stream(stream)
        finally:
            self.writer.close()
            self.registry.close()
            self.conn.close()

    # --- slot and snapshot --------------------------------------------------------------

    def _prepare_slot(self) -> ReplicationStream:
        """Open the replication connection, creating the slot (and running the full load
        at its exported snapshot) when this task has not done so yet."""
        catalog.ensure_publication(self.conn, self.task.publication, self.tables)
        slot = self.task.slot_name
        existing = slot_info(self.conn, slot)
        needs_load = self.task.mode == "full-load-and-cdc" and self.state.snapshot_status != "done"
        if existing is not None and needs_load and self.state.snapshot_status == "running":
            # A full load interrupted after its slot was made: the stream resumes at the
            # slot's consistent point and the unfinished tables continue incrementally.
            self._renamed_while_stopped()
            self._resume_load_incrementally()
            needs_load = False
        elif existing is not None and needs_load:
            # A slot without any recorded load (its progress was forgotten): start over.
            log.warning(
                "task %s: dropping slot %s of an unrecorded full load", self.task.name, slot
            )
            self._drop_slot_when_released(slot)
            existing = None
        elif existing is not None:
            self._renamed_while_stopped()
            self._queue_new_tables()
        if existing is None and not needs_load and self.state.snapshot_status != "pending":
            raise SourceError(
                f"replication slot {slot} has disappeared, so changes since "
                f"{self.state.acked_position or 'the last run'} are lost to this task; "
                f"run `headwater cleanup` on the task file and start it again for a new full load"
            )
        # The workers' start-up (a second of imports) overlaps the slot's creation.
        pool = start_workers(self.task, self.stop) if existing is None and needs_load else None
        try:
            stream = ReplicationStream(
                connect(self.task.source.url, replication=True, purpose=f"{self.task.name} stream")
            )
            if existing is None:
                created = stream.create_slot(slot, export_snapshot=needs_load)
                log.info(
                    "task %s: created slot %s at %s",
                    self.task.name,
                    slot,
                    format_lsn(created.consistent_point),
                )
                if needs_load:
                    self._full_load(created.snapshot_name, created.consistent_point, pool)
                else:
                    self.state.snapshot_status = "skipped"
                    self.state.acked_position = format_lsn(created.consistent_point)
                    self._save_state(force=True)
        finally:
            if pool is not None:
                pool.close()
        return stream

    def _resume_load_incrementally(self) -> None:
        for table in self.tables:
            progress = self.state.tables.setdefault(str(table), TableProgress())
            if progress.done:
                continue
            if progress.chunks_total:  # a chunked load: only the ranges not finished
                ranges = chunks.unfinished_ranges(progress.chunks_done, progress.chunks_total)
                log.info(
                    "task %s: resuming the load of %s: %d of %d chunks finished, %d key "
                    "ranges left",
                    self.task.name,
                    table,
                    chunks.chunks_finished(progress.chunks_done),
                    progress.chunks_total,
                    len(ranges),
                )
                if ranges:
                    (after, until), *more = ranges
                    self.incremental.request(table, after, until, more)
                else:
                    progress.done = True
                continue
            log.info(
                "task %s: resuming the load of %s after key %s",
                self.task.name,
                table,
                progress.last_key,
            )
            self.incremental.request(table, progress.last_key)
        if not self.incremental.busy:
            self.state.snapshot_status = "done"

    def _queue_new_tables(self) -> None:
        """Tables the task selects now but never loaded (newly included): load them."""
        for table in self.tables:
            if str(table) not in self.state.tables:
                log.info("task %s: %s is newly included; loading it", self.task.name, table)
                self._request_snapshot(table)

    def _renamed_while_stopped(self) -> None:
        acked = self.state.acked_position
        before = set(self.state.tables)
        self.follower.renamed_while_stopped(self.conn, self.types, parse_lsn(acked) if acked else 0)
        if set(self.state.tables) != before:
            self._save_state(force=True, flush=True)  # the truncates first, then the progress

    def _request_snapshot(self, table: TableId, oid: int = 0) -> None:
        self.state.tables[str(table)] = TableProgress(
            estimate=catalog.estimated_rows(self.conn, table),
            started_ms=int(time.time() * 1000),
            oid=oid,
        )
        self.state.snapshot_status = "running"
        self.incremental.request(table)

    def _drop_slot_when_released(self, slot: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            info = slot_info(self.conn, slot)
            if info is None:
                return
            if not info["active"]:
                drop_slot(self.conn, slot)
                return
            if time.monotonic() > deadline:
                raise SourceError(f"replication slot {slot} is in use by another process")
            time.sleep(0.5)

    def _full_load(
        self, snapshot_name: str | None, lsn: int | None, pool: WorkerPool | None = None
    ) -> None:
        """Chunks of every table read in parallel at the snapshot (see `full_load`); the
        slot is acknowledged past `lsn` only after this returns, every chunk flushed."""
        pool = pool or start_workers(self.task, self.stop)  # overlapping what follows
        known = self.follower.oids_by_name()
        schemas = [self._shape_at_load(t, known) for t in self.tables]
        for schema in schemas:
            self.writer.register_table(schema)
        self.state.snapshot_status = "running"
        self.state.tables = {str(t): TableProgress() for t in self.tables}
        self._save_state(force=True)
        save = partial(self._save_state, force=True)
        ChunkedLoad(self.task, self.db, schemas, self.state, save, self.stop, known).run(
            snapshot_name, lsn, pool
        )
        self.state.snapshot_status = "done"
        if lsn is not None:
            self.state.acked_position = format_lsn(lsn)
        self._save_state(force=True)
        log.info("task %s: full load done", self.task.name)

    def _shape_at_load(self, table: TableId, known: dict[str, int]) -> TableSchema:
        """`table` as the full load reads it, under the name the task selected it by (a
        rename since is followed in the stream), described by the name it has now."""
        oid = known.get(str(table))
        now = oids.current_name(self.conn, oid) if oid else None
        schema = catalog.describe_table(self.conn, now or table, self.types)
        return schema if now is None or now == table else replace(schema, table=table)

    # --- streaming ----------------------------------------------------------------------

    def _resume_filter(self) -> ResumeFilter | None:
        """How far each partition of the task's topics holds streamed changes: the slot
        sends again what it had not confirmed, and what Kafka holds is skipped."""
        row = self.conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
        topics = [table_topic(self.task.topic_prefix, t) for t in self.tables]
        wal_end = int(str(row[0])) if row else 0
        return load_resume_filter(self.task, self.writer.serde, topics, postgres_position, wal_end)

    def _describe(self, rel: Relation) -> TableSchema:
        schema = catalog.schema_from_relation(self.conn, rel, self.types)
        self.writer.register_table(schema)
        return schema

    def _stream(self, stream: ReplicationStream) -> None:
        """Stream until stopped; a lost connection is re-established with backoff and the
        stream resumes at the slot's confirmed position (what was not acknowledged is sent
        again; ChangeBuilder.handed_out skips what this process wrote already)."""
        delay = _RETRY_FIRST_S
        while True:
            started = time.monotonic()
            try:
                self._stream_once(stream)
                return
            except ReplicationLost as lost:
                if time.monotonic() - started > _RETRY_MAX_S:
                    delay = _RETRY_FIRST_S  # it had been streaming fine: start backoff over
                log.warning("task %s: %s; reconnecting in %.1fs", self.task.name, lost, delay)
            while True:
                if self.stop.wait(delay):
                    return
                delay = min(delay * 2, _RETRY_MAX_S)
                try:
                    stream = self._reconnect()
                    break
                except ReplicationLost as lost:
                    log.warning("task %s: %s; retrying in %.1fs", self.task.name, lost, delay)

    def _reconnect(self) -> ReplicationStream:
        """Fresh catalog and replication connections; the slot must still be there."""
        try:
            if self.conn.closed or self.conn.broken:
                self.conn = connect(self.task.source.url, purpose=f"{self.task.name} catalog")
                self.types = self._type_resolver()
            if slot_info(self.conn, self.task.slot_name) is None:
                raise SourceError(
                    f"replication slot {self.task.slot_name} disappeared while streaming "
                    f"(last acknowledged {self.state.acked_position}); changes after it are lost "
                    "to this task: run `headwater cleanup` on the task file and start it again"
                )
            return ReplicationStream(
                connect(self.task.source.url, replication=True, purpose=f"{self.task.name} stream")
            )
        except SourceUnreachable as exc:
            raise ReplicationLost(str(exc)) from None
        except psycopg.OperationalError as exc:
            raise ReplicationLost(f"source connection lost: {exc}") from None

    def _stream_once(self, stream: ReplicationStream) -> None:
        builder = ChangeBuilder(
            self.task.topic_prefix,
            self.db,
            Selected(self.task.tables, partial(oids.is_partition, self.conn)),
            self._describe,
            self._handed_out,
            self.follower.known,
        )
        stream.start(self.task.slot_name, self.task.publication)
        acks = AckTracker(stream, self.writer, self.task.source.ack_interval_s)
        # Insert/update/delete messages the library writes the same bytes for skip the
        # Python objects (see native_stream); with the frame loop (native_loop) the library
        # also reads the frames and handles Begin and Commit. The others take the Python path.
        fast = frames = None
        if native_stream.available():
            fast = native_stream.NativeStream(self.writer, self.incremental)
            frames = native_loop.open_loop(stream.pgconn)
            if frames is not None:
                fast.attach(frames)
        self._lsn = 0  # the latest position read, naming the truncates a rename calls for
        log.info("task %s: streaming slot %s", self.task.name, self.task.slot_name)
        try:
            while not self.stop.is_set():
                if self.incremental.busy and self.incremental.chunk is None:
                    self._next_chunk()
                    if frames is not None:
                        frames.clear()  # the chunk's table may have a new codec
                if frames is not None and self._loop_may_run(builder, frames):
                    in_tx = self._run_frame_loop(stream, frames, builder, fast, acks)
                else:
                    if frames is not None and frames.owned:
                        frames.give(builder)
                    self._on_frame(stream.read(timeout=0.2), builder, fast, acks)
                    in_tx = builder.tx is not None
                if not in_tx and self.follower.poll_due():  # between transactions
                    if frames is not None:
                        frames.clear()  # a table it loads gets a new codec
                    self.follower.poll(self.conn, self.types, max(self._lsn, acks.acked))
                if acks.maybe_ack():
                    self.state.acked_position = format_lsn(acks.acked)
                    self._save_state()
            acks.maybe_ack(force=True)
            self.state.acked_position = format_lsn(acks.acked)
            self._save_state(force=True)
        finally:
            if frames is not None and frames.owned:
                frames.give(builder)
            log.debug(
                "task %s: stream read: %d changes by the frame loop, %d by the native encoder",
                self.task.name,
                frames.written if frames is not None else 0,
                fast.written if fast is not None else 0,
            )
            self._handed_out = builder.handed_out
            stream.stop()
            stream.conn.close()
            if self.stop.is_set():
                self._save_state(force=True)

    def _loop_may_run(self, builder: ChangeBuilder, frames: native_loop.FrameLoop) -> bool:
        """The frame loop writes events as they come: not while repeated events are being
        skipped, the resume filter decides, or an incremental-snapshot window is open."""
        if not frames.owned:
            tx = builder.tx
            if tx is not None and tx.seen < tx.skip:
                return False
        chunk = self.incremental.chunk
        return self.writer.resume is None and (chunk is None or not chunk.window_open)

    def _run_frame_loop(
        self,
        stream: ReplicationStream,
        frames: native_loop.FrameLoop,
        builder: ChangeBuilder,
        fast: native_stream.NativeStream | None,
        acks: AckTracker,
    ) -> bool:
        """One run of the native frame loop, its records produced; the frame it leaves (if
        any) goes through `_on_frame`. Whether a transaction is open after it."""
        if not frames.owned:
            frames.take(builder)
        status = frames.run(self.follower.poll_due(), 0.2, _GATHER_S)
        st = frames.state
        self._lsn = max(self._lsn, st.wal_start)
        if st.records:
            write = self.writer.write_change
            for topic, key, value, tombstone in frames.records():
                write(topic, key, value, tombstone)
            self.state.events_streamed += st.records
        acks.on_native(st.committed, bool(st.in_tx), st.server_end, status == native_loop.REPLY)
        if status == native_loop.FRAME:
            frames.give(builder)
            self._on_frame(parse_copy_frame(frames.frame()), builder, fast, acks)
            return builder.tx is not None
        if status == native_loop.ENDED:
            stream.ended()
        elif status == native_loop.BROKEN:
            stream.broken()
        return bool(st.in_tx)

    def _on_frame(
        self,
        frame: XLogData | Keepalive | None,
        builder: ChangeBuilder,
        fast: native_stream.NativeStream | None,
        acks: AckTracker,
    ) -> None:
        """One frame on the Python path (a row message through NativeStream when it may)."""
        if isinstance(frame, Keepalive):
            acks.on_keepalive(frame)
            return
        if frame is None:
            return
        self._lsn = max(self._lsn, frame.wal_start)
        if fast is not None and fast.write(builder, frame.payload, frame.wal_start):
            # A row change the native path wrote (and counted in the builder).
            self.state.events_streamed += 1
            acks.on_row_change()
            return
        msg = decode_message(frame.payload)
        loop = fast.loop if fast is not None else None
        codecs = self.writer.codec_changes
        if isinstance(msg, LogicalMessage):
            self._on_logical_message(msg)
        try:
            events = builder.on_message(msg, frame.wal_start)
            events += self._rename_notice(builder, msg)
        except UnrepresentableValue as exc:
            raise SourceError(
                f"task {self.task.name} at LSN {format_lsn(frame.wal_start)}: {exc}"
            ) from None
        for event in events:
            self.incremental.on_change(event)
            self.writer.write(event)
            self.state.events_streamed += 1
        if loop is not None:
            changed = self.writer.codec_changes != codecs
            native_loop.after_python_message(loop, msg, builder, changed)
        self._follow_moves(builder)
        acks.on_message(msg, builder.tx is not None)

    def _rename_notice(self, builder: ChangeBuilder, msg: PgOutputMessage) -> list[ChangeEvent]:
        """A rename the poll noticed, met in stream order (see TableFollower)."""
        if not isinstance(msg, LogicalMessage):
            return []
        relation = self.follower.noticed_relation(self.conn, msg)
        return builder.on_message(relation, 0) if relation is not None else []

    def _follow_moves(self, builder: ChangeBuilder) -> None:
        for move in builder.moves:
            self.follower.on_move(move)
        if builder.moves:
            builder.moves.clear()
            # The truncates in Kafka before the progress that no longer names the old table.
            self._save_state(force=True, flush=True)

    # --- incremental snapshots ------------------------------------------------------------

    def _next_chunk(self) -> None:
        """Read the next chunk of the table at the head of the queue (between watermarks);
        a table with no rows left is done."""
        table = self.incremental.queue[0]
        try:
            schema = catalog.describe_table(self.conn, table, self.types)
            self.writer.register_table(schema)
            if self.incremental.read_chunk(self.conn, schema):
                return
        except psycopg.errors.UndefinedTable:
            # Renamed or dropped before the stream got there: a rename shows in the stream
            # (a Relation message under the new name), which loads the table under it.
            log.warning("task %s: %s is gone; its load stops", self.task.name, table)
            self.incremental.forget(table)
        progress = self.state.tables.setdefault(str(table), TableProgress())
        progress.done = True
        progress.finished_ms = int(time.time() * 1000)
        log.info(
            "task %s: incremental snapshot of %s done: %d rows",
            self.task.name,
            table,
            progress.rows,
        )
        if not self.incremental.busy:
            self.state.snapshot_status = "done"
        self._save_state(force=True, flush=True)

    def _on_logical_message(self, msg: LogicalMessage) -> None:
        if msg.prefix == WATERMARK_PREFIX + self.task.name:
            chunk = self.incremental.chunk
            events = self.incremental.on_watermark(msg.content, msg.lsn)
            if chunk is None or self.incremental.chunk is not None:
                return  # a low watermark, or one of an abandoned chunk
            for event in events:
                self.writer.write(event)
            progress = self.state.tables.setdefault(str(chunk.schema.table), TableProgress())
            progress.rows += len(events)
            progress.last_key = chunk.last_key_text
            self._save_state(force=True, flush=True)
        elif msg.prefix == SIGNAL_PREFIX + self.task.name:
            for table in parse_signal(msg.content):
                if table in self.tables:
                    log.info("task %s: snapshot of %s requested", self.task.name, table)
                    self._request_snapshot(table)
                else:
                    log.warning(
                        "task %s: snapshot of %s requested, but the task does not "
                        "select it; ignored",
                        self.task.name,
                        table,
                    )

    def _save_state(self, force: bool = False, flush: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_save >= _STATE_SAVE_INTERVAL_S:
            if flush:
                self.writer.flush()
            # A periodic save does not wait for Kafka: on the streaming path a slow ack
            # (hundreds of ms, seen) would hold up every change behind it. It only carries
            # progress; whatever must be durable before the next step is a forced save.
            self.store.save(self.state, wait=force)
            self._last_save = now


# How long the frame loop waits, from its first record, for more to produce with it: one
# round through Python per burst of small transactions instead of one per transaction.
_GATHER_S = 0.001


def run_postgres_producer(task: TaskConfig, stop: threading.Event) -> None:
    """Run the task's PostgreSQL producer until `stop` is set (or the full load ends)."""
    PostgresProducer(task, stop).run()
