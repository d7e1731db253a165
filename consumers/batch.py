"""Collapse a batch of change events into the net change per table and primary key, so a sink
writes each row once per batch: last write wins, a delete then an insert is an upsert, an
insert then a delete is a delete, and columns an update did not carry (unchanged TOAST) are
merged from an earlier event of the same key or left untouched in the target.

Pure: no I/O, so the rules are tested against a model of the table (tests/unit/test_batch.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers.keyless import KeylessChangeError, RowChange, row_change
from schemas.envelope import ChangeEvent, Row
from schemas.tables import TableId, TableSchema

RowKey = tuple[Any, ...]
"""The primary-key values of a row, in the order of `TableSchema.primary_key`."""


class BatchError(ValueError):
    """An event that cannot be applied as it is (e.g. an insert without `after`)."""


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One consumed message: its position and, unless it is a tombstone, its decoded event."""

    topic: str
    partition: int
    offset: int
    schema: TableSchema | None = None
    event: ChangeEvent | None = None  # None: a tombstone, only its offset counts


@dataclass(frozen=True, slots=True)
class Upsert:
    """The net write of one row: the values of `columns`; other target columns are kept."""

    row: Row
    columns: frozenset[str]


@dataclass(frozen=True, slots=True)
class CopyRows:
    """Net changes of one partition the native path wrote as text rows `(group, *columns)`
    for the target's staging table: PostgreSQL COPY text (consumers/native_collapse.py) or
    MySQL LOAD DATA text (consumers/native_mysql.py). `deletes` rows carry only the key,
    `upserts` rows every column. PostgreSQL rows of inserts only come without the group
    (`columns` alone), for a COPY straight into the target. PostgreSQL rows may be binary
    COPY instead, written for the target column types `binary` (consumers/native_collapse.py)."""

    columns: tuple[str, ...]
    copy: bytes
    upserts: int
    deletes: int
    inserts_only: bool = False  # every event an insert or a snapshot read
    binary: tuple[str, ...] | None = None


Change = Upsert | None
"""The net change of one key: an upsert, or None for a delete."""

Origin = tuple[str, int, int]
"""Where a net change came from: (topic, partition, offset) of the last event of its key."""


@dataclass(slots=True)
class TableChanges:
    """What a batch does to one table: truncate it first (if `truncated`), then the net
    change of each key. `schema` holds every column seen in the batch, newest shape first."""

    schema: TableSchema
    truncated: bool = False
    changes: dict[RowKey, Change] = field(default_factory=dict)
    origins: dict[RowKey, Origin] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    # A keyless table's changes in offset order, by (sequence number,): nothing to collapse.
    rows: dict[RowKey, RowChange] = field(default_factory=dict)
    # Partitions the native path collapsed already (keys never shared with `changes`: a key
    # lives in one partition, and a topic goes one way or the other as a whole).
    copied: list[CopyRows] = field(default_factory=list)

    def subset(self, keys: list[RowKey], truncated: bool) -> TableChanges:
        """The changes of `keys` only (for isolating a record the target refuses)."""
        return TableChanges(
            self.schema,
            truncated,
            {k: self.changes[k] for k in keys if k in self.changes},
            {k: self.origins[k] for k in keys if k in self.origins},
            self.topics,
            {k: self.rows[k] for k in keys if k in self.rows},
        )

    @property
    def upserts(self) -> dict[RowKey, Upsert]:
        return {k: c for k, c in self.changes.items() if c is not None}

    @property
    def deletes(self) -> list[RowKey]:
        return [k for k, c in self.changes.items() if c is None]


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where a partition stands after the batch: the next offset to read and the source
    commit time of its latest event."""

    next_offset: int
    source_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class HeldTruncate:
    """A truncate's copy on one partition of a topic with several: it is executed once every
    partition reached its copy (consumers/truncates.py), not where it stands in the batch."""

    record: SinkRecord
    partitions: int  # of its topic


@dataclass(slots=True)
class CollapsedBatch:
    """The net effect of a batch, and the positions a sink commits with it."""

    tables: dict[TableId, TableChanges] = field(default_factory=dict)
    positions: dict[tuple[str, int], PartitionPosition] = field(default_factory=dict)
    events: int = 0
    truncates: list[HeldTruncate] = field(default_factory=list)

    @property
    def source_ts_ms(self) -> int | None:
        """The latest source commit time in the batch."""
        stamps = [p.source_ts_ms for p in self.positions.values() if p.source_ts_ms is not None]
        return max(stamps, default=None)


def row_key(row: Row, schema: TableSchema) -> RowKey:
    return tuple(row.get(name) for name in schema.primary_key)


def merge_schemas(older: TableSchema, newer: TableSchema) -> TableSchema:
    """`newer`'s columns, then any column only `older` had (a target never drops one)."""
    if older is newer or older == newer:
        return newer
    known = set(newer.column_names)
    extra = tuple(c for c in older.columns if c.name not in known)
    return TableSchema(newer.table, newer.columns + extra, newer.primary_key, newer.engine)


class _Collapser:
    """Folds events in offset order into a CollapsedBatch."""

    def __init__(self) -> None:
        self.batch = CollapsedBatch()
        # By identity: the records of a batch hold their schema objects while it collapses.
        self._all_columns: dict[int, frozenset[str]] = {}
        self._origin: Origin = ("", 0, 0)

    def add(self, record: SinkRecord) -> None:
        self._advance(record)
        if record.event is None:
            return
        if record.schema is None:
            raise BatchError(f"{record.topic}[{record.partition}]@{record.offset}: no schema")
        self.batch.events += 1
        table = self._table(record.schema)
        table.topics.add(record.topic)
        self._origin = (record.topic, record.partition, record.offset)
        self._apply(table, record.event, record.schema)

    def _advance(self, record: SinkRecord) -> None:
        where = (record.topic, record.partition)
        old = self.batch.positions.get(where)
        ts = record.event.source.ts_ms if record.event is not None else None
        next_offset = record.offset + 1
        if old is not None:
            next_offset = max(next_offset, old.next_offset)
            if ts is None or (old.source_ts_ms is not None and old.source_ts_ms > ts):
                ts = old.source_ts_ms
        self.batch.positions[where] = PartitionPosition(next_offset, ts)

    def _table(self, schema: TableSchema) -> TableChanges:
        changes = self.batch.tables.get(schema.table)
        if changes is None:
            changes = self.batch.tables[schema.table] = TableChanges(schema)
        else:
            changes.schema = merge_schemas(changes.schema, schema)
        return changes

    def _apply(self, table: TableChanges, event: ChangeEvent, schema: TableSchema) -> None:
        if event.op == "t":
            table.truncated = True
            table.changes.clear()
            table.origins.clear()
            table.rows.clear()
        elif not schema.primary_key:  # keyless: kept in order (consumers/keyless.py)
            try:
                table.rows[(len(table.rows),)] = row_change(event, schema, self._origin)
            except KeylessChangeError as exc:
                raise BatchError(str(exc)) from None
        elif event.op == "d":
            if event.before is None:
                raise BatchError(f"delete on {schema.table} without `before`")
            key = row_key(event.before, schema)
            table.changes[key] = None
            table.origins[key] = self._origin
        else:
            self._upsert(table, event, schema)

    def _upsert(self, table: TableChanges, event: ChangeEvent, schema: TableSchema) -> None:
        if event.after is None:
            raise BatchError(f"op {event.op!r} on {schema.table} without `after`")
        key = row_key(event.after, schema)
        if event.op == "u" and event.before is not None:
            old_key = row_key(event.before, schema)
            if old_key != key and None not in old_key:
                # A key change sent as one update: the old row goes, the new one comes.
                table.changes[old_key] = None
                table.origins[old_key] = self._origin
        available = self._columns_of(schema)
        if event.unavailable:
            available = available - set(event.unavailable)
        table.changes[key] = upsert_after(table.changes, key, event.after, available, schema)
        table.origins[key] = self._origin

    def _columns_of(self, schema: TableSchema) -> frozenset[str]:
        names = self._all_columns.get(id(schema))
        if names is None:
            names = self._all_columns[id(schema)] = frozenset(schema.column_names)
        return names


def upsert_after(
    changes: dict[RowKey, Change],
    key: RowKey,
    row: Row,
    available: frozenset[str],
    schema: TableSchema,
) -> Upsert:
    """The net upsert of `key` once `row` (with only `available` columns) is written after
    what the batch already holds for it."""
    values = {name: row.get(name) for name in available}
    if key not in changes:
        return Upsert(values, available)
    earlier = changes[key]
    if earlier is None:
        # Deleted earlier in the batch: the row is new, columns not carried are empty.
        full = {name: values.get(name) for name in schema.column_names}
        return Upsert(full, frozenset(schema.column_names))
    return Upsert({**earlier.row, **values}, earlier.columns | available)


def collapse(records: Iterable[SinkRecord]) -> CollapsedBatch:
    """The net change of `records` (in offset order within each partition)."""
    collapser = _Collapser()
    for record in records:
        collapser.add(record)
    return collapser.batch
