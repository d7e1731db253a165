"""Splitting a table into key-range chunks for the parallel full load, the SQL that reads one
chunk, and the bookkeeping of finished chunks that lets a killed load resume.

A chunk is the half-open key range (lower, upper]: keys above `lower` up to and including
`upper`, None meaning unbounded. Chunk i's upper is chunk i+1's lower and the first and last
ranges are open, so the chunks of a table cover its whole key space whatever the planning
saw, and what is left after some chunks finished is again such ranges (`unfinished_ranges`),
in the form the incremental snapshot reads (`after`, exclusive; `until`, inclusive).
Keys are kept as lists of text values (the types' input syntax) so they fit the task state's
JSON and go back into SQL as literals the server casts to the key columns' types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from producers.postgres.oids import current_name
from schemas.tables import TableId, TableSchema

Key = list[str]
KeyRange = tuple[Key | None, Key | None]

_INTEGER_TYPES = {"int2", "int4", "int8"}
# Up to this many rows, non-integer keys are split exactly (every Nth key in key order);
# above it, from a sorted random sample, which spares a window over every key.
_EXACT_SPLIT_ROWS = 2_000_000
_SAMPLES_PER_CHUNK = 50

_SIZE_SQL = """
SELECT c.reltuples, c.relpages, pg_relation_size(c.oid) / current_setting('block_size')::int
FROM pg_class c WHERE c.oid = %s::regclass
"""


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One key range (lower, upper] of one table; `index` orders the table's chunks."""

    table: TableId
    index: int
    lower: Key | None
    upper: Key | None


def reading_name(
    conn: psycopg.Connection[Any], schema: TableSchema, oids: Mapping[str, int]
) -> TableSchema:
    """`schema` under the name its table has now, for the queries of a load at an older
    snapshot (a table renamed since is not found under its old name there); `schema`
    itself when the table kept its name or its OID is not known."""
    oid = oids.get(str(schema.table))
    now = current_name(conn, oid) if oid else None
    return schema if now is None or now == schema.table else replace(schema, table=now)


def _table_sql(table: TableId) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def _keys_sql(schema: TableSchema) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(k) for k in schema.primary_key)


def _key_literal(key: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Literal(v) for v in key)


def range_condition(
    schema: TableSchema, lower: Sequence[str] | None, upper: Sequence[str] | None
) -> sql.Composable:
    """`WHERE (keys) > (lower) AND (keys) <= (upper)`, the bounds that are set; row
    comparison, so a composite key orders as its index does."""
    parts: list[sql.Composable] = []
    if lower is not None:
        parts.append(sql.SQL("({}) > ({})").format(_keys_sql(schema), _key_literal(lower)))
    if upper is not None:
        parts.append(sql.SQL("({}) <= ({})").format(_keys_sql(schema), _key_literal(upper)))
    if not parts:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts)


def copy_query(schema: TableSchema, lower: Key | None, upper: Key | None) -> sql.Composed:
    """COPY of the chunk's rows in key order; a keyless table (one chunk) in any order."""
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in schema.columns)
    table = _table_sql(schema.table)
    if not schema.primary_key:
        return sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(columns, table)
    return sql.SQL("COPY (SELECT {} FROM {}{} ORDER BY {}) TO STDOUT").format(
        columns, table, range_condition(schema, lower, upper), _keys_sql(schema)
    )


# --- planning ----------------------------------------------------------------------------


def estimate_rows(conn: psycopg.Connection[Any], table: TableId) -> int:
    """Rows the table holds, as the planner reckons them (reltuples scaled to the table's
    current size); counted when the table was never analysed."""
    row = conn.execute(_SIZE_SQL, (_table_sql(table).as_string(conn),)).fetchone()
    reltuples, relpages, pages = (float(row[0]), int(row[1]), int(row[2])) if row else (-1, 0, 0)
    if reltuples > 0 and relpages > 0:
        return int(reltuples / relpages * pages)
    counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table_sql(table)))
    found = counted.fetchone()
    return int(found[0]) if found else 0


def plan_chunks(
    conn: psycopg.Connection[Any],
    schema: TableSchema,
    estimate: int,
    chunk_rows: int,
    exact_split_rows: int = _EXACT_SPLIT_ROWS,
) -> list[SnapshotChunk]:
    """The table's chunks of about `chunk_rows` rows, read in `conn`'s snapshot: ranges of
    an integer key from its min and max, else boundaries sampled in key order. A keyless or
    small table is one chunk."""
    wanted = math.ceil(estimate / chunk_rows)
    if not schema.primary_key or wanted <= 1:
        return [SnapshotChunk(schema.table, 0, None, None)]
    if len(schema.primary_key) == 1 and schema.key_columns[0].type_name in _INTEGER_TYPES:
        bounds = _integer_bounds(conn, schema, wanted)
    elif estimate <= exact_split_rows:
        bounds = _every_nth_key(conn, schema, max(1, estimate // wanted))
    else:
        bounds = _sampled_bounds(conn, schema, estimate, wanted)
    edges: list[Key | None] = [None, *bounds, None]
    return [SnapshotChunk(schema.table, i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _integer_bounds(conn: psycopg.Connection[Any], schema: TableSchema, wanted: int) -> list[Key]:
    key = sql.Identifier(schema.primary_key[0])
    query = sql.SQL("SELECT min({}), max({}) FROM {}").format(key, key, _table_sql(schema.table))
    row = conn.execute(query).fetchone()
    if row is None or row[0] is None:
        return []
    low, high = int(row[0]), int(row[1])
    step = max(1, math.ceil((high - low + 1) / wanted))
    return [[str(b)] for b in range(low + step - 1, high, step)]


def _every_nth_key(conn: psycopg.Connection[Any], schema: TableSchema, nth: int) -> list[Key]:
    keys = _keys_sql(schema)
    query = sql.SQL(
        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS hw_rn FROM {}) s "
        "WHERE hw_rn % {} = 0 ORDER BY hw_rn"
    ).format(_text_keys(schema), keys, keys, _table_sql(schema.table), sql.Literal(nth))
    return _distinct([[str(v) for v in row] for row in conn.execute(query).fetchall()])


def _sampled_bounds(
    conn: psycopg.Connection[Any], schema: TableSchema, estimate: int, wanted: int
) -> list[Key]:
    # BERNOULLI picks rows, not pages: a table stored in key order still samples evenly.
    percent = min(100.0, 100.0 * wanted * _SAMPLES_PER_CHUNK / max(1, estimate))
    keys = _keys_sql(schema)
    query = sql.SQL(
        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS hw_rn "
        "FROM {} TABLESAMPLE BERNOULLI ({})) s WHERE hw_rn % {} = 0 ORDER BY hw_rn"
    ).format(
        _text_keys(schema),
        keys,
        keys,
        _table_sql(schema.table),
        sql.Literal(percent),
        sql.Literal(_SAMPLES_PER_CHUNK),
    )
    return _distinct([[str(v) for v in row] for row in conn.execute(query).fetchall()])


def _text_keys(schema: TableSchema) -> sql.Composable:
    # Ordered by the row number, never by these text columns (text order is not key order).
    return sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(k)) for k in schema.primary_key
    )


def _distinct(bounds: list[Key]) -> list[Key]:
    out: list[Key] = []
    for key in bounds:
        if not out or out[-1] != key:
            out.append(key)
    return out


def order_for_load(plans: Sequence[Sequence[SnapshotChunk]]) -> list[SnapshotChunk]:
    """All tables' chunks in one queue: the tables with most chunks first (the longest
    work starts first, small tables fill the gaps at the end), each table's in key order."""
    ranked = sorted(plans, key=len, reverse=True)
    return [chunk for plan in ranked for chunk in plan]


# --- finished chunks and what is left ----------------------------------------------------


def add_done(runs: list[list[Any]], chunk: SnapshotChunk) -> list[list[Any]]:
    """The runs of finished chunks with `chunk` added, adjacent runs merged:
    [[first index, last index, lower key, upper key], ...] in index order."""
    merged: list[list[Any]] = []
    entries = [*runs, [chunk.index, chunk.index, chunk.lower, chunk.upper]]
    for first, last, lower, upper in sorted(entries, key=lambda r: int(r[0])):
        if merged and merged[-1][1] + 1 >= first:
            merged[-1][1] = max(merged[-1][1], last)
            if last >= merged[-1][1]:
                merged[-1][3] = upper
        else:
            merged.append([first, last, lower, upper])
    return merged


def chunks_finished(runs: list[list[Any]]) -> int:
    return sum(int(last) - int(first) + 1 for first, last, _lower, _upper in runs)


def unfinished_ranges(runs: list[list[Any]], total: int) -> list[KeyRange]:
    """The key ranges (after, until] no finished chunk covers, in key order."""
    gaps: list[KeyRange] = []
    expected = 0
    previous_upper: Key | None = None
    for first, last, lower, upper in runs:
        if int(first) > expected:
            gaps.append((previous_upper, lower))
        expected, previous_upper = int(last) + 1, upper
    if expected < total:
        gaps.append((previous_upper, None))
    return gaps
