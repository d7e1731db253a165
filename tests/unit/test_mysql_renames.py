"""RENAME TABLE and ALTER TABLE ... RENAME as the binlog reader reads them: the (old, new)
names of each statement form, and what a chain of renames vacates and fills."""

from __future__ import annotations

import pytest

from producers.mysql.renames import rename_effect, renamed_tables
from schemas.tables import TableId


def t(name: str, db: str = "db") -> TableId:
    return TableId(db, name)


@pytest.mark.parametrize(
    ("query", "pairs"),
    [
        ("RENAME TABLE a TO b", [(t("a"), t("b"))]),
        ("rename tables a to b;", [(t("a"), t("b"))]),
        (
            "RENAME TABLE `x`.`a``1` TO `y`.b, c TO d",
            [(t("a`1", "x"), t("b", "y")), (t("c"), t("d"))],
        ),
        ("/* why */ RENAME TABLE IF EXISTS a WAIT 5 TO b", [(t("a"), t("b"))]),
        ("RENAME TABLE a NOWAIT TO b", [(t("a"), t("b"))]),
        ("/*!40000 RENAME TABLE a TO b */", [(t("a"), t("b"))]),
        ("ALTER TABLE a RENAME TO b", [(t("a"), t("b"))]),
        ("ALTER TABLE a RENAME AS other.b", [(t("a"), t("b", "other"))]),
        ("ALTER TABLE a RENAME b", [(t("a"), t("b"))]),
        (
            "ALTER ONLINE IGNORE TABLE IF EXISTS db2.a ADD c int, RENAME TO b",
            [(t("a", "db2"), t("b"))],
        ),
        ("ALTER TABLE a ADD COLUMN rename int, ADD d int", []),
        (
            "ALTER TABLE a ADD CONSTRAINT c CHECK (x IN ('RENAME', 'TO')), RENAME TO b",
            [(t("a"), t("b"))],
        ),
        ("ALTER TABLE a RENAME COLUMN x TO y", []),
        ("ALTER TABLE a RENAME INDEX i TO j", []),
        ("ALTER TABLE a RENAME KEY i TO j, RENAME TO b", [(t("a"), t("b"))]),
        ("ALTER TABLE a RENAME TO a", []),
        ("ALTER TABLE a ADD COLUMN b int", []),
        ("TRUNCATE TABLE a", []),
        ("CREATE TABLE rename_log (id int)", []),
        ("RENAME USER a TO b", []),
        ("RENAME TABLE a TO", []),
    ],
)
def test_renamed_tables_of_each_statement_form(
    query: str, pairs: list[tuple[TableId, TableId]]
) -> None:
    assert renamed_tables(query, "db") == pairs


def test_a_plain_rename_vacates_the_old_name_and_fills_the_new() -> None:
    effect = rename_effect([(t("a"), t("b"))])
    assert effect.vacated == (t("a"),)
    assert effect.filled == ((t("b"), t("a")),)


def test_a_swap_through_a_temporary_name_fills_both_and_vacates_only_the_temporary() -> None:
    effect = rename_effect([(t("a"), t("tmp")), (t("b"), t("a")), (t("tmp"), t("b"))])
    assert effect.vacated == (t("tmp"),)
    assert dict(effect.filled) == {t("a"): t("b"), t("b"): t("a")}


def test_a_chain_of_renames_fills_only_the_last_name() -> None:
    effect = rename_effect([(t("a"), t("b")), (t("b"), t("c"))])
    assert set(effect.vacated) == {t("a"), t("b")}
    assert effect.filled == ((t("c"), t("a")),)
