"""The contract between the consume loop and a target dialect: `TargetSink` (one module per
dialect implements it), what applying a batch produced (`ApplyOutcome`: records refused,
tables stopped, positions stored), and how a refused record is found in a failing table
batch: by bisecting it, each half tried in a savepoint, instead of row by row."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from consumers.batch import CollapsedBatch, Origin, PartitionPosition, RowKey, TableChanges
from consumers.offsets import Partition, StoredOffset
from schemas.tables import TableId, TableSchema


@dataclass(frozen=True, slots=True)
class Rejected:
    """A net change the target refused: its table, key, last source event and the reason."""

    table: TableId
    key: RowKey
    origin: Origin | None
    reason: str


@dataclass(slots=True)
class ApplyOutcome:
    """What one applied batch did: refused records (already handed to `on_rejected` before
    the commit), tables stopped with their one-line reason, and the positions stored."""

    rejected: list[Rejected] = field(default_factory=list)
    stopped: dict[TableId, str] = field(default_factory=dict)
    stored: dict[Partition, PartitionPosition] = field(default_factory=dict)


class NativeRefused(Exception):
    """The target refused a row the native path wrote (consumers/native_collapse.py): the
    batch is rolled back and applied again through the Python path, which isolates the
    record (dead-letter topic or a stop naming its key)."""


RejectHandler = Callable[[list[Rejected]], None]
"""Called with the refused records inside the batch's transaction, before its commit, so a
dead-letter record is durable before the offsets past it are."""


class TargetSink(Protocol):
    """A target database of one task, as the consume loop uses it."""

    rows_applied: int

    def stored_offsets(
        self, partitions: Collection[Partition]
    ) -> dict[Partition, StoredOffset]: ...

    def apply(
        self,
        batch: CollapsedBatch,
        expected: Mapping[Partition, int | None],
        on_rejected: RejectHandler | None = None,
    ) -> ApplyOutcome: ...

    def note_stopped(self, stopped: Mapping[str, str], applied: Collection[str] = ()) -> None:
        """Record target tables stopped (with the reason) and those applied again."""
        ...

    def prepare_tables(self, schemas: Collection[TableSchema]) -> None:
        """Create the target tables of `schemas` before their first rows."""
        ...

    def close(self) -> None: ...


class RecordRefused(Exception):
    """A table batch holds a record the target refuses (constraint, value out of range);
    with `target.on_error: stop` the sink stops with it. `table`: the target table."""

    def __init__(self, message: str, table: str = "") -> None:
        super().__init__(message)
        self.table = table


def without_stopped(
    batch: CollapsedBatch, stopped: Mapping[TableId, str]
) -> dict[Partition, PartitionPosition]:
    """The batch's positions, less the partitions of stopped tables (they are not applied,
    so their offsets must not move)."""
    topics = {t for table in stopped if table in batch.tables for t in batch.tables[table].topics}
    return {p: pos for p, pos in batch.positions.items() if p[0] not in topics}


def isolate_refused(
    changes: TableChanges,
    attempt: Callable[[TableChanges], None],
    is_record_error: Callable[[Exception], bool],
    reason: Callable[[Exception], str],
) -> list[Rejected]:
    """Apply `changes` through `attempt` (which must run each call in a savepoint, rolled
    back when it raises); when a record-level error comes back, apply each half the same
    way, down to the single changes that fail: those are returned, the rest is applied.
    Cost: about 2 * log2(n) attempts per refused record."""
    try:
        attempt(changes)
        return []
    except Exception as exc:
        if not is_record_error(exc):
            raise
        first_error = exc
    # A keyless table's changes (`rows`) are bisected in their order, like keys.
    keys = list(changes.changes) + [k for k in changes.rows if k not in changes.changes]
    if len(keys) <= 1:
        if not keys:  # only a truncate failed: nothing to divert, the table cannot go on
            raise first_error
        row = changes.rows.get(keys[0])
        origin = row.origin if row is not None else changes.origins.get(keys[0])
        return [Rejected(changes.schema.table, keys[0], origin, reason(first_error))]
    middle = len(keys) // 2
    # The truncate stays with the first half, so it still runs before every other change.
    first = changes.subset(keys[:middle], changes.truncated)
    second = changes.subset(keys[middle:], False)
    return isolate_refused(first, attempt, is_record_error, reason) + isolate_refused(
        second, attempt, is_record_error, reason
    )
