"""The catalog lookups that follow PostgreSQL tables by OID (producers/postgres/oids.py),
against a real server: names by OID after a rename, a Relation message built from the
catalog, a Relation described by OID once its name is gone, and which selected tables a
publication does not stream (partitioned tables and FOR ALL TABLES publications included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from headwater.config import TableSelection
from producers.postgres import catalog, oids
from producers.postgres.connection import connect
from schemas.tables import TableId

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(pg_databases: tuple[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with connect(pg_databases[0]) as c:
        c.execute("CREATE TABLE a (id int PRIMARY KEY, v text NOT NULL, w text)")
        c.execute("CREATE TABLE parts (id int PRIMARY KEY) PARTITION BY RANGE (id)")
        c.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)")
        c.execute("CREATE TABLE x_old (id int PRIMARY KEY)")
        yield c


def t(name: str) -> TableId:
    return TableId("public", name)


def test_names_and_relations_follow_the_oid(conn: psycopg.Connection[Any]) -> None:
    ((oid, table),) = oids.table_oids(conn, [t("a")]).items()
    assert table == t("a")
    rel = oids.relation_now(conn, oid, t("b"))
    conn.execute("ALTER TABLE a RENAME TO b")
    assert oids.table_names(conn, [oid, 1]) == {oid: t("b")}
    assert oids.table_name(conn, oid) == t("b")
    assert rel is not None
    assert [(c.name, c.is_key) for c in rel.columns] == [("id", True), ("v", False), ("w", False)]
    # Described by OID: the old name is gone, its NOT NULL columns and key are still found.
    schema = catalog.schema_from_relation(
        conn, rel.__class__(oid, "public", "a", "f", rel.columns), catalog.TypeResolver(conn)
    )
    assert schema.primary_key == ("id",)
    assert [c.nullable for c in schema.columns] == [False, False, True]
    conn.execute("DROP TABLE b")
    assert oids.relation_now(conn, oid, t("b")) is None


def test_unpublished_selected_tables(conn: psycopg.Connection[Any]) -> None:
    selection = TableSelection(include=["public.*"], exclude=["public.*_old"])
    tables = catalog.selected_tables(conn, selection)
    assert tables == [t("a"), t("parts")]
    catalog.ensure_publication(conn, "pub", tables)
    # A partitioned table shows in pg_publication_tables as its partitions only: it is
    # still seen as listed (a restart adds nothing, the poll finds nothing).
    catalog.ensure_publication(conn, "pub", tables)
    assert oids.unpublished_tables(conn, "pub", selection) == []
    conn.execute("ALTER TABLE a RENAME TO a2")  # listed by OID: still published
    conn.execute("ALTER TABLE x_old RENAME TO x")  # into the selection: not published
    ((oid, table),) = oids.unpublished_tables(conn, "pub", selection)
    assert table == t("x") and oids.table_name(conn, oid) == t("x")
    catalog.add_to_publication(conn, "pub", table)
    assert oids.unpublished_tables(conn, "pub", selection) == []


def test_a_publication_for_all_tables_lacks_nothing(conn: psycopg.Connection[Any]) -> None:
    selection = TableSelection(include=["public.*"])
    conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
    catalog.ensure_publication(conn, "everything", catalog.selected_tables(conn, selection))
    assert oids.unpublished_tables(conn, "everything", selection) == []
