"""A full-load chunk reader (producers/postgres/snapshot_workers.py, run in this process)
against real PostgreSQL, Kafka and registry, when the table changes under a load in
progress: the load reads at an exported snapshot, but the names in its queries resolve in
the catalog as it is now."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from headwater.config import TaskConfig
from producers.errors import SourceError
from producers.postgres import catalog, oids
from producers.postgres.chunks import SnapshotChunk
from producers.postgres.connection import connect
from producers.postgres.snapshot_workers import WorkerSetup, _ChunkReader
from schemas.tables import TableId
from schemas.topics import table_topic
from tests.integration.test_postgres_producer import read_topic

pytestmark = pytest.mark.integration

TABLE = TableId("public", "moving")
ROWS = 300


@pytest.fixture
def source(make_task: Callable[..., TaskConfig]) -> Iterator[tuple[TaskConfig, Any]]:
    """The task and an autocommit connection to its source, with the table seeded."""
    task = make_task()
    with connect(task.source.url) as conn:
        conn.autocommit = True
        conn.execute("CREATE TABLE moving (id int PRIMARY KEY, a text, gone int, b text)")
        conn.execute(
            "INSERT INTO moving SELECT g, 'a' || g, g, 'b' || g FROM generate_series(1, %s) g",
            (ROWS,),
        )
        yield task, conn


def load(task: TaskConfig, conn: psycopg.Connection[Any], change: str) -> list[Any]:
    """Export a snapshot, insert a row and run `change` after it, then read the table
    in two chunks at the snapshot; the reports of the reader."""
    schema = catalog.describe_table(conn, TABLE, catalog.TypeResolver(conn))
    (oid,) = oids.table_oids(conn, [TABLE])
    with connect(task.source.url) as exporter:
        exporter.autocommit = False  # the snapshot lives as long as its transaction
        exporter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        row = exporter.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        conn.execute("INSERT INTO moving (id, a, b) VALUES (1000, 'late', 'late')")
        conn.execute(change)
        setup = WorkerSetup(
            task.model_dump(by_alias=True),
            str(row[0]),
            None,
            "db",
            {str(TABLE): schema},
            logging.INFO,
            os.getppid(),  # the reader checks that its parent is alive: this process's
            {str(TABLE): oid},
        )
        chunks: queue.Queue[Any] = queue.Queue()
        chunks.put((0, SnapshotChunk(TABLE, 0, None, ["150"])))
        chunks.put((1, SnapshotChunk(TABLE, 1, ["150"], None)))
        chunks.put(None)
        reports: queue.Queue[Any] = queue.Queue()
        reader = _ChunkReader(setup, reports, threading.Event())  # type: ignore[arg-type]
        reader.run(chunks)  # type: ignore[arg-type]
    return [reports.get_nowait() for _ in range(reports.qsize())]


def test_a_column_dropped_during_the_load_leaves_it_out_of_the_remaining_chunks(
    source: tuple[TaskConfig, Any],
) -> None:
    task, conn = source
    reports = load(task, conn, "ALTER TABLE moving DROP COLUMN gone")
    done = [r for r in reports if r[0] == "done"]
    assert [(r[1], r[2]) for r in done] == [(0, 150), (1, 150)]  # not the row after it
    events = read_topic(task, table_topic(task.topic_prefix, TABLE), ROWS)
    afters = sorted((value["after"] for _, value in events), key=lambda a: a["id"])
    assert afters == [{"id": n, "a": f"a{n}", "b": f"b{n}"} for n in range(1, ROWS + 1)]
    assert {value["op"] for _, value in events} == {"r"}


def test_a_column_renamed_during_the_load_is_read_under_its_new_name(
    source: tuple[TaskConfig, Any],
) -> None:
    task, conn = source
    load(task, conn, "ALTER TABLE moving RENAME COLUMN gone TO kept")
    events = read_topic(task, table_topic(task.topic_prefix, TABLE), ROWS)
    afters = sorted((value["after"] for _, value in events), key=lambda a: a["id"])
    expected = [{"id": n, "a": f"a{n}", "kept": n, "b": f"b{n}"} for n in range(1, ROWS + 1)]
    assert afters == expected


def test_a_key_column_dropped_during_the_load_is_a_clear_error(
    source: tuple[TaskConfig, Any],
) -> None:
    task, conn = source
    with pytest.raises(SourceError, match=r"key column\(s\) id dropped during the full load"):
        load(task, conn, "ALTER TABLE moving DROP COLUMN id")
