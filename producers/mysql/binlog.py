"""The binlog side of the producer: a pymysqlreplication reader resumed at a saved position,
the table shapes its TableMapEvents announce, and the transaction boundaries (XidEvent, or a
DDL statement) that are the only positions worth saving.

Column names come from the TableMapEvent's optional metadata (`binlog_row_metadata=FULL`),
never from INFORMATION_SCHEMA, which describes the table as it is now, not as it was when
the event was written.
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
from producers.mysql import catalog
from producers.mysql.changes import RowsContext, row_events, truncate_event, truncated_table
from producers.mysql.connection import Connection, reader_settings
from producers.mysql.flavor import Flavor, GtidTracker, reader_resume_args
from producers.mysql.position import BinlogPosition
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
        self.selected = selected
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
            only_schemas=sorted({t.schema for t in self.selected}),
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
                return written, False
        elif isinstance(event, HeartbeatLogEvent):
            if not self._in_tx:
                self._boundary()  # idle: the server has sent us everything up to here
            return 0, True
        return 0, False

    def _table_map(self, event: Any) -> None:
        table = TableId(event.schema, event.table)
        if table not in self.selected:
            return
        key = signature(event)
        schema = self._shapes.get(key)
        if schema is None:
            schema = schema_from_table_map(event, self._catalog_schema(table))
            self._shapes[key] = schema
            self.writer.register_table(schema)
        self._by_table_id[event.table_id] = schema
        self._latest[table] = schema

    def _truncate(self, event: Any, query: str) -> int:
        schema_name = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
        table = truncated_table(query, str(schema_name or ""))
        if table is None or table not in self.selected:
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
