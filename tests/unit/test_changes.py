"""pgoutput messages become the right change events: ops, key changes, TOAST, truncates."""

from __future__ import annotations

from decimal import Decimal

from producers.postgres.changes import ChangeBuilder
from producers.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    RelationColumn,
    Truncate,
    Update,
)
from schemas.tables import Column, TableId, TableSchema

ORDERS = TableId("public", "orders")
SCHEMA = TableSchema(
    ORDERS,
    (
        Column("id", "int8", "bigint", False),
        Column("total", "numeric", "numeric(12,2)", True, 12, 2),
        Column("notes", "text", "text", True),
    ),
    ("id",),
)
REL = Relation(
    1,
    "public",
    "orders",
    "d",
    (
        RelationColumn("id", 20, -1, True),
        RelationColumn("total", 1700, 12 << 16 | 2 + 4, False),
        RelationColumn("notes", 25, -1, False),
    ),
)
OTHER = Relation(2, "public", "audit", "d", (RelationColumn("id", 20, -1, True),))


def builder() -> ChangeBuilder:
    b = ChangeBuilder("demo", "src", {ORDERS}, lambda rel: SCHEMA)
    b.on_message(REL, 0)
    b.on_message(OTHER, 0)
    b.on_message(Begin(500, 1_700_000_000_000, 42), 10)
    return b


def test_insert_parses_values_and_carries_the_transaction() -> None:
    (event,) = builder().on_message(Insert(1, ("7", "12.5", None)), 100)
    assert event.op == "c"
    assert event.after == {"id": 7, "total": Decimal("12.50"), "notes": None}
    assert (event.source.tx_id, event.source.lsn, event.source.ts_ms) == (
        42,
        100,
        1_700_000_000_000,
    )


def test_update_without_old_tuple() -> None:
    (event,) = builder().on_message(Update(1, None, False, ("7", "1.00", "x")), 100)
    assert (event.op, event.before, event.after["notes"]) == ("u", None, "x")  # type: ignore[index]


def test_primary_key_change_is_delete_then_insert() -> None:
    events = builder().on_message(Update(1, ("7", None, None), True, ("8", "1.00", "x")), 100)
    assert [e.op for e in events] == ["d", "c"]
    assert events[0].before == {"id": 7, "total": None, "notes": None}
    assert events[1].after == {"id": 8, "total": Decimal("1.00"), "notes": "x"}


def test_unchanged_toast_column_is_listed_not_nulled_in_silence() -> None:
    (event,) = builder().on_message(Update(1, None, False, ("7", "1.00", UNCHANGED)), 100)
    assert event.unavailable == ("notes",)
    assert event.after is not None and event.after["notes"] is None


def test_delete_and_truncate_and_unselected_tables() -> None:
    b = builder()
    (delete,) = b.on_message(Delete(1, ("7", None, None), True), 100)
    assert delete.op == "d" and delete.key(SCHEMA) == {"id": 7}
    assert b.on_message(Insert(2, ("1",)), 101) == []
    (trunc,) = b.on_message(Truncate((1, 2), False, False), 102)
    assert trunc.op == "t" and trunc.table == ORDERS
    assert b.on_message(Commit(500, 510, 1), 103) == [] and b.tx is None
