"""The batch collapse against a model: applying the collapsed batch to a table held as a dict
gives the same rows as applying every event one by one."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.batch import (
    CollapsedBatch,
    PartitionPosition,
    RowKey,
    SinkRecord,
    Upsert,
    collapse,
    merge_schemas,
    row_key,
)
from schemas.envelope import ChangeEvent, Op, Row, SourceInfo
from schemas.tables import Column, TableId, TableSchema

Model = dict[TableId, dict[RowKey, Row]]


def _schema(name: str, extra: tuple[str, ...] = ()) -> TableSchema:
    names = ("id", "a", "b", "c", *extra)
    cols = tuple(Column(n, "int4", "integer", nullable=n != "id") for n in names)
    return TableSchema(TableId("public", name), cols, ("id",))


ORDERS = _schema("orders")
ITEMS = _schema("items")
VALUE_COLUMNS = ("a", "b", "c")


def _event(
    schema: TableSchema,
    op: Op,
    before: Row | None = None,
    after: Row | None = None,
    unavailable: tuple[str, ...] = (),
    ts_ms: int = 1,
) -> ChangeEvent:
    source = SourceInfo("postgresql", "t", "db", schema.table, ts_ms)
    return ChangeEvent(op, source, before, after, ts_ms, unavailable)


def _row(schema: TableSchema, key: int, values: dict[str, Any] | None = None) -> Row:
    row: Row = dict.fromkeys(schema.column_names)
    row.update(values or {})
    row["id"] = key
    return row


# --- the model: one event at a time, as a database would --------------------------------


def _upsert(
    table: dict[RowKey, Row], key: RowKey, values: Row, columns: frozenset[str], schema: TableSchema
) -> None:
    current = table.get(key)
    if current is None:
        table[key] = {n: values.get(n) if n in columns else None for n in schema.column_names}
    else:
        current.update({n: values[n] for n in columns})


def _apply_event(model: Model, schema: TableSchema, event: ChangeEvent) -> None:
    table = model.setdefault(schema.table, {})
    if event.op == "t":
        table.clear()
        return
    if event.op == "d":
        assert event.before is not None
        table.pop(row_key(event.before, schema), None)
        return
    assert event.after is not None
    key = row_key(event.after, schema)
    if event.before is not None and row_key(event.before, schema) != key:
        table.pop(row_key(event.before, schema), None)
    columns = frozenset(schema.column_names) - set(event.unavailable)
    _upsert(table, key, event.after, columns, schema)


def _apply_collapsed(model: Model, batch: CollapsedBatch) -> None:
    """What the sink does: truncate, deletes, then upserts of the given columns only."""
    for table_id, changes in batch.tables.items():
        table = model.setdefault(table_id, {})
        if changes.truncated:
            table.clear()
        for key in changes.deletes:
            table.pop(key, None)
        for key, upsert in changes.upserts.items():
            _upsert(table, key, upsert.row, upsert.columns, changes.schema)


# --- strategies ---------------------------------------------------------------------------

keys = st.integers(0, 4)
values = st.one_of(st.none(), st.integers(-3, 3))


@st.composite
def events(draw: st.DrawFn) -> tuple[TableSchema, ChangeEvent | None]:
    schema = draw(st.sampled_from([ORDERS, ITEMS]))
    op: str = draw(st.sampled_from(["r", "c", "u", "u", "d", "t", "tombstone"]))
    if op == "tombstone":
        return schema, None
    if op == "t":
        return schema, _event(schema, "t")
    key = draw(keys)
    if op == "d":
        return schema, _event(schema, "d", before=_row(schema, key))
    row = _row(schema, key, {c: draw(values) for c in VALUE_COLUMNS})
    unavailable = tuple(sorted(draw(st.sets(st.sampled_from(VALUE_COLUMNS)))))
    before = _row(schema, draw(keys)) if op == "u" and draw(st.booleans()) else None
    return schema, _event(schema, op, before, row, unavailable)  # type: ignore[arg-type]


@st.composite
def initial_tables(draw: st.DrawFn) -> Model:
    model: Model = {}
    for schema in (ORDERS, ITEMS):
        present = draw(st.sets(keys))
        model[schema.table] = {
            (k,): _row(schema, k, {c: draw(values) for c in VALUE_COLUMNS}) for k in present
        }
    return model


def _records(drawn: list[tuple[TableSchema, ChangeEvent | None]]) -> list[SinkRecord]:
    return [
        SinkRecord(f"hw.{schema.table}", 0, offset, schema, event)
        for offset, (schema, event) in enumerate(drawn)
    ]


def _copy(model: Model) -> Model:
    return {t: {k: dict(r) for k, r in rows.items()} for t, rows in model.items()}


@settings(max_examples=600, deadline=None)
@given(initial_tables(), st.lists(events(), max_size=40))
def test_collapsed_batch_equals_events_one_by_one(
    initial: Model, drawn: list[tuple[TableSchema, ChangeEvent | None]]
) -> None:
    one_by_one = _copy(initial)
    for schema, event in drawn:
        if event is not None:
            _apply_event(one_by_one, schema, event)
    collapsed = _copy(initial)
    _apply_collapsed(collapsed, collapse(_records(drawn)))
    assert collapsed == one_by_one


@given(st.lists(events(), max_size=40))
def test_each_key_appears_once_per_table(
    drawn: list[tuple[TableSchema, ChangeEvent | None]],
) -> None:
    batch = collapse(_records(drawn))
    for changes in batch.tables.values():
        assert not set(changes.deletes) & set(changes.upserts)


# --- the rules, one example each -----------------------------------------------------------


def _collapse_one(*evs: ChangeEvent) -> CollapsedBatch:
    return collapse(SinkRecord("hw.public.orders", 0, i, ORDERS, e) for i, e in enumerate(evs))


def test_last_write_wins() -> None:
    batch = _collapse_one(
        _event(ORDERS, "c", after=_row(ORDERS, 1, {"a": 1})),
        _event(ORDERS, "u", after=_row(ORDERS, 1, {"a": 2})),
    )
    assert batch.tables[ORDERS.table].changes == {
        (1,): Upsert(_row(ORDERS, 1, {"a": 2}), frozenset(ORDERS.column_names))
    }


def test_insert_then_delete_is_a_delete() -> None:
    batch = _collapse_one(
        _event(ORDERS, "c", after=_row(ORDERS, 1)),
        _event(ORDERS, "d", before=_row(ORDERS, 1)),
    )
    assert batch.tables[ORDERS.table].changes == {(1,): None}


def test_delete_then_insert_is_a_full_upsert() -> None:
    batch = _collapse_one(
        _event(ORDERS, "d", before=_row(ORDERS, 1)),
        _event(ORDERS, "c", after=_row(ORDERS, 1, {"b": 5})),
    )
    change = batch.tables[ORDERS.table].changes[(1,)]
    assert change == Upsert(_row(ORDERS, 1, {"b": 5}), frozenset(ORDERS.column_names))


def test_unavailable_column_merged_from_earlier_event() -> None:
    batch = _collapse_one(
        _event(ORDERS, "c", after=_row(ORDERS, 1, {"a": 1, "c": 7})),
        _event(ORDERS, "u", after=_row(ORDERS, 1, {"a": 2}), unavailable=("c",)),
    )
    change = batch.tables[ORDERS.table].changes[(1,)]
    assert change == Upsert(_row(ORDERS, 1, {"a": 2, "c": 7}), frozenset(ORDERS.column_names))


def test_unavailable_column_alone_is_left_out() -> None:
    batch = _collapse_one(
        _event(ORDERS, "u", after=_row(ORDERS, 1, {"a": 2}), unavailable=("c",)),
    )
    change = batch.tables[ORDERS.table].changes[(1,)]
    assert change is not None
    assert change.columns == frozenset({"id", "a", "b"})
    assert "c" not in change.row


def test_truncate_drops_earlier_changes_and_keeps_later_ones() -> None:
    batch = _collapse_one(
        _event(ORDERS, "c", after=_row(ORDERS, 1)),
        _event(ORDERS, "t"),
        _event(ORDERS, "c", after=_row(ORDERS, 2)),
    )
    changes = batch.tables[ORDERS.table]
    assert changes.truncated
    assert list(changes.changes) == [(2,)]


def test_positions_keep_the_next_offset_and_latest_source_time() -> None:
    records = [
        SinkRecord(
            "hw.public.orders", 0, 10, ORDERS, _event(ORDERS, "c", after=_row(ORDERS, 1), ts_ms=500)
        ),
        SinkRecord(
            "hw.public.orders",
            0,
            11,
            ORDERS,
            _event(ORDERS, "d", before=_row(ORDERS, 1), ts_ms=700),
        ),
        SinkRecord("hw.public.orders", 0, 12),  # the tombstone
        SinkRecord(
            "hw.public.orders", 1, 3, ORDERS, _event(ORDERS, "c", after=_row(ORDERS, 2), ts_ms=600)
        ),
    ]
    batch = collapse(records)
    assert batch.positions == {
        ("hw.public.orders", 0): PartitionPosition(13, 700),
        ("hw.public.orders", 1): PartitionPosition(4, 600),
    }
    assert batch.source_ts_ms == 700
    assert batch.events == 3


def test_a_batch_of_tombstones_has_positions_and_no_tables() -> None:
    batch = collapse([SinkRecord("hw.public.orders", 0, 5)])
    assert batch.tables == {}
    assert batch.positions == {("hw.public.orders", 0): PartitionPosition(6, None)}


def test_new_column_in_a_later_schema_is_kept_with_the_old_ones() -> None:
    newer = _schema("orders", extra=("d",))
    merged = merge_schemas(ORDERS, newer)
    assert merged.column_names == ("id", "a", "b", "c", "d")
    dropped = TableSchema(ORDERS.table, ORDERS.columns[:2], ("id",))
    assert merge_schemas(ORDERS, dropped).column_names == ("id", "a", "b", "c")
