"""The binlog side of the producer: a pymysqlreplication reader resumed at a saved position,
the table shapes its TableMapEvents announce, and the transaction boundaries (XidEvent, or a
DDL statement) that are the only positions worth saving.

Column names come from the TableMapEvent's optional metadata (`binlog_row_metadata=FULL`),
never from INFORMATION_SCHEMA, which describes the table as it is now, not as it was when
the event was written. Which tables are followed is decided by the task's patterns on the
names the events carry, so a table renamed (or created) into the selection is followed and
one renamed out of it is not; see `_follow_renames` for what a rename does to the target.
"""

from __future__ import annotations

import logging
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from headwater.config import TaskConfig
from producers.errors import SourceError
from producers.event_writer import EventWriter
from producers.mysql import catalog, snapshot
from producers.mysql.changes import RowsContext, row_events, truncate_event, truncated_table
from producers.mysql.connection import Connection, connect, reader_settings
from producers.mysql.flavor import Flavor, GtidTracker, reader_resume_args
from producers.mysql.position import BinlogPosition
from producers.mysql.renames import (
    RenameEffect,
    created_table,
    dropped_tables,
    rename_effect,
    renamed_tables,
)
from producers.mysql.table_map import Signature, schema_from_table_map, signature
from schemas.envelope import Op
from schemas.tables import TableId, TableSchema

log = logging.getLogger(__name__)

_EVENTS = [
    WriteRowsEvent,
    UpdateRowsEvent,
    DeleteRowsEvent,
    TableMapEvent,
    XidEvent,
    GtidEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    HeartbeatLogEvent,
]

_OPS: dict[type[Any], Op] = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}

# ER_MASTER_FATAL_ERROR_READING_BINLOG: the file or GTID asked for is no longer there.
_BINLOG_GONE = 1236


def purged_error(task: TaskConfig, position: BinlogPosition, detail: str) -> SourceError:
    return SourceError(
        f"the source no longer has the binlog at {position.describe()} ({detail}), so changes "
        f"since then are lost to task {task.name}; a new snapshot is needed: run "
        "`headwater cleanup <task file>` and then `headwater run <task file>`"
    )


def check_not_purged(conn: Connection, task: TaskConfig, position: BinlogPosition) -> None:
    """Raise the purged-binlog error before reading when the saved file is gone."""
    with conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        files = {str(r[0]) for r in cur.fetchall()}
    if position.file and position.file not in files:
        raise purged_error(task, position, f"{position.file} was purged")


class BinlogSession:
    """Reads the binlog and writes the selected tables' changes, one event per `step`."""

    def __init__(
        self,
        task: TaskConfig,
        flavor: Flavor,
        conn: Connection,
        writer: EventWriter,
        selected: set[TableId],
        server_id: int,
    ) -> None:
        self.task = task
        self.flavor = flavor
        self.conn = conn
        self.writer = writer
        self.selected = selected  # the tables the full load put in the target
        self.server_id = server_id
        self.committed: BinlogPosition | None = None  # end of the last whole transaction
        self._reader: BinLogStreamReader | None = None
        self._gtids = GtidTracker(flavor, "")
        self._gtid: str | None = None
        self._in_tx = False
        self._shapes: dict[Signature, TableSchema] = {}
        self._by_table_id: dict[int, TableSchema] = {}
        self._latest: dict[TableId, TableSchema] = {}
        self._start: BinlogPosition | None = None

    def open(self, start: BinlogPosition) -> None:
        check_not_purged(self.conn, self.task, start)
        self._start = start
        self._gtids = GtidTracker(self.flavor, start.gtid)
        by_gtid = self.task.source.resume_by == "gtid"
        self._reader = BinLogStreamReader(
            connection_settings=reader_settings(self.task.source.url),
            server_id=self.server_id,
            blocking=True,
            only_events=_EVENTS,
            only_schemas=catalog.selected_databases(self.task.tables),
            slave_heartbeat=self.task.source.heartbeat_s,
            enable_logging=False,
            **reader_resume_args(self.flavor, start, by_gtid),
        )

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _fetch(self) -> Any:
        assert self._reader is not None and self._start is not None
        try:
            return self._reader.fetchone()
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == _BINLOG_GONE:
                raise purged_error(self.task, self._start, str(exc.args[-1])) from None
            raise

    def _boundary(self) -> None:
        assert self._reader is not None
        self._in_tx = False
        self.committed = BinlogPosition(
            str(self._reader.log_file), int(self._reader.log_pos), self._gtids.state()
        )

    def step(self) -> tuple[int, bool]:
        """Read one event: (change events written, whether it was a heartbeat)."""
        event = self._fetch()
        if event is None:
            return 0, False
        if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
            return self._rows(event), False
        if isinstance(event, TableMapEvent):
            self._table_map(event)
        elif isinstance(event, GtidEvent | MariadbGtidEvent):
            self._gtid = str(event.gtid)
            self._gtids.add(self._gtid)
            self._in_tx = True
        elif isinstance(event, XidEvent):
            self._boundary()
        elif isinstance(event, QueryEvent):
            query = event.query.strip() if isinstance(event.query, str) else ""
            if query.upper() != "BEGIN":  # DDL, or COMMIT of a non-transactional table
                written = self._truncate(event, query)
                self._boundary()
                written += self._follow_drop_or_create(event, query)
                return written + self._follow_renames(event, query), False
        elif isinstance(event, HeartbeatLogEvent):
            if not self._in_tx:
                self._boundary()  # idle: the server has sent us everything up to here
            return 0, True
        return 0, False

    def _follows(self, table: TableId) -> bool:
        return self.task.tables.selects(table)

    def _table_map(self, event: Any) -> None:
        table = TableId(event.schema, event.table)
        if not self._follows(table):
            return
        key = signature(event)
        schema = self._shapes.get(key)
        if schema is None:
            schema = schema_from_table_map(event, self._catalog_schema(table))
            _require_key(schema)
            self._shapes[key] = schema
            self.writer.register_table(schema)
        self._by_table_id[event.table_id] = schema
        self._latest[table] = schema

    def _truncate(self, event: Any, query: str) -> int:
        table = truncated_table(query, _session_db(event))
        if table is None or not self._follows(table):
            return 0
        schema = self._latest.get(table) or self._catalog_schema(table)
        if schema is None:
            return 0
        self.writer.register_table(schema)
        self.writer.write(truncate_event(schema, self._context(event)))
        return 1

    def _context(self, event: Any) -> RowsContext:
        assert self._reader is not None
        return RowsContext(
            source_name=self.task.topic_prefix,
            file=str(self._reader.log_file),
            pos=int(event.packet.log_pos),
            gtid=self._gtid,
            server_id=int(event.packet.server_id),
            ts_ms=int(event.timestamp) * 1000,
        )

    def _catalog_schema(self, table: TableId) -> TableSchema | None:
        try:
            return catalog.describe_table(self.conn, table)
        except pymysql.err.MySQLError:
            return None  # dropped since: the event alone describes it

    def _rows(self, event: Any) -> int:
        schema = self._by_table_id.get(event.table_id)
        if schema is None:
            return 0
        events = row_events(_OPS[type(event)], schema, event.rows, self._context(event))
        for change in events:
            self.writer.write(change)
        return len(events)

    # --- DROP TABLE, CREATE TABLE ------------------------------------------------------

    def _follow_drop_or_create(self, event: Any, query: str) -> int:
        """A dropped followed table keeps its target rows (sinks never drop tables, as on
        PostgreSQL), with a warning; a followed name that had rows and gets a new table is
        emptied first (a `t` event), so the target holds the new table's rows only."""
        db = _session_db(event)
        for dropped in dropped_tables(query, db):
            if self._follows(dropped):
                log.warning(
                    "task %s: %s was dropped at the source; the target keeps its rows "
                    "(drop it there by hand if it should go)",
                    self.task.name,
                    dropped,
                )
        table = created_table(query, db)
        if table is None or not self._follows(table):
            return 0
        if table not in self._latest and table not in self.selected:
            return 0  # the target never had rows under this name
        schema = self._latest.get(table) or self._catalog_schema(table)
        if schema is None or not schema.columns:
            return 0
        self.writer.register_table(schema)
        self.writer.write(truncate_event(schema, self._context(event)))
        log.info("task %s: %s created anew: its target rows are removed", self.task.name, table)
        return 1

    # --- RENAME TABLE, ALTER TABLE ... RENAME ------------------------------------------

    def _follow_renames(self, event: Any, query: str) -> int:
        """Make the target follow the renames of a statement (already at a boundary).

        Events of a renamed table go to the topic of its new name, as Debezium does; and so
        that the target ends with the right rows under the right table, a followed name
        whose table moved away is emptied (a `t` event) and a followed name that a table
        moved into is emptied and loaded again from the table as it is now, before the
        events after the rename. Those events replay changes the load may already show;
        each is a full row image, so the target ends equal to the source.
        """
        effect = rename_effect(renamed_tables(query, _session_db(event)))
        filled = [(new, was) for new, was in effect.filled if self._follows(new)]
        written = 0
        ctx = self._context(event)
        for name in effect.vacated:
            written += self._empty_vacated(name, effect, ctx)
        if not filled:
            return written
        self.close()  # the server would drop a reader left unread during a long load
        for new, was in filled:
            written += self._reload(new, was, ctx)
        assert self.committed is not None
        self.open(self.committed)
        return written

    def _empty_vacated(self, name: TableId, effect: RenameEffect, ctx: RowsContext) -> int:
        if not self._follows(name) or (name not in self._latest and name not in self.selected):
            return 0  # the target never had rows under this name
        schema = self._latest.pop(name, None)
        if schema is None:  # its shape as the catalog shows it under the name it went to
            went = next((new for new, was in effect.filled if was == name), None)
            moved = self._catalog_schema(went) if went is not None else None
            if moved is None or not moved.columns:
                log.warning("task %s: %s was renamed, its target rows stay", self.task.name, name)
                return 0
            schema = TableSchema(name, moved.columns, moved.primary_key, moved.engine)
        self.writer.register_table(schema)
        self.writer.write(truncate_event(schema, ctx))
        log.info("task %s: %s renamed away: its target rows are removed", self.task.name, name)
        return 1

    def _reload(self, table: TableId, was: TableId, ctx: RowsContext) -> int:
        schema = self._catalog_schema(table)
        if schema is None or not schema.columns:
            # Renamed again or dropped since: the events that follow tell the rest.
            log.warning("task %s: %s (renamed from %s) is gone", self.task.name, table, was)
            return 0
        _require_key(schema)
        assert self.committed is not None
        self.writer.register_table(schema)
        self.writer.write(truncate_event(schema, ctx))
        written = 1
        with connect(self.task.source.url) as conn:
            snapshot.begin_read(conn)
            chunks = snapshot.read_table(
                conn,
                schema,
                self.task.topic_prefix,
                self.committed,
                self.task.source.snapshot_fetch_rows,
                None,
            )
            for events, _key in chunks:
                for change in events:
                    self.writer.write(change)
                written += len(events)
            conn.rollback()
        self._latest[table] = schema
        log.info(
            "task %s: %s renamed to %s: loaded %d rows under the new name",
            self.task.name,
            was,
            table,
            written - 1,
        )
        return written


def _session_db(event: Any) -> str:
    """The default database of the session that wrote a QueryEvent."""
    name = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
    return str(name or "")


def _require_key(schema: TableSchema) -> None:
    if not schema.primary_key:
        raise SourceError(
            f"table {schema.table} has no primary key: add one, or exclude it in "
            "`tables.exclude` (it came into the selection while streaming)"
        )
