"""The producer's side of following tables by OID rather than by name: a table renamed
while the task was stopped (its saved OID has another name now), a rename met in the
stream (RelationTracker's moves), and a table renamed (or created) into the selection that
a table-list publication does not stream yet (found by polling the catalog, then added).

In every case the name a table left is emptied in the target (a `t` event), and a name a
table came to is emptied and loaded again by an incremental snapshot while the stream runs,
so the target ends with the source's rows under the source's names."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import psycopg

from headwater.config import TableSelection, TaskConfig
from producers.event_writer import EventWriter
from producers.postgres import catalog, oids
from producers.postgres.incremental import IncrementalSnapshot
from producers.postgres.pgoutput import LogicalMessage, Relation
from producers.postgres.relations import Known, TableMove, truncate_event
from producers.task_state import TaskState
from schemas.tables import TableId, TableSchema

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 5.0
RENAME_PREFIX = "headwater.rename."

Conn = catalog.Conn
RequestLoad = Callable[[TableId, int], None]


class Selected:
    """The task's include/exclude patterns as a container of table names. Partitions are
    never selected themselves (their partitioned table is): pgoutput sends a partition's
    Relation message too, beside its root's, when the publication publishes via the root."""

    def __init__(
        self, selection: TableSelection, is_partition: Callable[[TableId], bool] | None = None
    ) -> None:
        self.selection = selection
        self.is_partition = is_partition
        self._partitions: dict[TableId, bool] = {}

    def __contains__(self, table: object) -> bool:
        if not isinstance(table, TableId) or not self.selection.selects(table):
            return False
        if self.is_partition is None:
            return True
        if table not in self._partitions:
            self._partitions[table] = self.is_partition(table)
        return not self._partitions[table]


class TableFollower:
    """Keeps the producer's tables, progress records and incremental loads in step with the
    names the source's tables have. `known` (by OID) is shared with RelationTracker."""

    def __init__(
        self,
        task: TaskConfig,
        db: str,
        writer: EventWriter,
        state: TaskState,
        incremental: IncrementalSnapshot,
        tables: list[TableId],
        request_load: RequestLoad,
    ) -> None:
        self.task = task
        self.db = db
        self.writer = writer
        self.state = state
        self.incremental = incremental
        self.tables = tables
        self.request_load = request_load
        self.known: dict[int, Known] = {}
        self._next_poll = 0.0
        self._warned: set[TableId] = set()
        self._gone: set[int] = set()  # OIDs of followed tables found dropped
        self._noticed: dict[int, TableId] = {}  # rename notices written, not yet streamed

    def start(self, conn: Conn) -> None:
        """Follow the selected tables by the OIDs the catalog gives them now (before the
        slot and its full load: a table renamed after that is a rename the stream shows);
        saved with their progress, for `renamed_while_stopped` at the next start."""
        # The position first: a rename committed before it shows in the names read next.
        since = oids.current_lsn(conn)
        self.known.clear()
        for oid, table in oids.table_oids(conn, self.tables).items():
            self.known[oid] = Known(table, since)
        self.note_oids()

    def note_oids(self) -> None:
        """Record each followed table's OID with its progress (progress made anew, by a
        full load or a table loaded again, starts without one)."""
        for oid, known in self.known.items():
            progress = self.state.tables.get(str(known.name))
            if progress is not None:
                progress.oid = oid

    def oids_by_name(self) -> dict[str, int]:
        """The followed tables' OIDs by their names as followed."""
        return {str(known.name): oid for oid, known in self.known.items()}

    def renamed_while_stopped(self, conn: Conn, types: catalog.TypeResolver, lsn: int) -> None:
        """Tables the last run followed that have another name now: empty the old name, and
        the new one when selected, whose progress is forgotten so that it is loaded as a
        newly included table. (A dropped table's rows stay, as while streaming.)"""
        for name, progress in list(self.state.tables.items()):
            if not progress.oid or name not in self.state.tables:
                continue
            now = oids.table_name(conn, progress.oid)
            old = TableId.parse(name)
            if now is None or now == old:
                continue
            log.info(
                "task %s: %s was renamed to %s while the task was stopped", self.task.name, old, now
            )
            del self.state.tables[name]
            self._empty(conn, types, old, now, lsn)
            if now in Selected(self.task.tables):
                self.state.tables.pop(str(now), None)
                self._empty(conn, types, now, now, lsn)

    def on_move(self, move: TableMove) -> None:
        """A rename (or an arrival) the stream showed: stop loading the old name, load the
        new one."""
        if move.old is not None:
            went = move.new or "a name the task does not select"
            log.info("task %s: %s renamed to %s", self.task.name, move.old, went)
            if move.old in self.tables:
                self.tables.remove(move.old)
            self.state.tables.pop(str(move.old), None)
            self.incremental.forget(move.old)
        if move.new is not None:
            if move.new not in self.tables:
                self.tables.append(move.new)
            log.info("task %s: loading %s (oid %d) again", self.task.name, move.new, move.oid)
            self.request_load(move.new, move.oid)

    def poll_due(self) -> bool:
        """Whether the next `poll` looks at the catalog."""
        return time.monotonic() >= self._next_poll

    def poll(self, conn: Conn, types: catalog.TypeResolver, lsn: int) -> None:
        """Every few seconds: selected tables the publication lacks are added to it, emptied
        in the target and loaded. Changes after the ALTER PUBLICATION are streamed; the
        incremental load's watermarks come after it, so none fall between."""
        if time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + POLL_INTERVAL_S
        self._notice_renames(conn)
        publication = self.task.publication
        for oid, table in oids.unpublished_tables(conn, publication, self.task.tables):
            if not catalog.table_key(conn, table):
                self._warn_once(table, "it has no primary key: add one to have it loaded")
                continue
            try:
                catalog.add_to_publication(conn, publication, table)
            except psycopg.errors.InsufficientPrivilege:
                self._warn_once(
                    table,
                    f"publication {publication} is not ours: ALTER PUBLICATION {publication} "
                    "ADD TABLE it, or restart the task",
                )
                continue
            log.info("task %s: %s came into the selection; following it", self.task.name, table)
            self._empty(conn, types, table, table, lsn)
            self.known[oid] = Known(table, lsn)
            self.on_move(TableMove(oid, None, table))

    def _notice_renames(self, conn: Conn) -> None:
        """Followed tables whose name changed while no change of theirs was streamed since
        (pgoutput sends the new name only before the table's next change): a logical
        message written now tells the stream, after the rename, where the table went."""
        names = oids.table_names(conn, list(self.known))
        for oid, known in self.known.items():
            now = names.get(oid)
            if now is None:
                self._dropped(oid, known.name)
                continue
            if now == known.name or self._noticed.get(oid) == now:
                continue
            self._noticed[oid] = now
            payload = json.dumps({"oid": oid, "schema": now.schema, "name": now.name})
            conn.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)",
                (RENAME_PREFIX + self.task.name, payload),
            )

    def noticed_relation(self, conn: Conn, msg: LogicalMessage) -> Relation | None:
        """For a rename notice of this task that the stream has not shown otherwise (no
        Relation message under the new name came first): the Relation message it stands
        for, with the table's shape as the catalog has it now."""
        if msg.prefix != RENAME_PREFIX + self.task.name:
            return None
        data = json.loads(msg.content)
        oid, table = int(data["oid"]), TableId(data["schema"], data["name"])
        self._noticed.pop(oid, None)
        known = self.known.get(oid)
        if known is None or known.name == table:
            return None
        return oids.relation_now(conn, oid, table)

    def _empty(
        self, conn: Conn, types: catalog.TypeResolver, name: TableId, shape_of: TableId, lsn: int
    ) -> None:
        """A truncate of `name` in the target, its schema the shape `shape_of` has now (a
        name a table left may have no registered schema in this run)."""
        shape = catalog.describe_table(conn, shape_of, types)
        self.writer.register_table(TableSchema(name, shape.columns, shape.primary_key))
        self.writer.write(truncate_event(self.task.topic_prefix, self.db, name, lsn))

    def _dropped(self, oid: int, table: TableId) -> None:
        """Say once that a followed table is gone: sinks never drop target tables, so its
        rows stay there; a table created under the name later is loaded as a new one."""
        if oid in self._gone:
            return
        self._gone.add(oid)
        log.warning(
            "task %s: %s (oid %d) was dropped at the source; the target keeps its rows "
            "(drop it there by hand if it should go)",
            self.task.name,
            table,
            oid,
        )

    def _warn_once(self, table: TableId, why: str) -> None:
        if table not in self._warned:
            self._warned.add(table)
            log.warning("task %s: %s is selected but not followed: %s", self.task.name, table, why)
