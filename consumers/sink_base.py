"""The apply flow both target sinks share (postgres_sink.py, sql_sink.py): the connection held
across batches, positions checked against what the sink expects, tables prepared or stopped
alone, refused records isolated and handed on before the commit, and the one-line errors
naming the task, the table and the target. Each sink supplies its dialect's statements."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from typing import ClassVar, Generic, NoReturn, TypeVar

from sqlalchemy import Connection, Engine

from consumers.batch import CollapsedBatch, TableChanges
from consumers.errors import PositionConflict, TargetError, is_transient
from consumers.offsets import Partition, StoredOffset
from consumers.outcome import ApplyOutcome, RecordRefused, Rejected, RejectHandler, without_stopped
from consumers.stopped_tables import create_stopped_table, read_stopped, write_stopped
from consumers.target import safe_target_url
from consumers.truncates import create_truncates_table
from headwater.config import TaskConfig
from schemas.tables import TableId, TableSchema

log = logging.getLogger(__name__)

C = TypeVar("C")
"""What the dialect's statements run on (a psycopg or a SQLAlchemy connection)."""


def check_positions(
    stored: Mapping[Partition, StoredOffset],
    positions: Iterable[Partition],
    expected: Mapping[Partition, int | None],
) -> None:
    """Raise PositionConflict if the target stores another next offset than `expected`."""
    moved = [
        p
        for p in sorted(positions)
        if (stored[p].next_offset if p in stored else None) != expected.get(p)
    ]
    if moved:
        raise PositionConflict(moved)


class SinkBase(ABC, Generic[C]):
    """A target of one task on one connection held across batches; subclasses say how a
    batch's transaction runs and what each statement is."""

    db_error: ClassVar[type[Exception]]
    """The driver's error class: a table failing with it is stopped, not the sink."""

    def __init__(self, task: TaskConfig, engine: Engine) -> None:
        self.task = task
        self._engine = engine
        self._conn: Connection | None = None
        self._stopped: dict[str, str] | None = None  # target table -> reason, as recorded
        self.rows_applied = 0

    # --- what a dialect supplies ------------------------------------------------------------

    @abstractmethod
    def _set_up(self, conn: Connection) -> None:
        """Run once in a new connection's first transaction (the offsets table)."""

    @abstractmethod
    def _forget(self) -> None:
        """Drop what is known about the connection being closed."""

    @abstractmethod
    def _read_offsets(
        self, conn: Connection, partitions: Collection[Partition]
    ) -> dict[Partition, StoredOffset]: ...

    @abstractmethod
    def _apply_batch(
        self,
        batch: CollapsedBatch,
        expected: Mapping[Partition, int | None],
        outcome: ApplyOutcome,
        on_rejected: RejectHandler | None,
    ) -> None:
        """Apply `batch` and store its positions in one transaction, filling `outcome`."""

    @abstractmethod
    def _target_name(self, table: TableId) -> str:
        """How the table a source table lands in is named in messages."""

    @abstractmethod
    def _ensure_table(self, conn: C, schema: TableSchema) -> None:
        """Create or widen the target table, in a transaction or savepoint of its own."""

    @abstractmethod
    def _apply_table(self, conn: C, changes: TableChanges) -> list[Rejected]: ...

    @abstractmethod
    def _one_line(self, exc: Exception) -> str:
        """The driver's error message, on one line."""

    # --- the shared flow --------------------------------------------------------------------

    def close(self) -> None:
        self._reset()
        self._engine.dispose()

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self._engine.connect()
            with conn.begin():
                self._set_up(conn)
                create_truncates_table(conn)
                create_stopped_table(conn)
            self._conn = conn
        return self._conn

    def _reset(self) -> None:
        """Drop the connection and what is known about it."""
        self._forget()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()
                conn.close()
            except Exception as exc:  # the connection may already be gone
                log.debug("closing the target connection failed: %s", exc)

    def stored_offsets(self, partitions: Collection[Partition]) -> dict[Partition, StoredOffset]:
        """The offsets stored in the target for `partitions` of this task."""
        try:
            conn = self._connection()
            with conn.begin():
                return self._read_offsets(conn, partitions)
        except BaseException:
            self._reset()
            raise

    def apply(
        self,
        batch: CollapsedBatch,
        expected: Mapping[Partition, int | None],
        on_rejected: RejectHandler | None = None,
    ) -> ApplyOutcome:
        """Apply `batch` and store its positions in one transaction. `expected` holds the
        next offset this sink believes the target stores for each partition (None: none);
        if another sink moved one, raise PositionConflict and apply nothing. Refused
        records go to `on_rejected` before the commit."""
        outcome = ApplyOutcome()
        try:
            self._apply_batch(batch, expected, outcome, on_rejected)
        except BaseException:
            self._reset()
            raise
        self.rows_applied += sum(
            len(t.changes) + len(t.rows) + sum(c.upserts + c.deletes for c in t.copied)
            for t in batch.tables.values()
        )
        stopped = {self._target_name(t): reason for t, reason in outcome.stopped.items()}
        self.note_stopped(stopped, [self._target_name(t) for t in batch.tables])
        return outcome

    def prepare_tables(self, schemas: Collection[TableSchema]) -> None:
        """Create (or widen) the target tables of `schemas` before any of their rows arrive,
        so a table that is empty at the source exists at the target too. A table the sink
        cannot take is stopped as it would be on its first batch."""
        batch = CollapsedBatch(tables={s.table: TableChanges(s) for s in schemas})
        self.apply(batch, expected={})

    def note_stopped(self, stopped: Mapping[str, str], applied: Collection[str] = ()) -> None:
        """Keep the target's record of stopped tables (consumers/stopped_tables.py) current:
        `stopped` target tables with their reason, `applied` ones no longer stopped. Best
        effort: the batch is committed already, and status is all that depends on it."""
        try:
            conn = self._connection()
            if self._stopped is None:
                with conn.begin():
                    self._stopped = {
                        k: v.reason for k, v in read_stopped(conn, self.task.name).items()
                    }
            known = self._stopped
            new = {name: why for name, why in stopped.items() if known.get(name) != why}
            resumed = [name for name in applied if name in known and name not in stopped]
            if new or resumed:
                with conn.begin():
                    write_stopped(conn, self.task.name, new, resumed)
                known.update(new)
                for name in resumed:
                    known.pop(name, None)
        except Exception as exc:
            log.warning("task %s: recording stopped tables failed: %s", self.task.name, exc)
            self._reset()

    def _prepare_tables(self, conn: C, batch: CollapsedBatch, outcome: ApplyOutcome) -> None:
        """Prepare every table of `batch`; the positions of stopped tables are not stored."""
        for table in sorted(batch.tables):
            self._prepare(conn, batch.tables[table].schema, outcome)
        outcome.stored = without_stopped(batch, outcome.stopped)

    def _prepare(self, conn: C, schema: TableSchema, outcome: ApplyOutcome) -> None:
        """Make the table ready; a table the sink cannot take is stopped, the rest go on."""
        try:
            # A keyless table (no primary key) gets a target table without one and is
            # applied in order (consumers/keyless.py).
            self._ensure_table(conn, schema)
        except TargetError as exc:
            log.error("%s; table stopped, the other tables go on", exc)
            outcome.stopped[schema.table] = str(exc)
        except self.db_error as exc:
            if is_transient(exc):
                raise
            message = (
                f"task {self.task.name}: cannot prepare target table "
                f"{self._target_name(schema.table)} in "
                f"{safe_target_url(self.task)}: {self._one_line(exc)}"
            )
            log.error("%s; table stopped, the other tables go on", message)
            outcome.stopped[schema.table] = message

    def _apply_tables(
        self,
        conn: C,
        batch: CollapsedBatch,
        outcome: ApplyOutcome,
        on_rejected: RejectHandler | None,
    ) -> None:
        """Apply the tables not stopped; hand the refused records on."""
        for table in sorted(batch.tables):
            if table not in outcome.stopped:
                outcome.rejected += self._apply_table(conn, batch.tables[table])
        if outcome.rejected and on_rejected is not None:
            on_rejected(outcome.rejected)

    def _apply_failed(self, exc: Exception, target: str, refused: bool) -> NoReturn:
        """Raise what a table's failed apply means: `exc` itself if transient, else
        RecordRefused (`refused`) or TargetError naming the task, table and target."""
        if is_transient(exc):
            raise exc
        message = (
            f"task {self.task.name}: cannot apply changes to {target} in "
            f"{safe_target_url(self.task)}: {self._one_line(exc)}"
        )
        if refused:
            raise RecordRefused(message, table=target) from exc
        raise TargetError(message, task=self.task.name, table=target) from exc
