"""Changes of a keyless table (no primary key, REPLICA IDENTITY FULL at the source; see
docs/keyless-tables.md). Without a key nothing can be collapsed or upserted, so a batch keeps
them in offset order and a sink replays them: an insert inserts the row; a delete removes ONE
row equal, column by column and NULL-safely, to the whole old row; an update is that delete
then the insert of the new row. Two identical rows at the source stay two in the target.

Within a batch the changes are netted as a multiset (`net`): deletes of rows the batch
inserted cancel them, the other deletes run first, then the inserts. Pure: the sinks
(postgres_keyless.py, sql_keyless.py) run what `net` gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.envelope import ChangeEvent, Row
from schemas.tables import TableSchema

RowOrigin = tuple[str, int, int]
"""(topic, partition, offset) of the event a change came from."""


class KeylessChangeError(ValueError):
    """An event of a keyless table that lacks the row image its op needs."""


@dataclass(frozen=True, slots=True)
class RowChange:
    """One change of a keyless table: delete one row equal to `before` (if set), then insert
    `after` (if set)."""

    before: Row | None
    after: Row | None
    origin: RowOrigin


@dataclass(slots=True)
class NetRows:
    """What a run of changes does to a keyless table as a multiset of rows: delete `count`
    rows equal to each of `deletes` (as many as there are), then insert `inserts`."""

    deletes: list[tuple[Row, int]] = field(default_factory=list)
    inserts: list[Row] = field(default_factory=list)


def row_change(event: ChangeEvent, schema: TableSchema, origin: RowOrigin) -> RowChange:
    """The RowChange of a row event (`r`, `c`, `u`, `d`) of a keyless table."""
    before = event.before if event.op in ("u", "d") else None
    after = event.after if event.op != "d" else None
    if event.op in ("u", "d") and before is None:
        raise KeylessChangeError(
            f"op {event.op!r} on keyless table {schema.table} without `before`; the source "
            "table needs REPLICA IDENTITY FULL"
        )
    if event.op != "d" and after is None:
        raise KeylessChangeError(f"op {event.op!r} on {schema.table} without `after`")
    if after is not None and before is not None and event.unavailable:
        # Unchanged TOAST values: under REPLICA IDENTITY FULL the old row has them.
        after = {**after, **{c: before.get(c) for c in event.unavailable}}
    return RowChange(before, after, origin)


def row_identity(row: Row) -> str:
    """A row's identity in a multiset: two images of one stored row always have the same
    (they decode from the same source values); `repr` also keeps NaN equal to itself."""
    return repr(sorted(row.items()))


def net(changes: Iterable[RowChange]) -> NetRows:
    """The net effect of `changes` replayed in order, as a multiset: a delete cancels the
    latest insert of an equal row of the run, else it removes a row that was there before;
    the deletes can then all run first, and the inserts after them. Equivalent to replaying
    the changes one by one, since identical rows are indistinguishable."""
    inserted: dict[str, list[Row]] = {}
    deleted: dict[str, tuple[Row, int]] = {}
    for change in changes:
        if change.before is not None:
            identity = row_identity(change.before)
            pending = inserted.get(identity)
            if pending:
                pending.pop()
            else:
                row, count = deleted.get(identity, (change.before, 0))
                deleted[identity] = (row, count + 1)
        if change.after is not None:
            inserted.setdefault(row_identity(change.after), []).append(change.after)
    inserts = [row for rows in inserted.values() for row in rows]
    return NetRows(list(deleted.values()), inserts)
