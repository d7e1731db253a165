"""The MySQL/MariaDB producer of a task: checks the source, snapshots the selected tables in
one consistent read at a known binlog position, then streams the binlog from that position,
saving a position (at a transaction's end) only after Kafka acknowledged every event before
it."""

from __future__ import annotations

import logging
import threading
import time

import pymysql

from headwater.config import TaskConfig
from producers.crash_hook import crash_point
from producers.errors import SourceError
from producers.event_writer import EventWriter
from producers.kafka_tail import load_resume_filter
from producers.mysql import catalog, flavor, snapshot
from producers.mysql.binlog import BinlogSession
from producers.mysql.connection import Connection, connect
from producers.mysql.position import BinlogPosition, file_number, stream_position
from producers.task_state import TableProgress, TaskState, TaskStateStore
from schemas.registry import SchemaRegistry
from schemas.tables import TableId, TableSchema
from schemas.topics import table_topic

log = logging.getLogger(__name__)

_STATE_SAVE_INTERVAL_S = 2.0
_NO_SUCH_TABLE = 1146  # ER_NO_SUCH_TABLE


def open_checked(task: TaskConfig) -> tuple[Connection, flavor.Flavor, list[TableId]]:
    """Connect and run every source check (settings, privileges, server id, keys); the
    connection, the server flavor and the selected tables."""
    conn = connect(task.source.url)
    try:
        found = flavor.detect(conn)
        cdc = task.mode != "full-load"
        if cdc:
            catalog.check_cdc_settings(conn)
            server_id = task.source.server_id or catalog.default_server_id(task.name)
            catalog.check_server_id(conn, server_id)
        catalog.check_privileges(conn, found, cdc)
        tables = catalog.selected_tables(conn, task.tables)
        if not tables:
            raise SourceError(
                f"no source table matches tables.include {task.tables.include}; "
                "check the patterns (database.table, with * wildcards)"
            )
        catalog.require_primary_keys(conn, tables)
    except BaseException:
        conn.close()
        raise
    return conn, found, list(tables)


class MysqlProducer:
    """Runs one task's MySQL/MariaDB source until `stop` is set."""

    def __init__(self, task: TaskConfig, stop: threading.Event) -> None:
        self.task = task
        self.stop = stop
        self.conn, self.flavor, self.tables = open_checked(task)
        self.registry = SchemaRegistry(task.registry.url)
        self.registry.ping()
        self.writer = EventWriter(task, self.registry)
        self.store = TaskStateStore(task.kafka.bootstrap_servers)
        self.store.ensure_topic()
        self.state = self.store.load(task.name) or TaskState(task.name)
        self._last_save = 0.0
        self._flushed = 0  # events produced as of the last flush (for the crash hook)

    def run(self) -> None:
        try:
            if self.task.mode == "full-load":
                if self.state.snapshot_status != "done":
                    self._full_load()
                return
            self._stream(self._start_position())
        finally:
            self.writer.close()
            self.registry.close()
            self.conn.close()

    def _start_position(self) -> BinlogPosition:
        if self.task.mode == "full-load-and-cdc" and self.state.snapshot_status != "done":
            return self._full_load()
        saved = BinlogPosition.from_dict(self.state.binlog)
        if saved is not None:
            return saved
        now = flavor.current_position(self.conn, self.flavor)
        self.state.snapshot_status = "skipped"
        self._acknowledge(now)
        self._save_state(force=True)
        return now

    # --- full load ----------------------------------------------------------------------

    def _full_load(self) -> BinlogPosition:
        """Snapshot every table not yet done; the position streaming starts from.

        A load cut short resumes after each table's last acknowledged key in a new snapshot,
        and streaming still starts at the first snapshot's position: the changes in between
        are replayed, and as each is a full row image the target ends equal to the source.
        """
        schemas = {t: catalog.describe_table(self.conn, t) for t in self.tables}
        for schema in schemas.values():
            self.writer.register_table(schema)
        with connect(self.task.source.url) as snap_conn:
            at = flavor.start_consistent_snapshot(snap_conn, self.flavor)
            resuming = self.state.snapshot_status == "running" and bool(self.state.binlog)
            if not resuming:
                self.state.tables = {
                    str(t): TableProgress(estimate=catalog.estimated_rows(self.conn, t))
                    for t in self.tables
                }
                self._acknowledge(at)
            self.state.snapshot_status = "running"
            self._save_state(force=True)
            log.info("task %s: snapshot at %s", self.task.name, at.describe())
            for table, schema in schemas.items():
                progress = self.state.tables.setdefault(str(table), TableProgress())
                if not progress.done:
                    self._load_table_unless_gone(snap_conn, schema, progress, at)
                if self.stop.is_set():
                    raise InterruptedError("stopped during the full load")
            snap_conn.rollback()
        self.writer.flush()
        self.state.snapshot_status = "done"
        self._save_state(force=True)
        log.info("task %s: full load done", self.task.name)
        start = BinlogPosition.from_dict(self.state.binlog)
        assert start is not None
        return start

    def _load_table_unless_gone(
        self, conn: Connection, schema: TableSchema, progress: TableProgress, at: BinlogPosition
    ) -> None:
        try:
            self._load_table(conn, schema, progress, at)
        except pymysql.err.ProgrammingError as exc:
            if exc.args[0] != _NO_SUCH_TABLE:
                raise
            if self.task.mode == "full-load":
                raise SourceError(
                    f"table {schema.table} was renamed or dropped during the full load: run "
                    "the task again (it loads the tables under the names they have then)"
                ) from None
            # Renamed or dropped after the snapshot began (the read view does not cover
            # DDL); streaming from the snapshot's position meets the RENAME and loads the
            # table under its new name.
            log.warning(
                "task %s: %s was renamed or dropped during the full load",
                self.task.name,
                schema.table,
            )
            progress.done = True
            self._save_state(force=True)

    def _load_table(
        self, conn: Connection, schema: TableSchema, progress: TableProgress, at: BinlogPosition
    ) -> None:
        progress.started_ms = progress.started_ms or int(time.time() * 1000)
        last_key = snapshot.decode_key(progress.last_key) if progress.last_key else None
        chunks = snapshot.read_table(
            conn, schema, self.task.topic_prefix, at, self.task.source.snapshot_fetch_rows, last_key
        )
        for events, key in chunks:
            for event in events:
                self.writer.write(event)
            progress.rows += len(events)
            progress.last_key = snapshot.encode_key(key)
            if self._state_due():
                self.writer.flush()  # the key is saved only once Kafka has its rows
                self._save_state(force=True)
            if self.stop.is_set():
                self.writer.flush()
                self._save_state(force=True)
                return
        self.writer.flush()
        progress.done = True
        progress.finished_ms = int(time.time() * 1000)
        self._save_state(force=True)
        log.info("task %s: snapshot of %s: %d rows", self.task.name, schema.table, progress.rows)

    # --- streaming ----------------------------------------------------------------------

    def _stream(self, start: BinlogPosition) -> None:
        server_id = self.task.source.server_id or catalog.default_server_id(self.task.name)
        session = BinlogSession(
            self.task, self.flavor, self.conn, self.writer, set(self.tables), server_id
        )
        # Topics exist from the start, even for tables that stay idle. Schemas wait for each
        # table's first TableMapEvent: the catalog's shape now may be newer than the events
        # read first, and the registry refuses a version that goes back in time.
        topics = [table_topic(self.task.topic_prefix, t) for t in self.tables]
        self.writer.ensure_topics(topics)
        # What the binlog sends again from the saved position and Kafka already holds
        # (a crash after Kafka's acknowledgement, before the save) is skipped.
        binlog_end = file_number(flavor.current_position(self.conn, self.flavor).file)
        self.writer.resume = load_resume_filter(
            self.task, self.writer.serde, topics, stream_position, binlog_end
        )
        self._flushed = self.writer.produced  # the full load before this was flushed
        session.open(start)
        log.info("task %s: streaming the binlog from %s", self.task.name, start.describe())
        last_ack = time.monotonic()
        try:
            while not self.stop.is_set():
                written, heartbeat = session.step()
                self.state.events_streamed += written
                due = time.monotonic() - last_ack >= self.task.source.ack_interval_s
                if due or heartbeat:
                    last_ack = time.monotonic()
                    self._ack(session, force_save=heartbeat)
            self._ack(session, force_save=True)
        finally:
            session.close()

    def _ack(self, session: BinlogSession, force_save: bool) -> None:
        """Flush Kafka, then make the last transaction end seen the saved position."""
        pending = session.committed
        if pending is not None and pending != BinlogPosition.from_dict(self.state.binlog):
            streamed = self.writer.produced != self._flushed
            self.writer.flush()
            self._flushed = self.writer.produced
            if streamed:
                crash_point(in_tx=False)
            self._acknowledge(pending)
            self._save_state()
        if force_save:
            self._save_state(force=True)

    # --- progress -----------------------------------------------------------------------

    def _acknowledge(self, position: BinlogPosition) -> None:
        self.state.binlog = position.to_dict()
        self.state.acked_position = position.describe()

    def _state_due(self) -> bool:
        return time.monotonic() - self._last_save >= _STATE_SAVE_INTERVAL_S

    def _save_state(self, force: bool = False) -> None:
        if force or self._state_due():
            # Periodic saves do not wait for Kafka (as on PostgreSQL): one that a crash loses
            # only makes the next run resume earlier, and the resume filter skips what
            # Kafka already holds.
            self.store.save(self.state, wait=force)
            self._last_save = time.monotonic()


def run_mysql_producer(task: TaskConfig, stop: threading.Event) -> None:
    """Run the task's MySQL/MariaDB producer until `stop` is set (or the full load ends)."""
    MysqlProducer(task, stop).run()
