"""Chunk planning against a real PostgreSQL: whatever the key (integer, text, composite) and
whichever way the boundaries are found (min/max, every Nth key, a sorted sample), the chunks
cover every row exactly once and are about the size asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from producers.postgres import catalog
from producers.postgres.chunks import SnapshotChunk, estimate_rows, plan_chunks, range_condition
from producers.postgres.connection import connect
from schemas.tables import TableId

pytestmark = pytest.mark.integration


@pytest.fixture
def source(pg_databases: tuple[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with connect(pg_databases[0]) as conn:
        yield conn


def chunk_sizes(conn: psycopg.Connection[Any], chunks: list[SnapshotChunk]) -> list[int]:
    types = catalog.TypeResolver(conn)
    schema = catalog.describe_table(conn, chunks[0].table, types)
    sizes = []
    for c in chunks:
        query = sql.SQL("SELECT count(*) FROM {}{}").format(
            sql.Identifier(c.table.schema, c.table.name),
            range_condition(schema, c.lower, c.upper),
        )
        row = conn.execute(query).fetchone()
        assert row is not None
        sizes.append(int(row[0]))
    return sizes


def plan(conn: psycopg.Connection[Any], table: str, **kwargs: Any) -> list[SnapshotChunk]:
    tid = TableId("public", table)
    schema = catalog.describe_table(conn, tid, catalog.TypeResolver(conn))
    return plan_chunks(conn, schema, estimate_rows(conn, tid), 2000, **kwargs)


@pytest.mark.parametrize("exact_split_rows", [10**9, 0], ids=["every-nth-key", "sampled"])
def test_text_and_composite_keys_split_into_balanced_chunks(
    source: psycopg.Connection[Any], exact_split_rows: int
) -> None:
    source.execute("CREATE TABLE words (word text PRIMARY KEY)")
    source.execute("INSERT INTO words SELECT md5(g::text) FROM generate_series(1, 20000) g")
    source.execute("CREATE TABLE pairs (a text, b int, PRIMARY KEY (a, b))")
    source.execute("INSERT INTO pairs SELECT 'k' || (g % 3), g FROM generate_series(1, 20000) g")
    source.execute("ANALYZE")
    for table in ("words", "pairs"):
        chunks = plan(source, table, exact_split_rows=exact_split_rows)
        sizes = chunk_sizes(source, chunks)
        assert sum(sizes) == 20000, table  # every row in exactly one chunk
        assert 8 <= len(chunks) <= 12, (table, sizes)
        assert max(sizes) < 2000 * 2, (table, sizes)


def test_integer_keys_split_by_range_and_unanalysed_tables_are_counted(
    source: psycopg.Connection[Any],
) -> None:
    source.execute("CREATE TABLE sparse (id bigint PRIMARY KEY)")
    source.execute("INSERT INTO sparse SELECT g * 1000 - 5000 FROM generate_series(1, 9000) g")
    assert estimate_rows(source, TableId("public", "sparse")) == 9000  # never analysed
    chunks = plan(source, "sparse")
    sizes = chunk_sizes(source, chunks)
    assert sum(sizes) == 9000 and len(chunks) == 5
    assert chunks[0].lower is None and chunks[-1].upper is None
    source.execute("CREATE TABLE empty (id int PRIMARY KEY)")
    source.execute("CREATE TABLE keyless (v text)")
    source.execute("ALTER TABLE keyless REPLICA IDENTITY FULL")
    source.execute("INSERT INTO keyless SELECT g::text FROM generate_series(1, 5000) g")
    for table in ("empty", "keyless"):
        assert [(c.lower, c.upper) for c in plan(source, table)] == [(None, None)]
