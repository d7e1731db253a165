"""PostgreSQL tables followed by OID through Relation messages: a rename empties the old
name and reloads the new one, a rename out of the selection stops following, a table renamed
into the selection is loaded, and replayed messages under an old name are not mistaken for
renames."""

from __future__ import annotations

from producers.postgres.changes import ChangeBuilder
from producers.postgres.pgoutput import Begin, Commit, Insert, Relation, RelationColumn
from producers.postgres.relations import Known, TableMove
from schemas.envelope import ChangeEvent
from schemas.tables import Column, TableId, TableSchema

ORDERS = TableId("public", "orders")
ORDERS2 = TableId("public", "orders2")
HIDDEN = TableId("public", "orders_old")
ID = RelationColumn("id", 23, -1, True)
NOTE = RelationColumn("note", 25, -1, False)


class Selected:
    """public.* except *_old, as a task's patterns would say."""

    def __contains__(self, table: object) -> bool:
        return isinstance(table, TableId) and not table.name.endswith("_old")


def describe(rel: Relation) -> TableSchema:
    columns = tuple(Column(c.name, "int4" if c.is_key else "text", "x", True) for c in rel.columns)
    return TableSchema(TableId(rel.namespace, rel.name), columns, ("id",))


def relation(oid: int, table: TableId, *columns: RelationColumn) -> Relation:
    return Relation(oid, table.schema, table.name, "d", columns or (ID,))


def started(known: dict[int, Known]) -> ChangeBuilder:
    b = ChangeBuilder("demo", "src", Selected(), describe, known=known)
    b.on_message(Begin(500, 0, 1), 10)
    return b


def ops(events: list[ChangeEvent]) -> list[tuple[str, str]]:
    return [(e.op, str(e.table)) for e in events]


def test_first_relation_of_a_known_table_is_quiet() -> None:
    b = started({7: Known(ORDERS, 0)})
    assert b.on_message(relation(7, ORDERS), 20) == []
    assert b.moves == []
    (event,) = b.on_message(Insert(7, ("1",)), 20)
    assert event.table == ORDERS


def test_rename_within_the_selection_empties_both_names_and_reloads_the_new() -> None:
    known = {7: Known(ORDERS, 0)}
    b = started(known)
    b.on_message(relation(7, ORDERS), 20)
    events = b.on_message(relation(7, ORDERS2), 30)
    assert ops(events) == [("t", "public.orders"), ("t", "public.orders2")]
    # Named by the commit of the transaction (a Relation message has no position).
    assert all(e.source.lsn == 500 and e.source.commit_lsn is None for e in events)
    assert b.moves == [TableMove(7, ORDERS, ORDERS2)]
    assert known == {7: Known(ORDERS2, 500)}
    (event,) = b.on_message(Insert(7, ("1",)), 30)
    assert event.table == ORDERS2


def test_column_added_after_a_rename_is_a_new_shape_under_the_new_name() -> None:
    b = started({7: Known(ORDERS, 0)})
    b.on_message(relation(7, ORDERS), 20)
    b.on_message(relation(7, ORDERS2), 30)
    b.moves.clear()
    assert b.on_message(relation(7, ORDERS2, ID, NOTE), 40) == []
    assert b.moves == []
    (event,) = b.on_message(Insert(7, ("1", "hello")), 40)
    assert (event.table, event.after) == (ORDERS2, {"id": 1, "note": "hello"})


def test_rename_out_of_the_selection_stops_following() -> None:
    known = {7: Known(ORDERS, 0)}
    b = started(known)
    b.on_message(relation(7, ORDERS), 20)
    assert ops(b.on_message(relation(7, HIDDEN), 30)) == [("t", "public.orders")]
    assert b.moves == [TableMove(7, ORDERS, None)]
    assert known == {}
    assert b.on_message(Insert(7, ("1",)), 30) == []


def test_renamed_back_into_the_selection_is_loaded_again() -> None:
    known = {7: Known(ORDERS, 0)}
    b = started(known)
    b.on_message(relation(7, ORDERS), 20)
    b.on_message(relation(7, HIDDEN), 30)
    b.moves.clear()
    assert ops(b.on_message(relation(7, ORDERS), 40)) == [("t", "public.orders")]
    assert b.moves == [TableMove(7, None, ORDERS)]
    assert known == {7: Known(ORDERS, 500)}


def test_unknown_selected_relation_came_into_the_selection() -> None:
    known: dict[int, Known] = {}
    b = started(known)
    assert ops(b.on_message(relation(9, ORDERS2), 20)) == [("t", "public.orders2")]
    assert b.moves == [TableMove(9, None, ORDERS2)]
    # The next session's first message of it is quiet: it is known now.
    again = started(known)
    assert again.on_message(relation(9, ORDERS2), 50) == []
    assert again.moves == []


def test_rename_of_a_table_not_seen_yet_in_this_session() -> None:
    known = {7: Known(ORDERS, 10)}
    b = started(known)
    assert ops(b.on_message(relation(7, HIDDEN), 30)) == [("t", "public.orders")]
    assert b.moves == [TableMove(7, ORDERS, None)]
    assert known == {}


def test_changes_replayed_from_before_a_rename_are_dropped_and_the_table_reloaded() -> None:
    """After a restart the catalog (and so `known`, from position 600) has the new name,
    but the slot sends again changes from before the rename under the old one (transaction
    500). They are dropped and the table is loaded again under its name now, which covers
    them (whatever renames came between, even one back to the old name)."""
    known = {7: Known(ORDERS2, 600)}
    b = started(known)
    assert ops(b.on_message(relation(7, ORDERS), 20)) == [("t", "public.orders2")]
    assert b.moves == [TableMove(7, None, ORDERS2)]
    assert b.on_message(Insert(7, ("1",)), 20) == []
    assert b.on_message(relation(7, ORDERS, ID, NOTE), 22) == []  # once is enough
    assert b.on_message(relation(7, ORDERS2), 30) == []
    (event,) = b.on_message(Insert(7, ("1",)), 30)
    assert event.table == ORDERS2
    assert len(b.moves) == 1 and known == {7: Known(ORDERS2, 600)}


def test_swap_through_a_temporary_name_reloads_both() -> None:
    a, c = ORDERS, ORDERS2
    known = {7: Known(a, 0), 8: Known(c, 0)}
    b = started(known)
    b.on_message(relation(7, a), 20)
    b.on_message(relation(8, c), 20)
    # a TO tmp, c TO a, tmp TO c: the stream shows only the end state, table by table.
    assert ops(b.on_message(relation(7, c), 30)) == [("t", str(a)), ("t", str(c))]
    assert ops(b.on_message(relation(8, a), 30)) == [("t", str(c)), ("t", str(a))]
    # 8 left c, which 7 holds now and whose rows that truncate removed: 7 is loaded again.
    assert b.moves == [TableMove(7, a, c), TableMove(8, c, a), TableMove(7, None, c)]
    assert known == {7: Known(c, 500), 8: Known(a, 500)}


def test_relation_truncates_are_not_counted_against_a_replayed_transaction() -> None:
    known = {7: Known(ORDERS, 0)}
    first = ChangeBuilder("demo", "src", Selected(), describe, known=known)
    first.on_message(Begin(500, 0, 1), 10)
    first.on_message(relation(7, ORDERS), 20)
    first.on_message(relation(7, ORDERS2), 30)
    first.on_message(Insert(7, ("1",)), 30)
    # The connection drops before the commit; the next session sends the transaction again
    # and only the new name (the relation cache of the first session is gone).
    again = ChangeBuilder("demo", "src", Selected(), describe, first.handed_out, known)
    again.on_message(Begin(500, 0, 1), 10)
    assert again.on_message(relation(7, ORDERS2), 30) == []
    assert again.on_message(Insert(7, ("1",)), 30) == []  # handed out already
    (event,) = again.on_message(Insert(7, ("2",)), 31)
    assert event.after == {"id": 2}
    again.on_message(Commit(500, 510, 0), 40)
