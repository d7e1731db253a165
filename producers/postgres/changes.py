"""Turns decoded pgoutput messages into ChangeEvents. Pure apart from `describe`, the
injected function that gives a Relation message its TableSchema (types, nullability).
Relation messages (and so renames) are `relations.RelationTracker`'s."""

from __future__ import annotations

import sys
from collections.abc import Callable, Container, MutableMapping
from dataclasses import dataclass

from producers.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    PgOutputMessage,
    Relation,
    Truncate,
    TupleValue,
    Update,
)
from producers.postgres.relations import Known, RelationTracker
from schemas.envelope import ChangeEvent, Op, Row, SourceInfo
from schemas.pg_types import UnrepresentableValue, parse_pg_text
from schemas.tables import TableId, TableSchema

Describe = Callable[[Relation], TableSchema]

HandedOut = tuple[int, int | None]
"""How far events were handed out: the commit LSN of the latest transaction, and how many of
its events (None: all of them)."""


@dataclass
class _Transaction:
    xid: int
    commit_ts_ms: int
    final_lsn: int = 0
    skip: int = 0  # events handed out already, before a reconnect sent the transaction again
    seen: int = 0


class ChangeBuilder:
    """Keeps the relation cache and the open transaction; yields events per message.

    After a reconnect the server sends again every transaction after the slot's confirmed
    position. Given how far an earlier builder of this process got (`handed_out`), this one
    skips the events already handed out, so a dropped connection does not repeat them in
    Kafka: keyed tables would absorb a repeat, a keyless table would get a row twice.

    `known`: see RelationTracker; the tables that came into the task or moved in it are
    listed in `moves` for the producer, which clears it."""

    def __init__(
        self,
        source_name: str,
        db: str,
        selected: Container[TableId],
        describe: Describe,
        handed_out: HandedOut = (0, 0),
        known: MutableMapping[int, Known] | None = None,
    ) -> None:
        self.source_name = source_name
        self.db = db
        self.selected = selected
        self.describe = describe
        self.tracker = RelationTracker(source_name, db, selected, describe, known)
        self.relations = self.tracker.relations
        self.moves = self.tracker.moves
        self.tx: _Transaction | None = None
        self.handed_out = handed_out

    def on_message(self, msg: PgOutputMessage, wal_start: int) -> list[ChangeEvent]:
        """The events `msg` stands for (none for Begin, Commit, Relation...), less those
        handed out before a reconnect."""
        if isinstance(msg, Relation):
            # Not counted: a fresh builder replaying a transaction after a reconnect knows
            # relations the first one learnt in it, so these events may differ; repeating
            # a truncate is harmless (the sinks pass over one they executed). Relation
            # messages come with no position of their own (0/0): the commit's stands in.
            return self.tracker.on_relation(msg, self.tx.final_lsn if self.tx else wal_start)
        events = self._message_events(msg, wal_start)
        tx = self.tx
        if not events or tx is None:
            return events
        first = tx.seen
        tx.seen += len(events)
        if tx.seen > tx.skip:
            self.handed_out = (tx.final_lsn, tx.seen)
        return events[max(0, tx.skip - first) :]

    def count_native_event(self) -> None:
        """Count one event of the open transaction that the native path wrote
        (producers/postgres/native_stream.py) as `on_message` counts its own. That path
        runs only once the events repeated after a reconnect are skipped (seen >= skip)."""
        tx = self.tx
        assert tx is not None and tx.seen >= tx.skip
        tx.seen += 1
        self.handed_out = (tx.final_lsn, tx.seen)

    def native_state(self) -> tuple[tuple[int, int, int, int] | None, tuple[int, int]]:
        """The open transaction (xid, commit time, final LSN, events seen) and how far events
        were handed out (count -1: all), for the native frame loop
        (producers/postgres/native_loop.py). It only runs where no repeated event is left
        to skip."""
        tx = self.tx
        lsn, count = self.handed_out
        handed = (lsn, -1 if count is None else count)
        if tx is None:
            return None, handed
        assert tx.seen >= tx.skip
        return (tx.xid, tx.commit_ts_ms, tx.final_lsn, tx.seen), handed

    def adopt_native_state(
        self, tx: tuple[int, int, int, int] | None, handed: tuple[int, int]
    ) -> None:
        """Take the state the native frame loop left (see `native_state`)."""
        if tx is None:
            self.tx = None
        else:
            xid, ts_ms, final_lsn, seen = tx
            current = self.tx
            if current is None or current.final_lsn != final_lsn:
                current = self.tx = _Transaction(xid, ts_ms, final_lsn)
            current.seen = seen
        lsn, count = handed
        self.handed_out = (lsn, None if count < 0 else count)

    def _already_handed_out(self, final_lsn: int) -> int:
        lsn, count = self.handed_out
        if final_lsn > lsn:
            return 0
        if final_lsn < lsn or count is None:
            return sys.maxsize
        return count

    def _message_events(self, msg: PgOutputMessage, wal_start: int) -> list[ChangeEvent]:
        if isinstance(msg, Begin):
            skip = self._already_handed_out(msg.final_lsn)
            self.tx = _Transaction(msg.xid, msg.commit_ts_ms, msg.final_lsn, skip)
        elif isinstance(msg, Commit):
            if self.tx is not None and self.tx.final_lsn >= self.handed_out[0]:
                self.handed_out = (self.tx.final_lsn, None)
            self.tx = None
        elif isinstance(msg, Insert):
            return self._row_events("c", msg.relation_oid, wal_start, None, msg.new, False)
        elif isinstance(msg, Update):
            return self._row_events(
                "u", msg.relation_oid, wal_start, msg.old, msg.new, msg.old_is_key_only
            )
        elif isinstance(msg, Delete):
            return self._row_events(
                "d", msg.relation_oid, wal_start, msg.old, None, msg.old_is_key_only
            )
        elif isinstance(msg, Truncate):
            tables = [self.relations[oid] for oid in msg.relation_oids if oid in self.relations]
            return [
                self._event("t", schema, wal_start, None, None, seq=i)
                for i, schema in enumerate(tables)
            ]
        return []

    def _source(self, schema: TableSchema, lsn: int, seq: int) -> SourceInfo:
        tx = self.tx
        return SourceInfo(
            connector="postgresql",
            name=self.source_name,
            db=self.db,
            table=schema.table,
            ts_ms=tx.commit_ts_ms if tx else 0,
            snapshot="false",
            tx_id=tx.xid if tx else None,
            lsn=lsn,
            commit_lsn=tx.final_lsn if tx else None,
            seq=seq,
        )

    def _event(
        self,
        op: Op,
        schema: TableSchema,
        lsn: int,
        before: Row | None,
        after: Row | None,
        unavailable: tuple[str, ...] = (),
        seq: int = 0,
    ) -> ChangeEvent:
        source = self._source(schema, lsn, seq)
        return ChangeEvent(op, source, before, after, source.ts_ms, unavailable)

    def _row_events(
        self,
        op: Op,
        oid: int,
        lsn: int,
        old: tuple[TupleValue, ...] | None,
        new: tuple[TupleValue, ...] | None,
        old_key_only: bool,
    ) -> list[ChangeEvent]:
        schema = self.relations.get(oid)
        if schema is None:  # a table outside the task that shares the publication
            return []
        try:
            return self._events_of(op, schema, lsn, old, new, old_key_only)
        except UnrepresentableValue as exc:
            raise UnrepresentableValue(f"table {schema.table}: {exc}") from None

    def _events_of(
        self,
        op: Op,
        schema: TableSchema,
        lsn: int,
        old: tuple[TupleValue, ...] | None,
        new: tuple[TupleValue, ...] | None,
        old_key_only: bool,
    ) -> list[ChangeEvent]:
        before, before_missing = _row(schema, old, old_key_only) if old is not None else (None, ())
        if new is None:
            return [self._event("d", schema, lsn, before, None)]
        after, unavailable = _row(schema, new, False)
        if unavailable and before is not None and not old_key_only:
            # REPLICA IDENTITY FULL: the old row is whole, so an unchanged TOAST value the
            # new row lacks is the old one (a keyless table's sink needs the whole row).
            after, unavailable = _fill_unchanged(after, unavailable, before, before_missing)
        if old is None:
            return [self._event(op, schema, lsn, None, after, unavailable)]
        if before is not None and _key(schema, before) != _key(schema, after):
            # A primary-key change is a delete of the old row and an insert of the new one,
            # as Debezium does, so each key's events stay in that key's partition.
            return [
                self._event("d", schema, lsn, before, None),
                self._event("c", schema, lsn, None, after, unavailable, seq=1),
            ]
        return [self._event("u", schema, lsn, before, after, unavailable)]


def _fill_unchanged(
    after: Row, unavailable: tuple[str, ...], before: Row, before_missing: tuple[str, ...]
) -> tuple[Row, tuple[str, ...]]:
    filled = {**after, **{c: before[c] for c in unavailable if c not in before_missing}}
    return filled, tuple(c for c in unavailable if c in before_missing)


def _key(schema: TableSchema, row: Row) -> tuple[object, ...]:
    return tuple(row.get(k) for k in schema.primary_key)


def _row(
    schema: TableSchema, values: tuple[TupleValue, ...], key_only: bool
) -> tuple[Row, tuple[str, ...]]:
    row: Row = {}
    unavailable: list[str] = []
    for col, raw in zip(schema.columns, values, strict=False):
        if raw is UNCHANGED:
            unavailable.append(col.name)
            row[col.name] = None
        elif key_only and col.name not in schema.primary_key:
            row[col.name] = None
        else:
            row[col.name] = parse_pg_text(col, raw if isinstance(raw, str) else None)
    return row, tuple(unavailable)
