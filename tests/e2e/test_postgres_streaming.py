"""Streaming behaviours of the PostgreSQL source end to end, against the real stack: a
replication connection killed mid-stream, unchanged TOAST values, TRUNCATE, columns added,
dropped and widened while streaming, and a slot that disappeared between runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from headwater.compare import compare_task
from headwater.config import TaskConfig
from headwater.runner import StageFailed, TaskRunner
from producers.postgres.connection import connect
from producers.postgres.replication import drop_slot

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DOCS_DDL = """
CREATE TABLE docs (id int PRIMARY KEY, title text NOT NULL, body text, hits int DEFAULT 0);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO docs SELECT g, 'doc ' || g,
    (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 300) i), 0
FROM generate_series(1, 20) g;
"""


@pytest.fixture
def started(make_task: Callable[..., TaskConfig]) -> Iterator[tuple[TaskConfig, TaskRunner]]:
    task = make_task()
    with connect(task.source.url) as conn:
        for statement in DOCS_DDL.split(";\n"):
            if statement.strip():
                conn.execute(statement)
    runner = TaskRunner(task)
    runner.start()
    runner.wait_caught_up(180)
    yield task, runner
    runner.stop(timeout=20)


def assert_equal(task: TaskConfig) -> None:
    for c in compare_task(task):
        assert c.matches, (c.table, c.missing[:5], c.extra[:5], c.different[:5])


def target_one(task: TaskConfig, query: str) -> object:
    with connect(task.target.url, role="target") as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def test_unchanged_toast_values_are_kept(started: tuple[TaskConfig, TaskRunner]) -> None:
    task, runner = started
    with connect(task.source.url) as conn:
        # body (9,600 bytes stored out of line) is not sent for these updates
        conn.execute("UPDATE docs SET hits = hits + 1 WHERE id <= 10")
        conn.execute("UPDATE docs SET title = 'renamed' WHERE id = 1")
    runner.wait_caught_up(120)
    assert_equal(task)
    assert target_one(task, "SELECT length(body) FROM docs WHERE id = 1") == 9600


def test_truncate_then_new_rows(started: tuple[TaskConfig, TaskRunner]) -> None:
    task, runner = started
    with connect(task.source.url) as conn:
        conn.execute("TRUNCATE docs")
        conn.execute("INSERT INTO docs VALUES (500, 'after truncate', 'x', 1)")
    runner.wait_caught_up(120)
    assert_equal(task)
    assert target_one(task, "SELECT count(*) FROM docs") == 1


def test_columns_added_and_dropped_while_streaming(
    started: tuple[TaskConfig, TaskRunner],
) -> None:
    task, runner = started
    with connect(task.source.url) as conn:
        conn.execute("ALTER TABLE docs ADD COLUMN rating numeric(3,1)")
        conn.execute("UPDATE docs SET rating = 4.5 WHERE id = 2")
        conn.execute("INSERT INTO docs (id, title, rating) VALUES (100, 'new', 1.0)")
        conn.execute("ALTER TABLE docs DROP COLUMN hits")
        conn.execute("INSERT INTO docs (id, title, rating) VALUES (101, 'after drop', 2.0)")
    runner.wait_caught_up(120)
    assert_equal(task)
    assert str(target_one(task, "SELECT rating FROM docs WHERE id = 2")) == "4.5"


def test_types_widened_while_streaming_widen_the_target(
    started: tuple[TaskConfig, TaskRunner],
) -> None:
    task, runner = started
    with connect(task.source.url) as conn:
        conn.execute("ALTER TABLE docs ALTER COLUMN hits TYPE bigint")
        conn.execute("UPDATE docs SET hits = 5000000000 WHERE id = 3")  # beyond an int
        conn.execute("ALTER TABLE docs ADD COLUMN code varchar(4)")
        conn.execute("UPDATE docs SET code = 'abcd' WHERE id = 4")
        conn.execute("ALTER TABLE docs ALTER COLUMN code TYPE varchar(40)")
        conn.execute("UPDATE docs SET code = repeat('x', 40) WHERE id = 5")
    runner.wait_caught_up(120)
    assert_equal(task)
    assert target_one(task, "SELECT hits FROM docs WHERE id = 3") == 5_000_000_000
    assert (
        target_one(
            task,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'public.docs'::regclass AND attname = 'code'",
        )
        == "character varying(40)"
    )


def test_replication_connection_killed_mid_stream(
    started: tuple[TaskConfig, TaskRunner],
) -> None:
    task, runner = started
    with connect(task.source.url) as conn:
        for round_ in range(3):
            conn.execute(
                "INSERT INTO docs SELECT g, 'burst', 'b', %s "
                "FROM generate_series(%s::int, %s::int) g",
                (round_, 1000 + round_ * 100, 1099 + round_ * 100),
            )
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (task.slot_name,),
            ).fetchone()
            assert killed is not None
            conn.execute("UPDATE docs SET title = 'after kill' WHERE id = %s", (round_ + 1,))
    runner.wait_caught_up(180)
    assert_equal(task)
    runner.check()  # the producer reconnected instead of failing


def test_slot_dropped_between_runs_is_a_clear_error(
    started: tuple[TaskConfig, TaskRunner],
) -> None:
    task, runner = started
    runner.stop(timeout=20)
    with connect(task.source.url) as conn:
        drop_slot(conn, task.slot_name)
    again = TaskRunner(task)
    again.start()
    try:
        with pytest.raises(StageFailed, match=r"has disappeared.*headwater cleanup"):
            again.wait_caught_up(60)
    finally:
        again.stop(timeout=10)


def test_cdc_mode_catches_up_while_idle_and_streams_only_new_changes(
    make_task: Callable[..., TaskConfig],
) -> None:
    task = make_task(mode="cdc")
    with connect(task.source.url) as conn:
        conn.execute("CREATE TABLE quiet (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO quiet VALUES (1, 'before the task')")
    runner = TaskRunner(task)
    runner.start()
    try:
        runner.wait_caught_up(120)  # nothing to stream yet: caught up all the same
        with connect(task.source.url) as conn:
            conn.execute("INSERT INTO quiet VALUES (2, 'after')")
            conn.execute("UPDATE quiet SET v = 'changed' WHERE id = 1")
        runner.wait_caught_up(120)
    finally:
        runner.stop(timeout=20)
    with connect(task.target.url, role="target") as conn:
        rows = conn.execute("SELECT id, v FROM quiet ORDER BY id").fetchall()
    # Row 1 existed before the task: only its change arrives, as an upsert of the new image.
    assert rows == [(1, "changed"), (2, "after")]
