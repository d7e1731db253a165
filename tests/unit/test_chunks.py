"""The bookkeeping of a chunked full load: finished chunks merged into runs, the key ranges
a resumed load must still read, the SQL bounds of a chunk, and the state's JSON."""

from __future__ import annotations

import random
from typing import Any

from psycopg import sql

from producers.postgres.chunks import (
    SnapshotChunk,
    add_done,
    chunks_finished,
    copy_query,
    order_for_load,
    unfinished_ranges,
)
from producers.task_state import TableProgress, TaskState
from schemas.tables import Column, TableId, TableSchema

T = TableId("public", "t")


def plan(bounds: list[int]) -> list[SnapshotChunk]:
    edges: list[list[str] | None] = [None, *[[str(b)] for b in bounds], None]
    return [SnapshotChunk(T, i, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def test_runs_merge_in_any_finishing_order() -> None:
    chunks = plan([10, 20, 30, 40])
    for seed in range(20):
        order = list(chunks)
        random.Random(seed).shuffle(order)
        runs: list[list[Any]] = []
        for c in order:
            runs = add_done(runs, c)
        assert runs == [[0, 4, None, None]]
        assert chunks_finished(runs) == 5
        assert unfinished_ranges(runs, 5) == []


def test_unfinished_ranges_are_the_gaps_between_finished_runs() -> None:
    c = plan([10, 20, 30, 40])  # (-,10] (10,20] (20,30] (30,40] (40,-)
    runs = add_done(add_done(add_done([], c[1]), c[2]), c[4])
    assert runs == [[1, 2, ["10"], ["30"]], [4, 4, ["40"], None]]
    assert unfinished_ranges(runs, 5) == [(None, ["10"]), (["30"], ["40"])]
    assert unfinished_ranges([], 5) == [(None, None)]
    assert unfinished_ranges(add_done([], c[0]), 5) == [(["10"], None)]


def test_the_ranges_left_cover_exactly_the_keys_of_unfinished_chunks() -> None:
    c = plan([10, 20, 30, 40, 50])
    rng = random.Random(7)
    for _ in range(50):
        done = [x for x in c if rng.random() < 0.5]
        runs: list[list[Any]] = []
        for x in done:
            runs = add_done(runs, x)
        left = unfinished_ranges(runs, len(c))

        def inside(k: int, lo: list[str] | None, hi: list[str] | None) -> bool:
            return (lo is None or k > int(lo[0])) and (hi is None or k <= int(hi[0]))

        for key in range(-5, 60):
            in_done = any(inside(key, x.lower, x.upper) for x in done)
            in_left = sum(inside(key, lo, hi) for lo, hi in left)
            assert in_left == (0 if in_done else 1), (key, runs, left)


def test_progress_of_a_state_written_before_chunks_still_loads() -> None:
    old = b'{"task": "a", "snapshot_status": "running", "tables": {"public.t": {"rows": 5, '
    old += b'"estimate": 9, "done": false, "started_ms": 1, "finished_ms": 0, "last_key": ["5"]}}}'
    state = TaskState.from_json(old)
    assert state.tables["public.t"] == TableProgress(5, 9, False, 1, 0, ["5"])
    state.tables["public.t"].chunks_total = 3
    state.tables["public.t"].chunks_done = [[0, 0, None, ["4"]]]
    again = TaskState.from_json(state.to_json())
    assert again.tables["public.t"].chunks_done == [[0, 0, None, ["4"]]]


def test_chunk_bounds_in_sql_and_keyless_table() -> None:
    cols = (Column("a", "int4", "integer"), Column("b", "text", "text"))
    schema = TableSchema(T, cols, ("a", "b"))
    text = copy_query(schema, ["1", "x"], ["5", "y"]).as_string(None)
    assert "WHERE (\"a\", \"b\") > ('1', 'x') AND (\"a\", \"b\") <= ('5', 'y')" in text
    assert text.endswith('ORDER BY "a", "b") TO STDOUT')
    keyless = TableSchema(T, cols, ())
    assert copy_query(keyless, None, None).as_string(None) == (
        'COPY (SELECT "a", "b" FROM "public"."t") TO STDOUT'
    )
    assert isinstance(copy_query(schema, None, None), sql.Composed)


def test_tables_with_most_chunks_are_queued_first() -> None:
    small = [SnapshotChunk(TableId("public", "s"), 0, None, None)]
    big = plan([1, 2, 3])
    assert order_for_load([small, big]) == [*big, *small]
