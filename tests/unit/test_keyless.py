"""Keyless tables (no primary key, REPLICA IDENTITY FULL): the batch keeps their changes in
offset order instead of collapsing them by key, replaying them on a model table (a list of
rows) keeps duplicates exactly, a refused change is isolated among them, and the source and
target are compared as multisets."""

from __future__ import annotations

import random
from typing import Any

import pytest

from consumers.batch import BatchError, SinkRecord, collapse
from consumers.keyless import RowChange, net
from consumers.outcome import isolate_refused
from headwater.compare import compare_rows
from producers.postgres.changes import ChangeBuilder
from producers.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Insert,
    Relation,
    RelationColumn,
    Update,
)
from schemas.envelope import ChangeEvent, Op, Row, SourceInfo
from schemas.tables import Column, TableId, TableSchema

TABLE = TableId("public", "loose")
SCHEMA = TableSchema(TABLE, (Column("a", "int4", "integer"), Column("b", "text", "text")), ())


def _record(offset: int, op: Op, before: Row | None = None, after: Row | None = None) -> SinkRecord:
    source = SourceInfo("postgresql", "t", "db", TABLE, 1)
    return SinkRecord("p.public.loose", 0, offset, SCHEMA, ChangeEvent(op, source, before, after))


def _replay(table: list[Row], changes: list[RowChange]) -> list[Row]:
    """The model of the target: what the sinks' statements do to a list of rows."""
    rows = list(table)
    change = net(changes)
    for row, count in change.deletes:
        for _ in range(count):
            if row in rows:
                rows.remove(row)  # one row, whichever of identical ones
    return rows + change.inserts


def _one_by_one(table: list[Row], changes: list[RowChange]) -> list[Row]:
    """The source: each change applied in order."""
    rows = list(table)
    for change in changes:
        if change.before is not None and change.before in rows:
            rows.remove(change.before)
        if change.after is not None:
            rows.append(change.after)
    return rows


def _sorted(rows: list[Row]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


def test_changes_of_a_keyless_table_stay_in_order_and_duplicates_count() -> None:
    one, two = {"a": 1, "b": "x"}, {"a": 2, "b": None}
    records = [
        _record(0, "r", after=one),
        _record(1, "c", after=one),
        _record(2, "c", after=two),
        _record(3, "u", before=one, after=two),  # one of the two identical rows
        _record(4, "d", before=two),
        _record(5, "d", before={"a": 9, "b": "never seen"}),
    ]
    batch = collapse(records)
    changes = batch.tables[TABLE]
    assert not changes.changes and len(changes.rows) == 6
    assert _replay([], list(changes.rows.values())) == [one, two]
    assert batch.positions[("p.public.loose", 0)].next_offset == 6


def test_a_truncate_drops_the_earlier_changes_of_the_batch() -> None:
    batch = collapse([_record(0, "c", after={"a": 1}), _record(1, "t"), _record(2, "c", after={})])
    changes = batch.tables[TABLE]
    assert changes.truncated and [r.after for r in changes.rows.values()] == [{}]


def test_netting_a_batch_equals_replaying_it_one_by_one() -> None:
    rng = random.Random(11)
    values: list[Row] = [{"a": 1, "b": None}, {"a": 1, "b": "x"}, {"a": float("nan"), "b": ""}]
    origin = ("t", 0, 0)
    for _ in range(300):
        table = [rng.choice(values) for _ in range(rng.randrange(4))]
        changes = []
        for _ in range(rng.randrange(8)):
            kind = rng.randrange(3)
            before = rng.choice(values) if kind else None
            after = rng.choice(values) if kind != 2 else None
            changes.append(RowChange(before, after, origin))
        assert _sorted(_replay(table, changes)) == _sorted(_one_by_one(table, changes))


def test_a_delete_cancels_the_insert_of_an_equal_row_of_the_batch() -> None:
    a, b = {"a": 1}, {"a": 2}
    origin = ("t", 0, 0)
    change = net(
        [
            RowChange(None, a, origin),
            RowChange(a, b, origin),  # cancels the insert of a
            RowChange(a, None, origin),  # a row there before
            RowChange(a, None, origin),
        ]
    )
    assert change.deletes == [(a, 2)] and change.inserts == [b]


def test_an_update_without_its_old_row_is_a_batch_error() -> None:
    with pytest.raises(BatchError, match="REPLICA IDENTITY FULL"):
        collapse([_record(0, "u", after={"a": 1})])


def test_a_refused_change_is_isolated_in_order() -> None:
    batch = collapse([_record(i, "c", after={"a": i}) for i in range(8)])
    applied: list[Any] = []

    def attempt(part: Any) -> None:
        values = [r.after["a"] for r in part.rows.values()]
        if 5 in values:
            raise ValueError("refused")
        applied.extend(values)

    rejected = isolate_refused(batch.tables[TABLE], attempt, lambda e: True, str)
    assert [r.origin for r in rejected] == [("p.public.loose", 0, 5)]
    assert applied == [0, 1, 2, 3, 4, 6, 7]


def test_multiset_comparison_counts_identical_rows() -> None:
    same = compare_rows(TABLE, [("1", "x"), ("1", "x")], [("1", "x"), ("1", "x")], 0)
    assert same.matches and same.source_rows == same.target_rows == 2
    fewer = compare_rows(TABLE, [("1", "x"), ("1", "x")], [("1", "x"), ("2", None)], 0)
    assert fewer.missing == [("1", "x")] and fewer.extra == [("2", None)]


def test_full_old_row_fills_unchanged_toast_values() -> None:
    columns = (RelationColumn("a", 23, -1, True), RelationColumn("big", 25, -1, True))
    relation = Relation(1, "public", "loose", "f", columns)
    schema = TableSchema(TABLE, (Column("a", "int4", "integer"), Column("big", "text", "text")), ())
    builder = ChangeBuilder("t", "db", {TABLE}, lambda _rel: schema)
    builder.on_message(relation, 0)
    builder.on_message(Begin(0, 0, 7), 0)
    update = Update(1, ("1", "long text"), False, ("2", UNCHANGED))
    (event,) = builder.on_message(update, 10)
    assert event.after == {"a": 2, "big": "long text"} and not event.unavailable


def test_a_reconnect_does_not_hand_out_events_again() -> None:
    """The server resends what follows the slot's confirmed position; the events an earlier
    connection already handed out (here: a whole transaction and half of the next) are not
    repeated, so a keyless table does not get them twice."""
    columns = (RelationColumn("a", 23, -1, True),)
    relation = Relation(1, "public", "loose", "f", columns)
    schema = TableSchema(TABLE, (Column("a", "int4", "integer"),), ())

    def session(
        builder: ChangeBuilder, transactions: list[tuple[int, list[str], bool]]
    ) -> list[Any]:
        out: list[ChangeEvent] = []
        builder.on_message(relation, 0)
        for final_lsn, values, committed in transactions:
            builder.on_message(Begin(final_lsn, 0, final_lsn), 0)
            for value in values:
                out += builder.on_message(Insert(1, (value,)), final_lsn)
            if committed:
                builder.on_message(Commit(final_lsn, final_lsn + 1, 0), 0)
        return [e.after["a"] if e.after else None for e in out]

    first = ChangeBuilder("t", "db", {TABLE}, lambda _rel: schema)
    assert session(first, [(100, ["1", "2"], True), (200, ["3"], False)]) == [1, 2, 3]
    again = ChangeBuilder("t", "db", {TABLE}, lambda _rel: schema, first.handed_out)
    resent = [(100, ["1", "2"], True), (200, ["3", "4"], True), (300, ["5"], True)]
    assert session(again, resent) == [4, 5]
    assert again.handed_out == (300, None)
